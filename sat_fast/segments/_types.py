"""The :class:`Segments` type: one image's named segments at its own size."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sat_fast import _validate as v
from sat_fast._deprecation import warn_deprecated
from sat_fast._typing import SegmentsKind
from sat_fast.segments._rle import counts_array, rle_decode

Kind = SegmentsKind
ImageId = int | str | None


#: Default ``max_pixels=`` of the loaders: 2**28 = 268,435,456 pixels per image (a 16384 x 16384 image).
DEFAULT_MAX_PIXELS = 1 << 28

# --------------------------------------------------------------------------
# The Segments type
# --------------------------------------------------------------------------


def max_pixels_value(max_pixels: Any) -> int | None:
    """The loaders' ``max_pixels=``: a positive int, or None for no limit."""
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool):
        raise TypeError("max_pixels must be an int or None, got bool")
    try:
        n = operator.index(max_pixels)
    except TypeError:
        raise TypeError(f"max_pixels must be an int or None, got {type(max_pixels).__name__}") from None
    if n < 1:
        raise ValueError(f"max_pixels must be at least 1 (or None for no limit), got {n}")
    return n


def check_pixels(height: int, width: int, max_pixels: int | None, where: str) -> None:
    """Refuse an image whose declared size exceeds ``max_pixels``, before anything of that size is allocated."""
    if max_pixels is not None and height * width > max_pixels:
        raise ValueError(
            f"{where} declares {height}x{width} = {height * width:,} pixels, more than max_pixels={max_pixels:,} "
            "(pass a larger max_pixels=, or None, if the image is real)"
        )


def where_text(image_id: ImageId, source: str | None) -> str:
    text = f"image {image_id!r}" if image_id is not None else "image"
    return f"{text} in {source}" if source else text


def offsets_array(a: Any, what: str) -> np.ndarray:
    arr = np.ascontiguousarray(a, dtype=np.int64)
    if arr.ndim != 1 or arr.shape[0] < 1 or arr[0] != 0 or (arr[1:] < arr[:-1]).any():
        raise ValueError(f"{what} must be a non-decreasing 1-D array of offsets starting at 0")
    return arr


