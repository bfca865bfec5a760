// Pieces shared by the label and mask leaf kernels (labels_leaf.hpp,
// masks_leaf.hpp), written once against an `Ops` policy that supplies the
// instruction-set specific parts (ops_generic.hpp, ops_avx2.hpp):
//   template <class T> static SignedSums reduce_signed(const T* x, int64_t n);
//       (pos and neg of run_fold after run_start and one run_add, bitwise)
//   static RunLanes run_start(const T*);   (lanes at identity; RunLanes is the Ops' own type)
//   static void run_add(RunLanes& l, const T* x, int64_t n);
//   static Accumulator run_fold(const RunLanes& l, int64_t count);
//   static void merge_run(Accumulator& acc, const RunLanes& l, int64_t count);
//       (acc_merge(acc, run_fold(l, count)), bitwise equal to it)
//   static RunLanes run_start(const float*, const ExtremeLanes& e);  (sums at identity, min/max lanes from e)
//   static void store_extremes(const RunLanes& l, ExtremeLanes& e);
//   static void merge_run_sums(Accumulator& acc, const RunLanes& l, int64_t count);
//       (pos, neg, sq and count of merge_run; min and max untouched)
//   static void merge_extremes(Accumulator& acc, const ExtremeLanes& e);
//       (min and max of acc_merge(acc, run_fold(lanes with e's extremes)))
//   static void add_pixel(PixelAccumulator& a, double v);
//   template <class T, class L> static void add_pixels(const T* x, const L* lab, int64_t n,
//       PixelAccumulator* const* set);  (add_pixel of pixel i into set[i % kLaneSets][lab[i]],
//       every label a valid slot)
//   static int64_t find_word(const uint64_t* p, int64_t w, int64_t end, uint64_t skip);
//       (first index in [w, end) whose word differs from `skip`, else end)
//   template <class L> static int64_t run_end(const L* lab, int64_t i, int64_t n, L l);
//   static void pack_plane(const uint8_t* m, int64_t pixels, uint64_t* out);
//
// A run of pixels is reduced by run_start, run_add and run_fold: pixel i of
// the run is accumulated into lane i % 8 (lanes start at +0 and +-inf); the
// lanes are then combined as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). Every
// Ops must follow this order exactly, so that every instruction set produces
// bitwise identical results. Kernels that reduce several runs into one
// accumulator call run_add once per run on the same lanes (pixel i of each
// run into lane i % 8) and fold once. Label runs over float32 do that for a
// segment's min and max only (its ExtremeLanes, folded once per chunk) and
// fold the sums per run (labels_leaf.hpp).
//
// Leaves work on raw pointers only and use no standard containers; like
// everything inline here they live in the SAT_ISA namespace (see
// accumulator.hpp), so no code compiled for AVX2 can leak into the portable
// units through the linker. Include only from the per-variant *.cpp files.
#pragma once
#include <cstdint>

#include "sat/accumulator.hpp"
#include "sat/dispatch.hpp"
#include "slot_map.hpp"

namespace sat {
inline namespace SAT_ISA {

// Calls f(i, j) for every maximal range [i, j) of finite pixels in x[a, b),
// in order; returns the number of non-finite pixels between them.
template <class T, class F>
SAT_ALWAYS_INLINE int64_t for_each_finite_range(const T* x, int64_t a, int64_t b, F&& f) {
  int64_t skipped = 0;
  int64_t i = a;
  while (i < b) {
    if (!__builtin_isfinite(x[i])) {
      ++skipped;
      ++i;
      continue;
    }
    int64_t j = i + 1;
    while (j < b && __builtin_isfinite(x[j])) ++j;
    f(i, j);
    i = j;
  }
  return skipped;
}

// One run of n pixels reduced and merged into acc.
template <class Ops, class T>
SAT_ALWAYS_INLINE void merge_reduced(Accumulator& acc, const T* x, int64_t n) {
  auto l = Ops::run_start(x);
  Ops::run_add(l, x, n);
  Ops::merge_run(acc, l, n);
}

// Reduces x[a, b) into acc, skipping non-finite pixels when asked; returns
// the number skipped.
template <class Ops, bool Skip, class T>
SAT_ALWAYS_INLINE int64_t add_range(Accumulator& acc, const T* x, int64_t a, int64_t b) {
  if constexpr (!Skip) {
    merge_reduced<Ops>(acc, x + a, b - a);
    return 0;
  } else {
    return for_each_finite_range(x, a, b, [&](int64_t i, int64_t j) { merge_reduced<Ops>(acc, x + i, j - i); });
  }
}

// The same into lanes of Ops::run_start, counting the pixels added.
template <class Ops, bool Skip, class T, class Lanes>
SAT_ALWAYS_INLINE int64_t add_range_lanes(Lanes& l, int64_t& count, const T* x, int64_t a, int64_t b) {
  if constexpr (!Skip) {
    Ops::run_add(l, x + a, b - a);
    count += b - a;
    return 0;
  } else {
    return for_each_finite_range(x, a, b, [&](int64_t i, int64_t j) {
      Ops::run_add(l, x + i, j - i);
      count += j - i;
    });
  }
}

// The chunk's first non-finite pixel as an error, when there is one and such
// pixels are not skipped; the caller has seen a non-finite sum. Sums of squares
// of finite float32 values cannot overflow a double, so a non-finite sum means
// a non-finite pixel, except for huge float64 values: the scan tells those
// apart. Returns whether non-finite pixels are present.
template <class T>
inline bool find_nonfinite(const T* x, int64_t n, bool skip_nonfinite, ChunkResult& r) {
  const int64_t bad = first_nonfinite(x, n);
  if (bad < 0) return false;
  if (!skip_nonfinite) {
    r.error = ErrorKind::nonfinite;
    r.bad_pixel = bad;
    r.bad_value = static_cast<double>(x[bad]);
  }
  return true;
}

}  // namespace SAT_ISA
}  // namespace sat
