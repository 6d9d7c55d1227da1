// llama_logits: evaluate an exact token-id sequence with llama.cpp (the reference peer) and dump
// the logits of every position.
//
//   llama_logits --model M.gguf --tokens-file T --out O [--threads N]
//                [--cache-type f16|f32|bf16] [--ubatch N] [--mmap] [--n-gpu-layers N] [--verbose]
//
// Output: little-endian float32 [n_tokens][n_vocab], row-major, no header -- the same format as
// `tritmoe logits` and tests/reference/deepseek2_np.py.
//
// The tokens are fed verbatim through llama_decode (no tokenizer, so no implicit BOS), all in one
// llama_batch with logits requested for every position, at positions 0..n-1 of sequence 0, with a
// context of at least n_tokens and flash attention disabled. By default one physical micro-batch
// covers the whole sequence (n_ubatch = n_tokens) and everything runs on the CPU.
//
// This program only CALLS llama.cpp's public C API (include/llama.h); it links against the build
// made by launch/build-llama-cpp.sh, which lives outside this repository.

#include "llama.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Options {
  std::string model;
  std::string tokens_file;
  std::string out;
  int threads = 0;             // 0 = hardware concurrency
  int ubatch = 0;              // 0 = n_tokens (one micro-batch)
  int n_gpu_layers = 0;        // 0 = CPU only (also disables op offload)
  bool mmap = false;           // read the file into memory (a rewritten/truncated file cannot SIGBUS us)
  bool verbose = false;
  ggml_type cache_type = GGML_TYPE_F16;  // llama.cpp's default KV-cache type
};

[[noreturn]] void Usage(const char* msg) {
  if (msg != nullptr && *msg != '\0') std::fprintf(stderr, "llama_logits: %s\n", msg);
  std::fprintf(stderr,
               "usage: llama_logits --model M.gguf --tokens-file T --out O [--threads N]\n"
               "                    [--cache-type f16|f32|bf16] [--ubatch N] [--mmap]\n"
               "                    [--n-gpu-layers N] [--verbose]\n"
               "  T: decimal token ids separated by whitespace and/or commas, '#' comments,\n"
               "     '-' = stdin. O: little-endian float32 [n_tokens][n_vocab].\n");
  std::exit(2);
}

int ParseInt(const std::string& flag, const char* s) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < -1000000000L || v > 1000000000L) {
    Usage((flag + ": not an integer: " + s).c_str());
  }
  return static_cast<int>(v);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) Usage((a + " needs a value").c_str());
      return argv[++i];
    };
    if (a == "--model" || a == "-m") {
      o.model = value();
    } else if (a == "--tokens-file") {
      o.tokens_file = value();
    } else if (a == "--out" || a == "-o") {
      o.out = value();
    } else if (a == "--threads" || a == "-t") {
      o.threads = ParseInt(a, value());
      if (o.threads < 0) Usage("--threads must be >= 0");
    } else if (a == "--ubatch") {
      o.ubatch = ParseInt(a, value());
      if (o.ubatch < 0) Usage("--ubatch must be >= 0");
    } else if (a == "--n-gpu-layers" || a == "-ngl") {
      o.n_gpu_layers = ParseInt(a, value());
    } else if (a == "--cache-type") {
      const std::string t = value();
      if (t == "f16") {
        o.cache_type = GGML_TYPE_F16;
      } else if (t == "f32") {
        o.cache_type = GGML_TYPE_F32;
      } else if (t == "bf16") {
        o.cache_type = GGML_TYPE_BF16;
      } else {
        Usage(("--cache-type: unknown type " + t).c_str());
      }
    } else if (a == "--mmap") {
      o.mmap = true;
    } else if (a == "--no-mmap") {
      o.mmap = false;
    } else if (a == "--verbose" || a == "-v") {
      o.verbose = true;
    } else if (a == "--help" || a == "-h") {
      Usage(nullptr);
    } else {
      Usage(("unknown argument: " + a).c_str());
    }
  }
  if (o.model.empty() || o.tokens_file.empty() || o.out.empty()) {
    Usage("--model, --tokens-file and --out are required");
  }
  return o;
}

// Same syntax as tests/reference/deepseek2_np.py: decimal ids separated by whitespace and/or
// commas, '#' starts a comment that runs to the end of the line.
bool ReadTokens(const std::string& path, std::vector<llama_token>* out, std::string* err) {
  std::string text;
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    text = ss.str();
  } else {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
      *err = "cannot open tokens file " + path;
      return false;
    }
    std::ostringstream ss;
    ss << f.rdbuf();
    text = ss.str();
  }
  size_t i = 0;
  int line = 1;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
      ++i;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == ',') {
      ++i;
    } else if (c == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
    } else if (c >= '0' && c <= '9') {
      uint64_t v = 0;
      while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        v = v * 10 + static_cast<uint64_t>(text[i] - '0');
        if (v > 0x7fffffffULL) {
          *err = "token id out of range on line " + std::to_string(line);
          return false;
        }
        ++i;
      }
      out->push_back(static_cast<llama_token>(v));
    } else {
      *err = std::string("unexpected character '") + c + "' on line " + std::to_string(line) +
             " of the tokens file";
      return false;
    }
  }
  return true;
}

