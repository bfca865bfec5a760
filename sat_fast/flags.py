"""Shortcut flags: segments that draw suspicious attribution in a class."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from sat_fast._frames import (
    NAME_COLUMNS,
    aggregate_keys,
    require_columns,
)

__all__ = ["flag_shortcuts"]


def flag_shortcuts(
    agg: pl.DataFrame,
    core: Mapping[Any, Sequence[str]] | Sequence[str] | None = None,
    *,
    class_column: str | None = None,
    share_min: float = 0.3,
    density_min: float = 2.0,
    presence_min: float = 0.05,
    excess_min: float = 0.1,
) -> pl.DataFrame:
    """Segments that draw suspicious attribution, with the evidence.

    Parameters
    ----------
    agg
        A result of :func:`aggregate` (needs ``share`` and ``density``).
    core
        Each class's core concepts: a mapping from class (a value of
        ``class_column``, or its name where ``agg`` has the class-name column:
        ``{"fish": ["fin"]}`` for ``target`` with ``class``) to segment names,
        or one list for every class.
        Classes missing from a mapping are not examined. With ``core``, a
        non-core segment is flagged when ``share >= share_min`` (it carries a
        large part of the image's absolute attribution) or ``density >=
        density_min`` (its attribution per unit area is that many times what
        its area alone would give), and ``presence >= presence_min``.
        Without ``core`` (``None``), a segment is flagged in a class where its
        ``share`` exceeds its mean share over the other classes (a class
        without the segment counts as 0) by at least ``excess_min``; classes
        are compared within equal values of the other group keys (e.g. per
        model).
    class_column
        The group key holding the class; default: the only group key, or
        ``"target"`` when there are several.
    share_min, density_min, presence_min, excess_min
        Thresholds as above; defaults 0.3, 2.0, 0.05 and 0.1.

    Returns
    -------
    polars.DataFrame
        The group keys (each class index with its name column, when ``agg``
        has one), ``segment``, ``reason`` (``"share"``, ``"density"``,
        ``"share+density"`` or ``"excess"``), the evidence ``presence``,
        ``present``, ``images``, ``mean``, ``share``, ``density``, ``top1``,
        ``mean_rank``, without ``core`` ``others_share`` and ``excess``, and
        ``evidence``: the strength of the evidence, by which the flags are
        sorted (strongest first). ``share`` and ``excess`` are means over the
        images that have the segment, so ``evidence`` weighs them by
        ``presence``: ``share * presence`` with ``core`` (the part of the
        class's absolute attribution the segment draws over all its images)
        and ``excess * presence`` without. A segment in 5% of a class's
        images ranks below one in 60% with a similar share. No flags give an
        empty frame with these columns.

    Examples
    --------
    >>> import polars as pl, sat_fast
    >>> agg = pl.DataFrame({"target": [0, 0], "segment": ["eye", "watermark"], "images": [9, 9],
    ...     "present": [9, 6], "presence": [1.0, 0.67], "mean": [0.4, 0.9], "share": [0.3, 0.5],
    ...     "density": [1.2, 6.0], "top1": [0.2, 0.8], "mean_rank": [1.8, 1.2]})
    >>> sat_fast.flag_shortcuts(agg, core={0: ["eye"]}).select("segment", "reason").rows()
    [('watermark', 'share+density')]
    """
    if not isinstance(agg, pl.DataFrame):
        raise TypeError(f"agg must be a polars DataFrame from aggregate(), got {type(agg).__name__}")
    keys = aggregate_keys(agg)
    require_columns(agg.schema, ["presence", "share", "density"], "agg")
    if class_column is None:
        if len(keys) == 1:
            class_column = keys[0]
        elif "target" in keys:
            class_column = "target"
        else:
            raise ValueError(f"agg has group keys {keys}; say which one holds the class with class_column=")
    if class_column not in keys and class_column in NAME_COLUMNS.values():
        class_column = next((k for k in keys if NAME_COLUMNS.get(k) == class_column), class_column)
    if class_column not in keys:
        raise ValueError(f"class_column {class_column!r} is not a group key of agg; its keys are {keys}")
    for name, threshold in (
        ("share_min", share_min),
        ("density_min", density_min),
        ("presence_min", presence_min),
        ("excess_min", excess_min),
    ):
        if not isinstance(threshold, float | int) or not math.isfinite(threshold):
            raise ValueError(f"{name} must be a finite number, got {threshold!r}")
    shown = [
        c
        for c in ("presence", "present", "images", "mean", "share", "density", "top1", "mean_rank")
        if c in agg.columns
    ]
    frame = agg.with_columns(pl.col("segment").cast(pl.String))
    if core is not None:
        if isinstance(core, Mapping):
            core = _core_by_index(agg, core, class_column)
            pairs = [(cls, name) for cls, names in core.items() for name in _names(names, f"core[{cls!r}]")]
            classes = pl.Series(class_column, list(core.keys()), dtype=agg.schema[class_column], strict=False)
            lost = [
                cls for cls, got in zip(core.keys(), classes.to_list(), strict=True) if cls is not None and got is None
            ]
            if lost:
                raise TypeError(
                    f"core class {lost[0]!r} does not match {class_column!r} of dtype {agg.schema[class_column]}"
                )
            frame = frame.filter(pl.col(class_column).is_in(classes.implode()))
            core_table = pl.DataFrame(
                [
                    pl.Series(class_column, [c for c, _ in pairs], dtype=agg.schema[class_column], strict=False),
                    pl.Series("segment", [n for _, n in pairs], dtype=pl.String),
                ]
            )
            frame = frame.join(core_table, on=[class_column, "segment"], how="anti", nulls_equal=True)
        else:
            frame = frame.filter(~pl.col("segment").is_in(_names(core, "core")))
        big_share = pl.col("share").fill_null(-math.inf) >= share_min
        dense = pl.col("density").fill_null(-math.inf) >= density_min
        reason = (
            pl.when(big_share & dense)
            .then(pl.lit("share+density"))
            .when(big_share)
            .then(pl.lit("share"))
            .otherwise(pl.lit("density"))
        )
        flagged = frame.filter((big_share | dense) & (pl.col("presence") >= presence_min)).with_columns(
            reason.alias("reason"),
            # share is a mean over the images that have the segment: weighted by presence it is the part of
            # the class's attribution the segment draws over all its images, so a rare segment ranks below
            # a frequent one of similar share.
            (pl.col("share") * pl.col("presence")).alias("evidence"),
        )
        extra: list[str] = []
    else:
        others = [k for k in keys if k != class_column]
        n_classes = pl.col(class_column).n_unique()
        frame = frame.with_columns((n_classes.over(others) if others else n_classes).alias("__classes"))
        share = pl.col("share").fill_null(0.0)
        total = share.sum().over([*others, "segment"])
        frame = frame.with_columns(
            pl.when(pl.col("__classes") > 1).then((total - share) / (pl.col("__classes") - 1)).alias("others_share")
        ).with_columns((pl.col("share") - pl.col("others_share")).alias("excess"))
        flagged = frame.filter((pl.col("excess") >= excess_min) & (pl.col("presence") >= presence_min)).with_columns(
            pl.lit("excess").alias("reason"), (pl.col("excess") * pl.col("presence")).alias("evidence")
        )
        extra = ["others_share", "excess"]
    flagged = flagged.sort(
        ["evidence", *keys, "segment"], descending=[True] + [False] * (len(keys) + 1), nulls_last=True
    )
    carried = [c for k in keys for c in (k, NAME_COLUMNS.get(k)) if c is not None and c in agg.columns]
    return flagged.select(*carried, pl.col("segment").cast(pl.Categorical), "reason", *shown, *extra, "evidence")


def _core_by_index(agg: pl.DataFrame, core: Mapping[Any, Sequence[str]], class_column: str) -> dict[Any, Any]:
    """``core`` with class names replaced by ``class_column``'s values, where ``agg`` names the classes."""
    name_column = NAME_COLUMNS.get(class_column)
    if agg.schema[class_column] == pl.String or name_column not in agg.columns:
        return dict(core)
    pairs = agg.select(pl.col(class_column), pl.col(name_column).cast(pl.String)).unique().drop_nulls()
    index = dict(zip(pairs[name_column].to_list(), pairs[class_column].to_list(), strict=True))
    out: dict[Any, Any] = {}
    for cls, names in core.items():
        if isinstance(cls, str):
            if cls not in index:
                raise ValueError(
                    f"core class {cls!r} is not a class of agg; its classes are {sorted(index)} "
                    f"(or give {class_column} values)"
                )
            cls = index[cls]
        if cls in out:
            raise ValueError(f"core names class {cls!r} twice (by name and by index)")
        out[cls] = names
    return out


def _names(names: Any, what: str) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Sequence | set | frozenset):
        raise TypeError(f"{what} must be a list of segment names, got {type(names).__name__}")
    out = list(names)
    for n in out:
        if not isinstance(n, str):
            raise TypeError(f"{what} must hold segment names (str), got {n!r}")
    return out
