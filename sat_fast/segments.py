"""Named segments per image, from segmenters and annotated datasets.

Every source yields, per image, a :class:`Segments` value: the image's segment
names and its masks at the image's own size, stored in one of three forms:

- ``labels``: a dense label map (H, W); value ``i`` is ``names[i]`` and the
  value ``len(names)`` marks pixels in no segment;
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
leave the bad part out and go on.
"""

from __future__ import annotations

import csv
import io
import json
import operator
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import polars as pl

from sat_fast import _core
from sat_fast import _validate as v
from sat_fast.tables import PackedMasks, SegmentStats, _image_id_series, pack_masks, segment_stats, stats_table

__all__ = [
    "LoadReport",
    "Problem",
    "Segmenter",
    "Segments",
    "from_coco",
    "from_label_map",
    "from_masks",
    "from_png",
    "load_segments",
    "merge_vocabularies",
    "rename_map",
    "rle_decode",
    "rle_encode",
    "save_segments",
    "segment_with",
    "segments_stats",
]

Kind = Literal["labels", "masks", "rle"]
ImageId = int | str | None


# --------------------------------------------------------------------------
# The Segments type
# --------------------------------------------------------------------------


def _where(image_id: ImageId, source: str | None) -> str:
    text = f"image {image_id!r}" if image_id is not None else "image"
    return f"{text} in {source}" if source else text


def _index_array(a: Any, what: str) -> np.ndarray:
    arr = np.ascontiguousarray(a, dtype=np.int64)
    if arr.ndim != 1 or arr.shape[0] < 1 or arr[0] != 0 or (arr[1:] < arr[:-1]).any():
        raise ValueError(f"{what} must be a non-decreasing 1-D array of offsets starting at 0")
    return arr


@dataclass(frozen=True, eq=False)
class Segments:
    """One image's named segments at that image's own size.

    Exactly one representation is given:

    - ``labels``: (H, W) uint8, uint16 or int32; value ``i`` belongs to
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
    labels: np.ndarray | None = None
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
            raise ValueError(f"{self._where()}: height and width must be non-negative, got {h}x{w}")
        object.__setattr__(self, "height", h)
        object.__setattr__(self, "width", w)
        given = [x is not None for x in (self.labels, self.words, self.counts)]
        if sum(given) != 1:
            raise ValueError(f"{self._where()}: give exactly one of labels, words and counts")
        k = len(names)
        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.shape != (h, w):
                raise ValueError(
                    f"{self._where()}: label map shape {v.shape_str(lab.shape)} does not match the image shape "
                    f"{v.shape_str((h, w))}"
                )
            if lab.dtype not in (np.uint8, np.uint16, np.int32):
                raise TypeError(f"{self._where()}: labels must be uint8, uint16 or int32, got {lab.dtype}")
            if k > np.iinfo(lab.dtype).max:
                raise ValueError(f"{self._where()}: {k} names do not fit {lab.dtype} labels (value {k} means none)")
            object.__setattr__(self, "labels", np.ascontiguousarray(lab))
        elif self.words is not None:
            words = np.asarray(self.words)
            nw = -(-h * w // 64)
            if words.dtype != np.uint64 or words.shape != (k, nw):
                raise ValueError(
                    f"{self._where()}: packed masks must be uint64 of shape {v.shape_str((k, nw))} for {k} names "
                    f"at {h}x{w}, got {words.dtype} {v.shape_str(words.shape)}"
                )
            object.__setattr__(self, "words", np.ascontiguousarray(words))
        else:
            counts = np.ascontiguousarray(self.counts, dtype=np.uint32)
            if counts.ndim != 1:
                raise ValueError(f"{self._where()}: RLE counts must be 1-D, got {v.shape_str(counts.shape)}")
            if self.instance_offsets is None or self.segment_instances is None:
                raise ValueError(f"{self._where()}: RLE counts need instance_offsets and segment_instances")
            inst = _index_array(self.instance_offsets, "instance_offsets")
            segs = _index_array(self.segment_instances, "segment_instances")
            if inst[-1] != counts.shape[0]:
                raise ValueError(f"{self._where()}: instance_offsets end at {inst[-1]} but there are {counts.shape[0]} counts")
            if segs.shape[0] != k + 1 or segs[-1] != inst.shape[0] - 1:
                raise ValueError(
                    f"{self._where()}: segment_instances must have {k + 1} entries ending at the "
                    f"{inst.shape[0] - 1} instances"
                )
            object.__setattr__(self, "counts", counts)
            object.__setattr__(self, "instance_offsets", inst)
            object.__setattr__(self, "segment_instances", segs)

    def _where(self) -> str:
        return _where(self.image_id, self.source)

    @property
    def kind(self) -> Kind:
        """``"labels"``, ``"masks"`` or ``"rle"``."""
        if self.labels is not None:
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
            f"Segments(image_id={self.image_id!r}, kind={self.kind!r}, shape={self.shape}, "
            f"names={list(self.names)!r})"
        )

    def rle(self, index: int) -> list[np.ndarray]:
        """The COCO counts of each instance of segment ``index`` (RLE segments only)."""
        if self.counts is None:
            raise ValueError(f"{self._where()}: segments are {self.kind}, not RLE")
        a, b = self.segment_instances[index], self.segment_instances[index + 1]  # type: ignore[index]
        off = self.instance_offsets
        return [self.counts[off[i] : off[i + 1]] for i in range(a, b)]  # type: ignore[index]

    def masks(self) -> np.ndarray:
        """The boolean masks of this image, shape (K, H, W) (decoded; one image only)."""
        k, h, w = len(self.names), self.height, self.width
        if self.labels is not None:
            return self.labels[None, :, :] == np.arange(k, dtype=np.int64)[:, None, None]
        if self.words is not None:
            bits = np.unpackbits(self.words.view(np.uint8), axis=-1, bitorder="little")
            return bits[:, : h * w].astype(bool).reshape(k, h, w)
        out = np.zeros((k, h, w), bool)
        for i in range(k):
            for counts in self.rle(i):
                out[i] |= rle_decode(counts, h, w, where=self._where())
        return out

    def rename(self, mapping: Mapping[str, str]) -> Segments:
        """Rename segments (names not in ``mapping`` stay); segments that end up with one name merge."""
        new = [mapping.get(n, n) for n in self.names]
        if len(set(new)) == len(new):
            return _replace(self, names=tuple(new))
        order = list(dict.fromkeys(new))
        target = np.array([order.index(n) for n in new], np.int64)
        k = len(order)
        if self.labels is not None:
            lut = np.append(target, k).astype(_label_dtype(k))
            return _replace(self, names=tuple(order), labels=lut[self.labels])
        if self.words is not None:
            words = np.zeros((k, self.words.shape[1]), np.uint64)
            for i, t in enumerate(target):
                words[t] |= self.words[i]
            return _replace(self, names=tuple(order), words=words)
        groups = [[i for i in range(len(new)) if target[i] == t] for t in range(k)]
        parts = [[c for i in g for c in self.rle(i)] for g in groups]
        return _rle_segments(order, parts, self.height, self.width, self.image_id, self.source)


def _replace(seg: Segments, **changes: Any) -> Segments:
    fields = {
        "names": seg.names,
        "height": seg.height,
        "width": seg.width,
        "labels": seg.labels,
        "words": seg.words,
        "counts": seg.counts,
        "instance_offsets": seg.instance_offsets,
        "segment_instances": seg.segment_instances,
        "image_id": seg.image_id,
        "source": seg.source,
    }
    fields.update(changes)
    return Segments(**fields)


def _label_dtype(k: int) -> np.dtype:
    """Smallest label dtype that holds 0..k (k marks 'no segment')."""
    if k <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if k <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def _rle_segments(
    names: Sequence[str], instances: Sequence[Sequence[np.ndarray]], h: int, w: int, image_id: ImageId, source: str | None
) -> Segments:
    flat = [np.asarray(c, np.uint32) for group in instances for c in group]
    lengths = np.array([c.shape[0] for c in flat], np.int64)
    counts = np.concatenate(flat) if flat else np.zeros(0, np.uint32)
    inst = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    segs = np.concatenate([[0], np.cumsum([len(g) for g in instances])]).astype(np.int64)
    return Segments(tuple(names), h, w, counts=counts, instance_offsets=inst, segment_instances=segs,
                    image_id=image_id, source=source)


# --------------------------------------------------------------------------
# RLE helpers
# --------------------------------------------------------------------------


def rle_encode(mask: Any) -> np.ndarray:
    """COCO run lengths (uint32, column-major, first run is 0s) of one (H, W) boolean mask.

    Examples
    --------
    >>> import numpy as np
    >>> rle_encode(np.array([[0, 1], [0, 1]], bool)).tolist()
    [2, 2]
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {v.shape_str(m.shape)}")
    flat = m.astype(bool).T.ravel()
    if flat.size == 0:
        return np.zeros(1, np.uint32)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds)
    if flat[0]:
        runs = np.concatenate([[0], runs])
    return runs.astype(np.uint32)


