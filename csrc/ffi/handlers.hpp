// The XLA FFI handlers of sat_fast: the label-map and mask statistics kernels
// as XLA custom calls on the CPU ("Host") platform. Only XLA's FFI headers
// (from jaxlib, jax.ffi.include_dir()) and the kernel library are used here;
// whoever registers the handlers (sat_fast._xla_ffi, then JAX) takes their
// addresses from these declarations.
//
// Both handlers take the saliency (..., H, W) as F32 or F64 (every leading
// dimension is one image), fill float outputs of the result element type
// (F32 outputs are rounded once from the float64 accumulators) and integer
// outputs as S32 or S64, and never fail on bad data: non-finite saliency is
// left out and counted, labels outside [0, K) that are not ignore_index are
// left out of every segment (they count in the totals, as ignore_index
// pixels do) and counted per image.
//
// Results, in order: count, sum, pos_sum, neg_sum, abs_sum, sq_sum, min, max
// (each (..., K)), then total_sum, total_abs, nonfinite, invalid (each (...)).
#pragma once

// XLA's C API types (xla/ffi/api/c_api.h), declared here so that whoever takes
// the handlers' addresses needs no XLA header.
struct XLA_FFI_Error;
struct XLA_FFI_CallFrame;

extern "C" {

// Args: saliency (..., H, W) F32/F64, labels (..., H, W) U8/U16/S32.
// Attrs (S64): num_segments, has_ignore (0/1), ignore_index, threads (0: all
// the CPUs this process may use).
XLA_FFI_Error* sat_fast_segment_stats_labels(XLA_FFI_CallFrame* call_frame);

// Args: saliency (..., H, W) F32/F64, masks (..., K, H, W) PRED.
// Attrs (S64): threads. invalid is always 0.
XLA_FFI_Error* sat_fast_segment_stats_masks(XLA_FFI_CallFrame* call_frame);

}  // extern "C"
