// The only file that knows about Python: checks shapes, dtypes and layout
// while holding the GIL, then releases it for the whole reduction.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <string>

#include "kernels.hpp"
#include "reduce_rle.hpp"  // RLE segments (issue 4)

namespace py = pybind11;

namespace {

std::string shape_of(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

std::string dtype_of(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

void require_c_contiguous(const py::array& a, const char* what) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + " must be C-contiguous (use numpy.ascontiguousarray)");
}

sat::SaliencyType saliency_type(const py::array& s) {
  if (s.ndim() != 3) throw py::value_error("saliency must have shape (B, H, W), got " + shape_of(s));
  require_c_contiguous(s, "saliency");
  if (py::isinstance<py::array_t<float>>(s)) return sat::SaliencyType::F32;
  if (py::isinstance<py::array_t<double>>(s)) return sat::SaliencyType::F64;
  throw py::type_error("saliency must be float32 or float64, got " + dtype_of(s));
}

int threads_or_default(std::optional<int> threads) {
  if (!threads) return sat::default_threads();
  if (*threads < 1) throw py::value_error("threads must be at least 1, got " + std::to_string(*threads));
  return *threads;
}

void check_segments(int64_t k) {
  if (k < 1 || k > sat::kMaxSegments)
    throw py::value_error("num_segments must be in [1, 2**24], got " + std::to_string(k));
}

struct Outputs {
  py::array_t<int64_t> count;
  py::array_t<double> pos, neg, sq, min, max, total_pos, total_neg;
  py::array_t<int64_t> nonfinite;
  sat::StatsOutput view;

  Outputs(int64_t images, int64_t slots)
      : count({images, slots}),
        pos({images, slots}),
        neg({images, slots}),
        sq({images, slots}),
        min({images, slots}),
        max({images, slots}),
        total_pos(images),
        total_neg(images),
        nonfinite(images) {
    const size_t n = static_cast<size_t>(images * slots);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    std::fill_n(count.mutable_data(), n, 0);
    std::fill_n(pos.mutable_data(), n, 0.0);
    std::fill_n(neg.mutable_data(), n, 0.0);
    std::fill_n(sq.mutable_data(), n, 0.0);
    std::fill_n(min.mutable_data(), n, nan);
    std::fill_n(max.mutable_data(), n, nan);
    std::fill_n(total_pos.mutable_data(), images, 0.0);
    std::fill_n(total_neg.mutable_data(), images, 0.0);
    std::fill_n(nonfinite.mutable_data(), images, 0);
    view.slots = slots;
    view.count = count.mutable_data();
    view.pos = pos.mutable_data();
    view.neg = neg.mutable_data();
    view.sq = sq.mutable_data();
    view.min = min.mutable_data();
    view.max = max.mutable_data();
    view.total_pos = total_pos.mutable_data();
    view.total_neg = total_neg.mutable_data();
    view.nonfinite = nonfinite.mutable_data();
  }

