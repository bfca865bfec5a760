"""The kernel as an XLA FFI custom call: agreement with the pybind11 kernel and float64 numpy, jit, vmap, grad.

Tolerances: with x64 off the float results are float32 rounded once from the
kernel's float64 accumulators, so they equal the host kernel's float64 results
rounded to float32 exactly (bitwise); against the independent float64 numpy
reference (different summation order) sums agree to 1e-12 relative before that
rounding, so to float32 rounding (rtol 1e-6) after it. Under x64 the results
are the host kernel's, bitwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sat_reference import KEYS, assert_stats_close, blobs, label_stats, mask_stats

import sat_fast
from sat_fast.functional._ffi import RESULT_KEYS, ffi_available, segment_stats_ffi

FLOAT_KEYS = ("sum", "pos_sum", "neg_sum", "abs_sum", "sq_sum", "min", "max", "total_sum", "total_abs")
SALIENCY_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def as_dict(out):
    assert len(out) == len(RESULT_KEYS)
    return {key: np.asarray(a) for key, a in zip(RESULT_KEYS, out, strict=True)}


def flat(stats):
    """(..., K) and (...) arrays as (B, K) and (B,), for the (B, H, W) references."""
    return {key: a.reshape(-1, a.shape[-1]) if key in KEYS else a.reshape(-1) for key, a in stats.items()}


def assert_equals_host(got, host):
    """The FFI's results are the host kernel's float64 results rounded once to the result dtype."""
    for key in KEYS + ("total_sum", "total_abs", "pixels", "nonfinite"):
        g = got[key]
        want = np.asarray(host[key]).astype(g.dtype)
        np.testing.assert_array_equal(g, want, err_msg=key)


def labels_of(pattern: str, rng: np.random.Generator, shape, k: int) -> np.ndarray:
    b, h, w = shape
    if pattern == "random":
        return rng.integers(0, k, shape)
    if pattern == "blobs":
        return blobs(rng, b, h, w, k)
    if pattern == "constant":
        return np.full(shape, rng.integers(0, k))
    return np.broadcast_to((np.arange(h)[:, None] * w + np.arange(w)) % k, shape).copy()  # "stripes"


def test_handlers_are_registered():
    assert ffi_available()


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 23),
    w=st.integers(1, 29),
    k=st.sampled_from([1, 2, 7, 64, 255, 300]),
    pattern=st.sampled_from(["random", "blobs", "constant", "stripes"]),
    dtype=st.sampled_from(sorted(SALIENCY_DTYPES)),
    seed=st.integers(0, 2**31 - 1),
)
def test_agrees_with_host_kernel_and_reference(b, h, w, k, pattern, dtype, seed):
    rng = np.random.default_rng(seed)
    lab = labels_of(pattern, rng, (b, h, w), k).astype(np.uint8 if k <= 256 else np.uint16)
    x = rng.normal(size=(b, h, w)).astype(SALIENCY_DTYPES[dtype])
    got = as_dict(jax.jit(lambda s, m: segment_stats_ffi(s, m, num_segments=k))(x, lab))
    widened = x.astype(np.float32)
    assert_equals_host(got, sat_fast.segment_stats(widened, lab, num_segments=k))
    assert got["sum"].dtype == np.float32 and got["count"].dtype == np.int32
    assert_stats_close(got, label_stats(widened, lab, k), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["invalid"], 0)


@pytest.mark.parametrize("label_dtype", [np.int8, np.int16, np.int32, np.uint32])
def test_label_dtypes_agree(label_dtype):
    rng = np.random.default_rng(1)
    lab = rng.integers(-3, 12, (2, 9, 11))
    x = rng.normal(size=lab.shape).astype(np.float32)
    if label_dtype == np.uint32:
        lab = np.where(lab < 0, 4_000_000_000, lab)  # beyond int32: invalid, not wrapped into range
    got = as_dict(segment_stats_ffi(x, lab.astype(label_dtype), num_segments=10, ignore_index=10))
    valid = np.where((lab >= 0) & (lab < 10), lab, 10)
    assert_equals_host(got, sat_fast.segment_stats(x, valid.astype(np.uint8), num_segments=10, ignore_index=10))
    np.testing.assert_array_equal(got["invalid"], ((lab < 0) | (lab > 10)).sum(axis=(1, 2)))


def test_float64_results_under_x64_equal_the_host_kernel():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 17, 19))
    lab = rng.integers(0, 5, x.shape).astype(np.int32)
    with jax.enable_x64(True):
        for sal in (x, x.astype(np.float32)):
            got = as_dict(jax.jit(lambda s, m: segment_stats_ffi(s, m, num_segments=5))(sal, lab))
            assert got["sum"].dtype == np.float64 and got["count"].dtype == np.int64
            assert_equals_host(got, sat_fast.segment_stats(sal, lab, num_segments=5))
            assert_stats_close(got, label_stats(sal, lab, 5))


@pytest.mark.parametrize("ignore_index", [7, 2])  # 2: inside [0, K), where ignore_index still wins
def test_invalid_labels_are_counted_and_left_out_of_every_segment(ignore_index):
    rng = np.random.default_rng(3)
    lab = rng.integers(-2, 8, (4, 13, 16)).astype(np.int32)
    lab[0] = rng.integers(0, 6, lab.shape[1:])  # one image without bad labels
    x = rng.normal(size=lab.shape).astype(np.float32)
    got = as_dict(jax.jit(lambda s, m: segment_stats_ffi(s, m, num_segments=6, ignore_index=ignore_index))(x, lab))
    bad = (((lab < 0) | (lab >= 6)) & (lab != ignore_index)).sum(axis=(1, 2))
    assert bad[1:].min() > 0
    np.testing.assert_array_equal(got["invalid"], bad)
    # segments hold their own pixels only; the totals keep every finite pixel, as for ignore_index pixels
    in_segments = np.where(lab == ignore_index, -1, lab)
    assert_stats_close(got, label_stats(x, in_segments, 6), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="label"):
        sat_fast.segment_stats(x, lab, num_segments=6, ignore_index=ignore_index)  # the host raises on this input


def test_nonfinite_pixels_are_counted_and_skipped():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 8, 9)).astype(np.float32)
    x[0, 1, 2] = np.nan
    x[2, 0, 0] = np.inf
    x[2, 7, 8] = -np.inf
    lab = rng.integers(0, 4, x.shape).astype(np.uint8)
    lab[2, 3, 3] = 9  # a bad label and non-finite pixels together
    got = as_dict(segment_stats_ffi(x, lab, num_segments=4))
    np.testing.assert_array_equal(got["nonfinite"], [1, 0, 2])
    np.testing.assert_array_equal(got["invalid"], [0, 0, 1])
    ref = label_stats(x, lab, 4, skip=True)
    assert_stats_close(got, ref, keys=KEYS + ("total_sum", "total_abs", "nonfinite"), rtol=1e-6, atol=1e-6)
    host = sat_fast.segment_stats(x[:2], lab[:2], num_segments=4, nonfinite="skip")
    assert_equals_host({key: a[:2] for key, a in got.items()}, host)


def test_inside_a_jitted_function_that_does_other_work():
    rng = np.random.default_rng(5)
    images = rng.normal(size=(4, 21, 18)).astype(np.float32)
    lab = blobs(rng, 4, 21, 18, 9).astype(np.uint8)

    @jax.jit
    def step(images, lab):
        saliency = jnp.tanh(images) * 3.0 - images**2
        stats = segment_stats_ffi(saliency, lab, num_segments=9)
        share = stats[4] / stats[9][:, None]  # abs_sum / total_abs
        return saliency, share.max(axis=1) + saliency.mean(axis=(1, 2)), stats

    saliency, score, stats = step(images, lab)
    host = sat_fast.segment_stats(np.asarray(saliency), lab, num_segments=9)
    assert_equals_host(as_dict(stats), host)
    want = (np.float32(host["abs_sum"]) / np.float32(host["total_abs"])[:, None]).max(axis=1)
    np.testing.assert_allclose(score, want + np.asarray(saliency).mean(axis=(1, 2)), rtol=1e-6)


def test_vmap_over_extra_batch_axes_equals_one_flat_call():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 3, 4, 10, 12)).astype(np.float32)
    lab = rng.integers(0, 5, x.shape).astype(np.uint8)

    def fn(s, m):
        return segment_stats_ffi(s, m, num_segments=5, ignore_index=4)

    flat_call = as_dict(fn(x.reshape(-1, 10, 12), lab.reshape(-1, 10, 12)))
    for got in (
        as_dict(jax.jit(jax.vmap(jax.vmap(fn)))(x, lab)),
        as_dict(jax.vmap(fn, in_axes=(1, 1), out_axes=1)(x, lab)),
        as_dict(fn(x, lab)),  # leading dimensions of any rank without vmap
    ):
        assert got["count"].shape == (2, 3, 4, 5) and got["invalid"].shape == (2, 3, 4)
        for key in RESULT_KEYS:
            np.testing.assert_array_equal(flat(got)[key], flat_call[key], err_msg=key)
    # labels shared across the mapped axis
    shared = as_dict(jax.vmap(fn, in_axes=(0, None))(x[:, 0, 0], lab[0, 0, 0]))
    assert_equals_host(
        shared,
        sat_fast.segment_stats(x[:, 0, 0], np.broadcast_to(lab[0, 0, 0], (2, 10, 12)), num_segments=5, ignore_index=4),
    )


def test_one_image_without_batch_axes():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 7)).astype(np.float32)
    lab = rng.integers(0, 3, x.shape).astype(np.int32)
    got = as_dict(segment_stats_ffi(x, lab, num_segments=3))
    assert got["sum"].shape == (3,) and got["total_sum"].shape == () and got["pixels"] == 42
    assert_equals_host(
        {key: a[None] for key, a in got.items()}, sat_fast.segment_stats(x[None], lab[None], num_segments=3)
    )


@pytest.mark.parametrize("bad_input", [False, True])
def test_results_do_not_depend_on_threads(bad_input):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(5, 300, 301)).astype(np.float32)  # > 65,536 pixels: several chunks per image
    lab = blobs(rng, 5, 300, 301, 40).astype(np.int32)
    if bad_input:  # the second pass: invalid labels routed to the ignore slot, non-finite pixels skipped
        lab[1, 250, :7] = -3
        lab[3, 10, 10] = 40
        x[2, 299, 300] = np.nan
    one, many = (as_dict(segment_stats_ffi(x, lab, num_segments=40, threads=t)) for t in (1, 3))
    for key in RESULT_KEYS:
        np.testing.assert_array_equal(one[key], many[key], err_msg=key)
    np.testing.assert_array_equal(one["invalid"], [0, 7, 0, 1, 0] if bad_input else 0)
    np.testing.assert_array_equal(one["nonfinite"], [0, 0, 1, 0, 0] if bad_input else 0)
    assert_stats_close(one, label_stats(x, lab, 40, skip=True), rtol=1e-6, atol=1e-6)


def test_empty_batches_and_images():
    none = as_dict(segment_stats_ffi(np.zeros((0, 5, 6), np.float32), np.zeros((0, 5, 6), np.uint8), num_segments=3))
    assert none["sum"].shape == (0, 3) and none["invalid"].shape == (0,)
    blank = as_dict(segment_stats_ffi(np.zeros((2, 0, 6), np.float32), np.zeros((2, 0, 6), np.uint8), num_segments=3))
    np.testing.assert_array_equal(blank["count"], 0)
    assert np.isnan(blank["min"]).all() and np.isnan(blank["max"]).all()
    np.testing.assert_array_equal(blank["pixels"], 0)


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(1, 3), k=st.integers(1, 9), h=st.integers(1, 12), w=st.integers(1, 12), seed=st.integers(0, 2**31 - 1)
)
def test_masks_agree_with_host_kernel_and_reference(b, k, h, w, seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((b, k, h, w)) < rng.uniform(0, 1)
    x = rng.normal(size=(b, h, w)).astype(np.float32)
    got = as_dict(jax.jit(lambda s, m: segment_stats_ffi(s, masks=m))(x, masks))
    assert_equals_host(got, sat_fast.segment_stats(x, masks=masks))
    assert_stats_close(got, mask_stats(x, masks), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["invalid"], 0)


def weighted_objective(fn, keys, weights):
    def objective(s):
        out = dict(zip(RESULT_KEYS, fn(s), strict=True))
        # where, not a product: empty segments' min/max are NaN
        return sum(jnp.sum(jnp.where(weights[key] != 0, out[key] * weights[key], 0.0)) for key in keys)

    return objective


def finite_difference_check(objective, x, rng, probes=12, eps=1e-6):
    grad = np.asarray(jax.grad(objective)(x))
    for _ in range(probes):
        i = tuple(int(rng.integers(0, n)) for n in x.shape)
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        fd = (float(objective(up)) - float(objective(down))) / (2 * eps)
        np.testing.assert_allclose(grad[i], fd, rtol=1e-6, atol=1e-6, err_msg=str(i))
    return grad


@pytest.mark.parametrize("form", ["labels", "masks"])
def test_gradients_match_finite_differences(form):
    rng = np.random.default_rng(9)
    with jax.enable_x64(True):
        # distinct values away from 0: no ties at min/max, no kinks within eps
        x = rng.permutation(np.linspace(0.05, 3.0, 2 * 7 * 8)).reshape(2, 7, 8) * rng.choice([-1.0, 1.0], (2, 7, 8))
        if form == "labels":
            lab = rng.integers(-1, 5, x.shape).astype(np.int32)  # -1 and 4: invalid pixels, in the totals only

            def fn(s):  # ignore_index inside [0, K): segment 2 stays empty, its pixels in the totals only
                return segment_stats_ffi(s, lab, num_segments=4, ignore_index=2)

        else:
            masks = rng.random((2, 4, 7, 8)) < 0.5

            def fn(s):
                return segment_stats_ffi(s, masks=masks)

        shapes = {key: (2, 4) if key in KEYS else (2,) for key in FLOAT_KEYS}
        weights = {key: rng.normal(size=shapes[key]) for key in FLOAT_KEYS}
        weights = {key: np.where(np.isfinite(fn(x)[RESULT_KEYS.index(key)]), w, 0.0) for key, w in weights.items()}
        objective = weighted_objective(fn, FLOAT_KEYS, weights)
        finite_difference_check(objective, x, rng)
        finite_difference_check(jax.jit(objective), x, rng)


def jnp_reference_objective(member, weights):
    """The same weighted statistics written with plain jnp reductions over (B, K, H, W) masks (JAX's subgradients)."""

    def objective(s):
        v = s[:, None]
        stats = {
            "sum": jnp.sum(jnp.where(member, v, 0), axis=(-2, -1)),
            "pos_sum": jnp.sum(jnp.where(member, jnp.maximum(v, 0), 0), axis=(-2, -1)),
            "neg_sum": jnp.sum(jnp.where(member, jnp.minimum(v, 0), 0), axis=(-2, -1)),
            # documented: abs_sum differentiates as pos_sum - neg_sum (0 at 0), total_abs as jnp.abs (1 at 0)
            "abs_sum": jnp.sum(jnp.where(member, jnp.maximum(v, 0) - jnp.minimum(v, 0), 0), axis=(-2, -1)),
            "sq_sum": jnp.sum(jnp.where(member, v * v, 0), axis=(-2, -1)),
            "min": jnp.min(jnp.where(member, v, jnp.inf), axis=(-2, -1)),
            "max": jnp.max(jnp.where(member, v, -jnp.inf), axis=(-2, -1)),
            "total_sum": jnp.sum(s, axis=(-2, -1)),
            "total_abs": jnp.sum(jnp.abs(s), axis=(-2, -1)),
        }
        return sum(jnp.sum(stats[key] * w) for key, w in weights.items())

    return objective


@pytest.mark.parametrize("form", ["labels", "masks"])
def test_subgradients_at_ties_and_zeros_are_jnps(form):
    """Ties at min/max share the cotangent evenly, pos/neg sums split it at 0: what jnp.max/jnp.maximum do.

    These are the subgradients of sat_fast.functional's pure-JAX formulation too, so both paths agree.
    """
    x = np.array([[[3.0, 0.0, 3.0, -2.0]], [[-2.0, 0.5, 0.0, 0.5]], [[0.0, 0.0, 1.0, 1.0]]], np.float32)
    lab = np.array([[[0, 0, 0, 0]], [[0, 1, 1, 1]], [[1, 1, 1, 1]]], np.uint8)  # three 1 x 4 images
    member = lab[:, None] == np.arange(2)[:, None, None]
    if form == "masks":
        member[1, 0, 0, 2] = True  # an overlap: pixel 2 of image 1 in both segments

        def fn(s):
            return segment_stats_ffi(s, masks=member)

    else:

        def fn(s):
            return segment_stats_ffi(s, lab, num_segments=2)

    rng = np.random.default_rng(11)
    weights = {key: rng.normal(size=(3, 2) if key in KEYS else (3,)).astype(np.float32) for key in FLOAT_KEYS}
    weights["min"][2, 0] = weights["max"][2, 0] = 0  # segment 0 of image 2 is empty
    got = jax.grad(weighted_objective(fn, FLOAT_KEYS, weights))(x)
    want = jax.grad(jnp_reference_objective(member, weights))(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_gradient_through_low_precision_saliency_and_vmap():
    rng = np.random.default_rng(10)
    lab = rng.integers(0, 3, (2, 5, 6)).astype(np.uint8)
    x = rng.normal(size=(2, 2, 5, 6)).astype(np.float32)

    def loss(s):
        return jnp.sum(segment_stats_ffi(s, lab, num_segments=3)[1] ** 2)

    per_batch = jax.vmap(jax.grad(loss))(x)
    for j in range(2):
        sums = np.stack([np.bincount(lab[i].ravel(), x[j, i].astype(np.float64).ravel(), 3) for i in range(2)])
        want = np.take_along_axis(2 * sums, lab.reshape(2, -1).astype(np.int64), axis=1).reshape(2, 5, 6)
        np.testing.assert_allclose(per_batch[j], want, rtol=1e-5)
    low = jax.grad(lambda s: jnp.sum(segment_stats_ffi(s, lab, num_segments=3)[1]))(x[0].astype(jnp.bfloat16))
    assert low.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(low, np.float32), 1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"label_map": np.zeros((2, 4, 4), np.uint8)}, ValueError, "num_segments is required"),
        ({"label_map": np.zeros((2, 4, 5), np.uint8), "num_segments": 2}, ValueError, "does not match"),
        ({"label_map": np.zeros((2, 4, 4), bool), "num_segments": 2}, TypeError, "integer"),
        ({"label_map": np.zeros((2, 4, 4), np.uint8), "num_segments": 0}, ValueError, r"\[1, 2\*\*24\]"),
        (
            {"label_map": np.zeros((2, 4, 4), np.uint8), "num_segments": 2, "ignore_index": -1},
            ValueError,
            "cannot occur",
        ),
        ({"masks": np.zeros((2, 3, 4, 4), np.uint8)}, TypeError, "boolean"),
        ({"masks": np.zeros((2, 3, 4, 4), bool), "num_segments": 2}, ValueError, "3 segments"),
        ({}, ValueError, "exactly one"),
    ],
)
def test_bad_calls_raise_at_trace_time(kwargs, error, match):
    with pytest.raises(error, match=match):
        segment_stats_ffi(np.zeros((2, 4, 4), np.float32), **kwargs)


def test_integer_saliency_is_refused():
    with pytest.raises(TypeError, match="floating-point"):
        segment_stats_ffi(np.zeros((1, 2, 2), np.int32), np.zeros((1, 2, 2), np.uint8), num_segments=1)
