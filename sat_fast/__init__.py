"""sat_fast: Segment Attribution Tables for image classifiers.

A saliency map says how much each pixel moved a model's output; a Segment
Attribution Table (SAT) sums it over named semantic segments ("eye",
"background", "watermark") so that reliance on concepts, and on shortcuts,
can be read and aggregated across a whole dataset.

The public API:

- :func:`segment_stats`, :func:`segment_table`, :func:`pack_masks`,
  :class:`SegmentStats`, :class:`PackedMasks`: per-image statistics and tables.
- :func:`saliency`: batched gradient-based saliency maps for any JAX classifier.
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

# --- saliency (issue 3): gradient-based saliency maps for JAX models ---
from sat_fast.saliency import saliency  # noqa: E402  (rebinds the submodule name to the function)

# --- end saliency ---

__version__ = "0.1.0"

__all__ = [
    "PackedMasks",
    "SegmentStats",
    "__version__",
    "pack_masks",
    "segment_stats",
    "segment_table",
    "stats_table",
    "table_schema",
    # saliency (issue 3)
    "saliency",
]
