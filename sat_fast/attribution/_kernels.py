"""The static configuration of one compiled kernel (:class:`Spec`) and the functions compiled from it.

A kernel is ``fun(spec, arrays, *blocks)``: ``spec`` is static (part of the
compile-cache key), ``arrays`` are the model's parameters, ``blocks`` one
chunk's images, baselines, targets, image indices, seed and running sums.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sat_fast.attribution._methods import Config, Explained, as_output, explain_outputs, gradient_chunk
from sat_fast.attribution._models import ModelSpec, apply_model

__all__ = ["Spec", "chunk_kernel", "explained_fn", "prepare_kernel", "shard_rows"]


class Spec(NamedTuple):
    """Everything static about one kernel: model, method settings, chunk layout, devices."""

    model: ModelSpec
    config: Config
    block: int  # images per chunk
    rows: int  # gradient points per image per chunk
    mesh: Any  # jax.sharding.Mesh over the devices, or None
    layer: tuple[str, ...]  # Grad-CAM layer path, () for other methods


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


def prepare_kernel(
    spec: Spec,
    arrays: list[Any],
    x: jax.Array,
    user: jax.Array,
    targets: jax.Array,
    index: jax.Array,
    seed: jax.Array,
) -> dict[str, jax.Array]:
    """Targets and explained outputs of one block of images (see :func:`explain_outputs`)."""
    return explain_outputs(explained_fn(spec, arrays), spec.config, x, user, targets, index, seed)


def chunk_kernel(
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
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Gradient points ``j0 .. j0 + spec.rows`` of one block of images (see :func:`gradient_chunk`)."""
    j = j0 + jnp.arange(spec.rows)
    shard = functools.partial(shard_rows, spec)
    return gradient_chunk(
        explained_fn(spec, arrays), spec.config, x, user, targets, index, seed, refs, j, first, second, shard
    )
