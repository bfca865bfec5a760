// The statistics of one segment while they are being accumulated, and every
// piece of arithmetic that builds them: the branch-free min/max, the
// pos/neg/sq lane update, reset and merge, and the search for the first
// non-finite pixel. Written once, used by the label, mask and RLE kernels and
// by both kernel variants, so every path rounds alike.
//
// Instruction sets. The AVX2 kernels are separate translation units compiled
// with -mavx2 and called only after a run-time check. An inline function
// defined in a header is emitted by every translation unit that uses it, and
// the linker keeps one copy: if that copy came from an AVX2 unit, the
// portable code would run AVX2 instructions. So the functions here (and in
// the kernels' private headers) live in an inline namespace named after the
// instruction set the unit is compiled for (SAT_ISA): each unit's copies get
// their own symbols, while the plain data types below stay shared.
#pragma once
#include <cstdint>
#include <limits>

#if defined(__AVX__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "sat/types.hpp"

#if defined(__AVX2__)
#define SAT_ISA isa_avx2
#else
#define SAT_ISA isa_base
#endif

// For the few helpers whose inlining decides a kernel's speed (a run's
// reduction called out of line costs a call and a round trip of its
// accumulator through memory per run).
#if defined(__GNUC__) || defined(__clang__)
#define SAT_ALWAYS_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define SAT_ALWAYS_INLINE __forceinline
#else
#define SAT_ALWAYS_INLINE inline
#endif

