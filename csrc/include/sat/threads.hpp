// A fixed partition of work units over std::thread. Units are handed out
// dynamically, but every unit writes only its own output slots, so which
// thread ran a unit never changes the result.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace sat {

// The most threads any call accepts. Kernels never run more threads than
// they have work units (chunks, images or mask planes), so a larger request
// gains nothing; the bound keeps an absurd one from reaching the allocator.
constexpr int kMaxThreads = 1024;

// Threads this process may run on (its CPU affinity mask), in [1, kMaxThreads].
int default_threads();

// Calls make_state(thread_index) once per thread, then work(state, unit) for
// every unit in [0, units). An exception in any thread is rethrown after all
// threads have joined.
template <class MakeState, class Work>
void parallel_units(int64_t units, int threads, MakeState&& make_state, Work&& work) {
  if (units <= 0) return;
  int n = static_cast<int>(std::min<int64_t>(std::max(threads, 1), units));
  std::atomic<int64_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  auto worker = [&](int tid) {
    try {
      auto state = make_state(tid);
      for (;;) {
        int64_t unit = next.fetch_add(1, std::memory_order_relaxed);
        if (unit >= units) break;
        work(state, unit);
      }
    } catch (...) {
      errors[static_cast<size_t>(tid)] = std::current_exception();
      next.store(units, std::memory_order_relaxed);
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(n - 1));
  for (int t = 1; t < n; ++t) pool.emplace_back(worker, t);
  worker(0);
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace sat
