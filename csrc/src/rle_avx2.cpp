// AVX2 strip kernel of the RLE summary (see sat/rle.hpp and RleStrip8F32Fn in
// sat/dispatch.hpp). Compiled with -mavx2 (x86-64 only) and only called
// through the kernel table, after the run-time check in dispatch.cpp. Raw
// pointers in, raw pointers out, every helper internal: no inline function
// compiled for AVX2 can reach the portable code.
//
// Each SIMD lane is one column, and each column is accumulated row after row,
// exactly as in the portable strip: results are bitwise identical.
#include <immintrin.h>

#include <cstdint>

#include "ops_avx2.hpp"
#include "runs_leaf.hpp"
#include "sat/accumulator.hpp"
#include "sat/dispatch.hpp"

namespace sat {
namespace avx2 {

namespace {

// The sums through fused multiply-adds that round exactly like lane_update's
// separate operations (see Avx2Ops::FloatSums): fma(v, 1, pos) == pos + v, and
// for float32 pixels fma(x, x, sq) == sq + x * x (x * x is exact in float64).
struct Sums8 {
  __m256d p0, p1, q0, q1, s0, s1;

  static void pos_neg(__m256d& pos, __m256d& neg, __m256d v) {
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
    pos = _mm256_fmadd_pd(_mm256_max_pd(zero, v), one, pos);
    neg = _mm256_fmadd_pd(_mm256_min_pd(zero, v), one, neg);
  }
  void add(__m256d a, __m256d b) {  // float64 pixels
    pos_neg(p0, q0, a);
    pos_neg(p1, q1, b);
    s0 = _mm256_add_pd(s0, _mm256_mul_pd(a, a));
    s1 = _mm256_add_pd(s1, _mm256_mul_pd(b, b));
  }
  void add_f32(__m256 f) {  // float32 pixels
    const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(f)), b = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
    pos_neg(p0, q0, a);
    pos_neg(p1, q1, b);
    s0 = _mm256_fmadd_pd(a, a, s0);
    s1 = _mm256_fmadd_pd(b, b, s1);
  }
};

Sums8 load_sums(const double* sums) {
  return Sums8{_mm256_loadu_pd(sums),      _mm256_loadu_pd(sums + 4),  _mm256_loadu_pd(sums + 8),
               _mm256_loadu_pd(sums + 12), _mm256_loadu_pd(sums + 16), _mm256_loadu_pd(sums + 20)};
}

void store_sums(const Sums8& s, double* sums) {
  _mm256_storeu_pd(sums, s.p0);
  _mm256_storeu_pd(sums + 4, s.p1);
  _mm256_storeu_pd(sums + 8, s.q0);
  _mm256_storeu_pd(sums + 12, s.q1);
  _mm256_storeu_pd(sums + 16, s.s0);
  _mm256_storeu_pd(sums + 20, s.s1);
}

inline void transpose4_store(__m128 v0, __m128 v1, __m128 v2, __m128 v3, float* xt, int64_t h, int64_t r) {
  _MM_TRANSPOSE4_PS(v0, v1, v2, v3);
  _mm_storeu_ps(xt + r, v0);
  _mm_storeu_ps(xt + h + r, v1);
  _mm_storeu_ps(xt + 2 * h + r, v2);
  _mm_storeu_ps(xt + 3 * h + r, v3);
}

void strip8(const float* x, int64_t w, int64_t h, int64_t r0, int64_t r1, int64_t c0, double* sums, float* mn,
            float* mx, float* xt) {
  Sums8 s = load_sums(sums);
  // min/max on the float lanes: exact, and half the work of widened lanes.
  __m256 lo = _mm256_set1_ps(kInfinity<float>), hi = _mm256_set1_ps(-kInfinity<float>);
  float* out = xt + c0 * h;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    __m256 v[4];
    for (int j = 0; j < 4; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(x + (r + j) * w + c0 + 64), _MM_HINT_T0);
      v[j] = _mm256_loadu_ps(x + (r + j) * w + c0);
      s.add_f32(v[j]);
      lo = _mm256_min_ps(lo, v[j]);
      hi = _mm256_max_ps(hi, v[j]);
    }
    transpose4_store(_mm256_castps256_ps128(v[0]), _mm256_castps256_ps128(v[1]), _mm256_castps256_ps128(v[2]),
                     _mm256_castps256_ps128(v[3]), out, h, r);
    transpose4_store(_mm256_extractf128_ps(v[0], 1), _mm256_extractf128_ps(v[1], 1), _mm256_extractf128_ps(v[2], 1),
                     _mm256_extractf128_ps(v[3], 1), out + 4 * h, h, r);
  }
  for (; r < r1; ++r) {
    const float* row = x + r * w + c0;
    const __m256 v = _mm256_loadu_ps(row);
    s.add_f32(v);
    lo = _mm256_min_ps(lo, v);
    hi = _mm256_max_ps(hi, v);
    for (int j = 0; j < 8; ++j) out[j * h + r] = row[j];
  }
  store_sums(s, sums);
  _mm256_storeu_ps(mn, lo);
  _mm256_storeu_ps(mx, hi);
}