namespace sat {

template <class T>
constexpr T kInfinity = std::numeric_limits<T>::infinity();
constexpr double kInf = kInfinity<double>;

// One (image, segment) while it is being accumulated. A plain struct without
// member functions (see above); reset it with acc_reset.
struct alignas(64) Accumulator {
  double pos;  // sum of max(x, 0)
  double neg;  // sum of min(x, 0)
  double sq;   // sum of x*x
  double min;
  double max;
  int64_t count;
};

// The same statistics laid out for per-pixel updates of noisy label maps:
// one 256-bit add updates pos, neg, sq and count together, and min and the
// negated max share one 128-bit min. Converted to an Accumulator at the end of
// a chunk (acc_from_pixels).
struct alignas(64) PixelAccumulator {
  double pos;
  double neg;
  double sq;
  double count;
  double min;
  double negmax;
  double unused[2];
};

// A segment's min and max lanes while a label kernel reduces its runs over
// float32 saliency: lane j holds the extremes of the pixels the segment's runs
// put in lane j (see leaf_common.hpp), kept across every run of a chunk and
// folded once at its end. float is exact here: the values are float32.
struct alignas(64) ExtremeLanes {
  float min[8];
  float max[8];
};

inline namespace SAT_ISA {

// Branch-free min/max with the semantics of `a < b ? a : b` / `a > b ? a : b`
// (the second operand wins on NaN), which is exactly what the SSE/AVX min and
// max instructions do. Written as ternaries, compilers emit unpredictable
// branches on random data. Overloaded for the vector types the kernels use.
#if defined(__SSE2__)
inline double vmin(double a, double b) { return _mm_cvtsd_f64(_mm_min_sd(_mm_set_sd(a), _mm_set_sd(b))); }
inline double vmax(double a, double b) { return _mm_cvtsd_f64(_mm_max_sd(_mm_set_sd(a), _mm_set_sd(b))); }
inline float vmin(float a, float b) { return _mm_cvtss_f32(_mm_min_ss(_mm_set_ss(a), _mm_set_ss(b))); }
inline float vmax(float a, float b) { return _mm_cvtss_f32(_mm_max_ss(_mm_set_ss(a), _mm_set_ss(b))); }
inline __m128d vmin(__m128d a, __m128d b) { return _mm_min_pd(a, b); }
inline __m128d vmax(__m128d a, __m128d b) { return _mm_max_pd(a, b); }
inline __m128d vadd(__m128d a, __m128d b) { return _mm_add_pd(a, b); }
inline __m128d vmul(__m128d a, __m128d b) { return _mm_mul_pd(a, b); }
inline __m128d vzero(__m128d) { return _mm_setzero_pd(); }
#else
inline double vmin(double a, double b) { return a < b ? a : b; }
inline double vmax(double a, double b) { return a > b ? a : b; }
inline float vmin(float a, float b) { return a < b ? a : b; }
inline float vmax(float a, float b) { return a > b ? a : b; }
#endif
#if defined(__AVX__)
inline __m256d vmin(__m256d a, __m256d b) { return _mm256_min_pd(a, b); }
inline __m256d vmax(__m256d a, __m256d b) { return _mm256_max_pd(a, b); }
inline __m256d vadd(__m256d a, __m256d b) { return _mm256_add_pd(a, b); }
inline __m256d vmul(__m256d a, __m256d b) { return _mm256_mul_pd(a, b); }
inline __m256d vzero(__m256d) { return _mm256_setzero_pd(); }
#endif
inline double vadd(double a, double b) { return a + b; }
inline double vmul(double a, double b) { return a * b; }
inline double vzero(double) { return 0.0; }

// The pos/neg/sq lane update: one pixel (or one vector of pixels, one per
// lane) into running sums. Operand order matters: max/min return the second
// operand when either is NaN, so NaN propagates into pos and neg.
template <class V>
inline void lane_update(V& pos, V& neg, V& sq, V v) {
  const V zero = vzero(v);
  pos = vadd(pos, vmax(zero, v));
  neg = vadd(neg, vmin(zero, v));
  sq = vadd(sq, vmul(v, v));
}

// The same plus min and max.
template <class V>
inline void lane_update(V& pos, V& neg, V& sq, V& mn, V& mx, V v) {
  lane_update(pos, neg, sq, v);
  mn = vmin(mn, v);
  mx = vmax(mx, v);
}

inline void acc_reset(Accumulator& a) {
  a.pos = 0.0;
  a.neg = 0.0;
  a.sq = 0.0;
  a.min = kInf;
  a.max = -kInf;
  a.count = 0;
}

inline void extremes_reset(ExtremeLanes& e) {
  for (int j = 0; j < 8; ++j) {
    e.min[j] = kInfinity<float>;
    e.max[j] = -kInfinity<float>;
  }
}

inline Accumulator acc_identity() {
  Accumulator a;
  acc_reset(a);
  return a;
}

inline void acc_add_pixel(Accumulator& a, double v) {
  lane_update(a.pos, a.neg, a.sq, a.min, a.max, v);
  a.count += 1;
}

// a += b: the merge of two accumulators (and of a run's statistics into one).
inline void acc_merge(Accumulator& a, const Accumulator& b) {
  a.pos += b.pos;
  a.neg += b.neg;
  a.sq += b.sq;
  a.min = vmin(a.min, b.min);
  a.max = vmax(a.max, b.max);
  a.count += b.count;
}

inline void acc_reset(PixelAccumulator& a) { a = PixelAccumulator{0.0, 0.0, 0.0, 0.0, kInf, kInf, {0.0, 0.0}}; }

inline void acc_add_pixel(PixelAccumulator& a, double v) {
  lane_update(a.pos, a.neg, a.sq, v);
  a.count += 1.0;
  a.min = vmin(a.min, v);
  a.negmax = vmin(a.negmax, -v);
}

// a += b for PixelAccumulators.
inline void acc_merge(PixelAccumulator& a, const PixelAccumulator& b) {
  a.pos += b.pos;
  a.neg += b.neg;
  a.sq += b.sq;
  a.count += b.count;
  a.min = vmin(a.min, b.min);
  a.negmax = vmin(a.negmax, b.negmax);
}

// The merge of two PixelAccumulators into an Accumulator.
inline Accumulator acc_from_pixels(const PixelAccumulator& e, const PixelAccumulator& o) {
  Accumulator a;
  a.pos = e.pos + o.pos;
  a.neg = e.neg + o.neg;
  a.sq = e.sq + o.sq;
  a.min = vmin(e.min, o.min);
  a.max = -vmin(e.negmax, o.negmax);
  a.count = static_cast<int64_t>(e.count + o.count);
  return a;
}

// Writes an accumulator to row `i` of the outputs; min and max keep their
// NaN prefill when nothing was counted.
inline void acc_store(const Accumulator& a, const StatsOutput& out, int64_t i) {
  out.count[i] = a.count;
  out.pos[i] = a.pos;
  out.neg[i] = a.neg;
  out.sq[i] = a.sq;
  if (a.count > 0) {
    out.min[i] = a.min;
    out.max[i] = a.max;
  }
}

// Merges an accumulator into row `i` of the outputs (prefilled as above).
inline void acc_store_merge(const Accumulator& a, const StatsOutput& out, int64_t i) {
  if (out.count[i] == 0) {
    out.min[i] = a.min;
    out.max[i] = a.max;
  } else {
    out.min[i] = vmin(out.min[i], a.min);
    out.max[i] = vmax(out.max[i], a.max);
  }
  out.count[i] += a.count;
  out.pos[i] += a.pos;
  out.neg[i] += a.neg;
  out.sq[i] += a.sq;
}

// Index of the first NaN or +-Inf in x[0, n), or -1.
template <class T>
inline int64_t first_nonfinite(const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!__builtin_isfinite(x[i])) return i;
  return -1;
}

}  // namespace SAT_ISA
}  // namespace sat
