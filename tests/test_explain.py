"""sat_fast.functional.explain: one jitted step from images to statistics, equal to saliency + segment_table."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sat_reference import blobs

import sat_fast
from sat_fast import functional as F
from sat_fast.demo.model import SmallCNN

RNG = np.random.default_rng(12)
NAMES = ["background", "object", "corner", "empty"]


@pytest.fixture(scope="module")
def model():
    net = SmallCNN(num_classes=3, widths=(4, 8))
    params = net.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    return functools.partial(net.apply, params)


@pytest.fixture(scope="module")
def batch():
    images = RNG.uniform(0, 1, (6, 16, 16, 3)).astype(np.float32)
    label_map = blobs(RNG, 6, 16, 16, 3).astype(np.int32)  # segment 3 never occurs
    targets = np.array([0, 1, 2, 0, 1, 2], np.int32)
    return images, label_map, targets


def _assert_tables_equal(got, ref):
    assert got.schema == ref.schema
    exact = ["image_id", "target", "segment", "pixels", "area"]
    assert got.select(exact).equals(ref.select(exact))
    # float32 accumulation in JAX against the kernel's float64 (tests/test_functional_stats.py's tolerance)
    scale = float(ref["abs_sum"].abs().max())
    for col in ("sum", "mean", "pos_sum", "neg_sum", "abs_sum", "min", "max"):
        np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-5, atol=1e-5 * scale, err_msg=col)
    for col in ("share", "density"):
        np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-4, atol=1e-6, err_msg=col)


@pytest.mark.parametrize(
    "method, options",
    [
        ("integrated_gradients", {"steps": 8}),
        ("integrated_gradients", {"steps": 6, "rule": "trapezoid", "baseline": "blur"}),
        ("gradient", {}),
        ("gradient_x_input", {"output": "log_probability"}),
        ("smoothgrad", {"samples": 4, "noise": 0.1}),
    ],
)
def test_explain_equals_saliency_then_segment_table(model, batch, method, options):
    images, label_map, targets = batch
    seeded = {"key": jax.random.key(3)} if method == "smoothgrad" else {}
    step = jax.jit(
        lambda x, lab, t: F.explain(model, x, lab, num_segments=4, targets=t, method=method, **options, **seeded)
    )
    host_seed = {"seed": 3} if method == "smoothgrad" else {}
    # Full float32 convolutions: on GPUs XLA's default is TF32, and the two paths, batched differently, then
    # differ by about 3e-4 (measured on an H200); on CPU this changes nothing.
    with jax.default_matmul_precision("highest"):
        stats = step(images, label_map, targets)
        maps = sat_fast.saliency(model, images, targets=targets, method=method, **options, **host_seed)
    assert stats.count.shape == (6, 4) and stats.pixels.shape == (6,)
    got = sat_fast.stats_table(stats, names=NAMES, targets=targets)
    ref = sat_fast.segment_table(np.asarray(maps), label_map, names=NAMES, targets=targets)
    _assert_tables_equal(got, ref)


def test_explain_with_masks_and_several_targets_per_image(model, batch):
    images, label_map, _ = batch
    masks = label_map[:, None] == np.arange(4)[None, :, None, None]
    masks[:, 2, :4, :4] = True  # overlaps the others
    two = np.array([[0, 2]] * 6, np.int32)
    stats = jax.jit(lambda x, m: F.explain(model, x, masks=m, num_segments=4, targets=two, method="gradient"))(
        images, masks
    )
    assert stats.count.shape == (6, 2, 4)
    for j in range(2):
        maps = sat_fast.saliency(model, images, targets=two[:, j], method="gradient")
        ref = sat_fast.segment_table(np.asarray(maps), masks=masks, names=NAMES, targets=two[:, j])
        got = sat_fast.stats_table(jax.tree.map(lambda a, j=j: a[:, j], stats), names=NAMES, targets=two[:, j])
        _assert_tables_equal(got, ref)


def test_explain_under_vmap_and_grad(model, batch):
    images, label_map, targets = batch

    def stats_of(x):
        return F.explain(model, x, label_map[:2], num_segments=4, targets=targets[:2], method="gradient_x_input")

    stacked = jax.vmap(stats_of)(jnp.stack([images[:2], images[2:4]]))
    direct = stats_of(images[2:4])
    np.testing.assert_allclose(np.asarray(stacked.sum[1]), np.asarray(direct.sum), rtol=1e-5, atol=1e-7)
    # differentiable end to end: the gradient of a segment's share with respect to the images
    grad = jax.grad(lambda x: F.segment_share(stats_of(x), 1).sum())(images[:2])
    assert grad.shape == (2, 16, 16, 3) and bool(jnp.all(jnp.isfinite(grad)))


def test_invalid_targets_and_labels_raise_at_the_table(model, batch):
    images, label_map, targets = batch
    bad = label_map.copy()
    bad[4, 0, 0] = 9
    stats = F.explain(model, images, bad, num_segments=4, targets=targets, method="gradient")
    with pytest.raises(ValueError, match=r"image 4 has 1 pixels with labels outside \[0, 4\)"):
        sat_fast.stats_table(stats, names=NAMES)
    # a target outside the model's classes gives a NaN map, counted as non-finite
    stats = F.explain(model, images, label_map, num_segments=4, targets=np.array([0, 1, 7, 0, 1, 2]), method="gradient")
    with pytest.raises(ValueError, match="image 2 has 256 pixels with NaN or infinite saliency"):
        sat_fast.stats_table(stats, names=NAMES)
