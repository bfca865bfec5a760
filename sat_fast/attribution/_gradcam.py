"""Grad-CAM on a Flax linen layer: intermediate capture plus a zero perturbation added through an interceptor.

Pure functions of a linen module, its variables and the images. Flax is
imported only when Grad-CAM is traced (the model is then a linen module, so
Flax is installed and already imported).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from sat_fast._typing import Output
from sat_fast.attribution._methods import FULL_PRECISION, as_output

__all__ = ["gradcam_layer_path", "gradcam_layers", "gradcam_maps"]


def _layer_name(path: tuple[str, ...]) -> str:
    return "/".join(path)


def _forward(
    module: Any, variables: Any, layer: tuple[str, ...], output: Output, x: jax.Array, delta: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """(explained outputs, layer activations), with ``delta`` added to the layer's output."""
    import flax.linen as nn

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
    return as_output(output, logits), node["__call__"][0]


def gradcam_layers(module: Any, variables: Any, x: jax.ShapeDtypeStruct) -> dict[str, tuple[int, ...]]:
    """Every linen submodule output of shape (B, h, w, c), by name (path joined by "/")."""

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


def gradcam_layer_path(module: Any, variables: Any, layer: Any, image: jax.ShapeDtypeStruct) -> tuple[str, ...]:
    """The path of ``layer`` (a name joined by "/"), checked to be a linen submodule with (B, h, w, c) outputs.

    ``image`` is the shape and dtype of one image batch; raises ``TypeError``
    for a layer that is not a string and ``ValueError`` listing the layers
    there are for an unknown one.
    """
    if not isinstance(layer, str):
        raise TypeError(f"gradcam needs layer=<name of a linen submodule>, got {layer!r}")
    layers = gradcam_layers(module, variables, image)
    if layer not in layers:
        raise ValueError(
            f"unknown gradcam layer {layer!r}; layers with (B, h, w, c) outputs: {', '.join(layers) or 'none'}"
        )
    return tuple(layer.split("/"))


def gradcam_maps(
    module: Any, variables: Any, layer: tuple[str, ...], output: Output, x: jax.Array, targets: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Grad-CAM maps (b, T, H, W) and the explained outputs (b, N) of a linen module at images ``x``.

    The map is relu(sum_k mean_hw(d out / d A_k) * A_k) of the layer's
    activations A, bilinearly resized to the image; ``targets`` (b, T) int.
    """
    act_shape = jax.eval_shape(lambda: _forward(module, variables, layer, output, x, None)[1]).shape
    delta = jnp.zeros(act_shape, x.dtype)
    (out, activation), pullback = jax.vjp(lambda d: _forward(module, variables, layer, output, x, d), delta)
    cotangents = jax.nn.one_hot(targets.T, out.shape[1], dtype=out.dtype)  # (T, b, N)
    (grads,) = jax.vmap(lambda c: pullback((c, jnp.zeros_like(activation))))(cotangents)  # (T, b, h, w, k)
    channel_weights = grads.mean(axis=(2, 3))  # (T, b, k)
    cam = jax.nn.relu(jnp.einsum("tbk,bhwk->bthw", channel_weights, activation, precision=FULL_PRECISION))
    b, h, w = x.shape[:3]
    return jax.image.resize(cam, (b, targets.shape[1], h, w), "bilinear"), out
