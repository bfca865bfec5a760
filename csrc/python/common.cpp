#include "common.hpp"

#include <algorithm>
#include <limits>
#include <string>

#include "sat/threads.hpp"

namespace sat_py {

namespace {

// KernelInputError(message, kind=..., image=..., pixel=(row, col), value=...).
void set_python_error(const sat::Error& e, const char* text) {
  py::object image = e.image >= 0 ? py::object(py::int_(e.image)) : py::none();
  py::object pixel = e.row >= 0 ? py::object(py::make_tuple(e.row, e.col)) : py::none();
  py::object value = py::none();
  if (e.kind == sat::ErrorKind::label || e.kind == sat::ErrorKind::rle) value = py::int_(e.integer);
  if (e.kind == sat::ErrorKind::nonfinite) value = py::float_(e.value);
  py::object cls;
  try {
    cls = py::module_::import("sat_fast._errors").attr("KernelInputError");
  } catch (py::error_already_set&) {
    // Without the package (a bare build of the module): a plain ValueError.
    PyErr_SetString(PyExc_ValueError, text);
    return;
  }
  using namespace pybind11::literals;
  py::object exc =
      cls(text, "kind"_a = sat::kind_name(e.kind), "image"_a = image, "pixel"_a = pixel, "value"_a = value);
  PyErr_SetObject(cls.ptr(), exc.ptr());
}

}  // namespace

void register_error_translator() {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const KernelException& e) {
      set_python_error(e.error(), e.what());
    }
  });
}

// Without streams, like sat::message (see error.cpp).
std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string dtype_of(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

void require_c_contiguous(const py::array& a, const char* what) {
  if (!(a.flags() & py::array::c_style))
    raise_input(std::string(what) + " must be C-contiguous (use numpy.ascontiguousarray)");
}

sat::SaliencyType saliency_type(const py::array& s) {
  if (py::isinstance<py::array_t<float>>(s)) return sat::SaliencyType::F32;
  if (py::isinstance<py::array_t<double>>(s)) return sat::SaliencyType::F64;
  throw py::type_error("saliency must be float32 or float64, got " + dtype_of(s));
}

int threads_or_default(const py::object& threads) {
  if (threads.is_none()) return sat::default_threads();
  if (!py::isinstance<py::int_>(threads))
    throw py::type_error("threads must be an int or None, got " +
                         py::str(py::type::handle_of(threads).attr("__name__")).cast<std::string>());
  // Any Python int, however large: compare before converting.
  int overflow = 0;
  const long long n = PyLong_AsLongLongAndOverflow(threads.ptr(), &overflow);
  if (n == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow < 0 || (overflow == 0 && n < 1))
    raise_input("threads must be at least 1, got " + py::str(threads).cast<std::string>());
  if (overflow > 0 || n > sat::kMaxThreads)
    raise_input("threads must be in [1, " + std::to_string(sat::kMaxThreads) + "], got " +
                py::str(threads).cast<std::string>() +
                " (no call runs more threads than it has chunks of work, and each thread holds its own scratch)");
  return static_cast<int>(n);
}

void check_segments(int64_t k) {
  if (k < 1 || k > sat::kMaxSegments) raise_input("num_segments must be in [1, 2**24], got " + std::to_string(k));
}

Outputs::Outputs(int64_t images, int64_t slots)
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

py::dict Outputs::to_dict() const {
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

}  // namespace sat_py
