"""Gradient-based saliency maps for any JAX image classifier, batched and chunked to a memory budget.

One entry point, :func:`saliency`. Each attribution method is a small pure
function that turns an image into *gradient points* (the inputs at which the
explained output is differentiated) plus a rule that combines the gradients.
A single driver lays the images x points work out as fixed-size chunks, so
that

* one compiled kernel serves every call with the same shapes (a ragged last
  block is padded with zero-weight rows, never recompiled);
* the work of one chunk fits ``memory_budget`` (checked against XLA's own
  memory analysis of the compiled kernel);
* on several devices the rows of a chunk are sharded across them.
"""

from __future__ import annotations

import collections
import functools
import math
import numbers
import operator
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sat_fast._validate import positive_int, shape_str

__all__ = ["saliency", "METHODS", "RULES", "REDUCTIONS", "OUTPUTS"]

METHODS = (
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "expected_gradients",
    "smoothgrad",
    "smoothgrad_squared",
    "vargrad",
    "gradcam",
)
RULES = ("left", "right", "midpoint", "trapezoid", "gauss_legendre")
REDUCTIONS = ("sum", "abs_sum", "max_abs", "l2")
OUTPUTS = ("logit", "probability", "log_probability")

# reduce="auto": sum keeps the completeness of path methods and the sign of
# input-times-gradient; max-abs is the classic vanilla-gradient map (Simonyan
# et al. 2013); SmoothGrad is shown as |gradient| summed over channels (as in
# the SmoothGrad paper); the squared and variance maps are already >= 0.
AUTO_REDUCE = {
    "gradient": "max_abs",
    "gradient_x_input": "sum",
    "integrated_gradients": "sum",
    "expected_gradients": "sum",
    "smoothgrad": "abs_sum",
    "smoothgrad_squared": "sum",
    "vargrad": "sum",
    "gradcam": None,
}

_PATH_METHODS = ("integrated_gradients", "expected_gradients")
_NOISE_METHODS = ("smoothgrad", "smoothgrad_squared", "vargrad")
_SQUARE_METHODS = ("smoothgrad_squared", "vargrad")

# Chunk sizing for speed, measured with benchmarks/bench_saliency.py (see
# benchmarks/RESULTS.md). On XLA:CPU small batches win: the 64x64 CNN (5.5 MB
# of forward intermediates per point by the jaxpr count below) runs best at
# 8-16 points per chunk and at half speed from 64 points; ResNet-18 at 224x224
# (136 MB per point) runs best one point at a time. A chunk of at most 64 MB of
# counted intermediates, rounded down to a power of two, fits both. On
# accelerators bigger batches keep winning, so there only the budget limits.
_CPU_CHUNK_BYTES = 64 * 2**20
_MAX_CHUNK_POINTS = 4096


