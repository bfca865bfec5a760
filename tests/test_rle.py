"""The RLE-native reduction against pycocotools' decoder and float64 numpy."""

from __future__ import annotations

import warnings

import numpy as np
import pycocotools.mask as coco_mask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sat_reference import results_of_both_kernels

from sat_fast import _core, segment_stats
from sat_fast.segments import Segments, rle_decode, rle_encode


def random_masks(rng: np.random.Generator, h: int, w: int, n: int) -> list[np.ndarray]:
    """Blobs, noise, stripes, full and single-pixel masks: runs of every length and shape."""
    yy, xx = np.mgrid[:h, :w]
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            cy, cx = rng.uniform(-2, h + 2), rng.uniform(-2, w + 2)
            r = rng.uniform(0.5, max(h, w))
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        elif kind == 1:
            m = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        elif kind == 2:
            m = (xx + 2 * yy) % rng.integers(2, 9) < 2
        elif kind == 3:
            m = np.zeros((h, w), bool)
            m[rng.integers(0, h), rng.integers(0, w)] = True
        else:
            m = np.zeros((h, w), bool)
            r0, r1 = sorted(rng.integers(0, h + 1, 2))
            m[r0 : r1 + 1] = True
        out.append(m)
    return out


def coco_decode(rle) -> np.ndarray:
    """pycocotools' decoder, the reference; it trips a numpy 2 DeprecationWarning inside its Cython code."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return coco_mask.decode(rle).astype(bool)


def coco_counts(mask: np.ndarray) -> np.ndarray:
    """Counts of pycocotools' own encoder, via its compressed string."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts, offsets = _core.rle_from_strings([rle["counts"]])
    assert offsets.tolist() == [0, len(counts)]
    return counts


def reference(x: np.ndarray, mask: np.ndarray, skip: bool = False) -> dict[str, float]:
    v = x.astype(np.float64)[mask]
    if skip:
        v = v[np.isfinite(v)]
    return {
        "count": v.size,
        "pos_sum": np.maximum(v, 0).sum(),
        "neg_sum": np.minimum(v, 0).sum(),
        "sq_sum": (v * v).sum(),
        "min": v.min() if v.size else np.nan,
        "max": v.max() if v.size else np.nan,
    }


def check(stats, row: int, ref: dict[str, float], scale: float) -> None:
    # Differences of float64 prefix sums: the error is a few ulps of the
    # magnitude summed along the columns the runs touch, bounded by the image.
    assert stats["count"][row] == ref["count"]
    for key in ("pos_sum", "neg_sum", "sq_sum"):
        assert abs(stats[key][row] - ref[key]) <= 1e-13 * scale + 1e-300, key
    np.testing.assert_array_equal(stats["min"][row], ref["min"])
    np.testing.assert_array_equal(stats["max"][row], ref["max"])


# reduce_rle's two paths (sat/rle.hpp): "area" reduces the covered pixels of a transposed copy, "summary" queries
# per-image sum trees; "auto" picks one per image by cost, so each is also forced here.
PATHS = pytest.mark.parametrize("path", ["area", "summary"])


def reduce(maps, segments: list[list[list[np.ndarray]]], unassigned=False, skip=False, threads=None, path="auto"):
    counts, inst, segs, imgs = [], [0], [0], [0]
    for image in segments:
        for seg in image:
            for c in seg:
                counts.append(np.asarray(c, np.uint32))
                inst.append(inst[-1] + len(c))
            segs.append(segs[-1] + len(seg))
        imgs.append(imgs[-1] + len(image))
    out = _core.reduce_rle(
        list(maps),
        np.array(imgs),
        np.array(segs),
        np.array(inst),
        np.concatenate(counts) if counts else np.zeros(0, np.uint32),
        unassigned=unassigned,
        skip_nonfinite=skip,
        threads=threads,
        path=path,
    )
    return {k: (a[0] if a.ndim == 2 else a) for k, a in out.items()}


def test_string_decoder_matches_pycocotools_and_own_encoder():
    rng = np.random.default_rng(1)
    for m in random_masks(rng, 37, 53, 10) + [np.zeros((5, 4), bool), np.ones((5, 4), bool)]:
        counts = coco_counts(m)
        np.testing.assert_array_equal(counts, rle_encode(m))
        np.testing.assert_array_equal(rle_decode(counts, *m.shape), m)
        # pycocotools as the reference decoder of the same counts
        rle = coco_mask.frPyObjects({"counts": counts.tolist(), "size": list(m.shape)}, *m.shape)
        np.testing.assert_array_equal(coco_decode(rle), m)


