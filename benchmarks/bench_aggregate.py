"""Aggregating per-image SATs from Parquet: streaming engine against in-memory collection.

Generates N per-image SAT rows (image_id, target, segment, mean, share,
density, rank; 10 segments per image, about 10% absent, 100 classes) as
Parquet files in a temporary folder, in chunks so generation itself stays
small, then runs ``sat_fast.aggregate(pl.scan_parquet(...), by="target")``
with ``engine="streaming"`` and with ``engine="in-memory"``. Each run is a
fresh subprocess that reports its wall time (of the aggregate call) and its
peak RSS (VmHWM, whole process), so one variant's memory never
inflates another's. The folder is deleted afterwards.

    python benchmarks/bench_aggregate.py                 # 10^8 rows, 5 runs each (long: tens of minutes)
    python benchmarks/bench_aggregate.py --quick         # 2*10^6 rows, 3 runs each
    python benchmarks/bench_aggregate.py --rows 30000000 --variants streaming
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

SEGMENTS = [f"segment_{k:02d}" for k in range(10)]
CLASSES = 100
ABSENT = 0.1
TARGET_RSS_GB = 2.0


def generate(folder: Path, rows: int, files: int, seed: int) -> int:
    """Write about `rows` rows as `files` Parquet files; returns the exact row count."""
    rng = np.random.default_rng(seed)
    (folder / "data").mkdir()
    k = len(SEGMENTS)
    images_total = max(1, round(rows / (k * (1 - ABSENT))))
    per_file = -(-images_total // files)
    written = 0
    names = pl.Series("segment", SEGMENTS, dtype=pl.Categorical)
    for f in range(files):
        start = f * per_file
        stop = min(images_total, start + per_file)
        if start >= stop:
            break
        n = stop - start
        mean = rng.normal(0.0, 1.0, (n, k)) + np.linspace(1.0, -1.0, k)
        present = rng.random((n, k)) >= ABSENT
        present[:, 0] = True  # every image keeps at least one segment
        ranked = np.where(present, mean, -np.inf)
        order = np.argsort(-ranked, axis=1, kind="stable")
        rank = np.empty((n, k), np.int64)
        np.put_along_axis(rank, order, np.arange(1, k + 1), axis=1)
        share = rng.dirichlet(np.ones(k), n)
        area = rng.dirichlet(np.ones(k) * 2, n)
        img, seg = np.nonzero(present)
        frame = pl.DataFrame(
            [
                pl.Series("image_id", start + img, dtype=pl.Int64),
                pl.Series("target", (start + img) % CLASSES, dtype=pl.Int64),
                names.gather(seg),
                pl.Series("mean", mean[img, seg], dtype=pl.Float64),
                pl.Series("share", share[img, seg], dtype=pl.Float64),
                pl.Series("density", share[img, seg] / area[img, seg], dtype=pl.Float64),
                pl.Series("rank", rank[img, seg], dtype=pl.Int64),
            ]
        )
        frame.write_parquet(folder / "data" / f"part-{f:04d}.parquet", row_group_size=1 << 20)
        written += frame.height
    return written


def peak_rss_kb() -> int:
    """Peak resident set of this process image in KiB.

    /proc's VmHWM belongs to the current address space; ru_maxrss would not
    do here, because Linux carries it over exec from the forking parent,
    whose generation step was itself about 1 GB.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(folder: str, variant: str, out: str | None) -> None:
    import sat_fast

    baseline_kb = peak_rss_kb()
    scan = pl.scan_parquet(Path(folder) / "data" / "*.parquet")
    t0 = time.perf_counter()
    result = sat_fast.aggregate(scan, by="target", engine=variant)
    wall = time.perf_counter() - t0
    peak_kb = peak_rss_kb()
    if out:
        result.write_parquet(out)
    print(
        json.dumps(
            {
                "wall_s": wall,
                "peak_rss_mb": peak_kb / 1024,
                "import_rss_mb": baseline_kb / 1024,
                "groups": result.height,
            }
        )
    )


def run_once(folder: Path, variant: str, out: Path | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(folder), "--variant", variant]
    if out is not None:
        cmd += ["--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"worker failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=float, default=1e8, help="per-image rows to generate (default 1e8)")
    parser.add_argument("--quick", action="store_true", help="2e6 rows and 3 runs unless given")
    parser.add_argument("--runs", type=int, default=None, help="runs per variant (default 5; 3 with --quick)")
    parser.add_argument("--files", type=int, default=None, help="Parquet files (default: one per 5e6 rows, at least 4)")
    parser.add_argument("--variants", default="streaming,in-memory")
    parser.add_argument("--dir", default=None, help="parent folder for the temporary Parquet files")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "bench_aggregate.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.variant, args.out)
        return
    rows = int(2e6 if args.quick and args.rows == 1e8 else args.rows)
    runs = args.runs or (3 if args.quick else 5)
    files = args.files or max(4, -(-rows // 5_000_000))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    folder = Path(tempfile.mkdtemp(prefix="sat_bench_agg_", dir=args.dir))
    try:
        t0 = time.perf_counter()
        written = generate(folder, rows, files, args.seed)
        gen_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in (folder / "data").glob("*.parquet")) / 2**20
        print(f"{written:,} rows in {files} Parquet files ({size_mb:,.0f} MiB), generated in {gen_s:.1f} s")
        results: dict[str, dict] = {}
        first: dict[str, Path] = {}
        for variant in variants:
            samples = []
            for i in range(runs):
                out = folder / f"result-{variant}.parquet" if i == 0 else None
                samples.append(run_once(folder, variant, out))
                if out is not None:
                    first[variant] = out
                print(
                    f"  {variant:10s} run {i + 1}: {samples[-1]['wall_s']:.2f} s, "
                    f"peak RSS {samples[-1]['peak_rss_mb']:.0f} MiB"
                )
            results[variant] = {
                "wall_s_median": statistics.median(s["wall_s"] for s in samples),
                "peak_rss_mb_median": statistics.median(s["peak_rss_mb"] for s in samples),
                "peak_rss_mb_max": max(s["peak_rss_mb"] for s in samples),
                "import_rss_mb": statistics.median(s["import_rss_mb"] for s in samples),
                "samples": samples,
            }
        if len(first) == 2:
            from polars.testing import assert_frame_equal

            a, b = (pl.read_parquet(p) for p in first.values())
            assert_frame_equal(a, b, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)
            print("streaming and in-memory results agree")
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"\n{'variant':12s} {'median wall s':>14s} {'rows/s':>12s} {'peak RSS MiB':>13s} {'(after import)':>15s}")
    for variant, r in results.items():
        print(
            f"{variant:12s} {r['wall_s_median']:14.2f} {written / r['wall_s_median']:12.3g} "
            f"{r['peak_rss_mb_median']:13.0f} {r['import_rss_mb']:15.0f}"
        )
    if "streaming" in results:
        peak_gb = results["streaming"]["peak_rss_mb_max"] / 1024
        verdict = "met" if peak_gb < TARGET_RSS_GB else "MISSED"
        print(f"streaming peak RSS {peak_gb:.2f} GiB (target < {TARGET_RSS_GB} GB): {verdict}")
    report = {
        "benchmark": "aggregate",
        "rows": written,
        "files": files,
        "parquet_mib": size_mb,
        "generate_s": gen_s,
        "runs": runs,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "polars": pl.__version__,
        "results": results,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
