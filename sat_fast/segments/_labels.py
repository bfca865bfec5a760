"""Segments from dense label maps and PNG label files."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from sat_fast import _validate as v
from sat_fast.segments._report import LoadReport, record_problem
from sat_fast.segments._types import (
    DEFAULT_MAX_PIXELS,
    ImageId,
    Segments,
    check_pixels,
    image_id_list,
    label_dtype,
    max_pixels_value,
    where_text,
)
from sat_fast.segments._vocab import names_table

# --------------------------------------------------------------------------
# Dense label maps and PNG files
# --------------------------------------------------------------------------


#: Pixels mapped per step: bounds the index temporaries (numpy indexes with intp) to 512 KiB.
_CHUNK = 1 << 16


def _present_values(flat: np.ndarray) -> tuple[np.ndarray, bool]:
    """The sorted distinct values of ``flat`` (its own dtype), and whether they are small enough for a lookup table."""
    if flat.size == 0:
        return flat[:0], True
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi < (1 << 20):
        seen = np.zeros(hi + 1, bool)
        for start in range(0, flat.size, _CHUNK):
            seen[flat[start : start + _CHUNK]] = True
        return np.flatnonzero(seen).astype(flat.dtype), True
    parts = [np.unique(flat[start : start + _CHUNK]) for start in range(0, flat.size, _CHUNK)]
    return np.unique(np.concatenate(parts)), False


def _from_labels_one(
    lab: np.ndarray, table: Mapping[int, str], ignore_index: int | None, image_id: ImageId, source: str | None
) -> Segments:
    if lab.ndim != 2:
        raise ValueError(f"{where_text(image_id, source)}: label map must be (H, W), got {v.shape_str(lab.shape)}")
    if lab.dtype.kind not in "iub":
        raise TypeError(f"{where_text(image_id, source)}: label map must be integers, got dtype {lab.dtype}")
    if lab.dtype.kind == "b":
        lab = lab.view(np.uint8)
    # Working memory stays a small multiple of the output: no int64 copy of the image, chunked lookups.
    flat = lab.reshape(-1)
    present, dense = _present_values(flat)
    positions: dict[str, int] = {}
    local: dict[int, int] = {}
    for value in present.tolist():
        if value == ignore_index:
            continue
        name = table.get(value)
        if name is None:
            r, c = np.argwhere(lab == value)[0]
            raise ValueError(
                f"{where_text(image_id, source)}: label value {value} at pixel ({r}, {c}) is missing from the names "
                "table (pass ignore_index for a 'no segment' value)"
            )
        local[value] = positions.setdefault(name, len(positions))
    names = list(positions)
    k = len(names)
    dtype = label_dtype(k)
    out = np.empty(flat.size, dtype)
    if dense:
        lut = np.full(int(present[-1]) + 1 if present.size else 1, k, dtype)
        for value, idx in local.items():
            lut[value] = idx
        for start in range(0, flat.size, _CHUNK):
            np.take(lut, flat[start : start + _CHUNK], out=out[start : start + _CHUNK])
    else:
        codes = np.array([local.get(x, k) for x in present.tolist()], dtype)
        for start in range(0, flat.size, _CHUNK):
            out[start : start + _CHUNK] = codes[np.searchsorted(present, flat[start : start + _CHUNK])]
    return Segments(
        tuple(names), lab.shape[0], lab.shape[1], label_map=out.reshape(lab.shape), image_id=image_id, source=source
    )


def from_label_map(
    label_maps: Any, names: Any, *, image_ids: Any = None, ignore_index: int | None = None
) -> list[Segments]:
    """Segments from dense label maps.

    Parameters
    ----------
    label_maps
        One (H, W) integer array, a batch (B, H, W), or a sequence of (H, W)
        arrays of differing sizes.
    names
        The names table: a list (value ``i`` is ``names[i]``), a dict
        ``{value: name}`` (values may be sparse; several values may share a
        name and then form one segment), or a path to a JSON file (list or
        dict) or CSV file (``value,name`` rows, optional header).
    image_ids
        One id per image; default ``0 .. B-1``.
    ignore_index
        Label value meaning "no segment" (e.g. 255 in Pascal VOC).

    Returns
    -------
    list of Segments
        Each lists only the names present in its image.

    Raises
    ------
    ValueError
        A label value missing from the names table (naming the image, pixel
        and value).

    Examples
    --------
    >>> import numpy as np
    >>> segs = from_label_map(np.array([[0, 255], [2, 2]]), {0: "sky", 2: "dog"}, ignore_index=255)
    >>> segs[0].names
    ('sky', 'dog')
    """
    table = names_table(names)
    ignore = v.ignore_value(ignore_index)
    if isinstance(label_maps, np.ndarray) or (
        hasattr(label_maps, "__array__") and not isinstance(label_maps, (list, tuple))
    ):
        arr = v.as_numpy(label_maps, "label_maps")
        maps = [arr] if arr.ndim == 2 else list(arr) if arr.ndim == 3 else None
        if maps is None:
            raise ValueError(f"label_maps must be (H, W) or (B, H, W), got {v.shape_str(arr.shape)}")
    else:
        maps = [v.as_numpy(m, "label_maps") for m in label_maps]
    ids = image_id_list(image_ids, len(maps)) or list(range(len(maps)))
    return [_from_labels_one(np.asarray(m), table, ignore, i, None) for m, i in zip(maps, ids, strict=True)]


def _read_label_png(path: str, max_pixels: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only: the size is checked before the pixels are decoded
            width, height = im.size
            check_pixels(height, width, max_pixels, f"label PNG {path}")
            im.load()
            mode = im.mode
            if mode in ("P", "L", "1"):
                return np.asarray(im).astype(np.uint8, copy=False)
            if mode.startswith("I;16"):
                return np.asarray(im).astype(np.uint16, copy=False)
            if mode == "I":
                return np.asarray(im).astype(np.int32, copy=False)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"label PNG {path} is larger than Pillow allows (PIL.Image.MAX_IMAGE_PIXELS): {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as exc:
        raise ValueError(f"cannot read label PNG {path}: {exc} (corrupt or truncated file?)") from None
    except ValueError as exc:
        if str(exc).startswith(f"label PNG {path} declares"):
            raise
        raise ValueError(f"cannot read label PNG {path}: {exc} (corrupt or truncated file?)") from None
    raise ValueError(
        f"label PNG {path} has mode {mode}; expected a greyscale or palette PNG whose pixel values are labels"
    )


@overload
def from_png(
    paths: Iterable[str | os.PathLike[str]],
    names: Any,
    *,
    image_ids: Any = ...,
    ignore_index: int | None = ...,
    report: LoadReport | None = ...,
    lazy: Literal[False] = ...,
    max_pixels: int | None = ...,
) -> list[Segments]: ...
@overload
def from_png(
    paths: Iterable[str | os.PathLike[str]],
    names: Any,
    *,
    image_ids: Any = ...,
    ignore_index: int | None = ...,
    report: LoadReport | None = ...,
    lazy: Literal[True],
    max_pixels: int | None = ...,
) -> Iterator[Segments]: ...
def from_png(
    paths: Iterable[str | os.PathLike[str]],
    names: Any,
    *,
    image_ids: Any = None,
    ignore_index: int | None = None,
    report: LoadReport | None = None,
    lazy: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> list[Segments] | Iterator[Segments]:
    """Segments from PNG label maps (greyscale, 16-bit, or palette PNGs as in Pascal VOC and ADE20K).

    A palette PNG is read as its palette indices, not its colours.

    Parameters
    ----------
    paths
        PNG files, one per image.
    names
        The names table (see :func:`from_label_map`).
    image_ids
        One id per file; default: the file name without extension.
    ignore_index
        Label value meaning "no segment" (255 in VOC; ADE20K uses 0 for
        "other", which can simply be a name or the ignore value).
    report
        Collect unreadable files, files larger than ``max_pixels`` and unknown
        label values here and skip those files, instead of raising.
    lazy
        Return an iterator that reads one file at a time.
    max_pixels
        Largest image accepted, in pixels (height x width as declared in the
        PNG header, checked before the pixels are decoded); default
        ``DEFAULT_MAX_PIXELS`` = 2**28, None for no limit. Pillow's own
        decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) applies too.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> Image.fromarray(np.array([[0, 1], [1, 1]], np.uint8)).save(path)
    >>> from_png([path], ["sky", "dog"])[0].names
    ('sky', 'dog')
    """
    table = names_table(names)
    ignore = v.ignore_value(ignore_index)
    limit = max_pixels_value(max_pixels)
    path_list = [os.fspath(p) for p in paths]
    ids = image_id_list(image_ids, len(path_list)) or [Path(p).stem for p in path_list]

    def generate() -> Iterator[Segments]:
        for path, image_id in zip(path_list, ids, strict=True):
            try:
                lab = _read_label_png(path, limit)
                yield _from_labels_one(lab, table, ignore, image_id, path)
            except ValueError as exc:
                record_problem(report, path, str(image_id), str(exc))

    return generate() if lazy else list(generate())
