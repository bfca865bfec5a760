"""The ``sat-fast`` command: the demo, and SATs for your own model and data.

User errors (missing files, unknown options, a factory that cannot be
imported, images without masks) end with one line on stderr and exit status
2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import csv
import functools
import glob
import importlib
import importlib.util
import json
import math
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import polars as pl

__all__ = ["ModelBundle", "UserError", "load_factory", "main"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_EXAMPLES = """\
examples:
  sat-fast demo                       # the synthetic shortcut experiment (about 2 minutes)
  sat-fast demo --quick --out demo    # a smaller, faster run
  sat-fast run --model examples/user_model.py:make_model --images data/images \\
      --masks data/masks --names data/names.csv --out results
  sat-fast aggregate results/sat.parquet --by label correct --out by_class.parquet
  sat-fast compare a/sat.parquet b/sat.parquet --by target --out change.parquet
  sat-fast report results/aggregate.parquet --flags results/flags.parquet --out report.html
"""


class UserError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


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


def _max_pixels(text: str) -> int | None:
    """--max-pixels: a positive int, or 'none' for no limit."""
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}")
    return value


def _positive_int(text: str) -> int:
    """--samples: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    """--noise, --density-min: a finite number >= 0."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    """--share-min, --presence-min: a number in [0, 1]."""
    value = _finite(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _signed_fraction(text: str) -> float:
    """--excess-min: a difference of shares, in [-1, 1]."""
    value = _finite(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [-1, 1], got {text!r}")
    return value


_BASELINE_NAMES = ("zeros", "blur", "uniform")


def _baseline(text: str) -> str | float | Path:
    """--baseline: zeros, blur, uniform, a number, or a .npy file (checked when it is loaded)."""
    if text in _BASELINE_NAMES:
        return text
    if text.lower().endswith(".npy"):
        return Path(text)
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {', '.join(_BASELINE_NAMES)}, a number or a .npy file, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


# TOML types each option's value may have; the value is then checked by the option's own type function.
_TOML_TYPES: dict[Callable[[str], Any], tuple[type, ...]] = {
    _positive_int: (int,),
    _non_negative: (int, float),
    _fraction: (int, float),
    _signed_fraction: (int, float),
    _baseline: (str, int, float),
}


def _parser() -> argparse.ArgumentParser:
    from sat_fast.segments import DEFAULT_MAX_PIXELS

    p = argparse.ArgumentParser(
        prog="sat-fast",
        description="Segment Attribution Tables: which named image segments an image classifier relies on.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        exit_on_error=False,
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    p.add_argument(
        "--config",
        type=Path,
        help="TOML file of option values (keys as the long option names with '_' for '-', "
        "top level or in a [run]/[demo]/... table); options on the command line win",
    )
    # Bad option values raise argparse.ArgumentError (main reports them in one line, exit status 2).
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    add = functools.partial(sub.add_parser, exit_on_error=False)

    d = add(
        "demo",
        help="train a shortcut and a control model on synthetic data and show what the SATs reveal",
        description="Generate a synthetic dataset with a watermark shortcut, train a shortcut and a control "
        "model (cached), explain them with integrated gradients and write tables, figures and an HTML report.",
        epilog="example: sat-fast demo --quick --out demo_out",
    )
    d.add_argument("--out", type=Path, default=Path("sat_fast_demo_out"), help="output folder (default: %(default)s)")
    d.add_argument("--quick", action="store_true", help="a smaller dataset and shorter training (used by the tests)")
    d.add_argument("--cache", type=Path, help="where trained parameters are cached (default: OUT/cache)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars (the summary is still printed)")

    r = add(
        "run",
        help="SATs for your own model, images and masks",
        description="Explain every image with the chosen saliency method and write per-image SATs "
        "(sat.parquet), the per-class aggregate, shortcut flags and an HTML report.",
        epilog="example: sat-fast run --model examples/user_model.py:make_model --images imgs --masks masks "
        "--names names.csv --out results",
    )
    r.add_argument(
        "--model",
        required=False,
        help="factory as 'pkg.module:function' or 'path/to/file.py:function'; called as "
        "function(checkpoint) and returning (apply, class_names[, transform])",
    )
    r.add_argument("--checkpoint", type=Path, help="passed to the factory")
    r.add_argument("--images", type=Path, help="image folder: one sub-folder per class, or flat with --labels")
    r.add_argument("--labels", type=Path, help="CSV with columns image_id,label (class name or index)")
    r.add_argument(
        "--masks",
        type=Path,
        help="segments: a folder of PNG label maps named like the images (needs --names), "
        "a COCO JSON file, or a sat_fast .npz bundle",
    )
    r.add_argument("--names", type=Path, help="names table for PNG label maps (CSV value,name or JSON)")
    r.add_argument("--ignore-index", type=int, help="label value of unlabelled pixels in PNG label maps")
    r.add_argument(
        "--max-pixels",
        type=_max_pixels,
        default=DEFAULT_MAX_PIXELS,
        help="largest image (height x width, as its mask file declares it) the mask loaders accept, checked "
        "before anything that size is allocated (default: %(default)s = 2**28; 'none' for no limit)",
    )
    r.add_argument(
        "--method",
        default="integrated_gradients",
        help="saliency method: integrated_gradients, gradient, gradient_x_input, expected_gradients, smoothgrad, "
        "smoothgrad_squared, vargrad or gradcam (default: %(default)s)",
    )
    r.add_argument(
        "--layer",
        help="gradcam: the Flax linen layer whose activations are used (e.g. Conv_1; a wrong name lists them)",
    )
    r.add_argument(
        "--steps", type=int, default=32, help="integrated gradients: integration steps (default: %(default)s)"
    )
    r.add_argument(
        "--baseline",
        type=_baseline,
        help="integrated gradients: zeros (default), a number, blur, uniform, or a .npy file of an array "
        "broadcastable to one image (H, W, C); expected_gradients (required): a .npy reference set (R, H, W, C)",
    )
    r.add_argument(
        "--samples",
        type=_positive_int,
        default=32,
        help="expected_gradients and the smoothgrad family: random points per image (default: %(default)s)",
    )
    r.add_argument(
        "--noise",
        type=_non_negative,
        default=0.15,
        help="smoothgrad family: noise std relative to each image's value range (default: %(default)s)",
    )
    r.add_argument(
        "--targets",
        choices=("label", "predicted", "all"),
        default="label",
        help="the explained class: each image's label, the model's prediction, or all classes (one set of rows "
        "per class) (default: %(default)s)",
    )
    r.add_argument(
        "--output",
        choices=("logit", "probability", "log_probability"),
        default="logit",
        help="the explained output (default: %(default)s)",
    )
    r.add_argument("--batch-size", type=int, default=32, help="images per batch (default: %(default)s)")
    r.add_argument("--seed", type=int, default=0, help="seed of noisy methods (default: %(default)s)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (the summary is still printed)")
    r.add_argument(
        "--device", default=None, help="JAX device: cpu, gpu, tpu, or one of several as gpu:1 (default: JAX's choice)"
    )
    r.add_argument(
        "--core",
        type=Path,
        help="JSON file of each class's core segments, {class name or index: [segment, ...]} or one list for "
        "all classes; other segments with a large share or density are flagged",
    )
    for flag, kind, default, what in (
        ("--share-min", _fraction, 0.3, "with --core: flag a segment whose share of the attribution is at least this"),
        ("--density-min", _non_negative, 2.0, "with --core: flag a segment whose share / area is at least this"),
        ("--presence-min", _fraction, 0.05, "only flag segments present in at least this fraction of a class's images"),
        ("--excess-min", _signed_fraction, 0.1, "without --core: flag a segment whose share in a class exceeds its "
         "mean share in the other classes by this"),
    ):  # fmt: skip
        r.add_argument(flag, type=kind, default=default, help=f"{what} (default: %(default)s)")
    r.add_argument("--skip-missing", action="store_true", help="skip images without masks instead of stopping")
    r.add_argument("--out", type=Path, help="output folder")

    a = add("aggregate", help="aggregate per-image SAT Parquet files per group x segment")
    a.add_argument("tables", nargs="+", type=Path, help="per-image SAT Parquet files (globs allowed)")
    a.add_argument("--by", nargs="*", default=["target"], help="grouping columns (default: target)")
    a.add_argument("--value", default="mean", help="per-image column to aggregate (default: %(default)s)")
    a.add_argument("--out", type=Path, required=False, help="output Parquet file (default: print)")

    c = add("compare", help="compare two SATs (models, splits) per group x segment")
    c.add_argument("a", type=Path, help="first per-image (or aggregated) SAT Parquet file")
    c.add_argument("b", type=Path, help="second one")
    c.add_argument("--by", nargs="*", default=["target"], help="grouping columns (default: target)")
    c.add_argument(
        "--sides",
        nargs=2,
        metavar=("A", "B"),
        default=["a", "b"],
        help="names of the two sides, shown with the output and kept in the Parquet file for `sat-fast report` "
        "(default: a b; the columns stay mean_a, mean_b, ...)",
    )
    c.add_argument("--out", type=Path, help="output Parquet file (default: print)")

    rp = add("report", help="an HTML report from an aggregated SAT")
    rp.add_argument("aggregate", type=Path, help="aggregated SAT Parquet file")
    rp.add_argument("--flags", type=Path, help="flags Parquet file")
    rp.add_argument("--comparison", type=Path, help="comparison Parquet file")
    rp.add_argument(
        "--sides",
        nargs=2,
        metavar=("A", "B"),
        help="names of the compared sides (default: those `sat-fast compare --sides` stored, else a b)",
    )
    rp.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file (default: %(default)s)")
    # --config and --debug are accepted after the command too (`sat-fast run --config run.toml`).
    for command in sub.choices.values():
        command.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _apply_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Defaults from --config TOML (top level, or a table named after the command)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return
    if not known.config.is_file():
        raise UserError(f"config file {known.config} does not exist")
    try:
        data = tomllib.loads(known.config.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {known.config} is not valid TOML: {exc}") from None
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise UserError(
                f"config file {known.config}: {name!r} must be a table of options ([{name}]), got {table!r}"
            )
        values = {k: v for k, v in data.items() if not isinstance(v, dict)}
        values.update(table)
        dests = {act.dest: act for act in sub._actions}
        unknown = [k for k in values if k.replace("-", "_") not in dests and k not in ("debug", "config")]
        if unknown and name in data:
            raise UserError(f"config file {known.config}: unknown option(s) for '{name}': {', '.join(unknown)}")
        defaults = {}
        for key, value in values.items():
            action = dests.get(key.replace("-", "_"))
            if action is not None:
                defaults[action.dest] = _config_value(action, value, f"config file {known.config}: {key}")
        sub.set_defaults(**defaults)


def _config_value(action: argparse.Action, value: Any, where: str) -> Any:
    """A TOML value checked (and converted) as the option would check its command-line text."""
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if action.nargs in ("*", "+") or isinstance(action.nargs, int):
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise UserError(f'{where} must be a list of strings, e.g. {action.dest} = ["a", "b"], got {value!r}')
        if isinstance(action.nargs, int) and len(value) != action.nargs:
            raise UserError(f"{where} must be a list of {action.nargs} strings, got {value!r}")
        return [Path(x) for x in value] if action.type is Path else value
    if action.type in _TOML_TYPES:
        accepted = _TOML_TYPES[action.type]
        if not isinstance(value, accepted) or isinstance(value, bool):
            words = {int: "an integer", float: "a number", str: "a string"}
            kinds = " or ".join(words[t] for t in accepted if not (t is int and float in accepted))
            raise UserError(f"{where} must be {kinds}, got {value!r}")
        try:
            return action.type(str(value))
        except argparse.ArgumentTypeError as exc:
            raise UserError(f"{where}: {exc}") from None
    if action.type is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"{where} must be an integer, got {value!r}")
        return value
    if action.type is _max_pixels:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        if isinstance(value, str) and value.strip().lower() == "none":
            return None
        raise UserError(f'{where} must be a positive integer or "none", got {value!r}')
    if not isinstance(value, str):
        raise UserError(f"{where} must be a string, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise UserError(f"{where} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return Path(value) if action.type is Path else value


# --------------------------------------------------------------------- commands


def _demo(args: argparse.Namespace) -> int:
    from sat_fast.demo.experiment import DemoConfig, run_demo

    config = DemoConfig.quick() if args.quick else DemoConfig.full()
    result = run_demo(args.out, config=config, cache_dir=args.cache, progress=not args.no_progress)
    print(f"\nwrote {len(result.files)} files to {args.out} (open {args.out / 'report.html'})")
    return 0


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
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no images ({', '.join(_IMAGE_SUFFIXES)}) under {root}")
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


def _write_parquet(frame: pl.DataFrame, path: Path, metadata: dict[str, str] | None = None) -> None:
    import polars as pl

    try:
        frame.write_parquet(path, metadata=metadata)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UserError(f"cannot write {path}: {_first_line(exc)}") from None


def _write_report(report: Callable[..., Path], path: Path, agg: pl.DataFrame, **options: Any) -> Path:
    try:
        return report(agg, path, **options)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _run(args: argparse.Namespace) -> int:
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
        logits = np.asarray(bundle.apply(batch))
        if logits.ndim == 2 and logits.shape[1] != len(bundle.class_names):
            raise UserError(
                f"the model returns {logits.shape[1]} logits per image but its factory names "
                f"{len(bundle.class_names)} classes"
            )
        predicted = logits.argmax(1)
        options: dict[str, Any] = {
            "method": args.method,
            "steps": args.steps,
            "samples": args.samples,
            "noise": args.noise,
            "seed": args.seed,
            "output": args.output,
            "layer": args.layer,
        }
        if baseline is not None:
            options["baseline"] = baseline
        if args.targets == "all":
            classes = list(range(len(bundle.class_names)))
            maps = np.asarray(saliency(bundle.apply, batch, classes=classes, **options))  # (B, T, H, W)
            explained = [np.full(len(rows), c) for c in classes]
        else:  # one target per image: its label or the prediction
            explained = [labels if args.targets == "label" else predicted]
            maps = np.asarray(saliency(bundle.apply, batch, targets=explained[0], **options))[:, None]
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
        _write_parquet(tables[-1], out / f"sat-part-{start // args.batch_size:06d}.parquet")
        bar.update()
    bar.close()
    sat = pl.concat(tables, how="vertical_relaxed")
    _write_parquet(sat, out / "sat.parquet")
    for part in out.glob("sat-part-*.parquet"):
        part.unlink()
    agg = aggregate(sat, by=("target",))
    _write_parquet(agg, out / "aggregate.parquet")
    flags = flag_shortcuts(
        agg,
        core=core,
        share_min=args.share_min,
        density_min=args.density_min,
        presence_min=args.presence_min,
        excess_min=args.excess_min,
    )
    _write_parquet(flags, out / "flags.parquet")
    _write_report(report, out / "report.html", agg, flags=flags, title=f"SATs of {args.model}")
    print(summary(agg, flags=flags, format="text"))
    skipped = f", {len(missing)} skipped without masks" if missing else ""
    per_class = f" for each of the {len(bundle.class_names)} classes" if args.targets == "all" else ""
    print(
        f"\nexplained {len(index)} images{per_class}{skipped}; "
        f"wrote {out / 'sat.parquet'}, aggregate.parquet, flags.parquet, report.html"
    )
    return 0


def _read(paths: Sequence[Path]) -> pl.LazyFrame:
    import polars as pl

    files = []
    for p in paths:
        # glob.glob takes absolute patterns too (Path().glob does not)
        matches = sorted(map(Path, glob.glob(str(p), recursive=True))) if any(ch in str(p) for ch in "*?[") else [p]
        for m in matches:
            if not m.is_file():
                raise UserError(f"table {m} does not exist")
            files.append(m)
    if not files:
        raise UserError(f"no tables match {', '.join(map(str, paths))}")
    schemas = []
    for f in files:
        try:
            schemas.append(dict(pl.read_parquet_schema(f)))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise UserError(f"table {f} is not a Parquet file (or is empty): {_first_line(exc)}") from None
    for f, schema in zip(files[1:], schemas[1:], strict=True):
        if schema != schemas[0]:
            raise UserError(f"tables {files[0]} and {f} have different columns: {_schema_change(schemas[0], schema)}")
    return pl.scan_parquet(files)


def _schema_change(a: dict[str, Any], b: dict[str, Any]) -> str:
    only_a, only_b = [c for c in a if c not in b], [c for c in b if c not in a]
    if only_a or only_b:
        return f"only in the first: {only_a}, only in the second: {only_b}"
    differ = [f"{c!r} is {a[c]} vs {b[c]}" for c in a if a[c] != b[c]]
    return "; ".join(differ)


def _emit(frame: pl.DataFrame, out: Path | None, metadata: dict[str, str] | None = None) -> int:
    import polars as pl

    if out is None:
        # Wide enough that no header is folded ("tar / get"): the terminal, or a log, scrolls sideways.
        shown = 50
        with pl.Config(
            tbl_rows=shown,
            tbl_cols=-1,
            tbl_width_chars=10_000,
            fmt_str_lengths=60,
            tbl_hide_column_data_types=True,
            tbl_hide_dataframe_shape=True,
        ):
            print(frame.head(shown))
        if frame.height > shown:
            print(f"... {frame.height - shown} more rows ({frame.height} in all); write them all with --out FILE")
    else:
        _write_parquet(frame, out, metadata=metadata)
        print(f"wrote {out} ({frame.height} rows)")
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    from sat_fast.aggregation import aggregate

    return _emit(aggregate(_read(args.tables), by=tuple(args.by), value=args.value), args.out)


_SIDES_KEY = "sat_fast.sides"


def _compare(args: argparse.Namespace) -> int:
    from sat_fast.comparison import compare

    sides = _sides(args.sides, "--sides")
    frame = compare(_read([args.a]), _read([args.b]), by=tuple(args.by))
    print(f"a = {sides[0]} ({args.a}), b = {sides[1]} ({args.b}); diff = mean_b - mean_a")
    # The names travel in the Parquet file's metadata: `sat-fast report --comparison` labels the sides with them.
    return _emit(frame, args.out, metadata={_SIDES_KEY: json.dumps(list(sides))})


def _sides(values: Sequence[str], option: str) -> tuple[str, str]:
    a, b = (str(v).strip() for v in values)
    if not a or not b or a == b:
        raise UserError(f"{option} needs two different, non-empty names, got {list(values)!r}")
    return a, b


def _stored_sides(path: Path) -> tuple[str, str] | None:
    """The side names `sat-fast compare --sides` stored in a comparison Parquet file, if any."""
    import polars as pl

    try:
        text = pl.read_parquet_metadata(path).get(_SIDES_KEY)
        value = json.loads(text) if text is not None else None
    except (pl.exceptions.PolarsError, OSError, json.JSONDecodeError):
        return None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and v for v in value):
        return value[0], value[1]
    return None


def _report(args: argparse.Namespace) -> int:
    from sat_fast.reports import report

    agg = _read([args.aggregate]).collect()
    flags = _read([args.flags]).collect() if args.flags else None
    comparison = _read([args.comparison]).collect() if args.comparison else None
    if args.sides is not None:
        sides = _sides(args.sides, "--sides")
    else:
        sides = (_stored_sides(args.comparison) if args.comparison else None) or ("a", "b")
    path = _write_report(report, args.out, agg, flags=flags, comparison=comparison, sides=sides)
    print(f"wrote {path}")
    return 0


_COMMANDS = {"demo": _demo, "run": _run, "aggregate": _aggregate, "compare": _compare, "report": _report}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sat-fast``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    debug = "--debug" in argv
    try:
        _apply_config(parser, argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return _COMMANDS[args.command](args)
    except UserError as exc:
        if debug:
            raise
        print(f"sat-fast: error: {exc}", file=sys.stderr)
        return 2
    except argparse.ArgumentError as exc:
        # A bad option value (type or choice): one line naming the option, as for every user error.
        if debug:
            raise
        print(f"sat-fast: error: {exc} (see sat-fast --help)", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, RecursionError) as exc:
        # Problems in the user's data surface as these from the library; one line, unless --debug.
        if debug:
            raise
        print(f"sat-fast: error: {_first_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        import polars as pl

        # Polars rejects the user's tables (types, columns) with its own exceptions.
        if debug or not isinstance(exc, pl.exceptions.PolarsError):
            raise
        print(f"sat-fast: error: {_first_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
