"""Input checks shared by every entry point.

Each check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right
kind, wrong contents) with a message naming the argument and the offending
value, and returns arrays in the exact layout the compiled kernels expect.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from sat_fast._typing import Nonfinite, check_choice

MAX_SEGMENTS = 1 << 24
#: The most worker threads a call accepts (``_core.MAX_THREADS``).
MAX_THREADS = 1024
_LABEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int32))


def as_numpy(x: Any, name: str) -> np.ndarray:
    """A numpy view of a numpy, JAX or array-like value (no copy when possible)."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - depends on the foreign type
        raise TypeError(f"{name} must be an array, got {type(x).__name__}") from exc


def shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def saliency_array(saliency: Any) -> np.ndarray:
    """(B, H, W) float32/float64, C-contiguous; float16 and bfloat16 widen to float32, long double narrows to float64.

    A finite long double beyond float64's range raises ``ValueError`` naming the pixel rather than
    turning into an infinity.
    """
    x = as_numpy(saliency, "saliency")
    if x.ndim != 3:
        raise ValueError(
            f"saliency must have shape (B, H, W), got {shape_str(x.shape)}; "
            "reduce channels first, and use x[None] for a single image"
        )
    kind = x.dtype.kind
    if x.dtype in (np.float32, np.float64):
        pass
    elif kind == "f" and x.dtype.itemsize > 8:
        x = _widen_long_double(x)
    elif kind == "f" or x.dtype.name == "bfloat16":
        x = x.astype(np.float32)
    else:
        raise TypeError(f"saliency must be a floating-point array, got dtype {x.dtype}")
    return np.ascontiguousarray(x)


def _widen_long_double(x: np.ndarray) -> np.ndarray:
    """float64 copy of long double saliency; finite values beyond float64's range raise, naming the pixel."""
    limit = np.finfo(np.float64).max
    with np.errstate(invalid="ignore"):
        beyond = np.isfinite(x) & (np.abs(x) > limit)
    if beyond.any():
        image, row, col = (int(i) for i in np.argwhere(beyond)[0])
        raise ValueError(
            f"saliency value {x[image, row, col]!r} at image {image}, pixel ({row}, {col}) is beyond float64's "
            "range; scale the maps first"
        )
    return x.astype(np.float64)


def positive_int(value: Any, name: str) -> int:
    """An int >= 1 (numpy integers too), else TypeError/ValueError naming ``name``."""
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if n < 1:
        raise ValueError(f"{name} must be at least 1, got {n}")
    return n


def num_threads(threads: Any) -> int | None:
    """None (the CPUs this process may use) or an int in [1, MAX_THREADS]."""
    if threads is None:
        return None
    try:
        n = operator.index(threads)
    except TypeError:
        raise TypeError(f"threads must be an int or None, got {type(threads).__name__}") from None
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    if n > MAX_THREADS:
        raise ValueError(
            f"threads must be in [1, {MAX_THREADS}], got {n} "
            "(no call runs more threads than it has chunks of work, and each thread holds its own scratch)"
        )
    return int(n)


def num_segments_value(k: Any) -> int:
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"num_segments must be an int, got {type(k).__name__}") from None
    if not 1 <= k <= MAX_SEGMENTS:
        raise ValueError(f"num_segments must be in [1, 2**24], got {k}")
    return int(k)


def nonfinite_mode(mode: str) -> bool:
    """True when non-finite saliency pixels are to be skipped."""
    return bool(check_choice(mode, "nonfinite", Nonfinite) == "skip")


def label_array(labels: Any, shape: tuple[int, ...], ignore_index: int | None) -> np.ndarray:
    """(B, H, W) uint8/uint16/int32 labels; other integer dtypes convert to int32 when their values fit."""
    lab = as_numpy(labels, "labels")
    if lab.shape != shape:
        raise ValueError(f"labels shape {shape_str(lab.shape)} does not match saliency shape {shape_str(shape)}")
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array (uint8, uint16 or int32), got dtype {lab.dtype}")
    if lab.dtype not in _LABEL_DTYPES:
        if lab.dtype.itemsize >= 4 and lab.size:
            info = np.iinfo(np.int32)
            flat = lab.reshape(lab.shape[0], -1)
            bad = (flat < info.min) | (flat > info.max)
            if bad.any():
                image, pixel = np.argwhere(bad)[0]
                raise ValueError(
                    f"label {int(flat[image, pixel])} at image {image} does not fit int32; "
                    "labels must be in [0, num_segments) or equal ignore_index"
                )
        lab = lab.astype(np.int32)
    if ignore_index is not None:
        info = np.iinfo(lab.dtype)
        if not info.min <= ignore_index <= info.max:
            raise ValueError(
                f"ignore_index {ignore_index} cannot occur in {lab.dtype} labels (range {info.min}..{info.max})"
            )
    return np.ascontiguousarray(lab)


def ignore_value(ignore_index: Any) -> int | None:
    if ignore_index is None:
        return None
    try:
        return operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index must be an int or None, got {type(ignore_index).__name__}") from None


#: Up to this many segments, num_segments is inferred from the largest label whatever it is.
INFER_SMALL_K = 4096
#: Beyond INFER_SMALL_K, at least one in this many of the ids 0 .. K-1 must occur for K to be inferred.
INFER_MAX_SPARSITY = 16


