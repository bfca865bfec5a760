// Packed masks: one leaf call per (image, chunk) unit; mask packing.
#include "sat/masks.hpp"

#include "chunked.hpp"

namespace sat {

Error reduce_masks(const MasksInput& in, const StatsOutput& out) {
  const MaskChunkFn fn = kernels().masks[static_cast<int>(in.saliency_type)];
  const size_t xs = chunked::saliency_size(in.saliency_type);
  const char* x = static_cast<const char*>(in.saliency);
  const int64_t pixels = in.height * in.width;
  // One accumulator per mask (and the unassigned slot), indexed directly: a
  // chunk can touch every mask, and the K planes of the input are already at
  // least 8 bytes per mask.
  chunked::ScratchSize size;
  size.accumulators = in.num_segments + 1;
  size.words = in.unassigned;
  return chunked::drive(in.images, pixels, chunked::Geometry{in.width, in.num_segments}, size, in.threads, out,
                        [&](ChunkScratch& s, int64_t b, int64_t p0, int64_t n) {
                          const MaskChunkArgs args{
                              x + static_cast<size_t>(b * pixels) * xs,
                              in.words + static_cast<size_t>(b * in.num_segments * in.words_per_mask),
                              in.bounds + static_cast<size_t>(b * in.num_segments * 2),
                              in.num_segments,
                              in.words_per_mask,
                              pixels,
                              p0 / 64,
                              (p0 + n + 63) / 64,
                              in.unassigned,
                              in.skip_nonfinite};
                          return fn(args, s);
                        });
}

void pack_masks(const uint8_t* masks, int64_t planes, int64_t pixels, uint64_t* words, int64_t* bounds, int threads) {
  const int64_t nw = (pixels + 63) / 64;
  const PackPlaneFn fn = kernels().pack_plane;
  parallel_units(
      planes, threads, [](int) { return 0; },
      [&](int, int64_t p) {
        uint64_t* plane = words + static_cast<size_t>(p * nw);
        fn(masks + static_cast<size_t>(p * pixels), pixels, plane);
        int64_t first = 0, last = nw;
        while (first < nw && plane[first] == 0) ++first;
        while (last > first && plane[last - 1] == 0) --last;
        if (first == last) first = last = 0;
        bounds[2 * p] = first;
        bounds[2 * p + 1] = last;
      });
}

}  // namespace sat
