"""Input validation of :func:`sat_fast.attribution.saliency`: images, targets, baselines, numeric options.

Each check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right
kind, wrong contents) naming the argument, and returns numpy arrays in the
layout the driver uses.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sat_fast._typing import Method
from sat_fast._validate import shape_str
from sat_fast.attribution._methods import BaselineKind

__all__ = ["check_baseline", "check_images", "check_targets"]

_LIST_TARGETS_DEPRECATED = (
    "targets=[...] as a list of classes for every image is deprecated; pass classes=[...] "
    "(targets= is one class per image)"
)


def check_images(images: Any) -> np.ndarray | jax.Array:
    """``images`` as an array (B, H, W, C) of a floating dtype, all finite."""
    if isinstance(images, (np.ndarray, jax.Array)):
        arr: np.ndarray | jax.Array = images
    else:
        try:
            arr = np.asarray(images)
        except Exception as exc:
            raise TypeError(f"images must be an array (B, H, W, C), got {type(images).__name__}") from exc
    images = arr
    if images.ndim != 4:
        raise ValueError(
            f"images must have shape (B, H, W, C), got {shape_str(images.shape)}; "
            "use x[None] for one image and x[..., None] for grayscale"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(
            f"images must be a floating-point array, got dtype {images.dtype}; "
            "convert it first, e.g. images.astype(np.float32) / 255"
        )
    finite = np.isfinite(np.asarray(images)).all(axis=(1, 2, 3))
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"images contain non-finite values (NaN or inf), first in image {bad}")
    return arr


def _class_list(classes: Any, name: str, b: int) -> np.ndarray:
    """A non-empty sequence of class indices as (B, T) int64, the same classes for every image."""
    arr = np.asarray(classes)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be a non-empty list of class indices, got {classes!r}")
    return np.broadcast_to(arr.astype(np.int64), (b, arr.size))


def check_targets(targets: Any, classes: Sequence[int] | None, b: int) -> tuple[np.ndarray | None, bool]:
    """(targets (B, T) int64, or None for the predicted class; whether the maps get a target axis).

    A list or tuple passed as ``targets`` is the deprecated spelling of
    ``classes`` and warns (``DeprecationWarning``).
    """
    if classes is not None:
        if targets is not None:
            raise ValueError(
                f"pass either targets= (per image) or classes= (for every image), not both; got targets={targets!r}"
            )
        return _class_list(classes, "classes", b), True
    if isinstance(targets, str):
        if targets != "predicted":
            raise ValueError(
                f"unknown targets {targets!r}; expected 'predicted', an int or an int array (B,) or (B, T)"
            )
        return None, False
    if targets is None:
        return None, False
    if isinstance(targets, (list, tuple)):
        # The caller of saliency() is 3 frames up: check_targets <- saliency <- the user.
        warnings.warn(_LIST_TARGETS_DEPRECATED, DeprecationWarning, stacklevel=3)
        return _class_list(targets, "a list of targets", b), True
    arr = np.asarray(targets)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"targets must be integer class indices, got dtype {arr.dtype}")
    if arr.ndim == 0:
        return np.full((b, 1), int(arr), np.int64), False
    if arr.ndim == 1 and arr.shape[0] == b:
        return arr.astype(np.int64)[:, None], False
    if arr.ndim == 2 and arr.shape[0] == b and arr.shape[1] >= 1:
        return arr.astype(np.int64), True
    raise ValueError(
        f"targets must have one class per image ({b},) or (B, T) classes, got shape {shape_str(arr.shape)}; "
        "pass classes=[...] to explain the same classes for every image"
    )


def check_baseline(
    baseline: Any, method: Method, images_shape: tuple[int, ...], dtype: np.dtype[Any]
) -> tuple[BaselineKind | None, float, np.ndarray | None]:
    """(kind, constant, array): array is (B, H, W, C) for user baselines or (R, H, W, C) references.

    ``kind`` None means a constant image of value ``constant``.
    """
    if method == "expected_gradients":
        if isinstance(baseline, str):
            raise ValueError(
                f"expected_gradients needs a reference set: pass baseline=array of shape (R, H, W, C), got {baseline!r}"
            )
        if np.ndim(baseline) != 4:
            raise ValueError(
                f"expected_gradients needs baseline of shape (R, H, W, C), got {shape_str(np.shape(baseline))}"
            )
        refs = _baseline_array(baseline, "reference set", dtype)
        if refs.shape[1:] != images_shape[1:] or refs.shape[0] < 1:
            raise ValueError(
                f"reference set shape {shape_str(refs.shape)} does not match images {shape_str(images_shape)}"
            )
        return "array", 0.0, refs
    if isinstance(baseline, str):
        if baseline == "zeros":
            return None, 0.0, None
        if baseline not in ("blur", "uniform"):
            raise ValueError(
                f"unknown baseline {baseline!r}; expected 'zeros', 'blur', 'uniform', a number or an array"
            )
        return "blur" if baseline == "blur" else "uniform", 0.0, None
    if isinstance(baseline, (int, float, np.number)) and not isinstance(baseline, bool):
        if not math.isfinite(float(baseline)):
            raise ValueError(f"baseline constant must be finite, got {baseline!r}")
        return None, float(baseline), None
    arr = _baseline_array(baseline, "baseline", dtype)
    try:
        arr = np.broadcast_to(arr, images_shape)
    except ValueError:
        raise ValueError(
            f"baseline shape {shape_str(arr.shape)} does not broadcast to images {shape_str(images_shape)}"
        ) from None
    return "array", 0.0, arr


def _baseline_array(value: Any, name: str, dtype: np.dtype[Any]) -> np.ndarray:
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array or a number, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr.astype(dtype, copy=False)
