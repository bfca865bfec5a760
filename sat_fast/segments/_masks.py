"""Segments from open-vocabulary segmenter output: named masks, scores, segmenters."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from sat_fast import _validate as v
from sat_fast.packed import pack_masks
from sat_fast.segments._report import LoadReport, record_problem
from sat_fast.segments._types import (
    ImageId,
    Segments,
    image_id_list,
    where_text,
)
from sat_fast.segments._vocab import rename_map

# --------------------------------------------------------------------------
# Open-vocabulary masks and segmenters
# --------------------------------------------------------------------------


def _mask_items(output: Any, where: str) -> list[tuple[str, Any, float | None]]:
    if isinstance(output, Mapping):
        return [(n, m, None) for n, m in output.items()]
    if isinstance(output, (str, bytes)) or not isinstance(output, Iterable):
        raise TypeError(
            f"{where}: expected a mapping {{name: mask}} or a list of (name, mask, score), got {type(output).__name__}"
        )
    items = []
    for j, item in enumerate(output):
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise TypeError(f"{where}: item {j} must be (name, mask) or (name, mask, score), got {type(item).__name__}")
        items.append((item[0], item[1], float(item[2]) if len(item) == 3 else None))
    return items


def _masks_one(
    output: Any,
    image_id: ImageId,
    size: tuple[int, int] | None,
    score_threshold: float | None,
    renames: Mapping[str, str],
    report: LoadReport | None,
) -> Segments:
    where = where_text(image_id, None)
    merged: dict[str, np.ndarray] = {}
    for name, mask, score in _mask_items(output, where):
        if not isinstance(name, str):
            raise TypeError(f"{where}: segment names must be strings, got {name!r}")
        if score_threshold is not None and score is not None and score < score_threshold:
            continue
        m = v.as_numpy(mask, f"mask {name!r}")
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.ndim != 2 or (size is not None and m.shape != size):
            expected = v.shape_str(size) if size is not None else "(H, W)"
            record_problem(
                report,
                None,
                str(image_id),
                f"{where}: mask {name!r} has shape {v.shape_str(m.shape)}, expected {expected}",
            )
            continue
        if size is None:
            size = (int(m.shape[0]), int(m.shape[1]))
        m = m.astype(bool) if m.dtype != np.bool_ else m
        if not m.any():
            record_problem(report, None, str(image_id), f"{where}: mask {name!r} is empty")
            continue
        name = renames.get(name, name)
        merged[name] = merged[name] | m if name in merged else m
    if size is None:
        raise ValueError(f"{where}: no masks to take the image size from; pass sizes=")
    h, w = size
    if not merged:
        return Segments((), h, w, words=np.zeros((0, -(-h * w // 64)), np.uint64), image_id=image_id)
    stack = np.ascontiguousarray(np.stack(list(merged.values()))[None])
    words = pack_masks(stack).words[0]
    return Segments(tuple(merged), h, w, words=words, image_id=image_id)


def from_masks(
    outputs: Iterable[Any],
    *,
    image_ids: Any = None,
    sizes: Sequence[tuple[int, int]] | None = None,
    score_threshold: float | None = None,
    synonyms: Mapping[str, str] | None = None,
    groups: Mapping[str, Iterable[str]] | None = None,
    report: LoadReport | None = None,
) -> list[Segments]:
    """Segments from open-vocabulary segmenter output, one entry per image.

    Parameters
    ----------
    outputs
        Per image, a mapping ``{name: mask}`` or a list of ``(name, mask)``
        or ``(name, mask, score)``; masks are (H, W) boolean arrays (numpy,
        JAX, anything array-like) and may overlap; names differ between
        images.
    image_ids
        One id per image; default ``0 .. B-1``.
    sizes
        Per image (H, W): required for images without masks, and checked
        against every mask.
    score_threshold
        Drop masks whose score is below this.
    synonyms, groups
        Renaming applied before the vocabularies merge (see
        :func:`rename_map`); masks that end up with one name are united.
    report
        Collect masks of the wrong shape and empty masks here (and drop
        them) instead of raising.

    Examples
    --------
    >>> import numpy as np
    >>> eye = np.zeros((4, 4), bool); eye[1, 1] = True
    >>> segs = from_masks([[("eyes", eye, 0.9), ("fur", ~eye, 0.2)]],
    ...                   score_threshold=0.5, synonyms={"eyes": "eye"})
    >>> segs[0].names
    ('eye',)
    """
    output_list = list(outputs)
    ids = image_id_list(image_ids, len(output_list)) or list(range(len(output_list)))
    if sizes is not None and len(sizes) != len(output_list):
        raise ValueError(f"sizes has {len(sizes)} entries but there are {len(output_list)} images")
    renames = rename_map(synonyms=synonyms, groups=groups)
    return [
        _masks_one(out, i, tuple(sizes[j]) if sizes is not None else None, score_threshold, renames, report)  # type: ignore[arg-type]
        for j, (out, i) in enumerate(zip(output_list, ids, strict=True))
    ]


class Segmenter(Protocol):
    """Anything that maps a batch of images to per-image segmenter output.

    ``segmenter(images)`` returns one entry per image: a mapping
    ``{name: mask}`` or a list of ``(name, mask, score)``. A plain function
    qualifies; so does a wrapper around a SAM- or DINO-style model. The
    protocol is for type checkers: at run time :func:`segment_with` only
    checks that the segmenter is callable.
    """

    def __call__(self, images: Sequence[Any], /) -> Sequence[Any]: ...


def _image_size(image: Any) -> tuple[int, int] | None:
    shape = getattr(image, "shape", None)
    if shape is not None and len(shape) >= 2:
        return (int(shape[0]), int(shape[1]))
    size = getattr(image, "size", None)  # PIL: (width, height)
    if isinstance(size, tuple) and len(size) == 2:
        return (int(size[1]), int(size[0]))
    return None


def segment_with(
    segmenter: Callable[[Sequence[Any]], Sequence[Any]],
    images: Iterable[Any],
    *,
    batch_size: int = 8,
    image_ids: Any = None,
    score_threshold: float | None = None,
    synonyms: Mapping[str, str] | None = None,
    groups: Mapping[str, Iterable[str]] | None = None,
    report: LoadReport | None = None,
    lazy: bool = False,
) -> list[Segments] | Iterator[Segments]:
    """Run a user's segmenter over images, batch by batch, and collect its segments.

    Parameters
    ----------
    segmenter
        A :class:`Segmenter`: ``segmenter(list_of_images)`` returns one
        ``{name: mask}`` (or list of ``(name, mask, score)``) per image.
        Nothing is downloaded; bring your own model.
    images
        Images as numpy arrays (H, W, ...) or PIL images; masks must match
        each image's (H, W).
    batch_size
        Images per segmenter call.
    image_ids, score_threshold, synonyms, groups, report
        As in :func:`from_masks`.
    lazy
        Return an iterator (the segmenter runs as it is consumed).

    Examples
    --------
    >>> import numpy as np
    >>> def bright(images):
    ...     return [{"bright": img > 0.5} for img in images]
    >>> segs = segment_with(bright, [np.eye(3), np.ones((2, 2))])
    >>> [s.shape for s in segs]
    [(3, 3), (2, 2)]
    """
    if not callable(segmenter):
        raise TypeError(
            f"segmenter must be callable (images -> list of {{name: mask}}), got {type(segmenter).__name__}"
        )
    size = operator.index(batch_size)
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    renames = rename_map(synonyms=synonyms, groups=groups)
    id_list = None if image_ids is None else list(image_ids)

    def generate() -> Iterator[Segments]:
        batch: list[Any] = []
        start = 0

        def run(batch: list[Any], start: int) -> list[Segments]:
            outputs = list(segmenter(batch))
            if len(outputs) != len(batch):
                raise ValueError(f"segmenter returned {len(outputs)} results for a batch of {len(batch)} images")
            ids = id_list[start : start + len(batch)] if id_list is not None else range(start, start + len(batch))
            return [
                _masks_one(o, i, _image_size(img), score_threshold, renames, report)
                for o, i, img in zip(outputs, ids, batch, strict=True)
            ]

        for image in images:
            batch.append(image)
            if len(batch) == size:
                yield from run(batch, start)
                start += len(batch)
                batch = []
        if batch:
            yield from run(batch, start)

    return generate() if lazy else list(generate())
