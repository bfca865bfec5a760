"""sat_fast: Segment Attribution Tables for image classifiers.

A saliency map says how much each pixel moved a model's output; a Segment
Attribution Table (SAT) sums it over named semantic segments ("eye",
"background", "watermark") so that reliance on concepts, and on shortcuts,
can be read and aggregated across a whole dataset.

The public API:

- :func:`saliency`: batched gradient-based saliency maps for any JAX classifier.
- :func:`segment_stats`, :func:`segment_table`, :func:`pack_masks`,
  :class:`SegmentStats`, :class:`PackedMasks`: per-image statistics and tables.
- :class:`Segments` and the loaders in :mod:`sat_fast.segments`; geometry in
  :mod:`sat_fast.transforms`.
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

from sat_fast import segments, transforms
from sat_fast.segments import LoadReport, Segments

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

# Rebinds the submodule's name to the function it exports.
from sat_fast.attribution import saliency

__version__ = "0.1.0"

__all__ = [
    "AGGREGATE_COLUMNS",
    "LoadReport",
    "PackedMasks",
    "SegmentStats",
    "Segments",
    "__version__",
    "aggregate",
    "compare",
    "deletion_agreement",
    "flag_shortcuts",
    "pack_masks",
    "plot_class_bars",
    "plot_comparison",
    "plot_heatmap",
    "plot_image",
    "plot_presence_scatter",
    "report",
    "saliency",
    "save_figure",
    "segment_deletion",
    "segment_stats",
    "segment_table",
    "segments",
    "stats_table",
    "summary",
    "table_schema",
    "transforms",
]
