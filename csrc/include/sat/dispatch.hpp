// The kernel variants: one table of function pointers per instruction set,
// covering the label and mask chunk kernels, mask packing and the RLE
// summary strips. The table is chosen once, on first use (the bindings do
// that at import): AVX2 when the CPU has it, unless SAT_FAST_KERNEL=generic.
//
// Every entry takes raw pointers and plain structs only, and this header
// holds no inline code, so it can be included by the translation units of
// every instruction set (see accumulator.hpp).
#pragma once
#include <cstdint>

#include "sat/accumulator.hpp"
#include "sat/error.hpp"

// The AVX2 variant exists only where it can be compiled: on x86-64 (the
// build system says so explicitly; this is the default for builds by hand).
#if !defined(SAT_HAVE_AVX2_VARIANT)
#if defined(__x86_64__) || defined(_M_X64)
#define SAT_HAVE_AVX2_VARIANT 1
#else
#define SAT_HAVE_AVX2_VARIANT 0
#endif
#endif

namespace sat {

// Slots (K + 1 plus one trap slot for bad labels) up to which noisy chunks
// use two PixelAccumulator sets; beyond it they use the touched-list path.
constexpr int64_t kMaxLaneSlots = 4096;
// Sets of lane accumulators for noisy label maps: pixel i of a chunk goes to
// set i % kLaneSets, so that neighbouring pixels never update (and wait on)
// the same memory.
constexpr int64_t kLaneSets = 4;

// Slots (K + 1) up to which a thread's scratch holds one accumulator per slot
// of the call, indexed by the slot ("direct"). Beyond it, label kernels index
// their accumulators through a small map from slot to the order in which the
// chunk first touched it ("compact"), sized by what a chunk can touch
// (min(K + 1, pixels of a chunk)), so scratch stays bounded whatever K is.
constexpr int64_t kMaxDirectSlots = int64_t(1) << 16;

// Scratch owned by one thread and reused across the chunks it processes.
// acc/acc2 hold accumulators at identity; touched lists name the slots a
// chunk changed, in first-touch order, so resetting and emitting a chunk
// costs O(touched) rather than O(K). Direct scratch (map_keys null): acc[slot]
// for every slot. Compact scratch: acc[i] and acc2[i] belong to slot
// touched[i]; map_keys/map_vals are an open-addressing table (map_mask + 1
// cells, key -1 when empty) from slot to i, and map_cell[i] is slot
// touched[i]'s cell (see slot_map.hpp).
struct ChunkScratch {
  Accumulator* acc = nullptr;
  Accumulator* acc2 = nullptr;
  int64_t* touched = nullptr;
  int64_t n_touched = 0;
  int64_t* touched2 = nullptr;  // direct scratch only
  int64_t n_touched2 = 0;
  uint64_t* words = nullptr;          // kChunkPixels / 64 words for the unassigned mask
  PixelAccumulator* lanes = nullptr;  // kLaneSets * (slots + 1), at identity, or null
  ExtremeLanes* extremes = nullptr;   // label runs over float32: one per accumulator, or null
  int32_t* map_keys = nullptr;        // compact scratch only
  int32_t* map_vals = nullptr;
  int32_t* map_cell = nullptr;
  uint64_t map_mask = 0;
};

// What one chunk adds to its image's totals, or the first error in it.
struct ChunkResult {
  double pos = 0.0;
  double neg = 0.0;
  int64_t nonfinite = 0;
  ErrorKind error = ErrorKind::none;  // label or nonfinite
  int64_t bad_pixel = -1;             // relative to the chunk's first pixel
  double bad_value = 0.0;             // the label or the saliency value
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
  const void* saliency;    // first pixel of the image
  const uint64_t* planes;  // the image's K planes, each words_per_mask long
  const int64_t* bounds;   // the image's K [first, last) word ranges
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
using PackPlaneFn = void (*)(const uint8_t* masks, int64_t pixels, uint64_t* words);

// One block of rows [r0, r1) of the 8 columns [c0, c0 + 8) of the row-major
// saliency x (row stride w) for the RLE summary: sums = {pos[8], neg[8],
// sq[8]} are continued (in/out; the summary passes zeros, one block's sums), mn/mx receive the block's min/max per
// column
// (+inf/-inf when r0 == r1), and the pixels are copied to the column-major xt
// (column stride h). No NaN handling: callers redo a block with non-finite
// pixels on the checked path. Each column is accumulated row after row, as in
// the portable strips, so the results are bitwise identical.
using RleStrip8F32Fn = void (*)(const float* x, int64_t w, int64_t h, int64_t r0, int64_t r1, int64_t c0, double* sums,
                                float* mn, float* mx, float* xt);
using RleStrip8F64Fn = void (*)(const double* x, int64_t w, int64_t h, int64_t r0, int64_t r1, int64_t c0, double* sums,
                                double* mn, double* mx, double* xt);

// A run of pixels [begin, end) of one image, in whichever order the caller
// laid the pixels out.
struct PixelRun {
  int64_t begin, end;
};

// Reduces the pixels of runs[0, n) of x (increasing, disjoint, within x) into
// *acc, which is at identity: pixel i of each run goes to lane i % 8 of the
// same lanes, folded once. Skips non-finite pixels when `skip` and returns
// how many; without `skip` they go into the sums like any other.
using RunsReduceFn = int64_t (*)(const void* x, const PixelRun* runs, int64_t n, bool skip, Accumulator* acc);
// The positive and negative sums of a run of pixels: pos and neg of what
// RunsReduceFn gives for the one run [0, n), bitwise, without the squares
// and extremes (the image totals of the mask and RLE paths).
struct SignedSums {
  double pos, neg;
};
using SignedSumsFn = SignedSums (*)(const void* x, int64_t n);
// xt (w, h) = x (h, w) transposed.
using TransposeFn = void (*)(const void* x, int64_t h, int64_t w, void* xt);

struct KernelTable {
  const char* name;           // "generic" or "avx2"
  LabelChunkFn labels[2][3];  // [SaliencyType][LabelType]
  MaskChunkFn masks[2];       // [SaliencyType]
  PackPlaneFn pack_plane;
  RleStrip8F32Fn rle_strip8_f32;  // null: the portable strips do all columns
  RleStrip8F64Fn rle_strip8_f64;
  RunsReduceFn reduce_runs[2];    // [SaliencyType]
  SignedSumsFn reduce_signed[2];  // [SaliencyType]
  TransposeFn transpose[2];       // [SaliencyType]
};

// Each variant fills its entries of a table, area by area
// (labels_<variant>.cpp, masks_<variant>.cpp, rle_<variant>.cpp).
namespace generic {
void add_labels(KernelTable& t);
void add_masks(KernelTable& t);
void add_rle(KernelTable& t);
}  // namespace generic
#if SAT_HAVE_AVX2_VARIANT
namespace avx2 {
void add_labels(KernelTable& t);
void add_masks(KernelTable& t);
void add_rle(KernelTable& t);
}  // namespace avx2
#endif

// The table for this CPU, chosen on the first call and fixed after.
const KernelTable& kernels();
// kernels().name.
const char* kernel_variant();

}  // namespace sat
