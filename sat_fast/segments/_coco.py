"""Segments from COCO annotations: RLE (compressed or not) and polygons, per category."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np

from sat_fast import _core
from sat_fast._deprecation import renamed_keywords
from sat_fast.segments._report import LoadReport, record_problem
from sat_fast.segments._types import (
    DEFAULT_MAX_PIXELS,
    Segments,
    check_pixels,
    max_pixels_value,
    rle_segments,
)

# --------------------------------------------------------------------------
# COCO annotations
# --------------------------------------------------------------------------


def _check_image_size(height: int, width: int, max_pixels: int | None, where: str) -> None:
    """Declared sizes that COCO RLE or ``max_pixels`` cannot take raise, before any mask is built."""
    if height * width >= 1 << 32:
        # pycocotools' uint32 counts would overflow (and 'counts sum to ...' would blame the annotation).
        raise ValueError(
            f"{where} is {height}x{width} = {height * width:,} pixels, too large for COCO RLE (fewer than 2**32 "
            "pixels per image)"
        )
    check_pixels(height, width, max_pixels, where)


def _is_id(x: Any) -> bool:
    """A COCO id: an int or a string (JSON lists, objects, floats, booleans and null are not)."""
    return isinstance(x, (int, str)) and not isinstance(x, bool)


def _category_entry(c: Any, n: int, label: str, seen: Mapping[Any, str]) -> tuple[Any, str]:
    if not isinstance(c, Mapping):
        raise ValueError(f"{label}: 'categories' entry {n} must be an object, got {type(c).__name__}")
    cid, name = c.get("id"), c.get("name")
    if not _is_id(cid):
        raise ValueError(f"{label}: 'categories' entry {n} needs an integer or string 'id', got {cid!r}")
    if not isinstance(name, str):
        raise ValueError(f"{label}: category {cid!r} needs a string 'name', got {name!r}")
    if cid in seen:
        raise ValueError(f"{label}: category id {cid!r} appears twice")
    return cid, name


def _image_entry(im: Any, n: int, label: str) -> tuple[Any, int, int]:
    """(id, height, width) of one 'images' entry, or ValueError naming it."""
    if not isinstance(im, Mapping):
        raise ValueError(f"{label}: 'images' entry {n} must be an object, got {type(im).__name__}")
    iid = im.get("id")
    if not _is_id(iid):
        raise ValueError(f"{label}: 'images' entry {n} needs an integer or string 'id', got {iid!r}")
    sizes = []
    for key in ("height", "width"):
        x = im.get(key)
        if not isinstance(x, int) or isinstance(x, bool) or x < 0:
            raise ValueError(f"{label}: image {iid!r} needs a non-negative integer {key!r}, got {x!r}")
        sizes.append(x)
    return iid, sizes[0], sizes[1]


def segmentation_counts(segm: Any, h: int, w: int, where: str) -> np.ndarray:
    """COCO counts of one annotation's segmentation (RLE compressed or not, or polygons), checked.

    RLE needs nothing beyond sat_fast; polygons are rasterised by pycocotools (the ``coco`` extra).
    """
    if isinstance(segm, Mapping):
        size = segm.get("size")
        if not isinstance(size, Sequence) or isinstance(size, (str, bytes)) or list(size) != [h, w]:
            raise ValueError(f"{where}: RLE size {size} does not match the image size [{h}, {w}]")
        counts = segm.get("counts")
        if isinstance(counts, (str, bytes)):
            try:
                c, _ = _core.rle_from_strings([counts])
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            counts_arr = c
        elif isinstance(counts, Sequence):
            try:
                counts_arr = np.asarray(counts)
            except (TypeError, ValueError):  # ragged nested lists
                raise ValueError(f"{where}: uncompressed RLE counts must be a list of integers") from None
            if counts_arr.ndim != 1 or (counts_arr.dtype.kind not in "iu" and counts_arr.size):
                raise ValueError(f"{where}: uncompressed RLE counts must be a list of integers")
            if counts_arr.size and (counts_arr.min() < 0 or counts_arr.max() > 0xFFFFFFFF):
                raise ValueError(f"{where}: RLE counts must be in [0, 2**32)")
            counts_arr = counts_arr.astype(np.uint32)
        else:
            raise ValueError(
                f"{where}: RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}"
            )
    elif isinstance(segm, Sequence) and not isinstance(segm, (str, bytes)):
        polys = []
        for j, poly in enumerate(segm):
            try:
                p = np.asarray(poly)
            except (TypeError, ValueError):  # ragged nested lists
                p = np.zeros(0)
            if p.dtype.kind not in "iuf" or p.ndim != 1 or p.size < 6 or p.size % 2:
                raise ValueError(f"{where}: polygon {j} must be a flat list of at least 3 (x, y) points")
            xs, ys = p[0::2], p[1::2]
            if not np.isfinite(p).all() or xs.min() < 0 or ys.min() < 0 or xs.max() > w or ys.max() > h:
                raise ValueError(
                    f"{where}: polygon {j} lies outside the image (x in [{xs.min():g}, {xs.max():g}], "
                    f"y in [{ys.min():g}, {ys.max():g}], image {w}x{h})"
                )
            polys.append(p.astype(np.float64).tolist())
        if not polys:
            raise ValueError(f"{where}: segmentation has no polygons")
        try:
            from pycocotools import mask as coco_mask
        except ImportError:
            raise ValueError(
                f"{where}: polygons need pycocotools (pip install 'sat_fast[coco]'); RLE needs nothing extra"
            ) from None
        rle = coco_mask.merge(coco_mask.frPyObjects(polys, h, w))
        counts_arr, _ = _core.rle_from_strings([rle["counts"]])
    else:
        raise ValueError(f"{where}: segmentation must be an RLE dict or a list of polygons")
    total = int(counts_arr.astype(np.int64).sum())
    if total != h * w:
        raise ValueError(f"{where}: RLE counts sum to {total}, expected H*W = {h}*{w} = {h * w}")
    if not counts_arr[1::2].any():
        raise ValueError(f"{where}: the mask is empty")
    return counts_arr


def _load_json(annotations: Any) -> tuple[Any, str | None]:
    if isinstance(annotations, Mapping):
        return annotations, None
    source = os.fspath(annotations)
    try:
        with open(source, encoding="utf-8") as f:
            return json.load(f), source
    except OSError as exc:
        raise ValueError(f"cannot read COCO annotations {source}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"COCO annotations {source} are not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"COCO annotations {source} are nested too deeply to be COCO JSON") from None


@overload
def from_coco(
    annotations: Any,
    *,
    keep_instances: bool = ...,
    select_ids: Iterable[int] | None = ...,
    report: LoadReport | None = ...,
    lazy: Literal[False] = ...,
    max_pixels: int | None = ...,
    **deprecated: Any,
) -> list[Segments]: ...
@overload
def from_coco(
    annotations: Any,
    *,
    keep_instances: bool = ...,
    select_ids: Iterable[int] | None = ...,
    report: LoadReport | None = ...,
    lazy: Literal[True],
    max_pixels: int | None = ...,
    **deprecated: Any,
) -> Iterator[Segments]: ...
def from_coco(
    annotations: Any,
    *,
    keep_instances: bool = False,
    select_ids: Iterable[int] | None = None,
    report: LoadReport | None = None,
    lazy: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    **deprecated: Any,
) -> list[Segments] | Iterator[Segments]:
    """Segments from COCO-style annotation JSON, as RLE (reduced without decoding).

    Categories become names; each annotation's segmentation may be RLE
    (compressed string or uncompressed list of counts) or polygons.

    Parameters
    ----------
    annotations
        Path to the JSON file, or the already parsed dict.
    keep_instances
        By default the instances of one category in an image merge into one
        segment named after the category. With ``True`` each instance is a
        segment of its own, named ``"<category>#<n>"`` (n = 1, 2, ... in
        annotation order within the image).
    select_ids
        Only the images with these COCO ids, in this order (default: every
        image in ``images``, in file order). Version 1 called it
        ``image_ids=``, a name that elsewhere labels images; that spelling
        still works for one release, with a ``DeprecationWarning``.
    report
        Collect problems (bad annotations, malformed or duplicate image and
        category entries, annotations of unknown images or categories, images
        with no annotations, a file that cannot be read at all) here instead
        of raising; bad entries are left out, images with no annotations are
        kept with no segments.
    lazy
        Return an iterator that builds one image's segments at a time.
    max_pixels
        Largest image accepted, in pixels (the ``height`` x ``width`` its
        entry in ``images`` declares); default ``DEFAULT_MAX_PIXELS`` = 2**28,
        None for no limit. COCO RLE itself cannot describe images of 2**32
        pixels or more, whatever this limit.

    Raises
    ------
    ValueError
        Naming the file and the annotation or image id (or the entry's
        position): malformed JSON or entries, RLE whose counts do
        not sum to H*W or whose size differs from the image, polygons outside
        the image, empty masks, unknown category ids, annotations of images
        not in ``images``, images with no annotations, images larger than
        ``max_pixels`` or too large for COCO RLE.

    Examples
    --------
    >>> coco = {"images": [{"id": 7, "height": 2, "width": 2}],
    ...         "categories": [{"id": 1, "name": "dog"}],
    ...         "annotations": [{"id": 1, "image_id": 7, "category_id": 1,
    ...                          "segmentation": {"size": [2, 2], "counts": [2, 2]}}]}
    >>> seg = from_coco(coco)[0]
    >>> seg.image_id, seg.names, seg.kind
    (7, ('dog',), 'rle')
    """
    if deprecated:
        select_ids = renamed_keywords(
            "from_coco", deprecated, {"image_ids": "select_ids"}, {"select_ids": select_ids}
        ).get("select_ids", select_ids)
    limit = max_pixels_value(max_pixels)
    problem = None
    try:
        data, source = _load_json(annotations)
    except ValueError as exc:
        data, source, problem = None, os.fspath(annotations), str(exc)
    label = source or "COCO annotations"
    if problem is not None:
        pass
    elif not isinstance(data, Mapping):
        kind = type(data).__name__
        problem = f"{label}: expected a JSON object with 'images', 'annotations' and 'categories', got a {kind}"
    else:
        missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
        if missing:
            problem = f"{label}: missing or malformed {missing[0]!r} list"
    if problem is not None:
        # Nothing in the file can be read: recorded as the file's problem, and no images.
        record_problem(report, source, "file", problem)
        return iter(()) if lazy else []
    categories: dict[Any, str] = {}
    for n, c in enumerate(data["categories"]):
        try:
            cid, name = _category_entry(c, n, label, categories)
        except ValueError as exc:
            record_problem(report, source, f"category entry {n}", str(exc))
            continue
        categories[cid] = name
    category_order = {cid: i for i, cid in enumerate(categories)}
    images: dict[Any, tuple[int, int]] = {}
    entry_of: dict[Any, int] = {}
    left_out: set[Any] = set()  # recorded once as images; their annotations are left out without a word
    for n, im in enumerate(data["images"]):
        try:
            iid, height, width = _image_entry(im, n, label)
        except ValueError as exc:
            iid = im.get("id") if isinstance(im, Mapping) else None
            record_problem(report, source, f"image {iid}" if _is_id(iid) else f"image entry {n}", str(exc))
            if _is_id(iid):
                left_out.add(iid)
            continue
        if iid in entry_of:
            # Annotations name images by id: a second entry makes every one of them ambiguous.
            record_problem(
                report,
                source,
                f"image {iid}",
                f"{label}: image id {iid!r} appears more than once in 'images' (entries {entry_of[iid]} and {n})",
            )
            continue
        entry_of[iid] = n
        try:
            _check_image_size(height, width, limit, f"{label}: image {iid!r}")
        except ValueError as exc:
            record_problem(report, source, f"image {iid}", str(exc))
            left_out.add(iid)
            continue
        images[iid] = (height, width)
    by_image: dict[Any, list[Mapping[str, Any]]] = {i: [] for i in images}
    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, Mapping):
            record_problem(
                report,
                source,
                f"annotation entry {n}",
                f"{label}: 'annotations' entry {n} must be an object, got {type(ann).__name__}",
            )
            continue
        aid, iid, cid = ann.get("id"), ann.get("image_id"), ann.get("category_id")
        if _is_id(iid) and iid in left_out:
            continue
        if not _is_id(iid) or iid not in images:
            record_problem(
                report,
                source,
                f"annotation {aid}",
                f"{label}: annotation {aid!r} refers to image id {iid!r}, which is not in 'images'",
            )
            continue
        if not _is_id(cid) or cid not in categories:
            record_problem(
                report,
                source,
                f"annotation {aid}",
                f"{label}: annotation {aid!r} (image {iid!r}) has unknown category id {cid!r}",
            )
            continue
        by_image[iid].append(ann)
    if select_ids is None:
        order = list(images)
    else:
        order = [iid for iid in select_ids if not (_is_id(iid) and iid in left_out)]
        for iid in order:
            if not _is_id(iid) or iid not in images:
                raise ValueError(f"{label}: image id {iid!r} is not in 'images'")

    def build(iid: Any) -> Segments:
        h, w = images[iid]
        anns = by_image[iid]
        if not anns:
            record_problem(report, source, f"image {iid}", f"{label}: image {iid!r} has no annotations")
        groups: dict[str, list[np.ndarray]] = {}
        keys: dict[str, tuple[int, int]] = {}
        seen: dict[str, int] = {}
        for ann in anns:
            aid, cid = ann.get("id"), ann["category_id"]
            where = f"{label}: annotation {aid!r} (image {iid!r})"
            try:
                counts = segmentation_counts(ann.get("segmentation"), h, w, where)
            except ValueError as exc:
                record_problem(report, source, f"annotation {aid}", str(exc))
                continue
            name = categories[cid]
            if keep_instances:
                seen[name] = seen.get(name, 0) + 1
                name = f"{name}#{seen[name]}"
            groups.setdefault(name, []).append(counts)
            keys.setdefault(name, (category_order[cid], len(keys)))
        names = sorted(groups, key=lambda n: keys[n])
        return rle_segments(names, [groups[n] for n in names], h, w, iid, source)

    generator = (build(iid) for iid in order)
    return generator if lazy else list(generator)
