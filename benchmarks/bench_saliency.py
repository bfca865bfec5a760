"""Benchmark sat_fast.saliency (integrated gradients) against raw jax.grad, the `saliency` package and a naive loop.

Run:  PYTHONPATH=<install dir> python benchmarks/bench_saliency.py [--out benchmarks/results/saliency.json] [--quick]

Models (random weights, eval mode): a small Flax CNN on 64x64 images (batches of
64) and a ResNet-18-sized Flax model on 224x224 images (8 images). For each,
IG with 32 steps (Gauss-Legendre) through

* sat_fast.saliency (default chunking),
* raw jax.grad of the same model on precomputed path points, at its best batch size
  (the library's overhead is ours / raw),
* the `saliency` package's IntegratedGradients (framework-agnostic, driven through a
  jitted call_model_function) at its best batch size,
* a naive loop: for each image, for each step, a jitted batch-1 gradient.

Also: a chunk-size sweep (gradient points per chunk vs throughput, the data behind
the CPU chunk-sizing rule), IG-256 on 64 images of 64x64 under a 1 GB budget with
peak RSS measured in a fresh subprocess, and the IG steps each quadrature rule
needs for 1% completeness error.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import psutil

import sat_fast
from sat_fast.attribution import quadrature
from sat_fast.attribution._compile import cached_kernels, working_bytes

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------- models


class SmallCNN(nn.Module):
    """Six 3x3 convolutions (16-64 channels) and a linear head; nonzero biases like a trained net.

    (With zero biases a ReLU net is positively homogeneous: its gradient is constant along
    the IG path from a zero baseline and any quadrature rule looks exact.)
    """

    classes: int = 10
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        act = getattr(nn, self.activation)
        bias = nn.initializers.normal(0.1)
        for features in (16, 32, 64):
            x = act(nn.Conv(features, (3, 3), bias_init=bias)(x))
            x = act(nn.Conv(features, (3, 3), strides=2, bias_init=bias)(x))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.classes, bias_init=bias)(x)


class BasicBlock(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        norm = functools.partial(nn.BatchNorm, use_running_average=True)
        y = nn.relu(norm()(nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(x)))
        y = norm()(nn.Conv(self.features, (3, 3), use_bias=False)(y))
        if x.shape != y.shape:
            x = norm()(nn.Conv(self.features, (1, 1), self.strides, use_bias=False)(x))
        return nn.relu(x + y)


class ResNet18(nn.Module):
    classes: int = 1000

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(64, (7, 7), 2, use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True)(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
        for i, features in enumerate((64, 128, 256, 512)):
            for j in range(2):
                x = BasicBlock(features, 2 if i > 0 and j == 0 else 1)(x)
        return nn.Dense(self.classes)(x.mean(axis=(1, 2)))


def make_model(name: str, n_images: int | None = None):
    if name.startswith("small_cnn"):  # small_cnn, small_cnn_gelu
        model, shape, batch = SmallCNN(activation=name[10:] or "relu"), (64, 64, 3), 64
    else:
        model, shape, batch = ResNet18(), (224, 224, 3), 8
    batch = n_images or batch
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape))
    images = np.random.default_rng(0).uniform(0, 1, size=(batch,) + shape).astype(np.float32)
    return model, variables, images


# ---------------------------------------------------------------- measurement helpers


class PeakRSS:
    """Peak resident memory above the starting point, sampled every 5 ms."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.extra_mb = (self.peak - self.start) / 2**20


def timed(run, repeats: int):
    run()  # warm-up: compilation
    times = []
    with PeakRSS() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), times, mem.extra_mb


def interleaved(runs: dict, repeats: dict):
    """{label: (median seconds, times, peak extra RSS MB)}: one warm-up each, then round-robin repeats.

    Round-robin (contender A, B, C, A, B, C, ...) spreads the load of a shared machine over every
    contender alike, so same-run ratios stay meaningful when absolute times swing.
    """
    for label, run in runs.items():
        t0 = time.perf_counter()
        run()  # warm-up: compilation
        print(f"  warm-up {label}: {time.perf_counter() - t0:.1f} s", flush=True)
    times = {label: [] for label in runs}
    cpu = {label: [] for label in runs}
    peaks = dict.fromkeys(runs, 0.0)
    for rep in range(max(repeats.values())):
        for label, run in runs.items():
            if rep >= repeats[label]:
                continue
            with PeakRSS() as mem:
                t0, c0 = time.perf_counter(), time.process_time()
                run()
                times[label].append(time.perf_counter() - t0)
                cpu[label].append(time.process_time() - c0)
            peaks[label] = max(peaks[label], mem.extra_mb)
    # CPU time of this process (all its threads): less sensitive than wall time to other load on the machine
    return {label: (statistics.median(t), t, peaks[label], statistics.median(cpu[label])) for label, t in times.items()}