void LogCallback(ggml_log_level level, const char* text, void* user_data) {
  const bool verbose = *static_cast<const bool*>(user_data);
  // CONT lines continue the previous message; show them only in verbose mode (errors are single
  // messages in practice).
  if (verbose || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = ParseArgs(argc, argv);
  static bool verbose = opt.verbose;
  llama_log_set(LogCallback, &verbose);

  std::vector<llama_token> tokens;
  std::string err;
  if (!ReadTokens(opt.tokens_file, &tokens, &err)) {
    std::fprintf(stderr, "llama_logits: %s\n", err.c_str());
    return 1;
  }
  if (tokens.empty()) {
    std::fprintf(stderr, "llama_logits: the tokens file holds no token\n");
    return 1;
  }
  const int n_tokens = static_cast<int>(tokens.size());

  llama_backend_init();

  llama_model_params mp = llama_model_default_params();
  ggml_backend_dev_t no_devices[1] = {nullptr};
  if (opt.n_gpu_layers == 0) {
    mp.devices = no_devices;  // empty list: CPU backend only, even in a CUDA build
  }
  mp.n_gpu_layers = opt.n_gpu_layers;
  mp.load_mode = opt.mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
  mp.lazy_mode = LLAMA_LAZY_MODE_OFF;
  mp.use_extra_bufts = false;  // no weight repacking (the build also has GGML_CPU_REPACK=OFF)
  mp.check_tensors = false;
  mp.load_mtp = false;

  llama_model* model = llama_model_load_from_file(opt.model.c_str(), mp);
  if (model == nullptr) {
    std::fprintf(stderr, "llama_logits: llama.cpp failed to load %s (rerun with --verbose)\n",
                 opt.model.c_str());
    llama_backend_free();
    return 1;
  }
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int n_vocab = llama_vocab_n_tokens(vocab);
  for (int i = 0; i < n_tokens; ++i) {
    if (tokens[i] < 0 || tokens[i] >= n_vocab) {
      std::fprintf(stderr, "llama_logits: token %d at position %d is outside the vocabulary (%d)\n",
                   tokens[i], i, n_vocab);
      llama_model_free(model);
      llama_backend_free();
      return 1;
    }
  }

  const int threads = opt.threads > 0 ? opt.threads
                                      : std::max(1u, std::thread::hardware_concurrency());
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(n_tokens);  // llama.cpp pads this up; >= n_tokens either way
  cp.n_batch = static_cast<uint32_t>(n_tokens);
  cp.n_ubatch = static_cast<uint32_t>(opt.ubatch > 0 ? std::min(opt.ubatch, n_tokens) : n_tokens);
  cp.n_seq_max = 1;
  cp.n_outputs_max = 0;  // = n_batch: every position is an output
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.type_k = opt.cache_type;
  cp.type_v = opt.cache_type;
  cp.embeddings = false;
  cp.no_perf = true;
  cp.op_offload = opt.n_gpu_layers != 0;
  cp.offload_kqv = opt.n_gpu_layers != 0;

  llama_context* ctx = llama_init_from_model(model, cp);
  if (ctx == nullptr) {
    std::fprintf(stderr, "llama_logits: llama.cpp failed to create a context (rerun with --verbose)\n");
    llama_model_free(model);
    llama_backend_free();
    return 1;
  }
  if (llama_n_ctx(ctx) < static_cast<uint32_t>(n_tokens)) {
    std::fprintf(stderr, "llama_logits: context %u < %d tokens\n", llama_n_ctx(ctx), n_tokens);
    return 1;
  }

  llama_batch batch = llama_batch_init(n_tokens, 0, 1);
  for (int i = 0; i < n_tokens; ++i) {
    batch.token[i] = tokens[i];
    batch.pos[i] = i;
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = 1;
  }
  batch.n_tokens = n_tokens;

  const int rc = llama_decode(ctx, batch);
  if (rc != 0) {
    std::fprintf(stderr, "llama_logits: llama_decode failed (%d)\n", rc);
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 1;
  }

  std::vector<float> all(static_cast<size_t>(n_tokens) * static_cast<size_t>(n_vocab));
  size_t nonfinite = 0;
  for (int i = 0; i < n_tokens; ++i) {
    const float* row = llama_get_logits_ith(ctx, i);
    if (row == nullptr) {
      std::fprintf(stderr, "llama_logits: no logits for position %d\n", i);
      return 1;
    }
    float* dst = all.data() + static_cast<size_t>(i) * n_vocab;
    std::memcpy(dst, row, sizeof(float) * static_cast<size_t>(n_vocab));
    for (int j = 0; j < n_vocab; ++j) nonfinite += std::isfinite(dst[j]) ? 0 : 1;
  }

  // float32 little-endian: the host byte order on every platform we run on (x86-64, aarch64)
  static_assert(sizeof(float) == 4, "float must be 32-bit");
  {
    const uint16_t probe = 1;
    uint8_t first = 0;
    std::memcpy(&first, &probe, 1);
    if (first != 1) {
      for (float& f : all) {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        u = __builtin_bswap32(u);
        std::memcpy(&f, &u, 4);
      }
    }
  }
  FILE* f = std::fopen(opt.out.c_str(), "wb");
  if (f == nullptr) {
    std::fprintf(stderr, "llama_logits: cannot open %s for writing: %s\n", opt.out.c_str(),
                 std::strerror(errno));
    return 1;
  }
  const size_t wrote = std::fwrite(all.data(), sizeof(float), all.size(), f);
  if (wrote != all.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "llama_logits: short write to %s\n", opt.out.c_str());
    return 1;
  }

  // summary: argmax of the last position
  const float* last = all.data() + static_cast<size_t>(n_tokens - 1) * n_vocab;
  const int top = static_cast<int>(std::max_element(last, last + n_vocab) - last);
  std::fprintf(stderr, "llama_logits: %d tokens x %d vocab -> %s (threads %d, n_ubatch %u, cache %s, "
               "%zu non-finite, last argmax %d)\n",
               n_tokens, n_vocab, opt.out.c_str(), threads, cp.n_ubatch,
               ggml_type_name(opt.cache_type), nonfinite, top);

  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return nonfinite == 0 ? 0 : 3;
}
