"""``sat-fast run``: a model factory, an image folder and masks in, SATs, aggregate, flags and report out."""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    pass


from sat_fast._cli_common import UserError, write_parquet, write_report
from sat_fast._cli_parser import IMAGE_SUFFIXES

__all__ = ["ModelBundle", "load_factory", "run_command"]


@dataclass(frozen=True)
class ModelBundle:
    """What a ``--model`` factory returns (a tuple or mapping of these fields works too).

    Attributes
    ----------
    apply
        JAX-traceable callable: images (B, H, W, C) float32 -> logits (B, N).
    class_names
        Class names in logit order; image folders are matched against them.
    transform
        Optional :mod:`sat_fast.transforms` step (e.g. ``Compose([ResizeShorter(256),
        CenterCrop(224)])``) applied alike to images and masks.
    preprocess
        Optional callable on the batch after the transform (e.g. normalisation).
    """

    apply: Callable[[Any], Any]
    class_names: tuple[str, ...]
    transform: Any = None
    preprocess: Callable[[Any], Any] | None = None


# --------------------------------------------------------------------- parser


def _device(spec: str) -> Any:
    """The JAX device named by ``--device``: a platform (``cpu``, ``gpu``, ``tpu``), optionally ``:index``."""
    import jax

    platform, _, index_text = spec.partition(":")
    if not index_text.isdigit() and index_text:
        raise UserError(f"--device must look like 'cpu', 'gpu' or 'gpu:1', got {spec!r}")
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        available = sorted({d.platform for d in jax.devices()})
        raise UserError(
            f"--device {spec}: no {platform!r} device is available to JAX here (available: {', '.join(available)})"
        ) from None
    index = int(index_text or 0)
    if index >= len(devices):
        raise UserError(f"--device {spec}: there are {len(devices)} {platform} device(s), numbered from 0")
    return devices[index]


def load_factory(spec: str) -> Callable[..., Any]:
    """Import ``pkg.module:function`` or ``path/to/file.py:function``."""
    if ":" not in spec:
        raise UserError(f"--model must look like 'pkg.module:function' or 'file.py:function', got {spec!r}")
    where, _, attr = spec.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise UserError(f"model file {where} does not exist")
            # The factory's file may import its neighbours (a model definition next to it).
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(where)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot import the model factory {spec!r}: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"{where} has no callable {attr!r}")
    return cast("Callable[..., Any]", factory)


def _bundle(value: Any) -> ModelBundle:
    if isinstance(value, ModelBundle):
        return value
    if isinstance(value, dict):
        value = ModelBundle(**value)
    elif isinstance(value, tuple) and 2 <= len(value) <= 4:
        value = ModelBundle(*value)
    else:
        raise UserError(
            "the model factory must return (apply, class_names[, transform[, preprocess]]) or a ModelBundle"
        )
    if not callable(value.apply):
        raise UserError("the model factory's apply is not callable")
    names = tuple(str(n) for n in value.class_names)
    if not names:
        raise UserError("the model factory returned no class names")
    return ModelBundle(value.apply, names, value.transform, value.preprocess)


def _image_index(root: Path, labels_csv: Path | None, class_names: Sequence[str]) -> list[tuple[str, Path, int]]:
    """(image_id, path, class index) for every image; image ids are paths relative to root without suffix."""
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    by_id: dict[str, Path] = {}
    for path in files:
        image_id = str(path.relative_to(root).with_suffix(""))
        if image_id in by_id:
            raise UserError(
                f"images {by_id[image_id].relative_to(root)} and {path.relative_to(root)} under {root} have the "
                f"same image id {image_id!r}; keep one of them"
            )
        by_id[image_id] = path
    out = []
    if labels_csv is not None:
        rows = _read_labels(labels_csv)
        for path in files:
            image_id = str(path.relative_to(root).with_suffix(""))
            if image_id not in rows:
                raise UserError(f"image {image_id!r} has no row in {labels_csv}")
            label = rows[image_id]
            index = int(label) if label.isdigit() else (class_names.index(label) if label in class_names else -1)
            if not 0 <= index < len(class_names):
                raise UserError(f"label {label!r} of image {image_id!r} is not one of the model's classes")
            out.append((image_id, path, index))
        return out
    for path in files:
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            raise UserError(f"image {rel} is not in a class sub-folder (or pass --labels)")
        folder = rel.parts[0]
        if folder not in class_names:
            raise UserError(f"sub-folder {folder!r} is not one of the model's classes: {', '.join(class_names)}")
        out.append((str(rel.with_suffix("")), path, class_names.index(folder)))
    return out


