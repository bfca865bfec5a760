"""sat_fast: Segment Attribution Tables for image classifiers.

A saliency map says how much each pixel moved a model's output; a Segment
Attribution Table (SAT) sums it over named semantic segments ("eye",
"background", "watermark") so that reliance on concepts, and on shortcuts,
can be read and aggregated across a whole dataset.

``import sat_fast`` is instant: every public name below is imported on first
use, so JAX, matplotlib and scipy load only with the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sat_fast._version import __version__ as __version__

if TYPE_CHECKING:  # what the lazy table below resolves to, for type checkers and IDEs
    from sat_fast import segments as segments
    from sat_fast import transforms as transforms
    from sat_fast._errors import KernelInputError as KernelInputError
    from sat_fast.aggregation import AGGREGATE_COLUMNS as AGGREGATE_COLUMNS
    from sat_fast.aggregation import DuplicateRowsError as DuplicateRowsError
    from sat_fast.aggregation import aggregate as aggregate
    from sat_fast.attribution import saliency as saliency
    from sat_fast.comparison import compare as compare
    from sat_fast.deletion import deletion_agreement as deletion_agreement
    from sat_fast.deletion import segment_deletion as segment_deletion
    from sat_fast.flags import flag_shortcuts as flag_shortcuts
    from sat_fast.packed import PackedMasks as PackedMasks
    from sat_fast.packed import pack_masks as pack_masks
    from sat_fast.pipeline import run as run
    from sat_fast.plots import plot_class_bars as plot_class_bars
    from sat_fast.plots import plot_comparison as plot_comparison
    from sat_fast.plots import plot_heatmap as plot_heatmap
    from sat_fast.plots import plot_image as plot_image
    from sat_fast.plots import plot_presence_scatter as plot_presence_scatter
    from sat_fast.plots import save_figure as save_figure
    from sat_fast.reports import report as report
    from sat_fast.reports import summary as summary
    from sat_fast.segments import LoadReport as LoadReport
    from sat_fast.segments import Segments as Segments
    from sat_fast.stats import SegmentStats as SegmentStats
    from sat_fast.stats import segment_stats as segment_stats
    from sat_fast.table import segment_table as segment_table
    from sat_fast.table import stats_table as stats_table
    from sat_fast.table import table_schema as table_schema

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "AGGREGATE_COLUMNS": "sat_fast.aggregation",
    "DuplicateRowsError": "sat_fast.aggregation",
    "KernelInputError": "sat_fast._errors",
    "LoadReport": "sat_fast.segments",
    "PackedMasks": "sat_fast.packed",
    "SegmentStats": "sat_fast.stats",
    "Segments": "sat_fast.segments",
    "aggregate": "sat_fast.aggregation",
    "compare": "sat_fast.comparison",
    "deletion_agreement": "sat_fast.deletion",
    "flag_shortcuts": "sat_fast.flags",
    "pack_masks": "sat_fast.packed",
    "plot_class_bars": "sat_fast.plots",
    "plot_comparison": "sat_fast.plots",
    "plot_heatmap": "sat_fast.plots",
    "plot_image": "sat_fast.plots",
    "plot_presence_scatter": "sat_fast.plots",
    "report": "sat_fast.reports",
    "run": "sat_fast.pipeline",
    "saliency": "sat_fast.attribution",
    "save_figure": "sat_fast.plots",
    "segment_deletion": "sat_fast.deletion",
    "segment_stats": "sat_fast.stats",
    "segment_table": "sat_fast.table",
    "stats_table": "sat_fast.table",
    "summary": "sat_fast.reports",
    "table_schema": "sat_fast.table",
}
_SUBMODULES = ("segments", "transforms")

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"sat_fast.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sat_fast' has no attribute {name!r}")
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        if "_core" not in str(exc):
            raise
        where = __path__[0]
        raise ImportError(
            f"sat_fast's compiled core (_core) is missing in {where}: install the package "
            "(pip install . or pip install -e .) and run Python outside the source folder"
        ) from exc
    value = getattr(loaded, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
