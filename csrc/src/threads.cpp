#include "sat/threads.hpp"

#if defined(__linux__)
#include <sched.h>
#endif

#include <thread>

namespace sat {

int default_threads() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n < kMaxThreads ? n : kMaxThreads;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n < unsigned(kMaxThreads) ? n : unsigned(kMaxThreads)) : 1;
}

}  // namespace sat
