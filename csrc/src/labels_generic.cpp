// The portable label kernels.
#include "labels_leaf.hpp"
#include "ops_generic.hpp"

namespace sat {
namespace generic {
void add_labels(KernelTable& t) { add_label_kernels<GenericOps>(t); }
}  // namespace generic
}  // namespace sat