def _read_labels(path: Path) -> dict[str, str]:
    """image_id -> label from the --labels CSV (columns image_id,label; a UTF-8 byte-order mark is fine)."""
    if not path.is_file():
        raise UserError(f"labels file {path} does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in ("image_id", "label") if c not in header]
            if missing:
                raise UserError(f"labels file {path}: no column {' or '.join(map(repr, missing))} in the header row")
            id_col, label_col = header.index("image_id"), header.index("label")
            rows: dict[str, str] = {}
            first_row: dict[str, int] = {}
            for n, row in enumerate(reader, start=1):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) <= max(id_col, label_col):
                    raise UserError(f"labels file {path}: row {n} has {len(row)} values, expected image_id,label")
                image_id, label = row[id_col].strip(), row[label_col].strip()
                if image_id in first_row:
                    raise UserError(
                        f"labels file {path}: image {image_id!r} has more than one row (rows {first_row[image_id]} "
                        f"and {n})"
                    )
                first_row[image_id] = n
                rows[image_id] = label
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"labels file {path} is not a UTF-8 CSV file: {exc}") from None
    return rows


def _load_segments(args: argparse.Namespace, image_ids: list[str]) -> dict[str, Any]:
    """Segments by image id from a PNG folder, a COCO JSON file or an .npz bundle."""
    from sat_fast import segments as sg

    masks: Path = args.masks
    if masks is None:
        raise UserError("--masks is required")
    if not masks.exists():
        raise UserError(f"masks {masks} do not exist")
    if masks.is_dir():
        if args.names is None:
            raise UserError("--names is required with a folder of PNG label maps")
        if not args.names.is_file():
            raise UserError(f"names file {args.names} does not exist")
        found = {i: masks / f"{i}.png" for i in image_ids if (masks / f"{i}.png").is_file()}
        loaded = sg.from_png(
            list(found.values()),
            args.names,
            image_ids=list(found),
            ignore_index=args.ignore_index,
            max_pixels=args.max_pixels,
        )
        return {str(s.image_id): s for s in loaded}
    if masks.suffix == ".npz":
        return {str(s.image_id): s for s in sg.load_segments(masks, max_pixels=args.max_pixels)}
    if masks.suffix == ".json":
        data = _read_json(masks)
        by_file = _coco_file_names(data, masks)
        try:
            loaded = sg.from_coco(data, max_pixels=args.max_pixels)
        except ValueError as exc:  # from_coco was given the parsed dict: put the file name in front
            raise UserError(f"{masks}: {exc}") from None
        by_coco = {s.image_id: s for s in loaded}
        return {i: by_coco[by_file[i]] for i in image_ids if i in by_file and by_file[i] in by_coco}
    raise UserError(f"--masks must be a folder of PNGs, a COCO .json or an .npz bundle, got {masks}")


def _read_core(path: Path) -> Any:
    """--core: {class name or index: [segment names]} or one list of segment names, as JSON."""
    if not path.is_file():
        raise UserError(f"core file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"core file {path} is not valid JSON: {exc}") from None

    def names(value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise UserError(f"core file {path}: {where} must be a list of segment names, got {value!r}")
        return value

    if isinstance(data, list):
        return names(data, "the top level")
    if not isinstance(data, dict):
        raise UserError(f"core file {path} must hold {{class: [segment, ...]}} or a list of segments")
    # JSON keys are strings: digits name a class by index, anything else by name.
    return {(int(k) if k.isdigit() else k): names(v, f"class {k!r}") for k, v in data.items()}


def _read_baseline(path: Path, method: str) -> Any:
    """--baseline FILE.npy: one baseline for every image (IG) or the reference set (expected gradients)."""
    import numpy as np

    if not path.is_file():
        raise UserError(f"baseline file {path} does not exist")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"baseline file {path} is not a .npy array (object arrays are refused): {exc}") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise UserError(f"baseline file {path} must hold a floating-point array, got {kind}")
    if method == "expected_gradients":
        if array.ndim != 4:
            raise UserError(f"baseline file {path}: a reference set is (R, H, W, C), got shape {array.shape}")
    elif array.ndim == 4 and array.shape[0] != 1:
        raise UserError(
            f"baseline file {path}: one baseline for every image, (H, W, C) or broadcastable to it, got shape "
            f"{array.shape}"
        )
    return array


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"COCO annotations {path} are not valid JSON: {exc}") from None
    except RecursionError:
        raise UserError(f"COCO annotations {path} are nested too deeply to be COCO JSON") from None


