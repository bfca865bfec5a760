// The AVX2 Ops of the leaf kernels (see leaf_common.hpp). Include only from
// the *_avx2.cpp files, which alone are compiled with -mavx2 and are only
// called after a run-time check that the CPU has AVX2, FMA, BMI and POPCNT.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "leaf_common.hpp"

#if !defined(__AVX2__)
#error "ops_avx2.hpp needs -mavx2"
#endif

namespace sat {
inline namespace SAT_ISA {

struct Avx2Ops {
  struct Lanes {
    __m256d p0, p1, q0, q1, s0, s1, mn0, mn1, mx0, mx1;
  };

  // Operand order matters (see lane_update): NaN propagates exactly as in the
  // portable code.
  // pos += max(0, v) and neg += min(0, v) as fma(., 1, .): exact products,
  // so the same rounding as lane_update, on the multiply ports. v * v is not
  // exact for float64 v: sq keeps its separate multiply and add.
  static inline void sums_f64(__m256d& pos, __m256d& neg, __m256d& sq, __m256d v) {
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
    pos = _mm256_fmadd_pd(_mm256_max_pd(zero, v), one, pos);
    neg = _mm256_fmadd_pd(_mm256_min_pd(zero, v), one, neg);
    sq = _mm256_add_pd(sq, _mm256_mul_pd(v, v));
  }

  static inline void step_sums(Lanes& l, __m256d a, __m256d b) {
    sums_f64(l.p0, l.q0, l.s0, a);
    sums_f64(l.p1, l.q1, l.s1, b);
  }

  static inline void step(Lanes& l, __m256d a, __m256d b) {
    step_sums(l, a, b);
    l.mn0 = _mm256_min_pd(l.mn0, a);
    l.mn1 = _mm256_min_pd(l.mn1, b);
    l.mx0 = _mm256_max_pd(l.mx0, a);
    l.mx1 = _mm256_max_pd(l.mx1, b);
  }

  static inline void load8(const float* x, __m256d& a, __m256d& b) {
    const __m256 f = _mm256_loadu_ps(x);
    a = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
    b = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
  }
  static inline void load8(const double* x, __m256d& a, __m256d& b) {
    a = _mm256_loadu_pd(x);
    b = _mm256_loadu_pd(x + 4);
  }

  static inline double hadd(__m256d lo, __m256d hi) {
    const __m256d v = _mm256_add_pd(lo, hi);  // (l0+l4, l1+l5, l2+l6, l3+l7)
    const __m128d w = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(w, _mm_unpackhi_pd(w, w)));
  }
  static inline double hmin(__m256d lo, __m256d hi) {
    const __m256d v = _mm256_min_pd(lo, hi);
    const __m128d w = _mm_min_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_min_sd(w, _mm_unpackhi_pd(w, w)));
  }
  static inline double hmax(__m256d lo, __m256d hi) {
    const __m256d v = _mm256_max_pd(lo, hi);
    const __m128d w = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_max_sd(w, _mm_unpackhi_pd(w, w)));
  }

  // The last n % 8 pixels of a run: masked loads put them in lanes 0..rem-1;
  // the other lanes see +0 for the sums (which leaves them unchanged) and
  // +-inf for min/max.
  static inline void load_tail(const float* x, int64_t rem, __m256d& a, __m256d& b) {
    const __m256i m =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rem)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 f = _mm256_maskload_ps(x, m);
    a = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
    b = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
  }
  static inline void load_tail(const double* x, int64_t rem, __m256d& a, __m256d& b) {
    const __m256i r = _mm256_set1_epi64x(rem);
    a = _mm256_maskload_pd(x, _mm256_cmpgt_epi64(r, _mm256_setr_epi64x(0, 1, 2, 3)));
    b = _mm256_maskload_pd(x + 4, _mm256_cmpgt_epi64(r, _mm256_setr_epi64x(4, 5, 6, 7)));
  }

  static Lanes run_start(const double*) {
    Lanes l;
    l.p0 = l.p1 = l.q0 = l.q1 = l.s0 = l.s1 = _mm256_setzero_pd();
    l.mn0 = l.mn1 = _mm256_set1_pd(kInf);
    l.mx0 = l.mx1 = _mm256_set1_pd(-kInf);
    return l;
  }

  static inline void run_add(Lanes& l, const double* x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      __m256d a, b;
      load8(x + i, a, b);
      step(l, a, b);
    }
    const int64_t rem = n - i;
    if (rem > 0) {
      __m256d a, b;
      load_tail(x + i, rem, a, b);
      step_sums(l, a, b);
      const __m256i r = _mm256_set1_epi64x(rem);
      const __m256d in0 = _mm256_castsi256_pd(_mm256_cmpgt_epi64(r, _mm256_setr_epi64x(0, 1, 2, 3)));
      const __m256d in1 = _mm256_castsi256_pd(_mm256_cmpgt_epi64(r, _mm256_setr_epi64x(4, 5, 6, 7)));
      const __m256d inf = _mm256_set1_pd(kInf), ninf = _mm256_set1_pd(-kInf);
      l.mn0 = _mm256_min_pd(l.mn0, _mm256_blendv_pd(inf, a, in0));
      l.mn1 = _mm256_min_pd(l.mn1, _mm256_blendv_pd(inf, b, in1));
      l.mx0 = _mm256_max_pd(l.mx0, _mm256_blendv_pd(ninf, a, in0));
      l.mx1 = _mm256_max_pd(l.mx1, _mm256_blendv_pd(ninf, b, in1));
    }
  }

  static Accumulator run_fold(const Lanes& l, int64_t count) {
    return Accumulator{hadd(l.p0, l.p1),   hadd(l.q0, l.q1),   hadd(l.s0, l.s1),
                       hmin(l.mn0, l.mn1), hmax(l.mx0, l.mx1), count};
  }

  static inline void merge_run(Accumulator& acc, const Lanes& l, int64_t count) { acc_merge(acc, run_fold(l, count)); }

  // float32 input: min and max are taken on the float lanes before widening
  // (exact, and half the instructions). The sums go through fused
  // multiply-adds that round exactly like the separate operations: x * x is
  // exact in float64 for a float32 x, so fma(x, x, sq) == sq + x * x, and
  // fma(v, 1, pos) == pos + v. That moves the adds from the two FP add ports,
  // which bound this loop (cycles per pixel fell by about a fifth on the
  // benchmark machine), to the multiply ports.
  struct FloatSums {
    __m256d p0, p1, q0, q1, s0, s1;
    __m256 mn, mx;
    FloatSums()
        : p0(_mm256_setzero_pd()),
          p1(p0),
          q0(p0),
          q1(p0),
          s0(p0),
          s1(p0),
          mn(_mm256_set1_ps(kInfinity<float>)),
          mx(_mm256_set1_ps(-kInfinity<float>)) {}
    // The sums of eight pixels, widened: d0 the first four, d1 the last.
    void sums(__m256d d0, __m256d d1) {
      const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
      p0 = _mm256_fmadd_pd(_mm256_max_pd(zero, d0), one, p0);
      p1 = _mm256_fmadd_pd(_mm256_max_pd(zero, d1), one, p1);
      q0 = _mm256_fmadd_pd(_mm256_min_pd(zero, d0), one, q0);
      q1 = _mm256_fmadd_pd(_mm256_min_pd(zero, d1), one, q1);
      s0 = _mm256_fmadd_pd(d0, d0, s0);
      s1 = _mm256_fmadd_pd(d1, d1, s1);
    }
    void sums(__m256 f) {
      sums(_mm256_cvtps_pd(_mm256_castps256_ps128(f)), _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
    }
    // Eight pixels from memory. Each half is widened by a conversion that
    // reads it, rather than from the 256-bit load: the extract of the upper
    // half went to the shuffle port, which bounded this loop (issue 14: one
    // run of a whole chunk 0.208 -> 0.166 ns/px on one thread in cache).
    void add(const float* x) {
      const __m256 f = _mm256_loadu_ps(x);
      mn = _mm256_min_ps(mn, f);
      mx = _mm256_max_ps(mx, f);
      sums(_mm256_cvtps_pd(_mm_loadu_ps(x)), _mm256_cvtps_pd(_mm_loadu_ps(x + 4)));
    }
  };

  static FloatSums run_start(const float*) { return FloatSums(); }

  static inline void run_add(FloatSums& l, const float* x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) l.add(x + i);
    const int64_t rem = n - i;
    if (rem > 0) {
      const __m256i m =
          _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rem)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      const __m256 f = _mm256_maskload_ps(x + i, m);
      const __m256 in = _mm256_castsi256_ps(m);
      l.mn = _mm256_min_ps(l.mn, _mm256_blendv_ps(_mm256_set1_ps(kInfinity<float>), f, in));
      l.mx = _mm256_max_ps(l.mx, _mm256_blendv_ps(_mm256_set1_ps(-kInfinity<float>), f, in));
      l.sums(f);
    }
  }

  static Accumulator run_fold(const FloatSums& l, int64_t count) {
    const __m256d mn0 = _mm256_cvtps_pd(_mm256_castps256_ps128(l.mn)),
                  mn1 = _mm256_cvtps_pd(_mm256_extractf128_ps(l.mn, 1));
    const __m256d mx0 = _mm256_cvtps_pd(_mm256_castps256_ps128(l.mx)),
                  mx1 = _mm256_cvtps_pd(_mm256_extractf128_ps(l.mx, 1));
    return Accumulator{hadd(l.p0, l.p1), hadd(l.q0, l.q1), hadd(l.s0, l.s1), hmin(mn0, mn1), hmax(mx0, mx1), count};
  }

  // acc_merge(acc, run_fold(l, count)), bit for bit, in fewer operations:
  // the three sums are folded together (their lane vectors transposed, so
  // that each add of the fold does all three, in the fold's order) and added
  // to acc's pos, neg and sq with one vector add; min and the negated max
  // are folded together on the float lanes (max(a, b) and -min(-a, -b) pick
  // the same operand, signed zeros included; widening is exact). Masks merge
  // once per mask and chunk; float32 label runs use merge_run_sums and
  // merge_extremes below instead.
  static inline void merge_run(Accumulator& acc, const FloatSums& l, int64_t count) {
    double mn, mx;
    fold_extremes(l.mn, l.mx, mn, mx);
    const __m256d a = _mm256_load_pd(&acc.pos);  // pos, neg, sq, min
    _mm256_store_pd(&acc.pos,
                    _mm256_blend_pd(_mm256_add_pd(a, folded_sums(l)), _mm256_set1_pd(vmin(acc.min, mn)), 0x8));
    acc.max = vmax(acc.max, mx);
    acc.count += count;
  }

  // Label runs over float32 (labels_leaf.hpp): a run's min and max lanes
  // start from its segment's ExtremeLanes and go back there, and only its
  // sums are folded and merged per run; merge_extremes folds the lanes once
  // per chunk, in run_fold's order.
  static FloatSums run_start(const float*, const ExtremeLanes& e) {
    FloatSums l;
    l.mn = _mm256_load_ps(e.min);
    l.mx = _mm256_load_ps(e.max);
    return l;
  }
  static inline void store_extremes(const FloatSums& l, ExtremeLanes& e) {
    _mm256_store_ps(e.min, l.mn);
    _mm256_store_ps(e.max, l.mx);
  }
  static inline void merge_run_sums(Accumulator& acc, const FloatSums& l, int64_t count) {
    const __m256d a = _mm256_load_pd(&acc.pos);
    _mm256_store_pd(&acc.pos, _mm256_blend_pd(_mm256_add_pd(a, folded_sums(l)), a, 0x8));
    acc.count += count;
  }
  static void merge_extremes(Accumulator& acc, const ExtremeLanes& e) {
    double mn, mx;
    fold_extremes(_mm256_load_ps(e.min), _mm256_load_ps(e.max), mn, mx);
    acc.min = vmin(acc.min, mn);
    acc.max = vmax(acc.max, mx);
  }

  // (p, q, sq, junk): the three sums of l, each folded in run_fold's order
  // (addition commutes, so a + b and b + a are the same bits). Four shuffles
  // and four blends rather than a transpose's eight shuffles.
  static inline __m256d folded_sums(const FloatSums& l) {
    // v = (l0+l4, l1+l5, l2+l6, l3+l7); w = v + (v with halves swapped):
    // (a0, a1, a0, a1) with a0 = (l0+l4)+(l2+l6), a1 = (l1+l5)+(l3+l7).
    auto halves = [](__m256d lo, __m256d hi) {
      const __m256d v = _mm256_add_pd(lo, hi);
      return _mm256_add_pd(v, _mm256_permute2f128_pd(v, v, 0x01));
    };
    const __m256d p = halves(l.p0, l.p1), q = halves(l.q0, l.q1), sq = halves(l.s0, l.s1);
    // u = (p.a0, q.a1, sq.a0, .), z = (q.a0, p.a1, ., sq.a1) -> swapped in pairs: (p.a1, q.a0, sq.a1, .)
    const __m256d u = _mm256_blend_pd(_mm256_blend_pd(p, q, 0x2), sq, 0x4);
    const __m256d z = _mm256_blend_pd(_mm256_blend_pd(p, q, 0x1), sq, 0x8);
    return _mm256_add_pd(u, _mm256_permute_pd(z, 0x5));
  }

  // The min and max of eight float lanes, in run_fold's order: lanes 0-3 of
  // e hold the min, 4-7 the negated max, and each step is the fold's: lane j
  // with lane j + 4, then j with j + 2, then 0 with 1, first operand first.
  static inline void fold_extremes(__m256 mn_lanes, __m256 mx_lanes, double& mn, double& mx) {
    const __m256 nmx = _mm256_xor_ps(mx_lanes, _mm256_set1_ps(-0.0f));
    __m256 e = _mm256_min_ps(_mm256_permute2f128_ps(mn_lanes, nmx, 0x20), _mm256_permute2f128_ps(mn_lanes, nmx, 0x31));
    e = _mm256_min_ps(e, _mm256_permute_ps(e, _MM_SHUFFLE(1, 0, 3, 2)));
    e = _mm256_min_ps(e, _mm256_permute_ps(e, _MM_SHUFFLE(2, 3, 0, 1)));
    mn = static_cast<double>(_mm256_cvtss_f32(e));
    mx = -static_cast<double>(_mm_cvtss_f32(_mm256_extractf128_ps(e, 1)));
  }

  // Only pos and neg of a run's fold (the image totals of the mask and RLE paths):
  // the same lanes, operations and fold, so the same bits, without the
  // squares and extremes nobody reads there.
  static SignedSums reduce_signed(const float* x, int64_t n) {
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
    __m256d p0 = zero, p1 = zero, q0 = zero, q1 = zero;
    auto add = [&](__m256d d0, __m256d d1) {
      p0 = _mm256_fmadd_pd(_mm256_max_pd(zero, d0), one, p0);
      p1 = _mm256_fmadd_pd(_mm256_max_pd(zero, d1), one, p1);
      q0 = _mm256_fmadd_pd(_mm256_min_pd(zero, d0), one, q0);
      q1 = _mm256_fmadd_pd(_mm256_min_pd(zero, d1), one, q1);
    };
    int64_t i = 0;
    // Widened as FloatSums::add does (conversions that read memory).
    for (; i + 8 <= n; i += 8) add(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)));
    if (i < n) {
      const __m256i m =
          _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - i)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      const __m256 f = _mm256_maskload_ps(x + i, m);
      add(_mm256_cvtps_pd(_mm256_castps256_ps128(f)), _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
    }
    return SignedSums{hadd(p0, p1), hadd(q0, q1)};
  }
  static SignedSums reduce_signed(const double* x, int64_t n) {
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
    __m256d p0 = zero, p1 = zero, q0 = zero, q1 = zero;
    auto add = [&](__m256d a, __m256d b) {
      p0 = _mm256_fmadd_pd(_mm256_max_pd(zero, a), one, p0);
      p1 = _mm256_fmadd_pd(_mm256_max_pd(zero, b), one, p1);
      q0 = _mm256_fmadd_pd(_mm256_min_pd(zero, a), one, q0);
      q1 = _mm256_fmadd_pd(_mm256_min_pd(zero, b), one, q1);
    };
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) add(_mm256_loadu_pd(x + i), _mm256_loadu_pd(x + i + 4));
    if (i < n) {
      __m256d a, b;
      load_tail(x + i, n - i, a, b);
      add(a, b);
    }
    return SignedSums{hadd(p0, p1), hadd(q0, q1)};
  }

  static inline void add_pixel(PixelAccumulator& acc, double v) {
    const __m256d bv = _mm256_set1_pd(v);
    // (max(0,v), min(0,v), v*v, 1) with the operand order of vmax/vmin.
    __m256d t = _mm256_max_pd(_mm256_setr_pd(0.0, -kInf, -kInf, -kInf), bv);
    t = _mm256_min_pd(_mm256_setr_pd(kInf, 0.0, kInf, kInf), t);
    t = _mm256_mul_pd(t, _mm256_blend_pd(_mm256_set1_pd(1.0), bv, 0x4));
    t = _mm256_blend_pd(t, _mm256_set1_pd(1.0), 0x8);
    _mm256_store_pd(&acc.pos, _mm256_add_pd(_mm256_load_pd(&acc.pos), t));
    const __m128d vv = _mm_xor_pd(_mm256_castpd256_pd128(bv), _mm_setr_pd(0.0, -0.0));
    _mm_store_pd(&acc.min, _mm_min_pd(_mm_load_pd(&acc.min), vv));
  }

  // add_pixel of pixel i into set[i % kLaneSets][lab[i]], every label a valid
  // slot (checked by the caller), four pixels at a time: their vectors
  // (max(0,v), min(0,v), v*v, 1) and (v, -v) are built together and
  // transposed, instead of a broadcast and six operations per pixel. Each
  // element is the same operation on the same operands as in add_pixel, so
  // the bits are too.
  static inline __m256d widen4(const float* x) { return _mm256_cvtps_pd(_mm_loadu_ps(x)); }
  static inline __m256d widen4(const double* x) { return _mm256_loadu_pd(x); }

  template <class T, class L>
  static void add_pixels(const T* x, const L* lab, int64_t n, PixelAccumulator* const* set) {
    static_assert(kLaneSets % 4 == 0, "whole groups of four pixels per set cycle");
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0), sign = _mm256_set1_pd(-0.0);
    auto add = [](PixelAccumulator& acc, __m256d sums, __m128d minpair) {
      _mm256_store_pd(&acc.pos, _mm256_add_pd(_mm256_load_pd(&acc.pos), sums));
      _mm_store_pd(&acc.min, _mm_min_pd(_mm_load_pd(&acc.min), minpair));
    };
    auto add4 = [&](const T* x4, const L* lab4, PixelAccumulator* const* set4) {
      const __m256d d = widen4(x4);
      const __m256d p = _mm256_max_pd(zero, d), q = _mm256_min_pd(zero, d), sq = _mm256_mul_pd(d, d);
      const __m256d pq02 = _mm256_unpacklo_pd(p, q), pq13 = _mm256_unpackhi_pd(p, q);
      // (sq0, 1, sq2, 1) by a blend, not a shuffle (noise K=16 +1.5-2%, issue 14)
      const __m256d s02 = _mm256_blend_pd(sq, one, 0xA), s13 = _mm256_unpackhi_pd(sq, one);
      const __m256d nd = _mm256_xor_pd(d, sign);
      const __m256d m02 = _mm256_unpacklo_pd(d, nd), m13 = _mm256_unpackhi_pd(d, nd);
      add(set4[0][lab4[0]], _mm256_permute2f128_pd(pq02, s02, 0x20), _mm256_castpd256_pd128(m02));
      add(set4[1][lab4[1]], _mm256_permute2f128_pd(pq13, s13, 0x20), _mm256_castpd256_pd128(m13));
      add(set4[2][lab4[2]], _mm256_permute2f128_pd(pq02, s02, 0x31), _mm256_extractf128_pd(m02, 1));
      add(set4[3][lab4[3]], _mm256_permute2f128_pd(pq13, s13, 0x31), _mm256_extractf128_pd(m13, 1));
    };
    int64_t i = 0;
    for (; i + kLaneSets <= n; i += kLaneSets)
      for (int64_t j = 0; j < kLaneSets; j += 4) add4(x + i + j, lab + i + j, set + j);
    for (; i < n; ++i) add_pixel(set[i % kLaneSets][lab[i]], static_cast<double>(x[i]));
  }

  static int64_t find_word(const uint64_t* p, int64_t w, int64_t end, uint64_t skip) {
    const __m256i pattern = _mm256_set1_epi64x(static_cast<long long>(skip));
    for (; w + 4 <= end; w += 4) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + w));
      const unsigned same =
          static_cast<unsigned>(_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(v, pattern))));
      if (same != 0xFu) return w + __builtin_ctz(~same);
    }
    while (w < end && p[w] == skip) ++w;
    return w;
  }

  static inline uint32_t eq_mask(const uint8_t* p, uint8_t l) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(static_cast<char>(l)))));
  }
  static inline uint32_t eq_mask(const uint16_t* p, uint16_t l) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi16(v, _mm256_set1_epi16(static_cast<short>(l)))));
  }
  static inline uint32_t eq_mask(const int32_t* p, int32_t l) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi32(v, _mm256_set1_epi32(l))));
  }

  // Two 32-byte compares per step: for uint8 labels a run of up to 65
  // pixels (most of Voronoi K=16's, mean 45) ends in the first step, so the
  // loop's exit is predictable (+3-5% on Voronoi K=16, issue 14).
  template <class L>
  static int64_t run_end(const L* lab, int64_t i, int64_t n, L l) {
    constexpr int64_t per = 32 / sizeof(L);
    while (i + 2 * per <= n) {
      const uint64_t eq = uint64_t(eq_mask(lab + i, l)) | (uint64_t(eq_mask(lab + i + per, l)) << 32);
      if (eq != ~uint64_t(0)) return i + __builtin_ctzll(~eq) / static_cast<int>(sizeof(L));
      i += 2 * per;
    }
    while (i + per <= n) {
      const uint32_t eq = eq_mask(lab + i, l);
      if (eq != 0xFFFFFFFFu) return i + __builtin_ctz(~eq) / static_cast<int>(sizeof(L));
      i += per;
    }
    while (i < n && lab[i] == l) ++i;
    return i;
  }

  static void pack_plane(const uint8_t* m, int64_t pixels, uint64_t* out) {
    const __m256i zero = _mm256_setzero_si256();
    const int64_t full = pixels / 64;
    for (int64_t w = 0; w < full; ++w) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + w * 64));
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + w * 64 + 32));
      const uint32_t za = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(a, zero)));
      const uint32_t zb = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(b, zero)));
      out[w] = ~(uint64_t(za) | (uint64_t(zb) << 32));
    }
    if (pixels % 64) {
      uint64_t word = 0;
      for (int64_t i = full * 64; i < pixels; ++i) word |= uint64_t(m[i] != 0) << (i - full * 64);
      out[full] = word;
    }
  }
};

}  // namespace SAT_ISA
}  // namespace sat