def ig_points(images, steps):
    nodes, weights = quadrature("gauss_legendre", steps)
    alphas = jnp.asarray(nodes, jnp.float32)
    return (alphas[None, :, None, None, None] * images[:, None]).reshape((-1,) + images.shape[1:]), weights


# ---------------------------------------------------------------- contenders


def make_ours(fn, images, steps, **kw):
    def run():
        sat_fast.saliency(fn, images, method="integrated_gradients", steps=steps, **kw).block_until_ready()

    return run


def run_ours(fn, images, steps, repeats, **kw):
    return timed(make_ours(fn, images, steps, **kw), repeats)


def raw_grad_fn(fn):
    @jax.jit
    def grads(points, targets):
        return jax.grad(lambda z: jnp.take_along_axis(fn(z), targets[:, None], axis=1).sum())(points)

    return grads


def make_raw(fn, images, steps, batch_size):
    """Gradients of the explained logit at every path point, batch_size points per call."""
    grads = raw_grad_fn(fn)
    targets = np.asarray(jnp.argmax(fn(jnp.asarray(images)), axis=1)).astype(np.int32)
    points, _ = ig_points(jnp.asarray(images), steps)
    points = np.asarray(points)
    point_targets = np.repeat(targets, steps)
    n = len(points)
    pad = (-n) % batch_size
    points = np.concatenate([points, np.zeros((pad,) + points.shape[1:], np.float32)])
    point_targets = np.concatenate([point_targets, np.zeros(pad, np.int32)])

    def run():
        out = None
        for s in range(0, len(points), batch_size):
            out = grads(points[s : s + batch_size], point_targets[s : s + batch_size])
        out.block_until_ready()

    return run


def make_pair(fn, images, steps, batch_size):
    import saliency.core as pair

    grads = raw_grad_fn(fn)
    targets = np.asarray(jnp.argmax(fn(jnp.asarray(images)), axis=1))

    def call_model_function(x_batch, call_model_args=None, expected_keys=None):
        t = np.full(len(x_batch), call_model_args["target"], np.int32)
        return {pair.INPUT_OUTPUT_GRADIENTS: np.asarray(grads(np.asarray(x_batch, np.float32), t))}

    ig = pair.IntegratedGradients()

    def run():
        for x, t in zip(images, targets, strict=True):
            ig.GetMask(x, call_model_function, {"target": int(t)}, x_steps=steps, batch_size=batch_size)

    return run


def make_naive(fn, images, steps):
    grads = raw_grad_fn(fn)
    targets = np.asarray(jnp.argmax(fn(jnp.asarray(images)), axis=1)).astype(np.int32)
    nodes, weights = quadrature("gauss_legendre", steps)

    def run():
        for x, t in zip(images, targets, strict=True):
            total = 0
            for a, w in zip(nodes, weights, strict=True):
                total = total + w * grads((a * x)[None], np.array([t], np.int32))[0]
            np.asarray(total * x)

    return run


# ---------------------------------------------------------------- studies


def study_chunks(fn, images, sizes, repeats):
    rows = []
    for size in sizes:
        median, _, mem = run_ours(fn, images, 32, repeats, chunk_size=size)
        rows.append(
            {"chunk_size": size, "seconds": median, "points_per_s": len(images) * 32 / median, "peak_extra_mb": mem}
        )
        print(f"  chunk {size:5d}: {rows[-1]['points_per_s']:8.1f} points/s  (+{mem:.0f} MB)", flush=True)
    return rows


def study_quadrature(fn, images, rules, candidates):
    out = {}
    for rule in rules:
        needed = None
        curve = []
        for steps in candidates:
            if rule == "trapezoid" and steps < 2:
                continue
            _, info = sat_fast.saliency(fn, images, steps=steps, rule=rule, return_info=True, chunk_size=256)
            rel = np.asarray(info["relative_completeness_error"])
            curve.append({"steps": steps, "median": float(np.median(rel)), "max": float(rel.max())})
            if needed is None and rel.max() <= 0.01:
                needed = steps
                break
        out[rule] = {"steps_for_1pct_max_error": needed, "curve": curve}
        print(f"  {rule:15s}: {needed} steps", flush=True)
    return out


