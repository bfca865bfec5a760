// The XLA FFI handlers (see handlers.hpp): XLA buffers in, the kernel library
// (sat/labels.hpp, sat/masks.hpp) in between, XLA buffers out. Nothing here
// knows about Python.
#include "handlers.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "sat/labels.hpp"
#include "sat/masks.hpp"
#include "sat/threads.hpp"
#include "sat/types.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// The kernel's output arrays (K + 1 slots; slot K is the pixels in no
// segment), prefilled as sat::StatsOutput requires: two allocations, viewed
// by sat::StatsOutput's pointers.
class Scratch {
 public:
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Scratch(int64_t images, int64_t slots)
      : images_(images),
        slots_(slots),
        cells_(static_cast<size_t>(images * slots)),
        ints_(cells_ + static_cast<size_t>(images)),
        reals_(5 * cells_ + 2 * static_cast<size_t>(images)) {
    double* r = reals_.data();
    view.slots = slots;
    view.count = ints_.data();
    view.nonfinite = ints_.data() + cells_;
    view.pos = r;
    view.neg = r + cells_;
    view.sq = r + 2 * cells_;
    view.min = r + 3 * cells_;
    view.max = r + 4 * cells_;
    view.total_pos = r + 5 * cells_;
    view.total_neg = r + 5 * cells_ + static_cast<size_t>(images);
    reset();
  }

  // Back to the prefill: a failed kernel call may have written some chunks.
  void reset() {
    std::fill(ints_.begin(), ints_.end(), 0);
    std::fill(reals_.begin(), reals_.end(), 0.0);
    std::fill(view.min, view.max + cells_, std::numeric_limits<double>::quiet_NaN());
  }

  int64_t images() const { return images_; }
  int64_t slots() const { return slots_; }
  sat::StatsOutput view;

 private:
  int64_t images_, slots_;
  size_t cells_;
  std::vector<int64_t> ints_;
  std::vector<double> reals_;
};

// One result buffer, written element by element in its own element type.
class Sink {
 public:
  Sink() = default;
  explicit Sink(ffi::Result<ffi::AnyBuffer> r)
      : data_(r->untyped_data()), type_(r->element_type()), size_(static_cast<int64_t>(r->element_count())) {}
  bool is_float() const { return type_ == ffi::DataType::F32 || type_ == ffi::DataType::F64; }
  bool is_int() const { return type_ == ffi::DataType::S32 || type_ == ffi::DataType::S64; }
  int64_t size() const { return size_; }
  void put(int64_t i, double value) const {
    if (type_ == ffi::DataType::F64)
      static_cast<double*>(data_)[i] = value;
    else
      static_cast<float*>(data_)[i] = static_cast<float>(value);
  }
  void put_int(int64_t i, int64_t value) const {
    if (type_ == ffi::DataType::S64)
      static_cast<int64_t*>(data_)[i] = value;
    else
      static_cast<int32_t*>(data_)[i] = static_cast<int32_t>(value);
  }

 private:
  void* data_ = nullptr;
  ffi::DataType type_ = ffi::DataType::INVALID;
  int64_t size_ = 0;
};

// The results in handlers.hpp's order.
enum Out : size_t {
  kCount,
  kSum,
  kPos,
  kNeg,
  kAbs,
  kSq,
  kMin,
  kMax,
  kTotalSum,
  kTotalAbs,
  kNonfinite,
  kInvalid,
  kOuts
};

// Decodes and checks the results: per segment images * K elements, per image
// `images`; counts S32/S64, everything else F32/F64.
ffi::Error decode_results(const ffi::RemainingRets& rets, int64_t images, int64_t k, Sink (&out)[kOuts]) {
  if (rets.size() != kOuts) return ffi::Error::InvalidArgument("sat_fast: the statistics handlers return 12 arrays");
  for (size_t i = 0; i < kOuts; ++i) {
    auto r = rets.get<ffi::AnyBuffer>(i);
    if (r.has_error()) return r.error();
    out[i] = Sink(r.value());
    const bool integer = i == kCount || i == kNonfinite || i == kInvalid;
    const int64_t size = i < kTotalSum ? images * k : images;
    if ((integer ? !out[i].is_int() : !out[i].is_float()) || out[i].size() != size)
      return ffi::Error::InvalidArgument("sat_fast: result " + std::to_string(i) + " must be " +
                                         (integer ? "S32/S64" : "F32/F64") + " of " + std::to_string(size) +
                                         " elements");
  }
  return ffi::Error::Success();
}

