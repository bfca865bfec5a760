"""COCO run-length encoding and decoding of single masks (column-major, first run of 0s)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sat_fast import _validate as v

# --------------------------------------------------------------------------
# RLE helpers
# --------------------------------------------------------------------------


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
    c = np.asarray(counts, np.int64)
    total = int(c.sum())
    if total != height * width:
        raise ValueError(f"{where}: RLE counts sum to {total}, expected H*W = {height}*{width} = {height * width}")
    values = (np.arange(c.shape[0]) % 2).astype(bool)
    return np.repeat(values, c).reshape(width, height).T
