// reduce_labels: statistics of dense label maps.
#include <optional>

#include "common.hpp"
#include "sat/labels.hpp"

namespace sat_py {

namespace {

py::dict reduce_labels(const py::array& saliency, const py::array& labels, int64_t num_segments,
                       std::optional<int64_t> ignore_index, bool skip_nonfinite, const py::object& threads) {
  sat::LabelsInput in;
  if (saliency.ndim() != 3) raise_input("saliency must have shape (B, H, W), got " + shape_of(saliency));
  require_c_contiguous(saliency, "saliency");
  in.saliency_type = saliency_type(saliency);
  if (labels.ndim() != 3 || labels.shape(0) != saliency.shape(0) || labels.shape(1) != saliency.shape(1) ||
      labels.shape(2) != saliency.shape(2))
    raise_input("labels shape " + shape_of(labels) + " does not match saliency shape " + shape_of(saliency));
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
  in.height = saliency.shape(1);
  in.width = saliency.shape(2);
  in.num_segments = num_segments;
  in.has_ignore = ignore_index.has_value();
  in.ignore_index = ignore_index.value_or(0);
  in.skip_nonfinite = skip_nonfinite;
  in.threads = threads_or_default(threads);
  Outputs out(in.images, num_segments + 1);
  sat::Error err;
  {
    py::gil_scoped_release release;
    err = sat::reduce_labels(in, out.view);
  }
  raise_if(err);
  return out.to_dict();
}

}  // namespace

void register_labels(py::module_& m) {
  m.def("reduce_labels", &reduce_labels, py::arg("saliency"), py::arg("labels"), py::arg("num_segments"),
        py::arg("ignore_index") = py::none(), py::arg("skip_nonfinite") = false, py::arg("threads") = py::none(),
        "Per-(image, segment) statistics of a dense label map; slot K collects ignore_index pixels.");
}

}  // namespace sat_py
