// Label maps: one leaf call per (image, chunk) unit.
#include "sat/labels.hpp"

#include "chunked.hpp"

namespace sat {

namespace {
size_t label_size(LabelType t) { return t == LabelType::U8 ? 1 : (t == LabelType::U16 ? 2 : 4); }
}  // namespace

Error reduce_labels(const LabelsInput& in, const StatsOutput& out) {
  const LabelChunkFn fn = kernels().labels[static_cast<int>(in.saliency_type)][static_cast<int>(in.label_type)];
  const size_t xs = chunked::saliency_size(in.saliency_type);
  const size_t ls = label_size(in.label_type);
  const char* x = static_cast<const char*>(in.saliency);
  const char* lab = static_cast<const char*>(in.labels);
  const int64_t pixels = in.height * in.width;
  return chunked::drive(in.images, pixels, chunked::Geometry{in.width, in.num_segments},
                        chunked::label_scratch(in.num_segments, pixels, in.saliency_type), in.threads, out,
                        [&](ChunkScratch& s, int64_t b, int64_t p0, int64_t n) {
                          const size_t offset = static_cast<size_t>(b * pixels + p0);
                          const LabelChunkArgs args{x + offset * xs,  lab + offset * ls, n,
                                                    in.num_segments,  in.has_ignore,     in.ignore_index,
                                                    in.skip_nonfinite};
                          return fn(args, s);
                        });
}

}  // namespace sat
