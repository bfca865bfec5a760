"""Named segments per image, from segmenters and annotated datasets.

Every source yields, per image, a :class:`Segments` value: the image's segment
names and its masks at the image's own size, stored in one of three forms:

- ``label_map``: a dense label map (H, W); value ``i`` is ``names[i]`` and
  the value ``len(names)`` marks pixels in no segment;
- ``masks``: overlapping masks packed one bit per pixel (K, ceil(H*W/64));
- ``rle``: COCO run lengths (column-major), one or more instances per name,
  reduced by the compiled kernel straight from the runs, never decoded.

Loaders (:func:`from_label_map`, :func:`from_png`, :func:`from_coco`,
:func:`from_masks`, :func:`segment_with`, :func:`load_segments`) return lists
of them, or iterate lazily (``lazy=True``) over large datasets. A sequence of
:class:`Segments` is passed to ``sat_fast.segment_table(saliency,
segments=...)``; images may differ in size and vocabulary, and nothing dense
over the merged vocabulary is ever built.

Bad input raises ``ValueError`` naming the file and the image or annotation
id; dataset loaders given a :class:`LoadReport` record the problem instead,
leave the bad part out and go on. The file loaders refuse images whose
declared size exceeds ``max_pixels=`` (default :data:`DEFAULT_MAX_PIXELS`,
2**28 pixels; None for no limit) before allocating anything that size.
"""

from sat_fast.segments._bundle import SegmentsBundle as SegmentsBundle
from sat_fast.segments._bundle import load_segments as load_segments
from sat_fast.segments._bundle import open_segments as open_segments
from sat_fast.segments._bundle import save_segments as save_segments
from sat_fast.segments._coco import from_coco as from_coco
from sat_fast.segments._labels import from_label_map as from_label_map
from sat_fast.segments._labels import from_png as from_png
from sat_fast.segments._masks import Segmenter as Segmenter
from sat_fast.segments._masks import from_masks as from_masks
from sat_fast.segments._masks import segment_with as segment_with
from sat_fast.segments._report import LoadReport as LoadReport
from sat_fast.segments._report import Problem as Problem
from sat_fast.segments._rle import rle_decode as rle_decode
from sat_fast.segments._rle import rle_encode as rle_encode
from sat_fast.segments._types import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS
from sat_fast.segments._types import Segments as Segments
from sat_fast.segments._vocab import merge_vocabularies as merge_vocabularies
from sat_fast.segments._vocab import rename_map as rename_map

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "LoadReport",
    "Problem",
    "Segmenter",
    "Segments",
    "SegmentsBundle",
    "from_coco",
    "from_label_map",
    "from_masks",
    "from_png",
    "load_segments",
    "merge_vocabularies",
    "open_segments",
    "rename_map",
    "rle_decode",
    "rle_encode",
    "save_segments",
    "segment_with",
    "segments_stats",
]


def __getattr__(name: str) -> object:
    # segments_stats moved to sat_fast.stats (it reduces, it does not load);
    # importing it here eagerly would make segments depend on stats.
    if name == "segments_stats":
        from sat_fast.stats import segments_stats

        return segments_stats
    raise AttributeError(f"module 'sat_fast.segments' has no attribute {name!r}")
