"""sat_fast.functional.segment_stats (pure JAX) against the float64 reference and the C++ kernel.

Tolerances: counts, pixels, min and max are exact (min and max select a
saliency value, which float32 holds exactly). Sums accumulate in float32 by
default, so each sum may differ from the float64 reference by
``SUM_RTOL`` times the sum of the absolute values of its terms (abs_sum for
sum/pos_sum/neg_sum/abs_sum and the totals, sq_sum for sq_sum): a few
float32 epsilons (1.2e-7) times the number of additions a pairwise or blocked
sum chains. With ``jax_enable_x64`` the bound is ``1e-12`` relative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sat_reference import KEYS, blobs, label_stats, mask_stats

import sat_fast
from sat_fast import functional as F

RNG = np.random.default_rng(2024)
SUM_RTOL = 1e-5
FORMULATIONS = ["auto", "one_hot", "scatter", "sort", "blocks"]
SUM_KEYS = ("sum", "pos_sum", "neg_sum", "abs_sum", "sq_sum")


LABEL_PATTERNS = {
    "noise": lambda b, h, w, k: RNG.integers(0, k, (b, h, w)),
    "blobs": lambda b, h, w, k: blobs(RNG, b, h, w, k),
    "one segment": lambda b, h, w, k: np.full((b, h, w), k - 1),
    "odd ids empty": lambda b, h, w, k: np.minimum(RNG.integers(0, (k + 1) // 2, (b, h, w)) * 2, k - 1),
}


def assert_matches(got, ref, rtol=SUM_RTOL):
    """``got`` (JaxSegmentStats, any leading shape) against a reference dict of (B, K) / (B,) arrays."""
    k = np.asarray(got.count).shape[-1]
    for key in KEYS + ("total_sum", "total_abs", "pixels", "nonfinite"):
        g = np.asarray(getattr(got, key), np.float64)
        g = g.reshape((-1, k)) if key in KEYS else g.reshape(-1)
        r = np.asarray(ref[key], np.float64)
        assert g.shape == r.shape, (key, g.shape, r.shape)
        if key in ("count", "pixels", "nonfinite", "min", "max"):
            np.testing.assert_array_equal(g, r, err_msg=key)
        else:
            scale_key = "sq_sum" if key == "sq_sum" else ("total_abs" if key.startswith("total") else "abs_sum")
            bound = rtol * np.asarray(ref[scale_key], np.float64) + 1e-30
            assert np.all(np.abs(g - r) <= bound), (key, np.max(np.abs(g - r) - bound))


def _widened(sal: np.ndarray) -> np.ndarray:
    return np.asarray(sal, np.float32).astype(np.float64)


@pytest.mark.parametrize(
    "reduction, dtype",
    [(r, np.float32) for r in FORMULATIONS] + [("auto", ml_dtypes.bfloat16), ("one_hot", np.float16)],
)
@pytest.mark.parametrize("pattern", list(LABEL_PATTERNS))
def test_labels_match_reference_and_kernel(reduction, dtype, pattern):
    k = 9
    sal = RNG.standard_normal((3, 37, 53)).astype(dtype)
    lab = LABEL_PATTERNS[pattern](3, 37, 53, k).astype(np.int32)
    got = jax.jit(lambda s, lab: F.segment_stats(s, lab, num_segments=k, reduction=reduction))(sal, lab)
    assert_matches(got, label_stats(_widened(sal), lab, k))
    assert_matches(got, sat_fast.segment_stats(np.asarray(sal, np.float32), lab, num_segments=k))
    assert got.count.dtype == jnp.int32 and got.sum.dtype == jnp.float32
    assert got._fields == (
        "count", "sum", "pos_sum", "neg_sum", "abs_sum", "sq_sum", "min", "max",
        "total_sum", "total_abs", "pixels", "nonfinite", "invalid",
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float16])
def test_masks_match_reference_and_kernel(dtype):
    sal = RNG.standard_normal((4, 19, 23)).astype(dtype)
    masks = RNG.random((4, 6, 19, 23)) < 0.3  # overlapping, some pixels in none
    masks[:, 2] = False  # an empty segment
    got = jax.jit(lambda s, m: F.segment_stats(s, masks=m, num_segments=6))(sal, masks)
    assert_matches(got, mask_stats(_widened(sal), masks))
    assert_matches(got, sat_fast.segment_stats(np.asarray(sal, np.float32), masks=masks))
    assert np.isnan(np.asarray(got.min)[:, 2]).all() and (np.asarray(got.sum)[:, 2] == 0).all()


@settings(max_examples=15, deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    h=st.integers(1, 21),
    w=st.integers(1, 21),
    k=st.integers(1, 300),
    reduction=st.sampled_from(FORMULATIONS),
    with_ignore=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_random_shapes_and_segment_counts(lead, h, w, k, reduction, with_ignore, seed):
    rng = np.random.default_rng(seed)
    shape = (*lead, h, w)
    sal = rng.standard_normal(shape).astype(np.float32)
    ignore = k + 3 if with_ignore else None
    lab = rng.integers(0, k + (1 if with_ignore else 0), shape)
    if with_ignore:
        lab[lab == k] = ignore
    got = F.segment_stats(sal, lab.astype(np.int32), num_segments=k, ignore_index=ignore, reduction=reduction)
    assert got.count.shape == (*lead, k) and got.pixels.shape == tuple(lead)
    flat_sal, flat_lab = sal.reshape(-1, h, w), lab.reshape(-1, h, w)
    assert_matches(got, label_stats(flat_sal.astype(np.float64), flat_lab, k))
    host = sat_fast.segment_stats(flat_sal, flat_lab.astype(np.int32), num_segments=k, ignore_index=ignore)
    assert_matches(got, host)
    assert not np.asarray(got.invalid).any()


@pytest.mark.parametrize("reduction", FORMULATIONS)
def test_ignore_index_inside_the_segment_range_empties_that_segment(reduction):
    sal = RNG.standard_normal((2, 5, 6)).astype(np.float32)
    lab = RNG.integers(0, 4, sal.shape).astype(np.int32)
    got = F.segment_stats(sal, lab, num_segments=4, ignore_index=3, reduction=reduction)
    assert np.asarray(got.count)[:, 3].tolist() == [0, 0] and np.isnan(np.asarray(got.min)[:, 3]).all()
    assert_matches(got, sat_fast.segment_stats(sal, lab, num_segments=4, ignore_index=3))
    assert_matches(got, label_stats(sal.astype(np.float64), np.where(lab == 3, 99, lab), 4))


def test_vmap_over_extra_batch_axes_equals_the_flat_call():
    sal = RNG.standard_normal((2, 3, 4, 11, 13)).astype(np.float32)
    lab = RNG.integers(0, 5, sal.shape).astype(np.int32)

    def per_batch(s, labels):
        return F.segment_stats(s, labels, num_segments=5)

    got = jax.jit(jax.vmap(jax.vmap(per_batch)))(sal, lab)
    flat = F.segment_stats(sal.reshape(-1, 11, 13), lab.reshape(-1, 11, 13), num_segments=5)
    assert got.count.shape == (2, 3, 4, 5) and got.total_sum.shape == (2, 3, 4)
    for name, a, b in zip(got._fields, got, flat, strict=True):
        np.testing.assert_array_equal(np.asarray(a).reshape(np.asarray(b).shape), np.asarray(b), err_msg=name)
    assert_matches(got, label_stats(sal.reshape(-1, 11, 13).astype(np.float64), lab.reshape(-1, 11, 13), 5))

    masks = RNG.random((2, 3, 5, 11, 13)) < 0.4
    got_m = jax.vmap(lambda s, m: F.segment_stats(s, masks=m, num_segments=5))(sal[:, :, 0], masks)
    assert_matches(got_m, mask_stats(sal[:, :, 0].reshape(-1, 11, 13).astype(np.float64), masks.reshape(-1, 5, 11, 13)))


def test_nonfinite_and_invalid_are_counted_and_left_out():
    sal = RNG.standard_normal((3, 8, 9)).astype(np.float32)
    sal[0, 1, 2] = np.nan
    sal[0, 4, 4] = np.inf
    sal[2, 0, 0] = -np.inf
    lab = RNG.integers(0, 4, sal.shape).astype(np.int32)
    got = jax.jit(lambda s, lab: F.segment_stats(s, lab, num_segments=4))(sal, lab)
    assert np.asarray(got.nonfinite).tolist() == [2, 0, 1]
    assert np.asarray(got.invalid).tolist() == [0, 0, 0]
    assert_matches(got, label_stats(sal.astype(np.float64), lab, 4, skip=True))
    assert_matches(got, sat_fast.segment_stats(sal, lab, num_segments=4, nonfinite="skip"))

    bad = lab.copy()
    bad[1, 3, 3] = 7  # outside [0, 4)
    bad[1, 5, 5] = -1
    bad[2, 0, 1] = 9  # ignore_index: not invalid
    got = F.segment_stats(sal, bad, num_segments=4, ignore_index=9)
    assert np.asarray(got.invalid).tolist() == [0, 2, 0]
    # the invalid pixels are in no segment, and in the image totals like ignored ones
    keep = (bad >= 0) & (bad < 4)
    ref = label_stats(sal.astype(np.float64), np.where(keep, bad, 99), 4, skip=True)
    assert_matches(got, ref)


def test_stats_table_raises_on_what_the_functional_result_counted():
    sal = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    lab = RNG.integers(0, 2, sal.shape).astype(np.int32)
    lab[1, 2, 0, 0] = 5
    with pytest.raises(ValueError, match=r"image 5 \(index \(1, 2\)\) has 1 pixels with labels outside \[0, 2\)"):
        sat_fast.stats_table(F.segment_stats(sal, lab, num_segments=2), names=["a", "b"])
    lab[1, 2, 0, 0] = 1
    sal[0, 1, 2, 2] = np.nan
    st_nan = F.segment_stats(sal, lab, num_segments=2)
    with pytest.raises(ValueError, match=r"image 1 \(index \(0, 1\)\) has 1 pixels with NaN or infinite saliency"):
        sat_fast.stats_table(st_nan, names=["a", "b"])
    skipped = sat_fast.stats_table(st_nan, names=["a", "b"], nonfinite="skip")
    host = sat_fast.segment_stats(sal.reshape(-1, 4, 4), lab.reshape(-1, 4, 4), num_segments=2, nonfinite="skip")
    expected = sat_fast.stats_table(host, names=["a", "b"])
    assert skipped.select("image_id", "segment", "pixels").equals(expected.select("image_id", "segment", "pixels"))
    np.testing.assert_allclose(skipped["mean"].to_numpy(), expected["mean"].to_numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="stats must be SegmentStats"):
        sat_fast.stats_table({"count": 1}, names=["a"])


def test_stats_table_of_the_functional_result_equals_segment_table():
    sal = RNG.standard_normal((5, 16, 12)).astype(np.float32)
    lab = blobs(RNG, 5, 16, 12, 4).astype(np.int32)
    names = ["sky", "dog", "grass", "eye"]
    got = sat_fast.stats_table(F.segment_stats(sal, lab, num_segments=4), names=names, targets=[0, 1, 0, 1, 1])
    ref = sat_fast.segment_table(sal, lab, names=names, targets=[0, 1, 0, 1, 1])
    assert got.schema == ref.schema
    exact = ["image_id", "target", "segment", "pixels", "area", "min", "max"]
    assert got.select(exact).equals(ref.select(exact))
    # Off CPU the pure-JAX path accumulates in float32: its error is relative to the segment's |saliency| sum,
    # not to the sum itself, which can cancel (an H200 gave 2.5e-5 relative on a sum of 0.07). Each column is a
    # multiple of the sum (or, for abs_sum, of the absolute sum), so the bound scales the same way.
    # On CPU the default is the FFI kernel (float64 accumulation): the tight tolerance of the first version holds.
    ref_sum, ref_abs = ref["sum"].to_numpy(), ref["abs_sum"].to_numpy()
    for col in ("sum", "mean", "abs_sum", "share", "density"):
        g, r = got[col].to_numpy(), ref[col].to_numpy()
        if jax.default_backend() == "cpu":
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6, err_msg=col)
            continue
        scale = ref_abs if col == "abs_sum" else ref_abs * np.abs(r / np.where(ref_sum == 0, 1, ref_sum))
        bound = SUM_RTOL * scale + 1e-12
        assert np.all(np.abs(g - r) <= bound), (col, np.max(np.abs(g - r) - bound))


def test_float64_accumulation_with_x64():
    sal = RNG.standard_normal((2, 30, 30))
    lab = RNG.integers(0, 6, sal.shape).astype(np.int32)
    with jax.enable_x64(True):
        for reduction in FORMULATIONS:
            got = F.segment_stats(jnp.asarray(sal), lab, num_segments=6, reduction=reduction)
            assert got.sum.dtype == jnp.float64
            assert_matches(got, label_stats(sal, lab, 6), rtol=1e-12)


@pytest.mark.parametrize("reduction", FORMULATIONS)
def test_gradients_of_the_sums_match_finite_differences(reduction):
    rng = np.random.default_rng(7)
    # values kept away from 0 so that the positive/negative split is smooth at every probe
    sal = rng.choice([-1.0, 1.0], (2, 5, 6)) * rng.uniform(0.2, 1.5, (2, 5, 6))
    lab = rng.integers(0, 3, sal.shape).astype(np.int32)
    weights = rng.standard_normal((7, 2, 3))

    def objective(s):
        stats = F.segment_stats(s, lab, num_segments=3, reduction=reduction)
        segs = jnp.stack([stats.sum, stats.pos_sum, stats.neg_sum, stats.abs_sum, stats.sq_sum])
        return jnp.sum(segs * weights[:5]) + jnp.sum(
            stats.total_sum * weights[5, :, 0] + stats.total_abs * weights[6, :, 0]
        )

    with jax.enable_x64(True):
        grad = np.asarray(jax.jit(jax.grad(objective))(jnp.asarray(sal)))
        f = jax.jit(objective)
        numeric = np.zeros_like(sal)
        eps = 1e-6
        for idx in np.ndindex(sal.shape):
            up, down = sal.copy(), sal.copy()
            up[idx] += eps
            down[idx] -= eps
            numeric[idx] = (float(f(up)) - float(f(down))) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reduction", FORMULATIONS)
def test_min_max_subgradient_goes_to_the_extreme_pixels_split_among_ties(reduction):
    sal = np.array([[[3.0, 1.0, 3.0], [0.5, -2.0, 7.0]]], np.float32)
    lab = np.array([[[0, 0, 0], [1, 1, 2]]], np.int32)
    empty_too = 4  # segment 3 is empty: NaN, and gradient 0

    def pick(field, seg):
        return lambda s: getattr(F.segment_stats(s, lab, num_segments=empty_too, reduction=reduction), field)[0, seg]

    assert np.asarray(jax.grad(pick("max", 0))(sal)).tolist() == [[[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]]
    assert np.asarray(jax.grad(pick("min", 1))(sal)).tolist() == [[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]
    assert np.isnan(float(pick("min", 3)(sal)))
    assert np.asarray(jax.grad(pick("min", 3))(sal)).tolist() == np.zeros_like(sal).tolist()
    masks = lab[:, None] == np.arange(4)[None, :, None, None]
    g = jax.grad(lambda s: F.segment_stats(s, masks=masks, num_segments=4).max[0, 0])(sal)
    assert np.asarray(g).tolist() == [[[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]]


def test_nonfinite_pixels_get_zero_gradient():
    sal = np.array([[[1.0, np.nan], [2.0, -3.0]]], np.float32)
    lab = np.zeros((1, 2, 2), np.int32)
    g = jax.grad(lambda s: F.segment_stats(s, lab, num_segments=1).abs_sum.sum())(sal)
    assert np.asarray(g).tolist() == [[[1.0, 0.0], [1.0, -1.0]]]


def test_shape_and_type_errors():
    sal = jnp.zeros((2, 4, 4))
    lab = jnp.zeros((2, 4, 4), jnp.int32)
    with pytest.raises(ValueError, match="exactly one of label_map and masks"):
        F.segment_stats(sal, num_segments=2)
    with pytest.raises(ValueError, match="exactly one of label_map and masks"):
        F.segment_stats(sal, lab, masks=jnp.zeros((2, 2, 4, 4), bool), num_segments=2)
    with pytest.raises(ValueError, match=r"label_map shape \(2, 4, 5\) does not match saliency shape \(2, 4, 4\)"):
        F.segment_stats(sal, jnp.zeros((2, 4, 5), jnp.int32), num_segments=2)
    with pytest.raises(ValueError, match=r"expected \(2, 3, 4, 4\)"):
        F.segment_stats(sal, masks=jnp.zeros((2, 2, 4, 4), bool), num_segments=3)
    with pytest.raises(ValueError, match="num_segments must be an int >= 1"):
        F.segment_stats(sal, lab, num_segments=0)
    with pytest.raises(ValueError, match="ignore_index applies to label maps"):
        F.segment_stats(sal, masks=jnp.zeros((2, 2, 4, 4), bool), num_segments=2, ignore_index=3)
    with pytest.raises(TypeError, match="saliency must be a floating-point array"):
        F.segment_stats(lab, lab, num_segments=2)
    with pytest.raises(TypeError, match="label_map must hold integers"):
        F.segment_stats(sal, sal, num_segments=2)
    with pytest.raises(TypeError, match="masks must be boolean"):
        F.segment_stats(sal, masks=jnp.zeros((2, 2, 4, 4)), num_segments=2)
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.segment_stats(sal, lab, num_segments=2, reduction="fast")
