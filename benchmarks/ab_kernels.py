"""Same-data timing of the segment kernels, for A/B runs of two builds in alternating processes.

    python benchmarks/ab_kernels.py --out a1.json                      # with build A importable
    PYTHONPATH=/path/to/build_b python benchmarks/ab_kernels.py --out b1.json
    python benchmarks/ab_kernels.py --batch 32 --threads 1 --out c.json  # in cache (8 MB), one thread

Prints and writes the median seconds of interleaved repeats per case (224x224 float32, uint8 labels), and ns per
pixel per thread: one run per chunk (K=1, the pure per-pixel loop), Voronoi K=16 (runs of ~45 px), noise K=16
(runs of ~1 px), packed overlapping masks K=32, and torch ``scatter_add_`` on the noise labels (the sum only)
when torch is installed. Only the public ``segment_stats``/``pack_masks`` calls are timed, so any two versions
of sat_fast compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import sat_fast


def _voronoi(rng: np.random.Generator, b: int, h: int, w: int, k: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    out = np.empty((b, h, w), np.uint8)
    for i in range(b):
        seeds = rng.uniform(0, [h, w], (k, 2))
        d = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
        out[i] = d.argmin(0)
    return out


def _medians(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _torch_scatter(sal: np.ndarray, labels: np.ndarray, k: int, threads: int) -> Callable[[], object] | None:
    """torch ``scatter_add_`` of the saliency by label (the sum only), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    b = sal.shape[0]
    index = torch.from_numpy(labels.reshape(b, -1).astype(np.int64))
    source = torch.from_numpy(sal.reshape(b, -1))
    return lambda: torch.zeros((b, k)).scatter_add_(1, index, source)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    b, h, w, t = args.batch, 224, 224, args.threads
    rng = np.random.default_rng(0)
    sal = rng.standard_normal((b, h, w)).astype(np.float32)
    voronoi = _voronoi(rng, b, h, w, 16)
    noise = rng.integers(0, 16, (b, h, w)).astype(np.uint8)
    ones = np.zeros((b, h, w), np.uint8)
    masks = np.stack([_voronoi(rng, b, h, w, 8) == j for j in range(4)] * 8, axis=1)  # K=32, overlapping
    packed = sat_fast.pack_masks(masks, threads=t)
    cases: dict[str, Callable[[], object]] = {
        "K=1 (one run per chunk)": lambda: sat_fast.segment_stats(sal, ones, num_segments=1, threads=t),
        "voronoi K=16": lambda: sat_fast.segment_stats(sal, voronoi, num_segments=16, threads=t),
        "noise K=16": lambda: sat_fast.segment_stats(sal, noise, num_segments=16, threads=t),
        "masks K=32 (packed)": lambda: sat_fast.segment_stats(sal, masks=packed, threads=t),
    }
    scatter = _torch_scatter(sal, noise, 16, t)
    if scatter is not None:
        cases["torch scatter_add_ noise K=16 (sum)"] = scatter
    result = _medians(cases, args.repeats)
    pixels = b * h * w
    for name, sec in result.items():
        print(f"{name:<38} {b / sec:>10,.0f} images/s {sec / pixels * 1e9 * t:>7.3f} ns/px/thread")
    args.out.write_text(json.dumps({"sat_fast": sat_fast.__file__, "threads": t, "batch": b, "seconds": result}))


if __name__ == "__main__":
    main()
