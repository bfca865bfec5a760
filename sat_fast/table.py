"""Per-image Segment Attribution Tables (Polars) from segment statistics.

One row per (image, present segment): the SAT value (``mean``), the
segment's share of the image's total absolute attribution, its density and
its rank within the image. :func:`stats_table` builds the table from
:class:`sat_fast.SegmentStats`; :func:`segment_table` runs the reduction
first.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from sat_fast import _validate as v
from sat_fast._columns import class_name_list, class_name_series, competition_rank, image_id_series
from sat_fast._deprecation import renamed_keywords
from sat_fast._errors import KernelInputError, with_suffix
from sat_fast._typing import Nonfinite
from sat_fast.segments import Segments, merge_vocabularies
from sat_fast.stats import SEGMENT_KEYS, SegmentStats, reduce_segments, saliency_list, segment_stats

__all__ = ["new_run_id", "segment_table", "stats_table", "table_schema"]

_FLOAT_COLUMNS = ("area", "sum", "mean", "pos_sum", "neg_sum", "abs_sum", "sq_sum", "share", "density", "min", "max")

#: Padded (images x segments) entries reduced at once for per-image Segments:
#: bounds memory when a few images have many more segments than the rest.
_CHUNK_ENTRIES = 1 << 20


def new_run_id(settings: object = None) -> str:
    """A short id for the ``run`` column: 8 hex characters of a hash of ``settings``, the time and the process.

    Tables of two runs over the same images stay apart (``aggregate(..., by=[..., "run"])``).

    Examples
    --------
    >>> import sat_fast.table
    >>> len(sat_fast.table.new_run_id({"steps": 32}))
    8
    """
    text = f"{settings!r}|{time.time_ns()}|{os.getpid()}|{os.urandom(4).hex()}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def table_schema(
    *,
    image_id: pl.DataType | type[pl.DataType] = pl.Int64,
    targets: bool = False,
    metadata: Mapping[str, pl.DataType | type[pl.DataType]] | None = None,
    class_names: bool = False,
) -> pl.Schema:
    """The schema of a per-image SAT.

    Columns: ``image_id``, ``target`` (when targets are given), ``class``
    (with ``class_names`` and targets: the name of ``target``), metadata
    columns (with ``class_names``, a ``label`` or ``predicted`` column is
    followed by ``label_class`` / ``predicted_class``), ``segment``
    (Categorical), ``pixels``, ``area``, ``sum``, ``mean``, ``pos_sum``,
    ``neg_sum``, ``abs_sum``, ``sq_sum``, ``share``, ``density``, ``min``,
    ``max``, ``rank``. Class-name columns are Categorical.

    Examples
    --------
    >>> import sat_fast
    >>> sat_fast.table_schema(targets=True).names()[:3]
    ['image_id', 'target', 'segment']
    """
    cols: list[tuple[str, pl.DataType | type[pl.DataType]]] = [("image_id", image_id)]
    if targets:
        cols.append(("target", pl.Int64))
        if class_names:
            cols.append(("class", pl.Categorical()))
    for name, dtype in (metadata or {}).items():
        cols.append((name, dtype))
        if class_names and name in ("label", "predicted"):
            cols.append((f"{name}_class", pl.Categorical()))
    cols.append(("segment", pl.Categorical()))
    cols.append(("pixels", pl.Int64))
    cols.extend((c, pl.Float64) for c in _FLOAT_COLUMNS)
    cols.append(("rank", pl.Int64))
    return pl.Schema(cols)


def _target_names(target_arr: np.ndarray | None, classes: list[str] | None) -> pl.Series | None:
    if target_arr is None or classes is None:
        return None
    return class_name_series("class", target_arr, classes, "target")


def _metadata_series(metadata: Mapping[str, Any] | None, b: int, classes: list[str] | None) -> dict[str, pl.Series]:
    meta: dict[str, pl.Series] = {}
    reserved = set(table_schema(targets=True, class_names=True).names())
    for name, values in (metadata or {}).items():
        if name in reserved or (classes is not None and name in ("label_class", "predicted_class")):
            raise ValueError(f"metadata column {name!r} clashes with a SAT column")
        arr = v.per_image(values, b, f"metadata[{name!r}]")
        meta[name] = pl.Series(name, arr.tolist() if arr.dtype == object else arr)
        if classes is not None and name in ("label", "predicted"):
            meta[f"{name}_class"] = class_name_series(f"{name}_class", meta[name], classes, f"metadata[{name!r}]")
    return meta


def _build(
    stats: SegmentStats,
    vocabulary: pl.Series,
    codes: np.ndarray,
    ids: pl.Series,
    target_arr: np.ndarray | None,
    target_names: pl.Series | None,
    meta: Mapping[str, pl.Series],
    unassigned: bool,
) -> pl.DataFrame:
    """The table of ``stats``; column ``j`` of image ``i`` is segment ``vocabulary[codes[i, j]]``.

    ``codes`` has one more column than ``stats`` when the unassigned pixels
    get a row of their own.
    """

    def segment_matrix(key: str) -> np.ndarray:
        m = stats[key]
        if not unassigned:
            return m
        extra = stats.unassigned
        assert extra is not None  # checked by the callers
        return np.concatenate([m, np.asarray(extra[key])[:, None]], axis=1)

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
        if target_names is not None:
            columns.append(target_names.gather(bi))
    columns.extend(s.gather(bi) for s in meta.values())
    columns.append(vocabulary.gather(codes[bi, ki]))
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
    columns.append(pl.Series("rank", competition_rank(bi, mean), dtype=pl.Int64))
    return pl.DataFrame(columns)


def _check_unassigned(unassigned: Any, names: Sequence[str]) -> None:
    if unassigned is None:
        return
    if not isinstance(unassigned, str):
        raise TypeError(f"unassigned must be a segment name (str) or None, got {type(unassigned).__name__}")
    if unassigned in names:
        raise ValueError(f"unassigned name {unassigned!r} is already a segment name")


def stats_table(
    stats: SegmentStats,
    *,
    names: Sequence[str],
    image_ids: Any = None,
    targets: Any = None,
    metadata: Mapping[str, Any] | None = None,
    unassigned: str | None = None,
    class_names: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Turn :class:`SegmentStats` into a per-image SAT (see :func:`segment_table`).

    Examples
    --------
    >>> import numpy as np, sat_fast
    >>> st = sat_fast.segment_stats(np.ones((1, 2, 2), np.float32), np.array([[[0, 0], [1, 1]]], np.uint8))
    >>> sat_fast.stats_table(st, names=["sky", "dog"])["segment"].to_list()
    ['sky', 'dog']
    """
    b, k = stats.shape
    names_list = v.segment_names(names, k)
    _check_unassigned(unassigned, names_list)
    if unassigned is not None:
        if stats.unassigned is None:
            raise ValueError("these statistics were computed without unassigned pixels")
        names_list = names_list + [unassigned]
    codes = np.broadcast_to(np.arange(len(names_list), dtype=np.int64), (b, len(names_list)))
    vocabulary = pl.Series("segment", names_list, dtype=pl.Categorical)
    classes = class_name_list(class_names)
    target_arr = v.target_array(targets, b)
    return _build(
        stats,
        vocabulary,
        codes,
        image_id_series(image_ids, b),
        target_arr,
        _target_names(target_arr, classes),
        _metadata_series(metadata, b, classes),
        unassigned is not None,
    )