# --------------------------------------------------------------------------
# Quadrature rules for integrated gradients: nodes in [0, 1], weights sum to 1.


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``alpha`` in [0, 1] and weights (summing to 1) of an IG quadrature rule, in float64."""
    k = np.arange(steps, dtype=np.float64)
    if rule == "left":
        return k / steps, np.full(steps, 1.0 / steps)
    if rule == "right":
        return (k + 1) / steps, np.full(steps, 1.0 / steps)
    if rule == "midpoint":
        return (k + 0.5) / steps, np.full(steps, 1.0 / steps)
    if rule == "trapezoid":
        if steps < 2:
            raise ValueError(f"rule='trapezoid' needs steps >= 2, got {steps}")
        w = np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] /= 2
        return k / (steps - 1), w
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(RULES)}")


# --------------------------------------------------------------------------
# The model: split into a hashable static part and its array leaves, so that a
# fresh ``partial(model.apply, params)`` per call does not trigger a recompile.


class _Static:
    """A hashable stand-in for a static leaf (by value when hashable, else by identity)."""

    __slots__ = ("value", "_key")

    def __init__(self, value: Any) -> None:
        self.value = value
        try:
            hash(value)
            self._key: Any = (0, type(value), value)
        except TypeError:
            self._key = (1, id(value))

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Static) or self._key[:2] != other._key[:2]:
            return False
        try:
            return bool(self._key[-1] == other._key[-1])
        except Exception:
            return self._key[-1] is other._key[-1]


class _ModelSpec(NamedTuple):
    kind: str  # "nnx" | "linen" | "partial" | "plain"
    treedef: Any
    static: tuple  # one entry per leaf: _Static or None (an array leaf)


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray))


def _linen_parts(fn: Any) -> tuple[Any, Any] | None:
    """(module, variables) when fn is a bound linen module or partial(module.apply, variables)."""
    import flax.linen as nn

    if isinstance(fn, nn.Module) and fn.scope is not None:
        return fn.unbind()
    if (
        isinstance(fn, functools.partial)
        and isinstance(getattr(fn.func, "__self__", None), nn.Module)
        and getattr(fn.func, "__name__", "") == "apply"
        and len(fn.args) == 1
        and not fn.keywords
    ):
        return fn.func.__self__, fn.args[0]
    return None


def _split_model(fn: Any) -> tuple[_ModelSpec, list]:
    from flax import nnx

    if isinstance(fn, nnx.Module):
        kind, tree = "nnx", nnx.split(fn)
    elif (parts := _linen_parts(fn)) is not None:
        kind, tree = "linen", parts
    elif isinstance(fn, functools.partial):
        kind, tree = "partial", (fn.func, fn.args, fn.keywords)
    elif callable(fn):
        kind, tree = "plain", fn
    else:
        raise TypeError(f"fn must be a callable from images (B, H, W, C) to logits (B, N), got {type(fn).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    static = tuple(None if _is_array(leaf) else _Static(leaf) for leaf in leaves)
    return _ModelSpec(kind, treedef, static), [leaf for leaf in leaves if _is_array(leaf)]


def _rebuild(model: _ModelSpec, arrays: list) -> Any:
    it = iter(arrays)
    leaves = [next(it) if s is None else s.value for s in model.static]
    return jax.tree_util.tree_unflatten(model.treedef, leaves)


def _apply(model: _ModelSpec, arrays: list, images: jax.Array) -> jax.Array:
    tree = _rebuild(model, arrays)
    if model.kind == "nnx":
        from flax import nnx

        return nnx.merge(*tree)(images)
    if model.kind == "linen":
        module, variables = tree
        return module.apply(variables, images)
    if model.kind == "partial":
        func, args, keywords = tree
        return func(*args, images, **keywords)
    return tree(images)


# --------------------------------------------------------------------------
# Static configuration of one compiled kernel.


class _Spec(NamedTuple):
    model: _ModelSpec
    method: str
    output: str
    points: int  # gradient points per image (steps or samples)
    rule: str
    baseline: str  # "zeros" (unused) | "blur" | "uniform" | "array" (zeros, constants, user arrays)
    noise: float
    n_targets: int
    predicted: bool
    block: int  # images per chunk
    rows: int  # gradient points per image per chunk
    mesh: Any  # jax.sharding.Mesh over the devices, or None
    layer: tuple  # gradcam layer path
    reduce: str | None


def _as_output(output: str, logits: jax.Array) -> jax.Array:
    """Logits (n, N) as the explained output: logits, probabilities or log-probabilities."""
    if output == "probability":
        return jax.nn.softmax(logits, axis=-1)
    if output == "log_probability":
        return jax.nn.log_softmax(logits, axis=-1)
    return logits


def _explained(spec: _Spec, arrays: list, z: jax.Array) -> jax.Array:
    return _as_output(spec.output, _apply(spec.model, arrays, z))


def _blur(x: jax.Array) -> jax.Array:
    """Separable Gaussian blur, sigma = max(H, W) / 16, reflected borders."""
    h, w = x.shape[:2]
    sigma = max(h, w) / 16
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = jnp.asarray(taps / taps.sum(), x.dtype)
    for axis, size in ((0, h), (1, w)):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        xp = jnp.pad(x, pad, mode="reflect" if size > radius else "edge")
        windows = jnp.stack([jax.lax.slice_in_dim(xp, k, k + size, axis=axis) for k in range(2 * radius + 1)])
        x = jnp.tensordot(taps, windows, axes=1)
    return x


def _baseline(spec: _Spec, x: jax.Array, user: jax.Array, key: jax.Array) -> jax.Array:
    """The IG baseline of one image (H, W, C)."""
    if spec.baseline == "zeros":  # methods without a baseline
        return jnp.zeros_like(x)
    if spec.baseline == "blur":
        return _blur(x)
    if spec.baseline == "uniform":
        u = jax.random.uniform(jax.random.fold_in(key, 0x5EED), x.shape, x.dtype)
        return jnp.min(x) + u * (jnp.max(x) - jnp.min(x))
    return user


# Each method's gradient point j of one image: (z, multiplier), where the
# kernel accumulates weight * multiplier * grad f(z) over the points.


def _point_gradient(spec, x, base, refs, key, j):
    return x, None


def _point_integrated_gradients(spec, x, base, refs, key, j):
    alphas, _ = quadrature(spec.rule, spec.points)
    alpha = jnp.asarray(alphas, x.dtype)[jnp.minimum(j, spec.points - 1)]
    return base + alpha * (x - base), None


def _point_expected_gradients(spec, x, base, refs, key, j):
    k_ref, k_alpha = jax.random.split(jax.random.fold_in(key, j))
    ref = refs[jax.random.randint(k_ref, (), 0, refs.shape[0])]
    alpha = jax.random.uniform(k_alpha, (), x.dtype)
    return ref + alpha * (x - ref), x - ref


def _point_smoothgrad(spec, x, base, refs, key, j):
    sigma = spec.noise * (jnp.max(x) - jnp.min(x))
    return x + sigma * jax.random.normal(jax.random.fold_in(key, j), x.shape, x.dtype), None


_POINTS = {
    "gradient": _point_gradient,
    "gradient_x_input": _point_gradient,
    "integrated_gradients": _point_integrated_gradients,
    "expected_gradients": _point_expected_gradients,
    "smoothgrad": _point_smoothgrad,
    "smoothgrad_squared": _point_smoothgrad,
    "vargrad": _point_smoothgrad,
}


def _weights(spec: _Spec, j: jax.Array, dtype) -> jax.Array:
    """Per-point weights; rows past the last point (padding) weigh 0."""
    if spec.method == "integrated_gradients":
        _, w = quadrature(spec.rule, spec.points)
        w = jnp.asarray(w, dtype)[jnp.minimum(j, spec.points - 1)]
    else:
        w = jnp.full(j.shape, 1.0 / spec.points, dtype)
    return jnp.where(j < spec.points, w, 0)


def _finish(spec: _Spec, x, base, first, second):
    """The attribution (H, W, C) from the accumulated sums over all points."""
    if spec.method == "gradient_x_input":
        return x * first
    if spec.method == "integrated_gradients":
        return (x - base) * first
    if spec.method == "smoothgrad_squared":
        return second
    if spec.method == "vargrad":
        return jnp.maximum(second - first * first, 0)
    return first


def _reduce(maps: jax.Array, reduce: str | None) -> jax.Array:
    if reduce is None:
        return maps
    if reduce == "sum":
        return maps.sum(-1)
    if reduce == "abs_sum":
        return jnp.abs(maps).sum(-1)
    if reduce == "max_abs":
        return jnp.abs(maps).max(-1)
    return jnp.sqrt((maps * maps).sum(-1))


def _image_keys(seed: jax.Array, index: jax.Array) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(index)


def _shard_rows(spec: _Spec, z: jax.Array) -> jax.Array:
    if spec.mesh is None:
        return z
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.lax.with_sharding_constraint(z, NamedSharding(spec.mesh, PartitionSpec("rows")))


def _select(values: jax.Array, targets: jax.Array) -> jax.Array:
    """values (b, N), targets (b, T) -> (b, T)."""
    return jnp.take_along_axis(values, targets, axis=1)


def _prepare(spec: _Spec, arrays, x, user, targets, index, seed):
    """Targets, explained outputs at the images and (IG) at the baselines, for one block of images."""
    out = _explained(spec, arrays, x)
    if spec.predicted:  # softmax is monotonic: the argmax of any output kind is the predicted class
        targets = jnp.argmax(out, axis=1)[:, None]
    result = {"targets": targets.astype(jnp.int32), "output": _select(out, targets)}
    if spec.method == "integrated_gradients":
        base = jax.vmap(functools.partial(_baseline, spec))(x, user, _image_keys(seed, index))
        result["baseline_output"] = _select(_explained(spec, arrays, base), targets)
    return result


def _chunk(spec: _Spec, arrays, x, user, targets, index, seed, refs, j0, first, second):
    """Gradients at points j0 .. j0+rows of every image in the block, added to the running sums.

    x (b, H, W, C), targets (b, T); first/second (b, T, H, W, C) running sums.
    Returns the new sums and the finished attribution (b, T, H, W, C).
    """
    b, p, t = spec.block, spec.rows, spec.n_targets
    keys = _image_keys(seed, index)
    base = jax.vmap(functools.partial(_baseline, spec))(x, user, keys)
    j = j0 + jnp.arange(p)
    point = functools.partial(_POINTS[spec.method], spec)
    z, mult = jax.vmap(jax.vmap(point, (None, None, None, None, 0)), (0, 0, None, 0, None))(x, base, refs, keys, j)
    z = _shard_rows(spec, z.reshape((b * p,) + x.shape[1:]))
    out, pullback = jax.vjp(lambda zz: _explained(spec, arrays, zz), z)
    rows_targets = jnp.repeat(targets, p, axis=0)  # (b*p, T)
    cotangents = jax.nn.one_hot(rows_targets.T, out.shape[1], dtype=out.dtype)  # (T, b*p, N)
    if t == 1:  # one backward pass: no vmap, whose size-1 batch axis XLA:CPU handles less well
        grads = pullback(cotangents[0])[0][None]
    else:
        (grads,) = jax.vmap(pullback)(cotangents)  # (T, b*p, H, W, C)
    grads = grads.reshape((t, b, p) + x.shape[1:])
    w = _weights(spec, j, grads.dtype)[:, None, None, None]
    weighted = grads if mult is None else grads * mult[None]
    first = first + jnp.einsum("p...,tbp...->bt...", w, weighted)
    if spec.method in _SQUARE_METHODS:
        second = second + jnp.einsum("p...,tbp...->bt...", w, grads * grads)
    finish = jax.vmap(jax.vmap(functools.partial(_finish, spec), (None, None, 0, 0)))
    attribution = finish(x, base, first, second)
    totals = attribution.sum(axis=(2, 3, 4))  # (b, T): IG's completeness
    return first, second, _reduce(attribution, spec.reduce), totals


# --------------------------------------------------------------------------
# Grad-CAM on a Flax linen layer, via intermediate capture plus a zero
# perturbation added to the layer's output through a method interceptor.


def _layer_name(path: tuple) -> str:
    return "/".join(path)


def _gradcam_forward(spec: _Spec, arrays, x, delta):
    import flax.linen as nn

    module, variables = _rebuild(spec.model, arrays)
    layer = spec.layer

    def add_delta(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if delta is not None and context.method_name == "__call__" and context.module.path == layer:
            out = out + delta
        return out

    with nn.intercept_methods(add_delta):
        logits, state = module.apply(
            variables,
            x,
            capture_intermediates=lambda m, name: name == "__call__" and m.path == layer,
            mutable=["intermediates"],
        )
    node = state["intermediates"]
    for name in layer:
        node = node[name]
    return _as_output(spec.output, logits), node["__call__"][0]


def _gradcam_layers(model: _ModelSpec, arrays, x) -> dict[str, tuple]:
    """Every linen submodule output of shape (B, h, w, c), by name."""
    module, variables = _rebuild(model, arrays)

    def run(xx):
        return module.apply(variables, xx, capture_intermediates=True, mutable=["intermediates"])[1]

    shapes = jax.eval_shape(run, x)["intermediates"]
    found: dict[str, tuple] = {}

    def walk(node, path):
        for key, value in node.items():
            if key == "__call__":
                if path and len(value) == 1 and len(getattr(value[0], "shape", ())) == 4:
                    found[_layer_name(path)] = value[0].shape
            else:
                walk(value, path + (key,))

    walk(shapes, ())
    return found


def _gradcam_chunk(spec: _Spec, arrays, x, user, targets, index, seed, refs, j0, first, second):
    """Grad-CAM maps (b, T, H, W): relu(sum_k mean_hw(d out / d A_k) * A_k), bilinearly resized."""
    act_shape = jax.eval_shape(lambda: _gradcam_forward(spec, arrays, x, None)[1]).shape
    delta = jnp.zeros(act_shape, x.dtype)
    (out, activation), pullback = jax.vjp(lambda d: _gradcam_forward(spec, arrays, x, d), delta)
    cotangents = jax.nn.one_hot(targets.T, out.shape[1], dtype=out.dtype)  # (T, b, N)
    (grads,) = jax.vmap(lambda c: pullback((c, jnp.zeros_like(activation))))(cotangents)  # (T, b, h, w, k)
    channel_weights = grads.mean(axis=(2, 3))  # (T, b, k)
    cam = jax.nn.relu(jnp.einsum("tbk,bhwk->bthw", channel_weights, activation))
    b, h, w = x.shape[:3]
    cam = jax.image.resize(cam, (b, spec.n_targets, h, w), "bilinear")
    return first, second, cam, cam.sum(axis=(2, 3))


# --------------------------------------------------------------------------
# Compilation cache and chunk sizing.

_COMPILED: collections.OrderedDict = collections.OrderedDict()  # least recently used first
_COMPILED_MAX = 64
_EMBED_MAX_BYTES = 512 * 2**20
_CHUNK_POINTS: dict[Any, int] = {}


class _Kernel(NamedTuple):
    """A compiled ``fun(spec, arrays, *rest)``; ``pinned`` holds the model arrays compiled in as constants."""

    executable: Any
    pinned: list | None

    def __call__(self, arrays, *rest):
        return self.executable(*rest) if self.pinned is not None else self.executable(arrays, *rest)


def _embed_parameters(arrays: list) -> bool:
    """Whether to compile the model's parameters in as constants.

    On XLA:CPU that lets the compiler fold weight layouts and inference-mode
    normalisation into the kernel: ResNet-18 at 224x224 runs ~2x faster per
    point than with the same weights passed as arguments (measured). Only
    immutable jax.Arrays, and at most 512 MiB of them (compile time and memory
    grow with the constants); the cache then keys on the arrays' identity,
    so a fresh ``partial`` over the same variables still reuses the kernel.
    """
    return (
        jax.devices()[0].platform == "cpu"
        and all(isinstance(a, jax.Array) for a in arrays)
        and sum(a.nbytes for a in arrays) <= _EMBED_MAX_BYTES
    )


def _compiled(fun: Callable, spec: _Spec, args: tuple) -> _Kernel:
    """An ahead-of-time compiled ``fun(spec, arrays, *rest)``, cached by spec and argument shapes.

    ``args[0]`` are the model's arrays: passed as arguments (new values of the
    same shapes reuse the executable) or, see :func:`_embed_parameters`,
    compiled in as constants.
    """
    arrays, rest = args[0], args[1:]
    embed = _embed_parameters(arrays)
    shaped = rest if embed else args
    avals = tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in jax.tree_util.tree_leaves(shaped))
    identity = tuple(id(a) for a in arrays) if embed else None
    key = (fun.__name__, spec, jax.tree_util.tree_structure(shaped), avals, identity)
    compiled = _COMPILED.get(key)
    if compiled is None:
        if embed:
            executable = jax.jit(lambda *r: fun(spec, arrays, *r)).lower(*rest).compile()
            compiled = _Kernel(executable, list(arrays))
        else:
            compiled = _Kernel(jax.jit(functools.partial(fun, spec)).lower(*args).compile(), None)
        _COMPILED[key] = compiled
        if len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.popitem(last=False)
    _COMPILED.move_to_end(key)
    return compiled


def _bytes_of_jaxpr(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            aval = getattr(var, "aval", None)
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total += math.prod(aval.shape) * aval.dtype.itemsize
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", None)
            if inner is not None:
                total += _bytes_of_jaxpr(getattr(inner, "jaxpr", inner))
    return total


def _forward_bytes_per_image(spec: _Spec, arrays, image_shape, dtype) -> int:
    """Bytes of every intermediate value of one forward pass per image (an upper bound on activations)."""

    def size(n):
        jaxpr = jax.make_jaxpr(lambda z: _explained(spec, arrays, z))(jax.ShapeDtypeStruct((n,) + image_shape, dtype))
        return _bytes_of_jaxpr(jaxpr.jaxpr)

    return max(1, size(2) - size(1))


def default_memory_budget() -> int:
    """Half the free memory of the default device; on CPU a quarter of the available RAM, at most 4 GiB."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(0.5 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        available = 8 * 2**30
    return int(min(4 * 2**30, available // 4))


# --------------------------------------------------------------------------
# Validation.


def _check_images(images: Any) -> np.ndarray | jax.Array:
    if not isinstance(images, (np.ndarray, jax.Array)):
        try:
            images = np.asarray(images)
        except Exception as exc:
            raise TypeError(f"images must be an array (B, H, W, C), got {type(images).__name__}") from exc
    if images.ndim != 4:
        raise ValueError(
            f"images must have shape (B, H, W, C), got {shape_str(images.shape)}; "
            "use x[None] for one image and x[..., None] for grayscale"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(
            f"images must be a floating-point array, got dtype {images.dtype}; "
            "convert it first, e.g. images.astype(np.float32) / 255"
        )
    finite = np.isfinite(np.asarray(images)).all(axis=(1, 2, 3))
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"images contain non-finite values (NaN or inf), first in image {bad}")
    return images


def _choice(value: Any, name: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, options))}")
    return value


