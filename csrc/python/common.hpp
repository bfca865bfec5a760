// Helpers shared by the register_*.cpp files: argument checks made while
// holding the GIL, the output arrays, and the one way errors reach Python.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <utility>

#include "sat/error.hpp"
#include "sat/types.hpp"

namespace sat_py {

namespace py = pybind11;

// Carries a sat::Error out of a binding; the translator registered by
// register_error_translator raises it as sat_fast._errors.KernelInputError.
class KernelException : public std::exception {
 public:
  explicit KernelException(sat::Error e) : error_(std::move(e)), text_(sat::message(error_)) {}
  const char* what() const noexcept override { return text_.c_str(); }
  const sat::Error& error() const { return error_; }

 private:
  sat::Error error_;
  std::string text_;
};

// Raises `e` (if it is an error) as KernelInputError. Call with the GIL held.
inline void raise_if(const sat::Error& e) {
  if (e) throw KernelException(e);
}
// Raises KernelInputError(kind="input") with this message.
[[noreturn]] inline void raise_input(std::string text) { throw KernelException(sat::input_error(std::move(text))); }

void register_error_translator();

std::string shape_of(const py::array& a);
std::string dtype_of(const py::array& a);
void require_c_contiguous(const py::array& a, const char* what);
// float32 or float64 (TypeError otherwise).
sat::SaliencyType saliency_type(const py::array& s);
// None: sat::default_threads(); else an int in [1, sat::kMaxThreads] (KernelInputError otherwise).
int threads_or_default(const py::object& threads);
void check_segments(int64_t k);

// The statistics arrays, prefilled as sat::StatsOutput requires.
struct Outputs {
  py::array_t<int64_t> count;
  py::array_t<double> pos, neg, sq, min, max, total_pos, total_neg;
  py::array_t<int64_t> nonfinite;
  sat::StatsOutput view;

  Outputs(int64_t images, int64_t slots);
  py::dict to_dict() const;
};

}  // namespace sat_py