_BUDGET_CHILD = """
import json, sys, time
import numpy as np, jax, jax.numpy as jnp
sys.path.insert(0, {bench_dir!r})
import bench_saliency as b, sat_fast
model, variables, images = b.make_model("small_cnn")
fn = lambda z: model.apply(variables, z)
t0 = time.perf_counter()
maps, info = sat_fast.saliency(fn, images, steps=256, memory_budget={budget}, return_info=True)
maps.block_until_ready()
seconds = time.perf_counter() - t0
# VmHWM, not ru_maxrss: Linux carries the parent's high-water mark into ru_maxrss across fork + exec
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) * 1024
print(json.dumps({{"seconds": seconds, "peak_rss_bytes": peak,
                  "chunk_size": info["chunk_size"],
                  "max_rel_completeness": float(info["relative_completeness_error"].max())}}))
"""


def study_budget(budget: int):
    child = _BUDGET_CHILD.format(bench_dir=str(HERE), budget=budget)
    env = dict(os.environ)
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, cwd="/tmp")
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def unchunked_estimate(fn, images, steps):
    """XLA's working-memory figure for a 64-point chunk of this model, scaled to all images x steps at once."""
    rows = 64
    sat_fast.saliency(fn, images[:2], steps=steps, chunk_size=rows)
    for spec, compiled in cached_kernels("block_kernel"):
        if spec.config.points == steps and spec.block * spec.rows == rows:
            return working_bytes(compiled) / rows * len(images) * steps
    raise RuntimeError("no 64-point kernel was compiled")


# ---------------------------------------------------------------- main