  py::dict to_dict() const {
    py::dict d;
    d["count"] = count;
    d["pos_sum"] = pos;
    d["neg_sum"] = neg;
    d["sq_sum"] = sq;
    d["min"] = min;
    d["max"] = max;
    d["total_pos"] = total_pos;
    d["total_neg"] = total_neg;
    d["nonfinite"] = nonfinite;
    return d;
  }
};

void raise_kernel_error(const sat::KernelError& e, int64_t width, int64_t num_segments) {
  if (e.kind == sat::KernelError::None) return;
  const int64_t row = width > 0 ? e.pixel / width : 0;
  const int64_t col = width > 0 ? e.pixel % width : 0;
  std::ostringstream s;
  if (e.kind == sat::KernelError::LabelOutOfRange) {
    s << "label " << e.label << " at image " << e.image << ", pixel (" << row << ", " << col
      << ") is outside [0, " << num_segments << ") and is not ignore_index";
  } else {
    s << "saliency has a non-finite value (" << e.value << ") at image " << e.image << ", pixel (" << row << ", "
      << col << "); pass nonfinite='skip' to leave such pixels out";
  }
  throw py::value_error(s.str());
}

py::dict reduce_labels(const py::array& saliency, const py::array& labels, int64_t num_segments,
                       std::optional<int64_t> ignore_index, bool skip_nonfinite, std::optional<int> threads) {
  sat::LabelsInput in;
  in.saliency_type = saliency_type(saliency);
  if (labels.ndim() != 3 || labels.shape(0) != saliency.shape(0) || labels.shape(1) != saliency.shape(1) ||
      labels.shape(2) != saliency.shape(2))
    throw py::value_error("labels shape " + shape_of(labels) + " does not match saliency shape " + shape_of(saliency));
  require_c_contiguous(labels, "labels");
  if (py::isinstance<py::array_t<uint8_t>>(labels))
    in.label_type = sat::LabelType::U8;
  else if (py::isinstance<py::array_t<uint16_t>>(labels))
    in.label_type = sat::LabelType::U16;
  else if (py::isinstance<py::array_t<int32_t>>(labels))
    in.label_type = sat::LabelType::I32;
  else
    throw py::type_error("labels must be uint8, uint16 or int32, got " + dtype_of(labels));
  check_segments(num_segments);
  in.saliency = saliency.data();
  in.labels = labels.data();
  in.images = saliency.shape(0);
  in.pixels = saliency.shape(1) * saliency.shape(2);
  in.num_segments = num_segments;
  in.has_ignore = ignore_index.has_value();
  in.ignore_index = ignore_index.value_or(0);
  in.skip_nonfinite = skip_nonfinite;
  in.threads = threads_or_default(threads);
  Outputs out(in.images, num_segments + 1);
  sat::KernelError err;
  {
    py::gil_scoped_release release;
    err = sat::reduce_labels(in, out.view);
  }
  raise_kernel_error(err, saliency.shape(2), num_segments);
  return out.to_dict();
}

py::dict reduce_masks(const py::array& saliency, const py::array& words, const py::array& bounds, int64_t num_segments,
                      bool unassigned, bool skip_nonfinite, std::optional<int> threads) {
  sat::MasksInput in;
  in.saliency_type = saliency_type(saliency);
  check_segments(num_segments);
  const int64_t pixels = saliency.shape(1) * saliency.shape(2);
  const int64_t nw = (pixels + 63) / 64;
  if (!py::isinstance<py::array_t<uint64_t>>(words))
    throw py::type_error("packed masks must be uint64, got " + dtype_of(words));
  if (words.ndim() != 3 || words.shape(0) != saliency.shape(0) || words.shape(1) != num_segments ||
      words.shape(2) != nw)
    throw py::value_error("packed masks shape " + shape_of(words) + " does not match saliency shape " +
                          shape_of(saliency) + " with " + std::to_string(num_segments) + " segments (expected (" +
                          std::to_string(saliency.shape(0)) + ", " + std::to_string(num_segments) + ", " +
                          std::to_string(nw) + "))");
  require_c_contiguous(words, "packed masks");
  if (!py::isinstance<py::array_t<int64_t>>(bounds) || bounds.ndim() != 3 || bounds.shape(0) != words.shape(0) ||
      bounds.shape(1) != num_segments || bounds.shape(2) != 2)
    throw py::value_error("mask bounds must be int64 of shape (B, K, 2), got " + dtype_of(bounds) + " " +
                          shape_of(bounds));
  require_c_contiguous(bounds, "mask bounds");
  in.bounds = static_cast<const int64_t*>(bounds.data());
  in.saliency = saliency.data();
  in.words = static_cast<const uint64_t*>(words.data());
  in.images = saliency.shape(0);
  in.pixels = pixels;
  in.num_segments = num_segments;
  in.words_per_mask = nw;
  in.unassigned = unassigned;
  in.skip_nonfinite = skip_nonfinite;
  in.threads = threads_or_default(threads);
  Outputs out(in.images, num_segments + 1);
  sat::KernelError err;
  {
    py::gil_scoped_release release;
    err = sat::reduce_masks(in, out.view);
  }
  raise_kernel_error(err, saliency.shape(2), num_segments);
  return out.to_dict();
}

py::tuple pack_masks(const py::array& masks, std::optional<int> threads) {
  if (!(py::isinstance<py::array_t<bool>>(masks) || py::isinstance<py::array_t<uint8_t>>(masks)))
    throw py::type_error("masks must be bool (or uint8 0/1), got " + dtype_of(masks));
  if (masks.ndim() != 4) throw py::value_error("masks must have shape (B, K, H, W), got " + shape_of(masks));
  require_c_contiguous(masks, "masks");
  const int64_t planes = masks.shape(0) * masks.shape(1);
  const int64_t pixels = masks.shape(2) * masks.shape(3);
  const int64_t nw = (pixels + 63) / 64;
  const int64_t b = masks.shape(0), k = masks.shape(1);
  py::array_t<uint64_t> words({b, k, nw});
  py::array_t<int64_t> bounds({b, k, int64_t(2)});
  std::fill_n(bounds.mutable_data(), static_cast<size_t>(planes * 2), 0);
  const int n = threads_or_default(threads);
  const uint8_t* src = static_cast<const uint8_t*>(masks.data());
  uint64_t* dst = words.mutable_data();
  int64_t* bnd = bounds.mutable_data();
  if (pixels > 0) {
    py::gil_scoped_release release;
    sat::pack_masks(src, planes, pixels, dst, bnd, n);
  }
  return py::make_tuple(words, bounds);
}

uint64_t read_probe(const py::array& data, std::optional<int> threads) {
  require_c_contiguous(data, "data");
  const int n = threads_or_default(threads);
  const auto* p = static_cast<const uint8_t*>(data.data());
  const int64_t bytes = data.nbytes();
  py::gil_scoped_release release;
  return sat::read_probe(p, bytes, n);
}


// ---- RLE segments (issue 4): statistics straight from COCO run lengths ----

void check_offsets(const py::array_t<int64_t, py::array::c_style>& a, const char* what, int64_t end) {
  if (a.ndim() != 1 || a.shape(0) < 1)
    throw py::value_error(std::string(what) + " must be a non-empty 1-D array, got " + shape_of(a));
  const int64_t* p = a.data();
  const int64_t n = a.shape(0);
  if (p[0] != 0) throw py::value_error(std::string(what) + " must start at 0");
  for (int64_t i = 1; i < n; ++i)
    if (p[i] < p[i - 1]) throw py::value_error(std::string(what) + " must be non-decreasing");
  if (p[n - 1] != end)
    throw py::value_error(std::string(what) + " must end at " + std::to_string(end) + ", got " + std::to_string(p[n - 1]));
}

py::dict reduce_rle(const py::list& saliency_maps, const py::array_t<int64_t, py::array::c_style>& image_segments,
                    const py::array_t<int64_t, py::array::c_style>& segment_instances,
                    const py::array_t<int64_t, py::array::c_style>& instance_offsets,
                    const py::array_t<uint32_t, py::array::c_style>& counts, bool unassigned, bool skip_nonfinite,
                    std::optional<int> threads) {
  const int64_t images = static_cast<int64_t>(saliency_maps.size());
  std::vector<py::array> keep;
  std::vector<sat::RleImage> views(static_cast<size_t>(images));
  sat::RleInput in;
  for (int64_t b = 0; b < images; ++b) {
    py::array s = py::reinterpret_borrow<py::array>(saliency_maps[static_cast<size_t>(b)]);
    if (s.ndim() != 2) throw py::value_error("saliency map " + std::to_string(b) + " must be (H, W), got " + shape_of(s));
    require_c_contiguous(s, "saliency");
    sat::SaliencyType t;
    if (py::isinstance<py::array_t<float>>(s))
      t = sat::SaliencyType::F32;
    else if (py::isinstance<py::array_t<double>>(s))
      t = sat::SaliencyType::F64;
    else
      throw py::type_error("saliency must be float32 or float64, got " + dtype_of(s));
    if (b == 0) in.saliency_type = t;
    if (t != in.saliency_type) throw py::type_error("all saliency maps must have the same dtype");
    views[static_cast<size_t>(b)] = sat::RleImage{s.data(), s.shape(0), s.shape(1)};
    keep.push_back(s);
  }
  if (counts.ndim() != 1) throw py::value_error("counts must be 1-D, got " + shape_of(counts));
  if (image_segments.ndim() != 1 || image_segments.shape(0) != images + 1)
    throw py::value_error("image_segments must have one entry per saliency map plus one, got " +
                          shape_of(image_segments));
  check_offsets(instance_offsets, "instance_offsets", counts.shape(0));
  check_offsets(segment_instances, "segment_instances", instance_offsets.shape(0) - 1);
  check_offsets(image_segments, "image_segments", segment_instances.shape(0) - 1);
  const int64_t segments = segment_instances.shape(0) - 1;
  in.images = views.data();
  in.num_images = images;
  in.image_segments = image_segments.data();
  in.segment_instances = segment_instances.data();
  in.instance_offsets = instance_offsets.data();
  in.counts = counts.data();
  in.unassigned = unassigned;
  in.skip_nonfinite = skip_nonfinite;
  in.threads = threads_or_default(threads);
  // One row per segment, then one unassigned row per image.
  Outputs rows(1, segments + images);
  Outputs totals(images, 1);
  sat::StatsOutput view = rows.view;
  view.total_pos = totals.total_pos.mutable_data();
  view.total_neg = totals.total_neg.mutable_data();
  view.nonfinite = totals.nonfinite.mutable_data();
  sat::RleError err;
  {
    py::gil_scoped_release release;
    err = sat::reduce_rle(in, view);
  }
  if (err.kind == sat::RleError::NonFinite) {
    const int64_t w = views[static_cast<size_t>(err.image)].width;
    std::ostringstream s;
    s << "saliency has a non-finite value (" << err.value << ") at image " << err.image << ", pixel ("
      << err.pixel / w << ", " << err.pixel % w << "); pass nonfinite='skip' to leave such pixels out";
    throw py::value_error(s.str());
  }
  if (err.kind == sat::RleError::BadLength) {
    const sat::RleImage& v = views[static_cast<size_t>(err.image)];
    std::ostringstream s;
    s << "RLE counts of instance " << err.instance << " (image " << err.image << ") sum to " << err.length
      << ", expected H*W = " << v.height << "*" << v.width << " = " << v.height * v.width;
    throw py::value_error(s.str());
  }
  py::dict d = rows.to_dict();
  d["total_pos"] = totals.total_pos;
  d["total_neg"] = totals.total_neg;
  d["nonfinite"] = totals.nonfinite;
  return d;
}

py::tuple rle_from_strings(const py::list& strings) {
  std::vector<std::string> texts;
  texts.reserve(strings.size());
  int64_t total = 0;
  for (size_t i = 0; i < strings.size(); ++i) {
    py::handle h = strings[i];
    if (!py::isinstance<py::bytes>(h) && !py::isinstance<py::str>(h))
      throw py::type_error("RLE string " + std::to_string(i) + " must be str or bytes, got " +
                           py::str(py::type::handle_of(h).attr("__name__")).cast<std::string>());
    texts.push_back(h.cast<std::string>());
    total += static_cast<int64_t>(texts.back().size());
  }
  std::vector<uint32_t> buffer(static_cast<size_t>(total));
  py::array_t<int64_t> offsets(static_cast<int64_t>(texts.size()) + 1);
  int64_t* o = offsets.mutable_data();
  o[0] = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const int64_t n =
        sat::rle_counts_from_string(texts[i].data(), static_cast<int64_t>(texts[i].size()), buffer.data() + o[i]);
    if (n < 0)
      throw py::value_error("malformed COCO RLE string " + std::to_string(i) + " at byte " + std::to_string(-1 - n));
    o[i + 1] = o[i] + n;
  }
  py::array_t<uint32_t> counts(o[texts.size()]);
  std::copy_n(buffer.data(), static_cast<size_t>(o[texts.size()]), counts.mutable_data());
  return py::make_tuple(counts, offsets);
}
// ---- end RLE segments ----

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "sat_fast's compiled kernels (private: use the functions in sat_fast instead).";
  m.attr("CHUNK_PIXELS") = sat::kChunkPixels;
  m.attr("MAX_SEGMENTS") = sat::kMaxSegments;
  m.def("reduce_labels", &reduce_labels, py::arg("saliency"), py::arg("labels"), py::arg("num_segments"),
        py::arg("ignore_index") = py::none(), py::arg("skip_nonfinite") = false, py::arg("threads") = py::none(),
        "Per-(image, segment) statistics of a dense label map; slot K collects ignore_index pixels.");
  m.def("reduce_masks", &reduce_masks, py::arg("saliency"), py::arg("words"), py::arg("bounds"), py::arg("num_segments"),
        py::arg("unassigned") = false, py::arg("skip_nonfinite") = false, py::arg("threads") = py::none(),
        "Per-(image, segment) statistics of packed overlapping masks; slot K collects uncovered pixels.");
  m.def("pack_masks", &pack_masks, py::arg("masks"), py::arg("threads") = py::none(),
        "Packs boolean masks (B, K, H, W) into uint64 bit planes (B, K, ceil(H*W/64)) and their (B, K, 2) nonzero word ranges.");
  m.def("read_probe", &read_probe, py::arg("data"), py::arg("threads") = py::none(),
        "Reads every byte of a buffer with the given threads (memory-bandwidth probe).");
  m.def("default_threads", &sat::default_threads, "Threads this process may use (its CPU affinity).");
  m.def("kernel_variant", &sat::kernel_variant, "Kernel variant chosen for this CPU: 'avx2' or 'generic'.");
  // RLE segments (issue 4)
  m.def("reduce_rle", &reduce_rle, py::arg("saliency_maps"), py::arg("image_segments"), py::arg("segment_instances"),
        py::arg("instance_offsets"), py::arg("counts"), py::arg("unassigned") = false,
        py::arg("skip_nonfinite") = false, py::arg("threads") = py::none(),
        "Per-segment statistics from COCO RLE counts (CSR over images, segments, instances), without decoding.");
  m.def("rle_from_strings", &rle_from_strings, py::arg("strings"),
        "Decodes COCO compressed RLE strings into (counts uint32, offsets int64).");
  m.attr("RLE_BLOCK_ROWS") = sat::kRleBlockRows;
}