def _check_targets(targets: Any, b: int) -> tuple[np.ndarray | None, bool]:
    """(targets (B, T) int64 or None for 'predicted', whether a target axis is returned)."""
    if isinstance(targets, str):
        if targets != "predicted":
            raise ValueError(f"unknown targets {targets!r}; expected 'predicted', an int array or a list of classes")
        return None, False
    if targets is None:
        return None, False
    if isinstance(targets, (list, tuple)):
        classes = np.asarray(targets)
        if classes.ndim != 1 or classes.size == 0 or classes.dtype.kind not in "iu":
            raise TypeError(f"a list of targets must be a non-empty list of class indices, got {targets!r}")
        return np.broadcast_to(classes.astype(np.int64), (b, classes.size)), True
    arr = np.asarray(targets)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"targets must be integer class indices, got dtype {arr.dtype}")
    if arr.ndim == 0:
        return np.full((b, 1), int(arr), np.int64), False
    if arr.ndim == 1 and arr.shape[0] == b:
        return arr.astype(np.int64)[:, None], False
    if arr.ndim == 2 and arr.shape[0] == b and arr.shape[1] >= 1:
        return arr.astype(np.int64), True
    raise ValueError(
        f"targets must have one class per image ({b},) or (B, T) classes, got shape {shape_str(arr.shape)}; "
        "pass a list to explain the same classes for every image"
    )


