// The portable kernels of the RLE path that reduces runs over a transposed
// copy (runs_leaf.hpp).
#include "ops_generic.hpp"
#include "runs_leaf.hpp"

namespace sat {
namespace generic {
void add_rle(KernelTable& t) { add_runs_kernels<GenericOps>(t); }
}  // namespace generic
}  // namespace sat
