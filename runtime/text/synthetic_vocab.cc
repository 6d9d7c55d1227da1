#include "runtime/text/synthetic_vocab.h"

#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/text/byte_unicode.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/pretokenizer.h"
#include "runtime/text/synthetic_corpus.h"

namespace tritmoe {
namespace {

constexpr int kMaxSyntheticVocab = 1 << 22;
constexpr size_t kMaxFillerPart = 8;  // bytes of visible text

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// BPE training state. Symbols are 0..255 for the bytes, then one per new token.
class BpeTrainer {
 public:
  explicit BpeTrainer(const std::vector<std::string_view>& pieces) {
    for (int b = 0; b < 256; ++b) AddSymbol(BytesToVisible(std::string(1, static_cast<char>(b))));
    absl::flat_hash_map<std::string, size_t> index;
    for (std::string_view p : pieces) {
      auto [it, inserted] = index.try_emplace(std::string(p), words_.size());
      if (inserted) {
        Word w;
        for (char c : p) w.symbols.push_back(static_cast<uint8_t>(c));
        words_.push_back(std::move(w));
      }
      words_[it->second].count += 1;
    }
  }

  // Performs the next merge: the most frequent adjacent pair (smallest (left, right) among equal
  // counts). Returns false when no word has two symbols left.
  bool MergeOnce(std::vector<std::string>* merges) {
    absl::flat_hash_map<uint64_t, int64_t> counts;
    for (const Word& w : words_) {
      for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
        counts[PairKey(w.symbols[i], w.symbols[i + 1])] += w.count;
      }
    }
    if (counts.empty()) return false;
    uint64_t best_key = 0;
    int64_t best_count = -1;
    for (const auto& [key, count] : counts) {
      if (count > best_count || (count == best_count && key < best_key)) {
        best_key = key, best_count = count;
      }
    }
    const auto left = static_cast<int32_t>(best_key >> 32);
    const auto right = static_cast<int32_t>(best_key & 0xFFFFFFFFu);
    const std::string text = texts_[left] + texts_[right];
    auto it = symbol_of_.find(text);
    const int32_t merged = it != symbol_of_.end() ? it->second : AddSymbol(text);
    merges->push_back(absl::StrCat(texts_[left], " ", texts_[right]));
    for (Word& w : words_) {
      std::vector<int32_t>& s = w.symbols;
      size_t out = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == left && s[i + 1] == right) {
          s[out++] = merged;
          ++i;
        } else {
          s[out++] = s[i];
        }
      }
      s.resize(out);
    }
    return true;
  }

  int32_t num_new_tokens() const { return static_cast<int32_t>(texts_.size()) - 256; }
  const std::vector<std::string>& texts() const { return texts_; }

 private:
  struct Word {
    std::vector<int32_t> symbols;
    int64_t count = 0;
  };
  int32_t AddSymbol(std::string text) {
    const auto id = static_cast<int32_t>(texts_.size());
    symbol_of_.emplace(text, id);
    texts_.push_back(std::move(text));
    return id;
  }

  std::vector<Word> words_;
  std::vector<std::string> texts_;  // visible (byte-alphabet) text of each symbol
  absl::flat_hash_map<std::string, int32_t> symbol_of_;
};

}  // namespace

absl::StatusOr<VocabData> MakeSyntheticVocab(int n_vocab, uint64_t seed) {
  if (n_vocab < kMinSyntheticVocab || n_vocab > kMaxSyntheticVocab) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic vocabulary size ", n_vocab,
                                                   " is outside [", kMinSyntheticVocab, ", ",
                                                   kMaxSyntheticVocab,
                                                   "] (3 leading specials + 256 bytes + 4 chat "
                                                   "tokens at least)"));
  }
  const int32_t target = n_vocab - kMinSyntheticVocab;  // merge tokens wanted

  ASSIGN_OR_RETURN(PreTokenizer pre, PreTokenizer::CreateDeepSeekV3());
  std::vector<std::string_view> pieces;
  RETURN_IF_ERROR(pre.Split(SyntheticTrainingText(), &pieces));
  BpeTrainer trainer(pieces);
  std::vector<std::string> merges;
  while (trainer.num_new_tokens() < target && trainer.MergeOnce(&merges)) {
  }

  VocabData v;
  v.tokens.reserve(n_vocab);
  v.token_types.reserve(n_vocab);
  const auto add = [&](std::string text, TokenType type) {
    v.tokens.push_back(std::move(text));
    v.token_types.push_back(static_cast<int32_t>(type));
  };
  add(std::string(kR1Bos), TokenType::kControl);
  add(std::string(kR1Eos), TokenType::kControl);
  add("<｜▁pad▁｜>", TokenType::kControl);
  for (const std::string& t : trainer.texts()) add(t, TokenType::kNormal);  // bytes, then learned

  // Filler: join two earlier tokens of at most kMaxFillerPart bytes each, so that the results
  // stay word-sized and (almost) every draw is new.
  if (static_cast<int32_t>(v.tokens.size()) < n_vocab - 4) {
    absl::flat_hash_set<std::string> taken(trainer.texts().begin(), trainer.texts().end());
    std::vector<std::string> pool;
    for (size_t i = 256; i < trainer.texts().size(); ++i) {
      if (trainer.texts()[i].size() <= kMaxFillerPart) pool.push_back(trainer.texts()[i]);
    }
    if (pool.empty()) {  // cannot happen with the built-in text; keeps the generator total
      for (char c = 'a'; c <= 'z'; ++c) pool.emplace_back(1, c);
    }
    uint64_t state = seed ^ 0x5EED5EED5EED5EEDull;
    while (static_cast<int32_t>(v.tokens.size()) < n_vocab - 4) {
      const std::string& a = pool[SplitMix64(state) % pool.size()];
      const std::string& b = pool[SplitMix64(state) % pool.size()];
      std::string joined = a + b;
      if (!taken.insert(joined).second) continue;
      merges.push_back(absl::StrCat(a, " ", b));
      if (joined.size() <= kMaxFillerPart) pool.push_back(joined);
      add(std::move(joined), TokenType::kNormal);
    }
  }
  add(std::string(kThinkOpen), TokenType::kUserDefined);
  add(std::string(kThinkClose), TokenType::kUserDefined);
  add(std::string(kR1User), TokenType::kControl);
  add(std::string(kR1Assistant), TokenType::kControl);

  v.merges = std::move(merges);
  v.bos_id = 0;
  v.eos_id = 1;
  v.pad_id = 2;
  v.add_bos = true;
  v.add_eos = false;
  return v;
}

}  // namespace tritmoe
