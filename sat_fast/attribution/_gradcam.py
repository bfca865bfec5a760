"""Grad-CAM on a Flax linen layer: intermediate capture plus a zero perturbation added through an interceptor.

Flax is imported only when a Grad-CAM kernel is traced (the model is then a
linen module, so Flax is installed and already imported).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from sat_fast.attribution._kernels import Spec
from sat_fast.attribution._methods import as_output
from sat_fast.attribution._models import ModelSpec, rebuild

__all__ = ["gradcam_kernel", "gradcam_layers"]


def _layer_name(path: tuple[str, ...]) -> str:
    return "/".join(path)


def _forward(spec: Spec, arrays: list[Any], x: jax.Array, delta: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(explained outputs, layer activations), with ``delta`` added to the layer's output."""
    import flax.linen as nn

    module, variables = rebuild(spec.model, arrays)
    layer = spec.layer

    def add_delta(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
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
    return as_output(spec.config.output, logits), node["__call__"][0]


def gradcam_layers(model: ModelSpec, arrays: list[Any], x: jax.ShapeDtypeStruct) -> dict[str, tuple[int, ...]]:
    """Every linen submodule output of shape (B, h, w, c), by name (path joined by "/")."""
    module, variables = rebuild(model, arrays)

    def run(xx: jax.Array) -> Any:
        return module.apply(variables, xx, capture_intermediates=True, mutable=["intermediates"])[1]

    shapes = jax.eval_shape(run, x)["intermediates"]
    found: dict[str, tuple[int, ...]] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        for key, value in node.items():
            if key == "__call__":
                if path and len(value) == 1 and len(getattr(value[0], "shape", ())) == 4:
                    found[_layer_name(path)] = tuple(value[0].shape)
            else:
                walk(value, path + (key,))

    walk(shapes, ())
    return found


def gradcam_kernel(
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
    """Grad-CAM maps (b, T, H, W): relu(sum_k mean_hw(d out / d A_k) * A_k), bilinearly resized.

    Same signature as :func:`sat_fast.attribution._kernels.chunk_kernel`; the
    running sums pass through unchanged.
    """
    act_shape = jax.eval_shape(lambda: _forward(spec, arrays, x, None)[1]).shape
    delta = jnp.zeros(act_shape, x.dtype)
    (out, activation), pullback = jax.vjp(lambda d: _forward(spec, arrays, x, d), delta)
    cotangents = jax.nn.one_hot(targets.T, out.shape[1], dtype=out.dtype)  # (T, b, N)
    (grads,) = jax.vmap(lambda c: pullback((c, jnp.zeros_like(activation))))(cotangents)  # (T, b, h, w, k)
    channel_weights = grads.mean(axis=(2, 3))  # (T, b, k)
    cam = jax.nn.relu(jnp.einsum("tbk,bhwk->bthw", channel_weights, activation))
    b, h, w = x.shape[:3]
    cam = jax.image.resize(cam, (b, spec.config.n_targets, h, w), "bilinear")
    return first, second, cam, cam.sum(axis=(2, 3))
