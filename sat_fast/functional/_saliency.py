"""Saliency methods as pure JAX functions of ``(fn, images, targets)``, for use under jit, vmap, grad and sharding.

Every function here traces to one JAX computation: no host synchronisation,
no chunking, no Python-side state. The methods themselves (gradient points,
quadrature weights, how the sums finish a map, Grad-CAM) are those of
:mod:`sat_fast.attribution._methods` and :mod:`sat_fast.attribution._gradcam`,
the same code that :func:`sat_fast.saliency` runs chunk by chunk; this module
adds the option handling of a user-facing function. Checks are static (shapes,
dtypes, option values); what only values could reveal cannot raise under
``jit``, so a target outside ``[0, N)`` gives a map of NaN rather than a
silently wrong one.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from sat_fast._typing import Method, Output, QuadratureRule, Reduction
from sat_fast._validate import shape_str
from sat_fast.attribution._gradcam import gradcam_layer_path, gradcam_maps
from sat_fast.attribution._methods import (
    BaselineKind,
    Config,
    as_output,
    attributions,
    baselines,
    gradient_sums,
    image_keys,
    make_config,
    predicted_class,
    reduce_channels,
)
from sat_fast.attribution._models import linen_parts
from sat_fast.attribution._options import NOISE_METHODS

__all__ = [
    "FunctionalBaseline",
    "attribute",
    "expected_gradients",
    "gradcam",
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "smoothgrad_squared",
    "vargrad",
]

#: Integrated gradients' baseline: a kind, a constant, or an array broadcastable to the images;
#: for expected gradients the reference set (R, H, W, C).
FunctionalBaseline: TypeAlias = Literal["zeros", "blur", "uniform"] | float | ArrayLike
#: Reduction option: a channel reduction, "auto" (per method) or None (keep channels).
ReduceOption: TypeAlias = Reduction | Literal["auto"] | None

_RANDOM_BASELINES = ("uniform",)


def _images(images: Any) -> jax.Array:
    x = jnp.asarray(images)
    if x.ndim != 4:
        raise ValueError(
            f"images must have shape (B, H, W, C), got {shape_str(x.shape)}; "
            "use x[None] for one image and x[..., None] for grayscale"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"images must be a floating-point array, got dtype {x.dtype}")
    return x


def _targets(targets: Any, b: int) -> tuple[jax.Array | None, bool]:
    """(targets (B, T) int32 or None for the predicted class, whether the maps keep the target axis)."""
    if targets is None or (isinstance(targets, str) and targets == "predicted"):
        return None, False
    if isinstance(targets, str):
        raise ValueError(f"unknown targets {targets!r}; expected 'predicted', an int or an int array (B,) or (B, T)")
    t = jnp.asarray(targets)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"targets must be integer class indices, got dtype {t.dtype}")
    t = t.astype(jnp.int32)
    if t.ndim == 0:
        return jnp.full((b, 1), t), False
    if t.ndim == 1 and t.shape[0] == b:
        return t[:, None], False
    if t.ndim == 2 and t.shape[0] == b and t.shape[1] >= 1:
        return t, True
    raise ValueError(f"targets must have one class per image ({b},) or (B, T) classes, got shape {shape_str(t.shape)}")


def _index(index: Any, b: int) -> jax.Array:
    if index is None:
        return jnp.arange(b, dtype=jnp.int32)
    i = jnp.asarray(index)
    if i.shape != (b,) or not jnp.issubdtype(i.dtype, jnp.integer):
        raise ValueError(f"index must be an int array of one global index per image ({b},), got {shape_str(i.shape)}")
    return i.astype(jnp.int32)


def _baseline(config: Config, baseline: Any, x: jax.Array) -> tuple[Config, jax.Array, jax.Array]:
    """(config with the baseline kind, per-image baselines given by the user (B, H, W, C), reference set)."""
    unused = jnp.zeros((1,) + x.shape[1:], x.dtype)
    if config.method == "expected_gradients":
        if isinstance(baseline, str):
            raise ValueError(
                f"expected_gradients needs a reference set: pass baseline=array of shape (R, H, W, C), got {baseline!r}"
            )
        refs = jnp.asarray(baseline)
        if refs.ndim != 4 or refs.shape[1:] != x.shape[1:] or refs.shape[0] < 1:
            raise ValueError(
                f"reference set shape {shape_str(refs.shape)} does not match images {shape_str(x.shape)}: "
                "expected_gradients needs baseline of shape (R, H, W, C)"
            )
        return config._replace(baseline="array"), x, refs.astype(x.dtype)
    if config.method != "integrated_gradients":
        return config, x, unused
    kind: BaselineKind
    if isinstance(baseline, str):
        if baseline not in ("zeros", "blur", "uniform"):
            raise ValueError(
                f"unknown baseline {baseline!r}; expected 'zeros', 'blur', 'uniform', a number or an array"
            )
        kind = "zeros" if baseline == "zeros" else "blur" if baseline == "blur" else "uniform"
        return config._replace(baseline=kind), x, unused
    is_number = isinstance(baseline, numbers.Real) and not isinstance(baseline, (bool, np.bool_))
    user = jnp.asarray(baseline)
    if not is_number and not jnp.issubdtype(user.dtype, jnp.floating):
        raise TypeError(f"baseline must be a floating-point array or a number, got dtype {user.dtype}")
    if is_number and not math.isfinite(float(baseline)):
        raise ValueError(f"baseline constant must be finite, got {baseline!r}")
    try:
        user = jnp.broadcast_to(user.astype(x.dtype), x.shape)
    except ValueError:
        raise ValueError(
            f"baseline shape {shape_str(user.shape)} does not broadcast to images {shape_str(x.shape)}"
        ) from None
    return config._replace(baseline="array"), user, unused


def _needs_key(config: Config) -> bool:
    return (
        config.method in NOISE_METHODS
        or config.method == "expected_gradients"
        or (config.method == "integrated_gradients" and config.baseline in _RANDOM_BASELINES)
    )


def _invalid_to_nan(maps: jax.Array, targets: jax.Array, n_classes: int) -> jax.Array:
    """Maps (B, T, ...) of targets outside [0, N) set to NaN (nothing can raise under jit)."""
    bad = (targets < 0) | (targets >= n_classes)
    return jnp.where(bad.reshape(bad.shape + (1,) * (maps.ndim - 2)), jnp.nan, maps)


def attribute(
    fn: Callable[[jax.Array], jax.Array],
    images: ArrayLike,
    targets: ArrayLike | Literal["predicted"] | None = None,
    *,
    method: Method = "integrated_gradients",
    key: jax.Array | None = None,
    index: ArrayLike | None = None,
    reduce: ReduceOption = "auto",
    steps: int = 32,
    rule: QuadratureRule = "gauss_legendre",
    baseline: FunctionalBaseline = "zeros",
    samples: int = 32,
    noise: float = 0.15,
    output: Output = "logit",
    layer: str | None = None,
) -> jax.Array:
    """Saliency maps of a batch of images under any saliency method: a pure, jittable JAX function.

    The same methods and options as :func:`sat_fast.saliency`, computed in one
    traced computation (every gradient point of every image at once: batch
    the images to fit memory). Composes with ``jax.jit``, ``jax.vmap``,
    ``jax.grad`` and sharded inputs; nothing is synchronised with the host.

    Parameters
    ----------
    fn
        The model: a JAX function from images (B, H, W, C) to logits (B, N)
        (``partial(model.apply, variables)``, a bound linen module, a Flax nnx
        module, ``jax.vmap`` of an Equinox module, a plain function). Its
        parameters may be traced values (e.g. arguments of the jitted caller).
    images
        (B, H, W, C) floating-point images.
    targets
        The explained classes: None or ``"predicted"`` (the argmax of the
        model's output, from one extra forward pass), an int, an int array
        (B,) or an int array (B, T) (the maps gain a target axis). A target
        outside ``[0, N)`` gives a map of NaN.
    method
        ``"integrated_gradients"``, ``"gradient"``, ``"gradient_x_input"``,
        ``"expected_gradients"``, ``"smoothgrad"``, ``"smoothgrad_squared"``,
        ``"vargrad"`` or ``"gradcam"``.
    key
        A JAX PRNG key (``jax.random.key(seed)``), needed by the random
        methods (expected gradients, the smoothgrad family) and the uniform
        baseline. Each image's randomness is ``key`` folded in with its
        ``index``, so results do not depend on how images are batched.
        ``saliency(..., seed=s)`` equals ``key=jax.random.key(s)`` with
        ``index`` the images' positions.
    index
        The images' global indices (B,) int (default ``arange(B)``): pass the
        position of each image in the whole data set when explaining it in
        batches.
    reduce, steps, rule, baseline, samples, noise, output, layer
        As in :func:`sat_fast.saliency`.

    Returns
    -------
    jax.Array
        Maps (B, H, W), or (B, T, H, W) for (B, T) targets, with a trailing
        channel axis when ``reduce=None``; the images' dtype.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.linspace(-1.0, 1.0, 8 * 8 * 3 * 4).reshape(8 * 8 * 3, 4)
    >>> fn = lambda x: x.reshape(x.shape[0], -1) @ w
    >>> images = jnp.linspace(0.0, 1.0, 5 * 8 * 8 * 3).reshape(5, 8, 8, 3)
    >>> maps = jax.jit(lambda x, t: attribute(fn, x, t, steps=8))(images, jnp.array([0, 1, 2, 3, 0]))
    >>> maps.shape
    (5, 8, 8)
    >>> key = jax.random.key(0)
    >>> noisy = attribute(fn, images, method="smoothgrad", samples=4, key=key)
    >>> halves = [attribute(fn, images[s], method="smoothgrad", samples=4, key=key, index=jnp.arange(5)[s])
    ...           for s in (slice(0, 2), slice(2, 5))]
    >>> bool(jnp.allclose(noisy, jnp.concatenate(halves), rtol=1e-5, atol=1e-6))
    True
    """
    x = _images(images)
    b = x.shape[0]
    config = make_config(method, output=output, reduce=reduce, steps=steps, rule=rule, samples=samples, noise=noise)
    target_array, target_axis = _targets(targets, b)

    def explained(z: jax.Array) -> jax.Array:
        return as_output(config.output, fn(z))

    if config.method == "gradcam":
        maps = _gradcam(fn, x, target_array, config.output, layer)
    else:
        if layer is not None:
            raise ValueError(f"layer is only used by method='gradcam', got layer={layer!r} with method={method!r}")
        config, user, refs = _baseline(config, baseline, x)
        if key is None:
            if _needs_key(config):
                raise ValueError(f"method={method!r} is random: pass key=jax.random.key(seed)")
            key = jax.random.key(0)  # unused by deterministic methods
        keys = image_keys(key, _index(index, b))
        outputs = None
        if target_array is None:
            outputs = explained(x)
            target_array = predicted_class(outputs)[:, None]
        base = baselines(config, x, user, keys)
        first, second = gradient_sums(explained, config, x, base, refs, keys, target_array, jnp.arange(config.points))
        maps = reduce_channels(attributions(config, x, base, first, second), config.reduce)
        n_classes = jax.eval_shape(explained, jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype)).shape[1]  # type: ignore[no-untyped-call]  # unannotated in jax
        maps = _invalid_to_nan(maps, target_array, n_classes)
    return maps if target_axis else maps[:, 0]


def _gradcam(fn: Any, x: jax.Array, targets: jax.Array | None, output: Output, layer: str | None) -> jax.Array:
    parts = linen_parts(fn)
    if parts is None:
        raise TypeError(
            "gradcam needs a Flax linen model: pass functools.partial(model.apply, variables) or model.bind(variables)"
        )
    module, variables = parts
    image = jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype)  # type: ignore[no-untyped-call]  # unannotated in jax
    path = gradcam_layer_path(module, variables, layer, image)
    if targets is None:
        targets = predicted_class(as_output(output, module.apply(variables, x)))[:, None]
    maps, out = gradcam_maps(module, variables, path, output, x, targets)
    return _invalid_to_nan(maps, targets, out.shape[1])


def gradient(
    fn: Callable[[jax.Array], jax.Array],
    images: ArrayLike,
    targets: ArrayLike | Literal["predicted"] | None = None,
    *,
    reduce: ReduceOption = "auto",
    output: Output = "logit",
) -> jax.Array:
    """The gradient of the explained output (``reduce="auto"``: max |gradient| over channels).

    See :func:`attribute` for the parameters.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> fn = lambda x: jnp.stack([x.sum((1, 2, 3)), -2 * x.sum((1, 2, 3))], axis=1)
    >>> gradient(fn, jnp.ones((1, 2, 2, 1)), jnp.array([1]))[0].tolist()
    [[2.0, 2.0], [2.0, 2.0]]
    """
    return attribute(fn, images, targets, method="gradient", reduce=reduce, output=output)


def gradient_x_input(
    fn: Callable[[jax.Array], jax.Array],
    images: ArrayLike,
    targets: ArrayLike | Literal["predicted"] | None = None,
    *,
    reduce: ReduceOption = "auto",
    output: Output = "logit",
) -> jax.Array:
    """Gradient times input (``reduce="auto"``: summed over channels). See :func:`attribute`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> fn = lambda x: 3 * x.sum((1, 2, 3))[:, None]
    >>> gradient_x_input(fn, jnp.full((1, 1, 2, 1), 2.0), jnp.array([0]))[0].tolist()
    [[6.0, 6.0]]
    """
    return attribute(fn, images, targets, method="gradient_x_input", reduce=reduce, output=output)


def integrated_gradients(
    fn: Callable[[jax.Array], jax.Array],
    images: ArrayLike,
    targets: ArrayLike | Literal["predicted"] | None = None,
    *,
    steps: int = 32,
    rule: QuadratureRule = "gauss_legendre",
    baseline: FunctionalBaseline = "zeros",
    key: jax.Array | None = None,
    index: ArrayLike | None = None,
    reduce: ReduceOption = "auto",
    output: Output = "logit",
) -> jax.Array:
    """Integrated gradients along the straight path from ``baseline`` to each image. See :func:`attribute`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> fn = lambda x: (x**2).sum((1, 2, 3))[:, None]
    >>> maps = integrated_gradients(fn, jnp.full((1, 1, 2, 1), 3.0), jnp.array([0]), steps=4)
    >>> [round(v, 4) for v in maps[0, 0].tolist()]  # completeness: the maps sum to f(x) - f(0) = 18
    [9.0, 9.0]
    """
    return attribute(
        fn,
        images,
        targets,
        method="integrated_gradients",
        steps=steps,
        rule=rule,
        baseline=baseline,
        key=key,
        index=index,
        reduce=reduce,
        output=output,
    )


def expected_gradients(
    fn: Callable[[jax.Array], jax.Array],
    images: ArrayLike,
    targets: ArrayLike | Literal["predicted"] | None = None,
    *,
    baseline: ArrayLike,
    key: jax.Array,
    index: ArrayLike | None = None,
    samples: int = 32,
    reduce: ReduceOption = "auto",
    output: Output = "logit",
) -> jax.Array:
    """Expected gradients: integrated gradients from references drawn from ``baseline`` (R, H, W, C).

    See :func:`attribute`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fn = lambda x: 2 * x.sum((1, 2, 3))[:, None]
    >>> refs = jnp.zeros((3, 1, 2, 1))
    >>> expected_gradients(fn, jnp.ones((1, 1, 2, 1)), jnp.array([0]), baseline=refs, key=jax.random.key(0))[0].tolist()
    [[2.0, 2.0]]
    """
    return attribute(
        fn,
        images,
        targets,
        method="expected_gradients",
        baseline=baseline,
        key=key,
        index=index,
        samples=samples,
        reduce=reduce,
        output=output,
    )


def smoothgrad(
    fn: Callable[[jax.Array], jax.Array],
    images: ArrayLike,
    targets: ArrayLike | Literal["predicted"] | None = None,
    *,
    key: jax.Array,
    index: ArrayLike | None = None,
    samples: int = 32,
    noise: float = 0.15,
    reduce: ReduceOption = "auto",
    output: Output = "logit",
) -> jax.Array:
    """SmoothGrad: the mean gradient over ``samples`` noisy copies of each image. See :func:`attribute`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fn = lambda x: 2 * x.sum((1, 2, 3))[:, None]
    >>> smoothgrad(fn, jnp.ones((1, 1, 2, 1)), jnp.array([0]), key=jax.random.key(0), samples=3)[0].tolist()
    [[2.0, 2.0]]
    """
    return attribute(
        fn,
        images,
        targets,
        method="smoothgrad",
        key=key,
        index=index,
        samples=samples,
        noise=noise,
        reduce=reduce,
        output=output,
    )


def smoothgrad_squared(
    fn: Callable[[jax.Array], jax.Array],
    images: ArrayLike,
    targets: ArrayLike | Literal["predicted"] | None = None,
    *,
    key: jax.Array,
    index: ArrayLike | None = None,
    samples: int = 32,
    noise: float = 0.15,
    reduce: ReduceOption = "auto",
    output: Output = "logit",
) -> jax.Array:
    """SmoothGrad squared: the mean squared gradient over noisy copies. See :func:`attribute`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fn = lambda x: 2 * x.sum((1, 2, 3))[:, None]
    >>> smoothgrad_squared(fn, jnp.ones((1, 1, 2, 1)), jnp.array([0]), key=jax.random.key(0), samples=3)[0].tolist()
    [[4.0, 4.0]]
    """
    return attribute(
        fn,
        images,
        targets,
        method="smoothgrad_squared",
        key=key,
        index=index,
        samples=samples,
        noise=noise,
        reduce=reduce,
        output=output,
    )


def vargrad(
    fn: Callable[[jax.Array], jax.Array],
    images: ArrayLike,
    targets: ArrayLike | Literal["predicted"] | None = None,
    *,
    key: jax.Array,
    index: ArrayLike | None = None,
    samples: int = 32,
    noise: float = 0.15,
    reduce: ReduceOption = "auto",
    output: Output = "logit",
) -> jax.Array:
    """VarGrad: the variance of the gradient over noisy copies. See :func:`attribute`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fn = lambda x: 2 * x.sum((1, 2, 3))[:, None]  # a constant gradient has no variance
    >>> vargrad(fn, jnp.ones((1, 1, 2, 1)), jnp.array([0]), key=jax.random.key(0), samples=3)[0].tolist()
    [[0.0, 0.0]]
    """
    return attribute(
        fn,
        images,
        targets,
        method="vargrad",
        key=key,
        index=index,
        samples=samples,
        noise=noise,
        reduce=reduce,
        output=output,
    )


def gradcam(
    fn: Callable[..., Any],
    images: ArrayLike,
    targets: ArrayLike | Literal["predicted"] | None = None,
    *,
    layer: str,
    output: Output = "logit",
) -> jax.Array:
    """Grad-CAM of a Flax linen model at ``layer`` (a submodule path joined by "/"). See :func:`attribute`.

    ``fn`` is ``functools.partial(model.apply, variables)`` or
    ``model.bind(variables)``; the maps (B, H, W) are relu(sum_k mean_hw(d
    out / d A_k) * A_k) of the layer's activations A, bilinearly resized.
    """
    return attribute(fn, images, targets, method="gradcam", layer=layer, output=output)
