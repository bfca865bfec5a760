"""sat_fast: Segment Attribution Tables for image classifiers.

A saliency map says how much each pixel moved a model's output; a Segment
Attribution Table (SAT) sums it over named semantic segments ("eye",
"background", "watermark") so that reliance on concepts, and on shortcuts,
can be read and aggregated across a whole dataset.

The public API:

- :func:`segment_stats`, :func:`segment_table`, :func:`pack_masks`,
  :class:`SegmentStats`, :class:`PackedMasks`: per-image statistics and tables.
- :func:`aggregate`, :func:`compare`, :func:`flag_shortcuts`: per-group summaries.
- :func:`segment_deletion`, :func:`deletion_agreement`: the intervention check.
- ``plot_*``, :func:`save_figure`, :func:`report`, :func:`summary`: figures and reports.
"""

from sat_fast.tables import (
    PackedMasks,
    SegmentStats,
    pack_masks,
    segment_stats,
    segment_table,
    stats_table,
    table_schema,
)

# --- segments (issue 4): sat_fast/segments.py, sat_fast/transforms.py ---
from sat_fast import segments, transforms
from sat_fast.segments import LoadReport, Segments

# --- aggregate / deletion / plots / report (issue 5) ---
from sat_fast.aggregate import AGGREGATE_COLUMNS, aggregate, compare, flag_shortcuts
from sat_fast.deletion import deletion_agreement, segment_deletion
from sat_fast.plots import (
    plot_class_bars,
    plot_comparison,
    plot_heatmap,
    plot_image,
    plot_presence_scatter,
    save_figure,
)
from sat_fast.report import report, summary
# --- end issue 5 ---

__version__ = "0.1.0"

__all__ = [
    "LoadReport",
    "Segments",
    "segments",
    "transforms",
    # issue 5
    "AGGREGATE_COLUMNS",
    "aggregate",
    "compare",
    "deletion_agreement",
    "flag_shortcuts",
    "plot_class_bars",
    "plot_comparison",
    "plot_heatmap",
    "plot_image",
    "plot_presence_scatter",
    "report",
    "save_figure",
    "segment_deletion",
    "summary",
    # core
    "PackedMasks",
    "SegmentStats",
    "__version__",
    "pack_masks",
    "segment_stats",
    "segment_table",
    "stats_table",
    "table_schema",
]
