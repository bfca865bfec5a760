"""RLE-native segment statistics vs pycocotools.mask.decode + the dense kernel.

Two experiments, on synthetic COCO-like data made here (nothing downloaded):

1. COCO-like images (640x480, 7 instance masks each, random star-shaped
   polygons rasterised and RLE-encoded by pycocotools): images per second for
   - ``decode``: ``pycocotools.mask.decode`` alone (the baseline's first half);
   - ``decode+dense``: decode, then ``sat_fast.segment_stats(masks=...)``;
   - ``rle``: ``sat_fast.segment_stats(segments=...)`` on RLE Segments whose
     counts were parsed at load time (as ``from_coco`` does);
   - ``parse+rle``: the same, starting from the compressed COCO strings.
2. Masks of equal run count and growing area (100 columns, one run per
   column, growing run length): time per mask for the RLE path and for the
   dense baseline.

Every configuration is timed ``--repeats`` times on the same data in the same
process; the table shows medians. Results go to ``--out`` as JSON.

Usage: python benchmarks/bench_rle.py [--images 200] [--threads 1] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pycocotools.mask as coco_mask

import sat_fast
from sat_fast import _core, segment_stats
from sat_fast.segments import Segments


def polygon(rng: np.random.Generator, h: int, w: int) -> list[float]:
    """A random star-shaped polygon, COCO style (flat x, y list)."""
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    radius = rng.uniform(15, 160)
    n = int(rng.integers(8, 24))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.5, 1.0, n)
    xs = np.clip(cx + r * np.cos(angles), 0, w)
    ys = np.clip(cy + r * np.sin(angles), 0, h)
    return np.stack([xs, ys], 1).ravel().tolist()


def make_dataset(n: int, h: int, w: int, instances: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    saliency = rng.standard_normal((n, h, w)).astype(np.float32)
    rles = [[coco_mask.frPyObjects([polygon(rng, h, w)], h, w)[0] for _ in range(instances)] for _ in range(n)]
    return saliency, rles


def segments_from_strings(rles_per_image, h: int, w: int) -> list[Segments]:
    """One Segments per image, each instance its own segment (as from_coco(keep_instances=True))."""
    out = []
    for i, rles in enumerate(rles_per_image):
        counts, offsets = _core.rle_from_strings([r["counts"] for r in rles])
        k = len(rles)
        out.append(
            Segments(
                tuple(f"i{j}" for j in range(k)),
                h,
                w,
                counts=counts,
                instance_offsets=offsets,
                segment_instances=np.arange(k + 1),
                image_id=i,
            )
        )
    return out


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


def segmenter_label_maps(h: int, w: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(superpixels, Lab pixels) of scikit-image's bundled photographs resized to (h, w): SLIC and Felzenszwalb."""
    from skimage import color, data, segmentation, transform

    maps = []
    for name in PHOTOS:
        rgb = transform.resize(getattr(data, name)(), (h, w), anti_aliasing=True)
        maps.append((rgb, segmentation.slic(rgb, n_segments=400, compactness=10, start_label=0)))
        maps.append((rgb, segmentation.felzenszwalb(rgb, scale=100, sigma=0.5, min_size=50)))
    out = []
    for rgb, sp in maps:
        lab = color.rgb2lab(rgb).reshape(-1, 3)
        out.append((sp, lab))
    return out


