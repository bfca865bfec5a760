"""The static configuration of one compiled kernel (:class:`Spec`) and the functions compiled from it.

A kernel is ``fun(spec, arrays, *blocks)``: ``spec`` is static (part of the
compile-cache key), ``arrays`` are the model's parameters, ``blocks`` one
chunk's images, baselines, targets, image indices, seed and running sums.
Every kernel is a thin wrapper over the pure methods of
:mod:`sat_fast.attribution._methods` (the same functions that
:mod:`sat_fast.functional` exposes): one implementation of each method.

When all gradient points of an image fit one chunk, :func:`block_kernel`
does everything in one call (forward pass for the predicted class, gradients,
finished maps). Otherwise :func:`prepare_kernel` runs once per block,
:func:`accumulate_kernel` once per chunk of points (running sums stay on
the device, their buffers donated) and :func:`finish_kernel` once per block.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sat_fast.attribution._gradcam import gradcam_maps
from sat_fast.attribution._methods import (
    Config,
    Explained,
    as_output,
    attributions,
    baselines,
    gradient_sums,
    image_keys,
    predicted_class,
    reduce_channels,
    select,
)
from sat_fast.attribution._models import ModelSpec, apply_model, rebuild
from sat_fast.attribution._options import SQUARE_METHODS

__all__ = [
    "Spec",
    "accumulate_kernel",
    "block_kernel",
    "explained_fn",
    "finish_kernel",
    "prepare_kernel",
    "shard_rows",
]


class Spec(NamedTuple):
    """Everything static about one kernel: model, method settings, chunk layout, devices."""

    model: ModelSpec
    config: Config
    block: int  # images per chunk
    rows: int  # gradient points per image per chunk
    mesh: Any  # jax.sharding.Mesh over the devices, or None
    layer: tuple[str, ...]  # Grad-CAM layer path, () for other methods
    info: bool  # also compute integrated gradients' outputs at the baselines


def explained_fn(spec: Spec, arrays: list[Any]) -> Explained:
    """The explained output (logits, probabilities or log-probabilities) of the model as a function of images."""

    def explained(images: jax.Array) -> jax.Array:
        return as_output(spec.config.output, apply_model(spec.model, arrays, images))

    return explained


def shard_rows(spec: Spec, z: jax.Array) -> jax.Array:
    """Rows of ``z`` sharded over the devices of ``spec.mesh`` (unchanged on one device)."""
    if spec.mesh is None:
        return z
    from jax.sharding import NamedSharding, PartitionSpec

    rows = PartitionSpec("rows")  # type: ignore[no-untyped-call]  # jax leaves PartitionSpec() unannotated
    sharded: jax.Array = jax.lax.with_sharding_constraint(  # type: ignore[no-untyped-call]  # unannotated in jax
        z, NamedSharding(spec.mesh, rows)
    )
    return sharded


def _keys(index: jax.Array, seed: jax.Array) -> jax.Array:
    return image_keys(jax.random.key(seed), index)


def _outputs(
    spec: Spec, explained: Explained, x: jax.Array, user: jax.Array, targets: jax.Array, keys: jax.Array
) -> dict[str, jax.Array]:
    """Targets (b, T), predicted classes (b,), outputs at the images and (IG with info) at the baselines."""
    out = explained(x)
    predicted = predicted_class(out)
    if spec.config.predicted:
        targets = predicted[:, None]
    result = {"targets": targets, "output": select(out, targets), "predicted": predicted}
    if spec.info and spec.config.method == "integrated_gradients":
        result["baseline_output"] = select(explained(baselines(spec.config, x, user, keys)), targets)
    return result


def prepare_kernel(
    spec: Spec,
    arrays: list[Any],
    x: jax.Array,
    user: jax.Array,
    targets: jax.Array,
    index: jax.Array,
    seed: jax.Array,
) -> dict[str, jax.Array]:
    """Targets, predicted classes and explained outputs of one block of images."""
    return _outputs(spec, explained_fn(spec, arrays), x, user, targets, _keys(index, seed))


def block_kernel(
    spec: Spec,
    arrays: list[Any],
    x: jax.Array,
    user: jax.Array,
    targets: jax.Array,
    index: jax.Array,
    seed: jax.Array,
    refs: jax.Array,
) -> dict[str, jax.Array]:
    """Every gradient point of one block of images in one call.

    Returns the outputs of :func:`prepare_kernel` plus ``maps`` (b, T, H,
    W[, C]) and ``total`` (b, T), the sum of each attribution (integrated
    gradients' completeness).
    """
    config = spec.config
    explained = explained_fn(spec, arrays)
    if config.method == "gradcam":
        module, variables = rebuild(spec.model, arrays)
        if config.predicted:
            targets = predicted_class(explained(x))[:, None]
        maps, out = gradcam_maps(module, variables, spec.layer, config.output, x, targets)
        result = {"targets": targets, "output": select(out, targets), "predicted": predicted_class(out)}
        return dict(result, maps=maps, total=maps.sum(axis=(2, 3)))
    keys = _keys(index, seed)
    result = _outputs(spec, explained, x, user, targets, keys)
    base = baselines(config, x, user, keys)
    j = jnp.arange(spec.rows)
    first, second = gradient_sums(
        explained, config, x, base, refs, keys, result["targets"], j, functools.partial(shard_rows, spec)
    )
    attribution = attributions(config, x, base, first, second)
    return dict(result, maps=reduce_channels(attribution, config.reduce), total=attribution.sum(axis=(2, 3, 4)))


def accumulate_kernel(
    spec: Spec,
    arrays: list[Any],
    x: jax.Array,
    user: jax.Array,
    targets: jax.Array,
    index: jax.Array,
    seed: jax.Array,
    refs: jax.Array,
    j0: jax.Array,
    first: jax.Array,
    second: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Gradient points ``j0 .. j0 + spec.rows`` of one block of images, added to the running sums."""
    config = spec.config
    keys = _keys(index, seed)
    base = baselines(config, x, user, keys)
    j = j0 + jnp.arange(spec.rows)
    shard = functools.partial(shard_rows, spec)
    more_first, more_second = gradient_sums(explained_fn(spec, arrays), config, x, base, refs, keys, targets, j, shard)
    # without squared gradients ``second`` is an empty placeholder, passed through
    return first + more_first, second if more_second is None else second + more_second


def finish_kernel(
    spec: Spec,
    arrays: list[Any],
    x: jax.Array,
    user: jax.Array,
    index: jax.Array,
    seed: jax.Array,
    first: jax.Array,
    second: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """The maps (b, T, H, W[, C]) and attribution totals (b, T) from the running sums over all points."""
    config = spec.config
    base = baselines(config, x, user, _keys(index, seed))
    attribution = attributions(config, x, base, first, second if config.method in SQUARE_METHODS else None)
    return reduce_channels(attribution, config.reduce), attribution.sum(axis=(2, 3, 4))