// The kernel's slots 0..K-1 into the results, with the same derived sums as
// sat_fast.stats (sum = pos + neg, abs_sum = pos - neg).
void write_results(const Scratch& s, int64_t k, const std::vector<int64_t>& invalid, const Sink (&out)[kOuts]) {
  const sat::StatsOutput& v = s.view;
  for (int64_t b = 0; b < s.images(); ++b) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t from = b * s.slots() + j;
      const int64_t to = b * k + j;
      out[kCount].put_int(to, v.count[from]);
      out[kSum].put(to, v.pos[from] + v.neg[from]);
      out[kPos].put(to, v.pos[from]);
      out[kNeg].put(to, v.neg[from]);
      out[kAbs].put(to, v.pos[from] - v.neg[from]);
      out[kSq].put(to, v.sq[from]);
      out[kMin].put(to, v.min[from]);
      out[kMax].put(to, v.max[from]);
    }
    out[kTotalSum].put(b, v.total_pos[b] + v.total_neg[b]);
    out[kTotalAbs].put(b, v.total_pos[b] - v.total_neg[b]);
    out[kNonfinite].put_int(b, v.nonfinite[b]);
    out[kInvalid].put_int(b, invalid[static_cast<size_t>(b)]);
  }
}

struct Geometry {
  int64_t images = 1, height = 0, width = 0;
};

// (..., H, W): every leading dimension is one image (none: one image).
// Also reads the saliency's element type into `type`.
ffi::Error image_geometry(const ffi::AnyBuffer& saliency, Geometry& g, sat::SaliencyType& type) {
  const auto dims = saliency.dimensions();
  if (dims.size() < 2) return ffi::Error::InvalidArgument("sat_fast: saliency must have shape (..., H, W)");
  for (size_t i = 0; i + 2 < dims.size(); ++i) g.images *= dims[i];
  g.height = dims[dims.size() - 2];
  g.width = dims[dims.size() - 1];
  if (saliency.element_type() == ffi::DataType::F32)
    type = sat::SaliencyType::F32;
  else if (saliency.element_type() == ffi::DataType::F64)
    type = sat::SaliencyType::F64;
  else
    return ffi::Error::InvalidArgument("sat_fast: saliency must be F32 or F64 (widen other floats first)");
  return ffi::Error::Success();
}

int thread_count(int64_t threads) {
  if (threads <= 0) return sat::default_threads();
  return static_cast<int>(std::min<int64_t>(threads, sat::kMaxThreads));
}

// Valid input is the common case: one kernel call that checks every value.
// Only when it meets a non-finite value is the input reduced again, with such
// pixels left out and counted (the result of skipping them from the start).
template <class Input>
sat::Error reduce_skipping_nonfinite(Input& in, Scratch& s,
                                     sat::Error (*reduce)(const Input&, const sat::StatsOutput&)) {
  in.skip_nonfinite = false;
  sat::Error err = reduce(in, s.view);
  if (err.kind == sat::ErrorKind::nonfinite) {
    in.skip_nonfinite = true;
    s.reset();
    err = reduce(in, s.view);
  }
  return err;
}

template <class Label>
void count_invalid_labels(const Label* labels, const sat::LabelsInput& in, std::vector<int64_t>& invalid) {
  const int64_t pixels = in.height * in.width;
  for (int64_t b = 0; b < in.images; ++b) {
    const Label* lab = labels + b * pixels;
    int64_t bad = 0;
    for (int64_t p = 0; p < pixels; ++p) {
      const int64_t v = static_cast<int64_t>(lab[p]);
      bad += (v < 0 || v >= in.num_segments) && !(in.has_ignore && v == in.ignore_index);
    }
    invalid[static_cast<size_t>(b)] = bad;
  }
}

