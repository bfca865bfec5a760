"""Segment reduction throughput: sat_fast's kernel against numpy, JAX, torch and memory bandwidth.

Everything is measured in one run on the same data: 224x224 float32 saliency,
uint8 labels, a batch of 512 images. Voronoi labels are the realistic case
(spatially coherent segments), uniform noise the worst case, packed
overlapping ellipse masks (K=32) the mask path. Baselines compute only the
per-segment sum; sat_fast computes all statistics. Per case, the read probe
(the very arrays sat_fast reads: saliency + labels, or saliency + bit planes,
each read by the same number of threads: sat_fast._bench_probe when it was built with
-Ccmake.define.SAT_FAST_BENCH_PROBE=ON, else numpy's xor reduction on Python
threads, reported as such), sat_fast and the baselines are timed in
interleaved repeats; the fractions of the read limit and the speedups are
medians of same-repeat ratios, so that load from other processes cancels.
Each timed call follows untimed calls of the same method (--settle, at
least 20 ms of them: --settle-ms), so that one method's leftovers (torch's
spinning OpenMP workers) are not charged to the next. Cycles per pixel use
the core clock measured at the start (chains of dependent adds on every
thread) when the probe module is built.

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


def slic_labels(b: int, h: int, w: int, segments: int) -> np.ndarray:
    """SLIC superpixels (about `segments` per image) of scikit-image's bundled photographs, repeated to b images:
    real boundaries, runs of about 10 pixels at 300 segments on 224x224."""
    from skimage import data, segmentation, transform

    photos = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
    maps = [
        segmentation.slic(
            transform.resize(getattr(data, name)(), (h, w), anti_aliasing=True),
            n_segments=segments,
            compactness=10,
            start_label=0,
        )
        for name in photos
    ]
    return np.stack([maps[i % len(maps)] for i in range(b)]).astype(np.uint16)


def mean_run_length(labels: np.ndarray) -> float:
    flat = labels.reshape(labels.shape[0], -1)
    changes = int((flat[:, 1:] != flat[:, :-1]).sum())
    return flat.size / (changes + flat.shape[0])


def read_probe(threads: int):
    """(name, fn(arrays)) reading every byte of each array with `threads` threads (thread t the t-th part of
    each): the very bytes the kernel reads, where they lie in memory."""
    try:
        from sat_fast import _bench_probe  # type: ignore[attr-defined]

        return "C++ (sat_fast._bench_probe)", lambda arrays: _bench_probe.read_probe(arrays, threads=threads)
    except ImportError:
        pool = ThreadPoolExecutor(threads)

        def numpy_probe(arrays: list[np.ndarray]) -> int:
            def part(t: int) -> int:
                acc = 0
                for a in arrays:
                    flat = a.reshape(-1).view(np.uint8)
                    words = flat[: flat.size // 8 * 8].view(np.uint64)  # numpy releases the GIL in the reduction
                    acc ^= int(np.bitwise_xor.reduce(np.array_split(words, threads)[t]))
                return acc

            out = 0
            for v in pool.map(part, range(threads)):
                out ^= v
            return out

        return "numpy xor on Python threads (sat_fast._bench_probe not built)", numpy_probe


def interleaved(fns: dict, repeats: int, settle: int = 1, settle_ms: float = 20.0) -> dict[str, list[float]]:
    """Seconds of every repeat of every function; each repeat runs all of them in turn (rotating the order),
    so that load from other processes hits every method alike and ratios can be taken repeat by repeat.

    Each timed call follows untimed calls of the same function, ``settle`` of them and as many more as take
    ``settle_ms`` milliseconds: what the previous method leaves behind is not charged to the next one. torch's
    OpenMP workers keep spinning for milliseconds after ``scatter_add_`` returns, and on a 2-core machine
    whatever is timed right after it loses the cores (a sat_fast call measured 14.6 ms after torch and 7.9 ms
    after itself; a read of a 16 MB batch, 0.15 ms alone, took 3.7 ms right after torch even after one
    untimed read)."""
    for fn in fns.values():
        fn()  # warm-up (and JIT compilation)
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start, calls = time.perf_counter(), 0
            while calls < settle or (settle > 0 and (time.perf_counter() - start) * 1e3 < settle_ms):
                fns[name]()
                calls += 1
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over repeats of num[i] / den[i] (same-repeat ratios)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


# Nominal clock of the benchmark machine's vCPUs (lscpu "cpu MHz"): cycles per pixel assume it only when the
# clock cannot be measured (sat_fast._bench_probe not built). Its cores run at about 3.6 GHz under load.
NOMINAL_GHZ = 2.6


def core_clock(threads: int) -> tuple[float, str]:
    """(GHz, how it was found): measured with `threads` busy threads when the probe module is built."""
    try:
        from sat_fast import _bench_probe  # type: ignore[attr-defined]
    except ImportError:
        return NOMINAL_GHZ, "nominal (sat_fast._bench_probe not built)"
    ghz = _bench_probe.clock_ghz(threads=threads)
    if ghz is None:
        return NOMINAL_GHZ, "nominal (no add-chain timer on this CPU)"
    return float(ghz), "measured (dependent-add chains, all threads busy)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=_core.default_threads())
    p.add_argument("--settle", type=int, default=1, help="untimed calls of a method before each timed one (0: none)")
    p.add_argument(
        "--settle-ms", type=float, default=20.0, help="and more untimed calls until this many milliseconds have passed"
    )
    p.add_argument("--quick", action="store_true", help="batch 64, 5 repeats")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--jax", action="store_true", help="also time jax.ops.segment_sum (slow to compile)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_reduce.json")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = 64, 5
    b, h, w, t = args.batch, args.size, args.size, args.threads
    rng = np.random.default_rng(0)
    sal = rng.standard_normal((b, h, w)).astype(np.float32)
    pixels = b * h * w

    torch = None
    if not args.no_torch:
        try:
            import torch  # type: ignore[no-redef]

            torch.set_num_threads(t)
        except ImportError:
            print("torch not installed (pip install torch==2.13.0): skipping its baseline")
    if args.jax:
        import jax
        import jax.numpy as jnp

    probe_name, probe_fn = read_probe(t)
    ghz, clock_source = core_clock(t)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"threads={t}, kernel={_core.kernel_variant()}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"batch {b} x {h}x{w} float32 saliency; {args.repeats} interleaved repeats; read probe: {probe_name}")
    print(f"core clock {ghz:.2f} GHz, {clock_source}")
    rows = []
    cases = []

    def record(case: str, method: str, times: list[float], what: str, nbytes: int) -> dict:
        sec = statistics.median(times)
        row = {
            "case": case,
            "method": method,
            "computes": what,
            "seconds": sec,
            "images_per_s": b / sec,
            "gb_per_s": nbytes / sec / 1e9,
            "ns_per_pixel": sec / pixels * 1e9,
            # per thread: wall time x threads, in cycles of the clock measured at the start
            "cycles_per_pixel_per_thread": sec / pixels * 1e9 * t * ghz,
        }
        rows.append(row)
        return row

    for pattern, k in [("voronoi", 8), ("voronoi", 16), ("voronoi", 64), ("noise", 16), ("slic", 300)]:
        if pattern == "slic":
            lab = slic_labels(b, h, w, k)
            k = int(lab.max()) + 1
        elif pattern == "voronoi":
            lab = voronoi_labels(rng, b, h, w, k)
        else:
            lab = rng.integers(0, k, (b, h, w)).astype(np.uint8)
        case = f"{pattern} K={k}"
        nbytes = sal.nbytes + lab.nbytes
        offsets = (lab.reshape(b, -1).astype(np.int64) + (np.arange(b, dtype=np.int64) * k)[:, None]).ravel()
        flat = sal.ravel()
        fns = {
            "read probe (same bytes)": lambda: probe_fn([sal, lab]),
            "sat_fast (all stats)": lambda: sat_fast.segment_stats(sal, lab, num_segments=k, threads=t),
            "np.bincount (sum)": lambda: np.bincount(offsets, weights=flat, minlength=b * k),
        }
        if torch is not None:
            index = torch.from_numpy(lab.reshape(b, -1).astype(np.int64))
            src = torch.from_numpy(sal.reshape(b, -1))

            def scatter():
                out = torch.zeros((b, k), dtype=torch.float32)
                out.scatter_add_(1, index, src)
                return out

            fns["torch scatter_add_ (sum)"] = scatter
        if args.jax:
            ids = jnp.asarray(offsets.astype(np.int32))
            data = jnp.asarray(flat)
            seg = jax.jit(lambda d, i: jax.ops.segment_sum(d, i, num_segments=b * k))
            fns["jax.ops.segment_sum (sum)"] = lambda: seg(data, ids).block_until_ready()
        times = interleaved(fns, args.repeats, args.settle, args.settle_ms)
        ours = times["sat_fast (all stats)"]
        summary = {
            "case": case,
            "mean_run_length": mean_run_length(lab),
            "fraction_of_read_limit": median_ratio(times["read probe (same bytes)"], ours),
            "read_limit_gb_s": nbytes / statistics.median(times["read probe (same bytes)"]) / 1e9,
        }
        for name, ts in times.items():
            record(case, name, ts, "read" if name.startswith("read") else ("all" if "all" in name else "sum"), nbytes)
            if name != "sat_fast (all stats)" and not name.startswith("read"):
                summary[f"speedup_vs {name}"] = median_ratio(ts, ours)
        cases.append(summary)
        # release the large buffers before the next case
        offsets, lab = np.empty(0, np.int64), np.empty((0, 0, 0), np.uint8)
        index = src = None

    k = 32
    masks = ellipse_masks(rng, b, k, h, w)
    coverage = masks.mean() * k
    packed = sat_fast.pack_masks(masks, threads=t)
    nbytes = sal.nbytes + packed.words.nbytes
    times = interleaved(
        {
            "read probe (same bytes)": lambda: probe_fn([sal, packed.words]),
            "sat_fast (all stats, packed)": lambda: sat_fast.segment_stats(sal, masks=packed, threads=t),
            "sat_fast pack_masks (once per mask set)": lambda: sat_fast.pack_masks(masks, threads=t),
        },
        args.repeats,
        args.settle,
        args.settle_ms,
    )
    case = f"masks K={k}"
    for name, ts in times.items():
        record(
            case, name, ts, "pack" if "pack_masks" in name else "all", masks.nbytes if "pack_masks" in name else nbytes
        )
    cases.append(
        {
            "case": case,
            "masks_per_pixel": float(coverage),
            "bytes_read": nbytes,
            "fraction_of_read_limit": median_ratio(
                times["read probe (same bytes)"], times["sat_fast (all stats, packed)"]
            ),
            "read_limit_gb_s": nbytes / statistics.median(times["read probe (same bytes)"]) / 1e9,
        }
    )
    masks = np.empty((0, 0, 0, 0), bool)  # release

    print(f"\n{'case':<12} {'method':<40} {'images/s':>10} {'GB/s':>6} {'ns/px':>6} {'cyc/px/thr':>10}")
    for r in rows:
        print(
            f"{r['case']:<12} {r['method']:<40} {r['images_per_s']:>10,.0f} {r['gb_per_s']:>6.1f} "
            f"{r['ns_per_pixel']:>6.3f} {r['cycles_per_pixel_per_thread']:>10.2f}"
        )
    print("\nsame-run ratios (median over repeats):")
    for c in cases:
        extra = "  ".join(f"{k.split(' ', 1)[1]} {v:.2f}x" for k, v in c.items() if k.startswith("speedup_vs"))
        print(
            f"  {c['case']:<12} {c['fraction_of_read_limit']:>5.0%} of the read limit "
            f"({c['read_limit_gb_s']:.1f} GB/s)  {extra}"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "bench_reduce",
        "machine": {
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "threads": t,
            "kernel": _core.kernel_variant(),
            "python": sys.version.split()[0],
            "load_average_at_start": os.getloadavg()[0],
            "clock_ghz": ghz,
            "clock_source": clock_source,
        },
        "batch": b,
        "height": h,
        "width": w,
        "repeats": args.repeats,
        "settle": args.settle,
        "settle_ms": args.settle_ms,
        "read_probe": probe_name,
        "cases": cases,
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
