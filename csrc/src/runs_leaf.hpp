// Reductions of lists of runs over a contiguous pixel layout, and the
// transposition that gives column-major runs one: the RLE kernel's path for
// masks whose area is small next to the cost of its per-image summary (see
// sat/rle.hpp). Compiled once per instruction set (rle_generic.cpp,
// rle_avx2.cpp) against that set's Ops; see leaf_common.hpp.
#pragma once
#include <cstdint>

#include "leaf_common.hpp"

namespace sat {
inline namespace SAT_ISA {

template <class Ops, class T>
int64_t reduce_runs(const void* data, const PixelRun* runs, int64_t n, bool skip, Accumulator* acc) {
  const T* x = static_cast<const T*>(data);
  auto lanes = Ops::run_start(x);
  int64_t count = 0, skipped = 0;
  if (skip) {
    for (int64_t i = 0; i < n; ++i) skipped += add_range_lanes<Ops, true>(lanes, count, x, runs[i].begin, runs[i].end);
  } else {
    for (int64_t i = 0; i < n; ++i) add_range_lanes<Ops, false>(lanes, count, x, runs[i].begin, runs[i].end);
  }
  if (count > 0) *acc = Ops::run_fold(lanes, count);
  return skipped;
}

template <class Ops, class T>
SignedSums reduce_signed_sums(const void* data, int64_t n) {
  return Ops::reduce_signed(static_cast<const T*>(data), n);
}

// Tiles of kTile x kTile pixels, so that both the rows read and the columns
// written stay in cache.
template <class T>
void transpose_tiles(const void* data, int64_t h, int64_t w, void* out) {
  constexpr int64_t kTile = 32;
  const T* x = static_cast<const T*>(data);
  T* xt = static_cast<T*>(out);
  for (int64_t r0 = 0; r0 < h; r0 += kTile) {
    const int64_t r1 = r0 + kTile < h ? r0 + kTile : h;
    for (int64_t c0 = 0; c0 < w; c0 += kTile) {
      const int64_t c1 = c0 + kTile < w ? c0 + kTile : w;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) xt[c * h + r] = x[r * w + c];
    }
  }
}

template <class Ops>
void add_runs_kernels(KernelTable& t) {
  t.reduce_runs[0] = &reduce_runs<Ops, float>;
  t.reduce_runs[1] = &reduce_runs<Ops, double>;
  t.reduce_signed[0] = &reduce_signed_sums<Ops, float>;
  t.reduce_signed[1] = &reduce_signed_sums<Ops, double>;
  t.transpose[0] = &transpose_tiles<float>;
  t.transpose[1] = &transpose_tiles<double>;
}

}  // namespace SAT_ISA
}  // namespace sat