// A copy of the labels in which ignore_index (which wins even inside [0, K),
// as in the kernel) and every label outside [0, K) become -1: the ignore slot.
template <class Label>
std::vector<int32_t> routed_labels(const Label* labels, const sat::LabelsInput& in) {
  const size_t n = static_cast<size_t>(in.images * in.height * in.width);
  std::vector<int32_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(labels[i]);
    const bool segment = v >= 0 && v < in.num_segments && !(in.has_ignore && v == in.ignore_index);
    out[i] = segment ? static_cast<int32_t>(v) : -1;
  }
  return out;
}

template <class Label>
sat::Error reduce_invalid_labels(const Label* labels, sat::LabelsInput in, std::vector<int64_t>& invalid, Scratch& s) {
  count_invalid_labels(labels, in, invalid);
  const std::vector<int32_t> routed = routed_labels(labels, in);
  in.labels = routed.data();
  in.label_type = sat::LabelType::I32;
  in.has_ignore = true;
  in.ignore_index = -1;
  s.reset();
  return sat::reduce_labels(in, s.view);
}

ffi::Error segment_stats_labels(ffi::AnyBuffer saliency, ffi::AnyBuffer labels, int64_t num_segments,
                                int64_t has_ignore, int64_t ignore_index, int64_t threads, ffi::RemainingRets rets) {
  Geometry g;
  sat::SaliencyType xtype = sat::SaliencyType::F32;
  if (auto e = image_geometry(saliency, g, xtype); e.failure()) return e;
  if (num_segments < 1 || num_segments > sat::kMaxSegments)
    return ffi::Error::InvalidArgument("sat_fast: num_segments must be in [1, 2**24], got " +
                                       std::to_string(num_segments));
  const auto ldims = labels.dimensions();
  const auto sdims = saliency.dimensions();
  if (ldims.size() != sdims.size() || labels.element_count() != saliency.element_count())
    return ffi::Error::InvalidArgument("sat_fast: labels must have the saliency's shape");
  for (size_t i = 0; i < ldims.size(); ++i)
    if (ldims[i] != sdims[i]) return ffi::Error::InvalidArgument("sat_fast: labels must have the saliency's shape");
  Sink out[kOuts];
  if (auto e = decode_results(rets, g.images, num_segments, out); e.failure()) return e;

  sat::LabelsInput in;
  in.saliency = saliency.untyped_data();
  in.saliency_type = xtype;
  in.labels = labels.untyped_data();
  switch (labels.element_type()) {
    case ffi::DataType::U8:
      in.label_type = sat::LabelType::U8;
      break;
    case ffi::DataType::U16:
      in.label_type = sat::LabelType::U16;
      break;
    case ffi::DataType::S32:
      in.label_type = sat::LabelType::I32;
      break;
    default:
      return ffi::Error::InvalidArgument("sat_fast: labels must be U8, U16 or S32");
  }
  in.images = g.images;
  in.height = g.height;
  in.width = g.width;
  in.num_segments = num_segments;
  in.has_ignore = has_ignore != 0;
  in.ignore_index = ignore_index;
  in.threads = thread_count(threads);

  Scratch s(g.images, num_segments + 1);
  std::vector<int64_t> bad(static_cast<size_t>(g.images), 0);
  sat::Error err = reduce_skipping_nonfinite(in, s, &sat::reduce_labels);
  if (err.kind == sat::ErrorKind::label) {
    // Labels outside [0, K): counted per image, then reduced once more with
    // them in the ignore slot (and non-finite pixels skipped, whether or not
    // the first calls met any).
    in.skip_nonfinite = true;
    switch (in.label_type) {
      case sat::LabelType::U8:
        err = reduce_invalid_labels(static_cast<const uint8_t*>(in.labels), in, bad, s);
        break;
      case sat::LabelType::U16:
        err = reduce_invalid_labels(static_cast<const uint16_t*>(in.labels), in, bad, s);
        break;
      case sat::LabelType::I32:
        err = reduce_invalid_labels(static_cast<const int32_t*>(in.labels), in, bad, s);
        break;
    }
  }
  if (err) return ffi::Error::Internal("sat_fast: " + sat::message(err));
  write_results(s, num_segments, bad, out);
  return ffi::Error::Success();
}