@pytest.mark.parametrize("bad", [b"\x01", "0" * 20 + "!", "o", "1O"])
def test_malformed_strings_are_rejected(bad):
    with pytest.raises(ValueError, match="malformed COCO RLE string 0"):
        _core.rle_from_strings([bad])


@PATHS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (16, 16), (17, 33), (50, 41), (97, 64)])
def test_matches_decoded_reference(dtype, shape, path):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    h, w = shape
    x = (rng.standard_normal((h, w)) * rng.uniform(0.1, 100)).astype(dtype)
    masks = random_masks(rng, h, w, 10)
    segs = [[coco_counts(m)] for m in masks]
    # a segment made of three overlapping instances merges into their union
    segs.append([coco_counts(m) for m in masks[:3]])
    union = masks[0] | masks[1] | masks[2]
    out = reduce([x], [segs], unassigned=True, path=path)
    scale = np.abs(x.astype(np.float64)).sum() + np.square(x.astype(np.float64)).sum()
    for i, m in enumerate(masks + [union]):
        decoded = coco_decode(coco_mask.frPyObjects({"counts": segs[i][0].tolist(), "size": [h, w]}, h, w))
        if i < len(masks):
            np.testing.assert_array_equal(decoded, m)
        check(out, i, reference(x, m), scale)
    covered = np.logical_or.reduce(masks)
    check(out, len(segs), reference(x, ~covered), scale)
    assert abs(out["total_pos"][0] - np.maximum(x.astype(np.float64), 0).sum()) <= 1e-13 * scale
    assert abs(out["total_neg"][0] - np.minimum(x.astype(np.float64), 0).sum()) <= 1e-13 * scale


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6))
def test_property_equals_dense_kernel(h, w, seed, n):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((h, w))
    masks = random_masks(rng, h, w, n)
    seg = Segments.from_rle([f"s{i}" for i in range(n)], [[coco_counts(m)] for m in masks], h, w, image_id=0)
    rle = segment_stats(x[None], segments=[seg], include_unassigned=True)
    dense = segment_stats(x[None], masks=np.stack(masks)[None], include_unassigned=True)
    np.testing.assert_array_equal(rle["count"], dense["count"])
    np.testing.assert_array_equal(rle["min"], dense["min"])
    np.testing.assert_array_equal(rle["max"], dense["max"])
    np.testing.assert_array_equal(rle.unassigned["count"], dense.unassigned["count"])
    scale = np.abs(x).sum() + (x * x).sum()
    for key in ("sum", "abs_sum", "sq_sum", "pos_sum", "neg_sum"):
        np.testing.assert_allclose(rle[key], dense[key], rtol=0, atol=1e-13 * scale)
        np.testing.assert_allclose(rle.unassigned[key], dense.unassigned[key], rtol=0, atol=1e-13 * scale)


@pytest.mark.parametrize("path", ["area", "summary", "auto"])
def test_several_images_of_different_sizes_and_threads_agree_bitwise(path):
    rng = np.random.default_rng(5)
    maps, segs = [], []
    for h, w in [(30, 20), (7, 50), (64, 64), (1, 1), (33, 17)]:
        maps.append(rng.standard_normal((h, w)).astype(np.float32))
        segs.append([[coco_counts(m)] for m in random_masks(rng, h, w, 4)])
    one = reduce(maps, segs, unassigned=True, threads=1, path=path)
    two = reduce(maps, segs, unassigned=True, threads=2, path=path)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
    row = 0
    for x, image in zip(maps, segs, strict=True):
        for seg in image:
            m = rle_decode(seg[0], *x.shape)
            check(one, row, reference(x, m), np.abs(x.astype(np.float64)).sum() + np.square(x.astype(np.float64)).sum())
            row += 1


