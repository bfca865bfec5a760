"""Training the demo's models with optax, with a parameter cache."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from sat_fast.demo.model import SmallCNN

__all__ = ["TrainConfig", "train", "accuracy", "predict_logits"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (fixed seed: same data and config give the same parameters)."""

    epochs: int = 6
    batch_size: int = 128
    learning_rate: float = 3e-3
    width: int = 16
    seed: int = 0


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def train(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    config: TrainConfig,
    num_classes: int,
    cache_dir: Path | None = None,
    cache_key: dict | None = None,
    name: str = "model",
    progress: bool = True,
):
    """Train a :class:`SmallCNN`; returns ``(model, params)``.

    Parameters are cached as Flax msgpack bytes (never pickle) under
    ``cache_dir`` keyed by a hash of ``cache_key`` and the config, so a
    second run with the same settings starts at once.
    """
    model = SmallCNN(num_classes=num_classes, width=config.width)
    template = model.init(jax.random.key(config.seed), jnp.zeros((1,) + images.shape[1:], jnp.float32))
    path = None
    if cache_dir is not None:
        key = _key({"train": asdict(config), "data": cache_key or {}, "classes": num_classes, "name": name})
        path = Path(cache_dir) / f"{name}-{key}.msgpack"
        if path.exists():
            return model, flax.serialization.from_bytes(template, path.read_bytes())

    tx = optax.adam(config.learning_rate)
    params = template
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(config.seed)
    n = images.shape[0]
    steps = n // config.batch_size
    bar = tqdm(total=config.epochs * steps, desc=f"training {name}", unit="step", disable=not progress, leave=False)
    for _ in range(config.epochs):
        order = rng.permutation(n)
        for s in range(steps):
            idx = order[s * config.batch_size : (s + 1) * config.batch_size]
            params, opt_state, loss = step(params, opt_state, jnp.asarray(images[idx]), jnp.asarray(labels[idx]))
            bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.3f}")
    bar.close()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(flax.serialization.to_bytes(params))
        tmp.replace(path)  # atomic: a crash never leaves a half-written cache entry
    return model, params


def predict_logits(model, params, images: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    apply = jax.jit(model.apply)
    out = [np.asarray(apply(params, jnp.asarray(images[i : i + batch_size]))) for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.num_classes), np.float32)


def accuracy(model, params, images: np.ndarray, labels: np.ndarray) -> float:
    return float((predict_logits(model, params, images).argmax(1) == labels).mean())
