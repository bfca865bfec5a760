"""The demo's small convolutional classifier (Flax linen)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["SmallCNN"]

# flax.linen.avg_pool has no annotations (a call to it is untyped); it returns the pooled array.
_avg_pool: Callable[..., jax.Array] = nn.avg_pool


class SmallCNN(nn.Module):
    """Conv-pool blocks, global average pooling and a linear head: images -> logits.

    Smooth activations (swish) keep gradients and integrated gradients free of
    the piecewise-constant artefacts of ReLU.

    Parameters
    ----------
    num_classes
        Number of logits.
    widths
        Channels of each 3x3 conv block; each block halves the resolution.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from sat_fast.demo.model import SmallCNN
    >>> model = SmallCNN(num_classes=3, widths=(8, 16))
    >>> params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    >>> model.apply(params, jnp.zeros((2, 32, 32, 3))).shape
    (2, 3)
    """

    num_classes: int
    widths: Sequence[int] = (16, 32, 64)

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        """(N, num_classes) logits of (N, H, W, 3) images in [0, 1]."""
        x = images - 0.5
        for width in self.widths:
            x = nn.swish(nn.Conv(width, (3, 3))(x))
            x = _avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.swish(nn.Conv(self.widths[-1], (3, 3))(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
