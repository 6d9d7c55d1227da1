#include "runtime/store/expert_store.h"

#include "absl/strings/str_cat.h"

namespace tritmoe {

const StoreTensor* ExpertStore::FindTensor(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void ExpertStore::SetTensors(std::vector<StoreTensor> tensors) {
  tensors_ = std::move(tensors);
  index_.clear();
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

absl::Status ExpertStore::CheckRequest(const ReadRequest& r) const {
  // absl::StrCat takes absl::string_view, which is not std::string_view in this abseil.
  auto tensor = [&] { return std::string(r.tensor); };
  const StoreTensor* t = FindTensor(r.tensor);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat(name(), ": no tensor '", tensor(), "'"));
  }
  if (r.offset > t->nbytes || r.size > t->nbytes - r.offset) {
    return absl::OutOfRangeError(absl::StrCat(name(), ": tensor ", tensor(), " bytes [", r.offset,
                                              ", ", r.offset + r.size, ") past its end (",
                                              t->nbytes, " bytes)"));
  }
  if (r.dst == nullptr && r.size > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name(), ": read of tensor ", tensor(), " has no destination"));
  }
  return absl::OkStatus();
}

}  // namespace tritmoe
