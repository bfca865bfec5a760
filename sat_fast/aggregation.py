"""Aggregated Segment Attribution Tables: per-group summaries, comparisons, shortcut flags.

A per-image SAT has one row per (image, present segment). :func:`aggregate`
turns it into one row per group x segment (group = any columns: true class,
predicted class, correct or not, split, model), :func:`compare` sets two such
summaries side by side with a significance test, and :func:`flag_shortcuts`
lists segments that draw suspicious attribution.

Aggregation is a lazy Polars query run by the streaming engine: counts, means,
standard deviations and distinct image counts are mergeable sums, and the
median is found exactly by a few extra streaming histogram passes that narrow
down the middle values, so 10^8 rows from Parquet aggregate in bounded memory.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats as sps

__all__ = ["AGGREGATE_COLUMNS", "aggregate", "compare", "flag_shortcuts"]

#: Columns of :func:`aggregate`'s result after the group keys, in order.
AGGREGATE_COLUMNS = (
    "segment",
    "images",
    "present",
    "presence",
    "mean",
    "std",
    "sem",
    "ci_low",
    "ci_high",
    "median",
    "share",
    "density",
    "top1",
    "mean_rank",
)

_VALUE = "__value"
_ALL = "__all"
# Median selection: at most _MEDIAN_BINS histogram bins per cell and about
# _MEDIAN_GROUPS (cell, bin) groups per pass (the streaming group-by's memory
# grows with its group count), and the row count below which the remaining
# candidate values are collected and selected directly.
_MEDIAN_BINS = 1024
_MEDIAN_GROUPS = 1 << 16
_MEDIAN_COLLECT_ROWS = 1 << 22


def _streaming() -> dict[str, Any]:
    """collect() options for bounded memory: the streaming engine without common-subplan
    elimination, which would cache the whole scanned input to share it between the
    per-cell and per-group branches of one query."""
    if hasattr(pl, "QueryOptFlags"):
        return {"engine": "streaming", "optimizations": pl.QueryOptFlags(comm_subplan_elim=False)}
    return {"engine": "streaming", "comm_subplan_elim": False}  # polars < 1.31


# Joins of the scanned rows with a small per-cell table: hash the small side, stream the rows.
_SMALL_RIGHT: dict[str, Any] = (
    {"build_side": "force_right"} if "build_side" in inspect.signature(pl.LazyFrame.join).parameters else {}
)


def _as_lazy(table: Any, name: str = "table") -> pl.LazyFrame:
    if isinstance(table, pl.LazyFrame):
        return table
    if isinstance(table, pl.DataFrame):
        return table.lazy()
    raise TypeError(f"{name} must be a polars DataFrame or LazyFrame, got {type(table).__name__}")


def _group_keys(by: Any, schema: pl.Schema, name: str = "table") -> list[str]:
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


def _value_expr(value: Any, schema: pl.Schema, lf: pl.LazyFrame) -> pl.Expr:
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
    dtype = lf.select(expr.alias(_VALUE)).collect_schema()[_VALUE]
    if not dtype.is_numeric():
        raise TypeError(f"value must be numeric, got dtype {dtype}")
    return expr.cast(pl.Float64).alias(_VALUE)


def _require(schema: pl.Schema, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in schema]
    if missing:
        raise ValueError(f"{name} is missing required columns {missing}; its columns are {list(schema.names())}")


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def aggregate(
    table: pl.DataFrame | pl.LazyFrame,
    by: str | Sequence[str] | None = ("target",),
    *,
    value: str | pl.Expr = "mean",
    ci: float = 0.95,
    interval: Literal["t", "bootstrap"] = "t",
    n_boot: int = 2000,
    seed: int = 0,
    rank: str = "rank",
    engine: Literal["streaming", "in-memory"] = "streaming",
) -> pl.DataFrame:
    """Summarise a per-image SAT per group x segment.

    Parameters
    ----------
    table
        A per-image SAT (see :func:`sat_fast.segment_table`) as a DataFrame or
        LazyFrame, e.g. ``pl.scan_parquet("sats/*.parquet")``. Required
        columns: ``image_id``, ``segment``, the ``by`` keys and the columns
        ``value`` uses. ``share``, ``density`` and the ``rank`` column are
        optional: when absent, the matching result columns are null.
    by
        Grouping columns (any columns of the table: ``target``, ``label``,
        ``predicted``, ``correct``, ``split``, ``model``, ...). ``()`` or
        ``None`` gives one group over the whole table. Null keys form a group.
    value
        The per-image value summarised in ``mean``, ``std``, ``sem``, the
        interval and ``median``: a column name (default ``"mean"``, the SAT
        value) or a polars expression such as
        ``pl.col("abs_sum") / pl.col("pixels")``. Null values are left out.
    ci
        Confidence level of the interval, in (0, 1).
    interval
        ``"t"`` (default): Student-t interval ``mean +- t(n-1) * sem``, from
        streamed sums. ``"bootstrap"``: percentile interval of ``n_boot``
        resampled means drawn with ``seed``; it holds the values in memory.
    n_boot, seed
        Bootstrap resamples and random seed (``interval="bootstrap"`` only).
    rank
        Column holding the within-image rank (1 = highest) behind ``top1``
        and ``mean_rank``; e.g. ``"drop_rank"`` for a
        :func:`sat_fast.segment_deletion` frame.
    engine
        ``"streaming"`` (default) runs Polars' streaming engine in bounded
        memory (the exact median takes a few extra passes over the input);
        ``"in-memory"`` collects with the in-memory engine. Results agree.

    Returns
    -------
    polars.DataFrame
        One row per group x segment, sorted by the keys then the segment name,
        with the ``by`` columns followed by :data:`AGGREGATE_COLUMNS`:

        - ``images`` (Int64): distinct ``image_id`` in the group's rows;
        - ``present`` (Int64): rows of the segment in the group, i.e. images
          where it is present (a per-image SAT has one row per image and
          present segment);
        - ``presence``: present / images;
        - over the images where the segment is present: ``mean``, ``std``
          (ddof=1), ``sem`` (std / sqrt(n)), ``ci_low``, ``ci_high``,
          ``median`` of the value; ``share`` and ``density`` (means of the
          per-image columns); ``top1`` (fraction with rank 1); ``mean_rank``.

        ``std``, ``sem`` and the interval are null (not NaN) when fewer than
        two values are present. ``n`` in ``sem`` and the t quantile is the
        number of non-null values (``present`` for the SAT's own columns).
        An empty table gives an empty frame with these columns.

    Raises
    ------
    ValueError
        A missing required column, a grouping key that is not a column, or an
        option out of range.
    TypeError
        ``table`` is not a polars frame, or ``value`` is not numeric.

    Notes
    -----
    Streaming memory does not grow with the number of rows: it holds one
    accumulator per group x segment cell, one distinct-image set per group
    (so it grows with the number of distinct images), and for the median
    at most ~65k histogram bins per pass plus at most 4M candidate values.
    The median costs two or three extra streaming passes over ``table``
    (a lazy ``table`` is re-executed for each). Benchmark: 10^8 rows from
    Parquet in about 0.7 GB peak RSS (``benchmarks/bench_aggregate.py``).

    Examples
    --------
    >>> import numpy as np, sat_fast
    >>> sal = np.array([[[1.0, 1.0], [0.0, 0.0]], [[3.0, 3.0], [1.0, 1.0]]], np.float32)
    >>> lab = np.array([[[0, 0], [1, 1]]] * 2, np.uint8)
    >>> t = sat_fast.segment_table(sal, lab, names=["eye", "background"], targets=[7, 7])
    >>> agg = sat_fast.aggregate(t)
    >>> agg.select("target", "segment", "images", "mean", "median", "top1").rows()
    [(7, 'background', 2, 0.5, 0.5, 0.0), (7, 'eye', 2, 2.0, 2.0, 1.0)]
    """
    lf = _as_lazy(table)
    schema = lf.collect_schema()
    keys = _group_keys(by, schema)
    clash = [k for k in keys if k in AGGREGATE_COLUMNS or k.startswith("__")]
    if clash:
        raise ValueError(f"grouping key {clash[0]!r} clashes with a result column; rename it before aggregating")
    _require(schema, ["image_id", "segment"], "table")
    value_expr = _value_expr(value, schema, lf)
    if not isinstance(ci, float | int) or not 0.0 < float(ci) < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    _check_choice("interval", interval, ("t", "bootstrap"))
    _check_choice("engine", engine, ("streaming", "in-memory"))
    if interval == "bootstrap" and (not isinstance(n_boot, int) or n_boot < 1):
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not isinstance(rank, str):
        raise TypeError(f"rank must be a column name, got {type(rank).__name__}")

    group = keys or [_ALL]
    optional = [pl.col(c) for c in ("share", "density") if c in schema]
    if rank in schema:
        optional.append(pl.col(rank).alias("__rank"))
    base = lf.select(
        *(pl.col(k) for k in keys),
        *([pl.lit(0, pl.Int8).alias(_ALL)] if not keys else []),
        pl.col("image_id"),
        pl.col("segment"),
        value_expr,
        *optional,
    )
    cell = group + ["segment"]

    def mean_or_null(column: str) -> pl.Expr:
        if column in ("share", "density") and column not in schema:
            return pl.lit(None, pl.Float64).alias(column)
        return pl.col(column).cast(pl.Float64).mean().alias(column)

    has_rank = rank in schema
    aggs = [
        pl.len().cast(pl.Int64).alias("present"),
        pl.col(_VALUE).count().cast(pl.Int64).alias("__n"),
        pl.col(_VALUE).mean().alias("mean"),
        pl.col(_VALUE).std(ddof=1).alias("std"),
        mean_or_null("share"),
        mean_or_null("density"),
        ((pl.col("__rank") == 1).cast(pl.Float64).mean() if has_rank else pl.lit(None, pl.Float64)).alias("top1"),
        (pl.col("__rank").cast(pl.Float64).mean() if has_rank else pl.lit(None, pl.Float64)).alias("mean_rank"),
    ]
    if engine == "streaming":
        aggs += [pl.col(_VALUE).min().alias("__min"), pl.col(_VALUE).max().alias("__max")]
    else:
        aggs.append(pl.col(_VALUE).median().alias("median"))
    per_cell = base.group_by(cell).agg(aggs)
    per_group = base.group_by(group).agg(pl.col("image_id").n_unique().cast(pl.Int64).alias("images"))
    query = per_cell.join(per_group, on=group, how="left", nulls_equal=True)
    if engine == "streaming":
        out = query.collect(**_streaming())
        out = _with_streaming_median(base, out, cell)
    else:
        out = query.collect(engine="in-memory")

    out = out.sort([*(pl.col(k) for k in keys), pl.col("segment").cast(pl.String)], nulls_last=True)
    n = out["__n"].to_numpy().astype(np.float64)
    mean = out["mean"].to_numpy(allow_copy=True).astype(np.float64)
    std = out["std"].to_numpy(allow_copy=True).astype(np.float64)  # null -> NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = std / np.sqrt(n)
    if interval == "t":
        low, high = _t_interval(mean, sem, n, float(ci))
    else:
        low, high = _bootstrap_interval(base, out, cell, float(ci), n_boot, seed)
    enough = n >= 2
    out = out.with_columns(
        pl.Series("std", np.where(enough, std, np.nan), dtype=pl.Float64, nan_to_null=True),
        pl.Series("sem", np.where(enough, sem, np.nan), dtype=pl.Float64, nan_to_null=True),
        pl.Series("ci_low", np.where(enough, low, np.nan), dtype=pl.Float64, nan_to_null=True),
        pl.Series("ci_high", np.where(enough, high, np.nan), dtype=pl.Float64, nan_to_null=True),
        (pl.col("present") / pl.col("images")).cast(pl.Float64).alias("presence"),
    )
    return out.select(*keys, *AGGREGATE_COLUMNS)


def _t_interval(mean: np.ndarray, sem: np.ndarray, n: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    df = np.where(n >= 2, n - 1, 1.0)
    q = sps.t.ppf(0.5 + ci / 2, df)
    return mean - q * sem, mean + q * sem


def _bootstrap_interval(
    base: pl.LazyFrame, out: pl.DataFrame, cell: list[str], ci: float, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap of the mean per row of ``out`` (in its order), one seeded generator."""
    values = base.group_by(cell).agg(pl.col(_VALUE).drop_nulls().alias("__values")).collect()
    keyed = out.select(cell).with_row_index("__row").join(values, on=cell, how="left", nulls_equal=True)
    keyed = keyed.sort("__row")
    rng = np.random.default_rng(seed)
    low = np.full(out.height, np.nan)
    high = np.full(out.height, np.nan)
    alpha = (1 - ci) / 2
    for i, vals in enumerate(keyed["__values"].to_list()):
        x = np.asarray(vals if vals is not None else [], dtype=np.float64)
        if x.size < 2:
            continue
        means = np.empty(n_boot)
        step = max(1, (1 << 22) // x.size)  # resamples per chunk: bounded scratch memory
        for start in range(0, n_boot, step):
            stop = min(n_boot, start + step)
            means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
        low[i], high[i] = np.quantile(means, [alpha, 1 - alpha])
    return low, high


def _with_streaming_median(base: pl.LazyFrame, out: pl.DataFrame, cell: list[str]) -> pl.DataFrame:
    """Add the exact median per cell by streaming histogram selection.

    Each pass bins the values of every unresolved cell within its current
    interval [lo, hi] (bin = floor((v - lo) / (hi - lo) * bins), monotone in
    v), and records count, min and max per bin. A middle order statistic that
    is the first or last value of its bin, or in a bin of equal values, is
    then known exactly; otherwise the cell's interval shrinks to that bin's
    [min, max]. Once few candidate rows remain they are collected and sorted.
    """
    n = out["__n"]
    state = out.select(
        *cell,
        ((n - 1) // 2).alias("__r1"),  # 0-based ranks of the middle values within [lo, hi]
        (n // 2).alias("__r2"),
        pl.col("__min").alias("__lo"),
        pl.col("__max").alias("__hi"),
        n.alias("__c"),
    ).filter(pl.col("__c") > 0)
    done: list[pl.DataFrame] = []
    values = base.select(*cell, _VALUE).filter(pl.col(_VALUE).is_not_null())

    def settle(frame: pl.DataFrame) -> pl.DataFrame:
        resolved = frame.filter(pl.col("__lo") == pl.col("__hi"))
        done.append(resolved.select(*cell, pl.col("__lo").alias("__x1"), pl.col("__lo").alias("__x2")))
        return frame.filter(pl.col("__lo") != pl.col("__hi"))

    state = settle(state)
    while state.height and state["__c"].sum() > _MEDIAN_COLLECT_ROWS:
        n_bins = max(2, min(_MEDIAN_BINS, _MEDIAN_GROUPS // state.height))
        bins = (
            values.join(state.lazy().select(*cell, "__lo", "__hi"), on=cell, how="inner", nulls_equal=True, **_SMALL_RIGHT)
            .filter(pl.col(_VALUE).is_between(pl.col("__lo"), pl.col("__hi")))
            .with_columns(
                ((pl.col(_VALUE) - pl.col("__lo")) / (pl.col("__hi") - pl.col("__lo")) * n_bins)
                .floor()
                .clip(0, n_bins - 1)
                .cast(pl.Int32)
                .alias("__bin")
            )
            .group_by(*cell, "__bin")
            .agg(pl.len().cast(pl.Int64).alias("__len"), pl.col(_VALUE).min().alias("__bmin"), pl.col(_VALUE).max().alias("__bmax"))
            .collect(**_streaming())
        )
        bins = (
            bins.join(state.select(*cell, "__r1", "__r2"), on=cell, how="inner", nulls_equal=True)
            .sort([*cell, "__bin"])
            .with_columns(pl.col("__len").cum_sum().over(cell).alias("__end"))
            .with_columns((pl.col("__end") - pl.col("__len")).alias("__start"))
        )
        picks = []
        for r in ("__r1", "__r2"):
            hit = bins.filter((pl.col("__start") <= pl.col(r)) & (pl.col(r) < pl.col("__end")))
            known = (
                (pl.col(r) == pl.col("__start")) | (pl.col(r) == pl.col("__end") - 1) | (pl.col("__bmin") == pl.col("__bmax"))
            )
            exact = pl.when(pl.col(r) == pl.col("__start")).then(pl.col("__bmin")).otherwise(pl.col("__bmax"))
            picks.append(
                hit.select(
                    *cell,
                    pl.when(known).then(exact).alias(f"__x{r[-1]}"),
                    pl.col("__bin").alias(f"__bin{r[-1]}"),
                    (pl.col(r) - pl.col("__start")).alias(f"__rr{r[-1]}"),
                    pl.col("__bmin").alias(f"__lo{r[-1]}"),
                    pl.col("__bmax").alias(f"__hi{r[-1]}"),
                    pl.col("__len").alias(f"__c{r[-1]}"),
                )
            )
        both = picks[0].join(picks[1], on=cell, how="inner", nulls_equal=True)
        resolved = both.filter(pl.col("__x1").is_not_null() & pl.col("__x2").is_not_null())
        done.append(resolved.select(*cell, "__x1", "__x2"))
        # An unresolved cell has both middle values inside one bin (different
        # bins would make the lower the last of its bin), so narrow to it.
        rest = both.filter(pl.col("__x1").is_null() | pl.col("__x2").is_null())
        state = rest.select(
            *cell,
            pl.col("__rr1").alias("__r1"),
            pl.col("__rr2").alias("__r2"),
            pl.col("__lo1").alias("__lo"),
            pl.col("__hi1").alias("__hi"),
            pl.col("__c1").alias("__c"),
        )
        state = settle(state)
    if state.height:
        rows = (
            values.join(state.lazy().select(*cell, "__lo", "__hi", "__r1", "__r2"), on=cell, how="inner", nulls_equal=True, **_SMALL_RIGHT)
            .filter(pl.col(_VALUE).is_between(pl.col("__lo"), pl.col("__hi")))
            .collect(**_streaming())
        )
        done.append(
            rows.group_by(cell).agg(
                pl.col(_VALUE).sort().get(pl.col("__r1").first()).alias("__x1"),
                pl.col(_VALUE).sort().get(pl.col("__r2").first()).alias("__x2"),
            )
        )
    medians = pl.concat([d.select(*cell, pl.col("__x1").cast(pl.Float64), pl.col("__x2").cast(pl.Float64)) for d in done])
    medians = medians.select(*cell, ((pl.col("__x1") + pl.col("__x2")) / 2).alias("median"))
    return out.join(medians, on=cell, how="left", nulls_equal=True)


# --------------------------------------------------------------------------- compare

_SIDE_COLUMNS = ("images", "present", "presence", "mean", "std", "median", "share", "density")


def _table_kind(schema: pl.Schema, name: str) -> str:
    if "image_id" in schema and "segment" in schema:
        return "per-image"
    if all(c in schema for c in ("segment", "images", "present", "mean", "std")):
        return "aggregated"
    raise ValueError(
        f"{name} is neither a per-image SAT (needs image_id and segment) nor an aggregated one "
        f"(needs segment, images, present, mean, std); its columns are {list(schema.names())}"
    )


def compare(
    a: pl.DataFrame | pl.LazyFrame,
    b: pl.DataFrame | pl.LazyFrame,
    *,
    by: str | Sequence[str] | None = ("target",),
    value: str | pl.Expr = "mean",
    test: Literal["welch", "permutation"] = "welch",
    correction: Literal["bh", "bonferroni"] | None = "bh",
    alpha: float = 0.05,
    n_perm: int = 9999,
    seed: int = 0,
    sort: Literal["effect", "diff", "p"] = "effect",
) -> pl.DataFrame:
    """Compare two SATs per group x segment: model A vs B, split vs split, correct vs wrong.

    Parameters
    ----------
    a, b
        Both per-image SATs (aggregated here with ``by`` and ``value``) or both
        results of :func:`aggregate` (their group keys are every column
        before ``segment``). Group keys must have the same names and dtypes.
    by, value
        As in :func:`aggregate`; used for per-image tables only.
    test
        ``"welch"`` (default): Welch's unequal-variance t test of the two
        means, from ``mean``, ``std`` and ``present`` (so it works on
        aggregated tables). ``"permutation"``: two-sided permutation test of
        the difference of means with ``n_perm`` seeded random relabellings,
        p = (1 + #{|d*| >= |d|}) / (1 + n_perm); needs per-image tables and
        holds their values in memory.
    correction
        Multiple-testing correction over all group x segment tests with a p
        value: ``"bh"`` (Benjamini-Hochberg false discovery rate, default),
        ``"bonferroni"``, or ``None`` (``p_adj`` = ``p``).
    alpha
        Level for the ``significant`` column (``p_adj <= alpha``).
    sort
        Order of the rows: by ``|effect|`` (default), ``|diff|`` or ``p``;
        rows without the statistic come last.

    Returns
    -------
    polars.DataFrame
        The group keys, ``segment``, for each side ``images_a``,
        ``present_a``, ``presence_a``, ``mean_a``, ``std_a``, ``median_a``,
        ``share_a``, ``density_a`` (and ``_b``); ``diff`` (mean_b -
        mean_a), ``presence_diff``, ``effect`` (Cohen's d: diff over the
        pooled standard deviation), ``t``, ``df`` (Welch-Satterthwaite),
        ``p``, ``p_adj``, ``significant``. A segment missing on one side
        (full outer join) has nulls there and no test; so does a side with
        fewer than two values, and a pair with zero variance on both sides.

    Raises
    ------
    ValueError
        Tables of different kinds or group keys, a key dtype mismatch, a bad
        option, or ``test="permutation"`` on aggregated tables.

    Examples
    --------
    >>> import numpy as np, polars as pl, sat_fast
    >>> a = pl.DataFrame({"target": [0, 0], "segment": ["eye", "eye"], "images": [10, 12],
    ...                   "present": [10, 12], "mean": [1.0, 2.0], "std": [0.5, 0.5]}).head(1)
    >>> b = a.with_columns(pl.col("mean") + 1.0)
    >>> sat_fast.compare(a, b).select("segment", "diff", "effect").rows()
    [('eye', 1.0, 2.0)]
    """
    _check_choice("test", test, ("welch", "permutation"))
    _check_choice("correction", correction, ("bh", "bonferroni", None))
    _check_choice("sort", sort, ("effect", "diff", "p"))
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    la, lb = _as_lazy(a, "a"), _as_lazy(b, "b")
    sa, sb = la.collect_schema(), lb.collect_schema()
    kind_a, kind_b = _table_kind(sa, "a"), _table_kind(sb, "b")
    if kind_a != kind_b:
        raise ValueError(f"a is a {kind_a} table but b is a {kind_b} table; pass two of the same kind")
    if kind_a == "per-image":
        keys_a = _group_keys(by, sa, "a")
        keys_b = _group_keys(by, sb, "b")
        agg_a = aggregate(la, keys_a, value=value)
        agg_b = aggregate(lb, keys_b, value=value)
    else:
        if test == "permutation":
            raise ValueError("test='permutation' needs per-image tables; aggregated tables have no per-image values")
        keys_a = list(sa.names())[: list(sa.names()).index("segment")]
        keys_b = list(sb.names())[: list(sb.names()).index("segment")]
        if keys_a != keys_b:
            raise ValueError(f"a is grouped by {keys_a} but b by {keys_b}; compare tables with the same group keys")
        agg_a, agg_b = la.collect(), lb.collect()
    keys = keys_a
    for k in keys:
        if sa[k] != sb[k]:
            raise ValueError(f"group key {k!r} is {sa[k]} in a but {sb[k]} in b; cast one to match")

    def side(frame: pl.DataFrame, suffix: str) -> pl.DataFrame:
        cols = [pl.col(c).alias(f"{c}_{suffix}") if c in frame.columns else pl.lit(None, pl.Float64).alias(f"{c}_{suffix}") for c in _SIDE_COLUMNS]
        return frame.select(*keys, pl.col("segment").cast(pl.String), *cols)

    joined = side(agg_a, "a").join(side(agg_b, "b"), on=[*keys, "segment"], how="full", coalesce=True, nulls_equal=True)
    ma, mb = (joined[f"mean_{s}"].to_numpy().astype(np.float64) for s in "ab")
    sa_, sb_ = (joined[f"std_{s}"].to_numpy().astype(np.float64) for s in "ab")
    na, nb = (joined[f"present_{s}"].fill_null(0).to_numpy().astype(np.float64) for s in "ab")
    diff = mb - ma
    t, dof, p = _welch(ma, sa_, na, mb, sb_, nb)
    if test == "permutation":
        p = _permutation_p(la, lb, keys, value, joined, n_perm, seed)
    effect = _cohen_d(diff, sa_, na, sb_, nb)
    p_adj = _adjust(p, correction)
    out = joined.with_columns(
        pl.col("segment").cast(pl.Categorical),
        pl.Series("diff", diff, dtype=pl.Float64, nan_to_null=True),
        (pl.col("presence_b") - pl.col("presence_a")).alias("presence_diff"),
        pl.Series("effect", effect, dtype=pl.Float64, nan_to_null=True),
        pl.Series("t", t, dtype=pl.Float64, nan_to_null=True),
        pl.Series("df", dof, dtype=pl.Float64, nan_to_null=True),
        pl.Series("p", p, dtype=pl.Float64, nan_to_null=True),
        pl.Series("p_adj", p_adj, dtype=pl.Float64, nan_to_null=True),
    ).with_columns((pl.col("p_adj") <= alpha).alias("significant"))
    order = {"effect": pl.col("effect").abs(), "diff": pl.col("diff").abs(), "p": pl.col("p")}[sort]
    return out.sort(
        [order, pl.col("diff").abs(), *(pl.col(k) for k in keys), pl.col("segment").cast(pl.String)],
        descending=[sort != "p", True, *([False] * (len(keys) + 1))],
        nulls_last=True,
    )


def _welch(ma, sa, na, mb, sb, nb):  # type: ignore[no-untyped-def]
    """Welch's t, Welch-Satterthwaite df and two-sided p (NaN where undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        va, vb = sa**2 / na, sb**2 / nb
        se2 = va + vb
        ok = (na >= 2) & (nb >= 2) & (se2 > 0) & np.isfinite(ma) & np.isfinite(mb)
        t = np.where(ok, (mb - ma) / np.sqrt(se2), np.nan)
        dof = np.where(ok, se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1)), np.nan)
    p = np.full(t.shape, np.nan)
    p[ok] = 2 * sps.t.sf(np.abs(t[ok]), dof[ok])
    return t, dof, p


def _cohen_d(diff, sa, na, sb, nb):  # type: ignore[no-untyped-def]
    """diff / pooled sd, pooled over both sides with ddof=1; a single-value side adds no variance."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ssa = np.where(na >= 2, (na - 1) * np.nan_to_num(sa) ** 2, 0.0)
        ssb = np.where(nb >= 2, (nb - 1) * np.nan_to_num(sb) ** 2, 0.0)
        pooled = np.sqrt((ssa + ssb) / (na + nb - 2))
        return np.where((na >= 1) & (nb >= 1) & (na + nb > 2) & (pooled > 0), diff / pooled, np.nan)


def _adjust(p: np.ndarray, correction: str | None) -> np.ndarray:
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0 or correction is None:
        return np.where(ok, p, np.nan)
    q = p[ok]
    if correction == "bonferroni":
        out[ok] = np.minimum(q * m, 1.0)
        return out
    order = np.argsort(q, kind="stable")
    scaled = q[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    result = np.empty(m)
    result[order] = np.minimum(adjusted, 1.0)
    out[ok] = result
    return out


def _permutation_p(la, lb, keys, value, joined, n_perm, seed):  # type: ignore[no-untyped-def]
    if not isinstance(n_perm, int) or n_perm < 1:
        raise ValueError(f"n_perm must be a positive int, got {n_perm!r}")
    cell = [*keys, "segment"]

    def values(lf: pl.LazyFrame) -> pl.DataFrame:
        expr = _value_expr(value, lf.collect_schema(), lf)
        return (
            lf.select(*keys, pl.col("segment").cast(pl.String), expr)
            .group_by(cell)
            .agg(pl.col(_VALUE).drop_nulls())
            .collect()
        )

    va = values(la).rename({_VALUE: "__va"})
    vb = values(lb).rename({_VALUE: "__vb"})
    keyed = (
        joined.select(cell)
        .with_row_index("__row")
        .join(va, on=cell, how="left", nulls_equal=True)
        .join(vb, on=cell, how="left", nulls_equal=True)
        .sort("__row")
    )
    rng = np.random.default_rng(seed)
    p = np.full(joined.height, np.nan)
    for i, (xa, xb) in enumerate(zip(keyed["__va"].to_list(), keyed["__vb"].to_list(), strict=True)):
        if not xa or not xb or len(xa) < 2 or len(xb) < 2:
            continue
        pooled = np.asarray(xa + xb, dtype=np.float64)
        n_a = len(xa)
        observed = abs(np.mean(xb) - np.mean(xa))
        hits = 0
        step = max(1, (1 << 22) // pooled.size)
        for start in range(0, n_perm, step):
            stop = min(n_perm, start + step)
            perm = rng.permuted(np.broadcast_to(pooled, (stop - start, pooled.size)), axis=1)
            d = np.abs(perm[:, n_a:].mean(axis=1) - perm[:, :n_a].mean(axis=1))
            # Relative slack so float rounding of equal splits still counts as a tie.
            hits += int((d >= observed * (1 - 1e-12)).sum())
        p[i] = (1 + hits) / (1 + n_perm)
    return p


# --------------------------------------------------------------------------- shortcut flags


def _aggregate_keys(agg: pl.DataFrame) -> list[str]:
    names = list(agg.columns)
    if "segment" not in names:
        raise ValueError(f"agg must be a result of aggregate() with a 'segment' column; its columns are {names}")
    return names[: names.index("segment")]


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
        ``class_column``) to segment names, or one list for every class.
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
        The group keys, ``segment``, ``reason`` (``"share"``, ``"density"``,
        ``"share+density"`` or ``"excess"``), the evidence ``presence``,
        ``present``, ``images``, ``mean``, ``share``, ``density``, ``top1``,
        ``mean_rank`` and, without ``core``, ``others_share`` and ``excess``.
        Sorted by ``share`` (with ``core``) or ``excess`` (without), largest
        first. No flags give an empty frame with these columns.

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
    keys = _aggregate_keys(agg)
    _require(agg.schema, ["presence", "share", "density"], "agg")
    if class_column is None:
        if len(keys) == 1:
            class_column = keys[0]
        elif "target" in keys:
            class_column = "target"
        else:
            raise ValueError(f"agg has group keys {keys}; say which one holds the class with class_column=")
    if class_column not in keys:
        raise ValueError(f"class_column {class_column!r} is not a group key of agg; its keys are {keys}")
    for name, threshold in (("share_min", share_min), ("density_min", density_min), ("presence_min", presence_min), ("excess_min", excess_min)):
        if not isinstance(threshold, float | int) or not math.isfinite(threshold):
            raise ValueError(f"{name} must be a finite number, got {threshold!r}")
    evidence = [c for c in ("presence", "present", "images", "mean", "share", "density", "top1", "mean_rank") if c in agg.columns]
    frame = agg.with_columns(pl.col("segment").cast(pl.String))
    if core is not None:
        if isinstance(core, Mapping):
            pairs = [(cls, name) for cls, names in core.items() for name in _names(names, f"core[{cls!r}]")]
            classes = pl.Series(class_column, list(core.keys()), dtype=agg.schema[class_column], strict=False)
            lost = [cls for cls, got in zip(core.keys(), classes.to_list(), strict=True) if cls is not None and got is None]
            if lost:
                raise TypeError(f"core class {lost[0]!r} does not match {class_column!r} of dtype {agg.schema[class_column]}")
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
            pl.when(big_share & dense).then(pl.lit("share+density")).when(big_share).then(pl.lit("share")).otherwise(pl.lit("density"))
        )
        flagged = frame.filter((big_share | dense) & (pl.col("presence") >= presence_min)).with_columns(reason.alias("reason"))
        flagged = flagged.sort(["share", *keys, "segment"], descending=[True] + [False] * (len(keys) + 1), nulls_last=True)
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
            pl.lit("excess").alias("reason")
        )
        flagged = flagged.sort(["excess", *keys, "segment"], descending=[True] + [False] * (len(keys) + 1), nulls_last=True)
        extra = ["others_share", "excess"]
    return flagged.select(*keys, pl.col("segment").cast(pl.Categorical), "reason", *evidence, *extra)


def _names(names: Any, what: str) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Sequence | set | frozenset):
        raise TypeError(f"{what} must be a list of segment names, got {type(names).__name__}")
    out = list(names)
    for n in out:
        if not isinstance(n, str):
            raise TypeError(f"{what} must hold segment names (str), got {n!r}")
    return out