def rle_decode(counts: Any, height: int, width: int, *, where: str = "RLE") -> np.ndarray:
    """The (H, W) boolean mask of COCO run lengths (column-major).

    Examples
    --------
    >>> rle_decode([2, 2], 2, 2).astype(int).tolist()
    [[0, 1], [0, 1]]
    """
    c = np.asarray(counts, np.int64)
    total = int(c.sum())
    if total != height * width:
        raise ValueError(f"{where}: RLE counts sum to {total}, expected H*W = {height}*{width} = {height * width}")
    values = (np.arange(c.shape[0]) % 2).astype(bool)
    return np.repeat(values, c).reshape(width, height).T


# --------------------------------------------------------------------------
# Problems and reports
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One bad input found by a loader: where it is and what is wrong."""

    source: str | None
    item: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class LoadReport:
    """Collects problems instead of raising, when passed to a loader as ``report=``.

    The bad part (an annotation, a mask, a file) is left out and loading goes
    on; images with no annotations are kept with no segments.

    Examples
    --------
    >>> report = LoadReport()
    >>> len(report), bool(report)
    (0, False)
    """

    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.problems)

    def __bool__(self) -> bool:
        return bool(self.problems)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def __str__(self) -> str:
        if not self.problems:
            return "no problems"
        return "\n".join(f"- {p.message}" for p in self.problems)


def _problem(report: LoadReport | None, source: str | None, item: str, message: str) -> None:
    """Raise, or record when a report collects problems."""
    if report is None:
        raise ValueError(message)
    report.problems.append(Problem(source, item, message))


# --------------------------------------------------------------------------
# Names tables, synonyms and vocabularies
# --------------------------------------------------------------------------


def _names_table(names: Any) -> dict[int, str]:
    """value -> name from a list, a dict, or a CSV/JSON file."""
    source = None
    if isinstance(names, (str, os.PathLike)):
        source = str(names)
        path = Path(names)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read names table {source}: {exc}") from None
        if path.suffix.lower() == ".json":
            try:
                names = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"names table {source} is not valid JSON: {exc}") from None
        else:
            rows = [r for r in csv.reader(io.StringIO(text)) if r and any(x.strip() for x in r)]
            if rows and not rows[0][0].strip().lstrip("-").isdigit():
                rows = rows[1:]  # header
            table: dict[Any, Any] = {}
            for i, r in enumerate(rows):
                if len(r) < 2:
                    raise ValueError(f"names table {source}: row {i + 1} needs 'value,name', got {r!r}")
                table[r[0].strip()] = r[1].strip()
            names = table
    if isinstance(names, Mapping):
        out: dict[int, str] = {}
        for key, name in names.items():
            try:
                value = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"names table{' ' + source if source else ''}: key {key!r} is not an integer label value") from None
            if not isinstance(name, str):
                raise TypeError(f"names table{' ' + source if source else ''}: name of {value} must be a string, got {name!r}")
            out[value] = name
        return out
    if isinstance(names, Sequence) and not isinstance(names, (str, bytes)):
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise TypeError(f"names[{i}] must be a string, got {name!r}")
        return dict(enumerate(names))
    raise TypeError(f"names must be a list, a dict or a CSV/JSON path, got {type(names).__name__}")


def rename_map(
    *, synonyms: Mapping[str, str] | None = None, groups: Mapping[str, Iterable[str]] | None = None
) -> dict[str, str]:
    """One old-name -> new-name map from synonyms and groups.

    Parameters
    ----------
    synonyms
        ``{"eyes": "eye"}``: each key is renamed to its value.
    groups
        ``{"eye": ["left eye", "right eye"]}``: every member is renamed to the
        group's name. A name in two groups is an error.

    Examples
    --------
    >>> rename_map(synonyms={"eyes": "eye"}, groups={"eye": ["left eye", "right eye"]})
    {'eyes': 'eye', 'left eye': 'eye', 'right eye': 'eye'}
    """
    out: dict[str, str] = {}
    for old, new in (synonyms or {}).items():
        if not isinstance(old, str) or not isinstance(new, str):
            raise TypeError(f"synonyms must map strings to strings, got {old!r} -> {new!r}")
        out[old] = new
    for new, members in (groups or {}).items():
        if isinstance(members, str):
            raise TypeError(f"groups[{new!r}] must be a list of names, got the string {members!r}")
        for old in members:
            if old in out and out[old] != new:
                raise ValueError(f"{old!r} is mapped to both {out[old]!r} and {new!r}")
            out[old] = new
    # Chains ("eyes" -> "eye" -> "face") resolve to their end.
    for old in list(out):
        seen = {old}
        new = out[old]
        while new in out and new not in seen:
            seen.add(new)
            new = out[new]
        out[old] = new
    return out


def merge_vocabularies(segments: Iterable[Segments | Sequence[str]]) -> list[str]:
    """The union of the images' segment names, in order of first appearance.

    Examples
    --------
    >>> merge_vocabularies([["dog", "sky"], ["cat", "dog"]])
    ['dog', 'sky', 'cat']
    """
    seen: dict[str, None] = {}
    for s in segments:
        for n in (s.names if isinstance(s, Segments) else s):
            seen.setdefault(n, None)
    return list(seen)


# --------------------------------------------------------------------------
# Dense label maps and PNG files
# --------------------------------------------------------------------------


def _from_labels_one(
    lab: np.ndarray, table: Mapping[int, str], ignore_index: int | None, image_id: ImageId, source: str | None
) -> Segments:
    if lab.ndim != 2:
        raise ValueError(f"{_where(image_id, source)}: label map must be (H, W), got {v.shape_str(lab.shape)}")
    if lab.dtype.kind not in "iub":
        raise TypeError(f"{_where(image_id, source)}: label map must be integers, got dtype {lab.dtype}")
    flat = lab.ravel()
    if flat.size and flat.min() >= 0 and flat.max() < (1 << 20):
        present = np.flatnonzero(np.bincount(flat.astype(np.int64)))
    else:
        present = np.unique(flat).astype(np.int64)
    positions: dict[str, int] = {}
    local: dict[int, int] = {}
    for value in present.tolist():
        if value == ignore_index:
            continue
        name = table.get(value)
        if name is None:
            r, c = np.argwhere(lab == value)[0]
            raise ValueError(
                f"{_where(image_id, source)}: label value {value} at pixel ({r}, {c}) is missing from the names "
                "table (pass ignore_index for a 'no segment' value)"
            )
        local[value] = positions.setdefault(name, len(positions))
    names = list(positions)
    k = len(names)
    dtype = _label_dtype(k)
    if present.size and present[0] >= 0 and present[-1] < (1 << 20):
        lut = np.full(int(present[-1]) + 1, k, dtype)
        for value, idx in local.items():
            lut[value] = idx
        out = lut[flat.astype(np.int64)]
    else:
        keys = present
        idx = np.array([local.get(int(x), k) for x in keys], dtype)
        out = idx[np.searchsorted(keys, flat)]
    return Segments(tuple(names), lab.shape[0], lab.shape[1], labels=out.reshape(lab.shape), image_id=image_id,
                    source=source)


def _ids(image_ids: Any, n: int | None) -> list[ImageId] | None:
    if image_ids is None:
        return None
    ids = list(image_ids)
    if n is not None and len(ids) != n:
        raise ValueError(f"image_ids has {len(ids)} entries but there are {n} images")
    return ids


def from_label_map(
    labels: Any, names: Any, *, image_ids: Any = None, ignore_index: int | None = None
) -> list[Segments]:
    """Segments from dense label maps.

    Parameters
    ----------
    labels
        One (H, W) integer array, a batch (B, H, W), or a sequence of (H, W)
        arrays of differing sizes.
    names
        The names table: a list (value ``i`` is ``names[i]``), a dict
        ``{value: name}`` (values may be sparse; several values may share a
        name and then form one segment), or a path to a JSON file (list or
        dict) or CSV file (``value,name`` rows, optional header).
    image_ids
        One id per image; default ``0 .. B-1``.
    ignore_index
        Label value meaning "no segment" (e.g. 255 in Pascal VOC).

    Returns
    -------
    list of Segments
        Each lists only the names present in its image.

    Raises
    ------
    ValueError
        A label value missing from the names table (naming the image, pixel
        and value).

    Examples
    --------
    >>> import numpy as np
    >>> segs = from_label_map(np.array([[0, 255], [2, 2]]), {0: "sky", 2: "dog"}, ignore_index=255)
    >>> segs[0].names
    ('sky', 'dog')
    """
    table = _names_table(names)
    ignore = v.ignore_value(ignore_index)
    if isinstance(labels, np.ndarray) or hasattr(labels, "__array__") and not isinstance(labels, (list, tuple)):
        arr = v.as_numpy(labels, "labels")
        maps = [arr] if arr.ndim == 2 else list(arr) if arr.ndim == 3 else None
        if maps is None:
            raise ValueError(f"labels must be (H, W) or (B, H, W), got {v.shape_str(arr.shape)}")
    else:
        maps = [v.as_numpy(m, "labels") for m in labels]
    ids = _ids(image_ids, len(maps)) or list(range(len(maps)))
    return [_from_labels_one(np.asarray(m), table, ignore, i, None) for m, i in zip(maps, ids)]


def _read_label_png(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("P", "L", "1"):
                return np.asarray(im).astype(np.uint8)
            if mode.startswith("I;16"):
                return np.asarray(im).astype(np.uint16)
            if mode == "I":
                return np.asarray(im).astype(np.int32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot read label PNG {path}: {exc} (corrupt or truncated file?)") from None
    raise ValueError(
        f"label PNG {path} has mode {mode}; expected a greyscale or palette PNG whose pixel values are labels"
    )


def from_png(
    paths: Iterable[str | os.PathLike],
    names: Any,
    *,
    image_ids: Any = None,
    ignore_index: int | None = None,
    report: LoadReport | None = None,
    lazy: bool = False,
) -> list[Segments] | Iterator[Segments]:
    """Segments from PNG label maps (greyscale, 16-bit, or palette PNGs as in Pascal VOC and ADE20K).

    A palette PNG is read as its palette indices, not its colours.

    Parameters
    ----------
    paths
        PNG files, one per image.
    names
        The names table (see :func:`from_label_map`).
    image_ids
        One id per file; default: the file name without extension.
    ignore_index
        Label value meaning "no segment" (255 in VOC; ADE20K uses 0 for
        "other", which can simply be a name or the ignore value).
    report
        Collect unreadable files and unknown label values here and skip those
        files, instead of raising.
    lazy
        Return an iterator that reads one file at a time.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> Image.fromarray(np.array([[0, 1], [1, 1]], np.uint8)).save(path)
    >>> from_png([path], ["sky", "dog"])[0].names
    ('sky', 'dog')
    """
    table = _names_table(names)
    ignore = v.ignore_value(ignore_index)
    path_list = [os.fspath(p) for p in paths]
    ids = _ids(image_ids, len(path_list)) or [Path(p).stem for p in path_list]

    def generate() -> Iterator[Segments]:
        for path, image_id in zip(path_list, ids):
            try:
                lab = _read_label_png(path)
                yield _from_labels_one(lab, table, ignore, image_id, path)
            except ValueError as exc:
                _problem(report, path, str(image_id), str(exc))

    return generate() if lazy else list(generate())


# --------------------------------------------------------------------------
# COCO annotations
# --------------------------------------------------------------------------


def _coco_counts(
    segm: Any, h: int, w: int, where: str
) -> np.ndarray:
    """COCO counts of one annotation's segmentation (RLE compressed or not, or polygons)."""
    from pycocotools import mask as coco_mask

    if isinstance(segm, Mapping):
        size = segm.get("size")
        if size is None or list(size) != [h, w]:
            raise ValueError(f"{where}: RLE size {size} does not match the image size [{h}, {w}]")
        counts = segm.get("counts")
        if isinstance(counts, (str, bytes)):
            try:
                c, _ = _core.rle_from_strings([counts])
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            counts_arr = c
        elif isinstance(counts, Sequence):
            counts_arr = np.asarray(counts)
            if counts_arr.ndim != 1 or counts_arr.dtype.kind not in "iu" and counts_arr.size:
                raise ValueError(f"{where}: uncompressed RLE counts must be a list of integers")
            if counts_arr.size and (counts_arr.min() < 0 or counts_arr.max() > 0xFFFFFFFF):
                raise ValueError(f"{where}: RLE counts must be in [0, 2**32)")
            counts_arr = counts_arr.astype(np.uint32)
        else:
            raise ValueError(f"{where}: RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}")
    elif isinstance(segm, Sequence) and not isinstance(segm, (str, bytes)):
        polys = []
        for j, poly in enumerate(segm):
            p = np.asarray(poly, np.float64)
            if p.ndim != 1 or p.size < 6 or p.size % 2:
                raise ValueError(f"{where}: polygon {j} must be a flat list of at least 3 (x, y) points")
            xs, ys = p[0::2], p[1::2]
            if not np.isfinite(p).all() or xs.min() < 0 or ys.min() < 0 or xs.max() > w or ys.max() > h:
                raise ValueError(
                    f"{where}: polygon {j} lies outside the image (x in [{xs.min():g}, {xs.max():g}], "
                    f"y in [{ys.min():g}, {ys.max():g}], image {w}x{h})"
                )
            polys.append(p.tolist())
        if not polys:
            raise ValueError(f"{where}: segmentation has no polygons")
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


