"""Type stubs for the private compiled module (use the functions in sat_fast).

Every ``ValueError`` this module raises is a :class:`sat_fast._errors.KernelInputError`
whose ``kind`` is ``"label"``, ``"nonfinite"``, ``"rle"`` or ``"input"``, with
``image``, ``pixel`` (row, column) and ``value`` where they apply; wrong dtypes
raise ``TypeError``.
"""

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

CHUNK_PIXELS: int
MAX_SEGMENTS: int
MAX_THREADS: int

def default_threads() -> int: ...
def kernel_variant() -> str: ...
def rows_back_to_back(arrays: Sequence[Any]) -> bool: ...

# register_labels.cpp
def reduce_labels(
    saliency: npt.NDArray[np.floating],
    labels: npt.NDArray[np.integer],
    num_segments: int,
    ignore_index: int | None = None,
    skip_nonfinite: bool = False,
    threads: int | None = None,
) -> dict[str, np.ndarray]: ...

# register_masks.cpp
def reduce_masks(
    saliency: npt.NDArray[np.floating],
    words: npt.NDArray[np.uint64],
    bounds: npt.NDArray[np.int64],
    num_segments: int,
    unassigned: bool = False,
    skip_nonfinite: bool = False,
    threads: int | None = None,
) -> dict[str, np.ndarray]: ...
def pack_masks(
    masks: npt.NDArray[np.bool_] | npt.NDArray[np.uint8], threads: int | None = None
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]: ...

# register_rle.cpp
RLE_BLOCK_ROWS: int

def reduce_rle(
    saliency_maps: list[npt.NDArray[np.floating]],
    image_segments: npt.NDArray[np.int64],
    segment_instances: npt.NDArray[np.int64],
    instance_offsets: npt.NDArray[np.int64],
    counts: npt.NDArray[np.uint32],
    unassigned: bool = False,
    skip_nonfinite: bool = False,
    threads: int | None = None,
    path: Literal["auto", "area", "summary"] = "auto",
) -> dict[str, np.ndarray]: ...
def rle_from_strings(strings: list[str | bytes]) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]: ...