def group_superpixels(sp: np.ndarray, lab: np.ndarray, categories: int, seed: int) -> np.ndarray:
    """Category per pixel: k-means on the superpixels' mean Lab colour, a stand-in for a semantic grouping."""
    ids = sp.ravel()
    n = int(ids.max()) + 1
    size = np.bincount(ids, minlength=n).astype(np.float64)
    mean = np.stack([np.bincount(ids, lab[:, j], minlength=n) for j in range(3)], 1) / np.maximum(size, 1)[:, None]
    rng = np.random.default_rng(seed)
    centres = mean[rng.choice(n, categories, replace=False)]
    for _ in range(10):
        assign = ((mean[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        for c in range(categories):
            if (assign == c).any():
                centres[c] = mean[assign == c].mean(0)
    return assign[sp]


def segmenter_dataset(n: int, h: int, w: int, categories: int, seed: int = 0):
    """n images: saliency, per image the COCO RLEs of its non-empty categories, and the Segments built from them."""
    rng = np.random.default_rng(seed)
    maps = segmenter_label_maps(h, w)
    saliency = rng.standard_normal((n, h, w)).astype(np.float32)
    rles = []
    for i in range(n):
        sp, lab = maps[i % len(maps)]
        cat = group_superpixels(sp, lab, categories, seed=i)
        present = [c for c in range(categories) if (cat == c).any()]
        stack = np.stack([cat == c for c in present], axis=2).astype(np.uint8)
        rles.append(coco_mask.encode(np.asfortranarray(stack)))
    return saliency, rles


def experiment_segmenter(args, categories: int) -> dict:
    """Real segmenter output: superpixels of bundled photographs grouped into categories, one RLE per category."""
    h, w = args.height, args.width
    sal, rles = make_dataset_cached(args, categories)
    segs = segments_from_strings(rles, h, w)
    runs = np.mean([sum(np.count_nonzero(c[1::2]) for j in range(len(s)) for c in s.rle(j)) for s in segs])
    a = segment_stats(sal[:5], segments=segs[:5], threads=args.threads)
    for i in range(5):
        b = dense_stats(sal[i], rles[i], args.threads)
        k = len(rles[i])
        assert np.array_equal(a["count"][i, :k], b["count"][0])
        assert np.allclose(a["sum"][i, :k], b["sum"][0], rtol=1e-9, atol=1e-9)
    n = len(rles)
    empty = [_no_segments(h, w)] * n
    timings = median_seconds(
        {
            "decode+dense": lambda: [dense_stats(sal[i], rles[i], args.threads) for i in range(n)],
            "rle": lambda: segment_stats(sal, segments=segs, threads=args.threads),
            "image pass only": lambda: segment_stats(sal, segments=empty, threads=args.threads),
        },
        args.repeats,
    )
    base = timings["decode+dense"]
    rows = {k: {"seconds": t, "images_per_s": n / t, "speedup_vs_decode_dense": base / t} for k, t in timings.items()}
    pixels = n * h * w
    summary_ns = timings["image pass only"] / pixels * 1e9
    print(
        f"\nsegmenter output, {categories} categories: {n} images {w}x{h} (~{runs:.0f} runs per image), "
        f"threads={args.threads}, median of {args.repeats}"
    )
    print(f"{'path':<16}{'images/s':>12}{'ms/image':>11}{'ns/pixel':>10}{'vs decode+dense':>18}")
    for k, r in rows.items():
        print(
            f"{k:<16}{r['images_per_s']:>12.0f}{1e3 / r['images_per_s']:>11.3f}"
            f"{r['seconds'] / pixels * 1e9:>10.3f}{r['speedup_vs_decode_dense']:>17.1f}x"
        )
    return {
        "images": n,
        "categories": categories,
        "height": h,
        "width": w,
        "mean_runs_per_image": runs,
        "threads": args.threads,
        "image_pass_ns_per_pixel": summary_ns,
        "paths": rows,
    }


def make_dataset_cached(args, categories: int):
    return segmenter_dataset(args.segmenter_images, args.height, args.width, categories)


def decode(rles) -> np.ndarray:
    # pycocotools' Cython decoder trips a numpy 2 DeprecationWarning on every call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(rles)


def dense_stats(x: np.ndarray, rles, threads: int):
    """The baseline at its best: decode, then the dense kernel on the transposed image.

    decode returns (H, W, K) in Fortran order, which is (K, W, H) in C order:
    reducing the transposed saliency (one copy, shared by all K masks) against
    those masks needs no copy of the masks at all. Statistics do not depend on
    pixel order (sums up to rounding).
    """
    masks = decode(rles).T.view(bool)[None]  # (1, K, W, H), no copy
    xt = np.ascontiguousarray(x.T)[None]
    return sat_fast.segment_stats(xt, masks=masks, threads=threads)


def median_seconds(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each function; every repeat runs all of them in turn,
    so that load from other processes hits every path alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        names = list(fns)
        names = names[i % len(names) :] + names[: i % len(names)]
        for name in names:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(t) for k, t in times.items()}


def experiment_coco(args) -> dict:
    h, w = args.height, args.width
    sal, rles = make_dataset(args.images, h, w, args.instances)
    segs = segments_from_strings(rles, h, w)
    runs = np.mean([sum(np.count_nonzero(c[1::2]) for j in range(len(s)) for c in s.rle(j)) for s in segs])
    # Same answers before timing anything.
    a = segment_stats(sal[:5], segments=segs[:5], threads=args.threads)
    for i in range(5):
        b = dense_stats(sal[i], rles[i], args.threads)
        assert np.array_equal(a["count"][i], b["count"][0])
        assert np.array_equal(a["max"][i], b["max"][0])
        assert np.allclose(a["sum"][i], b["sum"][0], rtol=1e-9, atol=1e-9)
    n = args.images
    timings = median_seconds(
        {
            "decode": lambda: [decode(r) for r in rles],
            "decode+dense": lambda: [dense_stats(sal[i], rles[i], args.threads) for i in range(n)],
            "rle": lambda: segment_stats(sal, segments=segs, threads=args.threads),
            "parse+rle": lambda: segment_stats(sal, segments=segments_from_strings(rles, h, w), threads=args.threads),
        },
        args.repeats,
    )
    base = timings["decode+dense"]
    rows = {k: {"seconds": t, "images_per_s": n / t, "speedup_vs_decode_dense": base / t} for k, t in timings.items()}
    print(
        f"\n{n} images {w}x{h}, {args.instances} instance masks each (~{runs:.0f} runs per image), "
        f"threads={args.threads}, median of {args.repeats}"
    )
    print(f"{'path':<14}{'images/s':>12}{'ms/image':>11}{'vs decode+dense':>18}")
    for k, r in rows.items():
        print(
            f"{k:<14}{r['images_per_s']:>12.0f}{1e3 / r['images_per_s']:>11.3f}{r['speedup_vs_decode_dense']:>17.1f}x"
        )
    return {
        "images": n,
        "height": h,
        "width": w,
        "instances": args.instances,
        "mean_runs_per_image": runs,
        "threads": args.threads,
        "paths": rows,
    }


def experiment_area(args) -> dict:
    """Masks with 100 runs each (one per column) whose length, and so area, grows."""
    # Many masks per image, so the per-image summary (timed on its own and
    # subtracted) does not drown the per-mask cost; fewer for the slow baseline.
    h, w, cols, masks_per_image, dense_masks = args.height, args.width, 100, 400, 20
    rng = np.random.default_rng(1)
    x = rng.standard_normal((h, w)).astype(np.float32)
    rows = []
    print(
        f"\nequal run count ({cols} runs per mask), growing area; {masks_per_image} masks on one {w}x{h} image "
        f"({dense_masks} for decode+dense)"
    )
    print(f"{'run length':>11}{'area px':>10}{'rle us/mask':>13}{'dense us/mask':>15}")
    for length in (4, 16, 64, 160, 320, h - 1):
        counts, masks = [], np.zeros((dense_masks, h, w), bool)
        for k in range(masks_per_image):
            c0 = int(rng.integers(0, w - cols))
            r0 = int(rng.integers(0, h - length + 1))
            # One run per column: COCO counts of the rectangle, written directly.
            gap = h - length
            runs = [c0 * h + r0] + [length, gap] * (cols - 1) + [length, h * w - (c0 + cols - 1) * h - r0 - length]
            counts.append(np.array(runs, np.uint32))
            if k < dense_masks:
                masks[k, r0 : r0 + length, c0 : c0 + cols] = True
                assert np.array_equal(_rle(masks[k]), counts[-1])
        offsets = np.concatenate([[0], np.cumsum([len(c) for c in counts])])
        seg = Segments(
            tuple(f"m{k}" for k in range(masks_per_image)),
            h,
            w,
            counts=np.concatenate(counts),
            instance_offsets=offsets,
            segment_instances=np.arange(masks_per_image + 1),
        )
        rles = coco_mask.encode(np.asfortranarray(masks[:dense_masks].transpose(1, 2, 0).astype(np.uint8)))
        t = median_seconds(
            {
                "rle": lambda: segment_stats([x], segments=[seg], threads=args.threads),
                "empty": lambda: segment_stats([x], segments=[_no_segments(h, w)], threads=args.threads),
                "dense": lambda: dense_stats(x, rles, args.threads),
            },
            args.repeats,
        )
        t_rle, t_empty, t_dense = t["rle"], t["empty"], t["dense"]
        per_rle = (t_rle - t_empty) / masks_per_image * 1e6
        per_dense = t_dense / dense_masks * 1e6
        rows.append(
            {
                "run_length": length,
                "runs": cols,
                "area": cols * length,
                "rle_us_per_mask": per_rle,
                "rle_image_summary_us": t_empty * 1e6,
                "dense_us_per_mask": per_dense,
            }
        )
        print(f"{length:>11}{cols * length:>10}{per_rle:>13.2f}{per_dense:>15.2f}")
    print(
        f"(rle per mask: time with the masks minus the image alone, {rows[0]['rle_image_summary_us']:.0f} us, per mask;"
        " where the masks cover many times the image, the summary path is chosen and its own per-image pass,"
        " ~0.3 ms, counts in the per-mask time)"
    )
    return {"rows": rows, "masks_per_image": masks_per_image}


def _rle(mask: np.ndarray) -> np.ndarray:
    from sat_fast.segments import rle_encode

    return rle_encode(mask)


def _no_segments(h: int, w: int) -> Segments:
    return Segments((), h, w, counts=np.zeros(0, np.uint32), instance_offsets=[0], segment_instances=[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--instances", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--segmenter-images", type=int, default=48, help="images of the segmenter experiments")
    p.add_argument("--only-segmenter", action="store_true", help="run the segmenter experiments alone")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_rle.json"))
    args = p.parse_args()
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "kernel_variant": _core.kernel_variant(),
        },
        "segmenter_7": experiment_segmenter(args, 7),
        "segmenter_20": experiment_segmenter(args, 20),
    }
    if not args.only_segmenter:
        result["coco_like"] = experiment_coco(args)
        result["equal_runs_growing_area"] = experiment_area(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
