"""Per-(image, segment) saliency statistics as a pure JAX function (jit, vmap, grad).

The host :func:`sat_fast.segment_stats` validates and raises; under ``jit``
nothing can raise, so this version counts what the host version would raise
on (labels outside ``[0, K)`` other than ``ignore_index``, non-finite
saliency) in the result, leaves those pixels out of every segment, and
:func:`sat_fast.stats_table` raises when the counts are not zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from sat_fast._typing import SegmentReduction, check_choice

__all__ = ["JaxSegmentStats", "segment_stats"]


class JaxSegmentStats(NamedTuple):
    """Per-(image, segment) statistics as JAX arrays (a pytree), from :func:`segment_stats`.

    Segment fields have shape (..., K), image fields shape (...), where ``...``
    are the leading (batch) dimensions of the saliency. The field order is
    fixed (the FFI kernel returns the same tuple).

    Attributes
    ----------
    count
        Pixels of each segment that have a finite saliency (integer).
    sum, pos_sum, neg_sum, abs_sum, sq_sum
        Sum of the saliency, of its positive part, of its negative part, of
        its absolute value and of its square over the segment; 0 for an empty
        segment.
    min, max
        Extremes over the segment; NaN for an empty segment.
    total_sum, total_abs
        Sum and absolute sum over every finite pixel of the image (also
        pixels in no segment).
    pixels
        H * W (integer).
    nonfinite
        Pixels with a NaN or infinite saliency: left out of every statistic.
    invalid
        Pixels whose label is outside ``[0, K)`` and not ``ignore_index``:
        left out of every segment (always 0 for masks).
    """

    # shadows tuple.count: the field names are the kernel's statistics, fixed by the public contract
    count: jax.Array  # type: ignore[assignment]
    sum: jax.Array
    pos_sum: jax.Array
    neg_sum: jax.Array
    abs_sum: jax.Array
    sq_sum: jax.Array
    min: jax.Array
    max: jax.Array
    total_sum: jax.Array
    total_abs: jax.Array
    pixels: jax.Array
    nonfinite: jax.Array
    invalid: jax.Array


def accumulation_dtype() -> jnp.dtype[Any]:
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def _count_dtype() -> jnp.dtype[Any]:
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.int64))


class _Prepared(NamedTuple):
    """Flattened (N, P) inputs: finite values (0 elsewhere) and their parts."""

    values: jax.Array  # (N, P), non-finite pixels set to 0
    finite: jax.Array  # (N, P) bool
    parts: jax.Array  # (N, P, 3): positive part, negative part, square


def _prepare(saliency: jax.Array) -> _Prepared:
    x = saliency.astype(accumulation_dtype())
    finite = jnp.isfinite(x)
    # jnp.where (not multiplication) so that a NaN pixel's gradient is 0, not NaN
    values = jnp.where(finite, x, jnp.zeros((), x.dtype))
    parts = jnp.stack([jnp.maximum(values, 0), jnp.minimum(values, 0), values * values], axis=-1)
    return _Prepared(values, finite, parts)


def _finish(
    prep: _Prepared,
    count: jax.Array,
    sums: jax.Array,
    smallest: jax.Array,
    largest: jax.Array,
    invalid: jax.Array,
) -> JaxSegmentStats:
    """The result from per-segment counts (N, K), sums (N, K, 3) of the parts and extremes (N, K)."""
    pos, neg, sq = sums[..., 0], sums[..., 1], sums[..., 2]
    empty = count == 0
    nan = jnp.full((), jnp.nan, smallest.dtype)
    n, p = prep.values.shape
    return JaxSegmentStats(
        count=count.astype(_count_dtype()),
        sum=pos + neg,
        pos_sum=pos,
        neg_sum=neg,
        abs_sum=pos - neg,
        sq_sum=sq,
        # jnp.where keeps an empty segment's gradient at 0 (its extreme is the +-inf fill)
        min=jnp.where(empty, nan, smallest),
        max=jnp.where(empty, nan, largest),
        total_sum=prep.values.sum(axis=-1),
        total_abs=jnp.abs(prep.values).sum(axis=-1),
        pixels=jnp.full((n,), p, _count_dtype()),
        nonfinite=(~prep.finite).sum(axis=-1, dtype=_count_dtype()),
        invalid=invalid.astype(_count_dtype()),
    )


def _extremes(values: jax.Array, member: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Min and max over the last axis where ``member``; +inf / -inf where none."""
    inf = jnp.full((), jnp.inf, values.dtype)
    return jnp.min(jnp.where(member, values, inf), axis=-1), jnp.max(jnp.where(member, values, -inf), axis=-1)


