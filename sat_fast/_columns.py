"""Columns that every table builder shares: image ids, within-image ranks and class names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

__all__ = ["class_name_list", "class_name_series", "competition_rank", "image_id_series"]


def competition_rank(group: np.ndarray, value: np.ndarray) -> np.ndarray:
    """1-based rank of value within each group, highest first, ties share the smallest rank."""
    n = group.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((-value, group))
    g, val = group[order], value[order]
    idx = np.arange(n)
    new_group = np.r_[True, g[1:] != g[:-1]]
    new_value = new_group | np.r_[True, val[1:] != val[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, idx, 0))
    value_start = np.maximum.accumulate(np.where(new_value, idx, 0))
    rank = np.empty(n, np.int64)
    rank[order] = value_start - group_start + 1
    return rank


def image_id_series(image_ids: Any, b: int) -> pl.Series:
    if image_ids is None:
        return pl.Series("image_id", np.arange(b, dtype=np.int64), dtype=pl.Int64)
    ids = list(image_ids) if not isinstance(image_ids, np.ndarray) else image_ids.tolist()
    if len(ids) != b:
        raise ValueError(f"image_ids has {len(ids)} entries but the batch has {b} images")
    if all(isinstance(i, str) for i in ids):
        s = pl.Series("image_id", ids, dtype=pl.String)
    elif all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        s = pl.Series("image_id", ids, dtype=pl.Int64)
    else:
        raise TypeError("image_ids must be all integers or all strings")
    if s.n_unique() != b:
        dup = s.filter(s.is_duplicated()).first()
        raise ValueError(f"image_ids must be unique; {dup!r} appears more than once")
    return s


def class_name_list(class_names: Sequence[str] | None) -> list[str] | None:
    """``class_names`` as a list of strings (None stays None), or a TypeError."""
    if class_names is None:
        return None
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names must be a sequence of class names, got {type(class_names).__name__}")
    names = list(class_names)
    if not all(isinstance(n, str) for n in names):
        raise TypeError("class_names must hold strings (one per class index)")
    return names


def class_name_series(name: str, index: Any, classes: list[str], what: str) -> pl.Series:
    """The class names of an integer index column (null where the index is null)."""
    idx = pl.Series(index)
    if not idx.dtype.is_integer():
        raise TypeError(f"{what} must hold class indices (integers) to be named by class_names, got {idx.dtype}")
    bad = idx.filter((idx < 0) | (idx >= len(classes)))
    if bad.len():
        raise ValueError(f"{what} {bad[0]} is not a class index: class_names has {len(classes)} names")
    lookup = pl.Series(name, classes, dtype=pl.Categorical)
    return lookup.gather(idx.cast(pl.Int64))
