"""Attribution priors: loss terms that penalise saliency on named segments ("right for the right reasons")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sat_fast._typing import Method, Output, Reduction
from sat_fast.functional._explain import explain
from sat_fast.functional._stats import JaxSegmentStats

__all__ = ["segment_share", "segment_share_penalty"]


def segment_share(stats: JaxSegmentStats, segment: int) -> jax.Array:
    """Share of each image's absolute saliency that falls on ``segment``: ``abs_sum / total_abs``.

    The SAT's ``share`` column as a differentiable JAX array of shape
    (...,); 0 for an image whose total is 0 (with gradient 0 there).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from sat_fast import functional as F
    >>> stats = F.segment_stats(jnp.array([[[1.0, -3.0]]]), jnp.array([[[0, 1]]]), num_segments=2)
    >>> F.segment_share(stats, 1).tolist()
    [0.75]
    """
    if not isinstance(segment, int) or isinstance(segment, bool):
        raise TypeError(f"segment must be an int (a segment index), got {type(segment).__name__}")
    k = stats.abs_sum.shape[-1]
    if not 0 <= segment < k:
        raise ValueError(f"segment {segment} is not in [0, {k})")
    total = stats.total_abs
    positive = total > 0
    # the inner where keeps the division finite where the total is 0, so its gradient is 0, not NaN
    share: jax.Array = jnp.where(positive, stats.abs_sum[..., segment] / jnp.where(positive, total, 1), 0)
    return share


def segment_share_penalty(
    fn: Callable[[jax.Array], jax.Array],
    images: Any,
    label_map: Any = None,
    *,
    masks: Any = None,
    num_segments: int,
    segment: int,
    targets: Any,
    method: Method = "gradient_x_input",
    output: Output = "log_probability",
    reduce: Reduction = "abs_sum",
    ignore_index: int | None = None,
    **options: Any,
) -> jax.Array:
    """Mean share of the saliency on ``segment``: a loss term that teaches a model to ignore it.

    A "right for the right reasons" attribution prior from :func:`explain`
    pieces: the saliency of ``targets`` under ``method`` is reduced over the
    segments and the batch mean of :func:`segment_share` is returned, a
    scalar in [0, 1] to add (weighted) to the training loss. Differentiable
    in the model's parameters (the gradient of a gradient: a gradient-based
    ``method`` costs about 2.5 times a plain training step on the demo's
    CNN; integrated gradients 10-25 times). Images without the segment
    contribute 0.

    Parameters
    ----------
    fn
        The model with the parameters being trained closed over: images
        (B, H, W, C) -> logits (B, N).
    images
        (B, H, W, C) the training batch.
    label_map, masks
        Where the segments are, known at training time (see :func:`explain`).
    num_segments
        K (static).
    segment
        The index of the penalised segment.
    targets
        (B,) class per image, usually the true labels.
    method, output, reduce
        The saliency (see :func:`sat_fast.saliency`); the defaults, gradient
        x input of the log-probability with the absolute values summed over
        channels, penalise what every class's logit draws from the segment
        relative to the others.
    ignore_index, **options
        Passed to :func:`explain`.

    Returns
    -------
    jax.Array
        A scalar.

    Examples
    --------
    A training step (Flax linen and optax) whose loss adds the prior on segment 1:

    >>> import jax, jax.numpy as jnp, optax, flax.linen as nn
    >>> from sat_fast import functional as F
    >>> model = nn.Sequential([lambda x: x.reshape(len(x), -1), nn.Dense(2)])
    >>> images = jax.random.uniform(jax.random.key(0), (4, 6, 6, 3))
    >>> segments = jnp.zeros((4, 6, 6), jnp.int32).at[:, :2, :2].set(1)  # a corner "watermark"
    >>> labels = jnp.array([0, 1, 0, 1])
    >>> params = model.init(jax.random.key(1), images)
    >>> tx = optax.adam(1e-2)
    >>> def loss_fn(p, x, seg, y):
    ...     ce = optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()
    ...     prior = F.segment_share_penalty(
    ...         lambda im: model.apply(p, im), x, seg, num_segments=2, segment=1, targets=y
    ...     )
    ...     return ce + 10.0 * prior
    >>> @jax.jit
    ... def step(p, s, x, seg, y):
    ...     loss, grads = jax.value_and_grad(loss_fn)(p, x, seg, y)
    ...     updates, s = tx.update(grads, s, p)
    ...     return optax.apply_updates(p, updates), s, loss
    >>> state = tx.init(params)
    >>> params, state, loss = step(params, state, images, segments, labels)
    >>> bool(jnp.isfinite(loss))
    True
    """
    stats = explain(
        fn,
        images,
        label_map,
        masks=masks,
        num_segments=num_segments,
        targets=targets,
        method=method,
        ignore_index=ignore_index,
        output=output,
        reduce=reduce,
        **options,
    )
    return segment_share(stats, segment).mean()
