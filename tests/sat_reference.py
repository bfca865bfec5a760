"""Independent float64 numpy references for the kernel's statistics.

Deliberately naive: boolean indexing per (image, segment), no shared code with
sat_fast.
"""

from __future__ import annotations

import numpy as np

KEYS = ("count", "sum", "pos_sum", "neg_sum", "abs_sum", "sq_sum", "min", "max")


def _segment_values(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return dict(count=0, sum=0.0, pos_sum=0.0, neg_sum=0.0, abs_sum=0.0, sq_sum=0.0, min=np.nan, max=np.nan)
    return dict(
        count=values.size,
        sum=values.sum(),
        pos_sum=np.maximum(values, 0).sum(),
        neg_sum=np.minimum(values, 0).sum(),
        abs_sum=np.abs(values).sum(),
        sq_sum=(values * values).sum(),
        min=values.min(),
        max=values.max(),
    )


def _collect(saliency: np.ndarray, member, k: int, skip: bool) -> dict[str, np.ndarray]:
    b = saliency.shape[0]
    out = {key: np.zeros((b, k), np.int64 if key == "count" else np.float64) for key in KEYS}
    out["min"][:] = np.nan
    out["max"][:] = np.nan
    totals = {"total_sum": np.zeros(b), "total_abs": np.zeros(b), "nonfinite": np.zeros(b, np.int64)}
    for i in range(b):
        x = saliency[i].astype(np.float64)
        finite = np.isfinite(x)
        totals["total_sum"][i] = x[finite].sum()
        totals["total_abs"][i] = np.abs(x[finite]).sum()
        totals["nonfinite"][i] = (~finite).sum() if skip else 0
        for s in range(k):
            m = member(i, s)
            if skip:
                m = m & finite
            for key, val in _segment_values(x[m]).items():
                out[key][i, s] = val
    out.update(totals)
    out["pixels"] = np.full(b, saliency.shape[1] * saliency.shape[2], np.int64)
    return out


def label_stats(saliency, labels, k, ignore_index=None, skip=False):
    labels = np.asarray(labels).astype(np.int64)
    return _collect(np.asarray(saliency), lambda i, s: labels[i] == s, k, skip)


def label_unassigned(saliency, labels, ignore_index, skip=False):
    labels = np.asarray(labels).astype(np.int64)
    out = _collect(np.asarray(saliency), lambda i, s: labels[i] == ignore_index, 1, skip)
    return {key: out[key][:, 0] for key in KEYS}


def mask_stats(saliency, masks, skip=False):
    masks = np.asarray(masks, bool)
    return _collect(np.asarray(saliency), lambda i, s: masks[i, s], masks.shape[1], skip)


def mask_unassigned(saliency, masks, skip=False):
    masks = np.asarray(masks, bool)
    none = ~masks.any(axis=1)
    out = _collect(np.asarray(saliency), lambda i, s: none[i], 1, skip)
    return {key: out[key][:, 0] for key in KEYS}


def blobs(rng: np.random.Generator, b: int, h: int, w: int, k: int, cells: int | None = None) -> np.ndarray:
    """Spatially coherent labels: Voronoi cells with random segment ids."""
    cells = cells or k
    out = np.empty((b, h, w), np.int64)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(b):
        cy = rng.uniform(0, h, cells)
        cx = rng.uniform(0, w, cells)
        d = (yy[..., None] - cy) ** 2 + (xx[..., None] - cx) ** 2
        cell = d.argmin(-1)
        ids = rng.integers(0, k, cells)
        out[i] = ids[cell]
    return out


def assert_stats_close(got, ref, *, keys=KEYS + ("total_sum", "total_abs", "pixels"), rtol=1e-12, atol=1e-9):
    for key in keys:
        g = np.asarray(got[key])
        r = np.asarray(ref[key])
        assert g.shape == r.shape, (key, g.shape, r.shape)
        if key in ("count", "pixels", "nonfinite") or key in ("min", "max"):
            np.testing.assert_array_equal(g, r, err_msg=key)
        else:
            scale = max(1.0, float(np.nanmax(np.abs(r))) if r.size else 1.0)
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol * scale, err_msg=key)


def covered_stats(saliency, member, k, coverage):
    """Statistics over covered pixels only: ``member(i, s)`` the (H, W) mask of segment s in image i."""
    saliency = np.asarray(saliency, np.float64)
    coverage = np.asarray(coverage, bool)
    b = saliency.shape[0]
    out = {key: np.zeros((b, k), np.int64 if key == "count" else np.float64) for key in KEYS}
    out["min"][:] = np.nan
    out["max"][:] = np.nan
    out["total_sum"] = np.array([saliency[i][coverage[i]].sum() for i in range(b)])
    out["total_abs"] = np.array([np.abs(saliency[i][coverage[i]]).sum() for i in range(b)])
    out["pixels"] = coverage.reshape(b, -1).sum(axis=1).astype(np.int64)
    for i in range(b):
        for s in range(k):
            for key, val in _segment_values(saliency[i][member(i, s) & coverage[i]]).items():
                out[key][i, s] = val
    return out


def encode_rle_string(counts: np.ndarray) -> str:
    """pycocotools' rleToString in Python: 5-bit groups, differences to the count two before from the third on."""
    out = []
    for i, c in enumerate(counts.astype(np.int64)):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def results_of_both_kernels(script: str, in_path, tmp_path, env=None) -> dict[str, dict[str, np.ndarray]]:
    """Runs `script in_path out_path` once with the portable kernel (SAT_FAST_KERNEL=generic) and once with the
    dispatched one, each in a fresh interpreter; returns the arrays each saved to out_path (np.savez), by variant
    ("generic", "default")."""
    import os
    import subprocess
    import sys

    results = {}
    for variant in ("generic", "default"):
        run_env = dict(os.environ if env is None else env)
        run_env.pop("SAT_FAST_KERNEL", None)
        if variant == "generic":
            run_env["SAT_FAST_KERNEL"] = "generic"
        out = tmp_path / f"{variant}.npz"
        subprocess.run([sys.executable, "-c", script, str(in_path), str(out)], env=run_env, check=True, cwd=tmp_path)
        with np.load(out) as z:
            results[variant] = dict(z)
    return results
