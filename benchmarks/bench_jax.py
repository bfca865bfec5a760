"""Segment statistics inside JAX: the FFI custom call against the pybind11 kernel, jax.ops and the host round trip.

One process, the same data for every method: a batch of 256 float32 saliency
maps of 224x224 with uint8 Voronoi labels, K = 8, 16 and 64. Repeats are
interleaved (one call of every method per round, the order rotating) and the
medians of wall-clock and process CPU time are reported.

- "FFI": ``sat_fast.functional._ffi.segment_stats_ffi`` under ``jax.jit`` on
  device-resident arrays, every statistic (the kernel of sat_fast._core,
  reached by XLA with no host round trip).
- "pybind11": ``sat_fast.segment_stats`` on numpy arrays, every statistic.
- "host round trip": device arrays to numpy (``np.asarray``), then
  ``sat_fast.segment_stats``: what code without the custom call does.
- "jax.ops.segment_sum": the sum alone, and every statistic with
  ``segment_sum``/``segment_min``/``segment_max``, under ``jax.jit`` (segment
  ids label + K * image computed inside the jitted function).
- Slot for sat_fast.functional (another branch of issue 12): its
  ``segment_stats`` (the chosen pure-JAX reduction, and each formulation of
  ``sat_fast._typing.SegmentReduction``) and ``explain`` against
  ``saliency`` then the host reduction, when they exist; reported missing
  otherwise.

On a GPU (or TPU) backend the FFI custom call does not exist (it is registered
for CPU): the in-JAX reductions run on the device, "pybind11" is the host
kernel on host numpy arrays, and "host round trip" copies the device arrays to
the host first. Each in-JAX reduction is also checked: bitwise identical over
three calls ("deterministic") and its largest relative error in the sums
against the pybind11 kernel's float64 sums.

    python benchmarks/bench_jax.py            # full run (~2 minutes on 2 cores)
    python benchmarks/bench_jax.py --quick    # batch 32, fewer rounds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench_reduce import voronoi_labels

import sat_fast
from sat_fast import _core
from sat_fast.functional._ffi import segment_stats_ffi


def ready(out):
    return jax.block_until_ready(out)


def segment_ops_all(k: int, b: int):
    """Every statistic with jax.ops segment reductions (ids: label + K * image)."""

    @jax.jit
    def run(x, lab):
        ids = (lab.astype(jnp.int32) + k * jnp.arange(b, dtype=jnp.int32)[:, None, None]).ravel()
        v = x.ravel()
        parts = jnp.stack([v, jnp.maximum(v, 0), jnp.minimum(v, 0), v * v, jnp.ones_like(v)], axis=-1)
        sums = jax.ops.segment_sum(parts, ids, num_segments=b * k)
        lo = jax.ops.segment_min(v, ids, num_segments=b * k)
        hi = jax.ops.segment_max(v, ids, num_segments=b * k)
        return sums.reshape(b, k, 5), lo.reshape(b, k), hi.reshape(b, k)

    return run


def segment_sum_only(k: int, b: int):
    @jax.jit
    def run(x, lab):
        ids = (lab.astype(jnp.int32) + k * jnp.arange(b, dtype=jnp.int32)[:, None, None]).ravel()
        return jax.ops.segment_sum(x.ravel(), ids, num_segments=b * k).reshape(b, k)

    return run


def functional_methods(k: int) -> tuple[dict[str, Callable], str]:
    """The slot of sat_fast.functional.segment_stats: its default and each named formulation, when it exists."""
    try:
        from sat_fast import functional
    except ImportError as exc:  # pragma: no cover - the package is part of this tree
        return {}, f"sat_fast.functional does not import: {exc}"
    stats = getattr(functional, "segment_stats", None)
    if stats is None:
        return {}, "sat_fast.functional.segment_stats is missing (the functional branch of issue 12 is not merged)"
    methods = {"functional.segment_stats (its default)": jax.jit(lambda s, m: stats(s, m, num_segments=k))}
    from sat_fast import _typing

    reductions = getattr(getattr(_typing, "SegmentReduction", None), "__args__", ())  # a Literal's choices
    for name in reductions:
        if name != "auto":
            methods[f"functional.segment_stats reduction={name}"] = jax.jit(
                lambda s, m, name=name: stats(s, m, num_segments=k, reduction=name)
            )
    return methods, ""


def check_against(call: Callable[[], object], reference) -> tuple[bool, float]:
    """Bitwise identical over three calls, and the largest relative error of ``sum`` against the host kernel.

    The error is relative to the segment's absolute sum (the scale a float32 accumulation errs on).
    """
    results = [jax.tree.map(np.asarray, call()) for _ in range(3)]
    deterministic = all(
        all(np.array_equal(a, b, equal_nan=True) for a, b in zip(results[0], other, strict=True))
        for other in results[1:]
    )
    got = np.asarray(results[0].sum, dtype=np.float64)
    scale = np.maximum(np.asarray(reference["abs_sum"], dtype=np.float64), np.finfo(np.float64).tiny)
    return deterministic, float(np.max(np.abs(got - np.asarray(reference["sum"], dtype=np.float64)) / scale))


def interleaved(methods: dict[str, Callable[[], object]], rounds: int) -> dict[str, tuple[float, float]]:
    """Median wall-clock and median process CPU seconds (every thread) per call, one call of each method per round.

    CPU time is the steadier figure on a shared machine: what the call costs, whoever else is running. The
    order rotates every round, and each call starts after a short pause: XLA's CPU thread pool keeps spinning
    for a while after a jitted call, which would otherwise be charged to whichever method runs next.
    """
    for fn in methods.values():
        fn()  # warm-up and compilation
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = methods[name]
            time.sleep(0.05)
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in methods}


def bench_explain(rounds: int, b: int) -> tuple[list[dict], str]:
    """``explain`` vs saliency + host reduction (a small CNN as a plain function, gradient method, K = 16)."""
    try:
        from sat_fast.functional import explain  # type: ignore[attr-defined]
    except ImportError:
        return [], "sat_fast.functional.explain is missing (the functional branch of issue 12 is not merged)"
    rng = np.random.default_rng(1)
    size, k = 224, 16
    images = rng.normal(size=(b, size, size, 3)).astype(np.float32)
    labels = voronoi_labels(rng, b, size, size, k)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 8)).astype(np.float32) * 0.1)
    head = jnp.asarray(rng.normal(size=(8, 10)).astype(np.float32))

    def fn(x):
        y = jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.mean(jax.nn.relu(y), axis=(1, 2)) @ head

    targets = np.arange(b) % 10
    try:
        run_explain = jax.jit(lambda x, m: explain(fn, x, m, num_segments=k, method="gradient", targets=targets))

        def host():
            maps = sat_fast.saliency(fn, images, targets, method="gradient")
            return sat_fast.segment_stats(np.asarray(maps), labels, num_segments=k)

        medians = interleaved(
            {"explain (jit)": lambda: ready(run_explain(images, labels)), "saliency + host": host}, rounds
        )
    except Exception as exc:  # the slot's API is the functional branch's: report what failed, keep the rest
        return [], f"sat_fast.functional.explain present but this slot failed: {type(exc).__name__}: {exc}"
    rows = [
        {"method": m, "batch": b, "seconds": t, "cpu_seconds": c, "images_per_s": b / t}
        for m, (t, c) in medians.items()
    ]
    return rows, ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--segments", type=int, nargs="+", default=[8, 16, 64])
    p.add_argument("--rounds", type=int, default=31, help="rounds of the FFI, pybind11 and round-trip calls")
    p.add_argument("--jax-rounds", type=int, default=5, help="rounds of the (much slower) in-JAX reductions")
    p.add_argument("--quick", action="store_true", help="batch 32, 5 and 3 rounds")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_jax.json")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.rounds, args.jax_rounds = 32, 5, 3
    b, h, w = args.batch, args.size, args.size
    backend = jax.default_backend()
    on_cpu = backend == "cpu"
    device_name = jax.devices()[0].device_kind
    if not on_cpu:
        # the in-JAX reductions are 100x faster on an accelerator: as many rounds as the host kernel's
        args.jax_rounds = args.rounds
    print(
        f"jax {jax.__version__} on {backend} ({device_name}), {os.cpu_count()} CPUs, "
        f"kernel {_core.kernel_variant()}, batch {b} of {h}x{w}, {args.rounds} interleaved rounds "
        f"({args.jax_rounds} for the in-JAX reductions)"
    )
    rng = np.random.default_rng(0)
    sal = rng.standard_normal((b, h, w)).astype(np.float32)
    sal_dev = jax.device_put(sal)
    rows: list[dict] = []
    notes: list[str] = []
    for k in args.segments:
        lab = voronoi_labels(rng, b, h, w, k)
        lab_dev = jax.device_put(lab)
        ffi = jax.jit(lambda s, m, k=k: segment_stats_ffi(s, m, num_segments=k))
        ops_all, ops_sum = segment_ops_all(k, b), segment_sum_only(k, b)
        # Two phases: the three calls of the same kernel with many rounds (they are what the 10% target
        # compares), then the 30-50x slower in-JAX reductions with few (their caches and thread pools would
        # otherwise add noise to the kernel's rounds).
        kernel_methods = {
            "pybind11 kernel (numpy, all stats)": lambda: sat_fast.segment_stats(sal, lab, num_segments=k),
            "host round trip (device -> numpy -> kernel)": lambda: sat_fast.segment_stats(
                np.asarray(sal_dev), np.asarray(lab_dev), num_segments=k
            ),
        }
        if on_cpu:
            kernel_methods["FFI custom call (jit, all stats)"] = lambda: ready(ffi(sal_dev, lab_dev))
        reference = sat_fast.segment_stats(sal, lab, num_segments=k)
        jax_methods = {
            "jax.ops segment ops (jit, all stats)": lambda: ready(ops_all(sal_dev, lab_dev)),
            "jax.ops.segment_sum (jit, sum only)": lambda: ready(ops_sum(sal_dev, lab_dev)),
        }
        extra, note = functional_methods(k)
        if note and note not in notes:
            notes.append(note)
        checks: dict[str, tuple[bool, float]] = {}
        for name, fn in extra.items():
            jax_methods[name] = lambda fn=fn: ready(fn(sal_dev, lab_dev))
            checks[name] = check_against(lambda fn=fn: fn(sal_dev, lab_dev), reference)
        medians = interleaved(kernel_methods, args.rounds)
        medians.update(interleaved(jax_methods, args.jax_rounds))
        base, base_cpu = medians["pybind11 kernel (numpy, all stats)"]
        for name, (t, c) in medians.items():
            deterministic, error = checks.get(name, (None, None))
            rows.append(
                {
                    "K": k,
                    "method": name,
                    "seconds": t,
                    "cpu_seconds": c,
                    "images_per_s": b / t,
                    "vs_pybind11": base / t,
                    "cpu_vs_pybind11": base_cpu / c,
                    "deterministic": deterministic,
                    "max_rel_error_sum": error,
                }
            )
    # 32 images on CPU (a gradient of 256 would take a minute per round), the reductions' batch elsewhere
    explain_rows, note = bench_explain(args.jax_rounds, 32 if on_cpu else b)
    if note:
        notes.append(note)

    print(
        f"\n{'K':>3} {'method':<52} {'images/s':>10} {'vs pybind11':>12} {'CPU ms':>8} {'CPU vs pybind11':>16} "
        f"{'determ.':>8} {'max rel err':>12}"
    )
    for r in rows:
        determ = "" if r["deterministic"] is None else ("yes" if r["deterministic"] else "NO")
        error = "" if r["max_rel_error_sum"] is None else f"{r['max_rel_error_sum']:.1e}"
        print(
            f"{r['K']:>3} {r['method']:<52} {r['images_per_s']:>10,.0f} {r['vs_pybind11']:>11.2f}x "
            f"{r['cpu_seconds'] * 1e3:>8.1f} {r['cpu_vs_pybind11']:>15.2f}x {determ:>8} {error:>12}"
        )
    for r in explain_rows:
        print(f"explain ({r['batch']} images): {r['method']:<40} {r['images_per_s']:>10,.1f} images/s")
    for note in notes:
        print(f"note: {note}")

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {
        "benchmark": "bench_jax",
        "machine": {
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "threads": _core.default_threads(),
            "kernel": _core.kernel_variant(),
            "python": sys.version.split()[0],
            "jax": jax.__version__,
            "backend": backend,
            "device": device_name,
        },
        "commit": commit,
        "batch": b,
        "height": h,
        "width": w,
        "rounds": args.rounds,
        "jax_rounds": args.jax_rounds,
        "rows": rows,
        "explain": explain_rows,
        "notes": notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
