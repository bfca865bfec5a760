"""A user-style model module for ``sat-fast run``.

``make_model`` is the factory: ``sat-fast run --model examples/user_model.py:make_model``
calls it with the ``--checkpoint`` path (or None) and gets back the apply
function (images -> logits), the class names in logit order, and a transform
that brings images and masks to the model's input size alike.

    python examples/make_example_data.py example_data
    sat-fast run --model examples/user_model.py:make_model --images example_data/images \\
        --masks example_data/masks --names example_data/names.csv --steps 16 --out example_results
"""

from __future__ import annotations

import functools
from pathlib import Path

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp

from sat_fast.transforms import CenterCrop, Compose, ResizeShorter

CLASS_NAMES = ("fish", "bird", "cat")
INPUT_SIZE = 32


class Classifier(nn.Module):
    """A small CNN, as a user's own Flax model might look."""

    num_classes: int = len(CLASS_NAMES)

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Conv(16, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.gelu(nn.Conv(32, (3, 3))(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)


def make_model(checkpoint: str | Path | None = None):
    """Factory for ``sat-fast run``: (apply, class_names, transform).

    ``checkpoint`` is a file written with ``flax.serialization.to_bytes(params)``;
    without one the model is freshly initialised (seed 0), enough to try the
    command end to end.
    """
    model = Classifier()
    params = model.init(jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)))
    if checkpoint is not None:
        params = flax.serialization.from_bytes(params, Path(checkpoint).read_bytes())
    transform = Compose([ResizeShorter(INPUT_SIZE), CenterCrop(INPUT_SIZE)])
    return functools.partial(model.apply, params), CLASS_NAMES, transform
