"""Figures of aggregated SATs: bars with intervals, heatmaps, scatters, one image, comparisons.

Every function returns a :class:`matplotlib.figure.Figure` built without
``pyplot`` (no global state, no GUI backend: it renders with Agg), of
``figsize`` inches at ``dpi``; :func:`save_figure` writes it as PNG and/or SVG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

try:
    import matplotlib as mpl
    from matplotlib.figure import Figure
except ImportError as exc:  # an optional dependency: say which extra brings it
    raise ImportError("sat_fast's figures need matplotlib: pip install 'sat_fast[plots]'") from exc

from sat_fast import _validate as v
from sat_fast._deprecation import renamed_keywords
from sat_fast._frames import aggregate_keys, group_labels, require_columns

__all__ = [
    "plot_class_bars",
    "plot_comparison",
    "plot_heatmap",
    "plot_image",
    "plot_presence_scatter",
    "save_figure",
]

_FORMATS = ("png", "svg")


def _figure(figsize: tuple[float, float], dpi: float) -> Figure:
    return Figure(figsize=figsize, dpi=dpi, layout="constrained")


def _floats(series: pl.Series) -> np.ndarray:
    return series.cast(pl.Float64).fill_null(np.nan).to_numpy()


def plot_class_bars(
    agg: pl.DataFrame,
    *,
    top: int = 12,
    max_groups: int | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
) -> Figure:
    """Per group (class), horizontal bars of each segment's mean with its interval and presence.

    One panel per group, three to a row, in the table's order: every group by
    default, or the first ``max_groups`` (the figure's title then says how
    many were left out). Each panel shows the ``top`` segments by mean, error
    bars from ``ci_low``/``ci_high`` (absent for single-image segments), and
    each segment's presence drawn as a grey bar on a 0-1 twin axis and
    written at the panel's right edge, clear of the intervals. ``figsize``
    defaults to 10 inches wide and 2.4 inches per row of panels.

    Examples
    --------
    >>> import polars as pl, sat_fast
    >>> agg = pl.DataFrame({"target": [0, 0], "segment": ["eye", "fur"], "presence": [1.0, 0.5],
    ...     "mean": [0.8, 0.2], "ci_low": [0.6, None], "ci_high": [1.0, None]})
    >>> fig = sat_fast.plot_class_bars(agg, figsize=(4, 3), dpi=50)
    >>> tuple(int(s) for s in fig.get_size_inches() * fig.dpi)
    (200, 150)
    """
    keys = aggregate_keys(agg)
    require_columns(agg, ["mean", "ci_low", "ci_high", "presence"], "plot_class_bars")
    labelled = agg.with_columns(pl.Series("__group", group_labels(agg, keys), dtype=pl.String))
    if max_groups is not None and (not isinstance(max_groups, int) or max_groups < 1):
        raise ValueError(f"max_groups must be a positive int or None, got {max_groups!r}")
    every = labelled["__group"].unique(maintain_order=True).to_list()
    groups = every[:max_groups]
    ncols = max(1, min(3, len(groups)))
    nrows = max(1, -(-len(groups) // ncols))
    fig = _figure(figsize or (10.0, 2.4 * nrows + 0.6), dpi)
    if len(groups) < len(every):
        fig.suptitle(f"the first {len(groups)} of {len(every)} groups (max_groups=None shows all)", fontsize=9)
    if not groups:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no rows", ha="center", va="center")
        return fig
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax, group in zip(axes.flat, groups, strict=False):
        rows = labelled.filter(pl.col("__group") == group).sort("mean", descending=True, nulls_last=True).head(top)
        rows = rows.reverse()  # barh draws bottom-up; largest on top
        y = np.arange(rows.height)
        mean = _floats(rows["mean"])
        low, high = _floats(rows["ci_low"]), _floats(rows["ci_high"])
        err = np.vstack([np.where(np.isfinite(low), mean - low, 0.0), np.where(np.isfinite(high), high - mean, 0.0)])
        presence = _floats(rows["presence"])
        twin = ax.twiny()
        twin.barh(y, presence, color="0.85", height=0.8, zorder=0)
        twin.set_xlim(0, 1)
        twin.set_xlabel("presence", fontsize=8, color="0.4")
        twin.tick_params(labelsize=7, colors="0.4")
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
        colors = np.where(mean >= 0, "tab:red", "tab:blue")
        ax.barh(y, mean, xerr=err, color=colors, height=0.5, capsize=2, ecolor="black")
        ax.set_yticks(y, [str(s) for s in rows["segment"].cast(pl.String).to_list()], fontsize=8)
        for yi, pr in zip(y, presence, strict=True):
            ax.annotate(  # at the right edge: a label beside the bar would sit on its interval
                f"{pr:.0%}",
                (1.0, yi),
                xycoords=("axes fraction", "data"),
                xytext=(2, 0),
                textcoords="offset points",
                fontsize=6,
                va="center",
                ha="left",
            )
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("mean saliency (CI)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    return fig


def plot_heatmap(
    agg: pl.DataFrame,
    *,
    value: str = "mean",
    annotate: bool | None = None,
    figsize: tuple[float, float] = (10.0, 6.0),
    dpi: float = 100,
) -> Figure:
    """Group (class) x segment heatmap of ``value`` (default ``mean``); blank where absent.

    Signed values use a diverging map centred on 0. ``annotate`` writes the
    numbers in the cells (default: when there are at most 300 cells).

    Examples
    --------
    >>> import polars as pl, sat_fast
    >>> agg = pl.DataFrame({"target": [0, 1], "segment": ["eye", "eye"], "mean": [0.8, -0.2]})
    >>> sat_fast.plot_heatmap(agg, figsize=(3, 2), dpi=50).axes[0].get_title()
    'mean'
    """
    keys = aggregate_keys(agg)
    require_columns(agg, [value], "plot_heatmap")
    groups = group_labels(agg, keys)
    row_names = list(dict.fromkeys(groups))
    col_names = sorted(set(agg["segment"].cast(pl.String).to_list()))
    grid = np.full((len(row_names), len(col_names)), np.nan)
    r_index = {g: i for i, g in enumerate(row_names)}
    c_index = {s: j for j, s in enumerate(col_names)}
    for g, s, val in zip(groups, agg["segment"].cast(pl.String).to_list(), _floats(agg[value]), strict=True):
        grid[r_index[g], c_index[s]] = val
    fig = _figure(figsize, dpi)
    ax = fig.add_subplot()
    finite = grid[np.isfinite(grid)]
    if finite.size and finite.min() < 0 < finite.max():
        bound = float(np.abs(finite).max())
        image = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    else:
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(np.arange(len(col_names)), col_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(row_names)), row_names, fontsize=8)
    if annotate or (annotate is None and grid.size <= 300):
        for (i, j), val in np.ndenumerate(grid):
            if np.isfinite(val):
                ax.text(j, i, f"{val:.2g}", ha="center", va="center", fontsize=6)
    ax.set_title(value)
    return fig


def plot_presence_scatter(
    agg: pl.DataFrame,
    *,
    value: str = "mean",
    label_top: int = 10,
    figsize: tuple[float, float] = (8.0, 6.0),
    dpi: float = 100,
) -> Figure:
    """Presence (x) against ``value`` (y) per group x segment, coloured by group.

    The ``label_top`` points with the largest ``|value|`` are labelled with
    their segment name: frequent and strongly attributed segments sit top right.

    Examples
    --------
    >>> import polars as pl, sat_fast
    >>> agg = pl.DataFrame({"target": [0, 1], "segment": ["eye", "sky"], "presence": [1.0, 0.3], "mean": [0.8, 0.1]})
    >>> sat_fast.plot_presence_scatter(agg, figsize=(3, 2), dpi=50).axes[0].get_xlabel()
    'presence'
    """
    keys = aggregate_keys(agg)
    require_columns(agg, ["presence", value], "plot_presence_scatter")
    groups = group_labels(agg, keys)
    names = list(dict.fromkeys(groups))
    x, y = _floats(agg["presence"]), _floats(agg[value])
    fig = _figure(figsize, dpi)
    ax = fig.add_subplot()
    cmap = mpl.colormaps["tab10"]
    for i, name in enumerate(names):
        pick = np.array([g == name for g in groups])
        ax.scatter(x[pick], y[pick], s=25, color=cmap(i % 10), label=name, alpha=0.8)
    segments = agg["segment"].cast(pl.String).to_list()
    order = np.argsort(-np.nan_to_num(np.abs(y), nan=-1.0))[:label_top]
    for i in order:
        if np.isfinite(x[i]) and np.isfinite(y[i]):
            ax.annotate(segments[i], (x[i], y[i]), xytext=(3, 3), textcoords="offset points", fontsize=7)
    ax.axhline(0, color="0.6", linewidth=0.6)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("presence")
    ax.set_ylabel(value)
    if 1 < len(names) <= 20:
        ax.legend(fontsize=7, loc="best")
    return fig


def _outline(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    return edge


def plot_image(
    image: Any,
    saliency: Any,
    segments: Any,
    *,
    names: Sequence[str] | None = None,
    table: pl.DataFrame | None = None,
    alpha: float = 0.55,
    figsize: tuple[float, float] = (10.0, 4.5),
    dpi: float = 100,
) -> Figure:
    """One image with its saliency overlaid, segment outlines, and its SAT beside it.

    Parameters
    ----------
    image
        (H, W, 3), (H, W, 1) or (H, W) image; floats in [0, 1] or uint8.
    saliency
        (H, W) saliency map.
    segments
        (H, W) integer label map (label k is ``names[k]``), (K, H, W)
        boolean masks, or one :class:`sat_fast.Segments` (then no ``names``).
    names
        Segment names for label maps and masks.
    table
        This image's SAT rows (``segment``, ``mean``); computed with
        :func:`sat_fast.segment_table` when omitted.

    Examples
    --------
    >>> import numpy as np, sat_fast
    >>> lab = np.zeros((8, 8), np.uint8); lab[4:] = 1
    >>> fig = sat_fast.plot_image(np.ones((8, 8, 3)), np.eye(8), lab, names=["a", "b"], figsize=(4, 2), dpi=50)
    >>> len(fig.axes) >= 2
    True
    """
    from sat_fast.segments import Segments

    if isinstance(segments, Segments):
        if names is not None:
            raise ValueError("names is given by the Segments; do not pass names= with them")
        names, segments = list(segments.names), segments.masks()
    if names is None:
        raise ValueError("names= is required with label maps and masks")
    img = v.as_numpy(image, "image")
    sal = v.as_numpy(saliency, "saliency").astype(np.float64)
    seg = v.as_numpy(segments, "segments")
    if sal.ndim != 2:
        raise ValueError(f"saliency must have shape (H, W), got {v.shape_str(sal.shape)}")
    h, w = sal.shape
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.shape[:2] != (h, w) or img.ndim not in (2, 3):
        raise ValueError(f"image shape {v.shape_str(img.shape)} does not match saliency shape {v.shape_str(sal.shape)}")
    names_list = v.segment_names(names, None)
    if seg.ndim == 2 and seg.dtype.kind in "iu":
        if seg.shape != (h, w):
            raise ValueError(
                f"label map shape {v.shape_str(seg.shape)} does not match saliency shape {v.shape_str(sal.shape)}"
            )
        edges = _outline(seg)
        kwargs: dict[str, Any] = {"label_map": seg[None].astype(np.int32)}
    elif seg.ndim == 3 and seg.dtype == np.bool_:
        if seg.shape[1:] != (h, w):
            raise ValueError(
                f"masks shape {v.shape_str(seg.shape)} does not match saliency shape {v.shape_str(sal.shape)}"
            )
        edges = np.zeros((h, w), bool)
        for m in seg:
            edges |= _outline(m.astype(np.int8))
        kwargs = {"masks": seg[None]}
    else:
        raise TypeError(
            "segments must be an (H, W) integer label map or (K, H, W) boolean masks, "
            f"got {seg.dtype} {v.shape_str(seg.shape)}"
        )
    if table is None:
        from sat_fast.table import segment_table

        table = segment_table(sal[None], names=names_list, **kwargs)
    require_columns(table, ["segment", "mean"], "plot_image's table")
    fig = _figure(figsize, dpi)
    left, right = fig.subplots(1, 2, width_ratios=[1.2, 1])
    shown = img.astype(np.float64) / (255.0 if img.dtype == np.uint8 else 1.0)
    left.imshow(np.clip(shown, 0, 1), cmap="gray" if shown.ndim == 2 else None)
    bound = float(np.abs(sal).max()) or 1.0
    overlay = left.imshow(sal, cmap="RdBu_r", vmin=-bound, vmax=bound, alpha=alpha)
    outline = np.zeros((h, w, 4))
    outline[edges] = (0.0, 0.0, 0.0, 1.0)
    left.imshow(outline)
    left.set_axis_off()
    fig.colorbar(overlay, ax=left, shrink=0.7, label="saliency")
    rows = table.sort("mean", descending=True, nulls_last=True).reverse()
    mean = _floats(rows["mean"])
    y = np.arange(rows.height)
    right.barh(y, mean, color=np.where(mean >= 0, "tab:red", "tab:blue"))
    right.set_yticks(y, rows["segment"].cast(pl.String).to_list(), fontsize=8)
    right.axvline(0, color="black", linewidth=0.6)
    right.set_xlabel("mean saliency (SAT)")
    right.set_title("segment attribution table", fontsize=9)
    return fig


def plot_comparison(
    comparison: pl.DataFrame,
    *,
    top: int = 20,
    sides: tuple[str, str] = ("a", "b"),
    figsize: tuple[float, float] = (9.0, 6.0),
    dpi: float = 100,
    **deprecated: Any,
) -> Figure:
    """The ``top`` rows of :func:`sat_fast.compare` as a dumbbell chart: mean_a to mean_b.

    Rows keep the comparison's order (largest change on top); a star marks
    ``significant`` rows; ``sides`` name the two sides in the legend
    (``labels=`` is its deprecated name).

    Examples
    --------
    >>> import polars as pl, sat_fast
    >>> cmp = pl.DataFrame({"target": [0], "segment": ["eye"], "mean_a": [0.2], "mean_b": [0.6], "significant": [True]})
    >>> sat_fast.plot_comparison(cmp, sides=("in", "ood"), figsize=(3, 2), dpi=50).axes[0].get_xlabel()
    'mean'
    """
    if deprecated:
        sides = renamed_keywords("plot_comparison", deprecated, {"labels": "sides"}, {"sides": None}).get(
            "sides", sides
        )
    keys = aggregate_keys(comparison)
    require_columns(comparison, ["mean_a", "mean_b"], "plot_comparison")
    rows = comparison.head(top).reverse()
    groups = group_labels(rows, keys)
    segs = rows["segment"].cast(pl.String).to_list()
    sig = rows["significant"].fill_null(False).to_list() if "significant" in rows.columns else [False] * rows.height
    ticks = [f"{s} ({g}){' *' if flag else ''}" for s, g, flag in zip(segs, groups, sig, strict=True)]
    a, b = _floats(rows["mean_a"]), _floats(rows["mean_b"])
    y = np.arange(rows.height)
    fig = _figure(figsize, dpi)
    ax = fig.add_subplot()
    ax.hlines(y, np.fmin(a, b), np.fmax(a, b), color="0.6", linewidth=2)
    ax.scatter(a, y, color="tab:blue", label=sides[0], zorder=3)
    ax.scatter(b, y, color="tab:orange", label=sides[1], zorder=3)
    ax.set_yticks(y, ticks, fontsize=8)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("mean")
    ax.set_title(f"{sides[0]} vs {sides[1]} (* significant after correction)", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def save_figure(fig: Figure, path: str | Path, *, formats: Sequence[str] | None = None) -> list[Path]:
    """Write ``fig`` as PNG and/or SVG.

    With ``formats`` (e.g. ``("png", "svg")``) each format is written next to
    ``path`` with that suffix; otherwise the format is ``path``'s suffix.
    Returns the written paths.

    Examples
    --------
    >>> import tempfile, pathlib, polars as pl, sat_fast
    >>> agg = pl.DataFrame({"target": [0], "segment": ["eye"], "mean": [0.8]})
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "heat"
    >>> [p.suffix for p in sat_fast.save_figure(sat_fast.plot_heatmap(agg), out, formats=["png", "svg"])]
    ['.png', '.svg']
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    if formats is None:
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in _FORMATS:
            raise ValueError(f"cannot tell the format from {str(path)!r}; use a .png or .svg suffix or pass formats=")
        targets = [(path, fmt)]
    else:
        targets = []
        for fmt in formats:
            if fmt not in _FORMATS:
                raise ValueError(f"formats must be among {list(_FORMATS)}, got {fmt!r}")
            targets.append((path.with_suffix(f".{fmt}"), fmt))
    for target, fmt in targets:
        fig.savefig(target, format=fmt, dpi=fig.dpi)
    return [t for t, _ in targets]
