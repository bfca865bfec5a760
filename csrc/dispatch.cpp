#include <sched.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "leaf.hpp"

namespace sat {

namespace {
bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("popcnt");
#else
  return false;
#endif
}

const LeafTable& choose() {
  const char* forced = std::getenv("SAT_FAST_KERNEL");
  if (forced != nullptr && std::strcmp(forced, "generic") == 0) return leaf_table_generic();
  return cpu_has_avx2() ? leaf_table_avx2() : leaf_table_generic();
}
}  // namespace

const LeafTable& leaf_table() {
  static const LeafTable& table = choose();
  return table;
}

const char* kernel_variant() { return leaf_table().name; }

int default_threads() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

}  // namespace sat
