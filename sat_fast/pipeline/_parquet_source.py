"""Images, class labels and masks from a Parquet dataset (as the common dataset hubs store them).

Columns: ``image`` (encoded image bytes, or a struct with a ``bytes`` field as Hugging Face ``datasets``
writes it), ``label`` (class index or name), optionally ``image_id`` (default ``<file stem>/<row>``) and a
mask column of PNG label-map bytes (``mask_column=``, named by ``names``). Rows are read a window at a time,
never the whole file.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sat_fast.pipeline._sources import BadItemError, Item, MaskSource, input_files
from sat_fast.segments import DEFAULT_MAX_PIXELS, Segments, from_label_map
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
        self.files, self.class_names = files, list(class_names)
        self._cache: OrderedDict[tuple[int, int, str], pl.Series] = OrderedDict()
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
        if isinstance(value, dict):  # {"bytes": ..., "path": ...}
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
    """PNG label maps in a column of the same Parquet dataset, named by ``names``."""

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
        if names is None:
            raise ValueError("masks in a Parquet column are label maps: their names are required (names=, --names)")
        self.images, self.column, self.kind = images, column, "parquet"
        self.ignore_index, self.max_pixels = ignore_index, max_pixels
        self.names_file = str(names) if isinstance(names, (str, Path)) else None
        self._table = names_table(names)
        self._items = {item.image_id: item for item in items}

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
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if self.max_pixels is not None and width * height > self.max_pixels:
                    raise ValueError(f"declares {height}x{width} pixels, more than max_pixels={self.max_pixels}")
                label_map = np.asarray(im)
            return from_label_map(label_map, self._table, image_ids=[image_id], ignore_index=self.ignore_index)[0]
        except Exception as exc:
            raise BadItemError(f"mask of image {image_id!r} (column {self.column!r})", str(exc)) from None
