"""One jittable step from images to per-segment statistics: saliency maps that never leave the device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sat_fast._typing import Method, SegmentReduction
from sat_fast.functional._saliency import attribute
from sat_fast.functional._stats import JaxSegmentStats, segment_stats

__all__ = ["explain"]


def explain(
    fn: Callable[[jax.Array], jax.Array],
    images: Any,
    label_map: Any = None,
    *,
    masks: Any = None,
    num_segments: int,
    targets: Any,
    method: Method = "integrated_gradients",
    ignore_index: int | None = None,
    reduction: SegmentReduction = "auto",
    **options: Any,
) -> JaxSegmentStats:
    """Saliency maps of ``fn`` reduced to per-segment statistics, as one pure JAX function.

    :func:`attribute` followed by :func:`segment_stats`: put it inside
    ``jax.jit`` (or ``vmap``, ``grad``, sharding) with your own batch; the
    (B, H, W) maps stay on the device and only the (B, K) statistics are
    returned. :func:`sat_fast.stats_table` turns the result into the same
    Polars SAT as :func:`sat_fast.saliency` followed by
    :func:`sat_fast.segment_table`.

    Parameters
    ----------
    fn
        The model: images (B, H, W, C) -> logits (B, N), JAX-traceable.
    images
        (B, H, W, C) floating-point images.
    label_map, masks
        The segments, as in :func:`segment_stats`: a (B, H, W) integer label
        map or (B, K, H, W) boolean masks.
    num_segments
        K (static).
    targets
        The explained class of each image, as :func:`attribute` takes it;
        with (B, T) targets the statistics are (B, T, K) and (B, T).
    method
        The saliency method (see :func:`sat_fast.saliency`).
    ignore_index, reduction
        As in :func:`segment_stats`.
    **options
        The method's options, named as in :func:`sat_fast.saliency`
        (``steps``, ``rule``, ``baseline``, ``samples``, ``noise``,
        ``output``, ``reduce``) and the PRNG ``key`` of the randomised
        methods: passed to :func:`attribute`.

    Returns
    -------
    JaxSegmentStats
        (B, K) segment fields and (B,) image fields; ``nonfinite`` and
        ``invalid`` count what :func:`sat_fast.stats_table` raises on.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, sat_fast
    >>> from sat_fast import functional as F
    >>> def model(x):  # logits of 2 classes: the mean of the left / right half
    ...     return jnp.stack([x[:, :, :2].mean((1, 2, 3)), x[:, :, 2:].mean((1, 2, 3))], axis=1)
    >>> images = jnp.ones((2, 4, 4, 3))
    >>> halves = jnp.broadcast_to(jnp.array([0, 0, 1, 1]), (2, 4, 4))
    >>> step = jax.jit(lambda x, m, t: F.explain(model, x, m, num_segments=2, targets=t, method="gradient_x_input"))
    >>> stats = step(images, halves, jnp.array([0, 1]))
    >>> stats.sum.round(3).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    >>> sat_fast.stats_table(stats, names=["left", "right"])["segment"].to_list()
    ['left', 'right', 'left', 'right']
    """
    maps = attribute(fn, images, targets, method=method, **options)
    if not isinstance(targets, str) and jnp.ndim(targets) == 2:  # maps (B, T, H, W) share each image's segments
        t = maps.shape[1]
        if label_map is not None:
            label_map = jnp.broadcast_to(jnp.expand_dims(jnp.asarray(label_map), 1), maps.shape)
        if masks is not None:
            m = jnp.asarray(masks)
            masks = jnp.broadcast_to(jnp.expand_dims(m, 1), (m.shape[0], t, *m.shape[1:]))
    return segment_stats(
        maps, label_map, masks=masks, num_segments=num_segments, ignore_index=ignore_index, reduction=reduction
    )
