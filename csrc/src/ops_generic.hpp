// The portable Ops of the leaf kernels (see leaf_common.hpp): plain C++ with
// the same lane structure as the AVX2 Ops, so both round identically.
#pragma once
#include <cstdint>

#include "leaf_common.hpp"

namespace sat {
inline namespace SAT_ISA {

struct GenericOps {
  template <class T>
  static Accumulator reduce(const T* x, int64_t n) {
    double p[8], q[8], s[8], mn[8], mx[8];
    for (int j = 0; j < 8; ++j) {
      p[j] = q[j] = s[j] = 0.0;
      mn[j] = kInf;
      mx[j] = -kInf;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int j = static_cast<int>(i & 7);
      lane_update(p[j], q[j], s[j], mn[j], mx[j], static_cast<double>(x[i]));
    }
    auto add8 = [](const double* l) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); };
    auto min8 = [](const double* l) {
      double h[4], g[2];
      for (int j = 0; j < 4; ++j) h[j] = vmin(l[j], l[j + 4]);
      for (int j = 0; j < 2; ++j) g[j] = vmin(h[j], h[j + 2]);
      return vmin(g[0], g[1]);
    };
    auto max8 = [](const double* l) {
      double h[4], g[2];
      for (int j = 0; j < 4; ++j) h[j] = vmax(l[j], l[j + 4]);
      for (int j = 0; j < 2; ++j) g[j] = vmax(h[j], h[j + 2]);
      return vmax(g[0], g[1]);
    };
    return Accumulator{add8(p), add8(q), add8(s), min8(mn), max8(mx), n};
  }

  static void add_pixel(PixelAccumulator& a, double v) { acc_add_pixel(a, v); }

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