@PATHS
def test_nonfinite_raise_names_image_and_pixel_and_skip_leaves_them_out(path):
    rng = np.random.default_rng(7)
    good = rng.standard_normal((20, 20))
    bad = rng.standard_normal((20, 21))
    bad[3, 4] = np.nan
    bad[10, 0] = np.inf
    bad[0, 4] = -np.inf
    whole_columns = np.zeros((20, 21), bool)
    whole_columns[:, 2:9] = True  # one run over whole columns, some with non-finite pixels
    whole_columns[5:, 9] = True
    masks = [random_masks(rng, 20, 20, 2), random_masks(rng, 20, 21, 4) + [whole_columns]]
    segs = [[[coco_counts(m)] for m in ms] for ms in masks]
    with pytest.raises(ValueError, match=r"non-finite value \(-inf\) at image 1, pixel \(0, 4\)"):
        reduce([good, bad], segs, path=path)
    out = reduce([good, bad], segs, skip=True, unassigned=True, path=path)
    assert out["nonfinite"].tolist() == [0, 3]
    scale = np.abs(np.nan_to_num(bad, posinf=0, neginf=0)).sum() * 10 + 100
    for i, m in enumerate(masks[1]):
        check(out, 2 + i, reference(bad, m, skip=True), scale)
    covered = np.logical_or.reduce(masks[1])
    check(out, 7 + 1, reference(bad, ~covered, skip=True), scale)


@PATHS
def test_counts_that_do_not_sum_to_the_image_raise(path):
    x = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"instance 1 \(image 0\) sum to 19, expected H\*W = 4\*5 = 20"):
        reduce([x], [[[np.array([20])], [np.array([3, 4, 12])]]], path=path)
    with pytest.raises(ValueError, match="sum to 25"):
        reduce([x], [[[np.array([5, 20])]]], path=path)


def test_unknown_path_is_refused():
    with pytest.raises(ValueError, match="path must be 'auto', 'area' or 'summary', got 'dense'"):
        reduce([np.zeros((2, 2))], [[[np.array([4])]]], path="dense")


def test_segments_of_an_rle_segment_decode_to_the_union():
    rng = np.random.default_rng(3)
    masks = random_masks(rng, 12, 9, 3)
    seg = Segments.from_rle(
        ["a", "b"], [[coco_counts(masks[0]), coco_counts(masks[1])], [coco_counts(masks[2])]], 12, 9, image_id="img"
    )
    assert isinstance(seg, Segments) and seg.kind == "rle"
    got = seg.masks()
    np.testing.assert_array_equal(got[0], masks[0] | masks[1])
    np.testing.assert_array_equal(got[1], masks[2])


@pytest.mark.skipif(
    _core.kernel_variant() == "generic",
    reason="the dispatched kernel is the portable one here (no AVX2, or SAT_FAST_KERNEL=generic): nothing to compare",
)
def test_kernel_variants_agree_bitwise(tmp_path):
    """The AVX2 and portable kernels accumulate alike on both paths: the summaries each column in the same
    order, the area path each run's pixels in the same lanes."""
    import os

    import sat_fast

    rng = np.random.default_rng(11)
    shapes = [(37, 45), (16, 64), (50, 9)]  # widths: 8-column strips, 4-column strips and single columns
    data = {}
    for i, (h, w) in enumerate(shapes):
        for dtype in ("f4", "f8"):
            data[f"x{i}{dtype}"] = (rng.standard_normal((h, w)) * 10).astype(dtype)
    script = """
import sys, numpy as np
from sat_fast import _core
from sat_fast.segments import rle_encode
d = dict(np.load(sys.argv[1]))
out = {}
for dtype in ("f4", "f8"):
    maps = [d[f"x{i}{dtype}"] for i in range(3)]
    masks = [[x > t for t in (-1.0, 0.0, 0.5, 2.0)] for x in maps]
    counts = [rle_encode(m) for ms in masks for m in ms]
    inst = np.concatenate([[0], np.cumsum([len(c) for c in counts])])
    for path in ("area", "summary"):
        res = _core.reduce_rle(maps, np.array([0, 4, 8, 12]), np.arange(13), inst, np.concatenate(counts),
                               unassigned=True, threads=1, path=path)
        for k, a in res.items():
            out[f"{dtype}_{path}_{k}"] = a
np.savez(sys.argv[2], **out)
"""
    np.savez(tmp_path / "in.npz", **data)
    root = os.path.dirname(os.path.dirname(sat_fast.__file__))
    results = results_of_both_kernels(script, tmp_path / "in.npz", tmp_path, env=dict(os.environ, PYTHONPATH=root))
    assert results["generic"].keys() == results["default"].keys()
    for key, a in results["generic"].items():
        np.testing.assert_array_equal(a, results["default"][key], err_msg=key)
