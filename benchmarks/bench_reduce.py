"""Segment reduction throughput: sat_fast's kernel against numpy, JAX, torch and memory bandwidth.

Everything is measured in one run on the same data: 224x224 float32 saliency,
uint8 labels, a batch of 512 images. Voronoi labels are the realistic case
(spatially coherent segments), uniform noise the worst case. Baselines compute
only the per-segment sum; sat_fast computes all statistics. The bandwidth line
reads the same bytes (saliency + labels) with the same number of threads:
with the benchmark-only extension sat_fast._bench_probe when it was built
(pip install . -Ccmake.define.SAT_FAST_BENCH_PROBE=ON), else with numpy's
xor reduction on the same number of Python threads (reported as such).

    python benchmarks/bench_reduce.py            # full run (~2-4 minutes)
    python benchmarks/bench_reduce.py --quick    # smaller batch, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import sat_fast
from sat_fast import _core


def voronoi_labels(rng: np.random.Generator, b: int, h: int, w: int, cells: int) -> np.ndarray:
    """Each pixel takes the id of its nearest of `cells` random seeds (ids 0..cells-1)."""
    out = np.empty((b, h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(b):
        cy = rng.uniform(0, h, cells).astype(np.float32)
        cx = rng.uniform(0, w, cells).astype(np.float32)
        best = np.full((h, w), np.inf, np.float32)
        for c in range(cells):
            d = (yy - cy[c]) ** 2 + (xx - cx[c]) ** 2
            closer = d < best
            best[closer] = d[closer]
            out[i][closer] = c
    return out


def ellipse_masks(rng: np.random.Generator, b: int, k: int, h: int, w: int) -> np.ndarray:
    """Overlapping masks: k random ellipses per image, each a few percent of the image."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    masks = np.empty((b, k, h, w), bool)
    for i in range(b):
        cy, cx = rng.uniform(0, h, k), rng.uniform(0, w, k)
        ry, rx = rng.uniform(8, 40, k), rng.uniform(8, 40, k)
        for s in range(k):
            masks[i, s] = ((yy - cy[s]) / ry[s]) ** 2 + ((xx - cx[s]) / rx[s]) ** 2 < 1
    return masks


def mean_run_length(labels: np.ndarray) -> float:
    flat = labels.reshape(labels.shape[0], -1)
    changes = int((flat[:, 1:] != flat[:, :-1]).sum())
    return flat.size / (changes + flat.shape[0])


