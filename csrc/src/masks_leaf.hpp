// The packed-mask leaf kernel: reduces one chunk of one image for every mask
// of the image. Compiled once per instruction set (masks_generic.cpp,
// masks_avx2.cpp) against that set's Ops; see leaf_common.hpp.
#pragma once
#include <cstdint>

#include "leaf_common.hpp"

namespace sat {
inline namespace SAT_ISA {

// Calls f(begin, end) for every run of set bits in words [w, w1) of a plane,
// in pixel order. Runs are cut at w1; f clamps them to the image. Whole words
// of zeros (outside runs) and of ones (inside runs) are skipped by
// Ops::find_word, several at a time.
template <class Ops, class F>
inline void for_each_bit_run(const uint64_t* plane, int64_t w, int64_t w1, F&& f) {
  constexpr uint64_t kOnes = ~uint64_t(0);
  uint64_t v = 0;  // word w with the bits already consumed cleared
  bool partial = false;
  for (;;) {
    if (!partial) {
      w = Ops::find_word(plane, w, w1, 0);
      if (w >= w1) return;
      v = plane[w];
    }
    const int b = __builtin_ctzll(v);
    const int64_t start = w * 64 + b;
    const uint64_t zeros = ~v & (kOnes << b);
    int e;
    if (zeros != 0) {
      e = __builtin_ctzll(zeros);
    } else {
      w = Ops::find_word(plane, w + 1, w1, kOnes);
      if (w >= w1) {
        f(start, w1 * 64);
        return;
      }
      v = plane[w];
      e = __builtin_ctzll(~v);
    }
    f(start, w * 64 + e);
    v &= kOnes << e;
    partial = v != 0;
    if (!partial) ++w;
  }
}

// Every run of one mask goes into the same lanes, folded once per mask and
// chunk: a run costs its pixels and no horizontal reductions.
template <class Ops, bool Skip, class T>
inline void mask_segments(const T* x, const MaskChunkArgs& a, ChunkScratch& s) {
  const int64_t limit = a.image_pixels;
  for (int64_t k = 0; k < a.num_segments; ++k) {
    const int64_t first = a.bounds[2 * k] > a.word_begin ? a.bounds[2 * k] : a.word_begin;
    const int64_t last = a.bounds[2 * k + 1] < a.word_end ? a.bounds[2 * k + 1] : a.word_end;
    auto lanes = Ops::run_start(x);
    int64_t count = 0;
    for_each_bit_run<Ops>(a.planes + k * a.words_per_mask, first, last, [&](int64_t b, int64_t e) {
      if (e > limit) e = limit;
      if (b < e) add_range_lanes<Ops, Skip>(lanes, count, x, b, e);
    });
    if (count > 0) {
      Ops::merge_run(s.acc[k], lanes, count);
      s.touched[s.n_touched++] = k;
    }
  }
  if (a.unassigned) {
    const int64_t nw = a.word_end - a.word_begin;
    for (int64_t w = 0; w < nw; ++w) s.words[w] = 0;
    for (int64_t k = 0; k < a.num_segments; ++k) {
      const uint64_t* plane = a.planes + k * a.words_per_mask + a.word_begin;
      for (int64_t w = 0; w < nw; ++w) s.words[w] |= plane[w];
    }
    for (int64_t w = 0; w < nw; ++w) s.words[w] = ~s.words[w];
    const int64_t base = a.word_begin * 64;
    auto lanes = Ops::run_start(x);
    int64_t count = 0;
    for_each_bit_run<Ops>(s.words, 0, nw, [&](int64_t b, int64_t e) {
      b += base;
      e += base;
      if (e > limit) e = limit;
      if (b < e) add_range_lanes<Ops, Skip>(lanes, count, x, b, e);
    });
    if (count > 0) {
      Ops::merge_run(s.acc[a.num_segments], lanes, count);
      s.touched[s.n_touched++] = a.num_segments;
    }
  }
}

template <class Ops, class T>
ChunkResult mask_chunk(const MaskChunkArgs& a, ChunkScratch& s) {
  const T* x = static_cast<const T*>(a.saliency);
  const int64_t p0 = a.word_begin * 64;
  const int64_t p1 = a.word_end * 64 < a.image_pixels ? a.word_end * 64 : a.image_pixels;
  ChunkResult r;
  // The whole chunk once: the image totals, and it warms the cache for the
  // per-segment passes that follow. Only pos and neg: NaN reaches both
  // (max and min return it), +inf pos and -inf neg, so finite sums mean
  // finite pixels; squares and extremes nobody reads cost this pass (a
  // quarter of the kernel's time in cache) a third of its instructions.
  const SignedSums all = Ops::reduce_signed(x + p0, p1 - p0);
  bool skip = false;
  if (!(__builtin_isfinite(all.pos) && __builtin_isfinite(all.neg))) {
    skip = find_nonfinite(x + p0, p1 - p0, a.skip_nonfinite, r);
    if (r.error != ErrorKind::none) return r;
  }
  if (!skip) {
    r.pos = all.pos;
    r.neg = all.neg;
    mask_segments<Ops, false>(x, a, s);
    return r;
  }
  Accumulator total = acc_identity();
  r.nonfinite = add_range<Ops, true>(total, x, p0, p1);
  r.pos = total.pos;
  r.neg = total.neg;
  mask_segments<Ops, true>(x, a, s);
  return r;
}

template <class Ops>
void add_mask_kernels(KernelTable& t) {
  t.masks[0] = &mask_chunk<Ops, float>;
  t.masks[1] = &mask_chunk<Ops, double>;
  t.pack_plane = &Ops::pack_plane;
}

}  // namespace SAT_ISA
}  // namespace sat
