"""The ``sat-fast`` argument parser, option types and the ``--config`` TOML file."""

from __future__ import annotations

import argparse
import functools
import math
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


from sat_fast._cli_common import UserError

__all__ = ["apply_config", "build_parser"]

_EXAMPLES = """\
examples:
  sat-fast demo                       # the synthetic shortcut experiment (about 3 minutes)
  sat-fast demo --quick --out demo    # a smaller, faster run
  sat-fast run --model examples/user_model.py:make_model --images data/images \\
      --masks data/masks --names data/names.csv --out results
  sat-fast run ... --out results --resume   # continue an interrupted run
  sat-fast aggregate results --by label correct --out by_class.parquet
  sat-fast compare a b --by target --out change.parquet   # two run folders
  sat-fast report results --out report.html                # its aggregate.parquet and flags.parquet
"""


def _max_pixels(text: str) -> int | None:
    """--max-pixels: a positive int, or 'none' for no limit."""
    if text.strip().lower() == "none":
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}") from None


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


def build_parser() -> argparse.ArgumentParser:
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
        help="train shortcut, control and attribution-prior models on synthetic data and show what the SATs reveal",
        description="Generate a synthetic dataset with a watermark shortcut, train a shortcut model, a control "
        "model and a model with an attribution prior against the watermark (all cached), explain them with "
        "integrated gradients and write tables, figures and an HTML report.",
        epilog="example: sat-fast demo --quick --out demo_out",
    )
    d.add_argument("--out", type=Path, default=Path("sat_fast_demo_out"), help="output folder (default: %(default)s)")
    d.add_argument("--quick", action="store_true", help="a smaller dataset and shorter training (used by the tests)")
    d.add_argument("--cache", type=Path, help="where trained parameters are cached (default: OUT/cache)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars (the summary is still printed)")

    r = add(
        "run",
        help="SATs for your own model, images and masks",
        description="Explain every image with the chosen saliency method and write per-image SATs as "
        "resumable Parquet shards (OUT/sat/part-*.parquet, listed in OUT/manifest.jsonl, provenance in "
        "OUT/run.json), then the per-class aggregate, shortcut flags and an HTML report.",
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
    r.add_argument(
        "--images",
        type=Path,
        help="image folder: one sub-folder per class, or flat with --labels; or a Parquet dataset (*.parquet: "
        "columns image (bytes), label (class name or index), optionally image_id)",
    )
    r.add_argument("--labels", type=Path, help="CSV with columns image_id,label (class name or index)")
    r.add_argument(
        "--masks",
        type=Path,
        help="segments: a folder of PNG label maps named like the images (needs --names), "
        "a COCO JSON file, or a sat_fast .npz bundle",
    )
    r.add_argument(
        "--mask-column",
        help="with --images DATASET.parquet: its mask column, instead of --masks: PNG label-map bytes (named by "
        "--names) or COCO RLE structs {size, counts, category} (or lists of them) per row",
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
    r.add_argument(
        "--saliency-maps",
        type=Path,
        help="precomputed saliency instead of --model/--images: .npz shards (maps, image_id, target and/or label), "
        ".npy maps with NAME.image_id.npy beside them, or a Parquet file with a saliency column; a file, folder "
        "or glob",
    )
    r.add_argument(
        "--shard-size",
        type=int,
        default=1024,
        help="images per output shard, the unit a resumed run redoes (default: %(default)s)",
    )
    r.add_argument(
        "--workers", type=_positive_int, default=2, help="threads reading images and masks (default: %(default)s)"
    )
    r.add_argument(
        "--backend",
        choices=("stream", "ray"),
        default="stream",
        help="stream: threads and one device on this machine; ray: a Ray Data job, local or on a cluster (extra "
        "sat_fast[ray]; see the README) (default: %(default)s)",
    )
    r.add_argument(
        "--ray-address", help="with --backend ray: the Ray cluster (default: RAY_ADDRESS, else a local instance)"
    )
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: keep its finished shards, redo unfinished or corrupted ones; other "
        "settings than the stored ones are an error",
    )
    r.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip bad items (unreadable image, missing mask, mask of another size than its image) and list them "
        "in the summary and run.json, instead of stopping at the first",
    )
    r.add_argument("--skip-missing", action="store_true", help="deprecated: use --skip-bad")
    r.add_argument("--out", type=Path, help="output folder")

    a = add("aggregate", help="aggregate per-image SAT Parquet files per group x segment")
    a.add_argument(
        "tables", nargs="+", type=Path, help="per-image SAT Parquet files (globs allowed) or run folders (their sat/)"
    )
    a.add_argument("--by", nargs="*", default=["target"], help="grouping columns (default: target)")
    a.add_argument("--value", default="mean", help="per-image column to aggregate (default: %(default)s)")
    a.add_argument("--out", type=Path, required=False, help="output Parquet file (default: print)")

    c = add("compare", help="compare two SATs (models, splits) per group x segment")
    c.add_argument("a", type=Path, help="first per-image (or aggregated) SAT Parquet file, or a run folder")
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
    rp.add_argument("aggregate", type=Path, help="aggregated SAT Parquet file, or a run folder (its aggregate.parquet)")
    rp.add_argument("--flags", type=Path, help="flags Parquet file (default with a run folder: its flags.parquet)")
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


def apply_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
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
