// Batching helpers of the pipeline: whether a batch's arrays can be viewed as
// one array instead of being copied into one (sat_fast.pipeline.stack_rows).
// Python-side checks, done here because they run once per array of every
// batch: about 1.3 us per array in Python, a few nanoseconds here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

namespace sat_py {

namespace py = pybind11;

namespace {

// True when every item is a C-contiguous ndarray that is a view of the same
// array object (the same `base`), with the first one's shape, strides and
// dtype object, and the items lie back to back in order: then one
// (len, *shape) view covers exactly their bytes, all in one allocation.
// Anything else (a copy, another base, a gap, another order, a repeat) is
// False, and the caller copies.
bool rows_back_to_back(const py::sequence& arrays) {
  const py::ssize_t n = py::len(arrays);
  if (n < 2) return false;
  const py::object first_object = arrays[0];
  if (!py::isinstance<py::array>(first_object)) return false;
  const auto first = py::reinterpret_borrow<py::array>(first_object);
  const py::object base = first.base();
  if (base.is_none() || !py::isinstance<py::array>(base)) return false;
  if (!(first.flags() & py::array::c_style)) return false;
  const py::ssize_t ndim = first.ndim();
  const auto step = static_cast<std::intptr_t>(first.nbytes());
  if (step <= 0) return false;
  const auto start = reinterpret_cast<std::intptr_t>(first.data());
  const PyObject* dtype = first.dtype().ptr();
  for (py::ssize_t i = 1; i < n; ++i) {
    const py::object item = arrays[i];
    if (!py::isinstance<py::array>(item)) return false;
    const auto a = py::reinterpret_borrow<py::array>(item);
    if (!a.base().is(base) || a.ndim() != ndim || a.dtype().ptr() != dtype) return false;
    for (py::ssize_t d = 0; d < ndim; ++d) {
      if (a.shape(d) != first.shape(d) || a.strides(d) != first.strides(d)) return false;
    }
    if (reinterpret_cast<std::intptr_t>(a.data()) != start + static_cast<std::intptr_t>(i) * step) return false;
  }
  return true;
}

}  // namespace

void register_batch(py::module_& m) {
  m.def("rows_back_to_back", &rows_back_to_back, py::arg("arrays"),
        "Whether the arrays are views of one array, laid out alike and back to back in order (so one view covers "
        "them).");
}

}  // namespace sat_py
