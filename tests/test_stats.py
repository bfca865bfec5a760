"""segment_stats against the float64 reference: dtypes, label patterns, masks, merging, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sat_reference import (
    KEYS,
    assert_stats_close,
    blobs,
    covered_stats,
    label_stats,
    label_unassigned,
    mask_stats,
    mask_unassigned,
    results_of_both_kernels,
)

import sat_fast
from sat_fast import _core

RNG = np.random.default_rng(1234)


def _labels(pattern: str, b: int, h: int, w: int, k: int, rng=RNG) -> np.ndarray:
    if pattern == "noise":
        return rng.integers(0, k, (b, h, w))
    if pattern == "blobs":
        return blobs(rng, b, h, w, k)
    if pattern == "single":
        return np.full((b, h, w), k - 1)
    if pattern == "empty_segments":  # only even segment ids occur
        return (rng.integers(0, (k + 1) // 2, (b, h, w)) * 2).clip(max=k - 1)
    if pattern == "stripes":
        return np.broadcast_to((np.arange(w) // 7) % k, (b, h, w)).copy()
    raise AssertionError(pattern)


@pytest.mark.parametrize("sal_dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("lab_dtype", [np.uint8, np.uint16, np.int32])
@pytest.mark.parametrize("pattern", ["noise", "blobs", "single", "empty_segments", "stripes"])
def test_labels_match_reference(sal_dtype, lab_dtype, pattern):
    k = 9
    sal = RNG.standard_normal((3, 37, 53)).astype(sal_dtype)
    lab = _labels(pattern, 3, 37, 53, k).astype(lab_dtype)
    got = sat_fast.segment_stats(sal, lab, num_segments=k)
    assert_stats_close(got, label_stats(sal, lab, k))
    assert got["count"].dtype == np.int64 and got["sum"].dtype == np.float64


@pytest.mark.parametrize("h, w", [(1, 1), (1, 7), (9, 1), (1, 64), (3, 65)])
def test_tiny_and_single_pixel_images(h, w):
    sal = RNG.standard_normal((4, h, w)).astype(np.float32)
    lab = RNG.integers(0, 3, (4, h, w)).astype(np.uint8)
    assert_stats_close(sat_fast.segment_stats(sal, lab, num_segments=3), label_stats(sal, lab, 3))
    masks = RNG.random((4, 3, h, w)) < 0.5
    assert_stats_close(sat_fast.segment_stats(sal, masks=masks), mask_stats(sal, masks))


def test_empty_segment_has_zero_sums_and_nan_extremes():
    sal = np.ones((1, 4, 4), np.float32)
    lab = np.zeros((1, 4, 4), np.uint8)
    st_ = sat_fast.segment_stats(sal, lab, num_segments=3)
    assert st_["count"].tolist() == [[16, 0, 0]]
    assert st_["sum"][0, 1] == 0 and st_["abs_sum"][0, 2] == 0
    assert np.isnan(st_["min"][0, 1:]).all() and np.isnan(st_["max"][0, 1:]).all()


def test_ignore_index_and_unassigned():
    k = 5
    sal = RNG.standard_normal((2, 40, 30))
    lab = _labels("blobs", 2, 40, 30, k + 1).astype(np.uint8)
    lab[lab == k] = 255
    got = sat_fast.segment_stats(sal, lab, num_segments=k, ignore_index=255, include_unassigned=True)
    assert_stats_close(got, label_stats(sal, lab, k))
    assert_stats_close(got.unassigned, label_unassigned(sal, lab, 255), keys=("count", "sum", "abs_sum", "min", "max"))
    # ignored pixels still count in the image totals
    np.testing.assert_allclose(got["total_sum"], sal.reshape(2, -1).sum(1), rtol=1e-12)


def test_ignore_index_inside_range_removes_that_segment():
    sal = RNG.standard_normal((1, 8, 8)).astype(np.float32)
    lab = RNG.integers(0, 3, (1, 8, 8)).astype(np.int32)
    got = sat_fast.segment_stats(sal, lab, num_segments=3, ignore_index=0)
    assert got["count"][0, 0] == 0
    assert got["count"][0, 1:].sum() == (lab != 0).sum()


@pytest.mark.parametrize("k", [1, 3, 64, 70, 130])
@pytest.mark.parametrize("sal_dtype", [np.float32, np.float64])
def test_overlapping_masks_mask_by_mask(k, sal_dtype):
    b, h, w = 2, 23, 41
    sal = RNG.standard_normal((b, h, w)).astype(sal_dtype)
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.zeros((b, k, h, w), bool)
    for i in range(b):
        for s in range(k):
            cy, cx, r = RNG.uniform(0, h), RNG.uniform(0, w), RNG.uniform(1, 12)
            masks[i, s] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    masks[0, 0] = False  # an empty mask
    got = sat_fast.segment_stats(sal, masks=masks, include_unassigned=True)
    assert_stats_close(got, mask_stats(sal, masks))
    assert_stats_close(got.unassigned, mask_unassigned(sal, masks), keys=("count", "sum", "sq_sum", "min", "max"))
    packed = sat_fast.pack_masks(masks)
    again = sat_fast.segment_stats(sal, masks=packed, include_unassigned=True)
    for key in got:
        np.testing.assert_array_equal(got[key], again[key])


def test_pack_masks_round_trip_and_layout():
    masks = RNG.random((3, 5, 13, 11)) < 0.3
    packed = sat_fast.pack_masks(masks)
    assert packed.words.shape == (3, 5, -(-13 * 11 // 64))
    np.testing.assert_array_equal(packed.unpack(), masks)
    # bit i of word w is pixel 64*w + i in row-major order
    flat = masks.reshape(3, 5, -1)
    assert bool(packed.words[1, 2, 1] >> np.uint64(3) & np.uint64(1)) == flat[1, 2, 67]
    assert packed[1:3].shape == (2, 5, 13, 11)
    # bounds: the range of nonzero words, computed alike in C++ and from words alone
    rebuilt = sat_fast.PackedMasks(packed.words, 13, 11)
    np.testing.assert_array_equal(rebuilt.bounds, packed.bounds)
    empty = sat_fast.pack_masks(np.zeros((1, 2, 13, 11), bool))
    assert empty.bounds.tolist() == [[[0, 0], [0, 0]]]


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    k=st.integers(1, 12),
    ignore=st.booleans(),
    f64=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_labels_property(b, h, w, k, ignore, f64, seed):
    rng = np.random.default_rng(seed)
    sal = (rng.standard_normal((b, h, w)) * rng.choice([1e-3, 1.0, 1e3])).astype(np.float64 if f64 else np.float32)
    lab = rng.integers(0, k + 1, (b, h, w)) if ignore else rng.integers(0, k, (b, h, w))
    if rng.random() < 0.5:
        lab = np.sort(lab, axis=-1)  # long runs
    lab = lab.astype(np.uint16)
    got = sat_fast.segment_stats(sal, lab, num_segments=k, ignore_index=k if ignore else None)
    assert_stats_close(got, label_stats(sal, lab, k))
    # every pixel lands in exactly one slot
    assert got["count"].sum() + (lab == k).sum() * ignore == b * h * w


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    k=st.integers(1, 70),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_masks_property(b, h, w, k, density, seed):
    rng = np.random.default_rng(seed)
    sal = rng.standard_normal((b, h, w)).astype(np.float32)
    masks = rng.random((b, k, h, w)) < density
    got = sat_fast.segment_stats(sal, masks=masks, include_unassigned=True)
    assert_stats_close(got, mask_stats(sal, masks))
    assert_stats_close(got.unassigned, mask_unassigned(sal, masks), keys=("count", "sum", "min", "max"))


# -- determinism -------------------------------------------------------------


def _large_batch():
    # 300 x 300 = 90,000 pixels: more than one 65,536-pixel chunk per image,
    # so the work of one image is split between threads.
    rng = np.random.default_rng(7)
    sal = rng.standard_normal((3, 300, 300)).astype(np.float32)
    lab = blobs(rng, 3, 300, 300, 16, cells=40).astype(np.uint8)
    lab[1] = rng.integers(0, 16, (300, 300))  # one noisy image takes the per-pixel path
    masks = np.stack([lab == s for s in range(16)], axis=1)
    return sal, lab, masks


def _assert_bitwise(a, b):
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]).view(np.uint8), np.asarray(b[key]).view(np.uint8), err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_segments_straddling_a_chunk_boundary(dtype):
    """A run of one label across the chunk edge is split between chunks (and threads) and merged exactly."""
    h = w = 300  # 90,000 pixels: two chunks per image
    edge = _core.CHUNK_PIXELS
    assert edge < h * w
    lab = np.zeros((2, h, w), np.uint8)
    flat = lab.reshape(2, -1)
    flat[0, edge - 7 : edge + 5] = 1  # 7 pixels before the edge, 5 after
    flat[1, edge - 1 : edge + 1] = 2  # one pixel on each side
    flat[1, ::3] = 3  # noisy elsewhere in the same image
    sal = (np.arange(2 * h * w, dtype=np.float64).reshape(2, h, w) % 1000 - 500).astype(dtype)
    got = sat_fast.segment_stats(sal, lab, num_segments=4, threads=2)
    assert_stats_close(got, label_stats(sal, lab, 4))
    assert got["count"][0, 1] == 12 and got["count"][1, 2] == 2 - int(flat[1, edge - 1] == 3) - int(flat[1, edge] == 3)


@pytest.mark.parametrize("kind", ["labels", "masks"])
def test_bitwise_identical_for_any_thread_count(kind):
    sal, lab, masks = _large_batch()
    args = {"label_map": lab, "num_segments": 16} if kind == "labels" else {"masks": masks}
    results = [sat_fast.segment_stats(sal, threads=t, include_unassigned=True, **args) for t in (1, 2, 3, 7)]
    for r in results[1:]:
        _assert_bitwise(results[0], r)
        _assert_bitwise(results[0].unassigned, r.unassigned)
    assert_stats_close(results[0], label_stats(sal, lab, 16))


def test_bitwise_identical_for_any_batch_split():
    sal, lab, _ = _large_batch()
    whole = sat_fast.segment_stats(sal, lab, num_segments=16)
    parts = sat_fast.SegmentStats.concat(
        [sat_fast.segment_stats(sal[i : i + 1], lab[i : i + 1], num_segments=16) for i in range(3)]
    )
    _assert_bitwise(whole, parts)


@pytest.mark.skipif(
    _core.kernel_variant() == "generic",
    reason="the dispatched kernel is the portable one here (no AVX2, or SAT_FAST_KERNEL=generic): nothing to compare",
)
def test_portable_kernel_rounds_exactly_like_the_dispatched_one(tmp_path):
    sal, lab, masks = _large_batch()
    np.savez(tmp_path / "in.npz", sal=sal, lab=lab, masks=masks)
    script = (
        "import numpy as np, sat_fast, sys\n"
        "d = np.load(sys.argv[1]); out = {}\n"
        "a = sat_fast.segment_stats(d['sal'], d['lab'], num_segments=16)\n"
        "m = sat_fast.segment_stats(d['sal'], masks=d['masks'])\n"
        "out.update({'l_' + k: a[k] for k in a}); out.update({'m_' + k: m[k] for k in m})\n"
        "from sat_fast import _core; out['variant'] = np.array(_core.kernel_variant())\n"
        "np.savez(sys.argv[2], **out)\n"
    )
    results = results_of_both_kernels(script, tmp_path / "in.npz", tmp_path)
    assert str(results["generic"].pop("variant")) == "generic"
    results["default"].pop("variant")
    _assert_bitwise(results["default"], results["generic"])


# -- merging -----------------------------------------------------------------


def test_merge_rows_and_columns_equals_whole():
    sal, lab, masks = _large_batch()
    whole = sat_fast.segment_stats(sal, lab, num_segments=16)
    top = sat_fast.segment_stats(sal[:, :120], lab[:, :120], num_segments=16)
    bottom = sat_fast.segment_stats(sal[:, 120:], lab[:, 120:], num_segments=16)
    merged = top.merge(bottom)
    assert_stats_close(merged, whole, rtol=1e-11)
    left = sat_fast.segment_stats(sal[:, :, :77], lab[:, :, :77], num_segments=16)  # non-contiguous views
    right = sat_fast.segment_stats(sal[:, :, 77:], lab[:, :, 77:], num_segments=16)
    assert_stats_close(left.merge(right), whole, rtol=1e-11)
    m_top = sat_fast.segment_stats(sal[:, :150], masks=masks[:, :, :150], include_unassigned=True)
    m_bottom = sat_fast.segment_stats(sal[:, 150:], masks=masks[:, :, 150:], include_unassigned=True)
    m_whole = sat_fast.segment_stats(sal, masks=masks, include_unassigned=True)
    assert_stats_close(m_top.merge(m_bottom), m_whole, rtol=1e-11)
    assert_stats_close(m_top.merge(m_bottom).unassigned, m_whole.unassigned, keys=("count", "sum"), rtol=1e-11)


def test_merge_rejects_mismatched_shapes():
    a = sat_fast.segment_stats(np.ones((1, 2, 2)), np.zeros((1, 2, 2), np.uint8), num_segments=2)
    b = sat_fast.segment_stats(np.ones((2, 2, 2)), np.zeros((2, 2, 2), np.uint8), num_segments=2)
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(b)
    with pytest.raises(TypeError):
        a.merge({"count": 1})


# -- input forms ---------------------------------------------------------------


def test_fortran_and_strided_inputs_give_correct_results():
    sal = RNG.standard_normal((3, 20, 30)).astype(np.float32)
    lab = _labels("blobs", 3, 20, 30, 4).astype(np.uint8)
    ref = label_stats(sal, lab, 4)
    assert_stats_close(sat_fast.segment_stats(np.asfortranarray(sal), np.asfortranarray(lab), num_segments=4), ref)
    big_sal = np.zeros((3, 40, 60), np.float32)
    big_sal[:, ::2, ::2] = sal
    big_lab = np.zeros((3, 40, 60), np.uint8)
    big_lab[:, ::2, ::2] = lab
    assert_stats_close(sat_fast.segment_stats(big_sal[:, ::2, ::2], big_lab[:, ::2, ::2], num_segments=4), ref)


def test_jax_and_bfloat16_inputs():
    import jax.numpy as jnp

    sal = RNG.standard_normal((2, 16, 16)).astype(np.float32)
    lab = _labels("blobs", 2, 16, 16, 4).astype(np.int32)
    got = sat_fast.segment_stats(jnp.asarray(sal), jnp.asarray(lab), num_segments=4)
    assert_stats_close(got, label_stats(sal, lab, 4))
    bf = jnp.asarray(sal, dtype=jnp.bfloat16)
    got_bf = sat_fast.segment_stats(bf, lab, num_segments=4)
    assert_stats_close(got_bf, label_stats(np.asarray(bf.astype(jnp.float32)), lab, 4))


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint32, np.int16])
def test_other_integer_label_dtypes_are_converted(dtype):
    sal = RNG.standard_normal((2, 9, 9))
    lab = RNG.integers(0, 5, (2, 9, 9)).astype(dtype)
    assert_stats_close(sat_fast.segment_stats(sal, lab, num_segments=5), label_stats(sal, lab, 5))


def test_num_segments_inferred_from_labels():
    lab = np.zeros((1, 3, 3), np.uint8)
    lab[0, 0, 0] = 6
    assert sat_fast.segment_stats(np.ones((1, 3, 3)), lab).shape == (1, 7)


def test_nonfinite_skip_leaves_pixels_out():
    sal = RNG.standard_normal((2, 30, 30))
    sal[0, 3, 4] = np.nan
    sal[0, 10, :] = np.inf
    sal[1, 0, 0] = -np.inf
    lab = _labels("blobs", 2, 30, 30, 4).astype(np.uint8)
    got = sat_fast.segment_stats(sal, lab, num_segments=4, nonfinite="skip")
    assert_stats_close(got, label_stats(sal, lab, 4, skip=True))
    assert got["nonfinite"].tolist() == [31, 1]
    masks = np.stack([lab == s for s in range(4)], axis=1)
    got_m = sat_fast.segment_stats(sal, masks=masks, nonfinite="skip")
    assert_stats_close(got_m, mask_stats(sal, masks, skip=True))
    assert got_m["nonfinite"].tolist() == [31, 1]


def test_huge_finite_float64_values_are_not_mistaken_for_nan():
    sal = np.full((1, 4, 4), 1e200)
    lab = np.zeros((1, 4, 4), np.uint8)
    got = sat_fast.segment_stats(sal, lab, num_segments=1)
    assert got["count"][0, 0] == 16 and np.isinf(got["sq_sum"][0, 0])


def test_empty_batch_and_zero_size_images():
    got = sat_fast.segment_stats(np.zeros((0, 5, 5), np.float32), np.zeros((0, 5, 5), np.uint8), num_segments=3)
    assert got["count"].shape == (0, 3) and got["pixels"].shape == (0,)
    got = sat_fast.segment_stats(np.zeros((2, 0, 5), np.float32), np.zeros((2, 0, 5), np.uint8), num_segments=3)
    assert got["count"].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert got["total_abs"].tolist() == [0.0, 0.0]


def test_noisy_labels_with_a_large_vocabulary():
    # K beyond the per-pixel lane path's limit takes the touched-list path.
    k = 5000
    sal = RNG.standard_normal((2, 40, 50))
    lab = RNG.integers(0, k + 1, (2, 40, 50)).astype(np.uint16)
    got = sat_fast.segment_stats(sal, lab, num_segments=k, ignore_index=k, include_unassigned=True)
    assert_stats_close(got, label_stats(sal, lab, k))
    assert_stats_close(got.unassigned, label_unassigned(sal, lab, k), keys=("count", "sum", "min", "max"))
    lab[1, 39, 49] = k + 7
    with pytest.raises(ValueError, match=r"label 5007 at image 1, pixel \(39, 49\)"):
        sat_fast.segment_stats(sal, lab, num_segments=k, ignore_index=k)


# --- coverage: uncovered pixels leave every statistic (issue 10) ---


def _coverage_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    b, h, w, k = 3, 23, 37, 5
    sal = rng.standard_normal((b, h, w)).astype(np.float32)
    labels = blobs(rng, b, h, w, k)
    cov = np.zeros((b, h, w), bool)
    cov[0, 3:20, 5:30] = True
    cov[1] = rng.random((h, w)) < 0.6
    cov[2] = True
    sal[~cov] = 1e6  # uncovered values must not reach any statistic
    return sal, labels, cov, k


def test_label_map_coverage_matches_a_covered_only_reference():
    sal, labels, cov, k = _coverage_case()
    got = sat_fast.segment_stats(sal, labels.astype(np.uint8), num_segments=k, coverage=cov)
    ref = covered_stats(sal, lambda i, s: labels[i] == s, k, cov)
    assert_stats_close(got, ref)


def test_label_map_coverage_with_ignore_index_and_unassigned():
    sal, labels, cov, k = _coverage_case(1)
    got = sat_fast.segment_stats(
        sal, labels.astype(np.uint8), num_segments=k - 1, ignore_index=k - 1, coverage=cov, include_unassigned=True
    )
    ref = covered_stats(sal, lambda i, s: labels[i] == s, k, cov)
    assert_stats_close(got, {key: ref[key][:, : k - 1] if key in KEYS else ref[key] for key in ref})
    assert got.unassigned is not None
    for key in KEYS:  # the ignored pixels, covered only, in the unassigned statistics
        expected = ref[key][:, k - 1]
        if key in ("count", "min", "max"):
            np.testing.assert_array_equal(got.unassigned[key], expected, err_msg=key)
        else:
            np.testing.assert_allclose(got.unassigned[key], expected, rtol=1e-12, atol=1e-9, err_msg=key)


def test_mask_coverage_matches_a_covered_only_reference():
    sal, labels, cov, k = _coverage_case(2)
    masks = np.stack([labels == s for s in range(k)], axis=1)
    masks[:, 0] |= labels == 1  # overlapping
    for m in (masks, sat_fast.pack_masks(masks)):
        got = sat_fast.segment_stats(sal, masks=m, coverage=cov, include_unassigned=True)
        ref = covered_stats(sal, lambda i, s: masks[i, s], k, cov)
        assert_stats_close(got, ref)
        assert got.unassigned is not None
        np.testing.assert_array_equal(got.unassigned["count"], np.zeros(3, np.int64))  # masks cover all covered


def test_coverage_ignores_nonfinite_saliency_outside_it_and_checks_its_input():
    sal, labels, cov, k = _coverage_case(3)
    sal[~cov] = np.nan
    got = sat_fast.segment_stats(sal, labels.astype(np.uint8), num_segments=k, coverage=cov)
    assert_stats_close(got, covered_stats(np.nan_to_num(sal), lambda i, s: labels[i] == s, k, cov))
    with pytest.raises(TypeError, match="boolean"):
        sat_fast.segment_stats(sal, labels.astype(np.uint8), num_segments=k, coverage=cov.astype(np.uint8))
    with pytest.raises(ValueError, match="coverage shape"):
        sat_fast.segment_stats(sal, labels.astype(np.uint8), num_segments=k, coverage=cov[:, 1:])
    bad = labels.astype(np.uint8)
    bad[0, 0, 0] = k  # out of range, and uncovered: still an error, as without coverage
    with pytest.raises(ValueError, match=str(k)):
        sat_fast.segment_stats(sal, bad, num_segments=k, coverage=cov)
