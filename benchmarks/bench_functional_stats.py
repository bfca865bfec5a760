"""The pure-JAX segment statistics: which formulation is fastest, per backend and K.

For each available JAX backend (CPU here) and K in ``--segments``, times the
label-map formulations of ``sat_fast.functional.segment_stats``
(``reduction="one_hot" | "scatter" | "sort" | "blocks"``), each jitted, on
(B, 224, 224) float32 saliency and Voronoi-like int32 label maps, plus the
masks form (a (B, K, 224, 224) boolean contraction) when it fits in memory.
Repeats are interleaved (every formulation once per round); the table shows
medians in megapixels per second. JSON goes to ``--out``.

Usage: python benchmarks/bench_functional_stats.py [--batch 32] [--segments 8 16 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sat_fast import functional as F

FORMULATIONS = ("one_hot", "scatter", "sort", "blocks")


def labels(rng: np.random.Generator, b: int, h: int, w: int, k: int) -> np.ndarray:
    """Blocky labels: a coarse random grid (8x8 px cells) of segment ids, upsampled."""
    coarse = rng.integers(0, k, (b, -(-h // 8), -(-w // 8)))
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :h, :w].astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--segments", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--masks-max-bytes", type=float, default=2e9)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/functional_stats.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    b, h = args.batch, args.size
    sal = jnp.asarray(rng.standard_normal((b, h, h)).astype(np.float32))
    rows = []
    for backend in sorted({d.platform for d in jax.devices()}):
        device = jax.devices(backend)[0]
        for k in args.segments:
            lab = labels(rng, b, h, h, k)
            x, lab_d = jax.device_put(sal, device), jax.device_put(jnp.asarray(lab), device)
            calls = {
                name: (
                    jax.jit(lambda s, lab, name=name, k=k: F.segment_stats(s, lab, num_segments=k, reduction=name)),
                    lab_d,
                )
                for name in FORMULATIONS
            }
            if b * k * h * h <= args.masks_max_bytes:
                masks = jax.device_put(jnp.asarray(lab[:, None] == np.arange(k)[None, :, None, None]), device)
                calls["masks"] = (jax.jit(lambda s, m, k=k: F.segment_stats(s, masks=m, num_segments=k)), masks)
            for fn, arg in calls.values():  # compile and warm up
                jax.block_until_ready(fn(x, arg))
            times: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(args.repeats):
                for name, (fn, arg) in calls.items():
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn(x, arg))
                    times[name].append(time.perf_counter() - t0)
            for name, ts in times.items():
                med = statistics.median(ts)
                rows.append(
                    {"backend": backend, "device": device.device_kind, "segments": k, "formulation": name,
                     "median_s": med, "mpix_per_s": b * h * h / med / 1e6}
                )  # fmt: skip
                print(f"{backend:<5} K={k:<4} {name:<8} {med * 1e3:9.1f} ms  {b * h * h / med / 1e6:8.1f} Mpx/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"batch": b, "size": h, "repeats": args.repeats, "machine": platform.platform(), "cpus": os.cpu_count(),
            "jax": jax.__version__}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
