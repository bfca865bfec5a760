"""The sat_fast ``.npz`` bundle of Segments: written and read without pickles."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from sat_fast._deprecation import warn_deprecated
from sat_fast.segments._types import (
    DEFAULT_MAX_PIXELS,
    ImageId,
    Segments,
    check_pixels,
    max_pixels_value,
    offsets_array,
    where_text,
)
from sat_fast.segments._vocab import merge_vocabularies

# --------------------------------------------------------------------------
# The .npz bundle
# --------------------------------------------------------------------------

_FORMAT = "sat_fast.segments/1"
# member -> (number of dimensions, allowed numpy dtype kinds, what it holds), checked from the headers
_MEMBERS = {
    "format": (0, "U", "text"),
    "vocabulary": (1, "U", "text"),
    "image_ids": (1, "iuU", "integers or text"),
    "kinds": (1, "iu", "integers"),
    "heights": (1, "iu", "integers"),
    "widths": (1, "iu", "integers"),
    "name_offsets": (1, "iu", "integers"),
    "name_ids": (1, "iu", "integers"),
    "labels": (1, "iu", "integers"),
    "words": (1, "u", "integers"),
    "counts": (1, "iuf", "numbers"),
    "instance_lengths": (1, "iu", "integers"),
    "segment_sizes": (1, "iu", "integers"),
}
_KIND_CODES = {"labels": 0, "masks": 1, "rle": 2}


def save_segments(segments: Sequence[Segments], path: str | os.PathLike[str]) -> None:
    """Write segments to an ``.npz`` bundle (no pickles) for fast reloading.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sat_fast.segments import from_label_map, load_segments, save_segments
    >>> segs = from_label_map(np.array([[0, 1]]), ["a", "b"])
    >>> path = os.path.join(tempfile.mkdtemp(), "s.npz")
    >>> save_segments(segs, path)
    >>> load_segments(path)[0].names
    ('a', 'b')
    """
    given: tuple[Any, Any] = (segments, path)  # version 1's order (path, segments) is outside the annotations
    if isinstance(given[0], (str, os.PathLike)) and not isinstance(given[1], (str, os.PathLike)):
        warn_deprecated(
            "save_segments(path, segments) is deprecated since sat_fast 0.2.0; pass the object first: "
            "save_segments(segments, path)"
        )
        given = (given[1], given[0])
    segs = list(given[0])
    path = given[1]
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
    labels = [s.label_map for s in segs if s.label_map is not None]
    if labels:
        dtype = max((lab.dtype for lab in labels), key=lambda d: (d.itemsize, d.kind == "i"))
        arrays["labels"] = np.concatenate([lab.ravel().astype(dtype) for lab in labels])
    words = [s.words.ravel() for s in segs if s.words is not None]
    if words:
        arrays["words"] = np.concatenate(words)
    rle = [s.rle_arrays() for s in segs if s.kind == "rle"]
    if rle:
        arrays["counts"] = np.concatenate([counts for counts, _, _ in rle])
        arrays["instance_lengths"] = np.concatenate([np.diff(offsets) for _, offsets, _ in rle]).astype(np.int64)
        arrays["segment_sizes"] = np.concatenate([np.diff(members) for _, _, members in rle]).astype(np.int64)
    # Through a file object, so numpy does not append ".npz" to another name.
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle's bool


def _npz_header(zf: zipfile.ZipFile, key: str, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and header size of one member, read from its header without loading the data."""
    try:
        info = zf.getinfo(key + ".npy")
    except KeyError:
        raise ValueError(f"{where}: missing array {key!r}") from None
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as exc:
            raise ValueError(f"{where}: array {key!r} has a bad header: {exc}") from None
        header = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{where}: array {key!r} holds Python objects; bundles never contain pickles")
    if fortran and len(shape) > 1:
        raise ValueError(f"{where}: array {key!r} is in Fortran order; bundles are written in C order")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes != info.file_size - header:
        raise ValueError(f"{where}: array {key!r} declares {nbytes} bytes but the file holds {info.file_size - header}")
    return tuple(int(s) for s in shape), dtype, header