def _check_baseline(baseline: Any, method: str, images_shape: tuple, dtype) -> tuple[str, float, np.ndarray | None]:
    """(kind, constant, array) where array is (B, H, W, C) for user baselines or (R, H, W, C) references."""
    if method == "expected_gradients":
        if isinstance(baseline, str):
            raise ValueError(
                f"expected_gradients needs a reference set: pass baseline=array of shape (R, H, W, C), got {baseline!r}"
            )
        if np.ndim(baseline) != 4:
            raise ValueError(
                f"expected_gradients needs baseline of shape (R, H, W, C), got {shape_str(np.shape(baseline))}"
            )
        refs = _baseline_array(baseline, "reference set", dtype)
        if refs.shape[1:] != images_shape[1:] or refs.shape[0] < 1:
            raise ValueError(
                f"reference set shape {shape_str(refs.shape)} does not match images {shape_str(images_shape)}"
            )
        return "array", 0.0, refs
    if isinstance(baseline, str):
        if baseline not in ("zeros", "blur", "uniform"):
            raise ValueError(
                f"unknown baseline {baseline!r}; expected 'zeros', 'blur', 'uniform', a number or an array"
            )
        return baseline, 0.0, None
    if isinstance(baseline, (int, float, np.number)) and not isinstance(baseline, bool):
        if not math.isfinite(float(baseline)):
            raise ValueError(f"baseline constant must be finite, got {baseline!r}")
        return "constant", float(baseline), None
    arr = _baseline_array(baseline, "baseline", dtype)
    try:
        arr = np.broadcast_to(arr, images_shape)
    except ValueError:
        raise ValueError(
            f"baseline shape {shape_str(arr.shape)} does not broadcast to images {shape_str(images_shape)}"
        ) from None
    return "array", 0.0, arr


