// Segment statistics of overlapping masks, packed into bit planes.
#pragma once
#include <cstdint>

#include "sat/error.hpp"
#include "sat/types.hpp"

namespace sat {

struct MasksInput {
  const void* saliency = nullptr;  // (images, height, width), row-major
  SaliencyType saliency_type = SaliencyType::F32;
  const uint64_t* words = nullptr;  // (images, K, words_per_mask), bit i of word w = pixel 64*w + i
  // (images, K, 2): [first, last) words of each mask that may hold set bits,
  // so small masks are not scanned end to end. Clamped, never trusted.
  const int64_t* bounds = nullptr;
  int64_t images = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t num_segments = 0;
  int64_t words_per_mask = 0;  // ceil(height * width / 64)
  bool unassigned = false;     // also reduce the pixels no mask covers into slot K
  bool skip_nonfinite = false;
  int threads = 1;
};

// Fills `out` (slots = num_segments + 1). Returns the first error in
// (image, row, col) order, or kind none.
Error reduce_masks(const MasksInput& in, const StatsOutput& out);

// bool (planes, pixels) -> (planes, ceil(pixels/64)) bit planes, and per
// plane the [first, last) range of words that are not zero ((0, 0) if none).
void pack_masks(const uint8_t* masks, int64_t planes, int64_t pixels, uint64_t* words, int64_t* bounds, int threads);

}  // namespace sat