@dataclass(frozen=True, eq=False)
class Segments:
    """One image's named segments at that image's own size.

    Exactly one representation is given:

    - ``label_map``: (H, W) uint8, uint16 or int32; value ``i`` belongs to
      ``names[i]``, value ``len(names)`` to no segment.
    - ``words``: (K, ceil(H*W/64)) uint64 packed overlapping masks (bit ``i``
      of word ``w`` is pixel ``64*w + i``, row-major), as made by
      :func:`sat_fast.pack_masks`.
    - ``counts`` with ``instance_offsets`` and ``segment_instances``: COCO
      run lengths (uint32, column-major, starting with a run of 0s); instance
      ``i`` is ``counts[instance_offsets[i]:instance_offsets[i+1]]`` and
      segment ``k`` is the union of instances
      ``segment_instances[k]:segment_instances[k+1]``.

    Build them with the loaders of this module rather than by hand.

    Examples
    --------
    >>> import numpy as np
    >>> from sat_fast.segments import from_label_map
    >>> seg = from_label_map(np.array([[0, 0], [1, 2]]), ["sky", "dog", "cat"])[0]
    >>> seg.kind, seg.names, seg.shape
    ('labels', ('sky', 'dog', 'cat'), (2, 2))
    >>> seg.masks()[1].astype(int).tolist()
    [[0, 0], [1, 0]]
    """

    names: tuple[str, ...]
    height: int
    width: int
    label_map: np.ndarray | None = None
    words: np.ndarray | None = None
    counts: np.ndarray | None = None
    instance_offsets: np.ndarray | None = None
    segment_instances: np.ndarray | None = None
    image_id: ImageId = None
    source: str | None = None

    def __post_init__(self) -> None:
        names = tuple(v.segment_names(list(self.names), None))
        object.__setattr__(self, "names", names)
        h, w = operator.index(self.height), operator.index(self.width)
        if h < 0 or w < 0:
            raise ValueError(f"{self.location}: height and width must be non-negative, got {h}x{w}")
        object.__setattr__(self, "height", h)
        object.__setattr__(self, "width", w)
        given = [x is not None for x in (self.label_map, self.words, self.counts)]
        if sum(given) != 1:
            raise ValueError(f"{self.location}: give exactly one of label_map, words and counts")
        k = len(names)
        if self.label_map is not None:
            lab = np.asarray(self.label_map)
            if lab.shape != (h, w):
                raise ValueError(
                    f"{self.location}: label map shape {v.shape_str(lab.shape)} does not match the image shape "
                    f"{v.shape_str((h, w))}"
                )
            if lab.dtype not in (np.uint8, np.uint16, np.int32):
                raise TypeError(f"{self.location}: labels must be uint8, uint16 or int32, got {lab.dtype}")
            if k > np.iinfo(lab.dtype).max:
                raise ValueError(f"{self.location}: {k} names do not fit {lab.dtype} labels (value {k} means none)")
            object.__setattr__(self, "label_map", np.ascontiguousarray(lab))
        elif self.words is not None:
            words = np.asarray(self.words)
            nw = -(-h * w // 64)
            if words.dtype != np.uint64 or words.shape != (k, nw):
                raise ValueError(
                    f"{self.location}: packed masks must be uint64 of shape {v.shape_str((k, nw))} for {k} names "
                    f"at {h}x{w}, got {words.dtype} {v.shape_str(words.shape)}"
                )
            object.__setattr__(self, "words", np.ascontiguousarray(words))
        else:
            counts = counts_array(self.counts, self.location)
            if self.instance_offsets is None or self.segment_instances is None:
                raise ValueError(f"{self.location}: RLE counts need instance_offsets and segment_instances")
            inst = offsets_array(self.instance_offsets, "instance_offsets")
            segs = offsets_array(self.segment_instances, "segment_instances")
            if inst[-1] != counts.shape[0]:
                raise ValueError(
                    f"{self.location}: instance_offsets end at {inst[-1]} but there are {counts.shape[0]} counts"
                )
            if segs.shape[0] != k + 1 or segs[-1] != inst.shape[0] - 1:
                raise ValueError(
                    f"{self.location}: segment_instances must have {k + 1} entries ending at the "
                    f"{inst.shape[0] - 1} instances"
                )
            object.__setattr__(self, "counts", counts)
            object.__setattr__(self, "instance_offsets", inst)
            object.__setattr__(self, "segment_instances", segs)

    @property
    def location(self) -> str:
        """Where this image is, for messages: ``"image 'a' in masks/a.png"``."""
        return where_text(self.image_id, self.source)

    @property
    def labels(self) -> np.ndarray | None:
        """Deprecated alias of :attr:`label_map` (``labels`` means class labels elsewhere)."""
        warn_deprecated("Segments.labels is deprecated since sat_fast 0.2.0; use Segments.label_map")
        return self.label_map

    @property
    def kind(self) -> Kind:
        """``"labels"``, ``"masks"`` or ``"rle"``."""
        if self.label_map is not None:
            return "labels"
        return "masks" if self.words is not None else "rle"

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return (self.height, self.width)

    @property
    def num_segments(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (
            f"Segments(image_id={self.image_id!r}, kind={self.kind!r}, shape={self.shape}, names={list(self.names)!r})"
        )

    def replace(self, **changes: Any) -> Segments:
        """A copy with some fields changed, validated like a new value.

        Examples
        --------
        >>> import numpy as np
        >>> from sat_fast.segments import from_label_map
        >>> seg = from_label_map(np.array([[0, 1]]), ["a", "b"])[0]
        >>> seg.replace(image_id="x").image_id
        'x'
        """
        return replace_segments(self, **changes)

    @classmethod
    def from_rle(
        cls,
        names: Sequence[str],
        instances: Sequence[Sequence[np.ndarray]],
        height: int,
        width: int,
        *,
        image_id: ImageId = None,
        source: str | None = None,
    ) -> Segments:
        """Segments of kind ``rle`` from COCO counts: ``instances[k]`` lists the counts of segment ``k``'s instances.

        Examples
        --------
        >>> seg = Segments.from_rle(["dog"], [[np.array([1, 3])]], 2, 2)
        >>> seg.kind, seg.masks()[0].astype(int).tolist()
        ('rle', [[0, 1], [1, 1]])
        """
        return rle_segments(names, instances, height, width, image_id, source)

    def rle_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(counts, instance_offsets, segment_instances)`` of RLE segments; ``ValueError`` for other kinds."""
        if self.counts is None or self.instance_offsets is None or self.segment_instances is None:
            raise ValueError(f"{self.location}: segments are {self.kind}, not RLE")
        return self.counts, self.instance_offsets, self.segment_instances

    def rle(self, index: int) -> list[np.ndarray]:
        """The COCO counts of each instance of segment ``index`` (RLE segments only)."""
        if self.counts is None:
            raise ValueError(f"{self.location}: segments are {self.kind}, not RLE")
        a, b = self.segment_instances[index], self.segment_instances[index + 1]  # type: ignore[index]
        off = self.instance_offsets
        return [self.counts[off[i] : off[i + 1]] for i in range(a, b)]  # type: ignore[index]

    def masks(self) -> np.ndarray:
        """The boolean masks of this image, shape (K, H, W) (decoded; one image only)."""
        k, h, w = len(self.names), self.height, self.width
        if self.label_map is not None:
            masks: np.ndarray = self.label_map[None, :, :] == np.arange(k, dtype=np.int64)[:, None, None]
            return masks
        if self.words is not None:
            bits = np.unpackbits(self.words.view(np.uint8), axis=-1, bitorder="little")
            return bits[:, : h * w].astype(bool).reshape(k, h, w)
        out = np.zeros((k, h, w), bool)
        for i in range(k):
            for counts in self.rle(i):
                out[i] |= rle_decode(counts, h, w, where=self.location)
        return out

    def rename(self, mapping: Mapping[str, str]) -> Segments:
        """Rename segments (names not in ``mapping`` stay); segments that end up with one name merge."""
        new = [mapping.get(n, n) for n in self.names]
        if len(set(new)) == len(new):
            return replace_segments(self, names=tuple(new))
        order = list(dict.fromkeys(new))
        target = np.array([order.index(n) for n in new], np.int64)
        k = len(order)
        if self.label_map is not None:
            lut = np.append(target, k).astype(label_dtype(k))
            return replace_segments(self, names=tuple(order), label_map=lut[self.label_map])
        if self.words is not None:
            words = np.zeros((k, self.words.shape[1]), np.uint64)
            for i, t in enumerate(target):
                words[t] |= self.words[i]
            return replace_segments(self, names=tuple(order), words=words)
        groups = [[i for i in range(len(new)) if target[i] == t] for t in range(k)]
        parts = [[c for i in g for c in self.rle(i)] for g in groups]
        return rle_segments(order, parts, self.height, self.width, self.image_id, self.source)


def replace_segments(seg: Segments, **changes: Any) -> Segments:
    """A copy of ``seg`` with some fields changed (validated again)."""
    fields: dict[str, Any] = {
        "names": seg.names,
        "height": seg.height,
        "width": seg.width,
        "label_map": seg.label_map,
        "words": seg.words,
        "counts": seg.counts,
        "instance_offsets": seg.instance_offsets,
        "segment_instances": seg.segment_instances,
        "image_id": seg.image_id,
        "source": seg.source,
    }
    fields.update(changes)
    return Segments(**fields)


def label_dtype(k: int) -> np.dtype:
    """Smallest label dtype that holds 0..k (k marks 'no segment')."""
    if k <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if k <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def rle_segments(
    names: Sequence[str],
    instances: Sequence[Sequence[np.ndarray]],
    h: int,
    w: int,
    image_id: ImageId,
    source: str | None,
) -> Segments:
    where = where_text(image_id, source)
    flat = [counts_array(c, where) for group in instances for c in group]
    lengths = np.array([c.shape[0] for c in flat], np.int64)
    counts = np.concatenate(flat) if flat else np.zeros(0, np.uint32)
    inst = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    segs = np.concatenate([[0], np.cumsum([len(g) for g in instances])]).astype(np.int64)
    return Segments(
        tuple(names),
        h,
        w,
        counts=counts,
        instance_offsets=inst,
        segment_instances=segs,
        image_id=image_id,
        source=source,
    )


def image_id_list(image_ids: Any, n: int | None) -> list[ImageId] | None:
    if image_ids is None:
        return None
    ids = list(image_ids)
    if n is not None and len(ids) != n:
        raise ValueError(f"image_ids has {len(ids)} entries but there are {n} images")
    return ids
