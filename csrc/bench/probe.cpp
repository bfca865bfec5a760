// sat_fast._bench_probe: the memory-bandwidth probe of benchmarks/bench_reduce.py.
// Benchmark-only: built when CMake's SAT_FAST_BENCH_PROBE is ON, never part of
// the shipped module. It reads every byte of a buffer with `threads` threads
// (the same std::thread pool as the kernels), xor-folding 32 bytes at a time
// so the reads cannot be skipped; with AVX2 when the CPU has it, so the probe
// is never slower than the memory it measures.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "sat/threads.hpp"

namespace py = pybind11;

namespace {

uint64_t xor_generic(const uint8_t* p, int64_t bytes) {
  uint64_t acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    uint64_t v[4];
    std::memcpy(v, p + i, 32);
    for (int j = 0; j < 4; ++j) acc[j] ^= v[j];
  }
  for (; i < bytes; ++i) acc[0] ^= p[i];
  return acc[0] ^ acc[1] ^ acc[2] ^ acc[3];
}

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2"))) uint64_t xor_avx2(const uint8_t* p, int64_t bytes) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 128 <= bytes; i += 128) {
    a0 = _mm256_xor_si256(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_xor_si256(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_xor_si256(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_xor_si256(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i v = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), v);
  uint64_t r = lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3];
  for (; i < bytes; ++i) r ^= p[i];
  return r;
}

using XorFn = uint64_t (*)(const uint8_t*, int64_t);
XorFn choose_xor() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") ? &xor_avx2 : &xor_generic;
}
#else
using XorFn = uint64_t (*)(const uint8_t*, int64_t);
XorFn choose_xor() { return &xor_generic; }
#endif

// Thread t reads the t-th part of every array, so the probe reads exactly
// the bytes a kernel given these arrays reads, where they are, in one pass.
uint64_t read_probe(const std::vector<py::array>& arrays, std::optional<int> threads) {
  const int n = threads ? std::max(*threads, 1) : sat::default_threads();
  std::vector<std::pair<const uint8_t*, int64_t>> spans;
  for (const py::array& a : arrays) {
    if (!(a.flags() & py::array::c_style)) throw py::value_error("every array must be C-contiguous");
    spans.emplace_back(static_cast<const uint8_t*>(a.data()), static_cast<int64_t>(a.nbytes()));
  }
  static const XorFn fn = choose_xor();
  py::gil_scoped_release release;
  std::vector<uint64_t> partial(static_cast<size_t>(n), 0);
  sat::parallel_units(
      n, n, [](int) { return 0; },
      [&](int, int64_t t) {
        uint64_t acc = 0;
        for (const auto& [p, bytes] : spans) {
          const int64_t part = (bytes + n - 1) / n;
          const int64_t b = t * part;
          const int64_t e = std::min(bytes, b + part);
          if (b < e) acc ^= fn(p + b, e - b);
        }
        partial[static_cast<size_t>(t)] = acc;
      });
  uint64_t r = 0;
  for (uint64_t v : partial) r ^= v;
  return r;
}

// The core clock, in GHz, while `threads` threads run at once: each times a
// chain of dependent 64-bit adds (one cycle each on x86-64 and AArch64 cores),
// best of five, and the median thread's is returned. The virtual machines the
// benchmarks run on expose no cycle counter, and their nominal clock (lscpu)
// is not what the cores run at. None where the chain cannot be written.
std::optional<double> clock_ghz(std::optional<int> threads) {
#if (defined(__x86_64__) || defined(__aarch64__)) && (defined(__GNUC__) || defined(__clang__))
  const int n = threads ? std::max(*threads, 1) : sat::default_threads();
  constexpr uint64_t kSteps = 20'000'000;  // 8 adds each: 160M cycles, ~50 ms at 3 GHz
  std::vector<double> ghz(static_cast<size_t>(n), 0.0);
  py::gil_scoped_release release;
  sat::parallel_units(
      n, n, [](int) { return 0; },
      [&](int, int64_t t) {
        double best = 0.0;
        for (int rep = 0; rep < 5; ++rep) {
          uint64_t x = 0;
          const auto t0 = std::chrono::steady_clock::now();
          for (uint64_t i = 0; i < kSteps; ++i) {
#if defined(__x86_64__)
            __asm__ volatile(
                "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
                : "+r"(x));
#else
            __asm__ volatile(
                "add %0, %0, #1\n\tadd %0, %0, #1\n\tadd %0, %0, #1\n\tadd %0, %0, #1\n\t"
                "add %0, %0, #1\n\tadd %0, %0, #1\n\tadd %0, %0, #1\n\tadd %0, %0, #1"
                : "+r"(x));
#endif
          }
          const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          best = std::max(best, 8.0 * static_cast<double>(kSteps) / sec / 1e9);
        }
        ghz[static_cast<size_t>(t)] = best;
      });
  std::sort(ghz.begin(), ghz.end());
  return ghz[ghz.size() / 2];
#else
  (void)threads;
  return std::nullopt;
#endif
}

uint64_t read_probe_one(const py::array& data, std::optional<int> threads) { return read_probe({data}, threads); }

}  // namespace

PYBIND11_MODULE(_bench_probe, m) {
  m.doc() = "Benchmark-only probes for benchmarks/bench_reduce.py (not part of sat_fast).";
  m.def("read_probe", &read_probe_one, py::arg("data"), py::arg("threads") = py::none(),
        "Reads every byte of a buffer with the given threads (memory-bandwidth probe).");
  m.def("read_probe", &read_probe, py::arg("data"), py::arg("threads") = py::none(),
        "Reads every byte of each array with the given threads, thread t the t-th part of each.");
  m.def("clock_ghz", &clock_ghz, py::arg("threads") = py::none(),
        "The core clock in GHz with `threads` threads busy, from chains of dependent adds (None if unavailable).");
}