def _mapped(path: str, zf: zipfile.ZipFile, key: str, shape: tuple[int, ...], dtype: np.dtype, header: int) -> Any:
    """A stored (uncompressed) member as a read-only memory map, or None where it cannot be mapped."""
    info = zf.getinfo(key + ".npy")
    if info.compress_type != zipfile.ZIP_STORED or not shape or 0 in shape:
        return None
    with open(path, "rb") as f:  # the local file header: 30 bytes, then the name and the extra field
        f.seek(info.header_offset)
        local = f.read(30)
        name_length, extra_length = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        name = f.read(name_length)
        size = os.fstat(f.fileno()).st_size
    offset = info.header_offset + 30 + name_length + extra_length + header
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    # The local header must agree with the directory, and the data lie inside the file: else it is read as
    # zipfile reads it (which checks its CRC), not mapped from a place the directory does not vouch for.
    if local[:4] != b"PK\x03\x04" or name != info.filename.encode() or offset + nbytes > size:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


class SegmentsBundle(Sequence[Segments]):
    """The segments of an ``.npz`` bundle, each image's built when it is asked for.

    The bundle is checked as :func:`load_segments` checks it when it is opened, reading its index (sizes,
    names, offsets: a few dozen bytes per image); the label maps, bit planes and run lengths stay in the file,
    memory-mapped, and each image's are read when its segments are built. A label value out of range is found
    then, naming the image. Pickles as its path, so a pipeline's workers open their own. ``mapped=False`` reads
    them into memory instead (what :func:`load_segments` does).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sat_fast.segments import from_label_map, open_segments, save_segments
    >>> path = os.path.join(tempfile.mkdtemp(), "s.npz")
    >>> save_segments(from_label_map(np.array([[[0, 1]], [[1, 1]]]), ["a", "b"], image_ids=["x", "y"]), path)
    >>> bundle = open_segments(path)
    >>> len(bundle), bundle.image_ids, bundle[1].names
    (2, ['x', 'y'], ('b',))
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS, mapped: bool = True
    ) -> None:
        self.path, self.max_pixels, self.mapped = os.fspath(path), max_pixels, mapped
        self._read(mapped=mapped)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.path, self.max_pixels, self.mapped))

    def __len__(self) -> int:
        return len(self._kinds)

    @property
    def image_ids(self) -> list[ImageId]:
        """The images' ids in bundle order (None where the bundle has none)."""
        return list(self._ids)

    @overload
    def __getitem__(self, index: int) -> Segments: ...
    @overload
    def __getitem__(self, index: slice) -> list[Segments]: ...
    def __getitem__(self, index: int | slice) -> Segments | list[Segments]:
        if isinstance(index, slice):
            return [self._segments(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"image {index} of a bundle of {n}")
        return self._segments(i)

    def _read(self, *, mapped: bool) -> None:
        """Check the bundle and read its index; ``mapped``: memory-map the per-pixel and per-run arrays."""
        limit = max_pixels_value(self.max_pixels)
        where = self.path
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
            for key, (shape, dtype, _) in headers.items():
                expected = _MEMBERS.get(key)
                if expected is None:
                    continue
                ndim, kinds_allowed, what = expected
                if len(shape) != ndim or dtype.kind not in kinds_allowed:
                    raise ValueError(
                        f"{where}: array {key!r} is {dtype} of shape {shape}, expected a {ndim}-D array of {what}"
                    )
            label_dtype = headers["labels"][1] if "labels" in headers else None
            if label_dtype is not None and label_dtype not in (np.uint8, np.uint16, np.int32):
                raise ValueError(f"{where}: array 'labels' is {label_dtype}, expected uint8, uint16 or int32")
            if "words" in headers and headers["words"][1] != np.uint64:
                raise ValueError(f"{where}: array 'words' is {headers['words'][1]}, expected uint64")
            big = {
                key: _mapped(where, zf, key, *headers[key]) if mapped and key in headers else None
                for key in ("labels", "words", "counts")
            }
        try:
            npz = np.load(where, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read segments bundle {where}: {exc}") from None
        with npz:
            self._check_and_index(npz, headers, big, limit)

    def _check_and_index(self, npz: Any, headers: dict[str, Any], big: dict[str, Any], limit: int | None) -> None:
        where = self.path
        if str(npz["format"]) != _FORMAT:
            raise ValueError(f"{where}: unsupported bundle format {str(npz['format'])!r}, expected {_FORMAT!r}")
        b = headers["kinds"][0][0]
        for key in ("heights", "widths"):
            if headers[key][0] != (b,):
                raise ValueError(f"{where}: {key} has shape {headers[key][0]}, expected ({b},)")
        if headers["name_offsets"][0] != (b + 1,):
            raise ValueError(f"{where}: name_offsets has shape {headers['name_offsets'][0]}, expected ({b + 1},)")
        kinds = npz["kinds"]
        heights, widths = npz["heights"], npz["widths"]
        if (heights < 0).any() or (widths < 0).any() or not np.isin(kinds, [0, 1, 2]).all():
            raise ValueError(f"{where}: negative image sizes or unknown segment kinds")
        ids: list[ImageId] = [None] * b
        if "image_ids" in headers:
            if headers["image_ids"][0] != (b,):
                raise ValueError(f"{where}: image_ids has shape {headers['image_ids'][0]}, expected ({b},)")
            ids = [x.item() for x in npz["image_ids"]]
        # Python ints: declared sizes may be absurd (2**32 x 2**32) and must not wrap around in int64.
        image_sizes = list(zip(heights.tolist(), widths.tolist(), strict=True))
        for i, (h, w) in enumerate(image_sizes):
            check_pixels(h, w, limit, f"{where}: {where_text(ids[i], None)} (entry {i})")
        name_offsets = offsets_array(npz["name_offsets"], f"{where}: name_offsets")
        k = np.diff(name_offsets).tolist()
        if headers["name_ids"][0] != (int(name_offsets[-1]),):
            raise ValueError(f"{where}: name_ids has shape {headers['name_ids'][0]}, expected ({name_offsets[-1]},)")
        kind_list = kinds.tolist()
        label_sizes = [h * w if kind == 0 else 0 for (h, w), kind in zip(image_sizes, kind_list, strict=True)]
        word_sizes = [
            n * -(-h * w // 64) if kind == 1 else 0 for (h, w), n, kind in zip(image_sizes, k, kind_list, strict=True)
        ]
        rle_names = [n if kind == 2 else 0 for n, kind in zip(k, kind_list, strict=True)]
        need = {"labels": sum(label_sizes), "words": sum(word_sizes), "segment_sizes": sum(rle_names)}
        for key, n in need.items():
            shape = headers[key][0] if key in headers else (0,)
            if shape != (n,):
                raise ValueError(f"{where}: {key} has shape {shape}, expected ({n},)")
        vocab = [str(x) for x in npz["vocabulary"]]
        name_ids = npz["name_ids"]
        if name_ids.size and (name_ids.min() < 0 or name_ids.max() >= len(vocab)):
            raise ValueError(f"{where}: name_ids point outside the vocabulary")

        def member(key: str, empty: np.dtype) -> np.ndarray:
            if not need.get(key, 1):
                return np.zeros(0, empty)
            mapped = big.get(key)
            return npz[key] if mapped is None else mapped  # type: ignore[no-any-return]

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
            counts = member("counts", np.dtype(np.uint32))
        else:
            inst_len, counts = np.zeros(0, np.int64), np.zeros(0, np.uint32)
        self._ids, self._kinds, self._sizes = ids, kind_list, image_sizes
        self._vocab, self._name_ids, self._name_offsets = vocab, name_ids, name_offsets
        self._labels = member("labels", np.dtype(np.uint8))
        self._words = member("words", np.dtype(np.uint64))
        self._seg_sizes, self._inst_len, self._counts = seg_sizes, inst_len, counts
        # Where each image's data starts in the per-pixel and per-run arrays (an image of another kind adds 0).
        self._label_at = np.concatenate([[0], np.cumsum(label_sizes, dtype=np.int64)])
        self._word_at = np.concatenate([[0], np.cumsum(word_sizes, dtype=np.int64)])
        self._segment_at = np.concatenate([[0], np.cumsum(rle_names, dtype=np.int64)])
        instances_before = np.concatenate([[0], np.cumsum(seg_sizes, dtype=np.int64)])
        self._instance_at = instances_before[self._segment_at]
        self._count_at = np.concatenate([[0], np.cumsum(inst_len, dtype=np.int64)])[self._instance_at]

    def _segments(self, i: int) -> Segments:
        where, image_id = self.path, self._ids[i]
        names = tuple(self._vocab[j] for j in self._name_ids[self._name_offsets[i] : self._name_offsets[i + 1]])
        (h, w), kind = self._sizes[i], self._kinds[i]
        if kind == 0:
            start = int(self._label_at[i])
            lab = self._labels[start : start + h * w].reshape(h, w)
            if lab.size and int(lab.max()) > len(names):
                raise ValueError(f"{where}: {where_text(image_id, None)} has label values above {len(names)}")
            return Segments(names, h, w, label_map=lab, image_id=image_id, source=where)
        if kind == 1:
            start, stop = int(self._word_at[i]), int(self._word_at[i + 1])
            words = self._words[start:stop].reshape(len(names), -1)
            return Segments(names, h, w, words=words, image_id=image_id, source=where)
        sizes = self._seg_sizes[int(self._segment_at[i]) : int(self._segment_at[i + 1])]
        lens = self._inst_len[int(self._instance_at[i]) : int(self._instance_at[i + 1])]
        counts = self._counts[int(self._count_at[i]) : int(self._count_at[i + 1])]
        return Segments(
            names,
            h,
            w,
            counts=counts,
            instance_offsets=np.concatenate([[0], np.cumsum(lens)]),
            segment_instances=np.concatenate([[0], np.cumsum(sizes)]),
            image_id=image_id,
            source=where,
        )


def _reopen(path: str, max_pixels: int | None, mapped: bool) -> SegmentsBundle:
    return SegmentsBundle(path, max_pixels=max_pixels, mapped=mapped)


def open_segments(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> SegmentsBundle:
    """Open an ``.npz`` bundle of segments without reading its masks: a sequence built image by image.

    For bundles too large to hold at once (a million images' label maps); :func:`load_segments` reads every
    image's into memory. The checks are those of :func:`load_segments`, a label value out of range is found
    when its image is built. See :class:`SegmentsBundle`.
    """
    return SegmentsBundle(path, max_pixels=max_pixels)


def load_segments(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[Segments]:
    """Read segments written by :func:`save_segments`.

    Never unpickles (``allow_pickle=False``); every array's declared size is
    checked against the file and against the others before it is read.
    :func:`open_segments` opens a bundle without reading its masks.

    Parameters
    ----------
    path
        The bundle.
    max_pixels
        Largest image accepted, in pixels (height x width as the bundle
        declares them, checked before any label map or mask is read); default
        ``DEFAULT_MAX_PIXELS`` = 2**28, None for no limit.

    Raises
    ------
    ValueError
        Not a bundle, inconsistent sizes, images larger than ``max_pixels``,
        truncated or corrupt file.
    """
    bundle = SegmentsBundle(path, max_pixels=max_pixels, mapped=False)  # masks in memory, as version 1 gave them
    return [bundle[i] for i in range(len(bundle))]
