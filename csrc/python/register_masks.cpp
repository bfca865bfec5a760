// reduce_masks and pack_masks: statistics of overlapping masks as bit planes.
#include <algorithm>
#include <optional>
#include <string>

#include "common.hpp"
#include "sat/masks.hpp"

namespace sat_py {

namespace {

py::dict reduce_masks(const py::array& saliency, const py::array& words, const py::array& bounds, int64_t num_segments,
                      bool unassigned, bool skip_nonfinite, const py::object& threads) {
  sat::MasksInput in;
  if (saliency.ndim() != 3) raise_input("saliency must have shape (B, H, W), got " + shape_of(saliency));
  require_c_contiguous(saliency, "saliency");
  in.saliency_type = saliency_type(saliency);
  check_segments(num_segments);
  const int64_t pixels = saliency.shape(1) * saliency.shape(2);
  const int64_t nw = (pixels + 63) / 64;
  if (!py::isinstance<py::array_t<uint64_t>>(words))
    throw py::type_error("packed masks must be uint64, got " + dtype_of(words));
  if (words.ndim() != 3 || words.shape(0) != saliency.shape(0) || words.shape(1) != num_segments ||
      words.shape(2) != nw)
    raise_input("packed masks shape " + shape_of(words) + " does not match saliency shape " + shape_of(saliency) +
                " with " + std::to_string(num_segments) + " segments (expected (" + std::to_string(saliency.shape(0)) +
                ", " + std::to_string(num_segments) + ", " + std::to_string(nw) + "))");
  require_c_contiguous(words, "packed masks");
  if (!py::isinstance<py::array_t<int64_t>>(bounds) || bounds.ndim() != 3 || bounds.shape(0) != words.shape(0) ||
      bounds.shape(1) != num_segments || bounds.shape(2) != 2)
    raise_input("mask bounds must be int64 of shape (B, K, 2), got " + dtype_of(bounds) + " " + shape_of(bounds));
  require_c_contiguous(bounds, "mask bounds");
  in.bounds = static_cast<const int64_t*>(bounds.data());
  in.saliency = saliency.data();
  in.words = static_cast<const uint64_t*>(words.data());
  in.images = saliency.shape(0);
  in.height = saliency.shape(1);
  in.width = saliency.shape(2);
  in.num_segments = num_segments;
  in.words_per_mask = nw;
  in.unassigned = unassigned;
  in.skip_nonfinite = skip_nonfinite;
  in.threads = threads_or_default(threads);
  Outputs out(in.images, num_segments + 1);
  sat::Error err;
  {
    py::gil_scoped_release release;
    err = sat::reduce_masks(in, out.view);
  }
  raise_if(err);
  return out.to_dict();
}

py::tuple pack_masks(const py::array& masks, const py::object& threads) {
  if (!(py::isinstance<py::array_t<bool>>(masks) || py::isinstance<py::array_t<uint8_t>>(masks)))
    throw py::type_error("masks must be bool (or uint8 0/1), got " + dtype_of(masks));
  if (masks.ndim() != 4) raise_input("masks must have shape (B, K, H, W), got " + shape_of(masks));
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

}  // namespace

void register_masks(py::module_& m) {
  m.def("reduce_masks", &reduce_masks, py::arg("saliency"), py::arg("words"), py::arg("bounds"),
        py::arg("num_segments"), py::arg("unassigned") = false, py::arg("skip_nonfinite") = false,
        py::arg("threads") = py::none(),
        "Per-(image, segment) statistics of packed overlapping masks; slot K collects uncovered pixels.");
  m.def("pack_masks", &pack_masks, py::arg("masks"), py::arg("threads") = py::none(),
        "Packs boolean masks (B, K, H, W) into uint64 bit planes (B, K, ceil(H*W/64)) and their (B, K, 2) "
        "nonzero word ranges.");
}

}  // namespace sat_py
