// The AVX2 mask kernels. Compiled with -mavx2 (x86-64 only) and called only
// after the run-time check in dispatch.cpp.
#include "masks_leaf.hpp"
#include "ops_avx2.hpp"

namespace sat {
namespace avx2 {
void add_masks(KernelTable& t) { add_mask_kernels<Avx2Ops>(t); }
}  // namespace avx2
}  // namespace sat
