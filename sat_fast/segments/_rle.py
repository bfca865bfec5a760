"""COCO run-length encoding and decoding of single masks (column-major, first run of 0s)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sat_fast import _validate as v

# --------------------------------------------------------------------------
# RLE helpers
# --------------------------------------------------------------------------

_MAX_COUNT = 0xFFFFFFFF


def counts_array(counts: Any, where: str) -> np.ndarray:
    """COCO run lengths as 1-D uint32, checked: every count an integer in [0, 2**32), never a wrapping cast.

    Integer arrays of any width and floats holding whole numbers are accepted; negative, too large,
    fractional, non-finite, boolean and non-numeric counts raise ``ValueError`` naming ``where``, the
    value and its position.
    """
    arr = np.asarray(counts)
    if arr.ndim != 1:
        raise ValueError(f"{where}: RLE counts must be 1-D, got {v.shape_str(arr.shape)}")
    if arr.dtype == np.uint32:
        return np.ascontiguousarray(arr)
    kind = arr.dtype.kind
    if arr.size == 0:
        return np.zeros(0, np.uint32)
    if kind in "iu":
        bad = (arr < 0) | (arr > _MAX_COUNT)
    elif kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr < 0) | (arr > _MAX_COUNT) | (arr != np.floor(arr))
    elif kind == "O":
        bad = np.array([not _is_count(x) for x in arr.tolist()], bool)
    else:
        bad = np.ones(arr.shape, bool)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{where}: RLE count {arr[i].item()!r} at position {i} must be an integer in [0, 2**32)")
    return arr.astype(np.uint32)


def _is_count(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and 0 <= int(x) <= _MAX_COUNT


def rle_encode(mask: Any) -> np.ndarray:
    """COCO run lengths (uint32, column-major, first run is 0s) of one (H, W) boolean mask.

    Examples
    --------
    >>> import numpy as np
    >>> rle_encode(np.array([[0, 1], [0, 1]], bool)).tolist()
    [2, 2]
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {v.shape_str(m.shape)}")
    flat = m.astype(bool).T.ravel()
    if flat.size == 0:
        return np.zeros(1, np.uint32)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds)
    if flat[0]:
        runs = np.concatenate([[0], runs])
    return runs.astype(np.uint32)


def rle_decode(counts: Any, height: int, width: int, *, where: str = "RLE") -> np.ndarray:
    """The (H, W) boolean mask of COCO run lengths (column-major).

    Examples
    --------
    >>> rle_decode([2, 2], 2, 2).astype(int).tolist()
    [[0, 1], [0, 1]]
    """
    c = counts_array(counts, where).astype(np.int64)
    total = int(c.sum())
    if total != height * width:
        raise ValueError(f"{where}: RLE counts sum to {total}, expected H*W = {height}*{width} = {height * width}")
    values = (np.arange(c.shape[0]) % 2).astype(bool)
    return np.repeat(values, c).reshape(width, height).T
