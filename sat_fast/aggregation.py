"""Aggregated Segment Attribution Tables: one row per group x segment.

A per-image SAT has one row per (image, present segment). :func:`aggregate`
turns it into one row per group x segment (group = any columns: true class,
predicted class, correct or not, split, model).

Aggregation is a lazy Polars query run by the streaming engine: counts, means,
standard deviations and distinct image counts are mergeable sums, and the
median is found exactly by a few extra streaming histogram passes that narrow
down the middle values, so 10^8 rows from Parquet aggregate in bounded memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from sat_fast._frames import (
    ALL_ROWS,
    NAME_COLUMNS,
    SMALL_RIGHT,
    VALUE,
    as_lazy,
    group_keys,
    name_columns,
    require_columns,
    streaming_options,
    value_expr,
)
from sat_fast._typing import AggregateEngine, IntervalKind, check_choice

__all__ = ["AGGREGATE_COLUMNS", "RUN_COLUMN", "aggregate"]

#: The column that tells the runs apart (``sat-fast run`` and the demo write a short id in every row).
RUN_COLUMN = "run"

# Duplicated (group, image, segment) keys named in the error.
_SHOWN_DUPLICATES = 3

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


class DuplicateRowsError(ValueError):
    """A table holds more than one row per (group, image, segment): aggregating would double count."""


# Median selection: at most _MEDIAN_BINS histogram bins per cell and about
# _MEDIAN_GROUPS (cell, bin) groups per pass (the streaming group-by's memory
# grows with its group count), and the row count below which the remaining
# candidate values are collected and selected directly.
_MEDIAN_BINS = 1024
_MEDIAN_GROUPS = 1 << 16
_MEDIAN_COLLECT_ROWS = 1 << 22


def aggregate(
    table: pl.DataFrame | pl.LazyFrame,
    by: str | Sequence[str] | None = ("target",),
    *,
    value: str | pl.Expr = "mean",
    ci: float = 0.95,
    interval: IntervalKind = "t",
    n_boot: int = 2000,
    seed: int = 0,
    rank: str = "rank",
    engine: AggregateEngine = "streaming",
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
        ``predicted``, ``correct``, ``split``, ``model``, ``run``, ...). ``()``
        or ``None`` gives one group over the whole table. Null keys form a
        group. The class names of ``target``, ``label`` and ``predicted``
        (columns ``class``, ``label_class``, ``predicted_class``), where the
        table has them, are carried beside their key.
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
        with the ``by`` columns (each class index followed by its name column,
        when the table has one) followed by :data:`AGGREGATE_COLUMNS`:

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
        A missing required column, a grouping key that is not a column, an
        option out of range, more than one row per (group, image, segment)
        (tables of several runs over the same images: the message names a few
        such keys and suggests the column that tells the runs apart, ``run``),
        or one class index with two names.
    TypeError
        ``table`` is not a polars frame, or ``value`` is not numeric.

    Notes
    -----
    Streaming memory does not grow with the number of rows: it holds one
    accumulator per group x segment cell, one small accumulator per
    (group, image) pair (so it grows with the number of distinct images),
    and for the median
    at most ~65k histogram bins per pass plus at most 4M candidate values.
    The median costs two or three extra streaming passes over ``table``
    (a lazy ``table`` is re-executed for each). Benchmark: 10^8 rows from
    Parquet in about 0.7 GB peak RSS (``benchmarks/bench_aggregate.py``).

    Duplicates are found without a distinct count over all (group, image,
    segment) keys: in the same pass, a cell with more rows than its group
    has images, or (with a ``run`` column not in ``by``) an image of a
    group seen in more than one run, is an error. Only then do bounded
    follow-up queries name a few duplicated keys. Rows repeated within one
    run are found only when they push a segment's rows above its group's
    images.

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
    lf = as_lazy(table)
    schema = lf.collect_schema()
    keys = group_keys(by, schema)
    clash = [k for k in keys if k in AGGREGATE_COLUMNS or k.startswith("__")]
    if clash:
        raise ValueError(f"grouping key {clash[0]!r} clashes with a result column; rename it before aggregating")
    require_columns(schema, ["image_id", "segment"], "table")
    value_column = value_expr(value, schema, lf)
    if not isinstance(ci, float | int) or not 0.0 < float(ci) < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    check_choice(interval, "interval", IntervalKind)
    check_choice(engine, "engine", AggregateEngine)
    if interval == "bootstrap" and (not isinstance(n_boot, int) or n_boot < 1):
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not isinstance(rank, str):
        raise TypeError(f"rank must be a column name, got {type(rank).__name__}")

    group = keys or [ALL_ROWS]
    names = name_columns(keys, list(schema.names()))
    run_check = RUN_COLUMN in schema and RUN_COLUMN not in keys
    optional = [pl.col(c) for c in ("share", "density") if c in schema]
    if rank in schema:
        optional.append(pl.col(rank).alias("__rank"))
    base = lf.select(
        *(pl.col(k) for k in keys),
        *([pl.lit(0, pl.Int8).alias(ALL_ROWS)] if not keys else []),
        pl.col("image_id"),
        pl.col("segment"),
        value_column,
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
        pl.col(VALUE).count().cast(pl.Int64).alias("__n"),
        pl.col(VALUE).mean().alias("mean"),
        pl.col(VALUE).std(ddof=1).alias("std"),
        mean_or_null("share"),
        mean_or_null("density"),
        ((pl.col("__rank") == 1).cast(pl.Float64).mean() if has_rank else pl.lit(None, pl.Float64)).alias("top1"),
        (pl.col("__rank").cast(pl.Float64).mean() if has_rank else pl.lit(None, pl.Float64)).alias("mean_rank"),
    ]
    if engine == "streaming":
        aggs += [pl.col(VALUE).min().alias("__min"), pl.col(VALUE).max().alias("__max")]
    else:
        aggs.append(pl.col(VALUE).median().alias("median"))
    per_cell = base.group_by(cell).agg(aggs)
    per_group = _per_group(lf, keys, group, names, run_check)
    query = per_cell.join(per_group, on=group, how="left", nulls_equal=True)
    if engine == "streaming":
        out: pl.DataFrame = query.collect(**streaming_options())
    else:
        out = query.collect(engine="in-memory")
    _check_names(out, keys, names)
    if (out["present"] > out["images"]).any() or (run_check and (out["__dup_images"] > 0).any()):
        raise _duplicates_error(lf, out, keys, run_check)
    if engine == "streaming":
        out = _with_streaming_median(base, out, cell)
    out = out.with_columns(pl.col(n).cast(pl.Categorical) for n in names)

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
    carried = [c for k in keys for c in (k, NAME_COLUMNS.get(k)) if c is not None and (c == k or c in names)]
    return out.select(*carried, *AGGREGATE_COLUMNS)


def _group_columns(keys: list[str]) -> list[pl.Expr]:
    return [pl.col(k) for k in keys] or [pl.lit(0, pl.Int8).alias(ALL_ROWS)]


def _per_group(lf: pl.LazyFrame, keys: list[str], group: list[str], names: list[str], run_check: bool) -> pl.LazyFrame:
    """Distinct images per group, the class names carried beside their index, images found in several runs.

    Two streamed group-bys, per (group, image) then per group: memory grows
    with the distinct (group, image) pairs, as a distinct count per group
    would, never with the rows.
    """
    per_image = lf.select(
        *_group_columns(keys),
        pl.col("image_id"),
        *(pl.col(n).cast(pl.String) for n in names),
        *([pl.col(RUN_COLUMN).cast(pl.String)] if run_check else []),
    ).group_by([*group, "image_id"])
    image_aggs: list[pl.Expr] = []
    group_aggs: list[pl.Expr] = [pl.len().cast(pl.Int64).alias("images")]
    for n in names:
        image_aggs += [pl.col(n).min().alias(f"__{n}_min"), pl.col(n).max().alias(f"__{n}_max")]
        group_aggs += [pl.col(f"__{n}_min").min().alias(f"__{n}_min"), pl.col(f"__{n}_max").max().alias(n)]
    if run_check:
        image_aggs += [pl.col(RUN_COLUMN).min().alias("__run_min"), pl.col(RUN_COLUMN).max().alias("__run_max")]
        group_aggs.append((pl.col("__run_min") != pl.col("__run_max")).sum().cast(pl.Int64).alias("__dup_images"))
    if not image_aggs:
        image_aggs = [pl.len().alias("__rows")]
    return per_image.agg(image_aggs).group_by(group).agg(group_aggs)


def _check_names(out: pl.DataFrame, keys: list[str], names: list[str]) -> None:
    """A class index must have one name in the whole table (two runs with different class orders must not mix)."""
    for n in names:
        key = next(k for k in keys if NAME_COLUMNS.get(k) == n)
        clash = out.filter(pl.col(f"__{n}_min") != pl.col(n))
        if clash.height:
            row = clash.row(0, named=True)
            raise ValueError(
                f"{key}={row[key]!r} is named both {row[f'__{n}_min']!r} and {row[n]!r} in column {n!r}: the table "
                "mixes runs with different class names; aggregate them separately (or add the column that tells "
                "them apart to by)"
            )


def _duplicates_error(lf: pl.LazyFrame, out: pl.DataFrame, keys: list[str], run_check: bool) -> ValueError:
    """Name a few (group, image, segment) keys with more than one row (bounded follow-up queries)."""
    group = keys or [ALL_ROWS]
    rows = lf.select(
        *_group_columns(keys),
        pl.col("image_id"),
        pl.col("segment").cast(pl.String),
        *([pl.col(RUN_COLUMN).cast(pl.String)] if run_check else []),
    )
    images: pl.DataFrame | None = None
    if run_check:
        images = (
            lf.select(*_group_columns(keys), pl.col("image_id"), pl.col(RUN_COLUMN).cast(pl.String))
            .group_by([*group, "image_id"])
            .agg(pl.col(RUN_COLUMN).min().alias("__lo"), pl.col(RUN_COLUMN).max().alias("__hi"))
            .filter(pl.col("__lo") != pl.col("__hi"))
            .select(*group, "image_id")
            .head(_SHOWN_DUPLICATES)
            .collect(**streaming_options())
        )
        rows = rows.join(images.lazy(), on=[*group, "image_id"], how="semi", nulls_equal=True)
    if images is None or not images.height:
        cells = out.filter(pl.col("present") > pl.col("images")).select(*group, pl.col("segment").cast(pl.String))
        rows = rows.join(cells.head(_SHOWN_DUPLICATES).lazy(), on=[*group, "segment"], how="semi", nulls_equal=True)
    found = (
        rows.group_by([*group, "image_id", "segment"])
        .agg(
            pl.len().alias("__rows"),
            *([pl.col(RUN_COLUMN).unique().sort().head(_SHOWN_DUPLICATES).alias("__runs")] if run_check else []),
        )
        .filter(pl.col("__rows") > 1)
        .sort([*group, "image_id", "segment"], nulls_last=True)
        .head(_SHOWN_DUPLICATES)
        .collect(**streaming_options())
    )
    shown = []
    for r in found.iter_rows(named=True):
        key = ", ".join(f"{k}={r[k]!r}" for k in [*keys, "image_id", "segment"])
        runs = f" (runs {', '.join(map(repr, r['__runs']))})" if run_check else ""
        shown.append(f"({key}): {r['__rows']} rows{runs}")
    where = f"group x image x segment ({', '.join([*keys, 'image_id', 'segment'])})"
    if run_check:
        hint = f"the rows come from several runs: add {RUN_COLUMN!r} to by (by=[..., {RUN_COLUMN!r}]) or keep one run"
    else:
        hint = (
            "the table likely joins several runs over the same images: add the column that tells them apart "
            f"(e.g. {RUN_COLUMN!r}, 'model', 'split') to by, or drop the duplicated rows"
        )
    return DuplicateRowsError(
        f"table has more than one row per {where}, so counts and means would double count: "
        f"{'; '.join(shown) or 'see present > images'}; {hint}"
    )


def _t_interval(mean: np.ndarray, sem: np.ndarray, n: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    df = np.where(n >= 2, n - 1, 1.0)
    from scipy import stats as sps  # loaded on first use: import sat_fast stays light

    q = sps.t.ppf(0.5 + ci / 2, df)
    return mean - q * sem, mean + q * sem


def _bootstrap_interval(
    base: pl.LazyFrame, out: pl.DataFrame, cell: list[str], ci: float, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap of the mean per row of ``out`` (in its order), one seeded generator."""
    values = base.group_by(cell).agg(pl.col(VALUE).drop_nulls().alias("__values")).collect()
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
    values = base.select(*cell, VALUE).filter(pl.col(VALUE).is_not_null())

    def settle(frame: pl.DataFrame) -> pl.DataFrame:
        resolved = frame.filter(pl.col("__lo") == pl.col("__hi"))
        done.append(resolved.select(*cell, pl.col("__lo").alias("__x1"), pl.col("__lo").alias("__x2")))
        return frame.filter(pl.col("__lo") != pl.col("__hi"))

    state = settle(state)
    while state.height and state["__c"].sum() > _MEDIAN_COLLECT_ROWS:
        n_bins = max(2, min(_MEDIAN_BINS, _MEDIAN_GROUPS // state.height))
        bins = (
            values.join(
                state.lazy().select(*cell, "__lo", "__hi"), on=cell, how="inner", nulls_equal=True, **SMALL_RIGHT
            )
            .filter(pl.col(VALUE).is_between(pl.col("__lo"), pl.col("__hi")))
            .with_columns(
                ((pl.col(VALUE) - pl.col("__lo")) / (pl.col("__hi") - pl.col("__lo")) * n_bins)
                .floor()
                .clip(0, n_bins - 1)
                .cast(pl.Int32)
                .alias("__bin")
            )
            .group_by(*cell, "__bin")
            .agg(
                pl.len().cast(pl.Int64).alias("__len"),
                pl.col(VALUE).min().alias("__bmin"),
                pl.col(VALUE).max().alias("__bmax"),
            )
            .collect(**streaming_options())
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
                (pl.col(r) == pl.col("__start"))
                | (pl.col(r) == pl.col("__end") - 1)
                | (pl.col("__bmin") == pl.col("__bmax"))
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
            values.join(
                state.lazy().select(*cell, "__lo", "__hi", "__r1", "__r2"),
                on=cell,
                how="inner",
                nulls_equal=True,
                **SMALL_RIGHT,
            )
            .filter(pl.col(VALUE).is_between(pl.col("__lo"), pl.col("__hi")))
            .collect(**streaming_options())
        )
        done.append(
            rows.group_by(cell).agg(
                pl.col(VALUE).sort().get(pl.col("__r1").first()).alias("__x1"),
                pl.col(VALUE).sort().get(pl.col("__r2").first()).alias("__x2"),
            )
        )
    medians = pl.concat(
        [d.select(*cell, pl.col("__x1").cast(pl.Float64), pl.col("__x2").cast(pl.Float64)) for d in done]
    )
    medians = medians.select(*cell, ((pl.col("__x1") + pl.col("__x2")) / 2).alias("median"))
    return out.join(medians, on=cell, how="left", nulls_equal=True)
