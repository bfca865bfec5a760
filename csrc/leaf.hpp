// The per-chunk ("leaf") kernels, compiled once per instruction set and
// chosen at run time. Leaves work on raw pointers only and use no standard
// containers, so no inline function compiled for AVX2 can leak into the
// portable code through the linker.
#pragma once
#include <cstdint>

#include "kernels.hpp"

namespace sat {

// The statistics of one (image, slot) while it is being accumulated.
// A plain struct without member functions, for the reason above.
struct alignas(64) Accumulator {
  double pos;
  double neg;
  double sq;
  double min;
  double max;
  int64_t count;
};

// Per-pixel accumulation for noisy label maps, laid out so one 256-bit add
// updates pos, neg, sq and count together: min and the negated max then
// share one 128-bit min. Converted to an Accumulator at the end of a chunk.
struct alignas(64) PixelAccumulator {
  double pos;
  double neg;
  double sq;
  double count;
  double min;
  double negmax;
  double unused[2];
};

// Slots (K + 1 plus one trap slot for bad labels) up to which noisy chunks
// use two PixelAccumulator sets; beyond it they use the touched-list path.
constexpr int64_t kMaxLaneSlots = 4096;

// Scratch owned by one thread and reused across the chunks it processes.
// acc/acc2 hold slots+1 accumulators at identity; touched lists name the
// slots a chunk changed, in first-touch order, so resetting and emitting a
// chunk costs O(touched) rather than O(K).
struct ChunkScratch {
  Accumulator* acc = nullptr;
  Accumulator* acc2 = nullptr;
  int64_t* touched = nullptr;
  int64_t n_touched = 0;
  int64_t* touched2 = nullptr;
  int64_t n_touched2 = 0;
  uint64_t* words = nullptr;  // kChunkPixels / 64 words for the unassigned mask
  PixelAccumulator* lanes = nullptr;  // 2 * (slots + 1), at identity, or null
};

struct ChunkResult {
  double pos = 0.0;
  double neg = 0.0;
  int64_t nonfinite = 0;
  KernelError::Kind error = KernelError::None;
  int64_t bad_pixel = -1;  // relative to the chunk's first pixel
  int64_t bad_label = 0;
  double bad_value = 0.0;
};

struct LabelChunkArgs {
  const void* saliency;  // first pixel of the chunk
  const void* labels;
  int64_t pixels;
  int64_t num_segments;
  bool has_ignore;
  int64_t ignore_index;
  bool skip_nonfinite;
};

struct MaskChunkArgs {
  const void* saliency;   // first pixel of the image
  const uint64_t* planes; // the image's K planes, each words_per_mask long
  const int64_t* bounds;  // the image's K [first, last) word ranges
  int64_t num_segments;
  int64_t words_per_mask;
  int64_t image_pixels;
  int64_t word_begin;
  int64_t word_end;
  bool unassigned;
  bool skip_nonfinite;
};

using LabelChunkFn = ChunkResult (*)(const LabelChunkArgs&, ChunkScratch&);
using MaskChunkFn = ChunkResult (*)(const MaskChunkArgs&, ChunkScratch&);
using PackPlaneFn = void (*)(const uint8_t*, int64_t, uint64_t*);
using XorSumFn = uint64_t (*)(const uint8_t*, int64_t);

struct LeafTable {
  LabelChunkFn labels[2][3];  // [SaliencyType][LabelType]
  MaskChunkFn masks[2];
  PackPlaneFn pack_plane;
  XorSumFn xor_sum;
  const char* name;
};

const LeafTable& leaf_table_generic();
const LeafTable& leaf_table_avx2();
// The table for this CPU (AVX2 when present, unless SAT_FAST_KERNEL=generic).
const LeafTable& leaf_table();

}  // namespace sat
