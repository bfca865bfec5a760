"""The attribution prior: segment_share and segment_share_penalty as loss terms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sat_fast import functional as F

RNG = np.random.default_rng(5)


def test_segment_share_is_the_tables_share():
    sal = RNG.standard_normal((3, 2, 6, 7)).astype(np.float32)
    lab = RNG.integers(0, 4, sal.shape).astype(np.int32)
    share = F.segment_share(F.segment_stats(sal, lab, num_segments=4), 2)
    on_segment = np.where(lab == 2, np.abs(sal), 0).sum(axis=(2, 3))
    ref = on_segment / np.abs(sal).sum(axis=(2, 3))
    assert share.shape == (3, 2)
    np.testing.assert_allclose(np.asarray(share), ref, rtol=1e-5)


def test_segment_share_of_an_all_zero_map_is_zero_with_zero_gradient():
    sal = jnp.zeros((2, 3, 3)).at[1, 0, 0].set(2.0)
    lab = jnp.zeros((2, 3, 3), jnp.int32)

    def total(s):
        return F.segment_share(F.segment_stats(s, lab, num_segments=1), 0).sum()

    assert float(total(sal)) == 1.0
    grad = jax.grad(total)(sal)
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad[0]).max()) == 0.0


def test_segment_share_rejects_a_segment_outside_the_statistics():
    stats = F.segment_stats(jnp.ones((1, 2, 2)), jnp.zeros((1, 2, 2), jnp.int32), num_segments=2)
    with pytest.raises(ValueError, match=r"segment 2 is not in \[0, 2\)"):
        F.segment_share(stats, 2)
    with pytest.raises(TypeError, match="segment must be an int"):
        F.segment_share(stats, "watermark")


def _linear_model(w):
    return lambda x: x.reshape(x.shape[0], -1) @ w


def test_penalty_equals_the_share_of_gradient_x_input_of_the_log_probability():
    images = RNG.uniform(0, 1, (4, 5, 5, 3)).astype(np.float32)
    w = RNG.standard_normal((75, 3)).astype(np.float32)
    seg = np.zeros((4, 5, 5), np.int32)
    seg[:, :2, :2] = 1
    targets = np.array([0, 1, 2, 1])
    got = F.segment_share_penalty(_linear_model(w), images, seg, num_segments=2, segment=1, targets=targets)
    # reference: d log softmax(x W)_t / dx = W[:, t] - sum_c p_c W[:, c], times x, |.| summed over channels
    x = images.reshape(4, -1).astype(np.float64)
    logits = x @ w
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = w.T[targets] - p @ w.T
    sal = np.abs(grad * x).reshape(4, 5, 5, 3).sum(-1)
    ref = np.mean(np.where(seg == 1, sal, 0).sum(axis=(1, 2)) / sal.sum(axis=(1, 2)))
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_training_with_the_penalty_moves_saliency_off_the_segment():
    """A linear model that could use a corner "watermark" learns the class from elsewhere when penalised."""
    n = 64
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    images = rng.uniform(0, 1, (n, 6, 6, 1)).astype(np.float32) * 0.2
    images[:, 3:, :, 0] += labels[:, None, None] * 0.5  # the real signal: bottom half brighter for class 1
    images[:, 0, 0, 0] = labels  # the shortcut: a corner pixel equal to the label
    seg = np.zeros((n, 6, 6), np.int32)
    seg[:, 0, 0] = 1

    def train(weight):
        w = jnp.zeros((36, 2))
        tx = optax.adam(0.05)
        state = tx.init(w)

        def loss_fn(w):
            ce = optax.softmax_cross_entropy_with_integer_labels(_linear_model(w)(images), labels).mean()
            prior = F.segment_share_penalty(_linear_model(w), images, seg, num_segments=2, segment=1, targets=labels)
            return ce + weight * prior, prior

        @jax.jit
        def step(w, state):
            (_, prior), g = jax.value_and_grad(loss_fn, has_aux=True)(w)
            updates, state = tx.update(g, state, w)
            return optax.apply_updates(w, updates), state, prior

        for _ in range(150):
            w, state, prior = step(w, state)
        return float(prior), float((_linear_model(w)(images).argmax(1) == labels).mean())

    share_plain, acc_plain = train(0.0)
    share_prior, acc_prior = train(20.0)
    assert share_plain > 0.05  # without the prior the corner draws a real share
    assert share_prior < share_plain / 5
    assert acc_prior == 1.0 and acc_plain == 1.0
