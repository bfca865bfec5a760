"""Polars helpers shared by aggregation, comparison, flags, plots and reports."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import polars as pl

__all__ = [
    "ALL_ROWS",
    "NAME_COLUMNS",
    "SMALL_RIGHT",
    "VALUE",
    "aggregate_keys",
    "as_lazy",
    "group_keys",
    "group_labels",
    "name_columns",
    "require_columns",
    "streaming_options",
    "value_expr",
]

VALUE = "__value"
ALL_ROWS = "__all"

#: Class-index columns and the column naming their class (a function of the index, carried alongside it).
NAME_COLUMNS = {"target": "class", "label": "label_class", "predicted": "predicted_class"}


def name_columns(keys: Sequence[str], columns: Sequence[str]) -> list[str]:
    """The class-name columns (``class``, ...) of the index columns among ``keys``, where ``columns`` has them."""
    return [
        NAME_COLUMNS[k]
        for k in keys
        if k in NAME_COLUMNS and NAME_COLUMNS[k] in columns and NAME_COLUMNS[k] not in keys
    ]


def streaming_options() -> dict[str, Any]:
    """``collect()`` options for bounded memory.

    The streaming engine without common-subplan elimination, which would cache
    the whole scanned input to share it between the per-cell and per-group
    branches of one query.
    """
    if hasattr(pl, "QueryOptFlags"):
        return {"engine": "streaming", "optimizations": pl.QueryOptFlags(comm_subplan_elim=False)}
    return {"engine": "streaming", "comm_subplan_elim": False}  # polars < 1.31


# Joins of the scanned rows with a small per-cell table: hash the small side, stream the rows.
SMALL_RIGHT: dict[str, Any] = (
    {"build_side": "force_right"} if "build_side" in inspect.signature(pl.LazyFrame.join).parameters else {}
)


def as_lazy(table: Any, name: str = "table") -> pl.LazyFrame:
    if isinstance(table, pl.LazyFrame):
        return table
    if isinstance(table, pl.DataFrame):
        return table.lazy()
    raise TypeError(f"{name} must be a polars DataFrame or LazyFrame, got {type(table).__name__}")


def group_keys(by: Any, schema: pl.Schema, name: str = "table") -> list[str]:
    if by is None:
        keys: list[str] = []
    elif isinstance(by, str):
        keys = [by]
    elif isinstance(by, Sequence):
        keys = list(by)
    else:
        raise TypeError(f"by must be a column name or a sequence of column names, got {type(by).__name__}")
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"by must hold column names (str), got {key!r}")
        if key in ("segment", "image_id"):
            raise ValueError(f"by cannot contain {key!r}: results are already per segment, and images are counted")
        if key not in schema:
            raise ValueError(f"grouping key {key!r} is not a column of {name}; its columns are {list(schema.names())}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"by names a column twice: {keys}")
    return keys


def value_expr(value: Any, schema: pl.Schema, lf: pl.LazyFrame) -> pl.Expr:
    if isinstance(value, str):
        if value not in schema:
            raise ValueError(f"value column {value!r} is not in the table; its columns are {list(schema.names())}")
        expr = pl.col(value)
    elif isinstance(value, pl.Expr):
        missing = [c for c in value.meta.root_names() if c not in schema]
        if missing:
            raise ValueError(f"value expression uses columns {missing} that are not in the table")
        expr = value
    else:
        raise TypeError(f"value must be a column name or a polars expression, got {type(value).__name__}")
    dtype = lf.select(expr.alias(VALUE)).collect_schema()[VALUE]
    if not dtype.is_numeric():
        raise TypeError(f"value must be numeric, got dtype {dtype}")
    return expr.cast(pl.Float64).alias(VALUE)


def require_columns(frame: pl.DataFrame | pl.Schema, columns: Sequence[str], name: str) -> None:
    """Raise ``ValueError`` naming the columns that ``frame`` (a frame or a schema) lacks."""
    names = list(frame.columns) if isinstance(frame, pl.DataFrame) else list(frame.names())
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{name} is missing required columns {missing}; its columns are {names}")


def aggregate_keys(agg: pl.DataFrame) -> list[str]:
    """The group key columns of an :func:`sat_fast.aggregate` result (those before ``segment``).

    A class-name column carried beside its index (``class`` beside ``target``) is not a key of its own.
    """
    if not isinstance(agg, pl.DataFrame):
        raise TypeError(f"expected a polars DataFrame from aggregate(), got {type(agg).__name__}")
    names = list(agg.columns)
    if "segment" not in names:
        raise ValueError(f"agg must be a result of aggregate() with a 'segment' column; its columns are {names}")
    before = names[: names.index("segment")]
    carried = {NAME_COLUMNS[k] for k in before if NAME_COLUMNS.get(k) in before}
    return [k for k in before if k not in carried]


def group_labels(frame: pl.DataFrame, keys: Sequence[str]) -> list[str]:
    """One readable label per row from the group key columns (``"target=0, split=ood"``).

    A class index with its name column beside it shows the name (``"target=fish"``).
    """
    if not keys:
        return ["all"] * frame.height

    def text(k: str) -> pl.Expr:
        index = pl.col(k).cast(pl.String)
        name = NAME_COLUMNS.get(k)
        return pl.coalesce(pl.col(name).cast(pl.String), index) if name in frame.columns else index

    cols = [frame.select(text(k).fill_null("null")).to_series().to_list() for k in keys]
    if len(keys) == 1:
        return [f"{keys[0]}={a}" for a in cols[0]]
    return [", ".join(f"{k}={val}" for k, val in zip(keys, row, strict=True)) for row in zip(*cols, strict=True)]
