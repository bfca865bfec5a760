"""The C++ statistics kernel as an XLA FFI custom call on CPU.

Importing this module registers the handlers of ``sat_fast._xla_ffi`` (built
from ``csrc/ffi`` with jaxlib's FFI headers) with JAX for the CPU platform;
``import sat_fast`` never does, so it stays free of JAX. Jit-compiled CPU code
then reaches the same multithreaded kernel as :func:`sat_fast.segment_stats`
with no host round trip: float64 accumulation, results bitwise identical for
any thread count.

What differs from the host function is what ``jit`` forces: nothing can
raise on data, so bad input is counted per image instead of raised. Non-finite
saliency pixels are left out of every statistic and counted in ``nonfinite``
(the host function's ``nonfinite="skip"``); labels outside ``[0, K)`` that are
not ``ignore_index`` are left out of every segment, kept in the totals (like
``ignore_index`` pixels) and counted in ``invalid``. Callers that must not
accept such input check that both counts are zero, as the host wrappers do.

Precision: every statistic is accumulated in float64 by the kernel. The float
results are float64 when ``jax_enable_x64`` is on and otherwise float32,
rounded once from the float64 accumulators (so ``min``/``max`` are exact and
each sum is within half a float32 ulp of the float64 result); the integer
results are int64, or int32 without x64. float16 and bfloat16 saliency is
widened to float32 (exactly) before the call; float64 saliency (x64 only) is
reduced as float64.

The handlers are registered for the CPU platform only: on GPU or TPU use a
pure-JAX formulation instead.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["RESULT_KEYS", "ffi_available", "segment_stats_ffi"]


#: Names of the arrays :func:`segment_stats_ffi` returns, in order; the first
#: eight have shape (..., K), the others (...).
RESULT_KEYS = (
    "count",
    "sum",
    "pos_sum",
    "neg_sum",
    "abs_sum",
    "sq_sum",
    "min",
    "max",
    "total_sum",
    "total_abs",
    "pixels",
    "nonfinite",
    "invalid",
)

_LABELS_TARGET = "sat_fast_segment_stats_labels"
_MASKS_TARGET = "sat_fast_segment_stats_masks"
_NARROW_LABELS = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int32))
_MAX_SEGMENTS = 1 << 24
# Labels of a dtype the kernel does not read are routed to int32 first:
# segment ids stay, ignore_index becomes _ROUTED_IGNORE, any other value _ROUTED_INVALID.
_ROUTED_IGNORE = -1
_ROUTED_INVALID = -2


def _register() -> bool:
    """Registers the handlers with JAX (CPU); False when this build has none."""
    try:
        from sat_fast import _xla_ffi
    except ImportError:  # built with -DSAT_FAST_XLA_FFI=OFF (e.g. the sanitizer build)
        return False
    for name, capsule in _xla_ffi.handlers().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    return True


_REGISTERED = _register()


def ffi_available() -> bool:
    """True when this build of sat_fast has the FFI handlers (``SAT_FAST_XLA_FFI=ON``, the default).

    Examples
    --------
    >>> from sat_fast.functional._ffi import ffi_available
    >>> ffi_available()
    True
    """
    return _REGISTERED


class _Static(NamedTuple):
    """The hashable, trace-time part of a call (the custom_vjp's non-differentiable arguments)."""

    target: str
    num_segments: int
    has_ignore: bool
    ignore_index: int
    threads: int


def _result_types(batch: tuple[int, ...], k: int) -> list[jax.ShapeDtypeStruct]:
    # canonicalize: float64/int64 under jax_enable_x64, float32/int32 otherwise
    f = jax.dtypes.canonicalize_dtype(np.float64)
    i = jax.dtypes.canonicalize_dtype(np.int64)
    shape = jax.ShapeDtypeStruct
    per_segment = [shape(batch + (k,), i)] + [shape(batch + (k,), f)] * 7  # type: ignore[no-untyped-call]
    per_image = [shape(batch, f)] * 2 + [shape(batch, i)] * 2  # type: ignore[no-untyped-call]
    return per_segment + per_image


def _call(static: _Static, x: jax.Array, members: jax.Array) -> tuple[jax.Array, ...]:
    """The custom call: count, sum, ..., max, total_sum, total_abs, nonfinite, invalid."""
    batch = x.shape[:-2]
    call = jax.ffi.ffi_call(
        static.target,
        _result_types(batch, static.num_segments),
        # The handler treats every leading dimension as an image: a vmapped
        # call is the same call with one more leading dimension.
        vmap_method="broadcast_all",
    )
    if static.target == _MASKS_TARGET:
        out = call(x, members, threads=np.int64(static.threads))
    else:
        out = call(
            x,
            members,
            num_segments=np.int64(static.num_segments),
            has_ignore=np.int64(static.has_ignore),
            ignore_index=np.int64(static.ignore_index),
            threads=np.int64(static.threads),
        )
    return tuple(out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _stats(static: _Static, x: jax.Array, members: jax.Array) -> tuple[jax.Array, ...]:
    return _call(static, x, members)


def _stats_fwd(
    static: _Static, x: jax.Array, members: jax.Array
) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
    out = _call(static, x, members)
    return out, (x, members, out[6], out[7])


def _stats_bwd(static: _Static, residuals: tuple[jax.Array, ...], cts: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
    x, members, mn, mx = residuals
    ct_sum, ct_pos, ct_neg, ct_abs, ct_sq, ct_min, ct_max = cts[1:8]
    ct_total_sum, ct_total_abs = cts[8], cts[9]
    xf = x.astype(mn.dtype)
    finite = jnp.isfinite(xf)
    if static.target == _MASKS_TARGET:
        member = members & finite[..., None, :, :]

        def spread(per_segment: jax.Array, where: jax.Array = member) -> jax.Array:
            """(..., K) values to pixels: the sum over the segments each pixel belongs to."""
            return jnp.einsum(
                "...k,...khw->...hw", per_segment, where.astype(per_segment.dtype), precision=jax.lax.Precision.HIGHEST
            )

        def extreme(value: jax.Array, ct: jax.Array) -> jax.Array:
            hits = member & (xf[..., None, :, :] == value[..., :, None, None])
            ties = jnp.sum(hits, axis=(-2, -1)).astype(ct.dtype)
            return spread(jnp.where(ties > 0, ct / jnp.maximum(ties, 1), 0), hits)

    else:
        seg = _segment_index(static, members)
        inside = (seg < static.num_segments) & finite
        flat = seg.reshape(seg.shape[:-2] + (-1,))

        def spread(per_segment: jax.Array, where: jax.Array = inside) -> jax.Array:
            """(..., K) values to pixels: each pixel gets its segment's value (0 outside any)."""
            padded = jnp.concatenate([per_segment, jnp.zeros(per_segment.shape[:-1] + (1,), per_segment.dtype)], -1)
            picked = jnp.take_along_axis(padded, flat, axis=-1).reshape(x.shape)
            return jnp.where(where, picked, 0)

        def extreme(value: jax.Array, ct: jax.Array) -> jax.Array:
            hits = inside & (xf == spread(value))
            # The kernel counts the tied pixels: their sum of ones per segment.
            tie_static = static._replace(has_ignore=True, ignore_index=_ROUTED_IGNORE)
            ties = _call(tie_static, hits.astype(x.dtype), jnp.where(inside, seg, _ROUTED_IGNORE))[1]
            return spread(jnp.where(ties > 0, ct / jnp.maximum(ties, 1), 0), hits)

    sign = jnp.sign(xf)
    grad = (
        spread(ct_sum)
        # at exactly 0 half of the tangent goes to each part, as jnp.maximum(s, 0)/jnp.minimum(s, 0) do
        + spread(ct_pos) * (0.5 + 0.5 * sign)
        + spread(ct_neg) * (0.5 - 0.5 * sign)
        + spread(ct_abs) * sign
        + spread(ct_sq) * 2 * xf
        + extreme(mn, ct_min)
        + extreme(mx, ct_max)
        + ct_total_sum[..., None, None]
        + ct_total_abs[..., None, None] * jnp.where(xf >= 0, 1, -1)  # 1 at 0, as jnp.abs
    )
    return jnp.where(finite, grad, 0).astype(x.dtype), None


_stats.defvjp(_stats_fwd, _stats_bwd)


def _segment_index(static: _Static, labels: jax.Array) -> jax.Array:
    """Each pixel's segment in [0, K), or K for ignore_index and invalid labels (int32).

    ``labels`` are what the kernel read (uint8, uint16 or int32), so int32 holds them exactly.
    """
    lab = labels.astype(jnp.int32)
    inside = (lab >= 0) & (lab < static.num_segments)
    if static.has_ignore:  # ignore_index wins, even inside [0, K), as in the kernel
        inside &= lab != static.ignore_index
    return jnp.where(inside, lab, static.num_segments)


def segment_stats_ffi(
    saliency: Any,
    label_map: Any = None,
    *,
    masks: Any = None,
    num_segments: int | None = None,
    ignore_index: int | None = None,
    threads: int | None = None,
) -> tuple[jax.Array, ...]:
    """Per-(image, segment) statistics by the C++ kernel, as a JAX custom call on CPU.

    A pure function of arrays: usable under ``jit``, ``vmap`` (any number of
    extra batch axes) and ``grad`` (reverse mode). Statistics, semantics and
    parameter names are those of :func:`sat_fast.segment_stats`, with bad
    input counted instead of raised (see the module docstring).

    Parameters
    ----------
    saliency
        (..., H, W) floating-point saliency; every leading dimension is one
        image (none: one image). float16 and bfloat16 are widened to float32.
    label_map
        Integer segment labels of the saliency's shape. uint8, uint16 and
        int32 go to the kernel as they are; other integer dtypes are routed
        to int32 first (one fused elementwise pass), every value keeping its meaning.
    masks
        Boolean (..., K, H, W) overlapping masks instead of ``label_map``.
    num_segments
        K, required with ``label_map`` (under ``jit`` it cannot be inferred),
        in [1, 2**24]; with ``masks`` it must match ``masks.shape[-3]`` if given.
    ignore_index
        Label value that belongs to no segment (label maps only).
    threads
        Kernel threads; default: the CPUs this process may run on. The
        results do not depend on it.

    Returns
    -------
    tuple of jax.Array
        In the order of :data:`RESULT_KEYS`: ``count``, ``sum``, ``pos_sum``,
        ``neg_sum``, ``abs_sum``, ``sq_sum``, ``min``, ``max`` (each (..., K);
        an empty segment has sums 0 and min/max NaN), then ``total_sum``,
        ``total_abs``, ``pixels`` (H*W), ``nonfinite`` and ``invalid`` (each
        (...)). Float results are float64 with ``jax_enable_x64``, else
        float32 rounded from float64 accumulators; integer results int64/int32.

    Notes
    -----
    Gradients with respect to the saliency (integer results have none): a
    pixel ``p`` of segment ``k`` gets ``d sum_k = 1``, ``d pos_sum_k = [s_p > 0]``,
    ``d neg_sum_k = [s_p < 0]`` (each 1/2 at ``s_p = 0``, as ``jnp.maximum(s, 0)``
    and ``jnp.minimum(s, 0)`` give), ``d abs_sum_k = sign(s_p)`` (0 at 0, as
    ``pos_sum - neg_sum``), ``d sq_sum_k = 2 s_p``, and every finite pixel
    ``d total_sum = 1``, ``d total_abs = sign(s_p)`` (1 at 0, as ``jnp.abs``). ``min``/``max`` take the subgradient that
    ``jnp.min``/``jnp.max`` take: the cotangent is split evenly among the
    pixels of the segment that attain the extreme (an empty segment passes
    none). Non-finite pixels get zero gradient. Only reverse mode is defined
    (``jax.custom_vjp``): ``jax.jvp`` is not.

    Raises
    ------
    ValueError
        Shapes that do not match, ``num_segments`` missing or out of range,
        not exactly one of ``label_map`` and ``masks`` (all at trace time).
    TypeError
        Non-float saliency, non-integer labels, non-boolean masks.
    RuntimeError
        This build of sat_fast has no FFI handlers (``SAT_FAST_XLA_FFI=OFF``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from sat_fast.functional._ffi import segment_stats_ffi
    >>> sal = jnp.array([[1.0, -2.0], [3.0, 4.0]])
    >>> lab = jnp.array([[0, 0], [1, 1]], jnp.uint8)
    >>> count, total = jax.jit(lambda s, l: segment_stats_ffi(s, l, num_segments=2)[::8])(sal, lab)
    >>> count.tolist(), total.tolist()
    ([2, 2], 6.0)
    """
    if not _REGISTERED:
        raise RuntimeError(
            "this build of sat_fast has no XLA FFI handlers (built with -DSAT_FAST_XLA_FFI=OFF); "
            "reinstall it with jax and jaxlib in the build environment"
        )
    if (label_map is None) == (masks is None):
        raise ValueError("pass exactly one of label_map and masks")
    x = jnp.asarray(saliency)
    if x.ndim < 2:
        raise ValueError(f"saliency must have shape (..., H, W), got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"saliency must be a floating-point array, got dtype {x.dtype}")
    if x.dtype != jnp.float64:
        x = x.astype(jnp.float32)
    nthreads = 0 if threads is None else _thread_count(threads)
    if masks is not None:
        if ignore_index is not None:
            raise ValueError("ignore_index applies to label maps, not masks")
        m = jnp.asarray(masks)
        if m.dtype != jnp.bool_:
            raise TypeError(f"masks must be boolean, got dtype {m.dtype}; use masks.astype(bool)")
        if m.ndim != x.ndim + 1 or m.shape[:-3] + m.shape[-2:] != x.shape:
            raise ValueError(f"masks shape {m.shape} does not match saliency shape {x.shape} (expected (..., K, H, W))")
        k = int(m.shape[-3])
        if num_segments is not None and int(num_segments) != k:
            raise ValueError(f"num_segments is {num_segments} but masks have {k} segments")
        _check_segments(k)
        static = _Static(_MASKS_TARGET, k, False, 0, nthreads)
        out = _stats(static, x, m)
    else:
        if num_segments is None:
            raise ValueError("num_segments is required: under jit it cannot be inferred from the labels")
        k = _check_segments(num_segments)
        lab = jnp.asarray(label_map)
        if lab.shape != x.shape:
            raise ValueError(f"label_map shape {lab.shape} does not match saliency shape {x.shape}")
        if lab.dtype == jnp.bool_ or not jnp.issubdtype(lab.dtype, jnp.integer):
            raise TypeError(f"label_map must be an integer array (uint8, uint16 or int32), got dtype {lab.dtype}")
        if ignore_index is not None:
            if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
                raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
            info = np.iinfo(lab.dtype)
            if not info.min <= int(ignore_index) <= info.max:
                raise ValueError(
                    f"ignore_index {ignore_index} cannot occur in {lab.dtype} labels (range {info.min}..{info.max})"
                )
        if lab.dtype in _NARROW_LABELS:
            has_ignore, ignore = ignore_index is not None, int(ignore_index or 0)
        else:
            lab = _route_labels(lab, k, ignore_index)
            has_ignore, ignore = True, _ROUTED_IGNORE
        static = _Static(_LABELS_TARGET, k, has_ignore, ignore, nthreads)
        out = _stats(static, x, lab)
    pixels = jnp.full(x.shape[:-2], x.shape[-2] * x.shape[-1], out[0].dtype)
    return out[:10] + (pixels,) + out[10:]


def _route_labels(labels: jax.Array, k: int, ignore_index: int | None) -> jax.Array:
    """Labels of any integer dtype as int32 the kernel reads, every value's meaning kept."""
    inside = (labels >= 0) & (labels < k)
    routed = jnp.where(inside, labels, _ROUTED_INVALID)
    if ignore_index is not None:
        routed = jnp.where(labels == ignore_index, _ROUTED_IGNORE, routed)
    return routed.astype(jnp.int32)


def _check_segments(num_segments: Any) -> int:
    if isinstance(num_segments, bool) or not isinstance(num_segments, (int, np.integer)):
        raise TypeError(f"num_segments must be an int, got {num_segments!r}")
    k = int(num_segments)
    if not 1 <= k <= _MAX_SEGMENTS:
        raise ValueError(f"num_segments must be in [1, 2**24], got {k}")
    return k


def _thread_count(threads: Any) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= int(threads) <= 1024:
        raise ValueError(f"threads must be an int in [1, 1024] or None, got {threads!r}")
    return int(threads)
