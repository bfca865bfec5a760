"""``sat-fast run``: the command's options translated into a call of :func:`sat_fast.run` (the pipeline)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sat_fast._cli_common import UserError
from sat_fast.pipeline import ModelBundle, load_factory

__all__ = ["ModelBundle", "load_factory", "run_command"]


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


_SAME_NAME = (
    "out", "images", "labels", "masks", "names", "ignore_index", "max_pixels", "checkpoint", "method", "steps",
    "samples", "noise", "seed", "output", "layer", "targets", "batch_size", "shard_size", "device", "share_min",
    "density_min", "presence_min", "excess_min", "resume", "workers", "mask_column", "backend", "ray_address",
)  # fmt: skip


def run_command(args: argparse.Namespace) -> int:
    from sat_fast.attribution import METHODS as methods
    from sat_fast.pipeline import run
    from sat_fast.reports import summary

    maps = args.saliency_maps
    needed = ("masks", "out") if maps is not None else ("model", "images", "out")
    if args.mask_column is not None:
        needed = ("model", "images", "out")
    for opt in needed:
        if getattr(args, opt) is None:
            raise UserError(f"--{opt} is required")
    if maps is not None and (args.model is not None or args.images is not None):
        raise UserError("--saliency-maps replaces --model and --images; pass it without them")
    if args.method not in methods:
        raise UserError(f"unknown --method {args.method!r}; choose one of {', '.join(methods)}")
    if args.batch_size < 1 or args.steps < 1 or args.shard_size < 1:
        raise UserError("--batch-size, --shard-size and --steps must be positive")
    if args.method == "gradcam" and args.layer is None:
        raise UserError("--method gradcam needs --layer (the name of a Flax linen layer, e.g. Conv_1)")
    if args.layer is not None and args.method != "gradcam":
        raise UserError(f"--layer is used only by --method gradcam, not by {args.method}")
    if args.baseline is not None and args.method not in ("integrated_gradients", "expected_gradients"):
        raise UserError(f"--baseline is used only by integrated_gradients and expected_gradients, not by {args.method}")
    if args.method == "expected_gradients" and not isinstance(args.baseline, Path):
        raise UserError("--method expected_gradients needs --baseline FILE.npy, a reference set (R, H, W, C)")
    if args.masks is not None and args.masks.is_dir() and args.names is None:
        raise UserError("--names is required with a folder of PNG label maps")
    if args.skip_missing:
        print(
            "sat-fast: --skip-missing is deprecated (it skips every kind of bad item); use --skip-bad", file=sys.stderr
        )
    if args.backend == "ray":
        from sat_fast.pipeline._ray import require_ray

        try:
            require_ray()
        except ImportError as exc:
            raise UserError(str(exc)) from None
    baseline = _read_baseline(args.baseline, args.method) if isinstance(args.baseline, Path) else args.baseline
    core = _read_core(args.core) if args.core is not None else None
    # Options whose dest is run()'s keyword go through as they are; the rest are translated.
    same = {name: getattr(args, name) for name in _SAME_NAME}
    done = run(
        args.model,
        saliency_maps=maps,
        baseline=baseline,
        core=core,
        skip_bad=args.skip_bad or args.skip_missing,
        progress=not args.no_progress,
        **same,
    )
    if done.aggregate is not None:
        print(summary(done.aggregate, flags=done.flags, format="text"))
    print()
    print(done.text())
    return 0