def _baseline_array(value: Any, name: str, dtype) -> np.ndarray:
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array or a number, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr.astype(dtype, copy=False)


# --------------------------------------------------------------------------
# The driver.


def _pad(block: np.ndarray, size: int) -> np.ndarray:
    if block.shape[0] == size:
        return block
    pad = np.zeros((size - block.shape[0],) + block.shape[1:], block.dtype)
    return np.concatenate([block, pad])


def _mesh():
    """A 1-D mesh over all devices when there are several (the rows of a chunk are sharded over it)."""
    devices = jax.devices()
    if len(devices) < 2:
        return None
    from jax.sharding import Mesh

    return Mesh(np.asarray(devices), ("rows",))


def saliency(
    fn: Callable[[jax.Array], jax.Array] | Any,
    images: Any,
    targets: Any = None,
    *,
    method: str = "integrated_gradients",
    reduce: str | None = "auto",
    steps: int = 32,
    baseline: Any = "zeros",
    rule: str = "gauss_legendre",
    samples: int = 32,
    noise: float = 0.15,
    seed: int = 0,
    memory_budget: int | None = None,
    output: str = "logit",
    layer: str | None = None,
    chunk_size: int | None = None,
    return_info: bool = False,
) -> jax.Array | tuple[jax.Array, dict[str, Any]]:
    """Saliency maps of a JAX image classifier, batched and chunked to fit a memory budget.

    Parameters
    ----------
    fn
        The model: any JAX-traceable callable from images (B, H, W, C) to
        logits (B, N). ``functools.partial(model.apply, variables)`` or
        ``model.bind(variables)`` for Flax linen, a Flax nnx module, an
        Equinox module or a plain function. The array leaves of ``fn`` (its
        parameters) are split off: on accelerators they are kernel arguments
        (any values of the same shapes reuse the compiled kernel); on CPU,
        jax.Arrays up to 512 MiB are compiled in as constants (about 2x faster
        on XLA:CPU) and the kernel is reused while the same arrays are passed,
        so a fresh ``partial`` per call does not recompile. The model must
        treat the images of a batch independently (eval mode).
    images
        (B, H, W, C) floating-point array (numpy or JAX), all finite.
    targets
        The explained class per image: ``None`` or ``"predicted"`` (argmax of
        the logits), an int or an int array (B,) (one class per image), an
        int array (B, T) (T classes per image), or a list of classes explained
        for every image. With (B, T) arrays or lists the maps gain a target
        axis after the batch axis.
    method
        ``"gradient"``, ``"gradient_x_input"``, ``"integrated_gradients"``,
        ``"expected_gradients"``, ``"smoothgrad"``, ``"smoothgrad_squared"``,
        ``"vargrad"`` or ``"gradcam"``.
    reduce
        Channel reduction: ``"sum"``, ``"abs_sum"``, ``"max_abs"``, ``"l2"``
        or None (keep channels, maps (B, H, W, C)). ``"auto"`` is ``"sum"``
        for integrated/expected gradients, gradient x input, smoothgrad_squared
        and vargrad (sum keeps IG's completeness), ``"max_abs"`` for the
        vanilla gradient and ``"abs_sum"`` for smoothgrad. Grad-CAM maps have
        no channels and accept only ``"auto"``.
    steps
        Integrated gradients: number of points on the path (quadrature nodes).
    baseline
        Integrated gradients: ``"zeros"``, a number (constant image),
        ``"blur"`` (Gaussian blur of the input, sigma = max(H, W) / 16),
        ``"uniform"`` (uniform noise over the image's value range, seeded) or
        an array broadcastable to the images. Expected gradients: the
        reference set, an array (R, H, W, C) from which baselines are drawn.
    rule
        Integrated gradients quadrature: ``"left"``, ``"right"``,
        ``"midpoint"`` (Riemann sums), ``"trapezoid"`` or ``"gauss_legendre"``
        (the default; exact for polynomials of degree 2 * steps - 1 along the
        path, and needs the fewest steps for a given completeness error).
    samples
        Expected gradients, smoothgrad, smoothgrad_squared, vargrad: number of
        random gradient points per image.
    noise
        Smoothgrad family: noise standard deviation relative to each image's
        value range (max - min).
    seed
        Randomness (noise, reference draws, uniform baselines) derives from
        ``seed`` and the image's position in ``images``: results are
        deterministic and do not depend on the chunking.
    memory_budget
        Bytes the working memory of one chunk of gradient points may use
        (checked with XLA's memory analysis of the compiled kernel). Default:
        a quarter of the available RAM (at most 4 GiB) on CPU, half the free
        device memory on accelerators.
    output
        The explained output: ``"logit"`` (default), ``"probability"``
        (softmax) or ``"log_probability"`` (log-softmax).
    layer
        Grad-CAM: name of a linen submodule whose output (B, h, w, c) is used,
        e.g. ``"Conv_1"`` or ``"stage2/block1"`` (path joined by "/"). ``fn``
        must then be ``partial(model.apply, variables)`` or
        ``model.bind(variables)`` of a linen module. The layer's activations are
        read with Flax's ``capture_intermediates`` and its gradients through
        an interceptor that adds a zero perturbation; the model is unchanged.
    chunk_size
        Gradient points per chunk (overrides the automatic choice; rounded to
        whole images or to a divisor of the points per image).
    return_info
        Also return a dict of per-image extras: ``targets`` (B,) or (B, T),
        ``output`` (explained output at the images), and for integrated
        gradients ``baseline_output``, ``completeness_error`` =
        |sum of attributions - (f(x) - f(baseline))| and
        ``relative_completeness_error`` (divided by |f(x) - f(baseline)|; inf
        or nan where the difference is 0); plus ``chunk_size``, ``points`` and
        ``devices``.

    Returns
    -------
    jax.Array
        Maps (B, H, W), or (B, T, H, W) with several targets per image, with a
        trailing channel axis when ``reduce=None``; and ``info`` when
        ``return_info=True``.

    Examples
    --------
    >>> import jax.numpy as jnp, sat_fast
    >>> w = jnp.arange(12.0).reshape(4, 3) / 10
    >>> fn = lambda x: x.mean(axis=(1, 2)) @ w.T        # (B, 2, 2, 3) -> (B, 4)
    >>> images = jnp.ones((5, 2, 2, 3))
    >>> maps, info = sat_fast.saliency(fn, images, targets=[0, 3], steps=8, return_info=True)
    >>> maps.shape, info["targets"].shape
    ((5, 2, 2, 2), (5, 2))
    >>> bool(info["relative_completeness_error"].max() < 1e-5)
    True
    """
    method = _choice(method, "method", METHODS)
    output = _choice(output, "output", OUTPUTS)
    if reduce == "auto":
        reduce = AUTO_REDUCE[method]
    elif method == "gradcam":
        raise ValueError(f"gradcam maps have no channel axis; use reduce='auto', got {reduce!r}")
    elif reduce is not None:
        reduce = _choice(reduce, "reduce", REDUCTIONS)
    if method == "integrated_gradients":
        rule = _choice(rule, "rule", RULES)
        points = positive_int(steps, "steps")
        quadrature(rule, points)
    elif method in _NOISE_METHODS or method == "expected_gradients":
        points = positive_int(samples, "samples")
    else:
        points = 1
    if method in _NOISE_METHODS:
        if not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0:
            raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    seed = operator.index(seed)
    if memory_budget is None:
        memory_budget = default_memory_budget()
    memory_budget = positive_int(memory_budget, "memory_budget")
    if chunk_size is not None:
        chunk_size = positive_int(chunk_size, "chunk_size")

    images = _check_images(images)
    host = np.asarray(images)
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(host.dtype))
    host = host.astype(dtype, copy=False)
    b_total, image_shape = host.shape[0], host.shape[1:]
    target_array, target_axis = _check_targets(targets, b_total)
    n_targets = 1 if target_array is None else target_array.shape[1]
    kind, constant, base_array = _check_baseline(baseline, method, host.shape, dtype)
    if method not in _PATH_METHODS:
        kind, base_array = "zeros", None
    elif kind in ("zeros", "constant"):
        # A runtime argument, not a constant: with the weights compiled in, XLA would
        # otherwise constant-fold the whole forward pass of the baseline (slowly).
        kind, base_array = "array", np.broadcast_to(np.asarray(constant, dtype), host.shape)

    model, arrays = _split_model(fn)
    if method == "gradcam" and model.kind != "linen":
        raise TypeError(
            "gradcam needs a Flax linen model: pass functools.partial(model.apply, variables) "
            "or model.bind(variables)"
        )
    layer_path: tuple = ()
    if method == "gradcam":
        if not isinstance(layer, str):
            raise TypeError(f"gradcam needs layer=<name of a linen submodule>, got {layer!r}")
        layers = _gradcam_layers(model, arrays, jax.ShapeDtypeStruct((1,) + image_shape, dtype))
        if layer not in layers:
            raise ValueError(
                f"unknown gradcam layer {layer!r}; layers with (B, h, w, c) outputs: {', '.join(layers) or 'none'}"
            )
        layer_path = tuple(layer.split("/"))
    elif layer is not None:
        raise ValueError(f"layer is only used by method='gradcam', got layer={layer!r} with method={method!r}")

    # The model's output must be (B, N), and the targets in range.
    probe = jax.eval_shape(lambda z: _apply(model, arrays, z), jax.ShapeDtypeStruct((2,) + image_shape, dtype))
    if getattr(probe, "ndim", None) != 2 or probe.shape[0] != 2:
        raise ValueError(
            f"fn must map images (B, H, W, C) to logits (B, N); for 2 images of shape {shape_str(image_shape)} "
            f"it returned {shape_str(probe.shape) if hasattr(probe, 'shape') else type(probe).__name__}"
        )
    n_classes = probe.shape[1]
    if target_array is not None and target_array.size:
        bad = (target_array < 0) | (target_array >= n_classes)
        if bad.any():
            value = int(target_array[bad][0])
            raise ValueError(f"target {value} is out of range for a model with {n_classes} outputs [0, {n_classes})")

    spec = _Spec(model, method, output, points, rule, kind, float(noise), n_targets,
                 target_array is None, 1, 1, _mesh(), layer_path, reduce)
    refs = base_array if method == "expected_gradients" else np.zeros((1,) + image_shape, dtype)
    plan = _plan(spec, arrays, refs, image_shape, dtype, b_total, memory_budget, chunk_size)
    user = base_array if kind == "array" and method == "integrated_gradients" else None
    maps, parts = _run(plan, arrays, host, user, refs, target_array, np.uint32(seed % 2**32))

    def per_image(value):
        return value if target_axis else value[:, 0]

    result = _to_jax(per_image(maps))
    if not return_info:
        return result
    info: dict[str, Any] = {name: _to_jax(per_image(value)) for name, value in parts.items() if name != "total"}
    if method == "integrated_gradients":
        diff = parts["output"].astype(np.float64) - parts["baseline_output"]
        error = np.abs(parts["total"] - diff)
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = error / np.abs(diff)
        info["completeness_error"] = _to_jax(per_image(error.astype(dtype)))
        info["relative_completeness_error"] = _to_jax(per_image(relative.astype(dtype)))
    devices = 1 if plan.spec.mesh is None else plan.spec.mesh.devices.size
    info.update(chunk_size=plan.spec.block * plan.spec.rows, points=points, devices=devices)
    return result, info


