// Public interface of the sat_fast kernels. Plain C++17: nothing here knows
// about Python; the bindings translate arrays into these raw views.
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

struct KernelError {
  enum Kind : int { None = 0, LabelOutOfRange = 1, NonFinite = 2 };
  Kind kind = None;
  int64_t image = -1;
  int64_t pixel = -1;  // flat index within the image
  int64_t label = 0;
  double value = 0.0;
};

struct LabelsInput {
  const void* saliency = nullptr;
  SaliencyType saliency_type = SaliencyType::F32;
  const void* labels = nullptr;
  LabelType label_type = LabelType::U8;
  int64_t images = 0;
  int64_t pixels = 0;  // per image (H*W)
  int64_t num_segments = 0;
  bool has_ignore = false;
  int64_t ignore_index = 0;
  bool skip_nonfinite = false;
  int threads = 1;
};

struct MasksInput {
  const void* saliency = nullptr;
  SaliencyType saliency_type = SaliencyType::F32;
  const uint64_t* words = nullptr;  // (images, K, words_per_mask), bit i of word w = pixel 64*w + i
  // (images, K, 2): [first, last) words of each mask that may hold set bits,
  // so small masks are not scanned end to end. Clamped, never trusted.
  const int64_t* bounds = nullptr;
  int64_t images = 0;
  int64_t pixels = 0;
  int64_t num_segments = 0;
  int64_t words_per_mask = 0;  // ceil(pixels / 64)
  bool unassigned = false;     // also reduce the pixels no mask covers into slot K
  bool skip_nonfinite = false;
  int threads = 1;
};

// Each returns the first error in (image, pixel) order, or kind None.
KernelError reduce_labels(const LabelsInput& in, const StatsOutput& out);
KernelError reduce_masks(const MasksInput& in, const StatsOutput& out);

// bool (planes, pixels) -> (planes, ceil(pixels/64)) bit planes, and per
// plane the [first, last) range of words that are not zero ((0, 0) if none).
void pack_masks(const uint8_t* masks, int64_t planes, int64_t pixels, uint64_t* words, int64_t* bounds, int threads);

// Read every byte of a buffer with `threads` threads; the result only keeps
// the compiler from skipping the reads. Used to measure memory bandwidth.
uint64_t read_probe(const uint8_t* data, int64_t bytes, int threads);

// Threads this process may run on (its CPU affinity mask), at least 1.
int default_threads();
// "avx2" or "generic": the kernel variant chosen for this CPU.
const char* kernel_variant();

}  // namespace sat
