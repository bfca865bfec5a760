// reduce_rle and rle_from_strings: statistics straight from COCO run lengths.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "sat/rle.hpp"

namespace sat_py {

namespace {

void check_offsets(const py::array_t<int64_t, py::array::c_style>& a, const char* what, int64_t end) {
  if (a.ndim() != 1 || a.shape(0) < 1)
    raise_input(std::string(what) + " must be a non-empty 1-D array, got " + shape_of(a));
  const int64_t* p = a.data();
  const int64_t n = a.shape(0);
  if (p[0] != 0) raise_input(std::string(what) + " must start at 0");
  for (int64_t i = 1; i < n; ++i)
    if (p[i] < p[i - 1]) raise_input(std::string(what) + " must be non-decreasing");
  if (p[n - 1] != end)
    raise_input(std::string(what) + " must end at " + std::to_string(end) + ", got " + std::to_string(p[n - 1]));
}

py::dict reduce_rle(const py::list& saliency_maps, const py::array_t<int64_t, py::array::c_style>& image_segments,
                    const py::array_t<int64_t, py::array::c_style>& segment_instances,
                    const py::array_t<int64_t, py::array::c_style>& instance_offsets,
                    const py::array_t<uint32_t, py::array::c_style>& counts, bool unassigned, bool skip_nonfinite,
                    const py::object& threads, const std::string& path) {
  const int64_t images = static_cast<int64_t>(saliency_maps.size());
  std::vector<py::array> keep;
  std::vector<sat::RleImage> views(static_cast<size_t>(images));
  sat::RleInput in;
  for (int64_t b = 0; b < images; ++b) {
    py::array s = py::reinterpret_borrow<py::array>(saliency_maps[static_cast<size_t>(b)]);
    if (s.ndim() != 2) raise_input("saliency map " + std::to_string(b) + " must be (H, W), got " + shape_of(s));
    require_c_contiguous(s, "saliency");
    const sat::SaliencyType t = saliency_type(s);
    if (b == 0) in.saliency_type = t;
    if (t != in.saliency_type) throw py::type_error("all saliency maps must have the same dtype");
    views[static_cast<size_t>(b)] = sat::RleImage{s.data(), s.shape(0), s.shape(1)};
    keep.push_back(s);
  }
  if (counts.ndim() != 1) raise_input("counts must be 1-D, got " + shape_of(counts));
  if (image_segments.ndim() != 1 || image_segments.shape(0) != images + 1)
    raise_input("image_segments must have one entry per saliency map plus one, got " + shape_of(image_segments));
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
  if (path == "auto")
    in.path = sat::RlePath::automatic;
  else if (path == "area")
    in.path = sat::RlePath::area;
  else if (path == "summary")
    in.path = sat::RlePath::summary;
  else
    raise_input("path must be 'auto', 'area' or 'summary', got '" + path + "'");
  // One row per segment, then one unassigned row per image.
  Outputs rows(1, segments + images);
  Outputs totals(images, 1);
  sat::StatsOutput view = rows.view;
  view.total_pos = totals.total_pos.mutable_data();
  view.total_neg = totals.total_neg.mutable_data();
  view.nonfinite = totals.nonfinite.mutable_data();
  sat::Error err;
  {
    py::gil_scoped_release release;
    err = sat::reduce_rle(in, view);
  }
  raise_if(err);
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
    int64_t overlong = -1;
    const int64_t n = sat::rle_counts_from_string(texts[i].data(), static_cast<int64_t>(texts[i].size()),
                                                  buffer.data() + o[i], &overlong);
    if (overlong >= 0) raise_if(sat::rle_count_error(static_cast<int64_t>(i), overlong));
    if (n < 0) raise_if(sat::rle_string_error(static_cast<int64_t>(i), -1 - n));
    o[i + 1] = o[i] + n;
  }
  py::array_t<uint32_t> counts(o[texts.size()]);
  std::copy_n(buffer.data(), static_cast<size_t>(o[texts.size()]), counts.mutable_data());
  return py::make_tuple(counts, offsets);
}

}  // namespace

void register_rle(py::module_& m) {
  m.attr("RLE_BLOCK_ROWS") = sat::kRleBlockRows;
  m.def("reduce_rle", &reduce_rle, py::arg("saliency_maps"), py::arg("image_segments"), py::arg("segment_instances"),
        py::arg("instance_offsets"), py::arg("counts"), py::arg("unassigned") = false,
        py::arg("skip_nonfinite") = false, py::arg("threads") = py::none(), py::arg("path") = "auto",
        "Per-segment statistics from COCO RLE counts (CSR over images, segments, instances), without decoding. "
        "path: 'auto' (per image, the cheaper of the two), 'area' (reduce the covered pixels of a transposed copy) "
        "or 'summary' (per-image sum trees, cost per run).");
  m.def("rle_from_strings", &rle_from_strings, py::arg("strings"),
        "Decodes COCO compressed RLE strings into (counts uint32, offsets int64).");
}

}  // namespace sat_py
