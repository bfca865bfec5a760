"""Columns that every table builder shares: image ids and within-image ranks."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

__all__ = ["competition_rank", "image_id_series"]


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
