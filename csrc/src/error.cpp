#include "sat/error.hpp"

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

namespace sat {

bool Error::before(const Error& other) const {
  if (other.kind == ErrorKind::none) return kind != ErrorKind::none;
  if (kind == ErrorKind::none) return false;
  if (image != other.image) return image < other.image;
  if (row != other.row) return row < other.row;
  return col < other.col;
}

Error label_error(int64_t image, int64_t row, int64_t col, int64_t label, int64_t num_segments) {
  Error e;
  e.kind = ErrorKind::label;
  e.image = image;
  e.row = row;
  e.col = col;
  e.integer = label;
  e.value = static_cast<double>(label);
  e.num_segments = num_segments;
  return e;
}

Error nonfinite_error(int64_t image, int64_t row, int64_t col, double value) {
  Error e;
  e.kind = ErrorKind::nonfinite;
  e.image = image;
  e.row = row;
  e.col = col;
  e.value = value;
  return e;
}

Error rle_length_error(int64_t image, int64_t instance, int64_t length, int64_t height, int64_t width) {
  Error e;
  e.kind = ErrorKind::rle;
  e.image = image;
  e.integer = length;
  e.value = static_cast<double>(length);
  e.instance = instance;
  e.height = height;
  e.width = width;
  return e;
}

Error rle_string_error(int64_t index, int64_t byte) {
  return input_error("malformed COCO RLE string " + std::to_string(index) + " at byte " + std::to_string(byte));
}

Error rle_count_error(int64_t index, int64_t byte) {
  return input_error("malformed COCO RLE string " + std::to_string(index) + ": the count at byte " +
                     std::to_string(byte) + " is over-long or out of range (a count has at most 7 characters and is " +
                     "in [0, 2**32))");
}

Error input_error(std::string text) {
  Error e;
  e.kind = ErrorKind::input;
  e.text = std::move(text);
  return e;
}

const char* kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::label:
      return "label";
    case ErrorKind::nonfinite:
      return "nonfinite";
    case ErrorKind::rle:
      return "rle";
    case ErrorKind::input:
      return "input";
    case ErrorKind::none:
      break;
  }
  return "";
}

namespace {

// A saliency value as C++ streams print it by default ("nan", "-inf", 0.25).
// snprintf and not a stream: a stream formats numbers through the locale
// facets of libstdc++, and with libstdc++ linked statically into the module
// (GCC 13, as some build machines do) those facets crashed the interpreter
// the moment an error was formatted; plain C formatting has no such state.
std::string number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char text[32];
  const int n = std::snprintf(text, sizeof text, "%g", v);
  return std::string(text, static_cast<size_t>(n > 0 ? n : 0));
}

std::string number(int64_t v) { return std::to_string(v); }

}  // namespace

std::string message(const Error& e) {
  switch (e.kind) {
    case ErrorKind::label:
      return "label " + number(e.integer) + " at image " + number(e.image) + ", pixel (" + number(e.row) + ", " +
             number(e.col) + ") is outside [0, " + number(e.num_segments) + ") and is not ignore_index";
    case ErrorKind::nonfinite:
      return "saliency has a non-finite value (" + number(e.value) + ") at image " + number(e.image) + ", pixel (" +
             number(e.row) + ", " + number(e.col) + "); pass nonfinite='skip' to leave such pixels out";
    case ErrorKind::rle:
      return "RLE counts of instance " + number(e.instance) + " (image " + number(e.image) + ") sum to " +
             number(e.integer) + ", expected H*W = " + number(e.height) + "*" + number(e.width) + " = " +
             number(e.height * e.width);
    case ErrorKind::input:
      return e.text;
    case ErrorKind::none:
      break;
  }
  return std::string();
}

}  // namespace sat
