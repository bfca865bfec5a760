// sat_fast._core: the Python face of the kernels. Each area registers its
// functions (register_labels.cpp, register_masks.cpp, register_rle.cpp, and
// register_batch.cpp for the pipeline's batching); every binding checks
// shapes, dtypes and sizes while holding the GIL, releases it for the kernel,
// and turns a sat::Error into sat_fast._errors.KernelInputError.
#include <pybind11/pybind11.h>

#include "common.hpp"
#include "sat/dispatch.hpp"
#include "sat/threads.hpp"
#include "sat/types.hpp"

namespace sat_py {
void register_batch(py::module_& m);
void register_labels(py::module_& m);
void register_masks(py::module_& m);
void register_rle(py::module_& m);
}  // namespace sat_py

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  m.doc() = "sat_fast's compiled kernels (private: use the functions in sat_fast instead).";
  // The kernel variant is chosen once, here at import (SAT_FAST_KERNEL=generic forces the portable one).
  sat::kernels();
  sat_py::register_error_translator();
  m.attr("CHUNK_PIXELS") = sat::kChunkPixels;
  m.attr("MAX_SEGMENTS") = sat::kMaxSegments;
  m.attr("MAX_THREADS") = sat::kMaxThreads;
  m.def("default_threads", &sat::default_threads, "Threads this process may use (its CPU affinity).");
  m.def("kernel_variant", &sat::kernel_variant, "Kernel variant chosen for this CPU: 'avx2' or 'generic'.");
  sat_py::register_batch(m);
  sat_py::register_labels(m);
  sat_py::register_masks(m);
  sat_py::register_rle(m);
}
