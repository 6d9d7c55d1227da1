// libFuzzer target for the GGUF reader: any byte string must either parse or be rejected with a
// status, never crash or read out of bounds. Accepted inputs are walked further (every tensor's
// bytes, every typed getter, the inspect summary) so those paths are checked on odd files too.
#include <cstddef>
#include <cstdint>

#include "runtime/gguf/gguf.h"
#include "runtime/gguf/gguf_summary.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tritmoe::gguf;
  auto file = GgufFile::OpenFromBuffer(data, size, "fuzz.gguf");
  if (!file.ok()) {
    if (file.status().message().empty()) __builtin_trap();  // errors must say something
    return 0;
  }
  std::unique_ptr<GgufModel> model = GgufModel::FromFile(std::move(*file));
  volatile uint8_t sink = 0;
  for (const TensorInfo& t : model->tensors()) {
    const uint8_t* p = model->TensorData(t);
    if (t.nbytes > 0) sink = sink ^ p[0] ^ p[t.nbytes - 1];  // first and last byte in range
    if (model->FindTensor(t.name) == nullptr) __builtin_trap();
  }
  for (const KeyValue& kv : model->kvs()) {
    (void)model->GetString(kv.key);
    (void)model->GetUint(kv.key);
    (void)model->GetInt(kv.key);
    (void)model->GetFloat(kv.key);
    (void)model->GetBool(kv.key);
    (void)model->GetStringArray(kv.key);
    (void)model->GetFloatArray(kv.key);
    (void)model->GetIntArray(kv.key);
    (void)FormatValue(kv.value);
  }
  const GgufSummary summary = Summarize(*model);
  (void)SummaryText(summary);
  (void)SummaryJson(summary);
  return 0;
}
