"""The AVX2 kernels add through fused multiply-adds (issue 14): they must still round exactly like the portable ones.

fma(x, x, sq) equals sq + x * x only because x * x is exact in float64 for a float32 x, and fma(v, 1, s) equals
s + v for any v. These tests feed values where a wrong fusion would show (float32 extremes and subnormals, float64
values with full mantissas, whose squares are not exact) through every path: label runs, noisy labels, packed
masks and RLE segments, and compare the portable and the dispatched kernel bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sat_reference import results_of_both_kernels

from sat_fast import _core

SCRIPT = """
import sys, numpy as np, sat_fast
from sat_fast import _core
from sat_fast.segments import rle_encode
d = dict(np.load(sys.argv[1]))
out = {}
for dtype in ("f4", "f8"):
    x = d["x" + dtype]
    for name in ("runs", "noise", "noise_no_ignored", "noise_i32", "noise_u16"):
        res = sat_fast.segment_stats(x, d[name], num_segments=17, ignore_index=16, threads=2)
        out.update({f"{dtype}_{name}_{k}": res[k] for k in res})
    res = sat_fast.segment_stats(x, d["noise_i32"], num_segments=17, threads=2)
    out.update({f"{dtype}_noise_i32_no_ignore_{k}": res[k] for k in res})
    res = sat_fast.segment_stats(x, masks=d["masks"], threads=2)
    out.update({f"{dtype}_masks_{k}": res[k] for k in res})
    maps = list(x[:2])
    counts = [rle_encode(m) for i in range(2) for m in d["masks"][i]]
    k = d["masks"].shape[1]
    inst = np.concatenate([[0], np.cumsum([len(c) for c in counts])])
    res = _core.reduce_rle(maps, np.array([0, k, 2 * k]), np.arange(2 * k + 1), inst, np.concatenate(counts),
                           unassigned=True, threads=1)
    out.update({f"{dtype}_rle_{key}": a for key, a in res.items()})
# 16 segments, every label a segment (the vectorised noise path), on data where the minimum of a segment is a
# zero of either sign: which one depends on the order in which the extremes were merged
for name in ("xf4", "xzeros"):
    for labels in ("noise_no_ignored", "noise_i32", "noise_u16"):
        res = sat_fast.segment_stats(d[name], d[labels], num_segments=16, threads=2)
        out.update({f"k16_{name}_{labels}_{k}": res[k] for k in res})
# the runs path on the same zeros: each run's sums are folded and merged, its extremes kept in its segment's lanes
# across the chunk's runs and folded once; which zero the minimum (and, on the negated data, the maximum) is
# depends on the operand order of every step
for name in ("xzeros", "xnegzeros", "xsparsezeros", "xnegsparsezeros"):
    res = sat_fast.segment_stats(d[name], d["runs"], num_segments=17, threads=2)
    out.update({f"runs_{name}_{k}": res[k] for k in res})
