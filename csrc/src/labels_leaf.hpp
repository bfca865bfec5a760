// The label-map leaf kernel: reduces one chunk of one image into per-slot
// accumulators. Compiled once per instruction set (labels_generic.cpp,
// labels_avx2.cpp) against that set's Ops; see leaf_common.hpp.
#pragma once
#include <cstdint>
#include <type_traits>

#include "leaf_common.hpp"

namespace sat {
inline namespace SAT_ISA {

template <class L>
inline bool label_slot(L l, const LabelChunkArgs& a, int64_t& slot) {
  const int64_t v = static_cast<int64_t>(l);
  if (a.has_ignore && v == a.ignore_index) {
    slot = a.num_segments;
    return true;
  }
  if (v < 0 || v >= a.num_segments) return false;
  slot = v;
  return true;
}

template <class L>
inline void bad_label(ChunkResult& r, int64_t i, L l) {
  r.error = ErrorKind::label;
  r.bad_pixel = i;
  r.bad_value = static_cast<double>(l);
}

// Mean run length of the first pixels decides between the run-aware path and
// the per-pixel paths. It depends only on the chunk's own labels and on K, so
// the choice (and with it the rounding) is the same for any thread count.
// Runs of varying length cost up to twice what runs of one length do (mean
// 32: 22 vs 13 ns per run); the lane path costs more on runs than on noise
// (pixel i and i + kLaneSets then often update the same accumulator). Both
// measured on K = 16 labels with run lengths drawn uniformly around the mean
// (issue 14, one thread, in cache): the runs path costs 1.76x the lane path
// at a mean of 8, 1.31x at 12, 1.07x at 16 and 0.97x at 20. Out of cache on
// two threads the runs path does relatively better (it wins from a mean of
// about 13 on SLIC superpixels), so 18 is a compromise. Against the scatter
// path (K + 2 > kMaxLaneSlots) the runs path wins from a mean of 4 up.
constexpr int64_t kRunSample = 1024;
constexpr int64_t kMinMeanRunVsLanes = 18;
constexpr int64_t kMinMeanRunVsScatter = 8;

template <class L>
inline bool prefer_runs(const L* lab, int64_t n, int64_t min_mean_run) {
  const int64_t m = n < kRunSample ? n : kRunSample;
  int64_t changes = 0;
  for (int64_t i = 1; i < m; ++i) changes += lab[i] != lab[i - 1];
  return m >= min_mean_run * (changes + 1);
}

// One run of a segment over float32 saliency: the run's sums are folded and
// merged into acc, its extremes stay in the segment's lanes (e).
template <class Ops, class T>
SAT_ALWAYS_INLINE void add_run_keep_extremes(Accumulator& acc, ExtremeLanes& e, const T* x, int64_t n) {
  auto l = Ops::run_start(x, e);
  Ops::run_add(l, x, n);
  Ops::store_extremes(l, e);
  Ops::merge_run_sums(acc, l, n);
}

// Label runs. Over float32 saliency a segment's min and max lanes are kept
// across its runs in the chunk (pixel i of each run into lane i % 8, as a
// mask's are) and folded once at the end: per run that saves the fold of the
// extremes (about 5% on Voronoi K=16 and K=64, issue 14). The sums are folded
// per run. Over float64 the whole run is folded and merged per run.
template <class Ops, bool Skip, class T, class L>
inline ChunkResult label_runs(const T* x, const L* lab, const LabelChunkArgs& a, ChunkScratch& s) {
  constexpr bool kKeepExtremes = std::is_same<T, float>::value;
  ChunkResult r;
  int64_t i = 0;
  const int64_t n = a.pixels;
  while (i < n) {
    const L l = lab[i];
    int64_t slot;
    if (!label_slot(l, a, slot)) {
      bad_label(r, i, l);
      return r;
    }
    const int64_t j = Ops::run_end(lab, i + 1, n, l);
    const int64_t at = slot_index(s, slot);
    if constexpr (kKeepExtremes) {
      Accumulator& acc = s.acc[at];
      ExtremeLanes& e = s.extremes[at];
      // A slot the chunk has not reduced yet: its lanes hold an earlier chunk's.
      if (acc.count == 0) extremes_reset(e);
      if constexpr (!Skip) {
        add_run_keep_extremes<Ops>(acc, e, x + i, j - i);
      } else {
        r.nonfinite += for_each_finite_range(
            x, i, j, [&](int64_t p, int64_t q) { add_run_keep_extremes<Ops>(acc, e, x + p, q - p); });
      }
    } else {
      r.nonfinite += add_range<Ops, Skip>(s.acc[at], x, i, j);
    }
    // A run of only non-finite pixels leaves count at 0: forget the slot.
    if (Skip && s.acc[at].count == 0 && s.n_touched > 0 && s.touched[s.n_touched - 1] == slot) forget_last(s);
    i = j;
  }
  if constexpr (kKeepExtremes) {
    for (int64_t t = 0; t < s.n_touched; ++t) {
      const int64_t at = is_compact(s) ? t : s.touched[t];
      Ops::merge_extremes(s.acc[at], s.extremes[at]);
    }
  }
  return r;
}

// Worst-case labels (noise): one update per pixel, alternating between two
// accumulator sets so consecutive pixels do not wait on each other's stores.
template <class T, class L>
inline ChunkResult label_scatter(const T* x, const L* lab, const LabelChunkArgs& a, ChunkScratch& s) {
  ChunkResult r;
  const int64_t n = a.pixels;
  if (is_compact(s)) {
    // Both sets share the map: acc[at] and acc2[at] are the slot's even and
    // odd pixels, merged as in direct scratch (acc2 entries a slot's odd
    // pixels never reached are at identity, which merges exactly).
    for (int64_t i = 0; i < n; ++i) {
      int64_t slot;
      if (!label_slot(lab[i], a, slot)) {
        bad_label(r, i, lab[i]);
        break;
      }
      const int64_t at = slot_index(s, slot);
      acc_add_pixel((i & 1) == 0 ? s.acc[at] : s.acc2[at], static_cast<double>(x[i]));
    }
    for (int64_t t = 0; t < s.n_touched; ++t) {
      acc_merge(s.acc[t], s.acc2[t]);
      acc_reset(s.acc2[t]);
    }
    return r;
  }
  for (int64_t i = 0; i < n; ++i) {
    int64_t slot;
    if (!label_slot(lab[i], a, slot)) {
      bad_label(r, i, lab[i]);
      break;
    }
    if ((i & 1) == 0 || s.acc2 == nullptr) {
      acc_add_pixel(s.acc[slot_index(s, slot)], static_cast<double>(x[i]));
    } else {
      if (s.acc2[slot].count == 0) s.touched2[s.n_touched2++] = slot;
      acc_add_pixel(s.acc2[slot], static_cast<double>(x[i]));
    }
  }
  for (int64_t t = 0; t < s.n_touched2; ++t) {
    const int64_t slot = s.touched2[t];
    acc_merge(s.acc[slot_index(s, slot)], s.acc2[slot]);
    acc_reset(s.acc2[slot]);
  }
  s.n_touched2 = 0;
  return r;
}

// Whether every label of the chunk is its own slot: all in [0, K) and none
// equal to an ignore_index inside that range. One pass over the labels that
// compilers vectorise (an unsigned max and a count of equal labels), so that
// the per-pixel loop of label_lanes can skip the checks.
template <class L>
inline bool labels_are_slots(const L* lab, int64_t n, const LabelChunkArgs& a) {
  using U = std::make_unsigned_t<L>;
  U top = 0;
  for (int64_t i = 0; i < n; ++i) top = static_cast<U>(lab[i]) > top ? static_cast<U>(lab[i]) : top;
  // Negative labels became huge unsigned values, so this one compare
  // rejects them too.
  if (static_cast<uint64_t>(top) >= static_cast<uint64_t>(a.num_segments)) return false;
  if (!a.has_ignore || a.ignore_index < 0 || a.ignore_index >= a.num_segments) return true;
  const L ignored = static_cast<L>(a.ignore_index);
  int64_t same = 0;
  for (int64_t i = 0; i < n; ++i) same += lab[i] == ignored;
  return same == 0;
}

// Noisy labels with a small vocabulary: branch-free per-pixel updates into
// kLaneSets sets of PixelAccumulators (pixel i into set i % kLaneSets, so
// neighbours never wait on each other's stores). When every label is its own
// slot (the common case, checked first) Ops::add_pixels does the updates
// without per-pixel checks; otherwise bad labels go to a trap slot and are
// located after. The sets merge as a pairwise tree, (s0 + s1) + (s2 + s3),
// the same on every path and instruction set.
template <class Ops, class T, class L>
inline ChunkResult label_lanes(const T* x, const L* lab, const LabelChunkArgs& a, ChunkScratch& s) {
  ChunkResult r;
  const int64_t n = a.pixels;
  const uint64_t k = static_cast<uint64_t>(a.num_segments);  // slot of ignored pixels
  const int64_t stride = a.num_segments + 2;
  PixelAccumulator* set[kLaneSets];
  for (int64_t j = 0; j < kLaneSets; ++j) set[j] = s.lanes + j * stride;
  uint64_t bad = 0;
  if (labels_are_slots(lab, n, a)) {
    Ops::add_pixels(x, lab, n, set);
  } else {
    // Slot k is ignore_index's alone: a label equal to K is as bad as any
    // other label outside [0, K) (negative labels wrap to huge u).
    auto slot_of = [&](L l) {
      const int64_t v = static_cast<int64_t>(l);
      const uint64_t u = static_cast<uint64_t>(v);
      const bool ignored = a.has_ignore && v == a.ignore_index;
      const bool valid = u < k;
      bad |= static_cast<uint64_t>(!(ignored | valid));
      return ignored ? k : (valid ? u : k + 1);
    };
    for (int64_t i = 0; i < n; ++i) Ops::add_pixel(set[i % kLaneSets][slot_of(lab[i])], static_cast<double>(x[i]));
  }
  for (int64_t slot = 0; slot < stride; ++slot) {
    // A pairwise tree: sets j and j + step merge into set j.
    for (int64_t step = 1; step < kLaneSets / 2; step *= 2)
      for (int64_t j = 0; j < kLaneSets; j += 2 * step) acc_merge(set[j][slot], set[j + step][slot]);
    const PixelAccumulator& lo = set[0][slot];
    const PixelAccumulator& hi = set[kLaneSets / 2][slot];
    if (slot <= a.num_segments && lo.count + hi.count > 0.0) {
      s.acc[slot] = acc_from_pixels(lo, hi);
      s.touched[s.n_touched++] = slot;
    }
    for (PixelAccumulator* lanes : set) acc_reset(lanes[slot]);
  }
  if (bad) {
    for (int64_t j = 0; j < n; ++j) {
      int64_t slot;
      if (!label_slot(lab[j], a, slot)) {
        bad_label(r, j, lab[j]);
        break;
      }
    }
  }
  return r;
}

template <class Ops, class T, class L>
ChunkResult label_chunk(const LabelChunkArgs& a, ChunkScratch& s) {
  const T* x = static_cast<const T*>(a.saliency);
  const L* lab = static_cast<const L*>(a.labels);
  const int64_t min_mean_run = s.lanes != nullptr ? kMinMeanRunVsLanes : kMinMeanRunVsScatter;
  ChunkResult r = prefer_runs(lab, a.pixels, min_mean_run) ? label_runs<Ops, false>(x, lab, a, s)
                  : s.lanes != nullptr                     ? label_lanes<Ops>(x, lab, a, s)
                                                           : label_scatter(x, lab, a, s);
  if (r.error != ErrorKind::none) return r;
  double sq = 0.0;
  for (int64_t t = 0; t < s.n_touched; ++t) {
    const Accumulator& acc = touched_acc(s, t);
    r.pos += acc.pos;
    r.neg += acc.neg;
    sq += acc.sq;
  }
  if (__builtin_isfinite(r.pos) && __builtin_isfinite(r.neg) && __builtin_isfinite(sq)) return r;
  if (!find_nonfinite(x, a.pixels, a.skip_nonfinite, r) || r.error != ErrorKind::none) return r;
  reset_touched(s);
  r = label_runs<Ops, true>(x, lab, a, s);
  if (r.error != ErrorKind::none) return r;
  for (int64_t t = 0; t < s.n_touched; ++t) {
    r.pos += touched_acc(s, t).pos;
    r.neg += touched_acc(s, t).neg;
  }
  return r;
}

template <class Ops>
void add_label_kernels(KernelTable& t) {
  t.labels[0][0] = &label_chunk<Ops, float, uint8_t>;
  t.labels[0][1] = &label_chunk<Ops, float, uint16_t>;
  t.labels[0][2] = &label_chunk<Ops, float, int32_t>;
  t.labels[1][0] = &label_chunk<Ops, double, uint8_t>;
  t.labels[1][1] = &label_chunk<Ops, double, uint16_t>;
  t.labels[1][2] = &label_chunk<Ops, double, int32_t>;
}

}  // namespace SAT_ISA
}  // namespace sat
