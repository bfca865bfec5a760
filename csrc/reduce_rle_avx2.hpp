// The AVX2 strip kernel of the RLE summary: declarations only, so the
// portable code never sees an AVX2 inline function.
#pragma once
#include <cstdint>

namespace sat {
namespace rle_avx2 {

// Rows [r0, r1) of columns [c0, c0 + 8) of the row-major x (row stride w):
// sums = {pos[8], neg[8], sq[8]} are continued (in/out), mn/mx receive the
// block's min/max per column (+inf/-inf when r0 == r1), and the pixels are
// written to the column-major copy xt (column stride h). No NaN handling:
// callers redo a block with non-finite pixels on the checked path.
void strip8(const float* x, int64_t w, int64_t h, int64_t r0, int64_t r1, int64_t c0, double* sums, float* mn,
            float* mx, float* xt);
void strip8(const double* x, int64_t w, int64_t h, int64_t r0, int64_t r1, int64_t c0, double* sums, double* mn,
            double* mx, double* xt);

}  // namespace rle_avx2
}  // namespace sat
