// Chooses the kernel table once per process.
#include "sat/dispatch.hpp"

#include <cstdlib>
#include <cstring>

namespace sat {

namespace {

KernelTable generic_table() {
  KernelTable t{};
  t.name = "generic";
  generic::add_labels(t);
  generic::add_masks(t);
  generic::add_rle(t);
  return t;
}

#if SAT_HAVE_AVX2_VARIANT
bool cpu_has_avx2() {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
         __builtin_cpu_supports("popcnt");
#else
  return false;
#endif
}

KernelTable avx2_table() {
  KernelTable t{};
  t.name = "avx2";
  avx2::add_labels(t);
  avx2::add_masks(t);
  avx2::add_rle(t);
  return t;
}
#endif

KernelTable choose() {
  const char* forced = std::getenv("SAT_FAST_KERNEL");
  if (forced != nullptr && std::strcmp(forced, "generic") == 0) return generic_table();
#if SAT_HAVE_AVX2_VARIANT
  if (cpu_has_avx2()) return avx2_table();
#endif
  return generic_table();
}

}  // namespace

const KernelTable& kernels() {
  static const KernelTable table = choose();
  return table;
}

const char* kernel_variant() { return kernels().name; }

}  // namespace sat
