"""Tests for sat_fast.attribution: references are float64 numpy/scipy or the independent `saliency` package."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import saliency.core as pair_saliency
import scipy.ndimage
from flax import nnx

import sat_fast

H = W = 8
C = 3
N_CLASSES = 5


def _images(b: int, seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(b, h, w, C)).astype(np.float32)


class SmoothCNN(nn.Module):
    """Small CNN with smooth activations and nonzero biases, so IG paths are curved."""

    @nn.compact
    def __call__(self, x):
        bias = nn.initializers.normal(0.5)
        x = nn.softplus(nn.Conv(8, (3, 3), bias_init=bias, kernel_init=nn.initializers.normal(0.6))(x))
        x = nn.gelu(nn.Conv(8, (3, 3), strides=2, bias_init=bias, kernel_init=nn.initializers.normal(0.6))(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.gelu(nn.Dense(16, bias_init=bias)(x))
        return nn.Dense(N_CLASSES, bias_init=bias)(x)


@functools.cache
def _cnn():
    model = SmoothCNN()
    variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, H, W, C)))
    return model, variables


def _cnn_fn():
    model, variables = _cnn()
    return functools.partial(model.apply, variables)


# ---------------------------------------------------------------- a linear model with closed forms

_RNG = np.random.default_rng(42)
LIN_W = _RNG.normal(size=(N_CLASSES, H, W, C))
LIN_B = _RNG.normal(size=N_CLASSES)


def _linear(x):
    return jnp.einsum("bhwc,nhwc->bn", x, jnp.asarray(LIN_W, x.dtype)) + jnp.asarray(LIN_B, x.dtype)


def _linear_np(x):
    return np.einsum("bhwc,nhwc->bn", x.astype(np.float64), LIN_W) + LIN_B


# ---------------------------------------------------------------- a tanh MLP with a float64 twin

MLP_W1 = _RNG.normal(size=(H * W * C, 12)) / np.sqrt(H * W * C)
MLP_W2 = _RNG.normal(size=(12, N_CLASSES))


def _mlp(x):
    h = jnp.tanh(x.reshape(x.shape[0], -1) @ jnp.asarray(MLP_W1, x.dtype))
    return h @ jnp.asarray(MLP_W2, x.dtype)


def _mlp_np(x):
    return np.tanh(x.reshape(x.shape[0], -1).astype(np.float64) @ MLP_W1) @ MLP_W2


# ======================================================================== gradients


def test_vanilla_gradient_matches_finite_differences():
    x = _images(3)
    targets = np.array([0, 4, 2])
    maps = np.asarray(sat_fast.saliency(_mlp, x, targets, method="gradient", reduce=None))
    eps = 1e-4
    expected = np.zeros(x.shape)
    x64 = x.astype(np.float64)
    for idx in np.ndindex(x.shape[1:]):
        up, down = x64.copy(), x64.copy()
        up[(slice(None),) + idx] += eps
        down[(slice(None),) + idx] -= eps
        diff = (_mlp_np(up) - _mlp_np(down))[np.arange(3), targets] / (2 * eps)
        expected[(slice(None),) + idx] = diff
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-5)


def test_gradient_x_input_and_reductions_on_linear_model():
    x = _images(2)
    targets = np.array([1, 3])
    grad = LIN_W[targets]
    cases = {
        ("gradient", None): grad,
        ("gradient", "auto"): np.abs(grad).max(-1),
        ("gradient", "l2"): np.sqrt((grad**2).sum(-1)),
        ("gradient", "abs_sum"): np.abs(grad).sum(-1),
        ("gradient_x_input", "auto"): (grad * x).sum(-1),
        ("gradient_x_input", "max_abs"): np.abs(grad * x).max(-1),
    }
    for (method, reduce), expected in cases.items():
        maps = sat_fast.saliency(_linear, x, targets, method=method, reduce=reduce)
        np.testing.assert_allclose(np.asarray(maps), expected, rtol=1e-5, atol=1e-6, err_msg=f"{method} {reduce}")


@pytest.mark.parametrize("rule", ["left", "right", "midpoint", "trapezoid", "gauss_legendre"])
def test_integrated_gradients_on_linear_model_is_closed_form(rule):
    x = _images(3)
    targets = np.array([0, 1, 4])
    user = _images(1, seed=5)[0]
    for baseline, base in (("zeros", 0.0), (0.25, 0.25), (user, user)):
        maps, info = sat_fast.saliency(
            _linear, x, targets, steps=5, rule=rule, baseline=baseline, reduce=None, return_info=True
        )
        expected = (x - base) * LIN_W[targets]
        np.testing.assert_allclose(np.asarray(maps), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(info["output"]), _linear_np(x)[np.arange(3), targets], rtol=1e-5)
        assert float(np.max(info["relative_completeness_error"])) < 1e-4


def test_blur_baseline_matches_scipy_gaussian_filter():
    x = _images(2)
    maps = sat_fast.saliency(_linear, x, classes=[2], baseline="blur", reduce=None, steps=3)
    sigma = max(H, W) / 16
    blurred = scipy.ndimage.gaussian_filter(x.astype(np.float64), sigma=(0, sigma, sigma, 0), mode="mirror", truncate=3)
    expected = (x - blurred) * LIN_W[2]
    np.testing.assert_allclose(np.asarray(maps)[:, 0], expected, rtol=1e-4, atol=1e-5)


def test_uniform_baseline_is_seeded_and_in_range():
    x = _images(2)
    a = sat_fast.saliency(_linear, x, 0, baseline="uniform", reduce=None, steps=2, seed=3)
    b = sat_fast.saliency(_linear, x, 0, baseline="uniform", reduce=None, steps=2, seed=3)
    c = sat_fast.saliency(_linear, x, 0, baseline="uniform", reduce=None, steps=2, seed=4)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    base = x - np.asarray(a) / LIN_W[0]  # attribution = (x - baseline) * w
    lo, hi = x.min(axis=(1, 2, 3)), x.max(axis=(1, 2, 3))
    assert (base >= lo[:, None, None, None] - 1e-4).all() and (base <= hi[:, None, None, None] + 1e-4).all()


def _completeness(maps, x, targets, fn=None):
    fn = fn or _cnn_fn()
    logits = np.asarray(fn(jnp.asarray(x)), np.float64)
    zeros = np.asarray(fn(jnp.zeros_like(x)), np.float64)
    diff = (logits - zeros)[np.arange(len(x)), targets]
    err = np.abs(np.asarray(maps, np.float64).sum(axis=(1, 2)) - diff)
    return err / np.abs(diff), diff


def test_integrated_gradients_completeness_gauss_legendre_32_steps():
    x = 2 * _images(4, seed=3)
    maps, info = sat_fast.saliency(_cnn_fn(), x, rule="gauss_legendre", steps=32, return_info=True)
    targets = np.asarray(info["targets"])
    relative, diff = _completeness(maps, x, targets)
    assert np.abs(diff).min() > 0.1
    assert relative.max() <= 1e-3
    np.testing.assert_allclose(np.asarray(info["relative_completeness_error"]), relative, rtol=0.05, atol=2e-5)


def test_integrated_gradients_completeness_fails_at_two_steps():
    x = 2 * _images(4, seed=3)
    maps, info = sat_fast.saliency(_cnn_fn(), x, rule="gauss_legendre", steps=2, return_info=True)
    relative, _ = _completeness(maps, x, np.asarray(info["targets"]))
    assert relative.max() > 1e-3
    np.testing.assert_allclose(np.asarray(info["relative_completeness_error"]), relative, rtol=1e-3)


def test_expected_gradients_with_single_reference_approaches_integrated_gradients():
    x = _images(2)
    ref = _images(1, seed=9)
    eg = sat_fast.saliency(_linear, x, classes=[3], method="expected_gradients", baseline=ref, samples=4, reduce=None)
    np.testing.assert_allclose(np.asarray(eg)[:, 0], (x - ref) * LIN_W[3], rtol=1e-5, atol=1e-5)
    refs = _images(6, seed=10)
    maps = sat_fast.saliency(
        _linear, x, classes=[3], method="expected_gradients", baseline=refs, samples=5, reduce=None
    )
    # each sample is (x - r) * w for one reference r: the mean lies in the references' convex hull
    hull = (x[:, None] - refs[None]) * LIN_W[3]
    m = np.asarray(maps)[:, 0]
    assert (m >= hull.min(axis=1) - 1e-5).all() and (m <= hull.max(axis=1) + 1e-5).all()


# ======================================================================== noise methods


def test_smoothgrad_with_zero_noise_equals_gradient():
    x = _images(3)
    grad = sat_fast.saliency(_mlp, x, method="gradient", reduce=None)
    for method, expected in (("smoothgrad", grad), ("smoothgrad_squared", grad * grad)):
        maps = sat_fast.saliency(_mlp, x, method=method, noise=0.0, samples=3, reduce=None)
        np.testing.assert_allclose(np.asarray(maps), np.asarray(expected), rtol=1e-5, atol=1e-6)
    var = sat_fast.saliency(_mlp, x, method="vargrad", noise=0.0, samples=3, reduce=None)
    np.testing.assert_allclose(np.asarray(var), 0.0, atol=1e-6)


def test_noise_methods_are_deterministic_per_seed_and_vary_with_it():
    x = _images(2)
    a = sat_fast.saliency(_mlp, x, method="smoothgrad", samples=4, seed=1)
    b = sat_fast.saliency(_mlp, x, method="smoothgrad", samples=4, seed=1)
    c = sat_fast.saliency(_mlp, x, method="smoothgrad", samples=4, seed=2)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_vargrad_is_variance_of_noisy_gradients():
    x = _images(1)
    # a quadratic model has gradients linear in the input: var of grad = noise variance * w^2
    w = np.random.default_rng(3).normal(size=(H, W, C))

    def quadratic(z):
        return jnp.stack([0.5 * jnp.sum(jnp.asarray(w, z.dtype) * z * z, axis=(1, 2, 3))] * 2, axis=1)

    noise = 0.1
    sigma = noise * (x.max() - x.min())
    maps = sat_fast.saliency(quadratic, x, 0, method="vargrad", noise=noise, samples=4000, reduce=None)
    np.testing.assert_allclose(np.asarray(maps)[0], sigma**2 * w**2, rtol=0.15, atol=1e-3)


# ======================================================================== Grad-CAM


class TinyCAM(nn.Module):
    @nn.compact
    def __call__(self, x):
        a = nn.relu(nn.Conv(4, (3, 3), padding="SAME", bias_init=nn.initializers.normal(0.3), name="features")(x))
        return nn.Dense(3, name="head")(a.mean(axis=(1, 2)))


def test_gradcam_matches_hand_computation():
    model = TinyCAM()
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, H, W, C)))
    x = _images(2)
    maps = sat_fast.saliency(model.bind(variables), x, classes=[0, 2], method="gradcam", layer="features")
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])
    kernel, bias = params["features"]["kernel"], params["features"]["bias"]
    padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    act = np.zeros((2, H, W, 4))
    for dy in range(3):
        for dx in range(3):
            act += np.einsum("bhwc,ck->bhwk", padded[:, dy : dy + H, dx : dx + W], kernel[dy, dx])
    act += bias  # the "features" layer's output: the convolution, before the relu
    head = params["head"]["kernel"]  # (4, 3)
    for i, t in enumerate([0, 2]):
        # d logit_t / d act[b, h, w, k] = head[k, t] / (H * W) where act > 0 (relu), else 0
        grads = head[:, t] / (H * W) * (act > 0)
        alpha = grads.mean(axis=(1, 2))  # (b, k)
        expected = np.maximum(np.einsum("bk,bhwk->bhw", alpha, act), 0)
        np.testing.assert_allclose(np.asarray(maps)[:, i], expected, rtol=1e-4, atol=1e-6)
    # the same through partial(model.apply, variables)
    again = sat_fast.saliency(
        functools.partial(model.apply, variables), x, classes=[0, 2], method="gradcam", layer="features"
    )
    np.testing.assert_allclose(np.asarray(again), np.asarray(maps), rtol=1e-6)


def test_gradcam_upsamples_a_strided_layer():
    model, variables = _cnn()
    x = _images(2)
    maps = sat_fast.saliency(functools.partial(model.apply, variables), x, method="gradcam", layer="Conv_1")
    assert maps.shape == (2, H, W)
    assert (np.asarray(maps) >= 0).all()


def test_gradcam_unknown_layer_lists_the_existing_ones():
    model, variables = _cnn()
    with pytest.raises(ValueError, match=r"unknown gradcam layer 'conv9'.*Conv_0, Conv_1"):
        sat_fast.saliency(model.bind(variables), _images(1), method="gradcam", layer="conv9")


def test_gradcam_needs_a_linen_model_and_a_layer():
    with pytest.raises(TypeError, match="gradcam needs a Flax linen model"):
        sat_fast.saliency(_mlp, _images(1), method="gradcam", layer="Conv_0")
    model, variables = _cnn()
    with pytest.raises(TypeError, match="gradcam needs layer="):
        sat_fast.saliency(model.bind(variables), _images(1), method="gradcam")


# ======================================================================== targets and outputs


def test_target_list_adds_a_target_axis_and_predicted_is_argmax():
    x = _images(3)
    fn = _cnn_fn()
    both, info = sat_fast.saliency(fn, x, classes=[1, 3], method="gradient", reduce=None, return_info=True)
    assert both.shape == (3, 2, H, W, C) and info["targets"].shape == (3, 2)
    for k, t in enumerate([1, 3]):
        one = sat_fast.saliency(fn, x, np.full(3, t), method="gradient", reduce=None)
        np.testing.assert_allclose(np.asarray(both)[:, k], np.asarray(one), rtol=1e-6, atol=1e-7)
    _, info = sat_fast.saliency(fn, x, method="gradient", return_info=True)
    np.testing.assert_array_equal(np.asarray(info["targets"]), np.asarray(fn(jnp.asarray(x))).argmax(1))
    # the prediction comes with any targets (the pipeline needs no second forward pass)
    assert info["predicted"].shape == (3,)
    np.testing.assert_array_equal(np.asarray(info["predicted"]), np.asarray(fn(jnp.asarray(x))).argmax(1))
    _, info = sat_fast.saliency(fn, x, classes=[1, 3], method="gradient", return_info=True)
    np.testing.assert_array_equal(np.asarray(info["predicted"]), np.asarray(fn(jnp.asarray(x))).argmax(1))
    _, info = sat_fast.saliency(fn, x[:0], method="gradient", return_info=True)
    assert info["predicted"].shape == (0,)


def test_classes_equals_a_per_image_target_array():
    x = _images(3)
    by_classes = sat_fast.saliency(_linear, x, classes=[4, 1], method="gradient", reduce=None)
    by_array = sat_fast.saliency(_linear, x, np.tile([4, 1], (3, 1)), method="gradient", reduce=None)
    assert by_classes.shape == (3, 2, H, W, C)
    np.testing.assert_array_equal(np.asarray(by_classes), np.asarray(by_array))
    # an int array (B,) is one class per image, even when B equals the number of classes
    per_image = sat_fast.saliency(_linear, x, np.array([4, 1, 0]), method="gradient", reduce=None)
    np.testing.assert_allclose(np.asarray(per_image), LIN_W[[4, 1, 0]], rtol=1e-6)


def test_list_of_targets_is_deprecated_but_still_means_classes():
    x = _images(3)
    expected = sat_fast.saliency(_linear, x, classes=[0, 2], method="gradient")
    message = r"targets=\[\.\.\.\] as a list of classes for every image is deprecated; pass classes=\[\.\.\.\]"
    for old in ([0, 2], (0, 2)):
        with pytest.warns(DeprecationWarning, match=message) as record:
            maps = sat_fast.saliency(_linear, x, old, method="gradient")
        assert record[0].filename == __file__  # points at the caller
        np.testing.assert_array_equal(np.asarray(maps), np.asarray(expected))


def test_classes_and_targets_are_exclusive():
    with pytest.raises(ValueError, match=r"either targets= .* or classes="):
        sat_fast.saliency(_linear, _images(2), np.array([0, 1]), classes=[0])
    with pytest.raises(TypeError, match="classes must be a non-empty list of class indices"):
        sat_fast.saliency(_linear, _images(2), classes=[])


def test_option_values_come_from_the_literal_aliases():
    import typing

    from sat_fast._typing import Method, Output, QuadratureRule, Reduction
    from sat_fast.attribution import AUTO_REDUCE, METHODS, OUTPUTS, REDUCTIONS, RULES

    assert typing.get_args(Method) == METHODS and typing.get_args(QuadratureRule) == RULES
    assert typing.get_args(Reduction) == REDUCTIONS and typing.get_args(Output) == OUTPUTS
    assert set(AUTO_REDUCE) == set(METHODS)


def test_probability_and_log_probability_outputs_on_linear_model():
    x = _images(2)
    t = np.array([0, 2])
    logits = _linear_np(x)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mean_w = np.einsum("bn,nhwc->bhwc", p, LIN_W)
    dlogp = LIN_W[t] - mean_w
    for output, expected, value in (
        ("log_probability", dlogp, np.log(p[np.arange(2), t])),
        ("probability", p[np.arange(2), t, None, None, None] * dlogp, p[np.arange(2), t]),
    ):
        maps, info = sat_fast.saliency(_linear, x, t, method="gradient", output=output, reduce=None, return_info=True)
        np.testing.assert_allclose(np.asarray(maps), expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(info["output"]), value, rtol=1e-5)


# ======================================================================== batching and chunking


@pytest.mark.parametrize(
    ("method", "model", "options"),
    [
        ("integrated_gradients", "cnn", {"steps": 7}),
        ("smoothgrad", "mlp", {"samples": 5}),
        ("vargrad", "mlp", {"samples": 5}),
        ("expected_gradients", "mlp", {"samples": 5, "baseline": _images(3, seed=7)}),
    ],
)
def test_chunked_equals_unchunked(method, model, options):
    x = _images(5)
    fn = _cnn_fn() if model == "cnn" else _mlp
    whole = sat_fast.saliency(fn, x, method=method, reduce=None, **options)
    for chunk in (3, 12):  # points split within an image (padded); whole images per chunk (ragged block)
        maps, info = sat_fast.saliency(fn, x, method=method, reduce=None, chunk_size=chunk, return_info=True, **options)
        assert info["chunk_size"] <= max(chunk, options.get("steps", options.get("samples")))
        np.testing.assert_allclose(np.asarray(maps), np.asarray(whole), rtol=2e-5, atol=2e-6)


def test_small_memory_budget_chunks_and_gives_the_same_result():
    x = _images(4)
    big, info_big = sat_fast.saliency(_cnn_fn(), x, steps=16, return_info=True)
    small, info_small = sat_fast.saliency(_cnn_fn(), x, steps=16, memory_budget=200_000, return_info=True)
    assert info_small["chunk_size"] < info_big["chunk_size"]
    np.testing.assert_allclose(np.asarray(small), np.asarray(big), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("method", ["gradient", "integrated_gradients"])
def test_batch_equals_image_by_image(method):
    x = _images(5)
    fn = _cnn_fn()
    batch = sat_fast.saliency(fn, x, method=method, steps=8, reduce=None)
    for i in range(5):
        one = sat_fast.saliency(fn, x[i : i + 1], method=method, steps=8, reduce=None)
        np.testing.assert_allclose(np.asarray(batch)[i], np.asarray(one)[0], rtol=1e-5, atol=1e-6)


def _count_compiles(run):
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        run()
        return len(compiles)
    finally:
        # older jax releases (0.4.35) cannot unregister: the listener then stays, appending to a list nobody reads
        unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
        if unregister is not None:
            unregister(listener)


def test_no_recompilation_for_same_shapes_or_a_ragged_batch():
    model, variables = _cnn()
    x = _images(8)
    # a fresh partial per call, as users write it in a loop over batches
    first = _count_compiles(lambda: sat_fast.saliency(functools.partial(model.apply, variables), x, steps=4))
    assert first > 0

    def more():
        for _ in range(2):
            sat_fast.saliency(functools.partial(model.apply, variables), x, steps=4).block_until_ready()
        sat_fast.saliency(functools.partial(model.apply, variables), x[:5], steps=4).block_until_ready()
        sat_fast.saliency(functools.partial(model.apply, variables), 2 * x, steps=4).block_until_ready()

    assert _count_compiles(more) == 0


def test_batch_sharded_across_two_devices(tmp_path):
    x = 2 * _images(6)
    model, variables = _cnn()
    expected = sat_fast.saliency(functools.partial(model.apply, variables), x, steps=6, reduce=None)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", np.asarray(expected))
    script = textwrap.dedent(
        f"""
        import functools, sys, jax, jax.numpy as jnp, numpy as np
        import flax.linen as nn, sat_fast
        N_CLASSES = {N_CLASSES}
        assert jax.device_count() == 2, jax.devices()
        {textwrap.indent(_source_of_cnn(), "        ").strip()}
        model = SmoothCNN()
        variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, {H}, {W}, {C})))
        x = np.load({str(tmp_path / "x.npy")!r})
        maps, info = sat_fast.saliency(functools.partial(model.apply, variables), x, steps=6, reduce=None,
                                       return_info=True)
        assert info["devices"] == 2, info
        # the compiled kernel splits the chunk's rows over both devices (not a replicated computation)
        from sat_fast.attribution._compile import cached_kernels
        kernels = [kernel for _, kernel in cached_kernels("block_kernel")]
        shardings = kernels[-1].executable.output_shardings
        assert not shardings["maps"].is_fully_replicated, shardings
        np.testing.assert_allclose(np.asarray(maps), np.load({str(tmp_path / "expected.npy")!r}),
                                   rtol=2e-5, atol=2e-6)
        print("sharded ok")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = str(Path(sat_fast.__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded ok" in result.stdout


def _source_of_cnn() -> str:
    import inspect

    return inspect.getsource(SmoothCNN)


# ======================================================================== model kinds


class NnxCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(C, 4, (3, 3), rngs=rngs)
        self.head = nnx.Linear(4, N_CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.gelu(self.conv(x)).mean(axis=(1, 2)))


def test_flax_linen_nnx_and_plain_function_agree():
    x = _images(3)
    model, variables = _cnn()
    by_partial = sat_fast.saliency(functools.partial(model.apply, variables), x, steps=4)
    by_bound = sat_fast.saliency(model.bind(variables), x, steps=4)
    by_plain = sat_fast.saliency(lambda z: model.apply(variables, z), x, steps=4)
    np.testing.assert_allclose(np.asarray(by_bound), np.asarray(by_partial), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(by_plain), np.asarray(by_partial), rtol=1e-6, atol=1e-7)

    net = NnxCNN(nnx.Rngs(0))
    by_module = sat_fast.saliency(net, x, steps=4, return_info=True)
    by_closure = sat_fast.saliency(lambda z: net(z), x, steps=4, return_info=True)
    np.testing.assert_allclose(np.asarray(by_module[0]), np.asarray(by_closure[0]), rtol=1e-6, atol=1e-7)
    assert float(np.max(by_module[1]["relative_completeness_error"])) < 1e-2


def test_works_without_flax_installed(tmp_path):
    # a `flax` package that cannot be imported shadows the installed one
    (tmp_path / "flax").mkdir()
    (tmp_path / "flax" / "__init__.py").write_text("raise ImportError('flax is not installed here')\n")
    script = textwrap.dedent(
        """
        import sys
        import jax.numpy as jnp, numpy as np, pytest
        from sat_fast.attribution import saliency
        w = jnp.linspace(-1.0, 1.0, 4 * 4 * 3 * 2).reshape(-1, 2)
        fn = lambda x: x.reshape(x.shape[0], -1) @ w
        x = np.ones((2, 4, 4, 3), np.float32)
        maps, info = saliency(fn, x, steps=4, return_info=True)
        assert maps.shape == (2, 4, 4) and float(info["relative_completeness_error"].max()) < 1e-4
        assert saliency(fn, x, classes=[0, 1], method="smoothgrad", samples=2).shape == (2, 2, 4, 4)
        with pytest.raises(TypeError, match="gradcam needs a Flax linen model"):
            saliency(fn, x, method="gradcam", layer="Conv_0")
        assert "flax" not in sys.modules, "flax was imported"
        print("no flax ok")
        """
    )
    root = Path(sat_fast.__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=f"{tmp_path}{os.pathsep}{root}")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no flax ok" in result.stdout


# ======================================================================== the `saliency` package as a reference


def _pair_call_model(fn):
    def call_model_function(x_batch, call_model_args=None, expected_keys=None):
        target = call_model_args["target"]
        grads = jax.grad(lambda z: fn(z)[:, target].sum())(jnp.asarray(x_batch, jnp.float32))
        return {pair_saliency.INPUT_OUTPUT_GRADIENTS: np.asarray(grads)}

    return call_model_function


def test_matches_the_saliency_package_gradient_and_integrated_gradients():
    x = _images(2, seed=4)
    fn = _cnn_fn()
    targets = np.array([3, 1])
    ours_grad = sat_fast.saliency(fn, x, targets, method="gradient", reduce=None)
    ours_ig = sat_fast.saliency(fn, x, targets, steps=64, reduce=None)
    call = _pair_call_model(fn)
    for i, t in enumerate(targets):
        ref_grad = pair_saliency.GradientSaliency().GetMask(x[i], call, {"target": int(t)})
        np.testing.assert_allclose(np.asarray(ours_grad)[i], ref_grad, rtol=1e-5, atol=1e-6)
        ref_ig = pair_saliency.IntegratedGradients().GetMask(
            x[i], call, {"target": int(t)}, x_steps=2000, batch_size=500
        )
        scale = np.abs(ref_ig).max()
        np.testing.assert_allclose(np.asarray(ours_ig)[i], ref_ig, atol=2e-3 * scale)


# ======================================================================== bad input


def test_bad_images():
    with pytest.raises(ValueError, match=r"non-finite.*image 1"):
        x = _images(2)
        x[1, 0, 0, 0] = np.nan
        sat_fast.saliency(_linear, x)
    with pytest.raises(ValueError, match=r"images must have shape \(B, H, W, C\), got \(8, 8, 3\)"):
        sat_fast.saliency(_linear, _images(1)[0])
    with pytest.raises(TypeError, match=r"floating-point.*uint8"):
        sat_fast.saliency(_linear, np.zeros((1, H, W, C), np.uint8))


def test_bad_targets():
    with pytest.raises(ValueError, match=r"target 5 is out of range.*5 outputs"):
        sat_fast.saliency(_linear, _images(2), np.array([0, 5]))
    with pytest.raises(ValueError, match=r"target -1 is out of range"):
        sat_fast.saliency(_linear, _images(2), classes=[-1])
    with pytest.raises(ValueError, match=r"one class per image \(2,\)"):
        sat_fast.saliency(_linear, _images(2), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="integer class indices"):
        sat_fast.saliency(_linear, _images(2), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="unknown targets 'best'"):
        sat_fast.saliency(_linear, _images(2), "best")


def test_model_output_must_be_batch_by_classes():
    with pytest.raises(ValueError, match=r"logits \(B, N\).*returned \(2,\)"):
        sat_fast.saliency(lambda z: z.sum(axis=(1, 2, 3)), _images(1))
    with pytest.raises(ValueError, match=r"logits \(B, N\).*returned \(2, 8, 8, 3\)"):
        sat_fast.saliency(lambda z: z, _images(1))


def test_unknown_options():
    x = _images(1)
    for kwargs, message in (
        ({"method": "lime"}, "method must be one of 'integrated_gradients', .*; got 'lime'"),
        ({"rule": "simpson"}, "rule must be one of .*; got 'simpson'"),
        ({"reduce": "mean"}, "reduce must be one of .*; got 'mean'"),
        ({"output": "score"}, "output must be one of .*; got 'score'"),
        ({"baseline": "black"}, "unknown baseline 'black'"),
        ({"steps": 0}, "steps must be at least 1, got 0"),
        ({"method": "smoothgrad", "noise": -1.0}, "noise must be a finite number >= 0"),
        ({"method": "expected_gradients"}, "expected_gradients needs a reference set"),
        ({"baseline": np.zeros((2, 2))}, r"baseline shape \(2, 2\) does not broadcast"),
        ({"rule": "trapezoid", "steps": 1}, "trapezoid' needs steps >= 2"),
        ({"layer": "Conv_0"}, "layer is only used by method='gradcam'"),
        ({"memory_budget": 0}, "memory_budget must be at least 1"),
    ):
        with pytest.raises(ValueError, match=message):
            sat_fast.saliency(_linear, x, **kwargs)
    with pytest.raises(TypeError, match="fn must be a callable"):
        sat_fast.saliency(3, x)


def test_empty_batch():
    maps, info = sat_fast.saliency(_linear, np.zeros((0, H, W, C), np.float32), return_info=True)
    assert maps.shape == (0, H, W)
    assert info["completeness_error"].shape == (0,)


def test_a_function_that_is_not_jax_gets_a_clear_type_error():
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)

    def numpy_model(x):
        return np.asarray(x).mean(axis=(1, 2))  # converts the tracer: not traceable

    with pytest.raises(TypeError, match=r"fn must be a JAX function of the images .* Captum"):
        sat_fast.saliency(numpy_model, images, method="gradient")
