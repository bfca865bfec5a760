"""The demo's classifier: a small Flax linen CNN."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class SmallCNN(nn.Module):
    """Three conv blocks (GELU, average pooling) and a linear head.

    Smooth activations keep integrated gradients well behaved (completeness
    converges quickly with Gauss-Legendre steps).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> model = SmallCNN(num_classes=3)
    >>> params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    >>> model.apply(params, jnp.zeros((2, 32, 32, 3))).shape
    (2, 3)
    """

    num_classes: int = 3
    width: int = 16

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.width
        x = nn.gelu(nn.Conv(w, (3, 3), name="conv1")(x))
        x = nn.gelu(nn.Conv(w, (3, 3), name="conv2")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.gelu(nn.Conv(2 * w, (3, 3), name="conv3")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.gelu(nn.Conv(4 * w, (3, 3), name="conv4")(x))
        x = jnp.max(x, axis=(1, 2))  # global max pool: a small mark anywhere can count
        return nn.Dense(self.num_classes, name="head")(x)