ffi::Error segment_stats_masks(ffi::AnyBuffer saliency, ffi::AnyBuffer masks, int64_t threads,
                               ffi::RemainingRets rets) {
  Geometry g;
  sat::SaliencyType xtype = sat::SaliencyType::F32;
  if (auto e = image_geometry(saliency, g, xtype); e.failure()) return e;
  const auto mdims = masks.dimensions();
  const auto sdims = saliency.dimensions();
  if (masks.element_type() != ffi::DataType::PRED)
    return ffi::Error::InvalidArgument("sat_fast: masks must be PRED (bool)");
  if (mdims.size() != sdims.size() + 1)
    return ffi::Error::InvalidArgument("sat_fast: masks must have shape (..., K, H, W) for saliency (..., H, W)");
  for (size_t i = 0; i + 2 < sdims.size(); ++i)
    if (mdims[i] != sdims[i]) return ffi::Error::InvalidArgument("sat_fast: masks and saliency batch shapes differ");
  const int64_t k = mdims[mdims.size() - 3];
  if (mdims[mdims.size() - 2] != g.height || mdims[mdims.size() - 1] != g.width)
    return ffi::Error::InvalidArgument("sat_fast: masks and saliency image sizes differ");
  if (k < 1 || k > sat::kMaxSegments)
    return ffi::Error::InvalidArgument("sat_fast: masks must have 1 to 2**24 segments, got " + std::to_string(k));
  Sink out[kOuts];
  if (auto e = decode_results(rets, g.images, k, out); e.failure()) return e;

  sat::MasksInput in;
  in.saliency = saliency.untyped_data();
  in.saliency_type = xtype;
  in.images = g.images;
  in.height = g.height;
  in.width = g.width;
  in.num_segments = k;
  in.words_per_mask = (g.height * g.width + 63) / 64;
  in.threads = thread_count(threads);
  std::vector<uint64_t> words(static_cast<size_t>(g.images * k * in.words_per_mask));
  std::vector<int64_t> bounds(static_cast<size_t>(g.images * k * 2));
  // XLA stores PRED as one byte holding 0 or 1, which is what pack_masks reads.
  sat::pack_masks(static_cast<const uint8_t*>(masks.untyped_data()), g.images * k, g.height * g.width, words.data(),
                  bounds.data(), in.threads);
  in.words = words.data();
  in.bounds = bounds.data();

  Scratch s(g.images, k + 1);
  const sat::Error err = reduce_skipping_nonfinite(in, s, &sat::reduce_masks);
  if (err) return ffi::Error::Internal("sat_fast: " + sat::message(err));
  write_results(s, k, std::vector<int64_t>(static_cast<size_t>(g.images), 0), out);
  return ffi::Error::Success();
}

}  // namespace

// The 12 results (handlers.hpp) are decoded as RemainingRets and checked in decode_results.
XLA_FFI_DEFINE_HANDLER_SYMBOL(sat_fast_segment_stats_labels, segment_stats_labels,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // saliency
                                  .Arg<ffi::AnyBuffer>()  // labels
                                  .Attr<int64_t>("num_segments")
                                  .Attr<int64_t>("has_ignore")
                                  .Attr<int64_t>("ignore_index")
                                  .Attr<int64_t>("threads")
                                  .RemainingRets());

XLA_FFI_DEFINE_HANDLER_SYMBOL(sat_fast_segment_stats_masks, segment_stats_masks,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // saliency
                                  .Arg<ffi::AnyBuffer>()  // masks
                                  .Attr<int64_t>("threads")
                                  .RemainingRets());
