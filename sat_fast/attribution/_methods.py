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
import numbers
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from sat_fast._typing import Method, Output, QuadratureRule, Reduction, check_choice
from sat_fast._validate import positive_int
from sat_fast.attribution._options import AUTO_REDUCE, NOISE_METHODS, SQUARE_METHODS
from sat_fast.attribution._quadrature import quadrature

# Every contraction of ours runs at full float32 precision: XLA's default on
# GPUs (TF32, 10-bit mantissa) would round the saliency by ~1e-3 relative, a
# silent change of the numbers with the backend. The user's model keeps its own.
FULL_PRECISION = jax.lax.Precision.HIGHEST

__all__ = [
    "FULL_PRECISION",
    "POINTS",
    "BaselineKind",
    "Config",
    "Explained",
    "Point",
    "as_output",
    "attributions",
    "baseline",
    "baselines",
    "blur",
    "finish",
    "gradient_sums",
    "image_keys",
    "make_config",
    "point_weights",
    "predicted_class",
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


def make_config(
    method: Any,
    *,
    output: Any,
    reduce: Any,
    steps: Any,
    rule: Any,
    samples: Any,
    noise: Any,
    n_targets: int = 1,
    predicted: bool = False,
) -> Config:
    """The checked :class:`Config` of the options shared by every front end (baseline kind ``"zeros"``).

    Raises ``ValueError``/``TypeError`` naming the option for unknown values,
    non-positive ``steps``/``samples``, a negative or non-finite ``noise``, a
    rule that cannot use ``steps`` or a channel reduction for Grad-CAM.
    """
    method = check_choice(method, "method", Method)
    output = check_choice(output, "output", Output)
    reduction: Reduction | None
    if reduce == "auto":
        reduction = AUTO_REDUCE[method]
    elif method == "gradcam":
        raise ValueError(f"gradcam maps have no channel axis; use reduce='auto', got {reduce!r}")
    else:
        reduction = check_choice(reduce, "reduce", Reduction, allow_none=True)
    rule = check_choice(rule, "rule", QuadratureRule) if method == "integrated_gradients" else rule
    if method == "integrated_gradients":
        points = positive_int(steps, "steps")
        quadrature(rule, points)  # trapezoid needs 2 steps
    elif method in NOISE_METHODS or method == "expected_gradients":
        points = positive_int(samples, "samples")
    else:
        points = 1
    if method in NOISE_METHODS and (not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    return Config(method, output, points, rule, "zeros", float(noise), n_targets, predicted, reduction)


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
        x = jnp.tensordot(taps, windows, axes=1, precision=FULL_PRECISION)
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


def finish(config: Config, x: jax.Array, base: jax.Array, first: jax.Array, second: jax.Array | None) -> jax.Array:
    """The attribution (H, W, C) from the weighted sums of gradients (first) and squared gradients (second)."""
    if config.method == "gradient_x_input":
        return x * first
    if config.method == "integrated_gradients":
        return (x - base) * first
    if config.method == "smoothgrad_squared" and second is not None:
        return second
    if config.method == "vargrad" and second is not None:
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


def image_keys(key: jax.Array, index: jax.Array) -> jax.Array:
    """One random key per image: ``key`` folded with the image's index (its position in the whole input).

    The randomness of an image therefore depends on its index only, never on
    how the images are split into batches or chunks.
    """
    return jax.vmap(jax.random.fold_in, (None, 0))(key, index)


def baselines(config: Config, x: jax.Array, user: jax.Array, keys: jax.Array) -> jax.Array:
    """The baselines (b, H, W, C) of images ``x``; ``user`` (b, H, W, C) is used for ``baseline="array"``."""
    return jax.vmap(functools.partial(baseline, config))(x, user, keys)


def select(values: jax.Array, targets: jax.Array) -> jax.Array:
    """Values (b, N), targets (b, T) -> (b, T)."""
    return jnp.take_along_axis(values, targets, axis=1)


def predicted_class(outputs: jax.Array) -> jax.Array:
    """The predicted class (b,) int32: the argmax of any output kind (softmax is monotonic)."""
    return jnp.argmax(outputs, axis=1).astype(jnp.int32)


def gradient_sums(
    explained: Explained,
    config: Config,
    x: jax.Array,
    base: jax.Array,
    refs: jax.Array,
    keys: jax.Array,
    targets: jax.Array,
    j: jax.Array,
    shard: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Weighted sums of the gradients at points ``j`` (p,) of every image: the work of every gradient method.

    ``x`` and ``base`` (b, H, W, C), ``refs`` (R, H, W, C) (expected
    gradients' reference set), ``keys`` (b,) per-image random keys,
    ``targets`` (b, T) int. Returns ``(first, second)``, each (b, T, H, W, C):
    the sums of weight * multiplier * gradient and (for smoothgrad_squared and
    vargrad, else None) of weight * gradient ** 2. Points past
    ``config.points`` weigh 0 (padding of a ragged chunk). ``shard``
    constrains the layout of the (b * p) rows.
    """
    b, p, t = x.shape[0], j.shape[0], targets.shape[1]
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
    first = jnp.einsum("p...,tbp...->bt...", w, weighted, precision=FULL_PRECISION)
    second = (
        jnp.einsum("p...,tbp...->bt...", w, grads * grads, precision=FULL_PRECISION)
        if config.method in SQUARE_METHODS
        else None
    )
    return first, second


def attributions(
    config: Config, x: jax.Array, base: jax.Array, first: jax.Array, second: jax.Array | None
) -> jax.Array:
    """The finished attributions (b, T, H, W, C) from the sums of :func:`gradient_sums` (over all points)."""
    finished = jax.vmap(jax.vmap(functools.partial(finish, config), (None, None, 0, 0 if second is not None else None)))
    return finished(x, base, first, second)
