#include "runtime/engine/step_codec.h"

#include <utility>

#include "base/status_macros.h"
#include "runtime/engine/wire.h"

namespace tritmoe {
namespace {

// Guards against decoding a message of another kind (or garbage) as a step.
constexpr uint32_t kStepMagic = 0x53504554;    // "TEPS"
constexpr uint32_t kResultMagic = 0x53455254;  // "TRES"

void PutSampling(WireWriter& w, const SamplingParams& p) {
  w.Put(p.temperature);
  w.Put(p.top_k);
  w.Put(p.top_p);
  w.Put(p.min_p);
  w.Put(p.seed);
  w.Put(p.max_tokens);
  w.Put(p.min_tokens);
  w.Put<uint64_t>(p.stop.size());
  for (const std::string& s : p.stop) w.PutString(s);
  w.PutVector<int32_t>(p.stop_token_ids);
  w.Put<uint8_t>(p.ignore_eos ? 1 : 0);
}

absl::Status GetSampling(WireReader& r, SamplingParams* p) {
  RETURN_IF_ERROR(r.Get(&p->temperature));
  RETURN_IF_ERROR(r.Get(&p->top_k));
  RETURN_IF_ERROR(r.Get(&p->top_p));
  RETURN_IF_ERROR(r.Get(&p->min_p));
  RETURN_IF_ERROR(r.Get(&p->seed));
  RETURN_IF_ERROR(r.Get(&p->max_tokens));
  RETURN_IF_ERROR(r.Get(&p->min_tokens));
  uint64_t n_stop = 0;
  RETURN_IF_ERROR(r.Get(&n_stop));
  if (n_stop > r.remaining()) return absl::DataLossError("engine message: bad stop count");
  p->stop.resize(n_stop);
  for (std::string& s : p->stop) RETURN_IF_ERROR(r.GetString(&s));
  RETURN_IF_ERROR(r.GetVector(&p->stop_token_ids));
  uint8_t ignore_eos = 0;
  RETURN_IF_ERROR(r.Get(&ignore_eos));
  p->ignore_eos = ignore_eos != 0;
  return absl::OkStatus();
}

// A count read from the wire, bounded by the bytes left (each element takes at least one byte),
// so a corrupted count cannot make the decoder allocate without limit.
absl::StatusOr<uint64_t> GetCount(WireReader& r) {
  uint64_t n = 0;
  RETURN_IF_ERROR(r.Get(&n));
  if (n > r.remaining()) return absl::DataLossError("engine message: bad element count");
  return n;
}

}  // namespace

std::vector<uint8_t> EncodeStepMessage(const StepMessage& m) {
  WireWriter w;
  w.Put(kStepMagic);
  w.Put<uint64_t>(m.step.start.size());
  for (size_t i = 0; i < m.step.start.size(); ++i) {
    const SequenceStart& s = m.step.start[i];
    w.Put(s.id);
    w.Put(s.capacity);
    w.Put(i < m.owners.size() ? m.owners[i] : int32_t{-1});
    PutSampling(w, s.sampling);
  }
  w.Put<uint64_t>(m.step.items.size());
  for (const EngineItem& it : m.step.items) {
    w.Put(it.id);
    w.PutVector<int32_t>(it.tokens);
    w.Put<uint8_t>(it.sample ? 1 : 0);
    w.Put<int32_t>(static_cast<int32_t>(it.logits));
  }
  w.PutVector<uint64_t>(m.step.release);
  return std::move(w.bytes());
}

absl::StatusOr<StepMessage> DecodeStepMessage(std::span<const uint8_t> bytes) {
  WireReader r(bytes);
  uint32_t magic = 0;
  RETURN_IF_ERROR(r.Get(&magic));
  if (magic != kStepMagic) return absl::DataLossError("engine message is not a step");
  StepMessage m;
  ASSIGN_OR_RETURN(const uint64_t n_start, GetCount(r));
  m.step.start.resize(n_start);
  m.owners.resize(n_start);
  for (uint64_t i = 0; i < n_start; ++i) {
    SequenceStart& s = m.step.start[i];
    RETURN_IF_ERROR(r.Get(&s.id));
    RETURN_IF_ERROR(r.Get(&s.capacity));
    RETURN_IF_ERROR(r.Get(&m.owners[i]));
    RETURN_IF_ERROR(GetSampling(r, &s.sampling));
  }
  ASSIGN_OR_RETURN(const uint64_t n_items, GetCount(r));
  m.step.items.resize(n_items);
  for (EngineItem& it : m.step.items) {
    RETURN_IF_ERROR(r.Get(&it.id));
    RETURN_IF_ERROR(r.GetVector(&it.tokens));
    uint8_t sample = 0;
    RETURN_IF_ERROR(r.Get(&sample));
    it.sample = sample != 0;
    int32_t logits = 0;
    RETURN_IF_ERROR(r.Get(&logits));
    if (logits < static_cast<int32_t>(LogitsRequest::kNone) ||
        logits > static_cast<int32_t>(LogitsRequest::kAll)) {
      return absl::DataLossError("engine message: bad logits request");
    }
    it.logits = static_cast<LogitsRequest>(logits);
  }
  RETURN_IF_ERROR(r.GetVector(&m.step.release));
  if (r.remaining() != 0) return absl::DataLossError("engine message: trailing bytes after a step");
  return m;
}

std::vector<uint8_t> EncodeRankResult(const RankResult& result) {
  WireWriter w;
  w.Put(kResultMagic);
  w.Put<int32_t>(static_cast<int32_t>(result.status.code()));
  w.PutString(std::string(result.status.message()));
  w.Put(result.times);
  w.Put<uint64_t>(result.items.size());
  for (const ItemResult& it : result.items) {
    w.Put(it.item);
    w.Put(it.token);
    w.PutVector<float>(it.logits);
  }
  return std::move(w.bytes());
}

absl::StatusOr<RankResult> DecodeRankResult(std::span<const uint8_t> bytes) {
  WireReader r(bytes);
  uint32_t magic = 0;
  RETURN_IF_ERROR(r.Get(&magic));
  if (magic != kResultMagic) return absl::DataLossError("engine message is not a step result");
  RankResult result;
  int32_t code = 0;
  std::string message;
  RETURN_IF_ERROR(r.Get(&code));
  RETURN_IF_ERROR(r.GetString(&message));
  result.status = absl::Status(static_cast<absl::StatusCode>(code), message);
  RETURN_IF_ERROR(r.Get(&result.times));
  ASSIGN_OR_RETURN(const uint64_t n, GetCount(r));
  result.items.resize(n);
  for (ItemResult& it : result.items) {
    RETURN_IF_ERROR(r.Get(&it.item));
    RETURN_IF_ERROR(r.Get(&it.token));
    RETURN_IF_ERROR(r.GetVector(&it.logits));
  }
  if (r.remaining() != 0)
    return absl::DataLossError("engine message: trailing bytes after a result");
  return result;
}

}  // namespace tritmoe
