"""The sat_fast ``.npz`` bundle of Segments: written and read without pickles."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from typing import Any

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


def load_segments(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[Segments]:
    """Read segments written by :func:`save_segments`.

    Never unpickles (``allow_pickle=False``); every array's declared size is
    checked against the file and against the others before it is read.

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
    limit = max_pixels_value(max_pixels)
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
        for key, (shape, dtype) in headers.items():
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
    try:
        npz = np.load(where, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read segments bundle {where}: {exc}") from None
    with npz:
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
        need = {
            "labels": sum(h * w for (h, w), kind in zip(image_sizes, kind_list, strict=True) if kind == 0),
            "words": sum(
                n * -(-h * w // 64) for (h, w), n, kind in zip(image_sizes, k, kind_list, strict=True) if kind == 1
            ),
            "segment_sizes": sum(n for n, kind in zip(k, kind_list, strict=True) if kind == 2),
        }
        for key, n in need.items():
            shape = headers[key][0] if key in headers else (0,)
            if shape != (n,):
                raise ValueError(f"{where}: {key} has shape {shape}, expected ({n},)")
        vocab = [str(x) for x in npz["vocabulary"]]
        name_ids = npz["name_ids"]
        if name_ids.size and (name_ids.min() < 0 or name_ids.max() >= len(vocab)):
            raise ValueError(f"{where}: name_ids point outside the vocabulary")
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
            (h, w), kind = image_sizes[i], kind_list[i]
            if kind == 0:
                lab = labels[lp : lp + h * w].reshape(h, w)  # type: ignore[index]
                lp += h * w
                if lab.size and int(lab.max()) > len(names):
                    raise ValueError(f"{where}: {where_text(ids[i], None)} has label values above {len(names)}")
                out.append(Segments(names, h, w, label_map=lab, image_id=ids[i], source=where))
            elif kind == 1:
                n = len(names) * -(-h * w // 64)
                out.append(
                    Segments(
                        names,
                        h,
                        w,
                        words=words[wp : wp + n].reshape(len(names), -1),  # type: ignore[index]
                        image_id=ids[i],
                        source=where,
                    )
                )
                wp += n
            else:
                sizes = seg_sizes[sp : sp + len(names)]
                sp += len(names)
                lens = inst_len[ip : ip + int(sizes.sum())]
                ip += int(sizes.sum())
                c = counts[cp : cp + int(lens.sum())]
                cp += int(lens.sum())
                out.append(
                    Segments(
                        names,
                        h,
                        w,
                        counts=c,
                        instance_offsets=np.concatenate([[0], np.cumsum(lens)]),
                        segment_instances=np.concatenate([[0], np.cumsum(sizes)]),
                        image_id=ids[i],
                        source=where,
                    )
                )
        return out