class _Plan(NamedTuple):
    spec: _Spec  # with the chosen block and rows
    kernel: Any  # compiled _chunk / _gradcam_chunk
    prepare: Any  # compiled _prepare


def _plan(spec, arrays, refs, image_shape, dtype, n_images, memory_budget, chunk_size) -> _Plan:
    """Choose the chunk layout (block images x rows points) and compile its kernels.

    The first guess divides the budget by a jaxpr count of one forward pass's
    intermediates (an overestimate), capped on CPU at the measured speed
    optimum (``_CPU_CHUNK_BYTES``); XLA's memory analysis of the compiled kernel then
    shrinks the chunk until its working memory fits the budget. The decision
    is cached per configuration.
    """
    devices = 1 if spec.mesh is None else spec.mesh.devices.size
    key = (spec, image_shape, str(dtype), memory_budget, chunk_size)
    cached = _CHUNK_POINTS.get(key)
    per_chunk = cached or chunk_size
    if per_chunk is None:
        per_point = _forward_bytes_per_image(spec, arrays, image_shape, dtype) * (1 + spec.n_targets)
        per_chunk = memory_budget // per_point
        if jax.devices()[0].platform == "cpu":
            fast = max(1, _CPU_CHUNK_BYTES // per_point)
            per_chunk = min(per_chunk, 1 << (fast.bit_length() - 1))
        per_chunk = int(max(1, min(per_chunk, _MAX_CHUNK_POINTS)))
    kernel_fun = _gradcam_chunk if spec.method == "gradcam" else _chunk
    for _ in range(5):
        block, rows = _layout(per_chunk, spec.points, n_images, devices)
        spec = spec._replace(block=block, rows=rows)
        blocks = _example_block(spec, image_shape, dtype)
        acc = np.zeros((block, spec.n_targets) + image_shape, dtype)
        kernel = _compiled(kernel_fun, spec, (arrays, *blocks, refs, np.int32(0), acc, acc))
        if cached or chunk_size is not None:
            break
        used = _working_bytes(kernel)
        if used <= memory_budget or block * rows == 1:
            break
        per_chunk = max(1, int(block * rows * memory_budget / used * 0.9))
    _CHUNK_POINTS[key] = per_chunk
    prepare = _compiled(_prepare, spec, (arrays, *blocks))
    return _Plan(spec, kernel, prepare)


def _example_block(spec: _Spec, image_shape, dtype) -> tuple:
    """(images, user baselines, targets, image indices, seed) of one block, all zeros."""
    x = np.zeros((spec.block,) + image_shape, dtype)
    return x, x, np.zeros((spec.block, spec.n_targets), np.int32), np.zeros(spec.block, np.int32), np.uint32(0)


def _run(plan: _Plan, arrays, images, user, refs, targets, seed) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Maps (B, T, H, W[, C]) and per-image info (B, T) arrays, one image block at a time."""
    spec = plan.spec
    block, n = spec.block, images.shape[0]
    zeros_x, _, zeros_t, _, _ = _example_block(spec, images.shape[1:], images.dtype)
    acc = np.zeros((block, spec.n_targets) + images.shape[1:], images.dtype)
    keeps_channels = spec.reduce is None and spec.method != "gradcam"
    maps = np.zeros((n, spec.n_targets) + images.shape[1:3] + images.shape[3:] * keeps_channels, images.dtype)
    parts: dict[str, list] = {}
    for start in range(0, n, block):
        stop = min(start + block, n)
        x = _pad(images[start:stop], block)
        user_block = zeros_x if user is None else _pad(np.ascontiguousarray(user[start:stop]), block)
        t = zeros_t if targets is None else _pad(targets[start:stop].astype(np.int32), block)
        index = np.arange(start, start + block, dtype=np.int32)
        prepared = plan.prepare(arrays, x, user_block, t, index, seed)
        first = second = acc
        for j0 in range(0, spec.points, spec.rows):
            first, second, reduced, total = plan.kernel(
                arrays, x, user_block, prepared["targets"], index, seed, refs, np.int32(j0), first, second
            )
        maps[start:stop] = np.asarray(reduced)[: stop - start]
        for name, value in dict(prepared, total=total).items():
            parts.setdefault(name, []).append(np.asarray(value)[: stop - start])
    empty = np.zeros((0, spec.n_targets), images.dtype)
    names = ["targets", "output", "total"] + ["baseline_output"] * (spec.method == "integrated_gradients")
    info = {name: np.concatenate(parts[name]) if n else empty.astype(np.int32 if name == "targets" else empty.dtype)
            for name in names}
    return maps, info


def _to_jax(value: np.ndarray) -> jax.Array:
    # device_put of a contiguous array copies without compiling anything (jnp.asarray of a strided view would)
    return jax.device_put(np.ascontiguousarray(value))


def _working_bytes(compiled: _Kernel) -> int:
    stats = compiled.executable.memory_analysis()
    if stats is None:  # pragma: no cover - backends without memory analysis
        return 0
    return int(stats.temp_size_in_bytes + stats.output_size_in_bytes)


def _layout(per_chunk: int, points: int, images: int, multiple: int) -> tuple[int, int]:
    """(images per chunk, points per image per chunk), rows a multiple of the device count.

    Whole images per chunk when all of an image's points fit; else one image
    and the points split into equal chunks (the last padded with zero weights).
    A block never exceeds the batch rounded up to a power of two, so small
    batches do little padded work and a ragged last batch (down to half the
    size) reuses the compiled kernel.
    """
    if per_chunk >= points:
        block = max(1, min(per_chunk // points, 1 << max(images - 1, 0).bit_length()))
        while (block * points) % multiple:
            block += 1
        return block, points
    n_chunks = math.ceil(points / per_chunk)
    rows = math.ceil(points / n_chunks)
    rows = math.ceil(rows / multiple) * multiple
    return 1, rows
