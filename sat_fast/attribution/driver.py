"""The public entry point :func:`saliency`: validation, chunk planning and the loop over image blocks.

A single driver lays the images x gradient points work out as fixed-size
chunks, so that

* one compiled kernel serves every call with the same shapes (a ragged last
  block is padded with zero-weight rows, never recompiled);
* the work of one chunk fits ``memory_budget`` (checked against XLA's own
  memory analysis of the compiled kernel);
* on several devices the rows of a chunk are sharded across them.
"""

from __future__ import annotations

import collections
import operator
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from sat_fast._typing import Method, Output, QuadratureRule, Reduction
from sat_fast._validate import positive_int, shape_str
from sat_fast.attribution._checks import check_baseline, check_images, check_targets
from sat_fast.attribution._compile import COMPILED_MAX
from sat_fast.attribution._gradcam import gradcam_layer_path
from sat_fast.attribution._kernels import Spec
from sat_fast.attribution._methods import BaselineKind, make_config
from sat_fast.attribution._models import apply_model, rebuild, split_model
from sat_fast.attribution._options import PATH_METHODS, SQUARE_METHODS
from sat_fast.attribution._plan import Plan, default_memory_budget, example_block, plan

__all__ = ["Baseline", "Targets", "saliency"]

#: What is explained per image: the predicted class, one class for all, one per image, or (B, T) classes.
Targets: TypeAlias = Literal["predicted"] | int | ArrayLike | None
#: The integrated-gradients baseline (or, for expected gradients, the reference set).
Baseline: TypeAlias = Literal["zeros", "blur", "uniform"] | float | ArrayLike


@overload
def saliency(
    fn: Callable[..., Any],
    images: ArrayLike,
    targets: Targets = ...,
    *,
    classes: Sequence[int] | None = ...,
    method: Method = ...,
    reduce: Reduction | Literal["auto"] | None = ...,
    steps: int = ...,
    baseline: Baseline = ...,
    rule: QuadratureRule = ...,
    samples: int = ...,
    noise: float = ...,
    seed: int = ...,
    memory_budget: int | None = ...,
    output: Output = ...,
    layer: str | None = ...,
    chunk_size: int | None = ...,
    return_info: Literal[False] = ...,
) -> jax.Array: ...


@overload
def saliency(
    fn: Callable[..., Any],
    images: ArrayLike,
    targets: Targets = ...,
    *,
    classes: Sequence[int] | None = ...,
    method: Method = ...,
    reduce: Reduction | Literal["auto"] | None = ...,
    steps: int = ...,
    baseline: Baseline = ...,
    rule: QuadratureRule = ...,
    samples: int = ...,
    noise: float = ...,
    seed: int = ...,
    memory_budget: int | None = ...,
    output: Output = ...,
    layer: str | None = ...,
    chunk_size: int | None = ...,
    return_info: Literal[True],
) -> tuple[jax.Array, dict[str, Any]]: ...


@overload
def saliency(
    fn: Callable[..., Any],
    images: ArrayLike,
    targets: Targets = ...,
    *,
    classes: Sequence[int] | None = ...,
    method: Method = ...,
    reduce: Reduction | Literal["auto"] | None = ...,
    steps: int = ...,
    baseline: Baseline = ...,
    rule: QuadratureRule = ...,
    samples: int = ...,
    noise: float = ...,
    seed: int = ...,
    memory_budget: int | None = ...,
    output: Output = ...,
    layer: str | None = ...,
    chunk_size: int | None = ...,
    return_info: bool,
) -> jax.Array | tuple[jax.Array, dict[str, Any]]: ...