def read_probe(threads: int):
    """(name, fn(buffer)) reading every byte of a buffer with `threads` threads."""
    try:
        from sat_fast import _bench_probe  # type: ignore[attr-defined]

        return "C++ (sat_fast._bench_probe)", lambda buf: _bench_probe.read_probe(buf, threads=threads)
    except ImportError:
        pool = ThreadPoolExecutor(threads)

        def numpy_probe(buf: np.ndarray) -> int:
            words = buf[: buf.nbytes // 8 * 8].view(np.uint64)  # numpy releases the GIL in the reduction
            return int(np.bitwise_xor.reduce(list(pool.map(np.bitwise_xor.reduce, np.array_split(words, threads)))))

        return "numpy xor on Python threads (sat_fast._bench_probe not built)", numpy_probe


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (and JIT compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=_core.default_threads())
    p.add_argument("--quick", action="store_true", help="batch 64, 5 repeats")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-jax", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_reduce.json")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = 64, 5
    b, h, w, t = args.batch, args.size, args.size, args.threads
    rng = np.random.default_rng(0)
    sal = rng.standard_normal((b, h, w)).astype(np.float32)

    torch = None
    if not args.no_torch:
        try:
            import torch  # type: ignore[no-redef]

            torch.set_num_threads(t)
        except ImportError:
            print("torch not installed (pip install torch==2.13.0): skipping its baseline")
    if not args.no_jax:
        import jax
        import jax.numpy as jnp

    bw_bytes = sal.nbytes + b * h * w  # saliency + uint8 labels
    probe = np.empty(bw_bytes, np.uint8)
    probe[: sal.nbytes] = sal.view(np.uint8).ravel()
    probe[sal.nbytes :] = 1
    probe_name, probe_fn = read_probe(t)
    bw_time = timed(lambda: probe_fn(probe), args.repeats)
    bandwidth = bw_bytes / bw_time
    probe = np.empty(0, np.uint8)  # release the buffer before the kernels run

    rows = []
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"threads={t}, kernel={_core.kernel_variant()}"
    )
    print(f"batch {b} x {h}x{w} float32 saliency + uint8 labels = {bw_bytes / 1e6:.0f} MB per pass")
    print(
        f"read bandwidth ({t} threads, same bytes, {probe_name}): "
        f"{bandwidth / 1e9:.2f} GB/s = {b / bw_time:,.0f} images/s"
    )

    def record(case: str, method: str, seconds: float, what: str, nbytes: int = bw_bytes) -> None:
        rows.append(
            {
                "case": case,
                "method": method,
                "computes": what,
                "seconds": seconds,
                "images_per_s": b / seconds,
                "gb_per_s": nbytes / seconds / 1e9,
            }
        )

    cases = [("voronoi", 8), ("voronoi", 16), ("voronoi", 64), ("noise", 16)]
    for pattern, k in cases:
        case = f"{pattern} K={k}"
        lab = (
            voronoi_labels(rng, b, h, w, k) if pattern == "voronoi" else rng.integers(0, k, (b, h, w)).astype(np.uint8)
        )
        print(f"\n{case}: mean run length {mean_run_length(lab):.1f} pixels")
        record(
            case,
            "sat_fast (all stats)",
            timed(lambda: sat_fast.segment_stats(sal, lab, num_segments=k, threads=t), args.repeats),
            "all",
        )
        offsets = (lab.reshape(b, -1).astype(np.int64) + (np.arange(b, dtype=np.int64) * k)[:, None]).ravel()
        flat = sal.ravel()
        record(
            case,
            "np.bincount (sum)",
            timed(lambda: np.bincount(offsets, weights=flat, minlength=b * k), args.repeats),
            "sum",
        )
        if not args.no_jax:
            ids = jnp.asarray(offsets.astype(np.int32))
            data = jnp.asarray(flat)
            seg = jax.jit(lambda d, i: jax.ops.segment_sum(d, i, num_segments=b * k))
            record(
                case,
                "jax.ops.segment_sum (sum)",
                timed(lambda: seg(data, ids).block_until_ready(), args.repeats),
                "sum",
            )
            del ids, data
        if torch is not None:
            index = torch.from_numpy(lab.reshape(b, -1).astype(np.int64))
            src = torch.from_numpy(sal.reshape(b, -1))

            def scatter():
                out = torch.zeros((b, k), dtype=torch.float32)
                out.scatter_add_(1, index, src)
                return out

            record(case, "torch scatter_add_ (sum)", timed(scatter, args.repeats), "sum")
            del index, src
        offsets = np.empty(0, np.int64)  # release

    k = 32
    masks = ellipse_masks(rng, b, k, h, w)
    coverage = masks.mean() * k
    print(f"\nmasks K={k}: overlapping ellipses, each pixel in {coverage:.2f} masks on average")
    pack_time = timed(lambda: sat_fast.pack_masks(masks, threads=t), args.repeats)
    packed = sat_fast.pack_masks(masks, threads=t)
    record(f"masks K={k}", "sat_fast pack_masks (once per mask set)", pack_time, "pack", masks.nbytes)
    packed_bytes = sal.nbytes + packed.words.nbytes
    record(
        f"masks K={k}",
        "sat_fast (all stats, packed)",
        timed(lambda: sat_fast.segment_stats(sal, masks=packed, threads=t), args.repeats),
        "all",
        packed_bytes,
    )
    masks = np.empty((0, 0, 0, 0), bool)  # release

    by_case: dict[str, dict[str, float]] = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["method"]] = r["seconds"]
    print(f"\n{'case':<14} {'method':<42} {'images/s':>12} {'GB/s':>7} {'ratio':>8}")
    for r in rows:
        ours = by_case[r["case"]].get("sat_fast (all stats)") or by_case[r["case"]].get("sat_fast (all stats, packed)")
        r["sat_fast_speedup"] = r["seconds"] / ours
        print(
            f"{r['case']:<14} {r['method']:<42} {r['images_per_s']:>12,.0f} "
            f"{r['gb_per_s']:>7.2f} {r['sat_fast_speedup']:>7.2f}x"
        )
    print(f"{'':<14} {'read bandwidth, same bytes':<42} {b / bw_time:>12,.0f} {bandwidth / 1e9:>7.2f}")
    for case, methods in by_case.items():
        if "sat_fast (all stats)" in methods:
            frac = bw_time / methods["sat_fast (all stats)"]
            print(f"{case}: sat_fast runs at {frac:.0%} of the read-bandwidth limit")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "bench_reduce",
        "machine": {
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "threads": t,
            "kernel": _core.kernel_variant(),
            "python": sys.version.split()[0],
        },
        "batch": b,
        "height": h,
        "width": w,
        "repeats": args.repeats,
        "read_probe": probe_name,
        "read_bandwidth_gb_s": bandwidth / 1e9,
        "read_bandwidth_images_s": b / bw_time,
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
