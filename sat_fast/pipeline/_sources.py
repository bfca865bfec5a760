"""Where a run's inputs come from: image folders, mask sources, precomputed saliency maps.

Every source lists its items once, cheaply, in a fixed order (the canonical
order of the run's rows), and loads any item later, on a worker thread. A
problem with one item (unreadable image, missing or unreadable mask, a mask
of another size than its image) is a :class:`BadItemError` naming the item.
"""

from __future__ import annotations

import csv
import hashlib
import json
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sat_fast.segments import DEFAULT_MAX_PIXELS, Segments, SegmentsBundle, from_coco, from_png, open_segments
from sat_fast.segments._vocab import names_table

__all__ = [
    "IMAGE_SUFFIXES",
    "BadItemError",
    "Item",
    "MapShards",
    "MaskSource",
    "image_folder_items",
    "input_files",
    "items_digest",
    "mask_source",
    "read_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class BadItemError(ValueError):
    """One input item cannot be used: ``item`` names it, ``reason`` says why."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(f"{item}: {reason}")
        self.item, self.reason = item, reason


@dataclass(slots=True)
class Item:
    """One input in source order: ``position`` is its index in the run's canonical order.

    ``path`` is the image file (image sources) and ``where`` the (file, row) of a precomputed map. Treated as
    immutable (``dataclasses.replace`` makes a changed copy); not frozen, because a run lists one per input and
    a frozen dataclass is four times slower to make (0.64 against 0.16 us: 0.5 s per million inputs).
    """

    position: int
    image_id: str
    label: int
    path: str | None = None
    where: tuple[int, int] | None = None


def items_digest(items: Sequence[Item]) -> str:
    """A hash of the items' ids and labels in order: resuming over other inputs is refused."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.image_id}\x00{item.label}\n".encode())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- image folders


def image_folder_items(root: Path, labels_csv: Path | None, class_names: Sequence[str]) -> list[Item]:
    """Items for every image under ``root``; image ids are paths relative to root without suffix (sorted)."""
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    by_id: dict[str, Path] = {}
    for path in files:
        image_id = path.relative_to(root).with_suffix("").as_posix()
        if image_id in by_id:
            raise ValueError(
                f"images {by_id[image_id].relative_to(root)} and {path.relative_to(root)} under {root} have the "
                f"same image id {image_id!r}; keep one of them"
            )
        by_id[image_id] = path
    out = []
    rows = _read_labels(labels_csv) if labels_csv is not None else None
    for position, (image_id, path) in enumerate(by_id.items()):
        if rows is not None:
            if image_id not in rows:
                raise ValueError(f"image {image_id!r} has no row in {labels_csv}")
            label = rows[image_id]
            index = int(label) if label.isdigit() else (class_names.index(label) if label in class_names else -1)
            if not 0 <= index < len(class_names):
                raise ValueError(f"label {label!r} of image {image_id!r} is not one of the model's classes")
        else:
            rel = path.relative_to(root)
            if len(rel.parts) < 2:
                raise ValueError(f"image {rel} is not in a class sub-folder (or pass labels, --labels)")
            folder = rel.parts[0]
            if folder not in class_names:
                raise ValueError(f"sub-folder {folder!r} is not one of the model's classes: {', '.join(class_names)}")
            index = list(class_names).index(folder)
        out.append(Item(position, image_id, index, path=str(path)))
    return out


def _read_labels(path: Path) -> dict[str, str]:
    """image_id -> label from a labels CSV (columns image_id,label; a UTF-8 byte-order mark is fine)."""
    if not path.is_file():
        raise ValueError(f"labels file {path} does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in ("image_id", "label") if c not in header]
            if missing:
                raise ValueError(f"labels file {path}: no column {' or '.join(map(repr, missing))} in the header row")
            id_col, label_col = header.index("image_id"), header.index("label")
            rows: dict[str, str] = {}
            first_row: dict[str, int] = {}
            for n, row in enumerate(reader, start=1):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) <= max(id_col, label_col):
                    raise ValueError(f"labels file {path}: row {n} has {len(row)} values, expected image_id,label")
                image_id, label = row[id_col].strip(), row[label_col].strip()
                if image_id in first_row:
                    raise ValueError(
                        f"labels file {path}: image {image_id!r} has more than one row (rows {first_row[image_id]} "
                        f"and {n})"
                    )
                first_row[image_id] = n
                rows[image_id] = label
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"labels file {path} is not a UTF-8 CSV file: {exc}") from None
    return rows


