"""Same-data timing of the segment kernels, for A/B runs of two builds in alternating processes.

    python benchmarks/ab_kernels.py --out a1.json      # with build A importable
    PYTHONPATH=/path/to/build_b python benchmarks/ab_kernels.py --out b1.json

Prints and writes the best-of-N seconds per case (224x224 float32, uint8 labels, 2 threads, batch 256):
Voronoi K=16 (runs of ~45 px), noise K=16 (runs of ~1 px) and packed overlapping masks K=32. Only the public
``segment_stats``/``pack_masks`` calls are timed, so any two versions of sat_fast compare.
"""

from __future__ import annotations

import argparse
import json
import time
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


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


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
    masks = np.stack([_voronoi(rng, b, h, w, 8) == j for j in range(4)] * 8, axis=1)  # K=32, overlapping
    packed = sat_fast.pack_masks(masks, threads=t)
    cases = {
        "voronoi K=16": lambda: sat_fast.segment_stats(sal, voronoi, num_segments=16, threads=t),
        "noise K=16": lambda: sat_fast.segment_stats(sal, noise, num_segments=16, threads=t),
        "masks K=32 (packed)": lambda: sat_fast.segment_stats(sal, masks=packed, threads=t),
    }
    result = {name: _best(fn, args.repeats) for name, fn in cases.items()}
    for name, sec in result.items():
        print(f"{name:<22} {b / sec:>10,.0f} images/s")
    args.out.write_text(json.dumps({"sat_fast": sat_fast.__file__, "seconds": result}))


if __name__ == "__main__":
    main()
