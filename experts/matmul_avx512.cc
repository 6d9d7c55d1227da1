#include "experts/matmul_kernels.h"

namespace tritmoe::matmul_internal {
void FillAvx512Kernels(KernelTable* table) {}
}  // namespace tritmoe::matmul_internal
