"""The gradient methods: gradient points, their weights and how the accumulated gradients finish a map.

Each method turns an image into *gradient points* (inputs at which the
explained output is differentiated) with weights, and a rule that combines the
weighted sums of the gradients into the attribution. Everything here is a pure
JAX function of the explained function ``explained`` (images (n, H, W, C) ->
outputs (n, N)), the images, the targets and a static :class:`Config`; it
knows nothing of models, chunk planning or compilation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from sat_fast._typing import Method, Output, QuadratureRule, Reduction
from sat_fast.attribution._options import SQUARE_METHODS
from sat_fast.attribution._quadrature import quadrature

__all__ = [
    "POINTS",
    "BaselineKind",
    "Config",
    "Explained",
    "Point",
    "as_output",
    "baseline",
    "blur",
    "explain_outputs",
    "finish",
    "gradient_chunk",
    "image_keys",
    "point_weights",
    "reduce_channels",
    "select",
]

#: How the integrated-gradients baseline of an image is made (``"array"``: given per image).
BaselineKind: TypeAlias = Literal["zeros", "blur", "uniform", "array"]
#: The explained function: images (n, H, W, C) -> explained outputs (n, N).
Explained: TypeAlias = Callable[[jax.Array], jax.Array]


class Config(NamedTuple):
    """The static (hashable) settings of a method."""

    method: Method
    output: Output
    points: int  # gradient points per image (steps or samples)
    rule: QuadratureRule
    baseline: BaselineKind  # "zeros" only for methods without a baseline
    noise: float
    n_targets: int
    predicted: bool  # targets are the argmax of the outputs
    reduce: Reduction | None


def as_output(output: Output, logits: jax.Array) -> jax.Array:
    """Logits (n, N) as the explained output: logits, probabilities or log-probabilities."""
    if output == "probability":
        return jax.nn.softmax(logits, axis=-1)
    if output == "log_probability":
        return jax.nn.log_softmax(logits, axis=-1)
    return logits


def blur(x: jax.Array) -> jax.Array:
    """Separable Gaussian blur of one image (H, W, C), sigma = max(H, W) / 16, reflected borders."""
    h, w = x.shape[:2]
    sigma = max(h, w) / 16
    radius = max(1, math.ceil(3 * sigma))
    taps_np = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = jnp.asarray(taps_np / taps_np.sum(), x.dtype)
    for axis, size in ((0, h), (1, w)):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        xp = jnp.pad(x, pad, mode="reflect" if size > radius else "edge")
        windows = jnp.stack([jax.lax.slice_in_dim(xp, k, k + size, axis=axis) for k in range(2 * radius + 1)])
        x = jnp.tensordot(taps, windows, axes=1)
    return x


def baseline(config: Config, x: jax.Array, user: jax.Array, key: jax.Array) -> jax.Array:
    """The integrated-gradients baseline of one image (H, W, C); ``user`` is used when given per image."""
    if config.baseline == "zeros":  # methods without a baseline
        return jnp.zeros_like(x)
    if config.baseline == "blur":
        return blur(x)
    if config.baseline == "uniform":
        u = jax.random.uniform(jax.random.fold_in(key, 0x5EED), x.shape, x.dtype)
        return jnp.min(x) + u * (jnp.max(x) - jnp.min(x))
    return user


# Each method's gradient point j of one image: (z, multiplier), where the
# chunk accumulates weight * multiplier * grad f(z) over the points.
Point: TypeAlias = Callable[
    [Config, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array | None]
]


def point_gradient(
    config: Config, x: jax.Array, base: jax.Array, refs: jax.Array, key: jax.Array, j: jax.Array
) -> tuple[jax.Array, None]:
    """The image itself."""
    return x, None


def point_integrated_gradients(
    config: Config, x: jax.Array, base: jax.Array, refs: jax.Array, key: jax.Array, j: jax.Array
) -> tuple[jax.Array, None]:
    """Node j of the quadrature rule on the straight path from the baseline to the image."""
    alphas, _ = quadrature(config.rule, config.points)
    alpha = jnp.asarray(alphas, x.dtype)[jnp.minimum(j, config.points - 1)]
    return base + alpha * (x - base), None


def point_expected_gradients(
    config: Config, x: jax.Array, base: jax.Array, refs: jax.Array, key: jax.Array, j: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """A uniform point on the path from a random reference to the image, with multiplier x - reference."""
    k_ref, k_alpha = jax.random.split(jax.random.fold_in(key, j))
    ref = refs[jax.random.randint(k_ref, (), 0, refs.shape[0])]
    alpha = jax.random.uniform(k_alpha, (), x.dtype)
    return ref + alpha * (x - ref), x - ref


def point_smoothgrad(
    config: Config, x: jax.Array, base: jax.Array, refs: jax.Array, key: jax.Array, j: jax.Array
) -> tuple[jax.Array, None]:
    """The image plus Gaussian noise scaled to its value range."""
    sigma = config.noise * (jnp.max(x) - jnp.min(x))
    return x + sigma * jax.random.normal(jax.random.fold_in(key, j), x.shape, x.dtype), None


#: The gradient point of each gradient method (Grad-CAM has its own kernel).
POINTS: dict[Method, Point] = {
    "gradient": point_gradient,
    "gradient_x_input": point_gradient,
    "integrated_gradients": point_integrated_gradients,
    "expected_gradients": point_expected_gradients,
    "smoothgrad": point_smoothgrad,
    "smoothgrad_squared": point_smoothgrad,
    "vargrad": point_smoothgrad,
}


def point_weights(config: Config, j: jax.Array, dtype: Any) -> jax.Array:
    """Per-point weights; rows past the last point (padding) weigh 0."""
    if config.method == "integrated_gradients":
        _, w_np = quadrature(config.rule, config.points)
        w = jnp.asarray(w_np, dtype)[jnp.minimum(j, config.points - 1)]
    else:
        w = jnp.full(j.shape, 1.0 / config.points, dtype)
    return jnp.where(j < config.points, w, 0)


def finish(config: Config, x: jax.Array, base: jax.Array, first: jax.Array, second: jax.Array) -> jax.Array:
    """The attribution (H, W, C) from the weighted sums of gradients (first) and squared gradients (second)."""
    if config.method == "gradient_x_input":
        return x * first
    if config.method == "integrated_gradients":
        return (x - base) * first
    if config.method == "smoothgrad_squared":
        return second
    if config.method == "vargrad":
        return jnp.maximum(second - first * first, 0)
    return first


def reduce_channels(maps: jax.Array, reduce: Reduction | None) -> jax.Array:
    """Maps (..., C) reduced over the channel axis, or unchanged for None."""
    if reduce is None:
        return maps
    if reduce == "sum":
        return maps.sum(-1)
    if reduce == "abs_sum":
        return jnp.abs(maps).sum(-1)
    if reduce == "max_abs":
        return jnp.abs(maps).max(-1)
    return jnp.sqrt((maps * maps).sum(-1))


def image_keys(seed: jax.Array, index: jax.Array) -> jax.Array:
    """One random key per image, from the seed and the image's position in the batch."""
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(index)