def read_image(item: Item) -> np.ndarray:
    """The item's image as float32 RGB in [0, 1], (H, W, 3)."""
    from PIL import Image

    try:
        with Image.open(str(item.path)) as img:
            return np.asarray(img.convert("RGB"), np.float32) / 255.0
    except Exception as exc:
        raise BadItemError(f"image {item.image_id!r} ({item.path})", f"cannot be read: {exc}") from None


# --------------------------------------------------------------------------- masks


class MaskSource:
    """Segments by image id from a PNG folder, a COCO JSON file or an ``.npz`` bundle, loaded per item.

    PNG label maps are read when their image is; COCO annotations are parsed once and indexed by image, each
    image's segments built when it is needed; an ``.npz`` bundle is opened once (its index) and each image's
    masks are read from it when needed (:func:`sat_fast.segments.open_segments`).
    """

    def __init__(
        self,
        masks: Path,
        *,
        names: Any = None,
        ignore_index: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.path, self.ignore_index, self.max_pixels = masks, ignore_index, max_pixels
        self.names_file = str(names) if isinstance(names, (str, Path)) else None
        if not masks.exists():
            raise ValueError(f"masks {masks} do not exist")
        self.kind: str
        self._bundle: SegmentsBundle | None = None
        self._bundle_index: dict[str, int] = {}
        self._coco_ids: dict[str, Any] = {}
        if masks.is_dir():
            if names is None:
                raise ValueError("the names of a folder of PNG label maps are required (names=, --names)")
            if isinstance(names, (str, Path)) and not Path(names).is_file():
                raise ValueError(f"names file {names} does not exist")
            self.kind, self._table = "png", names_table(names)
        elif masks.suffix == ".npz":
            self.kind = "npz"
            self._bundle = open_segments(masks, max_pixels=max_pixels)
            self._bundle_index = {str(image_id): i for i, image_id in enumerate(self._bundle.image_ids)}
        elif masks.suffix == ".json":
            self.kind = "coco"
            self._index_coco(masks)
        else:
            raise ValueError(f"masks must be a folder of PNGs, a COCO .json or an .npz bundle, got {masks}")

    def describe(self) -> dict[str, Any]:
        """What identifies the masks in the run's settings."""
        names = None if self.names_file is None else str(Path(self.names_file).resolve())
        return {"masks": str(self.path.resolve()), "kind": self.kind, "names": names, "ignore_index": self.ignore_index}

    def has(self, image_id: str) -> bool:
        if self.kind == "png":
            return (self.path / f"{image_id}.png").is_file()
        if self.kind == "npz":
            return image_id in self._bundle_index
        return image_id in self._coco_ids

    def load(self, image_id: str) -> Segments:
        """The image's segments; a missing or unreadable mask is a :class:`BadItemError`."""
        if not self.has(image_id):
            raise BadItemError(f"image {image_id!r}", f"has no mask in {self.path}")
        try:
            if self.kind == "png":
                path = self.path / f"{image_id}.png"
                seg = from_png(
                    [path],
                    self._table,
                    image_ids=[image_id],
                    ignore_index=self.ignore_index,
                    max_pixels=self.max_pixels,
                )[0]
            elif self.kind == "npz":
                assert self._bundle is not None
                seg = self._bundle[self._bundle_index[image_id]]
            else:
                seg = self._coco_segments(image_id)
        except BadItemError:
            raise
        except ValueError as exc:
            raise BadItemError(f"mask of image {image_id!r}", str(exc)) from None
        return seg.replace(image_id=image_id)

    # COCO: one parse; each image's segments are built from its own annotations only.
    def _index_coco(self, path: Path) -> None:
        try:
            with path.open(encoding="utf-8") as fh:
                data = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"COCO annotations {path} are not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError(f"COCO annotations {path} are nested too deeply to be COCO JSON") from None
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(images, list):
            raise ValueError(f"COCO annotations {path}: missing or malformed 'images' list")
        self._coco_images: dict[Any, Any] = {}
        for n, img in enumerate(images):
            name = img.get("file_name") if isinstance(img, dict) else None
            iid = img.get("id") if isinstance(img, dict) else None
            if not isinstance(name, str) or not Path(name).name:
                raise ValueError(
                    f"COCO annotations {path}: image {iid!r} ('images' entry {n}) has no 'file_name', which sat-fast "
                    "run needs to match annotations to image files"
                )
            key = Path(name).with_suffix("").as_posix()
            if key in self._coco_ids:
                raise ValueError(
                    f"COCO annotations {path}: images {self._coco_ids[key]!r} and {iid!r} both have file_name "
                    f"{key!r} (any suffix)"
                )
            self._coco_ids[key] = iid
            self._coco_images[iid] = img
        self._coco_annotations: dict[Any, list[Any]] = defaultdict(list)
        for ann in data.get("annotations") or []:
            owner = ann.get("image_id") if isinstance(ann, dict) else None
            self._coco_annotations[owner if owner in self._coco_images else None].append(ann)
        self._coco_categories = data.get("categories")
        # Annotations of unknown images are an error of the file, found at once as the whole-file loader does.
        if self._coco_annotations.get(None):
            from_coco({"images": [], "categories": self._coco_categories, "annotations": self._coco_annotations[None]})

    def _coco_segments(self, image_id: str) -> Segments:
        iid = self._coco_ids[image_id]
        one = {
            "images": [self._coco_images[iid]],
            "categories": self._coco_categories,
            "annotations": self._coco_annotations.get(iid, []),
        }
        try:
            return from_coco(one, max_pixels=self.max_pixels)[0]
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None


def mask_source(masks: Any, **options: Any) -> MaskSource:
    return masks if isinstance(masks, MaskSource) else MaskSource(Path(masks), **options)


# --------------------------------------------------------------------------- precomputed saliency


class MapShards:
    """Precomputed saliency maps, in files of three kinds.

    ``.npz`` files (``maps`` (N, H, W), ``image_id`` (N,), ``target`` and/or ``label`` (N,)), ``.npy`` maps
    with a ``<stem>.image_id.npy`` (and ``<stem>.target.npy``) beside them, or a Parquet file with columns
    ``image_id``, ``saliency`` (one (H, W) map per row, nested lists or an Array) and ``target`` and/or
    ``label``.

    ``path`` is a file, a folder (its ``*.npz``, ``*.npy`` maps and ``*.parquet`` files, by name) or a glob.
    """

    def __init__(self, path: Any) -> None:
        text = str(path)
        files = input_files(path, _is_maps_file)
        if not files:
            raise ValueError(f"no saliency map files (.npz, .npy, .parquet) at {text}")
        for f in files:
            if not f.is_file():
                raise ValueError(f"saliency map file {f} does not exist")
        self.files, self.source = files, text
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"saliency_maps": [str(f.resolve()) for f in self.files]}

    def items(self) -> list[Item]:
        out: list[Item] = []
        for n, f in enumerate(self.files):
            columns = self._columns(n, ("image_id", "target", "label"))
            if "image_id" not in columns:
                raise ValueError(f"saliency map file {f} has no 'image_id' array (or column): is it a maps file?")
            ids = columns["image_id"]
            explained = columns.get("target", columns.get("label"))
            if explained is None:
                raise ValueError(f"saliency map file {f} needs a 'target' (the class each map explains) or 'label'")
            if len(explained) != len(ids):
                raise ValueError(f"saliency map file {f}: {len(ids)} image ids but {len(explained)} targets")
            first = len(out)
            out.extend(
                Item(first + row, str(image_id), int(explained[row]), where=(n, row))
                for row, image_id in enumerate(ids.tolist())
            )
        return out

    def extra_columns(self) -> dict[str, bool]:
        """Which optional per-map arrays the first file holds (they become columns)."""
        present = self._columns(0, ("target", "label"))
        return {"target": "target" in present, "label": "label" in present}

    def read(self, item: Item) -> tuple[np.ndarray, dict[str, int]]:
        """The item's (H, W) map and its ``target``/``label`` values."""
        assert item.where is not None
        n, row = item.where
        columns = self._file(n)
        maps = columns["maps"]
        values: dict[str, int] = {k: int(columns[k][row]) for k in ("target", "label") if k in columns}
        return np.asarray(maps[row], np.float32), values

    def _columns(self, n: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        f = self.files[n]
        if f.suffix == ".parquet":
            import polars as pl

            schema = pl.read_parquet_schema(f)
            frame = pl.read_parquet(f, columns=[c for c in names if c in schema])
            return {c: frame[c].to_numpy() for c in frame.columns}
        if f.suffix == ".npy":
            return {c: np.load(_sibling(f, c), allow_pickle=False) for c in names if _sibling(f, c).is_file()}
        with np.load(f, allow_pickle=False) as z:
            return {c: z[c] for c in names if c in z.files}

    def _file(self, n: int) -> dict[str, np.ndarray]:
        # The last few files stay open: the items of a shard come from one file or two.
        with self._lock:
            if n in self._cache:
                self._cache.move_to_end(n)
                return self._cache[n]
        f = self.files[n]
        columns = self._columns(n, ("image_id", "target", "label"))
        try:
            if f.suffix == ".npy":
                # A plain ndarray over the memory map: every row read is then a view of this one array, so a
                # batch of consecutive rows is a view too (stack_rows), not a copy.
                columns["maps"] = np.asarray(np.load(f, mmap_mode="r", allow_pickle=False))
            elif f.suffix == ".npz":
                with np.load(f, allow_pickle=False) as z:
                    columns["maps"] = z["maps"]
            else:
                columns["maps"] = _parquet_maps(f)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"saliency map file {f}: cannot read its maps: {exc}") from None
        if columns["maps"].ndim != 3 or len(columns["maps"]) != len(columns["image_id"]):
            raise ValueError(
                f"saliency map file {f}: maps must be (N, H, W) with N = {len(columns['image_id'])} image ids, "
                f"got shape {columns['maps'].shape}"
            )
        with self._lock:
            self._cache[n] = columns
            while len(self._cache) > 2:
                self._cache.popitem(last=False)
        return columns


def input_files(path: Any, accept: Any) -> list[Path]:
    """The files ``path`` names, in name order: a file, a folder's files that ``accept`` takes, or a glob."""
    text = str(path)
    if any(ch in text for ch in "*?["):
        import glob

        files = sorted(Path(p) for p in glob.glob(text, recursive=True))
    elif Path(text).is_dir():
        files = sorted(p for p in Path(text).iterdir() if accept(p))
    else:
        files = [Path(text)]
    return [f for f in files if accept(f)]


def _is_maps_file(path: Path) -> bool:
    name = path.name
    return path.suffix in (".npz", ".parquet") or (path.suffix == ".npy" and name.count(".") == 1)


def _sibling(maps_file: Path, column: str) -> Path:
    return maps_file.with_name(f"{maps_file.stem}.{column}.npy")


def _parquet_maps(path: Path) -> np.ndarray:
    import polars as pl

    column = pl.read_parquet(path, columns=["saliency"])["saliency"]
    if isinstance(column.dtype, pl.Array):
        return np.asarray(column.to_numpy(), np.float32)
    return np.asarray(column.to_list(), np.float32)