def _chunks(segs: Sequence[Segments]) -> Iterator[tuple[int, int]]:
    """[start, end) ranges of images whose padded statistics stay under _CHUNK_ENTRIES."""
    start, widest = 0, 1
    for i, s in enumerate(segs):
        k = max(1, len(s))
        if i > start and (i + 1 - start) * max(widest, k) > _CHUNK_ENTRIES:
            yield start, i
            start, widest = i, k
        else:
            widest = max(widest, k)
    yield start, len(segs)


def _segments_table(
    saliency: Any,
    segments: Sequence[Segments],
    *,
    image_ids: Any,
    targets: Any,
    threads: int | None,
    nonfinite: Nonfinite,
    unassigned: str | None,
    metadata: Mapping[str, Any] | None,
    class_names: Sequence[str] | None,
    coverage: Any = None,
) -> pl.DataFrame:
    """The SAT of per-image Segments, reduced in chunks of bounded padded size.

    One image with thousands of segments does not make every image pay for
    them: each chunk pads only to its own widest image.
    """
    segs = list(segments)
    maps = saliency_list(saliency, segs)
    covs = None if coverage is None else v.coverage_list(coverage, [s.shape for s in segs])
    v.nonfinite_mode(nonfinite)
    nthreads = v.num_threads(threads)
    b = len(segs)
    vocab = merge_vocabularies(segs)
    _check_unassigned(unassigned, vocab)
    if unassigned is not None:
        vocab.append(unassigned)
    if image_ids is None:
        ids = [s.image_id for s in segs]
        image_ids = ids if ids and all(i is not None for i in ids) else list(range(b))
    id_series = image_id_series(image_ids, b)  # all ids checked (kind, count, uniqueness) before any chunk
    target_arr = v.target_array(targets, b)
    classes = class_name_list(class_names)
    target_names = _target_names(target_arr, classes)
    meta = _metadata_series(metadata, b, classes)
    index = {n: i for i, n in enumerate(vocab)}
    vocabulary = pl.Series("segment", vocab, dtype=pl.Categorical)
    frames = []
    for i0, i1 in _chunks(segs):
        part = segs[i0:i1]
        stats = reduce_segments(
            maps[i0:i1], part, nthreads, nonfinite, unassigned is not None, None if covs is None else covs[i0:i1]
        )
        kmax = stats.shape[1]
        codes = np.zeros((i1 - i0, kmax + (unassigned is not None)), np.int64)
        for i, s in enumerate(part):
            codes[i, : len(s)] = [index[n] for n in s.names]
        if unassigned is not None:
            codes[:, kmax] = index[unassigned]
        frames.append(
            _build(
                stats,
                vocabulary,
                codes,
                id_series.slice(i0, i1 - i0),
                None if target_arr is None else target_arr[i0:i1],
                None if target_names is None else target_names.slice(i0, i1 - i0),
                {name: s.slice(i0, i1 - i0) for name, s in meta.items()},
                unassigned is not None,
            )
        )
    return frames[0] if len(frames) == 1 else pl.concat(frames)


