// The portable mask kernels.
#include "masks_leaf.hpp"
#include "ops_generic.hpp"

namespace sat {
namespace generic {
void add_masks(KernelTable& t) { add_mask_kernels<GenericOps>(t); }
}  // namespace generic
}  // namespace sat
