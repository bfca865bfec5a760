"""Memory budget and chunk planning: how many gradient points one compiled kernel handles at a time.

Chunk sizing for speed, measured with benchmarks/bench_saliency.py (see
benchmarks/RESULTS.md). On XLA:CPU small batches win: the 64x64 CNN (5.5 MB of
forward intermediates per point by the jaxpr count below) runs best at 1-8
points per chunk (which of them depends on the machine's load) and at half
speed from 64 points; ResNet-18 at 224x224 (136 MB per point) runs best one
point at a time. A chunk of at most 64 MB of counted intermediates (times 1 +
the number of targets), rounded down to a power of two, fits both. An
on-device loop over the points (``lax.fori_loop``) was measured ~10x slower
than one call per chunk on XLA:CPU, so the host loops over the chunks. On
accelerators bigger batches keep winning, so there only the budget limits.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import jax
import numpy as np

from sat_fast.attribution._compile import Kernel, compiled, working_bytes
from sat_fast.attribution._kernels import (
    Spec,
    accumulate_kernel,
    block_kernel,
    explained_fn,
    finish_kernel,
    prepare_kernel,
)
from sat_fast.attribution._options import SQUARE_METHODS

__all__ = ["CPU_CHUNK_BYTES", "MAX_CHUNK_POINTS", "Plan", "default_memory_budget", "example_block", "layout", "plan"]

CPU_CHUNK_BYTES = 64 * 2**20
MAX_CHUNK_POINTS = 4096

_CHUNK_POINTS: dict[Any, int] = {}  # the chosen points per chunk, per configuration


class Plan(NamedTuple):
    """The chosen chunk layout and its compiled kernels."""

    spec: Spec  # with the chosen block and rows
    kernel: Kernel  # compiled block_kernel (all points of an image per chunk) or accumulate_kernel
    prepare: Kernel | None  # compiled prepare_kernel, with accumulate_kernel
    finish: Kernel | None  # compiled finish_kernel, with accumulate_kernel

    @property
    def whole(self) -> bool:
        """Whether one chunk holds every gradient point of its images (one block_kernel call per block)."""
        return self.prepare is None


def default_memory_budget() -> int:
    """The default ``memory_budget`` of :func:`sat_fast.attribution.saliency`, in bytes.

    Half the free memory of the default device; on CPU a quarter of the
    available RAM, at most 4 GiB.

    Returns
    -------
    int
        Bytes one chunk of gradient points may use.
    """
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


def plan(
    spec: Spec,
    arrays: list[Any],
    refs: np.ndarray,
    image_shape: tuple[int, ...],
    dtype: np.dtype[Any],
    n_images: int,
    memory_budget: int,
    chunk_size: int | None,
) -> Plan:
    """Choose the chunk layout (block images x rows points) and compile its kernels.

    The first guess divides the budget by a jaxpr count of one forward pass's
    intermediates (an overestimate), capped on CPU at the measured speed
    optimum (``CPU_CHUNK_BYTES``); XLA's memory analysis of the compiled
    kernel then shrinks the chunk until its working memory fits the budget.
    The decision is cached per configuration.
    """
    devices = 1 if spec.mesh is None else spec.mesh.devices.size
    key = (spec, image_shape, str(dtype), memory_budget, chunk_size)
    cached = _CHUNK_POINTS.get(key)
    per_chunk = cached or chunk_size
    if per_chunk is None:
        per_point = _forward_bytes_per_image(spec, arrays, image_shape, dtype) * (1 + spec.config.n_targets)
        per_chunk = memory_budget // per_point
        if jax.devices()[0].platform == "cpu":
            fast = max(1, CPU_CHUNK_BYTES // per_point)
            per_chunk = min(per_chunk, 1 << (fast.bit_length() - 1))
        per_chunk = int(max(1, min(per_chunk, MAX_CHUNK_POINTS)))
    for _ in range(5):
        block, rows = layout(per_chunk, spec.config.points, n_images, devices)
        spec = spec._replace(block=block, rows=rows)
        blocks = example_block(spec, image_shape, dtype)
        acc = np.zeros((block, spec.config.n_targets) + image_shape, dtype)
        # without squared gradients the second running sum is an empty placeholder
        second = acc if spec.config.method in SQUARE_METHODS else np.zeros((0,), dtype)
        whole = rows == spec.config.points
        if whole:
            kernel = compiled(block_kernel, spec, (arrays, *blocks, refs))
        else:
            kernel = compiled(accumulate_kernel, spec, (arrays, *blocks, refs, np.int32(0), acc, second))
        if cached or chunk_size is not None:
            break
        used = working_bytes(kernel)
        if used <= memory_budget or block * rows == 1:
            break
        per_chunk = max(1, int(block * rows * memory_budget / used * 0.9))
    _CHUNK_POINTS[key] = per_chunk
    if whole:
        return Plan(spec, kernel, None, None)
    x, user, _, index, seed = blocks
    prepare = compiled(prepare_kernel, spec, (arrays, *blocks))
    finish = compiled(finish_kernel, spec, ([], x, user, index, seed, acc, second))
    return Plan(spec, kernel, prepare, finish)


def example_block(
    spec: Spec, image_shape: tuple[int, ...], dtype: np.dtype[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.uint32]:
    """(images, user baselines, targets, image indices, seed) of one block, all zeros."""
    x = np.zeros((spec.block,) + image_shape, dtype)
    targets = np.zeros((spec.block, spec.config.n_targets), np.int32)
    return x, x, targets, np.zeros(spec.block, np.int32), np.uint32(0)


def layout(per_chunk: int, points: int, images: int, multiple: int) -> tuple[int, int]:
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


def _bytes_of_jaxpr(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            aval = getattr(var, "aval", None)
            if aval is not None and hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total += math.prod(aval.shape) * aval.dtype.itemsize
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", None)
            if inner is not None:
                total += _bytes_of_jaxpr(getattr(inner, "jaxpr", inner))
    return total


def _forward_bytes_per_image(spec: Spec, arrays: list[Any], image_shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    """Bytes of every intermediate value of one forward pass per image (an upper bound on activations)."""
    explained = explained_fn(spec, arrays)

    def size(n: int) -> int:
        abstract = jax.ShapeDtypeStruct((n, *image_shape), dtype)  # type: ignore[no-untyped-call]  # unannotated in jax
        jaxpr = jax.make_jaxpr(explained)(abstract)
        return _bytes_of_jaxpr(jaxpr.jaxpr)

    return max(1, size(2) - size(1))
