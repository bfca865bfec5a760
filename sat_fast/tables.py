"""Per-image Segment Attribution Tables and the statistics under them.

The reductions run in the compiled ``sat_fast._core`` kernel: one pass over
the pixels, float64 accumulation, threads with the GIL released, and results
that are bitwise identical for any thread count or batch split.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from sat_fast import _core
from sat_fast import _validate as v

__all__ = [
    "PackedMasks",
    "SegmentStats",
    "pack_masks",
    "segment_stats",
    "segment_table",
    "table_schema",
]

#: Keys of a :class:`SegmentStats` with shape (B, K).
SEGMENT_KEYS = ("count", "sum", "pos_sum", "neg_sum", "abs_sum", "sq_sum", "min", "max")
#: Keys of a :class:`SegmentStats` with shape (B,).
IMAGE_KEYS = ("total_sum", "total_abs", "pixels", "nonfinite")


@dataclass(frozen=True, eq=False)
class PackedMasks:
    """Overlapping boolean masks packed one bit per segment per pixel.

    ``words[b, k, w]`` holds pixels ``64*w .. 64*w + 63`` (row-major within the
    image) of segment ``k`` of image ``b``, lowest bit first. ``bounds[b, k]``
    is the ``[first, last)`` range of words of that mask that are not zero
    (computed when omitted), so small masks are not scanned end to end. Pack
    once with :func:`pack_masks` and reduce many saliency maps against it.

    Examples
    --------
    >>> import numpy as np, sat_fast
    >>> masks = np.zeros((1, 2, 4, 4), bool); masks[0, 0, :2] = True
    >>> packed = sat_fast.pack_masks(masks)
    >>> packed.shape
    (1, 2, 4, 4)
    >>> bool((packed.unpack() == masks).all())
    True
    """

    words: np.ndarray
    height: int
    width: int
    bounds: np.ndarray | None = None

    def __post_init__(self) -> None:
        w = self.words
        if not isinstance(w, np.ndarray) or w.dtype != np.uint64 or w.ndim != 3:
            raise TypeError("PackedMasks.words must be a uint64 array of shape (B, K, ceil(H*W/64))")
        if self.height < 0 or self.width < 0:
            raise ValueError(f"height and width must be non-negative, got {self.height}x{self.width}")
        expected = -(-self.height * self.width // 64)
        if w.shape[2] != expected:
            raise ValueError(
                f"PackedMasks.words has {w.shape[2]} words per mask but {self.height}x{self.width} "
                f"images need {expected}"
            )
        if self.bounds is None:
            object.__setattr__(self, "bounds", _word_bounds(w))
        elif self.bounds.dtype != np.int64 or self.bounds.shape != w.shape[:2] + (2,):
            raise ValueError(f"PackedMasks.bounds must be int64 of shape {w.shape[:2] + (2,)}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, K, H, W) of the unpacked masks."""
        return (self.words.shape[0], self.words.shape[1], self.height, self.width)

    @property
    def num_segments(self) -> int:
        return self.words.shape[1]

    def __len__(self) -> int:
        return self.words.shape[0]

    def __getitem__(self, index: slice | int) -> PackedMasks:
        """Images by batch index or slice, still packed."""
        if not isinstance(index, slice):
            index = slice(index, index + 1 or None)
        return PackedMasks(
            np.ascontiguousarray(self.words[index]),
            self.height,
            self.width,
            np.ascontiguousarray(self.bounds[index]),  # type: ignore[index]
        )

    def unpack(self) -> np.ndarray:
        """The boolean masks, shape (B, K, H, W)."""
        b, k, _ = self.words.shape
        n = self.height * self.width
        bits = np.unpackbits(self.words.view(np.uint8), axis=-1, bitorder="little")
        return bits[..., :n].astype(bool).reshape(b, k, self.height, self.width)


def _word_bounds(words: np.ndarray) -> np.ndarray:
    nonzero = words != 0
    n = words.shape[-1]
    any_set = nonzero.any(axis=-1)
    first = np.where(any_set, nonzero.argmax(axis=-1), 0)
    last = np.where(any_set, n - nonzero[..., ::-1].argmax(axis=-1), 0)
    return np.ascontiguousarray(np.stack([first, last], axis=-1).astype(np.int64))


