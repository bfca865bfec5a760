"""The streaming pipeline (``sat_fast.run``) on precomputed saliency: a million 224x224 maps to the aggregate.

Maps and label maps are cycled from pools larger than the CPU caches (``--pool`` maps of 224x224 float32,
200 KB each), so memory bandwidth is paid as with real data; label maps are Voronoi cells (about 12 segments per
image out of a vocabulary of 30). Measured:

- the pipeline, in a fresh subprocess: wall time, images/s, peak RSS (VmHWM), its own per-stage times;
- each stage alone, in another subprocess, on the same maps: the kernel (``segment_stats``), table building
  (``stats_table``), Parquet writing (one file per shard) and the aggregation (``aggregate`` over the files);
  the pipeline's overhead is its wall time minus the sum of the stages;
- the I/O path: ``--io-images`` maps written as ``.npy`` shards to disk, then read by the pipeline.

    python benchmarks/bench_pipeline.py            # 10^6 maps, I/O path 10^5 maps (about 20 GB on disk)
    python benchmarks/bench_pipeline.py --quick    # 2*10^4 maps, I/O path 2*10^3 (a smoke test)
    python benchmarks/bench_pipeline.py --compare-ray   # the I/O path only: streaming vs a local Ray instance
    python benchmarks/bench_pipeline.py --model-path    # images on disk -> saliency -> shards vs saliency alone

``--compare-ray`` (extra ``sat_fast[ray]``) runs the I/O path with ``--backend stream`` and ``--backend ray``
in interleaved repeats and reports medians; Ray is started apart from the run (``ray.init`` on this machine's
CPUs, timed on its own), and the peak RSS is the driver's (Ray's workers are other processes).

``--model-path`` measures what the pipeline adds to the saliency itself: ``--model-images`` PNG images of 64x64
with PNG label maps on disk, a six-layer CNN (``bench_saliency.SmallCNN``, random weights) explained with
integrated gradients (32 steps), through ``sat_fast.run`` to the shards (reading, decoding, masks, reduction,
Parquet, manifest), against ``sat_fast.saliency`` alone on the same images already in memory, in the same
batches; both warmed up (compiled) first, then interleaved repeats, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

NAMES = [f"segment_{k:02d}" for k in range(30)]
CLASSES = 10


def pools(size: int, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` saliency maps (float32) and Voronoi label maps (uint8, about 12 cells named from 30)."""
    rng = np.random.default_rng(seed)
    maps = rng.standard_normal((count, size, size), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    labels = np.empty((count, size, size), np.uint8)
    for i in range(count):
        centres = rng.integers(0, size, (12, 2))
        dist = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
        labels[i] = rng.choice(len(NAMES), 12, replace=False)[dist.argmin(0)]
    return maps, labels


def _sources(maps: np.ndarray, labels: np.ndarray, count: int) -> tuple[Any, Any]:
    from sat_fast.pipeline import Item, MapShards, MaskSource
    from sat_fast.segments import Segments

    segments = [Segments(tuple(NAMES), *lab.shape, label_map=lab) for lab in labels]

    class PoolMaps(MapShards):
        """Maps cycled from the pool; item i explains class i % CLASSES."""

        def __init__(self) -> None:
            self.source = f"pool of {len(maps)}"

        def describe(self) -> dict[str, Any]:
            return {"pool": len(maps), "count": count}

        def items(self) -> list[Item]:
            return [Item(i, f"{i:07d}", i % CLASSES) for i in range(count)]

        def extra_columns(self) -> dict[str, bool]:
            return {"target": True, "label": False}

        def read(self, item: Item) -> tuple[np.ndarray, dict[str, int]]:
            return maps[item.position % len(maps)], {"target": item.label}

    class PoolMasks(MaskSource):
        def __init__(self) -> None:
            self.kind = "pool"

        def describe(self) -> dict[str, Any]:
            return {"pool": len(segments)}

        def has(self, image_id: str) -> bool:
            return True

        def load(self, image_id: str) -> Segments:
            return segments[int(image_id) % len(segments)]

    return PoolMaps(), PoolMasks()


def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline to the aggregated table, with its own stage times; peak RSS of the whole process."""
    import sat_fast

    maps, labels = pools(args.size, args.pool)
    if args.io:
        source: Any = str(Path(args.folder) / "maps")
        masks = _sources(maps, labels, args.images)[1]
    else:
        source, masks = _sources(maps, labels, args.images)
    import polars as pl

    from sat_fast.aggregation import aggregate

    ray_init_s = 0.0
    if args.backend == "ray":  # one local instance on this machine's CPUs, started (and timed) apart from the run
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ray_init_s = time.perf_counter() - t0
    start = time.perf_counter()
    # To the aggregated table: the shards, then the streaming aggregate (flags and the HTML report, a fixed cost
    # of a few seconds that does not grow with the images, are left out).
    done = sat_fast.run(
        saliency_maps=source, masks=masks, out=Path(args.folder) / "run", batch_size=args.batch_size,
        shard_size=args.shard_size, progress=False, workers=args.workers, summarize=False, backend=args.backend,
    )  # fmt: skip
    t0 = time.perf_counter()
    aggregate(pl.scan_parquet(done.files), by=("target",))
    done.timings["aggregate"] = time.perf_counter() - t0
    wall = time.perf_counter() - start
    return {"wall_s": wall, "images_per_s": args.images / wall, "rows": done.rows, "peak_rss_mb": _peak_mb(),
            "pipeline_stage_s": done.timings, "backend": args.backend, "ray_init_s": ray_init_s}  # fmt: skip


def child_stages(args: argparse.Namespace) -> dict[str, Any]:
    """Each stage alone over the same maps, batch by batch; Parquet one file per shard, then the aggregate."""
    import polars as pl

    import sat_fast
    from sat_fast.aggregation import aggregate

    maps, labels = pools(args.size, args.pool)
    out = Path(args.folder) / "stages"
    out.mkdir()
    times = {"kernel": 0.0, "table": 0.0, "parquet": 0.0}
    shard: list[pl.DataFrame] = []
    files = []
    for start in range(0, args.images, args.batch_size):
        idx = np.arange(start, min(args.images, start + args.batch_size))
        batch_maps = maps[idx % len(maps)]  # the gather (a copy), as the pipeline stacks a batch
        batch_labels = labels[idx % len(labels)]
        t0 = time.perf_counter()
        stats = sat_fast.segment_stats(batch_maps, batch_labels, num_segments=len(NAMES))
        t1 = time.perf_counter()
        table = sat_fast.stats_table(
            stats, names=NAMES, image_ids=[f"{i:07d}" for i in idx], targets=idx % CLASSES,
            metadata={"model": "pool", "run": "bench000"},
        )  # fmt: skip
        t2 = time.perf_counter()
        times["kernel"] += t1 - t0
        times["table"] += t2 - t1
        shard.append(table)
        if (start + args.batch_size) % args.shard_size == 0 or start + args.batch_size >= args.images:
            t0 = time.perf_counter()
            files.append(out / f"part-{len(files):06d}.parquet")
            pl.concat(shard).write_parquet(files[-1])
            times["parquet"] += time.perf_counter() - t0
            shard = []
    t0 = time.perf_counter()
    aggregate(pl.scan_parquet(files), by=("target",))
    times["aggregation"] = time.perf_counter() - t0
    return {"stage_s": times, "sum_s": sum(times.values()), "peak_rss_mb": _peak_mb()}


def write_io_shards(folder: Path, images: int, size: int, pool: int, per_file: int) -> None:
    maps, _ = pools(size, pool)
    (folder / "maps").mkdir(parents=True)
    for n, start in enumerate(range(0, images, per_file)):
        idx = np.arange(start, min(images, start + per_file))
        stem = folder / "maps" / f"part-{n:05d}"
        np.save(f"{stem}.npy", maps[idx % len(maps)])
        np.save(f"{stem}.image_id.npy", np.array([f"{i:07d}" for i in idx]))
        np.save(f"{stem}.target.npy", idx % CLASSES)


def _child(kind: str, args: argparse.Namespace, folder: Path, images: int, io: bool = False) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", kind, "--folder", str(folder), "--images", str(images),
            "--size", str(args.size), "--pool", str(args.pool), "--batch-size", str(args.batch_size),
            "--shard-size", str(args.shard_size), "--workers", str(args.workers),
            "--backend", args.backend]  # fmt: skip
    if io:
        argv.append("--io")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def model_path(args: argparse.Namespace, count: int) -> None:
    """Images on disk -> saliency -> SAT shards, against the saliency alone on the same images (interleaved)."""
    import statistics

    import jax
    import jax.numpy as jnp
    from bench_saliency import SmallCNN
    from PIL import Image

    import sat_fast

    size, classes = 64, [f"class_{c}" for c in range(CLASSES)]
    model = SmallCNN(classes=CLASSES)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))

    def fn(x):
        return model.apply(variables, x)

    rng = np.random.default_rng(3)
    _, labels = pools(size, count, seed=3)
    with tempfile.TemporaryDirectory(prefix="sat_bench_model_path_") as tmp:
        folder = Path(tmp)
        images, targets = [], []
        for i in range(count):
            stem = f"{classes[i % CLASSES]}/{i:06d}.png"
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            for sub, array in (("images", pixels), ("masks", labels[i])):
                (folder / sub / stem).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / sub / stem)
            images.append(pixels.astype(np.float32) / 255.0)
            targets.append(i % CLASSES)
        (folder / "names.csv").write_text("value,name\n" + "".join(f"{v},{n}\n" for v, n in enumerate(NAMES)))
        # the pipeline lists images in path order: the same order, hence the same batches, for the saliency alone
        order = sorted(range(count), key=lambda i: f"{classes[i % CLASSES]}/{i:06d}")
        stack = np.stack([images[i] for i in order])
        wanted = np.array([targets[i] for i in order])
        steps, batch = 32, args.batch_size

        def pipeline(run: int) -> float:
            t0 = time.perf_counter()
            sat_fast.run(
                (fn, classes), images=folder / "images", masks=folder / "masks", names=folder / "names.csv",
                out=folder / f"run{run}", steps=steps, batch_size=batch, progress=False, summarize=False,
                workers=args.workers,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            shutil.rmtree(folder / f"run{run}")
            return seconds

        def saliency_alone() -> float:
            t0 = time.perf_counter()
            for start in range(0, count, batch):
                maps = sat_fast.saliency(fn, stack[start : start + batch], wanted[start : start + batch], steps=steps)
                np.asarray(maps)
            return time.perf_counter() - t0

        print(f"model path: {count} images {size}x{size} on disk, IG {steps} steps, batch {batch}", flush=True)
        pipeline(-1), saliency_alone()  # warm-up: compile both
        runs: dict[str, list[float]] = {"pipeline": [], "saliency": []}
        for repeat in range(args.repeats):
            for name in ("pipeline", "saliency") if repeat % 2 == 0 else ("saliency", "pipeline"):
                runs[name].append(pipeline(repeat) if name == "pipeline" else saliency_alone())
                print(f"  {name:10s}{runs[name][-1]:8.2f} s", flush=True)
    medians = {name: statistics.median(times) for name, times in runs.items()}
    overhead = medians["pipeline"] / medians["saliency"] - 1
    print(f"median: pipeline {medians['pipeline']:.2f} s, saliency alone {medians['saliency']:.2f} s, "
          f"everything but the saliency {100 * overhead:+.1f}% of the saliency time")  # fmt: skip
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "images": count, "size": size, "steps": steps, "batch_size": batch, "repeats": args.repeats,
        "runs": runs, "medians": medians, "overhead_fraction": overhead,
    }  # fmt: skip
    path = Path(args.json).with_name("bench_pipeline_model.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2e4 maps, I/O path 2e3")
    parser.add_argument("--no-torch", action="store_true", help="accepted for the README test; torch is not used")
    parser.add_argument("--images", type=int, default=None, help="maps through the pipeline (default 1e6)")
    parser.add_argument("--io-images", type=int, default=None, help="maps read from disk (default 1e5)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--pool", type=int, default=512, help="maps and label maps cycled (default 512: 100 MB)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=16384)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=("stream", "ray"), default="stream", help="sat_fast.run's backend")
    parser.add_argument("--compare-ray", action="store_true", help="the I/O path only: streaming vs local Ray")
    parser.add_argument("--repeats", type=int, default=3, help="--compare-ray, --model-path: interleaved runs")
    parser.add_argument("--model-path", action="store_true", help="images -> saliency -> shards vs saliency alone")
    parser.add_argument("--model-images", type=int, default=None, help="with --model-path (default 512)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "bench_pipeline.json"))
    parser.add_argument("--child", choices=("pipeline", "stages"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--io", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child_pipeline(args) if args.child == "pipeline" else child_stages(args)
        print(json.dumps(result))
        return
    images = args.images or (20_000 if args.quick else 1_000_000)
    io_images = args.io_images or (2_000 if args.quick else 100_000)
    if args.quick:
        args.pool = min(args.pool, 128)
    if args.compare_ray:
        compare_ray(args, io_images)
        return
    if args.model_path:
        if args.batch_size == 256:  # the maps' default; a model's batches are smaller
            args.batch_size = 32
        model_path(args, args.model_images or (64 if args.quick else 512))
        return
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "images": images,
        "io_images": io_images,
        "size": args.size,
        "pool": args.pool,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
    }
    with tempfile.TemporaryDirectory(prefix="sat_bench_pipeline_") as tmp:
        folder = Path(tmp)
        (folder / "p").mkdir()
        report["pipeline"] = _child("pipeline", args, folder / "p", images)
        shutil.rmtree(folder / "p")
        (folder / "s").mkdir()
        report["stages"] = _child("stages", args, folder / "s", images)
        shutil.rmtree(folder / "s")
        write_io_shards(folder / "io", io_images, args.size, args.pool, per_file=2048)
        report["io"] = _child("pipeline", args, folder / "io", io_images, io=True)
    pipe, stages = report["pipeline"], report["stages"]
    overhead = pipe["wall_s"] - stages["sum_s"]
    report["overhead_s"] = overhead
    report["overhead_fraction"] = overhead / stages["sum_s"]
    print(f"{'':28s}{'wall s':>10s}{'images/s':>12s}{'peak RSS MB':>14s}")
    print(
        f"{'pipeline, maps in memory':28s}{pipe['wall_s']:10.1f}{pipe['images_per_s']:12.0f}{pipe['peak_rss_mb']:14.0f}"
    )
    io = report["io"]
    print(f"{'pipeline, .npy shards (I/O)':28s}{io['wall_s']:10.1f}{io['images_per_s']:12.0f}{io['peak_rss_mb']:14.0f}")
    for stage, seconds in stages["stage_s"].items():
        print(f"  stage alone: {stage:14s}{seconds:10.1f}")
    print(f"  sum of stages{'':14s}{stages['sum_s']:10.1f}")
    print(f"  pipeline overhead{'':10s}{overhead:10.1f}  ({100 * report['overhead_fraction']:.0f}% of the stages)")
    print(f"rows: {pipe['rows']}; pipeline's own stage times: {pipe['pipeline_stage_s']}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


def compare_ray(args: argparse.Namespace, io_images: int) -> None:
    """The I/O path through the streaming pipeline and through a local Ray instance, interleaved; medians."""
    import statistics

    runs: dict[str, list[dict[str, Any]]] = {"stream": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="sat_bench_pipeline_ray_") as tmp:
        folder = Path(tmp)
        write_io_shards(folder, io_images, args.size, args.pool, per_file=2048)
        for repeat in range(args.repeats):
            for backend in ("stream", "ray") if repeat % 2 == 0 else ("ray", "stream"):
                args.backend = backend
                runs[backend].append(_child("pipeline", args, folder, io_images, io=True))
                shutil.rmtree(folder / "run")
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "io_images": io_images, "size": args.size, "batch_size": args.batch_size, "shard_size": args.shard_size,
        "repeats": args.repeats, "runs": runs,
    }  # fmt: skip
    print(f"{'I/O path, ' + str(io_images) + ' maps':28s}{'wall s':>10s}{'images/s':>12s}{'driver RSS MB':>15s}")
    for backend, results in runs.items():
        median = {k: statistics.median(r[k] for r in results) for k in ("wall_s", "peak_rss_mb", "ray_init_s")}
        report[f"{backend}_median"] = median
        label = "streaming" if backend == "stream" else f"ray (+{median['ray_init_s']:.0f} s ray.init)"
        print(f"{label:28s}{median['wall_s']:10.1f}{io_images / median['wall_s']:12.0f}{median['peak_rss_mb']:15.0f}")
    path = Path(args.json).with_name("bench_pipeline_ray.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
