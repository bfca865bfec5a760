"""A self-contained HTML report and a terminal summary of aggregated SATs.

:func:`report` writes one HTML file with inline CSS, the tables and the
figures embedded as base64 PNG: it opens offline and runs no scripts.
:func:`summary` renders the same findings as Markdown or plain text for
terminals and CI logs.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from sat_fast._deprecation import renamed_keywords, warn_deprecated
from sat_fast._frames import aggregate_keys, group_labels, require_columns
from sat_fast._typing import SummaryFormat, check_choice

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["report", "summary"]

_SUMMARY_COLUMNS = ("segment", "presence", "mean", "ci_low", "ci_high", "share", "top1")
_COMPARE_COLUMNS = ("segment", "mean_a", "mean_b", "diff", "effect", "p_adj", "significant")

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td.s { text-align: left; }
figure { margin: 1em 0; } figcaption { font-size: .85em; color: #555; }
img { max-width: 100%; height: auto; } .note { color: #666; font-size: .85em; }
"""


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.4g}"
    return str(value)


def _rows(frame: pl.DataFrame) -> list[list[str]]:
    return [[_format(x) for x in row] for row in frame.rows()]


def _html_table(frame: pl.DataFrame, max_rows: int) -> str:
    shown = frame.head(max_rows)
    numeric = [dtype.is_numeric() for dtype in shown.dtypes]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
    body = []
    for row in _rows(shown):
        cells = "".join(
            f"<td>{html.escape(x)}</td>" if num else f'<td class="s">{html.escape(x)}</td>'
            for x, num in zip(row, numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    note = ""
    if frame.height > max_rows:
        note = f'<p class="note">showing {max_rows} of {frame.height} rows</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"


def _text_table(frame: pl.DataFrame, fmt: str) -> str:
    header = list(frame.columns)
    rows = _rows(frame)
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(x.replace("|", "\\|") for x in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _per_group(agg: pl.DataFrame, top: int) -> list[tuple[str, pl.DataFrame]]:
    labels = group_labels(agg, aggregate_keys(agg))
    frame = agg.with_columns(pl.Series("__group", labels, dtype=pl.String))
    out = []
    for group in dict.fromkeys(labels):
        rows = frame.filter(pl.col("__group") == group).sort("mean", descending=True, nulls_last=True).head(top)
        out.append((group, rows.select(c for c in _SUMMARY_COLUMNS if c in rows.columns)))
    return out


def _check_agg(agg: object) -> pl.DataFrame:
    if not isinstance(agg, pl.DataFrame):
        raise TypeError(f"agg must be a polars DataFrame from aggregate(), got {type(agg).__name__}")
    require_columns(agg, ["segment", "mean"], "the report")
    return agg


def summary(
    agg: pl.DataFrame,
    *,
    flags: pl.DataFrame | None = None,
    comparison: pl.DataFrame | None = None,
    agreement: pl.DataFrame | None = None,
    top: int = 5,
    max_groups: int | None = 20,
    format: SummaryFormat = "markdown",
) -> str:
    """The findings as Markdown or plain text: top segments per group, flags, largest changes.

    Parameters
    ----------
    agg
        Result of :func:`sat_fast.aggregate`.
    flags, comparison, agreement
        Optional results of :func:`sat_fast.flag_shortcuts`,
        :func:`sat_fast.compare` and :func:`sat_fast.deletion_agreement`.
    top
        Segments per group and comparison rows shown.
    max_groups
        Groups shown (and flags listed); the rest are counted in one line, so that a summary of hundreds of
        classes stays readable in a log. None shows all.
    format
        ``"markdown"`` (tables with pipes) or ``"text"`` (aligned columns).

    Examples
    --------
    >>> import polars as pl, sat_fast
    >>> agg = pl.DataFrame({"target": [0, 0], "segment": ["eye", "fur"], "presence": [1.0, 0.5], "mean": [0.8, 0.2]})
    >>> print(sat_fast.summary(agg, format="text"))
    # Segment attribution summary
    <BLANKLINE>
    ## target=0 (top 2 segments by mean)
    segment  presence  mean
    -------  --------  ----
    eye      1         0.8
    fur      0.5       0.2
    """
    agg = _check_agg(agg)
    check_choice(format, "format", SummaryFormat)
    if max_groups is not None and (not isinstance(max_groups, int) or max_groups < 1):
        raise ValueError(f"max_groups must be a positive int or None, got {max_groups!r}")
    parts = ["# Segment attribution summary"]
    groups = _per_group(agg, top)
    for group, rows in groups[:max_groups]:
        parts.append(f"## {group} (top {rows.height} segments by mean)\n{_text_table(rows, format)}")
    if max_groups is not None and len(groups) > max_groups:
        parts.append(f"... and {len(groups) - max_groups} more groups (all of them are in the report and the table)")
    if flags is not None:
        if flags.height:
            shown = flags if max_groups is None else flags.head(max_groups)
            more = f"\n... and {flags.height - shown.height} more flags" if shown.height < flags.height else ""
            parts.append(f"## Shortcut flags ({flags.height})\n{_text_table(shown, format)}{more}")
        else:
            parts.append("## Shortcut flags\nnone")
    if comparison is not None:
        keys = comparison.columns[: comparison.columns.index("segment")] if "segment" in comparison.columns else []
        cols = [*keys, *(c for c in _COMPARE_COLUMNS if c in comparison.columns)]
        n_sig = int(comparison["significant"].sum()) if "significant" in comparison.columns else 0
        parts.append(
            f"## Largest changes ({n_sig} of {comparison.height} significant)\n"
            f"{_text_table(comparison.select(cols).head(top), format)}"
        )
    if agreement is not None:
        parts.append(f"## SAT vs deletion agreement\n{_text_table(agreement, format)}")
    return "\n\n".join(parts)


_FLAGS_NOTE = (
    '<p class="note">A flag marks a segment that draws more attribution in a class than a concept of that class '
    "should: with core segments given (<code>flag_shortcuts(agg, core={class: [names]})</code>, or "
    "<code>--core</code>), any other segment whose <code>share</code> of the image's absolute attribution or whose "
    "<code>density</code> (share per unit area) passes its threshold; without them, a segment whose share in a class "
    "exceeds its mean share in the other classes (<code>excess</code>). A flag is a question to check (look at the "
    "images, delete the segment), not a verdict; without core segments a background can be flagged simply because "
    "one class has more of it. Strongest evidence first: <code>evidence</code> is the share (or excess) weighed by "
    "<code>presence</code>, so a segment in few of a class's images ranks below a frequent one.</p>"
)
_EMPTY_CELLS_NOTE = (
    '<p class="note">Empty <code>std</code>, <code>sem</code>, <code>ci_low</code> and <code>ci_high</code> cells: '
    "the segment is present in fewer than two images of the group, so no spread or interval can be estimated.</p>"
)


def _summary_html(agg: pl.DataFrame, top: int = 5, max_groups: int = 20) -> str:
    """The summary's top segments per group as HTML tables (the Markdown summary is for terminals and logs)."""
    groups = _per_group(agg, top)
    parts = [
        f"<h3>{html.escape(group)}: top {rows.height} segments by mean</h3>{_html_table(rows, top)}"
        for group, rows in groups[:max_groups]
    ]
    if len(groups) > max_groups:
        parts.append(f'<p class="note">... and {len(groups) - max_groups} more groups: see the aggregated table.</p>')
    return "".join(parts) or "<p>no rows</p>"


def _png_base64(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def report(
    agg: pl.DataFrame,
    path: str | os.PathLike[str],
    *,
    flags: pl.DataFrame | None = None,
    comparison: pl.DataFrame | None = None,
    agreement: pl.DataFrame | None = None,
    figures: Mapping[str, Figure] | None = None,
    default_figures: bool = True,
    sides: tuple[str, str] = ("a", "b"),
    title: str = "Segment attribution report",
    max_rows: int = 500,
    **deprecated: Any,
) -> Path:
    """Write a self-contained HTML report (works offline, no scripts).

    Parameters
    ----------
    agg
        Result of :func:`sat_fast.aggregate`.
    path
        Output ``.html`` file; its folder must exist.
    flags, comparison, agreement
        Optional results of :func:`sat_fast.flag_shortcuts`,
        :func:`sat_fast.compare`, :func:`sat_fast.deletion_agreement`.
    figures
        Extra figures by caption (e.g. :func:`sat_fast.plot_image` of a few
        images), embedded after the default ones.
    default_figures
        Include the per-class bars, heatmap, presence scatter and (with a
        comparison) the comparison chart.
    sides
        Names of the compared sides in the comparison chart.
    title
        Page title.
    max_rows
        Rows shown per table (the summary text says how many there are).
    **deprecated
        ``comparison_labels=`` (now ``sides=``) still works for one release;
        so does version 1's path-first order ``report(path, agg)``, both with
        a ``DeprecationWarning``.

    Returns
    -------
    pathlib.Path
        The written file. Figures are PNG data URIs; the page opens with
        the top segments of each group as tables, explains how to read the
        flags, and says why some interval cells are empty.

    Examples
    --------
    >>> import tempfile, pathlib, polars as pl, sat_fast
    >>> agg = pl.DataFrame({"target": [0, 0], "segment": ["eye", "fur"], "presence": [1.0, 0.5],
    ...     "mean": [0.8, 0.2], "ci_low": [0.7, None], "ci_high": [0.9, None]})
    >>> out = sat_fast.report(agg, pathlib.Path(tempfile.mkdtemp()) / "r.html")
    >>> out.read_text().startswith("<!DOCTYPE html>")
    True
    """
    if isinstance(agg, (str, os.PathLike)) and isinstance(path, pl.DataFrame):
        warn_deprecated(
            "report(path, agg) is deprecated since sat_fast 0.2.0; pass the object first: report(agg, path)"
        )
        agg, path = path, agg
    if deprecated:
        sides = renamed_keywords("report", deprecated, {"comparison_labels": "sides"}, {"sides": None}).get(
            "sides", sides
        )
    agg = _check_agg(agg)
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"the folder of {str(path)!r} does not exist")
    if not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive int, got {max_rows!r}")
    chosen: list[tuple[str, Figure]] = []
    if default_figures and agg.height:
        from sat_fast import plots  # matplotlib (the plots extra) loads only when the report has figures

        if all(c in agg.columns for c in ("ci_low", "ci_high", "presence")):
            chosen.append(
                ("Mean saliency per segment with confidence intervals; grey bars: presence", plots.plot_class_bars(agg))
            )
        chosen.append(("Group x segment heatmap of mean saliency", plots.plot_heatmap(agg)))
        if "presence" in agg.columns:
            chosen.append(("Presence against mean saliency", plots.plot_presence_scatter(agg)))
        if comparison is not None and comparison.height:
            chosen.append(
                ("Largest changes between the compared tables", plots.plot_comparison(comparison, sides=sides))
            )
    for caption, fig in (figures or {}).items():
        from matplotlib.figure import Figure as MatplotlibFigure

        if not isinstance(fig, MatplotlibFigure):
            raise TypeError(f"figures[{caption!r}] must be a matplotlib Figure, got {type(fig).__name__}")
        chosen.append((caption, fig))

    sections = [f"<h2>Summary</h2>{_summary_html(agg)}"]
    if flags is not None:
        sections.append(
            f"<h2>Shortcut flags</h2>{_FLAGS_NOTE}{_html_table(flags, max_rows) if flags.height else '<p>none</p>'}"
        )
    if comparison is not None:
        sections.append(f"<h2>Comparison</h2>{_html_table(comparison, max_rows)}")
    if agreement is not None:
        sections.append(f"<h2>SAT vs deletion agreement</h2>{_html_table(agreement, max_rows)}")
    if chosen:
        figs = "".join(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{_png_base64(fig)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            for caption, fig in chosen
        )
        sections.append(f"<h2>Figures</h2>{figs}")
    sections.append(f"<h2>Aggregated table</h2>{_html_table(agg, max_rows)}{_EMPTY_CELLS_NOTE}")
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="note">generated by sat_fast on {stamp}</p>'
        + "".join(sections)
        + "</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path
