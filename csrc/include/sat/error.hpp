// The one error type of the kernels: what went wrong and exactly where.
// Kernels return it (they never throw across their worker threads); the
// bindings turn it into sat_fast._errors.KernelInputError with the same
// fields, so no caller ever has to parse the message.
#pragma once
#include <cstdint>
#include <string>

namespace sat {

enum class ErrorKind : int {
  none = 0,
  label,      // a label outside [0, num_segments) that is not ignore_index
  nonfinite,  // NaN or +-Inf saliency where non-finite pixels are not skipped
  rle,        // COCO run lengths that do not cover the image exactly
  input,      // anything else the kernels or the bindings refuse
};

struct Error {
  ErrorKind kind = ErrorKind::none;
  int64_t image = -1;  // index in the batch, -1 when not about one image
  int64_t row = -1;    // the offending pixel, -1 when not about one pixel
  int64_t col = -1;
  // The offending value: the saliency value (nonfinite); the label and the
  // sum of the run lengths are in `integer` (label, rle).
  double value = 0.0;
  int64_t integer = 0;
  // Context the message needs.
  int64_t num_segments = 0;  // label
  int64_t instance = -1;     // rle: the instance whose counts are wrong
  int64_t height = 0;        // rle: the image size they should cover
  int64_t width = 0;
  std::string text;  // input: the whole message

  explicit operator bool() const { return kind != ErrorKind::none; }
  // True when this error comes first in (image, row, col) order.
  bool before(const Error& other) const;
};

Error label_error(int64_t image, int64_t row, int64_t col, int64_t label, int64_t num_segments);
Error nonfinite_error(int64_t image, int64_t row, int64_t col, double value);
Error rle_length_error(int64_t image, int64_t instance, int64_t length, int64_t height, int64_t width);
// A COCO compressed RLE string (number `index` of a list) that is malformed at `byte`.
Error rle_string_error(int64_t index, int64_t byte);
// A count of that string that is longer than any count can be, or outside [0, 2**32).
Error rle_count_error(int64_t index, int64_t byte);
Error input_error(std::string text);

// "label", "nonfinite", "rle", "input" ("" for none).
const char* kind_name(ErrorKind kind);
// The message, formatted here and nowhere else.
std::string message(const Error& e);

}  // namespace sat
