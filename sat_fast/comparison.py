"""Two SATs side by side: per group x segment differences with a significance test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from sat_fast._frames import (
    NAME_COLUMNS,
    VALUE,
    aggregate_keys,
    as_lazy,
    group_keys,
    value_expr,
)
from sat_fast._typing import Correction, SortKey, TestKind, check_choice
from sat_fast.aggregation import DuplicateRowsError, aggregate

__all__ = ["compare"]

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
    test: TestKind = "welch",
    correction: Correction | None = "bh",
    alpha: float = 0.05,
    n_perm: int = 9999,
    seed: int = 0,
    sort: SortKey = "effect",
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
    check_choice(test, "test", TestKind)
    check_choice(correction, "correction", Correction, allow_none=True)
    check_choice(sort, "sort", SortKey)
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    la, lb = as_lazy(a, "a"), as_lazy(b, "b")
    sa, sb = la.collect_schema(), lb.collect_schema()
    kind_a, kind_b = _table_kind(sa, "a"), _table_kind(sb, "b")
    if kind_a != kind_b:
        raise ValueError(f"a is a {kind_a} table but b is a {kind_b} table; pass two of the same kind")
    if kind_a == "per-image":
        keys_a = group_keys(by, sa, "a")
        keys_b = group_keys(by, sb, "b")
        agg_a = _aggregate_side(la, keys_a, value, "a")
        agg_b = _aggregate_side(lb, keys_b, value, "b")
    else:
        if test == "permutation":
            raise ValueError("test='permutation' needs per-image tables; aggregated tables have no per-image values")
        agg_a, agg_b = la.collect(), lb.collect()
        keys_a, keys_b = aggregate_keys(agg_a), aggregate_keys(agg_b)
        if keys_a != keys_b:
            raise ValueError(f"a is grouped by {keys_a} but b by {keys_b}; compare tables with the same group keys")
    keys = keys_a
    for k in keys:
        if sa[k] != sb[k]:
            raise ValueError(f"group key {k!r} is {sa[k]} in a but {sb[k]} in b; cast one to match")

    names = [NAME_COLUMNS[k] for k in keys if NAME_COLUMNS.get(k) in (*agg_a.columns, *agg_b.columns)]

    def side(frame: pl.DataFrame, suffix: str) -> pl.DataFrame:
        cols = [
            pl.col(c).alias(f"{c}_{suffix}") if c in frame.columns else pl.lit(None, pl.Float64).alias(f"{c}_{suffix}")
            for c in _SIDE_COLUMNS
        ]
        carried = [
            (pl.col(n) if n in frame.columns else pl.lit(None)).cast(pl.String).alias(f"__{n}_{suffix}") for n in names
        ]
        return frame.select(*keys, pl.col("segment").cast(pl.String), *carried, *cols)

    joined = side(agg_a, "a").join(side(agg_b, "b"), on=[*keys, "segment"], how="full", coalesce=True, nulls_equal=True)
    joined = joined.with_columns(pl.coalesce(f"__{n}_a", f"__{n}_b").cast(pl.Categorical).alias(n) for n in names).drop(
        [f"__{n}_{s}" for n in names for s in "ab"]
    )
    carried = [c for k in keys for c in (k, NAME_COLUMNS.get(k)) if c is not None and (c == k or c in names)]
    joined = joined.select(*carried, pl.exclude(carried))
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


def _aggregate_side(lf: pl.LazyFrame, keys: list[str], value: Any, name: str) -> pl.DataFrame:
    try:
        return aggregate(lf, keys, value=value)
    except DuplicateRowsError as exc:
        raise DuplicateRowsError(f"{name}: {exc}") from None


def _welch(
    ma: np.ndarray, sa: np.ndarray, na: np.ndarray, mb: np.ndarray, sb: np.ndarray, nb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's t, Welch-Satterthwaite df and two-sided p (NaN where undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        va, vb = sa**2 / na, sb**2 / nb
        se2 = va + vb
        ok = (na >= 2) & (nb >= 2) & (se2 > 0) & np.isfinite(ma) & np.isfinite(mb)
        t = np.where(ok, (mb - ma) / np.sqrt(se2), np.nan)
        dof = np.where(ok, se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1)), np.nan)
    p = np.full(t.shape, np.nan)
    from scipy import stats as sps  # loaded on first use: import sat_fast stays light

    p[ok] = 2 * sps.t.sf(np.abs(t[ok]), dof[ok])
    return t, dof, p


def _cohen_d(diff: np.ndarray, sa: np.ndarray, na: np.ndarray, sb: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Diff / pooled sd, pooled over both sides with ddof=1; a single-value side adds no variance."""
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


def _permutation_p(
    la: pl.LazyFrame, lb: pl.LazyFrame, keys: list[str], value: Any, joined: pl.DataFrame, n_perm: int, seed: int
) -> np.ndarray:
    if not isinstance(n_perm, int) or n_perm < 1:
        raise ValueError(f"n_perm must be a positive int, got {n_perm!r}")
    cell = [*keys, "segment"]

    def values(lf: pl.LazyFrame) -> pl.DataFrame:
        expr = value_expr(value, lf.collect_schema(), lf)
        return (
            lf.select(*keys, pl.col("segment").cast(pl.String), expr)
            .group_by(cell)
            .agg(pl.col(VALUE).drop_nulls())
            .collect()
        )

    va = values(la).rename({VALUE: "__va"})
    vb = values(lb).rename({VALUE: "__vb"})
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