class SegmentStats(Mapping[str, np.ndarray]):
    """Raw per-(image, segment) statistics, as returned by :func:`segment_stats`.

    A read-only mapping of numpy arrays: ``count``, ``sum``, ``pos_sum``,
    ``neg_sum``, ``abs_sum``, ``sq_sum``, ``min``, ``max`` of shape (B, K) and
    ``total_sum``, ``total_abs``, ``pixels``, ``nonfinite`` of shape (B,).
    For a segment with no pixels, sums and count are 0 and min/max are NaN.
    ``pixels`` is H*W; ``nonfinite`` counts pixels skipped with
    ``nonfinite="skip"``; the totals cover every finite pixel of the image.

    Statistics merge: :meth:`merge` combines partial results for the same
    images (for example the top and bottom halves of each image), and
    :meth:`concat` joins batches of different images.

    Examples
    --------
    >>> import numpy as np, sat_fast
    >>> sal = np.array([[[1.0, -2.0], [3.0, 4.0]]], np.float32)
    >>> lab = np.array([[[0, 0], [1, 1]]], np.uint8)
    >>> st = sat_fast.segment_stats(sal, lab, num_segments=2)
    >>> st["sum"].tolist(), st["count"].tolist()
    ([[-1.0, 7.0]], [[2, 2]])
    """

    __slots__ = ("_data", "_unassigned")

    def __init__(self, data: Mapping[str, np.ndarray], unassigned: Mapping[str, np.ndarray] | None = None):
        missing = [k for k in SEGMENT_KEYS + IMAGE_KEYS if k not in data]
        if missing:
            raise ValueError(f"SegmentStats is missing {missing}")
        self._data = {k: data[k] for k in SEGMENT_KEYS + IMAGE_KEYS}
        self._unassigned = dict(unassigned) if unassigned is not None else None

    @classmethod
    def _from_kernel(cls, raw: Mapping[str, np.ndarray], height: int, width: int, unassigned: bool) -> SegmentStats:
        pos, neg = raw["pos_sum"], raw["neg_sum"]
        full = {
            "count": raw["count"],
            "sum": pos + neg,
            "pos_sum": pos,
            "neg_sum": neg,
            "abs_sum": pos - neg,
            "sq_sum": raw["sq_sum"],
            "min": raw["min"],
            "max": raw["max"],
        }
        b = raw["count"].shape[0]
        data: dict[str, np.ndarray] = {k: np.ascontiguousarray(a[:, :-1]) for k, a in full.items()}
        data["total_sum"] = raw["total_pos"] + raw["total_neg"]
        data["total_abs"] = raw["total_pos"] - raw["total_neg"]
        data["pixels"] = np.full(b, height * width, dtype=np.int64)
        data["nonfinite"] = raw["nonfinite"]
        extra = {k: np.ascontiguousarray(a[:, -1]) for k, a in full.items()} if unassigned else None
        return cls(data, extra)

    # Mapping protocol
    def __getitem__(self, key: str) -> np.ndarray:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        b, k = self.shape
        return f"SegmentStats(images={b}, segments={k}, unassigned={self._unassigned is not None})"

    @property
    def shape(self) -> tuple[int, int]:
        """(B, K)."""
        return tuple(self._data["count"].shape)  # type: ignore[return-value]

    @property
    def unassigned(self) -> Mapping[str, np.ndarray] | None:
        """Statistics (each of shape (B,)) of the pixels in no segment, when computed."""
        return self._unassigned

    @property
    def mean(self) -> np.ndarray:
        """Mean saliency per (image, segment), NaN where the segment has no pixels."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._data["count"] > 0, self._data["sum"] / self._data["count"], np.nan)

    def merge(self, other: SegmentStats) -> SegmentStats:
        """Combine partial statistics of the same images (e.g. split by rows or columns).

        Counts, sums and pixel totals add; min and max take the extremes.
        Counts, min and max are exact; sums equal a single pass up to float64
        rounding of the final additions.
        """
        if not isinstance(other, SegmentStats):
            raise TypeError(f"can only merge SegmentStats, got {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(f"cannot merge statistics of shape {self.shape} with {other.shape}")
        if (self._unassigned is None) != (other._unassigned is None):
            raise ValueError("cannot merge statistics with and without unassigned pixels")
        data = _merge_dicts(self._data, other._data)
        extra = None if self._unassigned is None else _merge_dicts(self._unassigned, other._unassigned)  # type: ignore[arg-type]
        return SegmentStats(data, extra)

    @staticmethod
    def concat(parts: Sequence[SegmentStats]) -> SegmentStats:
        """Join statistics of different images along the batch axis, in order."""
        parts = list(parts)
        if not parts:
            raise ValueError("concat needs at least one SegmentStats")
        k = parts[0].shape[1]
        for p in parts:
            if p.shape[1] != k:
                raise ValueError(f"cannot concatenate statistics with {k} and {p.shape[1]} segments")
            if (p._unassigned is None) != (parts[0]._unassigned is None):
                raise ValueError("cannot concatenate statistics with and without unassigned pixels")
        data = {key: np.concatenate([p._data[key] for p in parts]) for key in parts[0]._data}
        extra = None
        if parts[0]._unassigned is not None:
            extra = {key: np.concatenate([p._unassigned[key] for p in parts]) for key in parts[0]._unassigned}  # type: ignore[index]
        return SegmentStats(data, extra)


def _merge_dicts(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, x in a.items():
        y = b[key]
        if key == "min":
            out[key] = np.fmin(x, y)
        elif key == "max":
            out[key] = np.fmax(x, y)
        else:
            out[key] = x + y
    return out


def pack_masks(masks: Any, *, threads: int | None = None) -> PackedMasks:
    """Pack boolean masks (B, K, H, W) into one bit per segment per pixel.

    Parameters
    ----------
    masks
        Boolean array (numpy or JAX) of shape (B, K, H, W); masks may overlap.
    threads
        Worker threads; default: the CPUs this process may run on.

    Returns
    -------
    PackedMasks
        Reusable against any saliency batch of the same (B, H, W).

    Examples
    --------
    >>> import numpy as np, sat_fast
    >>> packed = sat_fast.pack_masks(np.ones((2, 3, 8, 8), bool))
    >>> packed.words.shape
    (2, 3, 1)
    """
    m = v.as_numpy(masks, "masks")
    if m.ndim != 4:
        raise ValueError(f"masks must have shape (B, K, H, W), got {v.shape_str(m.shape)}")
    if m.dtype != np.bool_:
        raise TypeError(f"masks must be boolean, got dtype {m.dtype}; use masks.astype(bool)")
    words, bounds = _core.pack_masks(np.ascontiguousarray(m), threads=v.num_threads(threads))
    return PackedMasks(words, int(m.shape[2]), int(m.shape[3]), bounds)


def segment_stats(
    saliency: Any,
    labels: Any = None,
    *,
    masks: Any = None,
    num_segments: int | None = None,
    ignore_index: int | None = None,
    threads: int | None = None,
    nonfinite: Literal["raise", "skip"] = "raise",
    unassigned: bool = False,
) -> SegmentStats:
    """Per-(image, segment) saliency statistics in one pass over the pixels.

    Parameters
    ----------
    saliency
        (B, H, W) saliency maps, numpy or JAX; float32 or float64 (float16 and
        bfloat16 are widened to float32). Accumulation is in float64.
    labels
        Dense label map (B, H, W) of uint8, uint16 or int32 (other integer
        dtypes are converted when their values fit). Exactly one of
        ``labels`` and ``masks`` is given.
    masks
        Overlapping boolean masks (B, K, H, W), or :class:`PackedMasks`.
    num_segments
        K for label maps; inferred from the largest label when omitted (a
        pass over the labels that passing it avoids). Must be in [1, 2**24].
    ignore_index
        Label value that belongs to no segment.
    threads
        Worker threads; default: the CPUs this process may run on.
    nonfinite
        ``"raise"`` (default) raises on NaN or Inf saliency and names the
        pixel; ``"skip"`` leaves such pixels out of every statistic and
        counts them in ``nonfinite``.
    unassigned
        Also compute statistics of pixels in no segment (``ignore_index``
        pixels, or pixels no mask covers), in :attr:`SegmentStats.unassigned`.

    Returns
    -------
    SegmentStats

    Raises
    ------
    ValueError
        Shape mismatches, labels outside [0, K) that are not ``ignore_index``
        (naming the image, pixel and value), non-finite saliency, K out of range.
    TypeError
        Unsupported dtypes.

    Examples
    --------
    >>> import numpy as np, sat_fast
    >>> sal = np.ones((2, 4, 4), np.float32)
    >>> lab = np.zeros((2, 4, 4), np.uint8); lab[:, 2:] = 1
    >>> sat_fast.segment_stats(sal, lab, num_segments=3)["count"].tolist()
    [[8, 8, 0], [8, 8, 0]]
    """
    x = v.saliency_array(saliency)
    skip = v.nonfinite_mode(nonfinite)
    nthreads = v.num_threads(threads)
    _, height, width = x.shape
    if (labels is None) == (masks is None):
        raise ValueError("pass exactly one of labels and masks")
    if labels is not None:
        ignore = v.ignore_value(ignore_index)
        lab = v.label_array(labels, x.shape, ignore)
        k = v.infer_num_segments(lab, ignore) if num_segments is None else v.num_segments_value(num_segments)
        raw = _core.reduce_labels(x, lab, k, ignore_index=ignore, skip_nonfinite=skip, threads=nthreads)
        return SegmentStats._from_kernel(raw, height, width, unassigned)
    if ignore_index is not None:
        raise ValueError("ignore_index applies to label maps, not masks")
    packed = masks if isinstance(masks, PackedMasks) else None
    if packed is None:
        m = v.mask_array(masks, x.shape)
        packed = pack_masks(m, threads=nthreads)
    elif (len(packed), packed.height, packed.width) != x.shape:
        raise ValueError(
            f"packed masks shape {v.shape_str(packed.shape)} does not match saliency shape {v.shape_str(x.shape)}"
        )
    k = packed.num_segments
    if num_segments is not None and v.num_segments_value(num_segments) != k:
        raise ValueError(f"num_segments is {num_segments} but masks have {k} segments")
    v.num_segments_value(k)
    raw = _core.reduce_masks(
        x,
        np.ascontiguousarray(packed.words),
        np.ascontiguousarray(packed.bounds),
        k,
        unassigned=unassigned,
        skip_nonfinite=skip,
        threads=nthreads,
    )
    return SegmentStats._from_kernel(raw, height, width, unassigned)


_FLOAT_COLUMNS = ("area", "sum", "mean", "pos_sum", "neg_sum", "abs_sum", "sq_sum", "share", "density", "min", "max")


def table_schema(
    *, image_id: pl.DataType = pl.Int64, targets: bool = False, metadata: Mapping[str, pl.DataType] | None = None
) -> pl.Schema:
    """The schema of a per-image SAT.

    Columns: ``image_id``, ``target`` (when targets are given), metadata
    columns, ``segment`` (Categorical), ``pixels``, ``area``, ``sum``,
    ``mean``, ``pos_sum``, ``neg_sum``, ``abs_sum``, ``sq_sum``, ``share``,
    ``density``, ``min``, ``max``, ``rank``.
    """
    cols: list[tuple[str, pl.DataType]] = [("image_id", image_id)]
    if targets:
        cols.append(("target", pl.Int64))
    cols.extend((metadata or {}).items())
    cols.append(("segment", pl.Categorical()))
    cols.append(("pixels", pl.Int64))
    cols.extend((c, pl.Float64) for c in _FLOAT_COLUMNS)
    cols.append(("rank", pl.Int64))
    return pl.Schema(cols)


def _competition_rank(group: np.ndarray, value: np.ndarray) -> np.ndarray:
    """1-based rank of value within each group, highest first, ties share the smallest rank."""
    n = group.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((-value, group))
    g, val = group[order], value[order]
    idx = np.arange(n)
    new_group = np.r_[True, g[1:] != g[:-1]]
    new_value = new_group | np.r_[True, val[1:] != val[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, idx, 0))
    value_start = np.maximum.accumulate(np.where(new_value, idx, 0))
    rank = np.empty(n, np.int64)
    rank[order] = value_start - group_start + 1
    return rank


def _image_id_series(image_ids: Any, b: int) -> pl.Series:
    if image_ids is None:
        return pl.Series("image_id", np.arange(b, dtype=np.int64), dtype=pl.Int64)
    ids = list(image_ids) if not isinstance(image_ids, np.ndarray) else image_ids.tolist()
    if len(ids) != b:
        raise ValueError(f"image_ids has {len(ids)} entries but the batch has {b} images")
    if all(isinstance(i, str) for i in ids):
        s = pl.Series("image_id", ids, dtype=pl.String)
    elif all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        s = pl.Series("image_id", ids, dtype=pl.Int64)
    else:
        raise TypeError("image_ids must be all integers or all strings")
    if s.n_unique() != b:
        dup = s.filter(s.is_duplicated()).first()
        raise ValueError(f"image_ids must be unique; {dup!r} appears more than once")
    return s


def stats_table(
    stats: SegmentStats,
    *,
    names: Sequence[str],
    image_ids: Any = None,
    targets: Any = None,
    metadata: Mapping[str, Any] | None = None,
    unassigned: str | None = None,
) -> pl.DataFrame:
    """Turn :class:`SegmentStats` into a per-image SAT (see :func:`segment_table`)."""
    b, k = stats.shape
    names_list = v.segment_names(names, k)
    if unassigned is not None:
        if not isinstance(unassigned, str):
            raise TypeError(f"unassigned must be a segment name (str) or None, got {type(unassigned).__name__}")
        if stats.unassigned is None:
            raise ValueError("these statistics were computed without unassigned pixels")
        if unassigned in names_list:
            raise ValueError(f"unassigned name {unassigned!r} is already a segment name")
        names_list = names_list + [unassigned]
    ids = _image_id_series(image_ids, b)
    target_arr = v.target_array(targets, b)
    meta: dict[str, pl.Series] = {}
    reserved = set(table_schema(targets=True).names())
    for name, values in (metadata or {}).items():
        if name in reserved:
            raise ValueError(f"metadata column {name!r} clashes with a SAT column")
        arr = v.per_image(values, b, f"metadata[{name!r}]")
        meta[name] = pl.Series(name, arr.tolist() if arr.dtype == object else arr)

    def segment_matrix(key: str) -> np.ndarray:
        m = stats[key]
        if unassigned is None:
            return m
        return np.concatenate([m, np.asarray(stats.unassigned[key])[:, None]], axis=1)  # type: ignore[index]

    count = segment_matrix("count")
    bi, ki = np.nonzero(count > 0)
    pick = {key: segment_matrix(key)[bi, ki] for key in SEGMENT_KEYS}
    pixels = pick["count"]
    hw = stats["pixels"][bi].astype(np.float64)
    total_abs = stats["total_abs"][bi]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = pick["sum"] / pixels
        area = pixels / hw
        share = np.where(total_abs > 0, pick["abs_sum"] / total_abs, np.nan)
        density = share / area

    columns = [ids.gather(bi)]
    if target_arr is not None:
        columns.append(pl.Series("target", target_arr[bi], dtype=pl.Int64))
    columns.extend(s.gather(bi) for s in meta.values())
    columns.append(pl.Series("segment", names_list, dtype=pl.Categorical).gather(ki))
    columns.append(pl.Series("pixels", pixels, dtype=pl.Int64))
    floats = {
        "area": area,
        "sum": pick["sum"],
        "mean": mean,
        "pos_sum": pick["pos_sum"],
        "neg_sum": pick["neg_sum"],
        "abs_sum": pick["abs_sum"],
        "sq_sum": pick["sq_sum"],
        "share": share,
        "density": density,
        "min": pick["min"],
        "max": pick["max"],
    }
    for name in _FLOAT_COLUMNS:
        columns.append(pl.Series(name, floats[name], dtype=pl.Float64, nan_to_null=name in ("share", "density")))
    columns.append(pl.Series("rank", _competition_rank(bi, mean), dtype=pl.Int64))
    return pl.DataFrame(columns)


def segment_table(
    saliency: Any,
    labels: Any = None,
    *,
    masks: Any = None,
    names: Sequence[str] | None = None,
    image_ids: Any = None,
    targets: Any = None,
    ignore_index: int | None = None,
    threads: int | None = None,
    nonfinite: Literal["raise", "skip"] = "raise",
    unassigned: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    segments: Sequence[Any] | None = None,
) -> pl.DataFrame:
    """Per-image Segment Attribution Table: one row per (image, present segment).

    Parameters
    ----------
    saliency
        (B, H, W) saliency maps (see :func:`segment_stats`).
    labels, masks
        The segments: a dense label map (B, H, W) with values in
        ``[0, len(names))``, or overlapping boolean masks (B, K, H, W) or
        :class:`PackedMasks`. Exactly one is given.
    names
        Segment names, one per label value or mask, unique.
    image_ids
        One id per image (ints or strings, unique); default ``0 .. B-1``.
    targets
        Class whose output each saliency map explains (int per image, or one
        int for all); adds the ``target`` column.
    ignore_index
        Label value of pixels in no segment.
    threads, nonfinite
        As in :func:`segment_stats`.
    unassigned
        When given, pixels in no segment get a row of their own under this
        name (ranked like any other row).
    metadata
        Extra per-image columns (true label, predicted class, split, model
        name, ...): a mapping from column name to one value per image, or a
        scalar for all images. They repeat on each of the image's rows.
    segments
        Instead of ``labels``/``masks`` and ``names``: one
        :class:`sat_fast.segments.Segments` per image (label map, packed
        masks or COCO RLE, each at its image's size and with its own names).
        ``saliency`` is then (B, H, W) or a sequence of (H, W) maps matching
        each image's size; ``segment`` holds the merged vocabulary and
        ``image_ids`` default to the Segments' ids. RLE is reduced from the
        runs without decoding.

    Returns
    -------
    polars.DataFrame
        Columns (see :func:`table_schema`): ``image_id``, ``target``,
        metadata, ``segment`` (Categorical), ``pixels``, ``area`` (pixels /
        (H*W)), ``sum``, ``mean`` (the SAT value), ``pos_sum``, ``neg_sum``,
        ``abs_sum``, ``sq_sum``, ``share`` (abs_sum / the image's total
        absolute saliency; null when that is 0), ``density`` (share / area),
        ``min``, ``max``, ``rank`` (competition rank of ``mean`` within the
        image, highest first: 1, 1, 3). Segments with no pixels get no row.

    Examples
    --------
    >>> import numpy as np, sat_fast
    >>> sal = np.array([[[1.0, 1.0], [-2.0, 0.0]]], np.float32)
    >>> lab = np.array([[[0, 0], [1, 1]]], np.uint8)
    >>> t = sat_fast.segment_table(sal, lab, names=["eye", "background"], targets=[3])
    >>> t.select("image_id", "target", "segment", "mean", "share", "rank").rows()
    [(0, 3, 'eye', 1.0, 0.5, 1), (0, 3, 'background', -1.0, 0.5, 2)]
    """
    if segments is not None:  # per-image Segments (issue 4): see sat_fast/segments.py
        if labels is not None or masks is not None or names is not None or ignore_index is not None:
            raise ValueError("segments= replaces labels, masks, names and ignore_index; pass it alone")
        from sat_fast.segments import segment_table_from_segments

        return segment_table_from_segments(
            saliency, segments, image_ids=image_ids, targets=targets, threads=threads, nonfinite=nonfinite,
            unassigned=unassigned, metadata=metadata,
        )
    if names is None:
        raise TypeError("segment_table needs names= (or segments=)")
    names_list = v.segment_names(names, None)
    if labels is not None and masks is None:
        try:
            stats = segment_stats(
                saliency,
                labels,
                num_segments=len(names_list) if names_list else 0,
                ignore_index=ignore_index,
                threads=threads,
                nonfinite=nonfinite,
                unassigned=unassigned is not None,
            )
        except ValueError as exc:
            if "is outside [0," in str(exc):
                raise ValueError(f"{exc}: names has {len(names_list)} entries, so labels must be below that") from None
            raise
    else:
        stats = segment_stats(
            saliency, labels, masks=masks, threads=threads, nonfinite=nonfinite, unassigned=unassigned is not None
        )
    return stats_table(stats, names=names_list, image_ids=image_ids, targets=targets, metadata=metadata, unassigned=unassigned)