out["variant"] = np.array(_core.kernel_variant())
np.savez(sys.argv[2], **out)
"""


def extreme_saliency(rng: np.random.Generator, b: int, h: int, w: int) -> dict[str, np.ndarray]:
    """float32: normal values mixed with +-max, +-smallest normal, subnormals and zeros of both signs; float64:
    full-mantissa values over a wide exponent range (their squares are not exact, so a fused square would differ)."""
    f32 = rng.standard_normal((b, h, w)).astype(np.float32)
    info = np.finfo(np.float32)
    specials = np.array([info.max, -info.max, info.tiny, -info.tiny, 1e-45, -1e-45, 3e-42, 0.0, -0.0], np.float32)
    where = rng.random((b, h, w)) < 0.2
    f32[where] = rng.choice(specials, int(where.sum()))
    f64 = rng.standard_normal((b, h, w)) * np.exp2(rng.integers(-60, 60, (b, h, w)))
    return {"xf4": f32, "xf8": f64}


@pytest.mark.skipif(
    _core.kernel_variant() == "generic",
    reason="the dispatched kernel is the portable one here (no AVX2, or SAT_FAST_KERNEL=generic): nothing to compare",
)
def test_fused_adds_round_like_the_portable_kernel(tmp_path):
    rng = np.random.default_rng(14)
    b, h, w = 3, 70, 90
    data = extreme_saliency(rng, b, h, w)
    # runs of every length (1..60, crossing rows; a mean of 30 keeps them on the runs path), and pure noise
    lengths = rng.integers(1, 61, b * h * w)
    runs = np.repeat(rng.integers(0, 17, lengths.size), lengths)[: b * h * w].reshape(b, h, w)
    data["runs"] = runs.astype(np.uint8)
    data["noise"] = rng.integers(0, 17, (b, h, w)).astype(np.uint8)
    # every label its own slot (no ignored pixel): the vectorised noise path, in each label dtype
    data["noise_no_ignored"] = rng.integers(0, 16, (b, h, w)).astype(np.uint8)
    data["noise_i32"] = rng.integers(0, 16, (b, h, w)).astype(np.int32)
    data["noise_u16"] = rng.integers(0, 16, (b, h, w)).astype(np.uint16)
    # non-negative float32 with many zeros of both signs: which zero a segment's minimum is depends on the order
    zeros = np.abs(rng.standard_normal((b, h, w))).astype(np.float32)
    where = rng.random((b, h, w)) < 0.3
    zeros[where] = np.where(rng.random(int(where.sum())) < 0.5, np.float32(0.0), np.float32(-0.0))
    data["xzeros"] = zeros
    data["xnegzeros"] = -zeros
    # the same with few zeros: a segment's lanes see a zero or not (about half of them, with ~46 pixels of a segment
    # per lane and chunk), so the order of the chunk's fold of the extremes lanes decides which zero is reported
    sparse = np.abs(rng.standard_normal((b, h, w))).astype(np.float32)
    where = rng.random((b, h, w)) < 0.015
    sparse[where] = np.where(rng.random(int(where.sum())) < 0.5, np.float32(0.0), np.float32(-0.0))
    data["xsparsezeros"] = sparse
    data["xnegsparsezeros"] = -sparse
    yy, xx = np.mgrid[:h, :w]
    k = 6
    masks = np.zeros((b, k, h, w), bool)
    for i in range(b):
        for j in range(k):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 40)
            masks[i, j] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    data["masks"] = masks
    np.savez(tmp_path / "in.npz", **data)
    results = results_of_both_kernels(SCRIPT, tmp_path / "in.npz", tmp_path)
    assert str(results["generic"].pop("variant")) == "generic"
    assert str(results["default"].pop("variant")) != "generic"
    assert results["generic"].keys() == results["default"].keys()
    # the extremes reach the sums: float32 max squared is finite in float64, so nothing was skipped
    assert np.isfinite(results["default"]["f4_runs_sq_sum"]).all()
    for key, a in results["generic"].items():
        np.testing.assert_array_equal(
            np.asarray(a).view(np.uint8), np.asarray(results["default"][key]).view(np.uint8), err_msg=key
        )


TOTALS_SCRIPT = """
import sys
import math

import numpy as np
import sat_fast
from sat_fast import _core
from sat_fast.segments import rle_encode
x = np.load(sys.argv[1])["x"]
mask = np.ones((1, 1) + x.shape[1:], bool)
counts = np.asarray(rle_encode(mask[0, 0]), np.uint32)
out = {}
for name, res in (
    ("labels", sat_fast.segment_stats(x, np.zeros(x.shape, np.uint8), num_segments=1)),
    ("masks", sat_fast.segment_stats(x, masks=mask)),
):
    out[name] = np.array([res["total_sum"][0], res["total_abs"][0]])
for path in ("area", "summary"):
    r = _core.reduce_rle([x[0]], np.array([0, 1]), np.array([0, 1]), np.array([0, len(counts)]), counts, path=path)
    out["rle_" + path] = np.array([r["total_pos"][0] + r["total_neg"][0], r["total_pos"][0] - r["total_neg"][0]])
np.savez(sys.argv[2], **out)
"""


def test_image_totals_are_exact_where_the_lane_order_makes_them_so(tmp_path):
    """Pixel i of a run goes to lane i % 8 and the lanes fold as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).

    In that order these totals are exact (2**53 + 2); any other fold, e.g. ((l0+l1)+(l2+l3)) + ..., rounds
    2**53 + 1 to 2**53 first. Sums of ordinary float32 values are exact in float64 whatever the order, so only
    data like this tells a wrong fold apart. Both kernels, every path that computes image totals.
    """
    row = np.array([2.0**53, 1, 0, 0, 0, 1, 0, 0])
    x = np.stack([row, -row])[None]  # (1, 2, 8): lanes 0, 1 and 5 of pos, and of neg
    np.savez(tmp_path / "in.npz", x=x)
    exact = [math.fsum(x.ravel()), math.fsum(np.abs(x).ravel())]
    assert exact == [0.0, 2.0**54 + 4]
    results = results_of_both_kernels(TOTALS_SCRIPT, tmp_path / "in.npz", tmp_path)
    for variant, res in results.items():
        for path, got in res.items():
            assert got.tolist() == exact, (variant, path, got.tolist())
