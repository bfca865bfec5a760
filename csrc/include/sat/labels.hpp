// Segment statistics of dense label maps.
#pragma once
#include <cstdint>

#include "sat/error.hpp"
#include "sat/types.hpp"

namespace sat {

struct LabelsInput {
  const void* saliency = nullptr;  // (images, height, width), row-major
  SaliencyType saliency_type = SaliencyType::F32;
  const void* labels = nullptr;  // same shape
  LabelType label_type = LabelType::U8;
  int64_t images = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t num_segments = 0;
  bool has_ignore = false;
  int64_t ignore_index = 0;
  bool skip_nonfinite = false;
  int threads = 1;
};

// Fills `out` (slots = num_segments + 1; slot K is the ignore_index pixels).
// Returns the first error in (image, row, col) order, or kind none.
Error reduce_labels(const LabelsInput& in, const StatsOutput& out);

}  // namespace sat
