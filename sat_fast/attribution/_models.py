"""The model: split into a hashable static part and its array leaves, rebuilt and applied inside a kernel.

Splitting lets a fresh ``partial(model.apply, variables)`` per call reuse the
compiled kernel: the static part (module definitions, functions, Python
numbers) is part of the cache key, the arrays are not (or, when compiled in as
constants, by identity). Flax is never imported here: an object can only be a
Flax module when Flax has already been imported, so ``sys.modules`` tells.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Literal, NamedTuple, TypeAlias

import jax
import numpy as np

__all__ = ["ModelKind", "ModelSpec", "Static", "apply_model", "is_array", "linen_parts", "rebuild", "split_model"]

#: How a model is rebuilt and called.
ModelKind: TypeAlias = Literal["nnx", "linen", "partial", "plain"]


class Static:
    """A hashable stand-in for a static leaf (by value when hashable, else by identity)."""

    __slots__ = ("_key", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        try:
            hash(value)
            self._key: tuple[Any, ...] = (0, type(value), value)
        except TypeError:
            self._key = (1, id(value))

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Static) or self._key[:2] != other._key[:2]:
            return False
        try:
            return bool(self._key[-1] == other._key[-1])
        except Exception:
            return self._key[-1] is other._key[-1]


class ModelSpec(NamedTuple):
    """The static part of a model: its kind, tree structure and non-array leaves."""

    kind: ModelKind
    treedef: Any  # jax.tree_util.PyTreeDef
    static: tuple[Static | None, ...]  # one entry per leaf: Static, or None for an array leaf


def is_array(leaf: Any) -> bool:
    """Whether a leaf is an array (a model parameter) rather than static configuration."""
    return isinstance(leaf, (jax.Array, np.ndarray))


def _flax_module(name: str) -> Any:
    """The Flax submodule ``flax.<name>`` if it is already imported, else None (never imports Flax)."""
    return sys.modules.get(f"flax.{name}")


def linen_parts(fn: Any) -> tuple[Any, Any] | None:
    """``(module, variables)`` when ``fn`` is a bound linen module or ``partial(module.apply, variables)``."""
    nn = _flax_module("linen")
    if nn is None:
        return None
    if isinstance(fn, nn.Module) and fn.scope is not None:
        return tuple(fn.unbind())  # (module, variables)
    if (
        isinstance(fn, functools.partial)
        and isinstance(getattr(fn.func, "__self__", None), nn.Module)
        and getattr(fn.func, "__name__", "") == "apply"
        and len(fn.args) == 1
        and not fn.keywords
    ):
        return fn.func.__self__, fn.args[0]  # type: ignore[attr-defined]  # checked just above
    return None


def split_model(fn: Any) -> tuple[ModelSpec, list[Any]]:
    """The static part of ``fn`` and its array leaves, in tree order."""
    nnx = _flax_module("nnx")
    kind: ModelKind
    tree: Any
    if nnx is not None and isinstance(fn, nnx.Module):
        kind, tree = "nnx", nnx.split(fn)
    elif (parts := linen_parts(fn)) is not None:
        kind, tree = "linen", parts
    elif isinstance(fn, functools.partial):
        kind, tree = "partial", (fn.func, fn.args, fn.keywords)
    elif callable(fn):
        kind, tree = "plain", fn
    else:
        raise TypeError(f"fn must be a callable from images (B, H, W, C) to logits (B, N), got {type(fn).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    static = tuple(None if is_array(leaf) else Static(leaf) for leaf in leaves)
    return ModelSpec(kind, treedef, static), [leaf for leaf in leaves if is_array(leaf)]


def rebuild(model: ModelSpec, arrays: list[Any]) -> Any:
    """The tree split by :func:`split_model`, with ``arrays`` (possibly traced) as its array leaves."""
    it = iter(arrays)
    leaves = [next(it) if s is None else s.value for s in model.static]
    return jax.tree_util.tree_unflatten(model.treedef, leaves)


def apply_model(model: ModelSpec, arrays: list[Any], images: jax.Array) -> jax.Array:
    """The model's logits (B, N) for ``images`` (B, H, W, C)."""
    tree = rebuild(model, arrays)
    if model.kind == "nnx":
        nnx = _flax_module("nnx")  # imported: the model was split from an nnx module
        out = nnx.merge(*tree)(images)
    elif model.kind == "linen":
        module, variables = tree
        out = module.apply(variables, images)
    elif model.kind == "partial":
        func, args, keywords = tree
        out = func(*args, images, **keywords)
    else:
        out = tree(images)
    return out  # type: ignore[no-any-return]  # user models are untyped
