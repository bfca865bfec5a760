"""The model side of a run: the factory's bundle, importing a factory, the JAX device, the explain stage."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

__all__ = ["Explained", "ModelBundle", "as_bundle", "explain_batch", "file_sha256", "load_factory", "select_device"]


@dataclass(frozen=True)
class ModelBundle:
    """What a model factory returns (a tuple or mapping of these fields works too).

    Attributes
    ----------
    apply
        JAX-traceable callable: images (B, H, W, C) float32 in [0, 1] (after the transform) -> logits (B, N).
    class_names
        Class names in logit order; image folders are matched against them.
    transform
        Optional :mod:`sat_fast.transforms` step (e.g. ``Compose([ResizeShorter(256),
        CenterCrop(224)])``) applied alike to images and masks.
    preprocess
        Optional callable on the batch after the transform (e.g. normalisation).
    """

    apply: Callable[[Any], Any]
    class_names: tuple[str, ...]
    transform: Any = None
    preprocess: Callable[[Any], Any] | None = None


def load_factory(spec: str) -> Callable[..., Any]:
    """Import ``pkg.module:function`` or ``path/to/file.py:function`` (the file's folder goes on ``sys.path``)."""
    if ":" not in spec:
        raise ValueError(f"the model must look like 'pkg.module:function' or 'file.py:function', got {spec!r}")
    where, _, attr = spec.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ValueError(f"model file {where} does not exist")
            # The factory's file may import its neighbours (a model definition next to it).
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(where)
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot import the model factory {spec!r}: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{where} has no callable {attr!r}")
    return cast("Callable[..., Any]", factory)


def as_bundle(value: Any) -> ModelBundle:
    """A factory's result as a :class:`ModelBundle`, checked."""
    if isinstance(value, ModelBundle):
        bundle = value
    elif isinstance(value, dict):
        bundle = ModelBundle(**value)
    elif isinstance(value, tuple) and 2 <= len(value) <= 4:
        bundle = ModelBundle(*value)
    else:
        raise ValueError(
            "the model factory must return (apply, class_names[, transform[, preprocess]]) or a ModelBundle"
        )
    if not callable(bundle.apply):
        raise ValueError("the model factory's apply is not callable")
    names = tuple(str(n) for n in bundle.class_names)
    if not names:
        raise ValueError("the model factory returned no class names")
    return ModelBundle(bundle.apply, names, bundle.transform, bundle.preprocess)


def select_device(spec: str) -> None:
    """Make the JAX device named ``spec`` (``cpu``, ``gpu``, ``tpu``, optionally ``:index``) the default."""
    import jax

    platform, _, index_text = spec.partition(":")
    if not index_text.isdigit() and index_text:
        raise ValueError(f"device must look like 'cpu', 'gpu' or 'gpu:1', got {spec!r}")
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        available = sorted({d.platform for d in jax.devices()})
        raise ValueError(
            f"device {spec}: no {platform!r} device is available to JAX here (available: {', '.join(available)})"
        ) from None
    index = int(index_text or 0)
    if index >= len(devices):
        raise ValueError(f"device {spec}: there are {len(devices)} {platform} device(s), numbered from 0")
    jax.config.update("jax_default_device", devices[index])  # type: ignore[no-untyped-call]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Explained:
    """The explain stage's output for one batch.

    ``maps`` is (B, T, H, W) float32: T explained classes per image, ``targets`` one (B,) array per T, and
    ``predicted`` the model's class per image (None for precomputed maps).
    """

    maps: np.ndarray
    targets: list[np.ndarray]
    predicted: np.ndarray | None


def explain_batch(
    bundle: ModelBundle,
    batch: np.ndarray,
    labels: np.ndarray,
    *,
    targets: str,
    options: dict[str, Any],
    check_outputs: bool,
) -> Explained:
    """Saliency of one batch of model inputs; the predictions come from the same forward pass (one, not two)."""
    import jax

    from sat_fast.attribution import saliency

    if bundle.preprocess is not None:
        batch = np.asarray(bundle.preprocess(batch), np.float32)
    if targets == "all":
        classes = list(range(len(bundle.class_names)))
        maps, info = saliency(bundle.apply, batch, classes=classes, return_info=True, **options)  # (B, T, H, W)
        out = np.asarray(maps)
        explained = [np.full(len(batch), c) for c in classes]
    else:
        chosen: Any = labels if targets == "label" else "predicted"
        maps, info = saliency(bundle.apply, batch, targets=chosen, return_info=True, **options)
        out = np.asarray(maps)[:, None]
        explained = [labels]
    if check_outputs:  # traced (saliency has run it), not run again: the outputs must name the factory's classes
        spec = jax.ShapeDtypeStruct(batch.shape, batch.dtype)  # type: ignore[no-untyped-call]  # unannotated in jax
        out_shape = jax.eval_shape(bundle.apply, spec).shape
        if len(out_shape) == 2 and out_shape[1] != len(bundle.class_names):
            raise ValueError(
                f"the model returns {out_shape[1]} logits per image but its factory names "
                f"{len(bundle.class_names)} classes"
            )
    predicted = np.asarray(info["predicted"])
    if targets == "predicted":
        explained = [predicted]
    return Explained(out, explained, predicted)


def class_list(names: Sequence[str] | None) -> list[str] | None:
    return None if names is None else [str(n) for n in names]