def _coco_file_names(data: Any, path: Path) -> dict[str, Any]:
    """Image id (file_name without suffix) -> COCO image id; sat-fast run matches images by file_name."""
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise UserError(f"COCO annotations {path}: missing or malformed 'images' list")
    by_file: dict[str, Any] = {}
    for n, img in enumerate(images):
        name = img.get("file_name") if isinstance(img, dict) else None
        iid = img.get("id") if isinstance(img, dict) else None
        if not isinstance(name, str) or not Path(name).name:
            raise UserError(
                f"COCO annotations {path}: image {iid!r} ('images' entry {n}) has no 'file_name', which sat-fast "
                "run needs to match annotations to image files"
            )
        key = str(Path(name).with_suffix(""))
        if key in by_file:
            raise UserError(
                f"COCO annotations {path}: images {by_file[key]!r} and {iid!r} both have file_name {key!r} (any suffix)"
            )
        by_file[key] = iid
    return by_file


def run_command(args: argparse.Namespace) -> int:
    import jax
    import numpy as np
    import polars as pl
    from PIL import Image

    from sat_fast._progress import Progress
    from sat_fast.aggregation import aggregate
    from sat_fast.attribution import METHODS as methods
    from sat_fast.attribution import saliency
    from sat_fast.flags import flag_shortcuts
    from sat_fast.reports import report, summary
    from sat_fast.table import new_run_id, segment_table

    for opt in ("model", "images", "out"):
        if getattr(args, opt) is None:
            raise UserError(f"--{opt} is required")
    if args.method not in methods:
        raise UserError(f"unknown --method {args.method!r}; choose one of {', '.join(methods)}")
    if args.batch_size < 1 or args.steps < 1:
        raise UserError("--batch-size and --steps must be positive")
    if args.method == "gradcam" and args.layer is None:
        raise UserError("--method gradcam needs --layer (the name of a Flax linen layer, e.g. Conv_1)")
    if args.layer is not None and args.method != "gradcam":
        raise UserError(f"--layer is used only by --method gradcam, not by {args.method}")
    if args.baseline is not None and args.method not in ("integrated_gradients", "expected_gradients"):
        raise UserError(f"--baseline is used only by integrated_gradients and expected_gradients, not by {args.method}")
    if args.method == "expected_gradients" and not isinstance(args.baseline, Path):
        raise UserError("--method expected_gradients needs --baseline FILE.npy, a reference set (R, H, W, C)")
    baseline = _read_baseline(args.baseline, args.method) if isinstance(args.baseline, Path) else args.baseline
    if args.device is not None:
        jax.config.update("jax_default_device", _device(args.device))  # type: ignore[no-untyped-call]
    factory = load_factory(args.model)
    bundle = _bundle(factory(args.checkpoint))
    index = _image_index(args.images, args.labels, bundle.class_names)
    segs = _load_segments(args, [i for i, _, _ in index])
    missing = [i for i, _, _ in index if i not in segs]
    if missing and not args.skip_missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserError(
            f"{len(missing)} of {len(index)} images have no masks ({shown}); pass --skip-missing to skip them"
        )
    index = [row for row in index if row[0] in segs]
    if not index:
        raise UserError("no image has masks")
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise UserError(f"--out {out} is not a folder")

    def load(image_id: str, path: Path) -> np.ndarray:
        try:
            img = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        except Exception as exc:
            raise UserError(f"cannot read image {path}: {exc}") from None
        # Before any transform: image and mask are transformed alike, so a size mismatch would pass silently after.
        mask_shape = segs[image_id].shape
        if img.shape[:2] != mask_shape:
            raise UserError(
                f"image {image_id!r} ({path}) is {img.shape[0]}x{img.shape[1]} but its mask is "
                f"{mask_shape[0]}x{mask_shape[1]}; masks must have their image's size"
            )
        return bundle.transform.image(img) if bundle.transform is not None else img

    core = _read_core(args.core) if args.core is not None else None
    run = new_run_id(sorted((k, str(v)) for k, v in vars(args).items()))
    tables = []
    starts = range(0, len(index), args.batch_size)
    bar = Progress(len(starts), "explaining", unit="batch", enabled=not args.no_progress)
    for start in starts:
        rows = index[start : start + args.batch_size]
        images = [load(i, p) for i, p, _ in rows]
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise UserError(
                f"images of one batch differ in size {sorted(shapes)}; give the factory a transform that resizes"
            )
        batch = np.stack(images)
        if bundle.preprocess is not None:
            batch = np.asarray(bundle.preprocess(batch), np.float32)
        batch_segs = [segs[i] for i, _, _ in rows]
        if bundle.transform is not None:
            batch_segs = [bundle.transform.segments(s) for s in batch_segs]
        labels = np.array([c for _, _, c in rows])
        options: dict[str, Any] = {
            "method": args.method,
            "steps": args.steps,
            "samples": args.samples,
            "noise": args.noise,
            "seed": args.seed,
            "output": args.output,
            "layer": args.layer,
            "return_info": True,
        }
        if baseline is not None:
            options["baseline"] = baseline
        # The predictions come from the saliency computation's own forward pass (one forward, not two).
        if args.targets == "all":
            classes = list(range(len(bundle.class_names)))
            maps, info = saliency(bundle.apply, batch, classes=classes, **options)  # (B, T, H, W)
            maps = np.asarray(maps)
            explained = [np.full(len(rows), c) for c in classes]
        else:  # one target per image: its label or the prediction
            explained = [labels] if args.targets == "label" else []
            chosen: Any = labels if args.targets == "label" else "predicted"
            maps, info = saliency(bundle.apply, batch, targets=chosen, **options)
            maps = np.asarray(maps)[:, None]
        if start == 0:  # traced (saliency has run it), not run again: the outputs must name the factory's classes
            spec = jax.ShapeDtypeStruct(batch.shape, batch.dtype)  # type: ignore[no-untyped-call]  # unannotated in jax
            out_shape = jax.eval_shape(bundle.apply, spec).shape
            if len(out_shape) == 2 and out_shape[1] != len(bundle.class_names):
                raise UserError(
                    f"the model returns {out_shape[1]} logits per image but its factory names "
                    f"{len(bundle.class_names)} classes"
                )
        predicted = np.asarray(info["predicted"])
        if args.targets == "predicted":
            explained = [predicted]
        # One row set per explained class: one row per (image, target, segment).
        parts = [
            segment_table(
                maps[:, t],
                segments=batch_segs,
                image_ids=[i for i, _, _ in rows],
                targets=targets,
                metadata={
                    "label": labels,
                    "predicted": predicted,
                    "correct": predicted == labels,
                    "model": args.model,
                    "run": run,
                },
                class_names=bundle.class_names,
            )
            for t, targets in enumerate(explained)
        ]
        tables.append(pl.concat(parts, how="vertical_relaxed"))
        # Append batch by batch: a crash keeps what was done.
        write_parquet(tables[-1], out / f"sat-part-{start // args.batch_size:06d}.parquet")
        bar.update()
    bar.close()
    sat = pl.concat(tables, how="vertical_relaxed")
    write_parquet(sat, out / "sat.parquet")
    for part in out.glob("sat-part-*.parquet"):
        part.unlink()
    agg = aggregate(sat, by=("target",))
    write_parquet(agg, out / "aggregate.parquet")
    flags = flag_shortcuts(
        agg,
        core=core,
        share_min=args.share_min,
        density_min=args.density_min,
        presence_min=args.presence_min,
        excess_min=args.excess_min,
    )
    write_parquet(flags, out / "flags.parquet")
    write_report(report, out / "report.html", agg, flags=flags, title=f"SATs of {args.model}")
    print(summary(agg, flags=flags, format="text"))
    skipped = f", {len(missing)} skipped without masks" if missing else ""
    per_class = f" for each of the {len(bundle.class_names)} classes" if args.targets == "all" else ""
    print(
        f"\nexplained {len(index)} images{per_class}{skipped}; "
        f"wrote {out / 'sat.parquet'}, aggregate.parquet, flags.parquet, report.html"
    )
    return 0