void strip8(const double* x, int64_t w, int64_t h, int64_t r0, int64_t r1, int64_t c0, double* sums, double* mn,
            double* mx, double* xt) {
  Sums8 s = load_sums(sums);
  __m256d lo0 = _mm256_set1_pd(kInf), lo1 = lo0;
  __m256d hi0 = _mm256_set1_pd(-kInf), hi1 = hi0;
  double* out = xt + c0 * h;
  int64_t r = r0;
  for (; r + 2 <= r1; r += 2) {
    __m256d a[2], b[2];
    for (int j = 0; j < 2; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(x + (r + j) * w + c0 + 32), _MM_HINT_T0);
      a[j] = _mm256_loadu_pd(x + (r + j) * w + c0);
      b[j] = _mm256_loadu_pd(x + (r + j) * w + c0 + 4);
      s.add(a[j], b[j]);
      lo0 = _mm256_min_pd(lo0, a[j]);
      lo1 = _mm256_min_pd(lo1, b[j]);
      hi0 = _mm256_max_pd(hi0, a[j]);
      hi1 = _mm256_max_pd(hi1, b[j]);
    }
    // unpack pairs rows per column within each 128-bit half:
    // lo(a0, a1) = (c0 r, c0 r+1 | c2 r, c2 r+1), hi(a0, a1) = (c1 .. | c3 ..).
    const __m256d la = _mm256_unpacklo_pd(a[0], a[1]), ha = _mm256_unpackhi_pd(a[0], a[1]);
    const __m256d lb = _mm256_unpacklo_pd(b[0], b[1]), hb = _mm256_unpackhi_pd(b[0], b[1]);
    _mm_storeu_pd(out + r, _mm256_castpd256_pd128(la));
    _mm_storeu_pd(out + h + r, _mm256_castpd256_pd128(ha));
    _mm_storeu_pd(out + 2 * h + r, _mm256_extractf128_pd(la, 1));
    _mm_storeu_pd(out + 3 * h + r, _mm256_extractf128_pd(ha, 1));
    _mm_storeu_pd(out + 4 * h + r, _mm256_castpd256_pd128(lb));
    _mm_storeu_pd(out + 5 * h + r, _mm256_castpd256_pd128(hb));
    _mm_storeu_pd(out + 6 * h + r, _mm256_extractf128_pd(lb, 1));
    _mm_storeu_pd(out + 7 * h + r, _mm256_extractf128_pd(hb, 1));
  }
  for (; r < r1; ++r) {
    const double* row = x + r * w + c0;
    const __m256d a = _mm256_loadu_pd(row), b = _mm256_loadu_pd(row + 4);
    s.add(a, b);
    lo0 = _mm256_min_pd(lo0, a);
    lo1 = _mm256_min_pd(lo1, b);
    hi0 = _mm256_max_pd(hi0, a);
    hi1 = _mm256_max_pd(hi1, b);
    for (int j = 0; j < 8; ++j) out[j * h + r] = row[j];
  }
  store_sums(s, sums);
  _mm256_storeu_pd(mn, lo0);
  _mm256_storeu_pd(mn + 4, lo1);
  _mm256_storeu_pd(mx, hi0);
  _mm256_storeu_pd(mx + 4, hi1);
}

// xt (w, h) = x (h, w) transposed, float32: 8 x 8 tiles transposed in
// registers; the edges that do not fill a tile are copied one by one.
void transpose_f32(const void* data, int64_t h, int64_t w, void* out) {
  const float* x = static_cast<const float*>(data);
  float* xt = static_cast<float*>(out);
  const int64_t h8 = h - h % 8, w8 = w - w % 8;
  for (int64_t r = 0; r < h8; r += 8) {
    for (int64_t c = 0; c < w8; c += 8) {
      __m256 v[8];
      for (int j = 0; j < 8; ++j) v[j] = _mm256_loadu_ps(x + (r + j) * w + c);
      const __m256 a0 = _mm256_unpacklo_ps(v[0], v[1]), a1 = _mm256_unpackhi_ps(v[0], v[1]);
      const __m256 a2 = _mm256_unpacklo_ps(v[2], v[3]), a3 = _mm256_unpackhi_ps(v[2], v[3]);
      const __m256 a4 = _mm256_unpacklo_ps(v[4], v[5]), a5 = _mm256_unpackhi_ps(v[4], v[5]);
      const __m256 a6 = _mm256_unpacklo_ps(v[6], v[7]), a7 = _mm256_unpackhi_ps(v[6], v[7]);
      const __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xEE);
      const __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xEE);
      const __m256 b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xEE);
      const __m256 b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xEE);
      float* o = xt + c * h + r;
      _mm256_storeu_ps(o, _mm256_permute2f128_ps(b0, b4, 0x20));
      _mm256_storeu_ps(o + h, _mm256_permute2f128_ps(b1, b5, 0x20));
      _mm256_storeu_ps(o + 2 * h, _mm256_permute2f128_ps(b2, b6, 0x20));
      _mm256_storeu_ps(o + 3 * h, _mm256_permute2f128_ps(b3, b7, 0x20));
      _mm256_storeu_ps(o + 4 * h, _mm256_permute2f128_ps(b0, b4, 0x31));
      _mm256_storeu_ps(o + 5 * h, _mm256_permute2f128_ps(b1, b5, 0x31));
      _mm256_storeu_ps(o + 6 * h, _mm256_permute2f128_ps(b2, b6, 0x31));
      _mm256_storeu_ps(o + 7 * h, _mm256_permute2f128_ps(b3, b7, 0x31));
    }
    for (int64_t j = r; j < r + 8; ++j)
      for (int64_t c = w8; c < w; ++c) xt[c * h + j] = x[j * w + c];
  }
  for (int64_t j = h8; j < h; ++j)
    for (int64_t c = 0; c < w; ++c) xt[c * h + j] = x[j * w + c];
}

}  // namespace

void add_rle(KernelTable& t) {
  t.rle_strip8_f32 = &strip8;
  t.rle_strip8_f64 = &strip8;
  add_runs_kernels<Avx2Ops>(t);
  t.transpose[0] = &transpose_f32;
}

}  // namespace avx2
}  // namespace sat
