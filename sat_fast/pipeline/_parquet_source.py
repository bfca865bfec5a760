"""Images, class labels and masks from a Parquet dataset (as the common dataset hubs store them).

Columns: ``image`` (encoded image bytes, or a struct with a ``bytes`` field as Hugging Face ``datasets``
writes it), ``label`` (class index or name), optionally ``image_id`` (default ``<file stem>/<row>``) and a
mask column (``mask_column=``) holding, per row, either PNG label-map bytes (named by ``names``) or COCO RLE:
a struct ``{size: [height, width], counts: compressed string or list of run lengths, category: name or
integer}``, or a list of them (one per instance; instances of one category merge into one segment, as
:func:`sat_fast.segments.from_coco` merges them). Rows are read a window at a time, never the whole file.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sat_fast.pipeline._sources import BadItemError, Item, MaskSource, input_files
from sat_fast.segments import DEFAULT_MAX_PIXELS, Segments, from_label_map
from sat_fast.segments._coco import segmentation_counts
from sat_fast.segments._types import check_pixels, rle_segments
from sat_fast.segments._vocab import names_table

__all__ = ["ParquetImages", "ParquetMasks"]

_WINDOW = 256  # rows read at once from a file


class ParquetImages:
    """A Parquet file (or a folder or glob of them, in name order) of images and class labels."""

    def __init__(self, path: Any, class_names: Sequence[str]) -> None:
        text = str(path)
        files = input_files(path, lambda p: p.suffix == ".parquet")
        if not files or not all(f.is_file() for f in files):
            raise ValueError(f"no Parquet image dataset at {text}")
        # absolute: the source also travels (pickled) to Ray workers, which may run in other folders
        self.files, self.class_names = [f.resolve() for f in files], list(class_names)
        self._cache: OrderedDict[tuple[int, int, str], pl.Series] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its lock and its window cache (each process reads its own windows)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_cache")}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = OrderedDict()
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"parquet_images": [str(f.resolve()) for f in self.files]}

    def items(self) -> list[Item]:
        out: list[Item] = []
        for n, f in enumerate(self.files):
            schema = pl.read_parquet_schema(f)
            for column in ("image", "label"):
                if column not in schema:
                    raise ValueError(f"Parquet image dataset {f} has no {column!r} column")
            columns = ["label"] + (["image_id"] if "image_id" in schema else [])
            frame = pl.read_parquet(f, columns=columns)
            ids = frame["image_id"].cast(pl.String).to_list() if "image_id" in frame.columns else None
            for row, label in enumerate(frame["label"].to_list()):
                image_id = ids[row] if ids is not None else f"{f.stem}/{row}"
                out.append(Item(len(out), str(image_id), self._class_index(label, image_id, f), where=(n, row)))
        return out

    def _class_index(self, label: Any, image_id: str, f: Path) -> int:
        if isinstance(label, str) and label in self.class_names:
            return self.class_names.index(label)
        if isinstance(label, int) and 0 <= label < len(self.class_names):
            return label
        raise ValueError(f"label {label!r} of image {image_id!r} in {f} is not one of the model's classes")

    def cell(self, item: Item, column: str) -> Any:
        """One row's value of ``column`` (read with its window of rows, kept for the next items)."""
        assert item.where is not None
        n, row = item.where
        key = (n, row // _WINDOW, column)
        with self._lock:
            values = self._cache.get(key)
            if values is not None:
                self._cache.move_to_end(key)
        if values is None:
            values = pl.scan_parquet(self.files[n]).select(column).slice(key[1] * _WINDOW, _WINDOW).collect()[column]
            with self._lock:
                self._cache[key] = values
                while len(self._cache) > 8:
                    self._cache.popitem(last=False)
        value = values[row % _WINDOW]
        if isinstance(value, pl.Series):  # a list cell (e.g. several RLE structs)
            return value.to_list()
        if isinstance(value, dict) and "bytes" in value:  # {"bytes": ..., "path": ...}
            value = value.get("bytes")
        return value

    def read(self, item: Item) -> np.ndarray:
        """The item's image as float32 RGB in [0, 1]."""
        from PIL import Image

        data = self.cell(item, "image")
        try:
            with Image.open(io.BytesIO(data)) as img:
                return np.asarray(img.convert("RGB"), np.float32) / 255.0
        except Exception as exc:
            where = self.files[item.where[0]] if item.where is not None else "?"
            raise BadItemError(f"image {item.image_id!r} ({where})", f"cannot be read: {exc}") from None


class ParquetMasks(MaskSource):
    """Masks in a column of the same Parquet dataset: PNG label maps named by ``names``, or COCO RLE structs."""

    def __init__(
        self,
        images: ParquetImages,
        items: Sequence[Item],
        column: str,
        *,
        names: Any,
        ignore_index: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.images, self.column, self.kind = images, column, "parquet"
        self.ignore_index, self.max_pixels = ignore_index, max_pixels
        self.names_file = str(names) if isinstance(names, (str, Path)) else None
        # PNG label maps and integer RLE categories need the names; RLE with category names does not.
        self._names = names_table(names) if names is not None else None
        self._items = {item.image_id: item for item in items}
        for f in images.files:
            if column not in pl.read_parquet_schema(f):
                raise ValueError(f"Parquet image dataset {f} has no mask column {column!r}")
        if self._names is None and items and isinstance(images.cell(items[0], column), (bytes, bytearray)):
            raise ValueError("PNG label maps in a Parquet column need their names (names=, --names)")

    def describe(self) -> dict[str, Any]:
        return {"mask_column": self.column, "names": self.names_file, "ignore_index": self.ignore_index}

    def has(self, image_id: str) -> bool:
        return image_id in self._items

    def load(self, image_id: str) -> Segments:
        from PIL import Image

        item = self._items[image_id]
        data = self.images.cell(item, self.column)
        if data is None:
            raise BadItemError(f"image {image_id!r}", f"has no mask (null in column {self.column!r})")
        if isinstance(data, (Mapping, list)):
            return self._rle(data, item)
        if not isinstance(data, (bytes, bytearray)):
            raise BadItemError(
                f"mask of image {image_id!r} (column {self.column!r})",
                f"must be PNG bytes or a COCO RLE struct (or a list of them), got {type(data).__name__}",
            )
        if self._names is None:
            raise ValueError("PNG label maps in a Parquet column need their names (names=, --names)")
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if self.max_pixels is not None and width * height > self.max_pixels:
                    raise ValueError(f"declares {height}x{width} pixels, more than max_pixels={self.max_pixels}")
                label_map = np.asarray(im)
            return from_label_map(label_map, self._names, image_ids=[image_id], ignore_index=self.ignore_index)[0]
        except Exception as exc:
            raise BadItemError(f"mask of image {image_id!r} (column {self.column!r})", str(exc)) from None

    def _rle(self, data: Any, item: Item) -> Segments:
        """One row's COCO RLE struct (or list of them) as RLE segments, reduced later without decoding."""
        image_id = item.image_id
        where = f"mask of image {image_id!r} (column {self.column!r})"
        entries = [data] if isinstance(data, Mapping) else list(data)
        if not entries:
            raise BadItemError(where, "is an empty list of RLE masks")
        size: tuple[int, int] | None = None
        groups: dict[str, list[np.ndarray]] = {}
        try:
            for j, entry in enumerate(entries):
                at = f"{where}, RLE {j}"
                if not isinstance(entry, Mapping):
                    raise ValueError(f"{at}: expected a struct with size, counts and category")
                declared = entry.get("size")
                if (
                    not isinstance(declared, Sequence)
                    or isinstance(declared, (str, bytes))
                    or len(declared) != 2
                    or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in declared)
                ):
                    raise ValueError(f"{at}: size must be [height, width] (two non-negative integers), got {declared}")
                h, w = int(declared[0]), int(declared[1])
                if size is None:
                    check_pixels(h, w, self.max_pixels, at)
                    size = (h, w)
                elif (h, w) != size:
                    raise ValueError(f"{at}: size [{h}, {w}] differs from the first RLE's {list(size)}")
                name = self._category(entry.get("category"), at)
                groups.setdefault(name, []).append(segmentation_counts(dict(entry), h, w, at))
        except ValueError as exc:
            raise BadItemError(where, str(exc).removeprefix(f"{where}, ")) from None
        assert size is not None
        return rle_segments(list(groups), list(groups.values()), size[0], size[1], image_id, None)

    def _category(self, category: Any, where: str) -> str:
        if isinstance(category, str) and category:
            return category
        if isinstance(category, int) and not isinstance(category, bool):
            if self._names is None:
                raise ValueError(f"{where}: category {category} is a number; pass the names table (names=, --names)")
            if category not in self._names:
                raise ValueError(f"{where}: category {category} is not in the names table")
            return self._names[category]
        raise ValueError(f"{where}: category must be a name or an integer of the names table, got {category!r}")
