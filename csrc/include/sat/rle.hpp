// Segment statistics straight from COCO run-length encodings, without
// decoding masks.
//
// COCO RLE lists alternating run lengths of 0s and 1s over the pixels in
// column-major order (runs go down the columns), while saliency maps are
// row-major (H, W). Per image, one pass over the saliency builds a small
// summary that every mask of that image shares:
//   - per column, the pos/neg/sq sums of every block of kRleBlockRows rows and
//     a sum tree over them (node j of level l = blocks [j*2^l, (j+1)*2^l)),
//     prefix counts of skipped non-finite pixels at block boundaries, and a
//     sparse table over the blocks for min/max;
//   - over columns, the same sum tree of the column totals, prefix counts and
//     a sparse table of column minima/maxima.
// A run [p, q) in column-major order is then at most a head column piece, a
// range of whole columns and a tail column piece; a column piece costs
// O(log(H / kRleBlockRows)) tree nodes plus at most 2*(kRleBlockRows-1) pixel
// reads for its partial blocks at either end, a range of whole columns
// O(log W) nodes. So on this path the cost of a mask grows with its number of
// runs (times a logarithm), never with the number of pixels it covers; the
// summary costs one pass over the saliency per image, shared by all of that
// image's masks (and the area path below is cheaper when they cover little
// more than the image).
//
// Why blocks rather than a value at every row: a per-pixel table of three
// float64 sums is 24 bytes written per pixel (7 MB for 640x480), which costs
// more than the masks themselves; blocks cut that by kRleBlockRows while the
// few pixels read at the ends of each run stay in cache. Min and max come
// from sparse tables (log2(H / kRleBlockRows) levels).
//
// Why sum trees rather than prefix sums: a difference of two prefix sums
// carries the rounding error of everything above the run in its column (or
// in the columns before it), so a segment of 1.0s below values of 1e8 lost
// its sum of squares entirely, and float64 values whose squares overflow
// turned it into inf - inf = NaN. A tree node holds only the sum of its own
// blocks, so a run's sums are built from its own pixels alone.
//
// The area path. A summary pays for itself only when the masks cover much
// more than the image: segmenter output (every pixel in one category) covers
// it about once, and then reducing the covered pixels directly is cheaper.
// Column-major runs are contiguous in a transposed copy of the saliency, so
// each run is one contiguous range of it, reduced like a run of a label map
// (pixel i of each run into lane i % 8 of the segment's lanes, folded once).
// reduce_rle picks the path per image from the number of runs and the pixels
// they cover (prefer_area in rle.cpp), so the choice, like the rounding,
// depends on the image's masks alone.
//
// Counts, min and max equal decoding first and reducing densely exactly. Sums
// differ only by float64 rounding of the segment's own pixels, added in a
// different order (pos, neg and sq each add terms of one sign: relative error
// at most about (pixels in the segment) * 2^-53, far below float32 resolution
// of the saliency itself).
#pragma once
#include <cstdint>

#include "sat/error.hpp"
#include "sat/types.hpp"

namespace sat {

constexpr int64_t kRleBlockRows = 16;

struct RleImage {
  const void* saliency = nullptr;  // (height, width), row-major
  int64_t height = 0;
  int64_t width = 0;
};

// How reduce_rle reduces an image's runs: the cheaper of the two by a cost
// model of the image's runs and area (automatic), or one of them (for tests).
enum class RlePath { automatic, area, summary };

// Segments in CSR form: segment s of image b (image_segments[b] <= s <
// image_segments[b + 1]) is the union of instances segment_instances[s] ..
// segment_instances[s + 1] - 1; instance i has COCO counts
// counts[instance_offsets[i] .. instance_offsets[i + 1]).
struct RleInput {
  SaliencyType saliency_type = SaliencyType::F32;
  const RleImage* images = nullptr;
  int64_t num_images = 0;
  const int64_t* image_segments = nullptr;     // num_images + 1
  const int64_t* segment_instances = nullptr;  // segments + 1
  const int64_t* instance_offsets = nullptr;   // instances + 1
  const uint32_t* counts = nullptr;
  bool unassigned = false;  // also reduce the pixels no segment covers
  bool skip_nonfinite = false;
  int threads = 1;
  RlePath path = RlePath::automatic;
};

// Per-row outputs: row s < segments is segment s; row segments + b is the
// unassigned pixels of image b (written only when asked for). `slots` is
// unused; min/max must be prefilled with NaN and sums/counts with zero;
// total_pos/total_neg/nonfinite are per image. Returns the error of the
// lowest image index (kind nonfinite or rle), or kind none.
Error reduce_rle(const RleInput& in, const StatsOutput& out);

// Characters of one count in a COCO compressed RLE string: 5 bits each, and
// a count (or its difference from the count two before, in -(2**32 - 1) ..
// 2**32 - 1) needs at most 34 bits with its sign.
constexpr int kMaxCountChars = 7;

// Decodes one COCO compressed RLE string (as in pycocotools' rleFrString)
// into at most `n` counts written to `out`. Returns the number of counts, or
// -1 - (byte offset) of the first malformed byte; when that is the start of a
// count longer than kMaxCountChars characters or outside [0, 2**32), also
// sets *overlong to it (else -1).
int64_t rle_counts_from_string(const char* s, int64_t n, uint32_t* out, int64_t* overlong);

}  // namespace sat
