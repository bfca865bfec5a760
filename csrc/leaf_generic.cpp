// Portable leaf kernels: plain C++ with the same lane structure as the AVX2
// variant, so both round identically.
#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "leaf.hpp"

namespace sat {
namespace generic {

#include "leaf_impl.hpp"

struct GenericOps {
  template <class T>
  static RunStats reduce(const T* x, int64_t n) {
    double p[8], q[8], s[8], mn[8], mx[8];
    for (int j = 0; j < 8; ++j) {
      p[j] = q[j] = s[j] = 0.0;
      mn[j] = kInf;
      mx[j] = -kInf;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int j = static_cast<int>(i & 7);
      pixel_into(p[j], q[j], s[j], mn[j], mx[j], static_cast<double>(x[i]));
    }
    auto add8 = [](const double* l) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); };
    auto min8 = [](const double* l) {
      double h[4], g[2];
      for (int j = 0; j < 4; ++j) h[j] = dmin(l[j], l[j + 4]);
      for (int j = 0; j < 2; ++j) g[j] = dmin(h[j], h[j + 2]);
      return dmin(g[0], g[1]);
    };
    auto max8 = [](const double* l) {
      double h[4], g[2];
      for (int j = 0; j < 4; ++j) h[j] = dmax(l[j], l[j + 4]);
      for (int j = 0; j < 2; ++j) g[j] = dmax(h[j], h[j + 2]);
      return dmax(g[0], g[1]);
    };
    return RunStats{add8(p), add8(q), add8(s), min8(mn), max8(mx)};
  }

  static void add_pixel(PixelAccumulator& a, double v) {
    a.pos += dmax(0.0, v);
    a.neg += dmin(0.0, v);
    a.sq += v * v;
    a.count += 1.0;
    a.min = dmin(a.min, v);
    a.negmax = dmin(a.negmax, -v);
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

  static uint64_t xor_sum(const uint8_t* p, int64_t bytes) {
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
};

}  // namespace generic

const LeafTable& leaf_table_generic() {
  static const LeafTable table = generic::make_leaf_table<generic::GenericOps>("generic");
  return table;
}

}  // namespace sat
