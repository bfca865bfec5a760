"""Training the demo's classifiers on CPU, with the parameters cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeAlias, cast

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import optax

from sat_fast._progress import Progress
from sat_fast.demo.data import CLASS_NAMES, SEGMENT_NAMES, DataConfig, SyntheticImages
from sat_fast.demo.model import SmallCNN
from sat_fast.functional import segment_share_penalty

__all__ = ["TrainConfig", "cache_key", "default_cache_dir", "predict", "train_model"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train a demo model.

    Parameters
    ----------
    widths
        Channels of the CNN's conv blocks (see :class:`SmallCNN`).
    epochs, batch_size, learning_rate, weight_decay
        AdamW with a cosine-decayed learning rate over ``epochs`` passes.
    seed
        Seed of the initialisation and of the batch order.
    """

    widths: tuple[int, ...] = (16, 32, 64)
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be a non-empty tuple of positive ints, got {self.widths!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")


def default_cache_dir() -> Path:
    """``$SAT_FAST_CACHE`` or ``~/.cache/sat_fast/demo``."""
    return Path(os.environ.get("SAT_FAST_CACHE", Path.home() / ".cache" / "sat_fast" / "demo"))


def cache_key(
    data_config: DataConfig, train_config: TrainConfig, role: str, prior: tuple[str, float] | None = None
) -> str:
    """A hash of everything the trained parameters depend on."""
    settings: dict[str, Any] = {"data": asdict(data_config), "train": asdict(train_config), "role": role, "format": 1}
    if prior is not None:  # only then, so that the caches of models without a prior stay valid
        settings["prior"] = list(prior)
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _model(train_config: TrainConfig) -> SmallCNN:
    return SmallCNN(num_classes=len(CLASS_NAMES), widths=train_config.widths)


def predict(
    params: Any, images: np.ndarray, train_config: TrainConfig, *, batch_size: int = 256
) -> npt.NDArray[np.float32]:
    """(N, C) float32 logits of the model with ``params`` on ``images`` (N, H, W, 3)."""
    apply = _apply_fn(train_config)
    out = [
        np.asarray(apply(params, jnp.asarray(images[i : i + batch_size]))) for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, len(CLASS_NAMES)), np.float32)


# the jitted SmallCNN.apply per widths: (params, images) -> logits
_ApplyFn: TypeAlias = Callable[[Any, jax.Array], jax.Array]
_APPLY_CACHE: dict[tuple[int, ...], _ApplyFn] = {}


def _apply_fn(train_config: TrainConfig) -> _ApplyFn:
    key = tuple(train_config.widths)
    if key not in _APPLY_CACHE:
        _APPLY_CACHE[key] = jax.jit(_model(train_config).apply)
    return _APPLY_CACHE[key]


def train_model(
    data: SyntheticImages,
    data_config: DataConfig,
    train_config: TrainConfig,
    *,
    role: str,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    prior: tuple[str, float] | None = None,
) -> Any:
    """Train a :class:`SmallCNN` on ``data``, or load it from the cache.

    Parameters
    ----------
    data
        The training split.
    data_config, train_config
        Together with ``role`` they key the cache, so a changed setting
        retrains.
    role
        Which model this is ("shortcut", "control" or "prior").
    cache_dir
        Where parameters are cached as Flax msgpack bytes; default
        :func:`default_cache_dir`.
    progress
        Show a progress bar.
    prior
        ``(segment name, weight)``: add ``weight`` times
        :func:`sat_fast.functional.segment_share_penalty` (the share of the
        gradient x input saliency of the true class's log-probability that
        falls on that segment, from the training images' label maps) to the
        loss: an attribution prior that teaches the model to ignore the
        segment. Costs about 2.5 times plain training (a gradient of a
        gradient).

    Returns
    -------
    The model parameters (a pytree for ``SmallCNN.apply``).
    """
    if prior is not None and prior[0] not in SEGMENT_NAMES:
        raise ValueError(f"prior segment {prior[0]!r} is not one of {SEGMENT_NAMES}")
    model = _model(train_config)
    template = model.init(jax.random.key(train_config.seed), jnp.zeros((1,) + data.images.shape[1:], jnp.float32))
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / (
        f"{role}-{cache_key(data_config, train_config, role, prior)}.msgpack"
    )
    if path.exists():
        return flax.serialization.from_bytes(template, path.read_bytes())

    n = len(data)
    steps_per_epoch = max(1, n // train_config.batch_size)
    total = steps_per_epoch * train_config.epochs
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, train_config.learning_rate, min(100, total // 10), total, train_config.learning_rate * 0.02
    )
    tx = optax.adamw(schedule, weight_decay=train_config.weight_decay)
    params = template
    opt_state = tx.init(params)

    def loss_fn(p: Any, x: jax.Array, y: jax.Array, segments: jax.Array) -> jax.Array:
        logits = model.apply(p, x)
        # optax has no type information: bind its Any to a jax.Array instead of returning Any
        loss: jax.Array = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        if prior is None:
            return loss

        def logits_of(images: jax.Array) -> jax.Array:
            # linen's apply is typed to also return (output, state); without mutable= it is the output
            return cast(jax.Array, model.apply(p, images))

        penalty = segment_share_penalty(
            logits_of,
            x,
            segments.astype(jnp.int32),
            num_segments=len(SEGMENT_NAMES),
            segment=SEGMENT_NAMES.index(prior[0]),
            targets=y,
        )
        return loss + prior[1] * penalty

    @jax.jit
    def step(p: Any, s: Any, x: jax.Array, y: jax.Array, segments: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y, segments)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    rng = np.random.default_rng(train_config.seed)
    images, labels = data.images, data.label.astype(np.int32)
    bar = Progress(total, f"training {role} model", unit="step", enabled=progress)
    for _ in range(train_config.epochs):
        order = rng.permutation(n)
        for i in range(steps_per_epoch):
            idx = order[i * train_config.batch_size : (i + 1) * train_config.batch_size]
            # the label maps travel only when the prior needs them
            segments = data.segments[idx] if prior is not None else np.zeros((len(idx), 1, 1), np.uint8)
            params, opt_state, loss = step(
                params, opt_state, jnp.asarray(images[idx]), jnp.asarray(labels[idx]), jnp.asarray(segments)
            )
            if i % 20 == 0:
                bar.set_postfix(loss=f"{float(loss):.3f}")
            bar.update(1)
    bar.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(flax.serialization.to_bytes(params))
    tmp.replace(path)
    return params