def saliency(
    fn: Callable[..., Any],
    images: ArrayLike,
    targets: Targets = None,
    *,
    classes: Sequence[int] | None = None,
    method: Method = "integrated_gradients",
    reduce: Reduction | Literal["auto"] | None = "auto",
    steps: int = 32,
    baseline: Baseline = "zeros",
    rule: QuadratureRule = "gauss_legendre",
    samples: int = 32,
    noise: float = 0.15,
    seed: int = 0,
    memory_budget: int | None = None,
    output: Output = "logit",
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
        The explained class of each image: ``None`` or ``"predicted"`` (argmax
        of the logits), an int (the same class for every image), an int array
        (B,) (one class per image) or an int array (B, T) (T classes per
        image; the maps gain a target axis after the batch axis). A list or
        tuple here is the deprecated spelling of ``classes`` (it warns).
    classes
        Classes explained for every image, e.g. ``classes=[0, 3]``: the maps
        gain a target axis after the batch axis. Exclusive with ``targets``.
    method
        ``"integrated_gradients"``, ``"gradient"``, ``"gradient_x_input"``,
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
        :func:`default_memory_budget`, a quarter of the available RAM (at most
        4 GiB) on CPU, half the free device memory on accelerators.
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
        ``predicted`` (B,) (the model's predicted class, from the same forward
        pass), ``output`` (explained output at the images), and for integrated
        gradients ``baseline_output``, ``completeness_error`` =
        |sum of attributions - (f(x) - f(baseline))| and
        ``relative_completeness_error`` (divided by |f(x) - f(baseline)|; inf
        or nan where the difference is 0); plus ``chunk_size``, ``points`` and
        ``devices``.

    Returns
    -------
    jax.Array or tuple of (jax.Array, dict)
        Maps (B, H, W), or (B, T, H, W) with several targets per image, with a
        trailing channel axis when ``reduce=None``; and ``info`` when
        ``return_info=True``.

    Raises
    ------
    ValueError
        An unknown option value, images or targets of the wrong shape or out
        of range, non-finite values, or a model whose output is not (B, N).
    TypeError
        A model that is not callable, non-float images, non-integer targets,
        or Grad-CAM without a linen model and layer.

    Examples
    --------
    A linear model on 8x8 RGB images, with 4 classes:

    >>> import jax.numpy as jnp
    >>> from sat_fast.attribution import saliency
    >>> w = jnp.linspace(-1.0, 1.0, 8 * 8 * 3 * 4).reshape(8 * 8 * 3, 4)
    >>> fn = lambda x: x.reshape(x.shape[0], -1) @ w
    >>> images = jnp.linspace(0.0, 1.0, 5 * 8 * 8 * 3).reshape(5, 8, 8, 3)
    >>> saliency(fn, images).shape  # integrated gradients of the predicted class
    (5, 8, 8)
    >>> saliency(fn, images, jnp.array([0, 1, 2, 3, 0]), method="gradient").shape
    (5, 8, 8)
    >>> maps, info = saliency(fn, images, classes=[0, 3], steps=8, return_info=True)
    >>> maps.shape, info["targets"].shape
    ((5, 2, 8, 8), (5, 2))
    >>> bool(info["relative_completeness_error"].max() < 1e-4)
    True
    """
    config = make_config(method, output=output, reduce=reduce, steps=steps, rule=rule, samples=samples, noise=noise)
    method, points = config.method, config.points
    seed = operator.index(seed)
    memory_budget = positive_int(default_memory_budget() if memory_budget is None else memory_budget, "memory_budget")
    if chunk_size is not None:
        chunk_size = positive_int(chunk_size, "chunk_size")

    checked = check_images(images)
    host = np.asarray(checked)
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(host.dtype))
    host = host.astype(dtype, copy=False)
    b_total, image_shape = host.shape[0], tuple(host.shape[1:])
    target_array, target_axis = check_targets(targets, classes, b_total)
    n_targets = 1 if target_array is None else target_array.shape[1]
    checked_kind, constant, base_array = check_baseline(baseline, method, host.shape, dtype)
    kind: BaselineKind
    if method not in PATH_METHODS:
        kind, base_array = "zeros", None
    elif checked_kind is None:
        # A runtime argument, not a constant: with the weights compiled in, XLA would
        # otherwise constant-fold the whole forward pass of the baseline (slowly).
        kind, base_array = "array", np.broadcast_to(np.asarray(constant, dtype), host.shape)
    else:
        kind = checked_kind

    model, arrays = split_model(fn)
    layer_path: tuple[str, ...] = ()
    if method == "gradcam":
        if model.kind != "linen":
            raise TypeError(
                "gradcam needs a Flax linen model: pass functools.partial(model.apply, variables) "
                "or model.bind(variables)"
            )
        one = jax.ShapeDtypeStruct((1, *image_shape), dtype)  # type: ignore[no-untyped-call]  # unannotated in jax
        module, variables = rebuild(model, arrays)
        layer_path = gradcam_layer_path(module, variables, layer, one)
    elif layer is not None:
        raise ValueError(f"layer is only used by method='gradcam', got layer={layer!r} with method={method!r}")

    # The model's output must be (B, N), and the targets in range.
    probe_key = (model, tuple((a.shape, str(a.dtype)) for a in arrays), image_shape, str(dtype))
    try:
        probe = _output_shape(probe_key, model, arrays, image_shape, dtype)
    except TypeError as exc:  # jax.errors.JAXTypeError (tracer misuse) is one too
        # numpy or PyTorch code meets a tracer here: say what fn must be, and the way for such models.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TypeError(
            "fn must be a JAX function of the images (it is traced with jax.eval_shape and differentiated with "
            f"jax.grad); tracing it failed: {type(exc).__name__}: {first}. For a PyTorch or numpy model, compute "
            "the saliency maps with its own tools (e.g. Captum) and pass them to sat_fast.segment_table"
        ) from exc
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

    config = config._replace(baseline=kind, n_targets=n_targets, predicted=target_array is None)
    info_outputs = return_info and method == "integrated_gradients"
    spec = Spec(model, config, block=1, rows=1, mesh=_mesh(), layer=layer_path, info=info_outputs)
    refs = (
        base_array if method == "expected_gradients" and base_array is not None else np.zeros((1, *image_shape), dtype)
    )
    chosen = plan(spec, arrays, refs, image_shape, dtype, b_total, memory_budget, chunk_size)
    user = base_array if kind == "array" and method == "integrated_gradients" else None
    maps, parts = _run(chosen, arrays, host, user, refs, target_array, np.uint32(seed % 2**32))

    def per_image(value: np.ndarray) -> np.ndarray:
        return value if target_axis or value.ndim == 1 else value[:, 0]

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
    devices = 1 if chosen.spec.mesh is None else chosen.spec.mesh.devices.size
    info.update(chunk_size=chosen.spec.block * chosen.spec.rows, points=points, devices=devices)
    return result, info


def _run(
    chosen: Plan,
    arrays: list[Any],
    images: np.ndarray,
    user: np.ndarray | None,
    refs: np.ndarray,
    targets: np.ndarray | None,
    seed: np.uint32,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Maps (B, T, H, W[, C]) and per-image info (B, T) arrays, one image block at a time.

    The blocks' results stay on the device until every block is dispatched
    (JAX runs them asynchronously), then come to the host together.
    """
    spec, config = chosen.spec, chosen.spec.config
    block, n = spec.block, images.shape[0]
    image_shape = tuple(images.shape[1:])
    zeros_x, _, zeros_t, _, _ = example_block(spec, image_shape, images.dtype)
    keeps_channels = config.reduce is None and config.method != "gradcam"
    maps = np.zeros((n, config.n_targets) + image_shape[:2] + image_shape[2:] * keeps_channels, images.dtype)
    pending: list[tuple[int, int, dict[str, jax.Array]]] = []
    if chosen.prepare is not None:
        # Inputs used by every chunk of a block go to the device once, not once per call.
        refs_on_device, seed_on_device = jax.device_put((refs, seed))
        starts = [jax.device_put(np.int32(j0)) for j0 in range(0, config.points, spec.rows)]
        first_zeros = jax.device_put(np.zeros((block, config.n_targets, *image_shape), images.dtype))
        squares = config.method in SQUARE_METHODS
        second_zeros = first_zeros if squares else jax.device_put(np.zeros((0,), images.dtype))
    for start in range(0, n, block):
        stop = min(start + block, n)
        x = _pad(images[start:stop], block)
        user_block = zeros_x if user is None else _pad(np.ascontiguousarray(user[start:stop]), block)
        t = zeros_t if targets is None else _pad(targets[start:stop].astype(np.int32), block)
        index = np.arange(start, start + block, dtype=np.int32)
        if chosen.prepare is None:
            result = chosen.kernel(arrays, x, user_block, t, index, seed, refs)
        else:
            assert chosen.finish is not None  # set together with prepare
            x, user_block, index = jax.device_put((x, user_block, index))
            result = dict(chosen.prepare(arrays, x, user_block, t, index, seed_on_device))
            first, second = first_zeros, second_zeros
            for j0 in starts:
                first, second = chosen.kernel(
                    arrays, x, user_block, result["targets"], index, seed_on_device, refs_on_device, j0, first, second
                )
            result["maps"], result["total"] = chosen.finish([], x, user_block, index, seed_on_device, first, second)
        pending.append((start, stop, result))
    parts: dict[str, list[np.ndarray]] = {}
    for start, stop, result in pending:
        maps[start:stop] = np.asarray(result["maps"])[: stop - start]
        for name, value in result.items():
            if name != "maps":
                parts.setdefault(name, []).append(np.asarray(value)[: stop - start])
    empty = np.zeros((0, config.n_targets), images.dtype)
    names = ["targets", "predicted", "output", "total"]
    names += ["baseline_output"] * spec.info
    integer = ("targets", "predicted")
    info = {
        name: np.concatenate(parts[name])
        if n
        else (empty[:, 0] if name == "predicted" else empty).astype(np.int32 if name in integer else empty.dtype)
        for name in names
    }
    return maps, info


_OUTPUT_SHAPES: collections.OrderedDict[Any, Any] = collections.OrderedDict()  # least recently used first


def _output_shape(key: Any, model: Any, arrays: list[Any], image_shape: tuple[int, ...], dtype: Any) -> Any:
    """The model's output shape for 2 images, traced once per model and input shapes.

    Tracing a Flax model costs tens of milliseconds, a few percent of a small
    batch's saliency run, so the answer is cached (keyed like the kernels).
    """
    shape = _OUTPUT_SHAPES.get(key)
    if shape is None:
        two = jax.ShapeDtypeStruct((2, *image_shape), dtype)  # type: ignore[no-untyped-call]  # unannotated in jax
        shape = jax.eval_shape(lambda z: apply_model(model, arrays, z), two)
        _OUTPUT_SHAPES[key] = shape
        if len(_OUTPUT_SHAPES) > COMPILED_MAX:
            _OUTPUT_SHAPES.popitem(last=False)
    _OUTPUT_SHAPES.move_to_end(key)
    return shape


def _to_jax(value: np.ndarray) -> jax.Array:
    # device_put of a contiguous array copies without compiling anything (jnp.asarray of a strided view would)
    on_device: jax.Array = jax.device_put(np.ascontiguousarray(value))
    return on_device


def _pad(block: np.ndarray, size: int) -> np.ndarray:
    if block.shape[0] == size:
        return block
    pad = np.zeros((size - block.shape[0], *block.shape[1:]), block.dtype)
    return np.concatenate([block, pad])


def _mesh() -> Any:
    """A 1-D mesh over all devices when there are several (the rows of a chunk are sharded over it)."""
    devices = jax.devices()
    if len(devices) < 2:
        return None
    from jax.sharding import Mesh

    return Mesh(np.asarray(devices), ("rows",))