def segment_table(
    saliency: Any,
    label_map: Any = None,
    *,
    masks: Any = None,
    segments: Sequence[Segments] | None = None,
    names: Sequence[str] | None = None,
    image_ids: Any = None,
    targets: Any = None,
    ignore_index: int | None = None,
    threads: int | None = None,
    nonfinite: Nonfinite = "raise",
    unassigned: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    coverage: Any = None,
    **deprecated: Any,
) -> pl.DataFrame:
    """Per-image Segment Attribution Table: one row per (image, present segment).

    Parameters
    ----------
    saliency
        (B, H, W) saliency maps (see :func:`segment_stats`).
    label_map, masks
        The segments: a dense label map (B, H, W) with values in
        ``[0, len(names))``, or overlapping boolean masks (B, K, H, W) or
        :class:`PackedMasks`.
    segments
        Instead of ``label_map``/``masks`` and ``names``: one
        :class:`sat_fast.Segments` per image (label map, packed masks or
        COCO RLE, each at its image's size and with its own names).
        ``saliency`` is then (B, H, W) or a sequence of (H, W) maps matching
        each image's size; ``segment`` holds the merged vocabulary and
        ``image_ids`` default to the Segments' ids. RLE is reduced from the
        runs without decoding. Exactly one of ``label_map``, ``masks`` and
        ``segments`` is given.
    names
        Segment names, one per label value or mask, unique.
    image_ids
        One id per image (ints or strings, unique); default ``0 .. B-1``.
    targets
        The class each saliency map explains, one per image (an int for
        all); adds the ``target`` column.
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
    class_names
        The class names in index order (e.g. the model's logit order): adds
        ``class`` (the name of ``target``) after ``target``, and
        ``label_class`` / ``predicted_class`` after integer ``label`` /
        ``predicted`` metadata columns (all Categorical).
    coverage
        Boolean (B, H, W) (or, with ``segments=``, a sequence of (H, W)):
        True where the saliency is defined, e.g. the ``coverage`` of
        :meth:`sat_fast.transforms.Transform.saliency_to_source`. Uncovered
        pixels count in no segment and in no total: ``pixels`` and ``sum``
        are over covered pixels, ``area`` is pixels / covered pixels and
        ``share`` is relative to the covered total.
    **deprecated
        ``labels=`` (now ``label_map=``) still works for one release, with a
        ``DeprecationWarning``.

    Returns
    -------
    polars.DataFrame
        Columns (see :func:`table_schema`): ``image_id``, ``target``,
        ``class``, metadata, ``segment`` (Categorical), ``pixels``, ``area`` (pixels /
        (H*W), or / covered pixels with ``coverage``), ``sum``, ``mean`` (the SAT value), ``pos_sum``, ``neg_sum``,
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
    if deprecated:
        label_map = renamed_keywords(
            "segment_table", deprecated, {"labels": "label_map"}, {"label_map": label_map}
        ).get("label_map", label_map)
    if segments is not None:
        if label_map is not None or masks is not None or names is not None or ignore_index is not None:
            raise ValueError("segments= replaces label_map, masks, names and ignore_index; pass it alone")
        return _segments_table(
            saliency,
            segments,
            image_ids=image_ids,
            targets=targets,
            threads=threads,
            nonfinite=nonfinite,
            unassigned=unassigned,
            metadata=metadata,
            class_names=class_names,
            coverage=coverage,
        )
    if names is None:
        raise TypeError("segment_table needs names= (or segments=)")
    names_list = v.segment_names(names, None)
    _check_unassigned(unassigned, names_list)
    if label_map is not None and masks is None:
        try:
            stats = segment_stats(
                saliency,
                label_map,
                num_segments=len(names_list) if names_list else 0,
                ignore_index=ignore_index,
                threads=threads,
                nonfinite=nonfinite,
                include_unassigned=unassigned is not None,
                coverage=coverage,
            )
        except ValueError as exc:
            if isinstance(exc, KernelInputError) and exc.kind == "label":
                suffix = f": names has {len(names_list)} entries, so labels must be below that"
                raise with_suffix(exc, suffix) from None
            raise
    else:
        stats = segment_stats(
            saliency,
            label_map,
            masks=masks,
            threads=threads,
            nonfinite=nonfinite,
            include_unassigned=unassigned is not None,
            coverage=coverage,
        )
    return stats_table(
        stats,
        names=names_list,
        image_ids=image_ids,
        targets=targets,
        metadata=metadata,
        unassigned=unassigned,
        class_names=class_names,
    )
