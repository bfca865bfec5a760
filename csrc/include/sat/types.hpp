// Types shared by every kernel of sat_fast. Plain C++17: nothing under csrc/
// except csrc/python knows about Python; the bindings translate arrays into
// these raw views.
//
// The kernels trust their callers on shapes, dtypes and sizes (the bindings
// check those while holding the GIL), but they check every label value and
// every run end before writing, because the arrays may be changed by another
// thread while the GIL is released: a check made beforehand could go stale.
#pragma once
#include <cstdint>

namespace sat {

enum class SaliencyType : int { F32 = 0, F64 = 1 };
enum class LabelType : int { U8 = 0, U16 = 1, I32 = 2 };

// Pixels of one image are reduced in fixed chunks of this many pixels. The
// chunk grid depends on the image size only, never on the thread count, which
// is what makes the results bitwise identical for any number of threads.
constexpr int64_t kChunkPixels = 65536;
constexpr int64_t kMaxSegments = int64_t(1) << 24;

// Output arrays, all row-major. Per (image, slot) arrays have `slots` columns:
// slots 0..K-1 are the segments, slot K collects pixels in no segment
// (ignore_index pixels for label maps; pixels no mask covers, when asked for).
// min/max must be prefilled with NaN and the sums/counts with zero.
struct StatsOutput {
  int64_t slots = 0;
  int64_t* count = nullptr;
  double* pos = nullptr;  // sum of max(x, 0)
  double* neg = nullptr;  // sum of min(x, 0)
  double* sq = nullptr;   // sum of x*x
  double* min = nullptr;
  double* max = nullptr;
  // Per image, over every finite pixel whatever its segment.
  double* total_pos = nullptr;
  double* total_neg = nullptr;
  int64_t* nonfinite = nullptr;  // pixels skipped because NaN or +-Inf
};

}  // namespace sat
