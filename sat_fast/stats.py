"""Per-(image, segment) saliency statistics: the only caller of the reduction kernels.

The reductions run in the compiled ``sat_fast._core`` kernel: one pass over
the pixels, float64 accumulation, threads with the GIL released, and results
that are bitwise identical for any thread count or batch split.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from sat_fast import _core
from sat_fast import _validate as v
from sat_fast._deprecation import renamed_keywords, warn_deprecated
from sat_fast._errors import KernelInputError, relocated
from sat_fast._typing import Nonfinite
from sat_fast.packed import PackedMasks, pack_masks
from sat_fast.segments import Segments

__all__ = [
    "IMAGE_KEYS",
    "SEGMENT_KEYS",
    "SegmentStats",
    "reduce_segments",
    "saliency_list",
    "segment_stats",
    "segments_stats",
]

#: Keys of a :class:`SegmentStats` with shape (B, K).
SEGMENT_KEYS = ("count", "sum", "pos_sum", "neg_sum", "abs_sum", "sq_sum", "min", "max")
#: Keys of a :class:`SegmentStats` with shape (B,).
IMAGE_KEYS = ("total_sum", "total_abs", "pixels", "nonfinite")


class SegmentStats(Mapping[str, np.ndarray]):
    """Raw per-(image, segment) statistics, as returned by :func:`segment_stats`.

    A read-only mapping of numpy arrays: ``count``, ``sum``, ``pos_sum``,
    ``neg_sum``, ``abs_sum``, ``sq_sum``, ``min``, ``max`` of shape (B, K) and
    ``total_sum``, ``total_abs``, ``pixels``, ``nonfinite`` of shape (B,).
    For a segment with no pixels, sums and count are 0 and min/max are NaN.
    ``pixels`` is H*W, or with ``coverage=`` the number of covered pixels;
    ``nonfinite`` counts pixels skipped with ``nonfinite="skip"``; the totals
    cover every finite (covered) pixel of the image.

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
    def from_kernel(
        cls,
        raw: Mapping[str, np.ndarray],
        height: int,
        width: int,
        unassigned: bool,
        pixels: np.ndarray | None = None,
    ) -> SegmentStats:
        """Statistics from a kernel's raw output (positive and negative sums, an extra unassigned slot).

        ``pixels`` (B,) replaces ``height * width`` as each image's pixel count (covered pixels).
        """
        full = _derived(raw)
        b = raw["count"].shape[0]
        # Views (each row contiguous), not copies: fresh copies of eight (B, K) arrays are page-faulted memory,
        # about 1 ms per call at B = 512, K = 32 on the development VM (11% of a packed-masks call, issue 14).
        data: dict[str, np.ndarray] = {k: a[:, :-1] for k, a in full.items()}
        data["total_sum"] = raw["total_pos"] + raw["total_neg"]
        data["total_abs"] = raw["total_pos"] - raw["total_neg"]
        data["pixels"] = np.full(b, height * width, dtype=np.int64) if pixels is None else np.asarray(pixels, np.int64)
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
        b, k = self._data["count"].shape
        return (int(b), int(k))

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


def saliency_list(saliency: Any, segs: Sequence[Segments]) -> list[np.ndarray]:
    """One contiguous float map per image, checked against its Segments' size."""
    if isinstance(saliency, (list, tuple)):
        maps = [v.as_numpy(s, "saliency") for s in saliency]
    else:
        arr = v.as_numpy(saliency, "saliency")
        if arr.ndim != 3:
            raise ValueError(f"saliency must be (B, H, W) or a sequence of (H, W) maps, got {v.shape_str(arr.shape)}")
        maps = list(arr)
    if len(maps) != len(segs):
        raise ValueError(f"there are {len(maps)} saliency maps but {len(segs)} Segments")
    out = []
    dtype = np.float64 if any(m.dtype == np.float64 for m in maps) else np.float32
    for m, s in zip(maps, segs, strict=True):
        if not isinstance(s, Segments):
            raise TypeError(f"segments must be Segments values, got {type(s).__name__}")
        if m.ndim != 2 or m.shape != s.shape:
            raise ValueError(
                f"saliency of {s.location} has shape {v.shape_str(m.shape)} but its segments have shape "
                f"{v.shape_str(s.shape)}; resize one to the other first (see sat_fast.transforms)"
            )
        if m.dtype.kind != "f" and m.dtype.name != "bfloat16":
            raise TypeError(f"saliency must be a floating-point array, got dtype {m.dtype}")
        out.append(np.ascontiguousarray(m, dtype=dtype))
    return out