def infer_num_segments(labels: np.ndarray, ignore_index: int | None) -> int:
    """K = the largest label + 1, unless that largest label is a far outlier.

    Every segment costs a column of the output (and every label K scratch in
    the kernels), so a stray pixel such as 2**24 - 1 must not silently turn a
    few segments into millions: beyond ``INFER_SMALL_K``, K is inferred only
    when at least one in ``INFER_MAX_SPARSITY`` of the ids ``0 .. K-1`` occurs
    (in particular K is at most 16 times the pixels), and never beyond
    ``MAX_SEGMENTS``; otherwise a ``ValueError`` names the label and asks for
    ``num_segments``.
    """
    if labels.size == 0:
        raise ValueError("num_segments is required when the batch is empty")
    values = labels if ignore_index is None else labels[labels != ignore_index]
    if values.size == 0:
        raise ValueError("num_segments is required when every pixel is ignore_index")
    top = int(values.max())
    k = top + 1
    if k <= INFER_SMALL_K:
        return k
    distinct = None
    if k <= MAX_SEGMENTS:
        present = np.zeros(k, np.bool_)
        present[values[values >= 0]] = True
        distinct = int(np.count_nonzero(present))
        if k <= INFER_MAX_SPARSITY * distinct:
            return k
    masked = labels if ignore_index is None else np.where(labels != ignore_index, labels, labels.dtype.type(0))
    image, row, col = (int(i) for i in np.unravel_index(int(np.argmax(masked)), labels.shape))
    seen = "" if distinct is None else f" while only {distinct} distinct labels occur"
    limit = f"{k}, more than 2**24," if distinct is None else f"{k}"
    raise ValueError(
        f"the largest label is {top} at image {image}, pixel ({row}, {col}), so num_segments would be inferred as "
        f"{limit}{seen}; pass num_segments explicitly (labels must be in [0, num_segments) or equal ignore_index), "
        "or relabel the segments to consecutive ids"
    )


def mask_array(masks: Any, shape: tuple[int, ...]) -> np.ndarray:
    """(B, K, H, W) boolean masks, C-contiguous."""
    m = as_numpy(masks, "masks")
    if m.ndim != 4:
        raise ValueError(f"masks must have shape (B, K, H, W), got {shape_str(m.shape)}")
    if (m.shape[0],) + m.shape[2:] != shape:
        raise ValueError(
            f"masks shape {shape_str(m.shape)} does not match saliency shape {shape_str(shape)} "
            "(expected (B, K, H, W) with the saliency's B, H, W)"
        )
    if m.dtype != np.bool_:
        raise TypeError(f"masks must be boolean, got dtype {m.dtype}; use masks.astype(bool)")
    return np.ascontiguousarray(m)


def segment_names(names: Any, k: int | None, what: str = "segments") -> list[str]:
    if isinstance(names, str) or (not isinstance(names, Sequence) and not isinstance(names, np.ndarray)):
        raise TypeError(f"names must be a sequence of strings, got {type(names).__name__}")
    out = []
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise TypeError(f"names[{i}] must be a string, got {n!r}")
        out.append(n)
    if k is not None and len(out) != k:
        if len(out) < k:
            raise ValueError(f"names has {len(out)} entries but there are {k} {what}")
        raise ValueError(f"names has {len(out)} entries but there are only {k} {what}")
    seen: dict[str, int] = {}
    for i, n in enumerate(out):
        if n in seen:
            raise ValueError(f"duplicate segment name {n!r} at positions {seen[n]} and {i}")
        seen[n] = i
    return out


def per_image(values: Any, b: int, name: str) -> np.ndarray:
    arr = as_numpy(values, name)
    if arr.ndim == 0:
        return np.full(b, arr.item())
    if arr.ndim != 1 or arr.shape[0] != b:
        raise ValueError(f"{name} must have one value per image ({b}), got shape {shape_str(arr.shape)}")
    return arr


def target_array(targets: Any, b: int) -> np.ndarray | None:
    """Per-image explained class as int64 (one int broadcasts), or None when not given."""
    if targets is None:
        return None
    t = per_image(targets, b, "targets")
    if t.size and t.dtype.kind not in "iu":  # an empty list is float64 to numpy
        raise TypeError(f"targets must be integers, got dtype {t.dtype}")
    return t.astype(np.int64)


def coverage_array(coverage: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean (B, H, W) coverage mask of the saliency's shape (True: the pixel counts)."""
    cov = as_numpy(coverage, "coverage")
    if cov.dtype != np.bool_:
        raise TypeError(f"coverage must be a boolean array, got dtype {cov.dtype}")
    if cov.shape != shape:
        raise ValueError(f"coverage shape {shape_str(cov.shape)} does not match saliency shape {shape_str(shape)}")
    return np.ascontiguousarray(cov)


def coverage_list(coverage: Any, shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """One boolean (H, W) coverage mask per image, each of its image's shape."""
    if isinstance(coverage, (list, tuple)):
        covs = [as_numpy(c, "coverage") for c in coverage]
    else:
        arr = as_numpy(coverage, "coverage")
        if arr.ndim != 3:
            raise ValueError(f"coverage must be (B, H, W) or a sequence of (H, W) masks, got {shape_str(arr.shape)}")
        covs = list(arr)
    if len(covs) != len(shapes):
        raise ValueError(f"there are {len(covs)} coverage masks but {len(shapes)} images")
    for i, (c, shape) in enumerate(zip(covs, shapes, strict=True)):
        if c.dtype != np.bool_:
            raise TypeError(f"coverage must be boolean, got dtype {c.dtype} for image {i}")
        if c.shape != tuple(shape):
            raise ValueError(
                f"coverage of image {i} has shape {shape_str(c.shape)} but its saliency has {shape_str(shape)}"
            )
    return [np.ascontiguousarray(c) for c in covs]
