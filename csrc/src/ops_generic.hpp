// The portable Ops of the leaf kernels (see leaf_common.hpp): plain C++ with
// the same lane structure as the AVX2 Ops, so both round identically.
#pragma once
#include <cstdint>

#include "leaf_common.hpp"

namespace sat {
inline namespace SAT_ISA {

struct GenericOps {
  // The eight lanes of runs being reduced (see leaf_common.hpp).
  struct RunLanes {
    double p[8], q[8], s[8], mn[8], mx[8];
  };

  template <class T>
  static RunLanes run_start(const T*) {
    RunLanes l;
    for (int j = 0; j < 8; ++j) {
      l.p[j] = l.q[j] = l.s[j] = 0.0;
      l.mn[j] = kInf;
      l.mx[j] = -kInf;
    }
    return l;
  }

  template <class T>
  static void run_add(RunLanes& l, const T* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const int j = static_cast<int>(i & 7);
      lane_update(l.p[j], l.q[j], l.s[j], l.mn[j], l.mx[j], static_cast<double>(x[i]));
    }
  }

  // The eight lanes' sum in the order of leaf_common.hpp.
  static double fold_sum(const double* v) { return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7])); }

  // The eight lanes' min and max, in the same order.
  static double fold_min(const double* v) {
    double h[4], g[2];
    for (int j = 0; j < 4; ++j) h[j] = vmin(v[j], v[j + 4]);
    for (int j = 0; j < 2; ++j) g[j] = vmin(h[j], h[j + 2]);
    return vmin(g[0], g[1]);
  }
  static double fold_max(const double* v) {
    double h[4], g[2];
    for (int j = 0; j < 4; ++j) h[j] = vmax(v[j], v[j + 4]);
    for (int j = 0; j < 2; ++j) g[j] = vmax(h[j], h[j + 2]);
    return vmax(g[0], g[1]);
  }

  static Accumulator run_fold(const RunLanes& l, int64_t count) {
    return Accumulator{fold_sum(l.p), fold_sum(l.q), fold_sum(l.s), fold_min(l.mn), fold_max(l.mx), count};
  }

  static void merge_run(Accumulator& acc, const RunLanes& l, int64_t count) { acc_merge(acc, run_fold(l, count)); }

  // Label runs over float32 (see Avx2Ops): extremes in the segment's
  // ExtremeLanes across the chunk, sums folded per run.
  template <class T>
  static RunLanes run_start(const T* x, const ExtremeLanes& e) {
    RunLanes l = run_start(x);
    for (int j = 0; j < 8; ++j) {
      l.mn[j] = static_cast<double>(e.min[j]);
      l.mx[j] = static_cast<double>(e.max[j]);
    }
    return l;
  }
  // Exact: the lanes hold float32 values (or their infinities).
  static void store_extremes(const RunLanes& l, ExtremeLanes& e) {
    for (int j = 0; j < 8; ++j) {
      e.min[j] = static_cast<float>(l.mn[j]);
      e.max[j] = static_cast<float>(l.mx[j]);
    }
  }
  static void merge_run_sums(Accumulator& acc, const RunLanes& l, int64_t count) {
    acc.pos += fold_sum(l.p);
    acc.neg += fold_sum(l.q);
    acc.sq += fold_sum(l.s);
    acc.count += count;
  }
  static void merge_extremes(Accumulator& acc, const ExtremeLanes& e) {
    double mn[8], mx[8];
    for (int j = 0; j < 8; ++j) {
      mn[j] = static_cast<double>(e.min[j]);
      mx[j] = static_cast<double>(e.max[j]);
    }
    acc.min = vmin(acc.min, fold_min(mn));
    acc.max = vmax(acc.max, fold_max(mx));
  }

  // pos and neg of a run's fold alone (same lanes and fold, so the same bits).
  template <class T>
  static SignedSums reduce_signed(const T* x, int64_t n) {
    double p[8] = {}, q[8] = {};
    for (int64_t i = 0; i < n; ++i) {
      const int j = static_cast<int>(i & 7);
      const double v = static_cast<double>(x[i]);
      p[j] = p[j] + vmax(0.0, v);
      q[j] = q[j] + vmin(0.0, v);
    }
    return SignedSums{fold_sum(p), fold_sum(q)};
  }

  static void add_pixel(PixelAccumulator& a, double v) { acc_add_pixel(a, v); }

  // Pixel i into set[i % kLaneSets][lab[i]]; every label is a valid slot
  // (checked by the caller).
  template <class T, class L>
  static void add_pixels(const T* x, const L* lab, int64_t n, PixelAccumulator* const* set) {
    for (int64_t i = 0; i < n; ++i) acc_add_pixel(set[i % kLaneSets][lab[i]], static_cast<double>(x[i]));
  }

  static int64_t find_word(const uint64_t* p, int64_t w, int64_t end, uint64_t skip) {
    while (w < end && p[w] == skip) ++w;
    return w;
  }

  template <class L>
  static int64_t run_end(const L* lab, int64_t i, int64_t n, L l) {
    while (i < n && lab[i] == l) ++i;
    return i;
  }

  static void pack_plane(const uint8_t* m, int64_t pixels, uint64_t* out) {
    const int64_t full = pixels / 64;
    for (int64_t w = 0; w < full; ++w) {
      uint64_t word = 0;
      const uint8_t* b = m + w * 64;
      for (int i = 0; i < 64; ++i) word |= uint64_t(b[i] != 0) << i;
      out[w] = word;
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