# Label-map formulations: (prep, slot (N, P) int32 in [0, K], K) -> count, sums, min, max,
# where slot K collects the pixels in no segment (ignored, invalid or non-finite).
_LabelReduction = Callable[[_Prepared, jax.Array, int], tuple[jax.Array, jax.Array, jax.Array, jax.Array]]


def _labels_one_hot(prep: _Prepared, slot: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One-hot (N, P, K) contraction: a matrix product (tensor cores on GPU), deterministic."""
    member = slot[..., None] == jnp.arange(k, dtype=slot.dtype)  # (N, P, K)
    acc = prep.values.dtype
    sums = jnp.einsum("npk,npc->nkc", member.astype(acc), prep.parts, precision=lax.Precision.HIGHEST)
    count = member.sum(axis=1, dtype=_count_dtype())
    smallest, largest = _extremes(jnp.swapaxes(prep.values[..., None], 1, 2), jnp.swapaxes(member, 1, 2))
    return count, sums, smallest, largest


def _labels_scatter(prep: _Prepared, slot: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``jax.ops.segment_sum``/``segment_min``/``segment_max`` over image-offset ids (K + 1 per image)."""
    n, p = slot.shape
    ids = (slot + (k + 1) * jnp.arange(n, dtype=slot.dtype)[:, None]).reshape(-1)
    slots = n * (k + 1)
    sums = jax.ops.segment_sum(prep.parts.reshape(n * p, 3), ids, slots)
    count = jax.ops.segment_sum(jnp.ones((n * p,), _count_dtype()), ids, slots)
    values = prep.values.reshape(-1)
    smallest = jax.ops.segment_min(values, ids, slots)
    largest = jax.ops.segment_max(values, ids, slots)

    def segments(a: jax.Array) -> jax.Array:
        return a.reshape((n, k + 1) + a.shape[1:])[:, :k]

    return segments(count), segments(sums), segments(smallest), segments(largest)


def _labels_sorted(prep: _Prepared, slot: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Sort each image's pixels by label, then reduce sorted runs (``indices_are_sorted``)."""
    n, p = slot.shape
    order = jnp.argsort(slot, axis=-1, stable=True)
    sorted_slot = jnp.take_along_axis(slot, order, axis=-1)
    ids = (sorted_slot + (k + 1) * jnp.arange(n, dtype=slot.dtype)[:, None]).reshape(-1)
    parts = jnp.take_along_axis(prep.parts, order[..., None], axis=1).reshape(n * p, 3)
    values = jnp.take_along_axis(prep.values, order, axis=-1).reshape(-1)
    slots = n * (k + 1)
    sums = jax.ops.segment_sum(parts, ids, slots, indices_are_sorted=True)
    count = jax.ops.segment_sum(jnp.ones((n * p,), _count_dtype()), ids, slots, indices_are_sorted=True)
    smallest = jax.ops.segment_min(values, ids, slots, indices_are_sorted=True)
    largest = jax.ops.segment_max(values, ids, slots, indices_are_sorted=True)

    def segments(a: jax.Array) -> jax.Array:
        return a.reshape((n, k + 1) + a.shape[1:])[:, :k]

    return segments(count), segments(sums), segments(smallest), segments(largest)


def _labels_blocks(prep: _Prepared, slot: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-block partials: a one-hot contraction over blocks of rows, then a sum over blocks."""
    n, p = slot.shape
    block = 1024
    pad = -p % block
    slot_b = jnp.pad(slot, ((0, 0), (0, pad)), constant_values=k).reshape(n, -1, block)
    parts = jnp.pad(prep.parts, ((0, 0), (0, pad), (0, 0))).reshape(n, -1, block, 3)
    values = jnp.pad(prep.values, ((0, 0), (0, pad))).reshape(n, -1, block)
    member = slot_b[..., None] == jnp.arange(k, dtype=slot.dtype)  # (N, nb, block, K)
    acc = prep.values.dtype
    sums = jnp.einsum("nbpk,nbpc->nkc", member.astype(acc), parts, precision=lax.Precision.HIGHEST)
    count = member.sum(axis=(1, 2), dtype=_count_dtype())
    m = jnp.moveaxis(member, -1, 1)  # (N, K, nb, block)
    inf = jnp.full((), jnp.inf, acc)
    smallest = jnp.min(jnp.where(m, values[:, None], inf), axis=(2, 3))
    largest = jnp.max(jnp.where(m, values[:, None], -inf), axis=(2, 3))
    return count, sums, smallest, largest


_LABEL_REDUCTIONS: dict[str, _LabelReduction] = {
    "one_hot": _labels_one_hot,
    "scatter": _labels_scatter,
    "sort": _labels_sorted,
    "blocks": _labels_blocks,
}


def _labels_auto(prep: _Prepared, slot: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The fastest deterministic formulation per backend, chosen when XLA lowers for a platform.

    XLA:CPU: the scatter (``jax.ops.segment_sum``), measured 2-12x faster than
    the one-hot contraction, sorting and per-block partials at K = 8, 16 and
    64 (benchmarks/RESULTS.md); CPU scatters run in order, so it is
    deterministic there. Elsewhere (GPU, TPU): the one-hot contraction. On an
    H200 it was the fastest deterministic formulation at K = 8 and 64 and level
    with the per-block partials at K = 16; the scatter and the sort were not
    deterministic there (XLA's atomic float scatter-add) and slower.
    """
    parts = lax.platform_dependent(
        prep.values,
        prep.finite,
        prep.parts,
        slot,
        cpu=lambda v, f, p, s: _labels_scatter(_Prepared(v, f, p), s, k),
        default=lambda v, f, p, s: _labels_one_hot(_Prepared(v, f, p), s, k),
    )
    count, sums, smallest, largest = parts
    return count, sums, smallest, largest


def _pure_jax_labels(
    saliency: jax.Array, label_map: jax.Array, k: int, ignore_index: int | None, reduction: SegmentReduction
) -> JaxSegmentStats:
    prep = _prepare(saliency)
    lab = label_map.astype(jnp.int32) if label_map.dtype != jnp.int32 else label_map
    in_range = (lab >= 0) & (lab < k)
    ignored = jnp.zeros_like(in_range) if ignore_index is None else lab == ignore_index
    invalid = (~in_range & ~ignored).sum(axis=-1)
    # an ignore_index inside [0, K) takes its pixels out of that segment, as in the kernel
    slot = jnp.where(in_range & ~ignored & prep.finite, lab, k)
    reduce = _labels_auto if reduction == "auto" else _LABEL_REDUCTIONS[reduction]
    count, sums, smallest, largest = reduce(prep, slot, k)
    return _finish(prep, count, sums, smallest, largest, invalid)


def _pure_jax_masks(saliency: jax.Array, masks: jax.Array) -> JaxSegmentStats:
    prep = _prepare(saliency)
    member = masks & prep.finite[:, None, :]  # (N, K, P)
    acc = prep.values.dtype
    sums = jnp.einsum("nkp,npc->nkc", member.astype(acc), prep.parts, precision=lax.Precision.HIGHEST)
    count = member.sum(axis=-1, dtype=_count_dtype())
    smallest, largest = _extremes(prep.values[:, None, :], member)
    invalid = jnp.zeros(prep.values.shape[:1], _count_dtype())
    return _finish(prep, count, sums, smallest, largest, invalid)


def _ffi_reduction() -> Callable[..., tuple[jax.Array, ...]] | None:
    """The C++ kernel as an XLA FFI custom call when this build registered it (``SAT_FAST_XLA_FFI=ON``), else None.

    :func:`sat_fast.functional._ffi.segment_stats_ffi` has :func:`segment_stats`'s signature and returns the
    fields of :class:`JaxSegmentStats` as a tuple, in order.
    """
    from sat_fast.functional import _ffi  # registers the custom calls on first import

    return _ffi.segment_stats_ffi if _ffi.ffi_available() else None


def _reduce(
    saliency: jax.Array,
    label_map: jax.Array | None,
    masks: jax.Array | None,
    k: int,
    ignore_index: int | None,
    reduction: SegmentReduction,
) -> JaxSegmentStats:
    """The one dispatch point between the FFI kernel (on CPU) and the pure-JAX formulations.

    Inputs are flattened: saliency and labels (N, P), masks (N, K, P).
    """

    def pure(x: jax.Array, segments: jax.Array) -> JaxSegmentStats:
        if label_map is not None:
            return _pure_jax_labels(x, segments, k, ignore_index, reduction)
        return _pure_jax_masks(x, segments)

    segments = label_map if label_map is not None else masks
    assert segments is not None
    ffi = _ffi_reduction() if reduction == "auto" else None
    if ffi is None:
        return pure(saliency, segments)
    expected = jax.eval_shape(pure, saliency, segments)

    def kernel(x: jax.Array, seg: jax.Array) -> JaxSegmentStats:
        # each (P,) row is one image of height 1 for the kernel; dtypes as the pure-JAX path gives them
        one_row = seg[:, None, :] if label_map is not None else seg[:, :, None, :]
        out = ffi(
            x[:, None, :],
            one_row if label_map is not None else None,
            masks=None if label_map is not None else one_row,
            num_segments=k,
            ignore_index=ignore_index,
        )
        return JaxSegmentStats(*(a.astype(e.dtype) for a, e in zip(out, expected, strict=True)))

    # chosen when XLA lowers for a platform: the kernel on CPU, the pure-JAX formulation elsewhere
    result: JaxSegmentStats = lax.platform_dependent(saliency, segments, cpu=kernel, default=pure)
    return result


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def segment_stats(
    saliency: Any,
    label_map: Any = None,
    *,
    masks: Any = None,
    num_segments: int,
    ignore_index: int | None = None,
    reduction: SegmentReduction = "auto",
) -> JaxSegmentStats:
    """Per-(image, segment) saliency statistics as a pure JAX function.

    Composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad``: no host
    synchronisation, nothing raised from values. Pixels the host
    :func:`sat_fast.segment_stats` would raise on are left out and counted
    (``nonfinite``, ``invalid``); :func:`sat_fast.stats_table` raises a
    ``ValueError`` when those counts are not zero.

    Parameters
    ----------
    saliency
        (..., H, W) floating-point maps (float16, bfloat16, float32, float64)
        with any number of leading (batch) dimensions. The C++ kernel (the
        default on CPU) accumulates in float64; the pure-JAX formulations in
        float32, or float64 when ``jax_enable_x64`` is on. Results are float32
        (float64 with ``jax_enable_x64``).
    label_map
        (..., H, W) integer label map of the same shape: pixel value ``s`` in
        ``[0, num_segments)`` belongs to segment ``s``.
    masks
        Instead of ``label_map``: (..., K, H, W) boolean, possibly overlapping
        masks, K equal to ``num_segments``.
    num_segments
        K (static: it sets the result's shape).
    ignore_index
        Label value of pixels in no segment (label maps only); they count in
        the image totals.
    reduction
        ``"auto"`` (default) or one formulation for label maps: ``"one_hot"``
        (a one-hot contraction, deterministic, runs on tensor cores),
        ``"scatter"`` (``jax.ops.segment_sum``: not deterministic on GPU),
        ``"sort"`` (sort by label, then reduce sorted runs; not deterministic
        on GPU either) or ``"blocks"``
        (one-hot partials per block of 1024 pixels). ``"auto"`` picks per
        platform when XLA compiles: on CPU the C++ kernel as an XLA FFI
        custom call (:mod:`sat_fast.functional._ffi`, when this build has
        it), else the scatter (the fastest pure-JAX formulation on CPU for
        K = 8, 16 and 64, and deterministic there); on GPU and TPU the
        one-hot contraction (deterministic, and the fastest deterministic
        formulation measured on an H200; benchmarks/RESULTS.md). Masks always
        contract (a boolean
        (..., K, P) by (..., P, 3) product).

    Returns
    -------
    JaxSegmentStats
        Segment fields (..., K), image fields (...). Empty segments have sums
        0 and min/max NaN. Differentiable in ``saliency``: the sums have their
        ordinary gradients (``pos_sum``/``neg_sum`` give half of a pixel's
        tangent at exactly 0); ``min``/``max`` pass the gradient to the pixels
        that attain them, split equally among ties, and give 0 for an empty
        segment; non-finite pixels get gradient 0.

    Raises
    ------
    ValueError
        Shape mismatches, ``num_segments`` below 1, both or neither of
        ``label_map`` and ``masks`` (these depend on shapes only, so they
        raise at trace time).
    TypeError
        Non-floating saliency, non-integer labels, non-boolean masks.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from sat_fast import functional as F
    >>> sal = jnp.array([[[1.0, -2.0], [3.0, 4.0]]])
    >>> lab = jnp.array([[[0, 0], [1, 1]]])
    >>> st = jax.jit(lambda s, l: F.segment_stats(s, l, num_segments=3))(sal, lab)
    >>> st.sum.tolist(), st.count.tolist(), st.invalid.tolist()
    ([[-1.0, 7.0, 0.0]], [[2, 2, 0]], [0])
    >>> jax.grad(lambda s: F.segment_stats(s, lab, num_segments=2).max[0, 1])(sal).tolist()
    [[[0.0, 0.0], [0.0, 1.0]]]
    """
    check_choice(reduction, "reduction", SegmentReduction)
    if (label_map is None) == (masks is None):
        raise ValueError("pass exactly one of label_map and masks")
    if not isinstance(num_segments, int) or isinstance(num_segments, bool) or num_segments < 1:
        raise ValueError(f"num_segments must be an int >= 1, got {num_segments!r}")
    x = jnp.asarray(saliency)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"saliency must be a floating-point array, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"saliency must be (..., H, W), got shape {_shape(x.shape)}")
    lead, (height, width) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape((-1, height * width))
    if label_map is not None:
        lab = jnp.asarray(label_map)
        if not jnp.issubdtype(lab.dtype, jnp.integer):
            raise TypeError(f"label_map must hold integers, got dtype {lab.dtype}")
        if lab.shape != x.shape:
            raise ValueError(f"label_map shape {_shape(lab.shape)} does not match saliency shape {_shape(x.shape)}")
        out = _reduce(flat, lab.reshape(flat.shape), None, num_segments, ignore_index, reduction)
    else:
        if ignore_index is not None:
            raise ValueError("ignore_index applies to label maps, not masks")
        m = jnp.asarray(masks)
        if m.dtype != jnp.bool_:
            raise TypeError(f"masks must be boolean, got dtype {m.dtype}")
        want = (*lead, num_segments, height, width)
        if m.shape != want:
            raise ValueError(
                f"masks shape {_shape(m.shape)} does not match saliency shape {_shape(x.shape)} "
                f"with num_segments={num_segments}: expected {_shape(want)}"
            )
        out = _reduce(flat, None, m.reshape((-1, num_segments, height * width)), num_segments, None, reduction)
    return JaxSegmentStats(*(field.reshape(lead + field.shape[1:]) for field in out))
