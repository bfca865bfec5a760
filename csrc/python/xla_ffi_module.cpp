// sat_fast._xla_ffi: hands the XLA FFI handlers of csrc/ffi to Python as
// capsules, for jax.ffi.register_ffi_target (sat_fast/functional/_ffi.py).
// A module of its own so that sat_fast._core builds without jaxlib's headers.
#include <pybind11/pybind11.h>

#include "handlers.hpp"
#include "sat/dispatch.hpp"

namespace py = pybind11;

namespace {
py::capsule handler_capsule(XLA_FFI_Error* (*fn)(XLA_FFI_CallFrame*)) {
  return py::capsule(reinterpret_cast<void*>(fn));
}
}  // namespace

PYBIND11_MODULE(_xla_ffi, m) {
  m.doc() = "sat_fast's XLA FFI handlers (private: use sat_fast.functional instead).";
  // The kernel variant is chosen once, here at import, as in sat_fast._core.
  sat::kernels();
  m.attr("JAXLIB_VERSION") = SAT_FAST_BUILD_JAXLIB_VERSION;
  m.def(
      "handlers",
      []() {
        py::dict out;
        out["sat_fast_segment_stats_labels"] = handler_capsule(&sat_fast_segment_stats_labels);
        out["sat_fast_segment_stats_masks"] = handler_capsule(&sat_fast_segment_stats_masks);
        return out;
      },
      "The FFI handlers by target name, each a PyCapsule holding the handler's address.");
}