def _load_json(annotations: Any) -> tuple[Mapping[str, Any], str | None]:
    if isinstance(annotations, Mapping):
        return annotations, None
    source = os.fspath(annotations)
    try:
        with open(source, encoding="utf-8") as f:
            return json.load(f), source
    except OSError as exc:
        raise ValueError(f"cannot read COCO annotations {source}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"COCO annotations {source} are not valid JSON: {exc}") from None


def from_coco(
    annotations: Any,
    *,
    keep_instances: bool = False,
    image_ids: Iterable[int] | None = None,
    report: LoadReport | None = None,
    lazy: bool = False,
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
    image_ids
        Only these images, in this order (default: every image in
        ``images``, in file order).
    report
        Collect problems (bad annotations, annotations of unknown images or
        categories, images with no annotations) here instead of raising; bad
        annotations are left out, images with no annotations are kept with
        no segments.
    lazy
        Return an iterator that builds one image's segments at a time.

    Raises
    ------
    ValueError
        Naming the file and the annotation or image id: RLE whose counts do
        not sum to H*W or whose size differs from the image, polygons outside
        the image, empty masks, unknown category ids, annotations of images
        not in ``images``, images with no annotations.

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
    data, source = _load_json(annotations)
    label = source or "COCO annotations"
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{label}: missing or malformed {key!r} list")
    categories: dict[Any, str] = {}
    for c in data["categories"]:
        if c.get("id") in categories:
            raise ValueError(f"{label}: category id {c.get('id')!r} appears twice")
        categories[c.get("id")] = str(c.get("name"))
    category_order = {cid: i for i, cid in enumerate(categories)}
    images: dict[Any, tuple[int, int]] = {}
    for im in data["images"]:
        try:
            images[im["id"]] = (int(im["height"]), int(im["width"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{label}: image entry {im!r} needs integer 'id', 'height' and 'width'") from None
    by_image: dict[Any, list[Mapping[str, Any]]] = {i: [] for i in images}
    for ann in data["annotations"]:
        aid, iid, cid = ann.get("id"), ann.get("image_id"), ann.get("category_id")
        if iid not in images:
            _problem(report, source, f"annotation {aid}",
                     f"{label}: annotation {aid!r} refers to image id {iid!r}, which is not in 'images'")
            continue
        if cid not in categories:
            _problem(report, source, f"annotation {aid}",
                     f"{label}: annotation {aid!r} (image {iid!r}) has unknown category id {cid!r}")
            continue
        by_image[iid].append(ann)
    if image_ids is None:
        order = list(images)
    else:
        order = list(image_ids)
        for iid in order:
            if iid not in images:
                raise ValueError(f"{label}: image id {iid!r} is not in 'images'")

    def build(iid: Any) -> Segments:
        h, w = images[iid]
        anns = by_image[iid]
        if not anns:
            _problem(report, source, f"image {iid}", f"{label}: image {iid!r} has no annotations")
        groups: dict[str, list[np.ndarray]] = {}
        keys: dict[str, tuple[int, int]] = {}
        seen: dict[str, int] = {}
        for ann in anns:
            aid, cid = ann.get("id"), ann["category_id"]
            where = f"{label}: annotation {aid!r} (image {iid!r})"
            try:
                counts = _coco_counts(ann.get("segmentation"), h, w, where)
            except ValueError as exc:
                _problem(report, source, f"annotation {aid}", str(exc))
                continue
            name = categories[cid]
            if keep_instances:
                seen[name] = seen.get(name, 0) + 1
                name = f"{name}#{seen[name]}"
            groups.setdefault(name, []).append(counts)
            keys.setdefault(name, (category_order[cid], len(keys)))
        names = sorted(groups, key=lambda n: keys[n])
        return _rle_segments(names, [groups[n] for n in names], h, w, iid, source)

    generator = (build(iid) for iid in order)
    return generator if lazy else list(generator)


# --------------------------------------------------------------------------
# Open-vocabulary masks and segmenters
# --------------------------------------------------------------------------


def _mask_items(output: Any, where: str) -> list[tuple[str, Any, float | None]]:
    if isinstance(output, Mapping):
        return [(n, m, None) for n, m in output.items()]
    if isinstance(output, (str, bytes)) or not isinstance(output, Iterable):
        raise TypeError(f"{where}: expected a mapping {{name: mask}} or a list of (name, mask, score), got {type(output).__name__}")
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
    where = _where(image_id, None)
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
            _problem(report, None, str(image_id),
                     f"{where}: mask {name!r} has shape {v.shape_str(m.shape)}, expected {expected}")
            continue
        if size is None:
            size = (int(m.shape[0]), int(m.shape[1]))
        m = m.astype(bool) if m.dtype != np.bool_ else m
        if not m.any():
            _problem(report, None, str(image_id), f"{where}: mask {name!r} is empty")
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
    ids = _ids(image_ids, len(output_list)) or list(range(len(output_list)))
    if sizes is not None and len(sizes) != len(output_list):
        raise ValueError(f"sizes has {len(sizes)} entries but there are {len(output_list)} images")
    renames = rename_map(synonyms=synonyms, groups=groups)
    return [
        _masks_one(out, i, tuple(sizes[j]) if sizes is not None else None, score_threshold, renames, report)  # type: ignore[arg-type]
        for j, (out, i) in enumerate(zip(output_list, ids))
    ]


@runtime_checkable
class Segmenter(Protocol):
    """Anything that maps a batch of images to per-image segmenter output.

    ``segmenter(images)`` returns one entry per image: a mapping
    ``{name: mask}`` or a list of ``(name, mask, score)``. A plain function
    qualifies; so does a wrapper around a SAM- or DINO-style model.
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
        raise TypeError(f"segmenter must be callable (images -> list of {{name: mask}}), got {type(segmenter).__name__}")
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
            return [_masks_one(o, i, _image_size(img), score_threshold, renames, report)
                    for o, i, img in zip(outputs, ids, batch)]

        for image in images:
            batch.append(image)
            if len(batch) == size:
                yield from run(batch, start)
                start += len(batch)
                batch = []
        if batch:
            yield from run(batch, start)

    return generate() if lazy else list(generate())


# --------------------------------------------------------------------------
# The .npz bundle
# --------------------------------------------------------------------------

_FORMAT = "sat_fast.segments/1"
_KIND_CODES = {"labels": 0, "masks": 1, "rle": 2}


def save_segments(path: str | os.PathLike, segments: Sequence[Segments]) -> None:
    """Write segments to an ``.npz`` bundle (no pickles) for fast reloading.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> segs = from_label_map(np.array([[0, 1]]), ["a", "b"])
    >>> path = os.path.join(tempfile.mkdtemp(), "s.npz")
    >>> save_segments(path, segs)
    >>> load_segments(path)[0].names
    ('a', 'b')
    """
    segs = list(segments)
    for i, s in enumerate(segs):
        if not isinstance(s, Segments):
            raise TypeError(f"segments[{i}] must be Segments, got {type(s).__name__}")
    vocab = merge_vocabularies(segs)
    index = {n: i for i, n in enumerate(vocab)}
    arrays: dict[str, np.ndarray] = {
        "format": np.array(_FORMAT),
        "vocabulary": np.array(vocab, dtype=str) if vocab else np.zeros(0, "<U1"),
        "kinds": np.array([_KIND_CODES[s.kind] for s in segs], np.int8),
        "heights": np.array([s.height for s in segs], np.int64),
        "widths": np.array([s.width for s in segs], np.int64),
        "name_offsets": np.concatenate([[0], np.cumsum([len(s) for s in segs])]).astype(np.int64),
        "name_ids": np.array([index[n] for s in segs for n in s.names], np.int64),
    }
    ids = [s.image_id for s in segs]
    if all(isinstance(i, str) for i in ids) and ids:
        arrays["image_ids"] = np.array(ids, dtype=str)
    elif all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        arrays["image_ids"] = np.array(ids, np.int64)
    elif any(i is not None for i in ids):
        raise TypeError("image ids must be all integers, all strings, or all None to be saved")
    labels = [s.labels for s in segs if s.labels is not None]
    if labels:
        dtype = max((lab.dtype for lab in labels), key=lambda d: (d.itemsize, d.kind == "i"))
        arrays["labels"] = np.concatenate([lab.ravel().astype(dtype) for lab in labels])
    words = [s.words.ravel() for s in segs if s.words is not None]
    if words:
        arrays["words"] = np.concatenate(words)
    rle = [s for s in segs if s.counts is not None]
    if rle:
        arrays["counts"] = np.concatenate([s.counts for s in rle])  # type: ignore[misc]
        arrays["instance_lengths"] = np.concatenate([np.diff(s.instance_offsets) for s in rle]).astype(np.int64)  # type: ignore[arg-type]
        arrays["segment_sizes"] = np.concatenate([np.diff(s.segment_instances) for s in rle]).astype(np.int64)  # type: ignore[arg-type]
    # Through a file object, so numpy does not append ".npz" to another name.
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _npz_header(zf: zipfile.ZipFile, key: str, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one member, read from its header without loading the data."""
    try:
        info = zf.getinfo(key + ".npy")
    except KeyError:
        raise ValueError(f"{where}: missing array {key!r}") from None
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as exc:
            raise ValueError(f"{where}: array {key!r} has a bad header: {exc}") from None
        header = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{where}: array {key!r} holds Python objects; bundles never contain pickles")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes != info.file_size - header:
        raise ValueError(f"{where}: array {key!r} declares {nbytes} bytes but the file holds {info.file_size - header}")
    return tuple(int(s) for s in shape), dtype


def load_segments(path: str | os.PathLike) -> list[Segments]:
    """Read segments written by :func:`save_segments`.

    Never unpickles (``allow_pickle=False``); every array's declared size is
    checked against the file and against the others before it is read.

    Raises
    ------
    ValueError
        Not a bundle, inconsistent sizes, truncated or corrupt file.
    """
    where = os.fspath(path)
    try:
        zf = zipfile.ZipFile(where)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read segments bundle {where}: {exc}") from None
    with zf:
        members = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        headers = {k: _npz_header(zf, k, where) for k in members}
        for key in ("format", "vocabulary", "kinds", "heights", "widths", "name_offsets", "name_ids"):
            if key not in headers:
                raise ValueError(f"{where}: not a sat_fast segments bundle (missing {key!r})")
    try:
        npz = np.load(where, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read segments bundle {where}: {exc}") from None
    with npz:
        if str(npz["format"]) != _FORMAT:
            raise ValueError(f"{where}: unsupported bundle format {str(npz['format'])!r}, expected {_FORMAT!r}")
        b = headers["kinds"][0][0] if headers["kinds"][0] else 0
        for key in ("heights", "widths"):
            if headers[key][0] != (b,):
                raise ValueError(f"{where}: {key} has shape {headers[key][0]}, expected ({b},)")
        if headers["name_offsets"][0] != (b + 1,):
            raise ValueError(f"{where}: name_offsets has shape {headers['name_offsets'][0]}, expected ({b + 1},)")
        kinds = npz["kinds"]
        heights, widths = npz["heights"], npz["widths"]
        if (heights < 0).any() or (widths < 0).any() or not np.isin(kinds, [0, 1, 2]).all():
            raise ValueError(f"{where}: negative image sizes or unknown segment kinds")
        name_offsets = _index_array(npz["name_offsets"], f"{where}: name_offsets")
        k = np.diff(name_offsets)
        if headers["name_ids"][0] != (int(name_offsets[-1]),):
            raise ValueError(f"{where}: name_ids has shape {headers['name_ids'][0]}, expected ({name_offsets[-1]},)")
        pixels = heights * widths
        need = {
            "labels": int(pixels[kinds == 0].sum()),
            "words": int((k * ((pixels + 63) // 64))[kinds == 1].sum()),
            "segment_sizes": int(k[kinds == 2].sum()),
        }
        for key, n in need.items():
            shape = headers[key][0] if key in headers else (0,)
            if shape != (n,):
                raise ValueError(f"{where}: {key} has shape {shape}, expected ({n},)")
        vocab = [str(x) for x in npz["vocabulary"]]
        name_ids = npz["name_ids"]
        if name_ids.size and (name_ids.min() < 0 or name_ids.max() >= len(vocab)):
            raise ValueError(f"{where}: name_ids point outside the vocabulary")
        ids: list[ImageId] = [None] * b
        if "image_ids" in headers:
            if headers["image_ids"][0] != (b,):
                raise ValueError(f"{where}: image_ids has shape {headers['image_ids'][0]}, expected ({b},)")
            ids = [x.item() for x in npz["image_ids"]]
        labels = npz["labels"] if need["labels"] else None
        words = npz["words"] if need["words"] else None
        seg_sizes = npz["segment_sizes"] if need["segment_sizes"] else np.zeros(0, np.int64)
        n_inst = int(seg_sizes.sum())
        if seg_sizes.size and seg_sizes.min() < 0:
            raise ValueError(f"{where}: negative segment sizes")
        if n_inst:
            if headers.get("instance_lengths", ((0,),))[0] != (n_inst,):
                raise ValueError(f"{where}: instance_lengths does not match segment_sizes")
            inst_len = npz["instance_lengths"]
            if inst_len.min() < 0 or ("counts" not in headers) or headers["counts"][0] != (int(inst_len.sum()),):
                raise ValueError(f"{where}: counts do not match instance_lengths")
            counts = npz["counts"]
        else:
            inst_len, counts = np.zeros(0, np.int64), np.zeros(0, np.uint32)
        out: list[Segments] = []
        lp = wp = sp = ip = cp = 0
        for i in range(b):
            names = tuple(vocab[j] for j in name_ids[name_offsets[i] : name_offsets[i + 1]])
            h, w, kind = int(heights[i]), int(widths[i]), int(kinds[i])
            if kind == 0:
                lab = labels[lp : lp + h * w].reshape(h, w)  # type: ignore[index]
                lp += h * w
                if lab.size and int(lab.max()) > len(names):
                    raise ValueError(f"{where}: {_where(ids[i], None)} has label values above {len(names)}")
                out.append(Segments(names, h, w, labels=lab, image_id=ids[i], source=where))
            elif kind == 1:
                n = len(names) * -(-h * w // 64)
                out.append(Segments(names, h, w, words=words[wp : wp + n].reshape(len(names), -1),  # type: ignore[index]
                                    image_id=ids[i], source=where))
                wp += n
            else:
                sizes = seg_sizes[sp : sp + len(names)]
                sp += len(names)
                lens = inst_len[ip : ip + int(sizes.sum())]
                ip += int(sizes.sum())
                c = counts[cp : cp + int(lens.sum())]
                cp += int(lens.sum())
                out.append(Segments(names, h, w, counts=c,
                                    instance_offsets=np.concatenate([[0], np.cumsum(lens)]),
                                    segment_instances=np.concatenate([[0], np.cumsum(sizes)]),
                                    image_id=ids[i], source=where))
        return out


# --------------------------------------------------------------------------
# Reduction and tables
# --------------------------------------------------------------------------


def _saliency_list(saliency: Any, segs: Sequence[Segments]) -> list[np.ndarray]:
    if isinstance(saliency, (list, tuple)):
        maps = [v.as_numpy(s, "saliency") for s in saliency]
    else:
        arr = v.as_numpy(saliency, "saliency")
        if arr.ndim != 3:
            raise ValueError(
                f"saliency must be (B, H, W) or a sequence of (H, W) maps, got {v.shape_str(arr.shape)}"
            )
        maps = list(arr)
    if len(maps) != len(segs):
        raise ValueError(f"there are {len(maps)} saliency maps but {len(segs)} Segments")
    out = []
    dtype = np.float64 if any(m.dtype == np.float64 for m in maps) else np.float32
    for m, s in zip(maps, segs):
        if not isinstance(s, Segments):
            raise TypeError(f"segments must be Segments values, got {type(s).__name__}")
        if m.ndim != 2 or m.shape != s.shape:
            raise ValueError(
                f"saliency of {s._where()} has shape {v.shape_str(m.shape)} but its segments have shape "
                f"{v.shape_str(s.shape)}; resize one to the other first (see sat_fast.transforms)"
            )
        if m.dtype.kind != "f" and m.dtype.name != "bfloat16":
            raise TypeError(f"saliency must be a floating-point array, got dtype {m.dtype}")
        out.append(np.ascontiguousarray(m, dtype=dtype))
    return out


_SEGMENT_KEYS = ("count", "sum", "pos_sum", "neg_sum", "abs_sum", "sq_sum", "min", "max")
_IMAGE_KEYS = ("total_sum", "total_abs", "pixels", "nonfinite")


def _derived(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """SegmentStats keys from the RLE kernel's raw pos/neg sums."""
    pos, neg = raw["pos_sum"], raw["neg_sum"]
    return {"count": raw["count"], "sum": pos + neg, "pos_sum": pos, "neg_sum": neg, "abs_sum": pos - neg,
            "sq_sum": raw["sq_sum"], "min": raw["min"], "max": raw["max"]}


def _reduce(maps: list[np.ndarray], segs: Sequence[Segments], threads: int | None, nonfinite: str,
            unassigned: bool) -> SegmentStats:
    """Padded (B, Kmax) statistics: label maps and packed masks go through the
    public dense path image by image; all RLE images share one kernel call."""
    b = len(segs)
    kmax = max([len(s) for s in segs] + [1])
    data = {key: np.zeros((b, kmax), np.int64 if key == "count" else np.float64) for key in _SEGMENT_KEYS}
    extra = {key: np.zeros(b, np.int64 if key == "count" else np.float64) for key in _SEGMENT_KEYS}
    for d in (data, extra):
        d["min"][:] = np.nan
        d["max"][:] = np.nan
    data.update({key: np.zeros(b, np.int64 if key in ("pixels", "nonfinite") else np.float64) for key in _IMAGE_KEYS})

    def put(i: int, k: int, seg_rows: Mapping[str, np.ndarray], extra_row: Mapping[str, Any] | None) -> None:
        for key in _SEGMENT_KEYS:
            data[key][i, :k] = seg_rows[key]
            if extra_row is not None:
                extra[key][i] = extra_row[key]

    rle = [i for i, s in enumerate(segs) if s.kind == "rle"]
    for i, s in enumerate(segs):
        if s.kind == "rle":
            continue
        k = len(s)
        x = maps[i][None]
        try:
            if s.labels is not None:
                st = segment_stats(x, s.labels[None], num_segments=max(k, 1), ignore_index=k, threads=threads,
                                   nonfinite=nonfinite, unassigned=unassigned)  # type: ignore[arg-type]
            else:
                words = s.words if k else np.zeros((1, s.words.shape[1]), np.uint64)  # type: ignore[union-attr]
                st = segment_stats(x, masks=PackedMasks(words[None], s.height, s.width), threads=threads,
                                   nonfinite=nonfinite, unassigned=unassigned)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"{s._where()}: {exc}") from None
        put(i, k, {key: st[key][0, :k] for key in _SEGMENT_KEYS},
            {key: st.unassigned[key][0] for key in _SEGMENT_KEYS} if unassigned else None)  # type: ignore[index]
        for key in _IMAGE_KEYS:
            data[key][i] = st[key][0]
    if rle:
        parts = [segs[i] for i in rle]
        seg_counts = np.array([len(s) for s in parts], np.int64)
        n_inst = np.array([len(s.instance_offsets) - 1 for s in parts], np.int64)  # type: ignore[arg-type]
        n_counts = np.array([len(s.counts) for s in parts], np.int64)  # type: ignore[arg-type]
        inst_base = np.concatenate([[0], np.cumsum(n_inst)])
        count_base = np.concatenate([[0], np.cumsum(n_counts)])
        counts = np.concatenate([s.counts for s in parts])  # type: ignore[misc]
        instance_offsets = np.concatenate(
            [[0]] + [s.instance_offsets[1:] + count_base[j] for j, s in enumerate(parts)]  # type: ignore[index]
        ).astype(np.int64)
        segment_instances = np.concatenate(
            [[0]] + [s.segment_instances[1:] + inst_base[j] for j, s in enumerate(parts)]  # type: ignore[index]
        ).astype(np.int64)
        image_segments = np.concatenate([[0], np.cumsum(seg_counts)]).astype(np.int64)
        try:
            out = _core.reduce_rle([maps[i] for i in rle], image_segments, segment_instances, instance_offsets,
                                   np.ascontiguousarray(counts, np.uint32), unassigned=unassigned,
                                   skip_nonfinite=nonfinite == "skip", threads=threads)
        except ValueError as exc:
            # The kernel numbers images within this call; name them as the user does.
            msg = str(exc)
            found = re.search(r"image (\d+)", msg)
            if found and int(found.group(1)) < len(rle):
                where = segs[rle[int(found.group(1))]]._where()
                msg = msg[: found.start()] + where + msg[found.end() :]
            raise ValueError(msg) from None
        rows = _derived({key: out[key][0] for key in ("count", "pos_sum", "neg_sum", "sq_sum", "min", "max")})
        total_segments = int(image_segments[-1])
        for j, i in enumerate(rle):
            a, z = int(image_segments[j]), int(image_segments[j + 1])
            put(i, z - a, {key: r[a:z] for key, r in rows.items()},
                {key: r[total_segments + j] for key, r in rows.items()} if unassigned else None)
            data["total_sum"][i] = out["total_pos"][j] + out["total_neg"][j]
            data["total_abs"][i] = out["total_pos"][j] - out["total_neg"][j]
            data["nonfinite"][i] = out["nonfinite"][j]
            data["pixels"][i] = segs[i].height * segs[i].width
    return SegmentStats(data, extra if unassigned else None)


def segments_stats(
    saliency: Any,
    segments: Sequence[Segments],
    *,
    threads: int | None = None,
    nonfinite: Literal["raise", "skip"] = "raise",
    unassigned: bool = False,
) -> SegmentStats:
    """Statistics of per-image :class:`Segments` (differing sizes and vocabularies).

    Returns a :class:`sat_fast.SegmentStats` of shape (B, Kmax), Kmax the
    most segments of any image: column ``j`` of image ``i`` is
    ``segments[i].names[j]``; later columns are empty (count 0). RLE
    segments are reduced from their runs without decoding (see
    ``csrc/reduce_rle.hpp``): counts, min and max equal decoding first
    exactly, sums up to float64 rounding.

    Parameters
    ----------
    saliency
        (B, H, W) array when all images share a size, or a sequence of
        (H, W) maps; each must match its Segments' shape.
    segments
        One :class:`Segments` per image.
    threads, nonfinite, unassigned
        As in :func:`sat_fast.segment_stats`.

    Examples
    --------
    >>> import numpy as np
    >>> segs = from_label_map([np.array([[0, 1]]), np.array([[1], [1]])], ["a", "b"])
    >>> st = segments_stats([np.array([[1.0, 2.0]]), np.array([[3.0], [4.0]])], segs)
    >>> st["sum"].tolist()
    [[1.0, 2.0], [7.0, 0.0]]
    """
    segs = list(segments)
    maps = _saliency_list(saliency, segs)
    v.nonfinite_mode(nonfinite)
    return _reduce(maps, segs, v.num_threads(threads), nonfinite, bool(unassigned))


#: Padded (images x segments) entries reduced at once by segment_table: bounds
#: memory when a few images have many more segments than the rest.
_CHUNK_ENTRIES = 1 << 20


def _chunks(segs: Sequence[Segments]) -> Iterator[tuple[int, int]]:
    """[start, end) ranges of images whose padded statistics stay under _CHUNK_ENTRIES."""
    start, widest = 0, 1
    for i, s in enumerate(segs):
        k = max(1, len(s))
        if i > start and (i + 1 - start) * max(widest, k) > _CHUNK_ENTRIES:
            yield start, i
            start, widest = i, k
        else:
            widest = max(widest, k)
    yield start, len(segs)


def segment_table_from_segments(
    saliency: Any,
    segments: Sequence[Segments],
    *,
    image_ids: Any = None,
    targets: Any = None,
    threads: int | None = None,
    nonfinite: Literal["raise", "skip"] = "raise",
    unassigned: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> pl.DataFrame:
    """The SAT of per-image Segments; ``sat_fast.segment_table(saliency, segments=...)`` calls this.

    Images are reduced in chunks whose padded (images x most segments)
    statistics stay small, so one image with thousands of segments does not
    make every image pay for them.
    """
    segs = list(segments)
    if unassigned is not None and not isinstance(unassigned, str):
        raise TypeError(f"unassigned must be a segment name (str) or None, got {type(unassigned).__name__}")
    maps = _saliency_list(saliency, segs)
    v.nonfinite_mode(nonfinite)
    nthreads = v.num_threads(threads)
    b = len(segs)
    vocab = merge_vocabularies(segs)
    if unassigned is not None:
        if unassigned in vocab:
            raise ValueError(f"unassigned name {unassigned!r} is already a segment name")
        vocab.append(unassigned)
    if image_ids is None:
        ids = [s.image_id for s in segs]
        image_ids = ids if ids and all(i is not None for i in ids) else list(range(b))
    id_list = image_ids.tolist() if isinstance(image_ids, np.ndarray) else list(image_ids)
    _image_id_series(id_list, b)  # all ids checked (kind, count, uniqueness) before any chunk
    target_arr = None if targets is None else v.per_image(targets, b, "targets")
    meta = {name: v.per_image(values, b, f"metadata[{name!r}]") for name, values in (metadata or {}).items()}
    index = {n: i for i, n in enumerate(vocab)}
    categories = pl.Series("segment", vocab, dtype=pl.Categorical)
    frames = []
    for i0, i1 in _chunks(segs):
        part = segs[i0:i1]
        stats = _reduce(maps[i0:i1], part, nthreads, nonfinite, unassigned is not None)
        kmax = stats.shape[1]
        # stats_table computes every column from the padded (B, Kmax)
        # statistics; only the names differ per image, so they go in after.
        placeholders = [f"\x00{j}" for j in range(kmax)]
        table = stats_table(
            stats,
            names=placeholders,
            image_ids=id_list[i0:i1],
            targets=None if target_arr is None else target_arr[i0:i1],
            metadata={name: values[i0:i1] for name, values in meta.items()},
            unassigned=unassigned,
        )
        name_index = np.full((i1 - i0, kmax + (unassigned is not None)), -1, np.int64)
        for i, s in enumerate(part):
            name_index[i, : len(s)] = [index[n] for n in s.names]
        count = stats["count"]
        if unassigned is not None:
            name_index[:, kmax] = index[unassigned]
            count = np.concatenate([count, stats.unassigned["count"][:, None]], axis=1)  # type: ignore[index]
        bi, ki = np.nonzero(count > 0)
        frames.append(table.with_columns(categories.gather(name_index[bi, ki])))
    return frames[0] if len(frames) == 1 else pl.concat(frames)