def bench_model(name, repeats, batch_sizes, quick, n_images=None, naive_repeats=None, pair_batch_sizes=None):
    model, variables, images = make_model(name, n_images)
    fn = functools.partial(model.apply, variables)
    steps = 32
    points = len(images) * steps
    print(f"\n{name}: {len(images)} images {images.shape[1:]}, IG {steps} steps = {points} gradient points", flush=True)
    res = {"images": len(images), "shape": list(images.shape[1:]), "steps": steps, "repeats": repeats}

    def record(label, median, times, mem, cpu_seconds=None, **extra):
        row = {
            "seconds": median,
            "cpu_seconds": cpu_seconds,
            "runs": times,
            "images_per_s": len(images) / median,
            "points_per_s": points / median,
            "peak_extra_rss_mb": mem,
            **extra,
        }
        print(
            f"  {label:28s} {row['images_per_s']:8.2f} img/s {row['points_per_s']:9.1f} points/s  +{mem:6.0f} MB",
            flush=True,
        )
        return row

    naive_repeats = naive_repeats or (1 if quick else repeats)
    runs = {"sat_fast.saliency": make_ours(fn, images, steps)}
    runs.update({f"raw jax.grad bs={bs}": make_raw(fn, images, steps, bs) for bs in batch_sizes})
    pair_batch_sizes = [bs for bs in (pair_batch_sizes or batch_sizes) if bs <= steps]
    runs.update({f"saliency pkg bs={bs}": make_pair(fn, images, steps, bs) for bs in pair_batch_sizes})
    runs["naive per-image loop"] = make_naive(fn, images, steps)
    counts = dict.fromkeys(runs, repeats)
    counts["naive per-image loop"] = naive_repeats
    print(f"  {repeats} interleaved repeats (naive loop: {naive_repeats}) after one warm-up each", flush=True)
    measured = interleaved(runs, counts)

    _, info = sat_fast.saliency(fn, images, steps=steps, return_info=True)
    res["sat_fast"] = record("sat_fast.saliency", *measured["sat_fast.saliency"], chunk_size=info["chunk_size"])
    raw = {bs: record(f"raw jax.grad bs={bs}", *measured[f"raw jax.grad bs={bs}"], batch_size=bs) for bs in batch_sizes}
    best_raw = max(raw.values(), key=lambda r: r["points_per_s"])
    res["raw_grad"] = {"by_batch_size": list(raw.values()), "best": best_raw}
    pair = {
        bs: record(f"saliency pkg bs={bs}", *measured[f"saliency pkg bs={bs}"], batch_size=bs)
        for bs in pair_batch_sizes
    }
    best_pair = max(pair.values(), key=lambda r: r["points_per_s"])
    res["saliency_package"] = {"by_batch_size": list(pair.values()), "best": best_pair}
    res["naive_loop"] = record("naive per-image loop", *measured["naive per-image loop"], repeats=naive_repeats)
    res["overhead_vs_raw"] = best_raw["points_per_s"] / res["sat_fast"]["points_per_s"] - 1
    best_raw_cpu = min(r["cpu_seconds"] for r in raw.values())
    best_pair_cpu = min(r["cpu_seconds"] for r in pair.values())
    res["cpu_overhead_vs_raw"] = res["sat_fast"]["cpu_seconds"] / best_raw_cpu - 1
    res["cpu_speedup_vs_saliency_package"] = best_pair_cpu / res["sat_fast"]["cpu_seconds"]
    res["speedup_vs_saliency_package"] = res["sat_fast"]["points_per_s"] / best_pair["points_per_s"]
    res["speedup_vs_naive"] = res["sat_fast"]["points_per_s"] / res["naive_loop"]["points_per_s"]
    print(
        f"  overhead vs best raw grad: {100 * res['overhead_vs_raw']:+.1f}%   "
        f"vs saliency pkg: {res['speedup_vs_saliency_package']:.2f}x   vs naive: {res['speedup_vs_naive']:.2f}x"
    )
    print(
        f"  CPU time: overhead vs best raw grad {100 * res['cpu_overhead_vs_raw']:+.1f}%   "
        f"vs saliency pkg {res['cpu_speedup_vs_saliency_package']:.2f}x"
    )
    return res, fn, images


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results" / "saliency.json"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats and no ResNet (smoke run)")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["resnet18", "sweep", "budget", "quadrature"],
        help="studies to leave out",
    )
    parser.add_argument("--small-images", type=int, default=64, help="images for the small CNN (default 64)")
    parser.add_argument("--resnet-images", type=int, default=8, help="images for ResNet-18 (default 8)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="*", default=[1, 4, 8, 16, 32, 64, 128], help="small CNN batch sizes"
    )
    parser.add_argument("--resnet-batch-sizes", type=int, nargs="*", default=[1, 4, 16], help="ResNet batch sizes")
    parser.add_argument("--pair-batch-sizes", type=int, nargs="*", default=None, help="saliency package, small CNN")
    parser.add_argument("--resnet-pair-batch-sizes", type=int, nargs="*", default=[4, 16], help="saliency package")
    parser.add_argument("--resnet-naive-repeats", type=int, default=3)
    args = parser.parse_args()

    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()],
        },
    }
    repeats = 2 if args.quick else 5
    small, small_fn, small_images = bench_model(
        "small_cnn",
        repeats,
        tuple(args.batch_sizes),
        args.quick,
        n_images=args.small_images,
        pair_batch_sizes=args.pair_batch_sizes,
    )
    results["small_cnn"] = small

    if "sweep" not in args.skip:
        print("\nchunk-size sweep (small CNN, IG-32, 64 images):", flush=True)
        results["chunk_sweep_small_cnn"] = study_chunks(small_fn, small_images, (4, 8, 16, 32, 64, 128, 256, 512), 3)

    if not args.quick and "resnet18" not in args.skip:
        # fewer repeats for the big model: one IG-32 run of 8 images is ~10-30 s on 2 shared cores
        results["resnet18"], _, _ = bench_model(
            "resnet18",
            3,
            tuple(args.resnet_batch_sizes),
            args.quick,
            n_images=args.resnet_images,
            naive_repeats=args.resnet_naive_repeats,
            pair_batch_sizes=args.resnet_pair_batch_sizes,
        )

    if "budget" not in args.skip:
        print("\nIG-256, 64 images 64x64, memory_budget=1 GB, fresh subprocess:", flush=True)
        budget = study_budget(2**30)
        budget["budget_bytes"] = 2**30
        budget["unchunked_working_set_estimate_bytes"] = unchunked_estimate(small_fn, small_images, 256)
        print(
            f"  peak RSS {budget['peak_rss_bytes'] / 2**20:.0f} MB, {budget['seconds']:.1f} s, "
            f"chunk {budget['chunk_size']}, unchunked estimate "
            f"{budget['unchunked_working_set_estimate_bytes'] / 2**30:.1f} GB",
            flush=True,
        )
        results["ig256_budget"] = budget

    if "quadrature" not in args.skip:
        results["quadrature"] = {}
        for name in ("small_cnn", "small_cnn_gelu"):
            print(f"\nIG steps for max relative completeness error <= 1% ({name}, 8 images):", flush=True)
            model, variables, images = make_model(name)
            results["quadrature"][name] = study_quadrature(
                functools.partial(model.apply, variables),
                images[:8],
                ("left", "right", "midpoint", "trapezoid", "gauss_legendre"),
                (2, 4, 8, 16, 32, 64, 128, 256, 512),
            )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