def select(values: jax.Array, targets: jax.Array) -> jax.Array:
    """Values (b, N), targets (b, T) -> (b, T)."""
    return jnp.take_along_axis(values, targets, axis=1)


def explain_outputs(
    explained: Explained,
    config: Config,
    x: jax.Array,
    user: jax.Array,
    targets: jax.Array,
    index: jax.Array,
    seed: jax.Array,
) -> dict[str, jax.Array]:
    """Targets (b, T), predicted classes (b,) and the explained outputs at the images and (IG) at the baselines."""
    out = explained(x)
    # softmax is monotonic: the argmax of any output kind is the predicted class
    predicted = jnp.argmax(out, axis=1).astype(jnp.int32)
    if config.predicted:
        targets = predicted[:, None]
    result = {"targets": targets.astype(jnp.int32), "output": select(out, targets), "predicted": predicted}
    if config.method == "integrated_gradients":
        base = jax.vmap(functools.partial(baseline, config))(x, user, image_keys(seed, index))
        result["baseline_output"] = select(explained(base), targets)
    return result


def gradient_chunk(
    explained: Explained,
    config: Config,
    x: jax.Array,
    user: jax.Array,
    targets: jax.Array,
    index: jax.Array,
    seed: jax.Array,
    refs: jax.Array,
    j: jax.Array,
    first: jax.Array,
    second: jax.Array,
    shard: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Gradients at points ``j`` (p,) of every image, added to the running sums.

    ``x`` (b, H, W, C), ``targets`` (b, T); ``first``/``second`` (b, T, H, W, C)
    the running sums; ``shard`` constrains the (b * p) rows' layout. Returns the
    new sums, the finished (reduced) attribution (b, T, H, W[, C]) and its
    totals (b, T) (integrated gradients' completeness).
    """
    b, p, t = x.shape[0], j.shape[0], config.n_targets
    keys = image_keys(seed, index)
    base = jax.vmap(functools.partial(baseline, config))(x, user, keys)
    point = functools.partial(POINTS[config.method], config)
    z, mult = jax.vmap(jax.vmap(point, (None, None, None, None, 0)), (0, 0, None, 0, None))(x, base, refs, keys, j)
    z = z.reshape((b * p,) + x.shape[1:])
    if shard is not None:
        z = shard(z)
    out, pullback = jax.vjp(explained, z)
    rows_targets = jnp.repeat(targets, p, axis=0)  # (b*p, T)
    cotangents = jax.nn.one_hot(rows_targets.T, out.shape[1], dtype=out.dtype)  # (T, b*p, N)
    if t == 1:  # one backward pass: no vmap, whose size-1 batch axis XLA:CPU handles less well
        grads = pullback(cotangents[0])[0][None]
    else:
        (grads,) = jax.vmap(pullback)(cotangents)  # (T, b*p, H, W, C)
    grads = grads.reshape((t, b, p) + x.shape[1:])
    w = point_weights(config, j, grads.dtype)[:, None, None, None]
    weighted = grads if mult is None else grads * mult[None]
    first = first + jnp.einsum("p...,tbp...->bt...", w, weighted)
    if config.method in SQUARE_METHODS:
        second = second + jnp.einsum("p...,tbp...->bt...", w, grads * grads)
    finished = jax.vmap(jax.vmap(functools.partial(finish, config), (None, None, 0, 0)))
    attribution = finished(x, base, first, second)
    totals = attribution.sum(axis=(2, 3, 4))  # (b, T): IG's completeness
    return first, second, reduce_channels(attribution, config.reduce), totals