def _derived(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """SegmentStats keys from a kernel's raw positive and negative sums (every kernel returns those)."""
    pos, neg = raw["pos_sum"], raw["neg_sum"]
    return {
        "count": raw["count"],
        "sum": pos + neg,
        "pos_sum": pos,
        "neg_sum": neg,
        "abs_sum": pos - neg,
        "sq_sum": raw["sq_sum"],
        "min": raw["min"],
        "max": raw["max"],
    }


def reduce_segments(
    maps: list[np.ndarray],
    segs: Sequence[Segments],
    threads: int | None,
    nonfinite: Nonfinite,
    unassigned: bool,
    coverage: Sequence[np.ndarray] | None = None,
) -> SegmentStats:
    """Padded (B, Kmax) statistics of per-image Segments.

    Label maps and packed masks go through the dense path image by image; all
    RLE images share one kernel call. With ``coverage`` (one checked (H, W)
    boolean mask per image) every image takes the dense path (RLE is decoded
    and packed) and uncovered pixels leave every statistic.
    """
    b = len(segs)
    kmax = max([len(s) for s in segs] + [1])
    data: dict[str, np.ndarray] = {
        key: np.zeros((b, kmax), np.int64 if key == "count" else np.float64) for key in SEGMENT_KEYS
    }
    extra: dict[str, np.ndarray] = {
        key: np.zeros(b, np.int64 if key == "count" else np.float64) for key in SEGMENT_KEYS
    }
    for d in (data, extra):
        d["min"][:] = np.nan
        d["max"][:] = np.nan
    data.update({key: np.zeros(b, np.int64 if key in ("pixels", "nonfinite") else np.float64) for key in IMAGE_KEYS})

    def put(i: int, k: int, seg_rows: Mapping[str, np.ndarray], extra_row: Mapping[str, Any] | None) -> None:
        for key in SEGMENT_KEYS:
            data[key][i, :k] = seg_rows[key]
            if extra_row is not None:
                extra[key][i] = extra_row[key]

    rle = [i for i, s in enumerate(segs) if s.kind == "rle" and coverage is None]
    for i, s in enumerate(segs):
        if s.kind == "rle" and coverage is None:
            continue
        k = len(s)
        x = maps[i][None]
        cov = None if coverage is None else coverage[i][None]
        try:
            if s.label_map is not None:
                st = segment_stats(
                    x,
                    s.label_map[None],
                    num_segments=max(k, 1),
                    ignore_index=k,
                    threads=threads,
                    nonfinite=nonfinite,
                    include_unassigned=unassigned,
                    coverage=cov,
                )
            else:  # kind "masks", or "rle" with coverage (decoded)
                if not k:
                    words = np.zeros((1, -(-s.height * s.width // 64)), np.uint64)
                elif s.words is not None:
                    words = s.words
                else:
                    words = pack_masks(s.masks()[None], threads=threads).words[0]
                st = segment_stats(
                    x,
                    masks=PackedMasks(np.ascontiguousarray(words)[None], s.height, s.width),
                    threads=threads,
                    nonfinite=nonfinite,
                    include_unassigned=unassigned,
                    coverage=cov,
                )
        except ValueError as exc:
            raise relocated(exc, s.location, image=i) from None
        extra_stats = st.unassigned
        put(
            i,
            k,
            {key: st[key][0, :k] for key in SEGMENT_KEYS},
            {key: extra_stats[key][0] for key in SEGMENT_KEYS} if extra_stats is not None else None,
        )
        for key in IMAGE_KEYS:
            data[key][i] = st[key][0]
    if rle:
        parts = [segs[i].rle_arrays() for i in rle]
        seg_counts = np.array([len(segs[i]) for i in rle], np.int64)
        n_inst = np.array([len(offsets) - 1 for _, offsets, _ in parts], np.int64)
        n_counts = np.array([len(counts) for counts, _, _ in parts], np.int64)
        zero = np.zeros(1, np.int64)
        inst_base = np.concatenate([zero, np.cumsum(n_inst)])
        count_base = np.concatenate([zero, np.cumsum(n_counts)])
        counts = np.concatenate([c for c, _, _ in parts])
        instance_offsets = np.concatenate(
            [zero] + [offsets[1:] + count_base[j] for j, (_, offsets, _) in enumerate(parts)]
        ).astype(np.int64)
        segment_instances = np.concatenate(
            [zero] + [members[1:] + inst_base[j] for j, (_, _, members) in enumerate(parts)]
        ).astype(np.int64)
        image_segments = np.concatenate([zero, np.cumsum(seg_counts)]).astype(np.int64)
        try:
            out = _core.reduce_rle(
                [maps[i] for i in rle],
                image_segments,
                segment_instances,
                instance_offsets,
                np.ascontiguousarray(counts, np.uint32),
                unassigned=unassigned,
                skip_nonfinite=nonfinite == "skip",
                threads=threads,
            )
        except KernelInputError as exc:
            # The kernel numbers images within this call; name them as the user does.
            if exc.image is None or not 0 <= exc.image < len(rle):
                raise
            raise relocated(exc, segs[rle[exc.image]].location, image=rle[exc.image], kernel_image=exc.image) from None
        rows = _derived({key: out[key][0] for key in ("count", "pos_sum", "neg_sum", "sq_sum", "min", "max")})
        total_segments = int(image_segments[-1])
        for j, i in enumerate(rle):
            a, z = int(image_segments[j]), int(image_segments[j + 1])
            put(
                i,
                z - a,
                {key: r[a:z] for key, r in rows.items()},
                {key: r[total_segments + j] for key, r in rows.items()} if unassigned else None,
            )
            data["total_sum"][i] = out["total_pos"][j] + out["total_neg"][j]
            data["total_abs"][i] = out["total_pos"][j] - out["total_neg"][j]
            data["nonfinite"][i] = out["nonfinite"][j]
            data["pixels"][i] = segs[i].height * segs[i].width
    return SegmentStats(data, extra if unassigned else None)


def segment_stats(
    saliency: Any,
    label_map: Any = None,
    *,
    masks: Any = None,
    segments: Sequence[Segments] | None = None,
    num_segments: int | None = None,
    ignore_index: int | None = None,
    threads: int | None = None,
    nonfinite: Nonfinite = "raise",
    include_unassigned: bool = False,
    coverage: Any = None,
    **deprecated: Any,
) -> SegmentStats:
    """Per-(image, segment) saliency statistics in one pass over the pixels.

    Parameters
    ----------
    saliency
        (B, H, W) saliency maps, numpy or JAX; float32 or float64 (float16 and
        bfloat16 are widened to float32). Accumulation is in float64. With
        ``segments=``, also a sequence of (H, W) maps of differing sizes.
    label_map
        Dense segment label map (B, H, W) of uint8, uint16 or int32 (other
        integer dtypes are converted when their values fit).
    masks
        Overlapping boolean masks (B, K, H, W), or :class:`PackedMasks`.
    segments
        One :class:`sat_fast.Segments` per image (label map, packed masks or
        COCO RLE, each at its image's size with its own names). The result
        is (B, Kmax): column ``j`` of image ``i`` is ``segments[i].names[j]``,
        later columns are empty. RLE is reduced from the runs without
        decoding. Exactly one of ``label_map``, ``masks`` and ``segments``
        is given.
    num_segments
        K for label maps; inferred from the largest label when omitted (a
        pass over the labels that passing it avoids). Must be in [1, 2**24].
    ignore_index
        Label value that belongs to no segment (label maps only).
    threads
        Worker threads; default: the CPUs this process may run on.
    nonfinite
        ``"raise"`` (default) raises on NaN or Inf saliency and names the
        pixel; ``"skip"`` leaves such pixels out of every statistic and
        counts them in ``nonfinite``.
    include_unassigned
        Also compute statistics of pixels in no segment (``ignore_index``
        pixels, or pixels no mask covers), in :attr:`SegmentStats.unassigned`.
    coverage
        Boolean (B, H, W), or with ``segments=`` also a sequence of (H, W):
        True where the saliency is defined, e.g. the ``coverage`` of
        :meth:`sat_fast.transforms.Transform.saliency_to_source` (False where a
        crop cut the image away). Uncovered pixels count in no segment, in no
        total and not as unassigned, their saliency is never read (not even
        checked for NaN), and ``pixels`` is the number of covered pixels. Needs
        one spare segment id (K below 2**24).
    **deprecated
        ``labels=`` (now ``label_map=``) and ``unassigned=`` (now
        ``include_unassigned=``) still work for one release, with a
        ``DeprecationWarning``.

    Returns
    -------
    SegmentStats

    Raises
    ------
    KernelInputError
        (a ``ValueError``) labels outside [0, K) that are not ``ignore_index``
        or non-finite saliency, with the image, pixel and value as attributes.
    ValueError
        Shape mismatches, K out of range.
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
    if deprecated:
        renamed = renamed_keywords(
            "segment_stats",
            deprecated,
            {"labels": "label_map", "unassigned": "include_unassigned"},
            {"label_map": label_map, "include_unassigned": include_unassigned or None},
        )
        label_map = renamed.get("label_map", label_map)
        include_unassigned = bool(renamed.get("include_unassigned", include_unassigned))
    given = [x is not None for x in (label_map, masks, segments)]
    if sum(given) != 1:
        raise ValueError("pass exactly one of label_map, masks and segments")
    skip = v.nonfinite_mode(nonfinite)
    nthreads = v.num_threads(threads)
    if segments is not None:
        if ignore_index is not None or num_segments is not None:
            raise ValueError("segments= carries its own names and sizes; num_segments and ignore_index do not apply")
        segs = list(segments)
        maps = saliency_list(saliency, segs)
        covs = None if coverage is None else v.coverage_list(coverage, [s.shape for s in segs])
        return reduce_segments(maps, segs, nthreads, nonfinite, bool(include_unassigned), covs)
    x = v.saliency_array(saliency)
    _, height, width = x.shape
    cov = None if coverage is None else v.coverage_array(coverage, x.shape)
    if cov is not None:
        # Uncovered saliency becomes 0, which adds exactly nothing to any sum; the
        # pixels themselves go to a spare segment slot that is dropped below.
        x = np.where(cov, x, x.dtype.type(0))
    if label_map is not None:
        ignore = v.ignore_value(ignore_index)
        lab = v.label_array(label_map, x.shape, ignore)
        k = v.infer_num_segments(lab, ignore) if num_segments is None else v.num_segments_value(num_segments)
        if cov is None:
            raw = _core.reduce_labels(x, lab, k, ignore_index=ignore, skip_nonfinite=skip, threads=nthreads)
            return SegmentStats.from_kernel(raw, height, width, include_unassigned)
        _spare_slot(k)
        valid = (lab >= 0) & (lab < k)
        if ignore is not None:
            valid |= lab == ignore
        if not valid.all():  # the kernel names the first bad label, as without coverage
            _core.reduce_labels(x, lab, k, ignore_index=ignore, skip_nonfinite=skip, threads=nthreads)
        routed = lab.astype(np.int32)  # segments 0..k-1, uncovered k, ignored k+1
        if ignore is not None:
            routed[lab == ignore] = k + 1
        routed[~cov] = k
        raw = _core.reduce_labels(
            x, routed, k + 1, ignore_index=None if ignore is None else k + 1, skip_nonfinite=skip, threads=nthreads
        )
        return SegmentStats.from_kernel(_drop_slot(raw, k), height, width, include_unassigned, _covered(cov))
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
    if cov is not None:
        _spare_slot(k)
        inside = pack_masks(cov[:, None], threads=nthreads).words
        outside = pack_masks(~cov[:, None], threads=nthreads).words
        words = np.concatenate([packed.words & inside, outside], axis=1)
        packed = PackedMasks(np.ascontiguousarray(words), height, width)
    raw = _core.reduce_masks(
        x,
        np.ascontiguousarray(packed.words),
        np.ascontiguousarray(packed.bounds),
        packed.num_segments,
        unassigned=include_unassigned,
        skip_nonfinite=skip,
        threads=nthreads,
    )
    if cov is None:
        return SegmentStats.from_kernel(raw, height, width, include_unassigned)
    return SegmentStats.from_kernel(_drop_slot(raw, k), height, width, include_unassigned, _covered(cov))


def _spare_slot(k: int) -> None:
    if k + 1 > v.MAX_SEGMENTS:
        raise ValueError(f"coverage needs one spare segment id, so num_segments must be below 2**24, got {k}")


def _drop_slot(raw: Mapping[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """The kernel's output without segment column ``k`` (the uncovered pixels)."""
    return {key: np.delete(a, k, axis=1) if a.ndim == 2 else a for key, a in raw.items()}


def _covered(cov: np.ndarray) -> np.ndarray:
    counts: np.ndarray = np.count_nonzero(cov.reshape(cov.shape[0], -1), axis=1).astype(np.int64)
    return counts


def segments_stats(
    saliency: Any,
    segments: Sequence[Segments],
    *,
    threads: int | None = None,
    nonfinite: Nonfinite = "raise",
    unassigned: bool = False,
) -> SegmentStats:
    """Deprecated: use ``segment_stats(saliency, segments=..., include_unassigned=...)``."""
    warn_deprecated(
        "segments_stats(saliency, segments) is deprecated since sat_fast 0.2.0; "
        "use segment_stats(saliency, segments=segments)"
    )
    return segment_stats(
        saliency, segments=segments, threads=threads, nonfinite=nonfinite, include_unassigned=unassigned
    )
