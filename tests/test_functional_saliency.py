"""sat_fast.functional's saliency methods: equal to sat_fast.saliency, pure under jit/vmap/grad, any model kind.

References: float64 numpy closed forms (linear model, tanh MLP) and sat_fast.saliency on the same inputs
(the host driver, itself tested against float64 references and the `saliency` package in test_saliency.py).
"""

from __future__ import annotations

import functools

import equinox as eqx
import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import sat_fast
from sat_fast.functional import _saliency as F

H = W = 8
C = 3
N_CLASSES = 5

_RNG = np.random.default_rng(3)
LIN_W = _RNG.normal(size=(N_CLASSES, H, W, C))
LIN_B = _RNG.normal(size=N_CLASSES)
HIDDEN = 12
MLP_W1 = _RNG.normal(size=(H * W * C, HIDDEN)) / np.sqrt(H * W * C)
MLP_B1 = _RNG.normal(size=HIDDEN) * 0.3
MLP_W2 = _RNG.normal(size=(HIDDEN, N_CLASSES))
MLP_B2 = _RNG.normal(size=N_CLASSES)


def _images(b: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(b, H, W, C)).astype(np.float32)


# The test models contract at full float32 precision, as the float64 references do: on GPUs XLA's default
# is TF32 (10-bit mantissa), which would make the model, not sat_fast, miss the references there.
FULL = jax.lax.Precision.HIGHEST


def _linear(x):
    return jnp.einsum("bhwc,nhwc->bn", x, jnp.asarray(LIN_W, x.dtype), precision=FULL) + jnp.asarray(LIN_B, x.dtype)


def _mlp(x):
    flat = x.reshape(x.shape[0], -1)
    h = jnp.tanh(jnp.matmul(flat, jnp.asarray(MLP_W1, x.dtype), precision=FULL) + jnp.asarray(MLP_B1, x.dtype))
    return jnp.matmul(h, jnp.asarray(MLP_W2, x.dtype), precision=FULL) + jnp.asarray(MLP_B2, x.dtype)


def _mlp_gradient_np(x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """d logit[target] / d x of the tanh MLP in float64: W1 @ (W2[:, t] * (1 - h**2))."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    h = np.tanh(flat @ MLP_W1 + MLP_B1)
    back = MLP_W2[:, targets].T * (1 - h**2)  # (B, hidden)
    return (back @ MLP_W1.T).reshape(x.shape)


class SmoothCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        bias = nn.initializers.normal(0.5)
        x = nn.softplus(nn.Conv(6, (3, 3), bias_init=bias, kernel_init=nn.initializers.normal(0.6))(x))
        x = nn.gelu(nn.Conv(6, (3, 3), strides=2, bias_init=bias, kernel_init=nn.initializers.normal(0.6))(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(N_CLASSES, bias_init=bias)(x)


@functools.cache
def _cnn():
    model = SmoothCNN()
    return model, model.init(jax.random.PRNGKey(1), jnp.zeros((1, H, W, C)))


def _cnn_fn():
    model, variables = _cnn()
    return functools.partial(model.apply, variables)


def _close(a, b, rtol=2e-5, atol=2e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ======================================================================== equal to sat_fast.saliency

_CASES = [
    ("gradient", {}),
    ("gradient_x_input", {}),
    *[("integrated_gradients", {"steps": 6, "rule": rule}) for rule in sat_fast.attribution.RULES],
    ("integrated_gradients", {"steps": 5, "baseline": "blur"}),
    ("integrated_gradients", {"steps": 5, "baseline": "uniform"}),
    ("integrated_gradients", {"steps": 5, "baseline": 0.25}),
    ("integrated_gradients", {"steps": 5, "baseline": _images(4, seed=9)}),
    ("integrated_gradients", {"steps": 5, "baseline": _images(1, seed=9)[0]}),  # broadcast to every image
    ("expected_gradients", {"samples": 5, "baseline": _images(3, seed=7)}),
    ("smoothgrad", {"samples": 5, "noise": 0.2}),
    ("smoothgrad_squared", {"samples": 5}),
    ("vargrad", {"samples": 5}),
]


@pytest.mark.parametrize(("method", "options"), _CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_equals_saliency_for_every_method_rule_and_baseline(method, options):
    x = _images(4)
    targets = np.array([0, 3, 1, 4])
    expected = sat_fast.saliency(_cnn_fn(), x, targets, method=method, reduce=None, seed=11, **options)
    got = F.attribute(_cnn_fn(), x, targets, method=method, reduce=None, key=jax.random.key(11), **options)
    assert got.shape == expected.shape == (4, H, W, C) and got.dtype == expected.dtype
    _close(got, expected)


@pytest.mark.parametrize("reduce", ["auto", "sum", "abs_sum", "max_abs", "l2"])
def test_equals_saliency_for_every_reduction(reduce):
    x = _images(3)
    for method in ("gradient", "smoothgrad"):
        expected = sat_fast.saliency(_cnn_fn(), x, method=method, reduce=reduce, samples=3)
        got = F.attribute(_cnn_fn(), x, method=method, reduce=reduce, samples=3, key=jax.random.key(0))
        assert got.shape == expected.shape == (3, H, W)
        _close(got, expected)


@pytest.mark.parametrize("output", ["logit", "probability", "log_probability"])
@pytest.mark.parametrize("method", ["gradient", "integrated_gradients", "smoothgrad"])
def test_equals_saliency_for_every_output_and_predicted_or_several_targets(output, method):
    x = _images(3, seed=2)
    for targets, classes in ((None, None), (None, [1, 4])):
        expected = sat_fast.saliency(
            _cnn_fn(), x, targets, classes=classes, method=method, output=output, steps=4, samples=4
        )
        t = None if classes is None else np.broadcast_to(np.array(classes), (3, 2))
        got = F.attribute(_cnn_fn(), x, t, method=method, output=output, steps=4, samples=4, key=jax.random.key(0))
        assert got.shape == expected.shape
        _close(got, expected)


def test_gradcam_equals_saliency():
    model, variables = _cnn()
    x = _images(3, seed=4)
    for targets in (None, np.array([2, 0, 4]), np.array([[1, 2], [3, 4], [0, 0]])):
        expected = sat_fast.saliency(
            functools.partial(model.apply, variables), x, targets, method="gradcam", layer="Conv_1"
        )
        got = jax.jit(lambda v, xx, t=targets: F.gradcam(model.bind(v), xx, t, layer="Conv_1"))(variables, x)
        assert got.shape == expected.shape
        _close(got, expected)


def test_per_method_functions_equal_attribute():
    x = _images(2, seed=5)
    t = np.array([1, 2])
    key = jax.random.key(4)
    refs = _images(2, seed=6)
    fn = _cnn_fn()
    pairs = [
        (F.gradient(fn, x, t), {"method": "gradient"}),
        (F.gradient_x_input(fn, x, t), {"method": "gradient_x_input"}),
        (F.integrated_gradients(fn, x, t, steps=3, baseline="uniform", key=key), {"steps": 3, "baseline": "uniform"}),
        (F.expected_gradients(fn, x, t, baseline=refs, key=key, samples=3), {"method": "expected_gradients"}),
        (F.smoothgrad(fn, x, t, key=key, samples=3), {"method": "smoothgrad"}),
        (F.smoothgrad_squared(fn, x, t, key=key, samples=3), {"method": "smoothgrad_squared"}),
        (F.vargrad(fn, x, t, key=key, samples=3), {"method": "vargrad"}),
    ]
    for got, options in pairs:
        options = dict(options)
        if options.get("method") == "expected_gradients":
            options.update(baseline=refs, samples=3)
        elif options.get("method") in ("smoothgrad", "smoothgrad_squared", "vargrad"):
            options.update(samples=3)
        expected = sat_fast.saliency(fn, x, t, seed=4, **options)
        _close(got, expected)


# ======================================================================== closed forms (float64 references)


@pytest.mark.parametrize("rule", ["left", "right", "midpoint", "trapezoid", "gauss_legendre"])
def test_integrated_gradients_of_a_linear_model_under_jit(rule):
    x = _images(3)
    base = _images(3, seed=1)
    t = np.array([0, 2, 4])
    maps = jax.jit(lambda xx, bb, tt: F.integrated_gradients(_linear, xx, tt, steps=3, rule=rule, baseline=bb))(
        x, base, t
    )
    expected = ((x.astype(np.float64) - base) * LIN_W[t]).sum(-1)
    _close(maps, expected, rtol=1e-5, atol=1e-5)


def test_gradient_of_a_tanh_mlp_matches_float64_reference():
    x = _images(4)
    t = np.array([4, 0, 2, 1])
    maps = jax.jit(lambda xx: F.gradient(_mlp, xx, t, reduce=None))(x)
    _close(maps, _mlp_gradient_np(x, t), rtol=1e-4, atol=1e-5)


def _dot_precisions(jaxpr) -> list:
    """The precision of every dot_general in a closed jaxpr, sub-jaxprs (jit, vmap, custom rules) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _dot_precisions(sub)
    return found


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("integrated_gradients", {"baseline": "blur", "steps": 3}),
        ("smoothgrad_squared", {"samples": 3}),
        ("vargrad", {"samples": 3}),
        ("expected_gradients", {"samples": 3}),
    ],
)
def test_every_contraction_of_the_methods_runs_at_full_precision(method, options):
    """XLA's default float32 dot on GPUs is TF32: every dot_general sat_fast adds must ask for HIGHEST.

    The model here has no dot of its own, so every dot in the trace is sat_fast's (quadrature weights, blur).
    """
    weights = jnp.asarray(LIN_W, jnp.float32)

    def dotless(x):
        return (x[:, None] * weights[None]).sum(axis=(2, 3, 4))

    x = _images(2)
    if method == "expected_gradients":
        options = {**options, "baseline": _images(3, seed=4)}
    jaxpr = jax.make_jaxpr(
        lambda xx: F.attribute(dotless, xx, np.array([0, 1]), method=method, key=jax.random.key(0), **options)
    )(x)
    precisions = _dot_precisions(jaxpr.jaxpr)
    assert precisions, "the trace has no contraction: this test could not fail"
    full = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    assert all(p == full for p in precisions), precisions


def test_target_out_of_range_gives_nan_maps_under_jit():
    x = _images(3)
    maps = jax.jit(lambda t: F.gradient(_linear, x, t))(jnp.array([1, N_CLASSES, -1]))
    assert np.isfinite(np.asarray(maps[0])).all()
    assert np.isnan(np.asarray(maps[1:])).all()


# ======================================================================== jit, vmap, grad, key folding


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "expected_gradients", "vargrad"])
def test_jit_equals_eager_and_vmap_over_an_extra_batch_axis(method):
    x = _images(6).reshape(2, 3, H, W, C)
    t = np.array([[0, 1, 2], [3, 4, 0]])
    refs = _images(2, seed=8)
    key = jax.random.key(5)

    options = {"baseline": refs} if method == "expected_gradients" else {}

    def one(xx, tt, ii):
        return F.attribute(_mlp, xx, tt, method=method, key=key, index=ii, steps=4, samples=4, **options)

    index = np.arange(6, dtype=np.int32).reshape(2, 3)
    eager = [one(x[i], t[i], index[i]) for i in range(2)]
    _close(jax.jit(one)(x[0], t[0], index[0]), eager[0], rtol=1e-5, atol=1e-6)
    batched = jax.jit(jax.vmap(one))(x, t, index)
    assert batched.shape == (2, 3, H, W)
    _close(batched, np.stack(eager), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("smoothgrad", {}),
        ("smoothgrad_squared", {}),
        ("vargrad", {}),
        ("expected_gradients", {"baseline": _images(4, seed=3)}),
        ("integrated_gradients", {"baseline": "uniform", "steps": 4}),
    ],
)
def test_key_folded_per_image_index_makes_results_independent_of_batch_split(method, options):
    x = _images(7)
    t = np.arange(7) % N_CLASSES
    key = jax.random.key(21)
    whole = F.attribute(_mlp, x, t, method=method, key=key, samples=4, **options)
    parts = [
        F.attribute(_mlp, x[s], t[s], method=method, key=key, index=np.arange(7)[s], samples=4, **options)
        for s in (slice(0, 2), slice(2, 3), slice(3, 7))
    ]
    _close(np.concatenate(parts), whole, rtol=1e-5, atol=1e-6)
    # the index matters (else the split test above could not fail): other indices, other noise
    shifted = F.attribute(_mlp, x, t, method=method, key=key, index=np.arange(7) + 100, samples=4, **options)
    assert not np.allclose(np.asarray(shifted), np.asarray(whole))


def test_maps_are_differentiable_in_the_model_parameters():
    """A saliency prior in a loss: d/dW of the summed gradient x input of a linear model is the input."""
    x = _images(3)
    t = np.array([1, 1, 3])

    def loss(w):
        fn = lambda z: jnp.einsum("bhwc,nhwc->bn", z, w)  # noqa: E731
        return F.gradient_x_input(fn, x, t).sum()

    grad = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(LIN_W, jnp.float32)))
    expected = np.zeros_like(LIN_W)
    for image, target in zip(x, t, strict=True):
        expected[target] += image
    _close(grad, expected, rtol=1e-5, atol=1e-5)


# ======================================================================== model kinds


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(HIDDEN)(x.reshape(x.shape[0], -1)))
        return nn.Dense(N_CLASSES)(h)


class NnxMLP(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.hidden = nnx.Linear(H * W * C, HIDDEN, rngs=rngs)
        self.head = nnx.Linear(HIDDEN, N_CLASSES, rngs=rngs)
        self.hidden.kernel = nnx.Param(jnp.asarray(MLP_W1, jnp.float32))
        self.hidden.bias = nnx.Param(jnp.asarray(MLP_B1, jnp.float32))
        self.head.kernel = nnx.Param(jnp.asarray(MLP_W2, jnp.float32))
        self.head.bias = nnx.Param(jnp.asarray(MLP_B2, jnp.float32))

    def __call__(self, x):
        return self.head(jnp.tanh(self.hidden(x.reshape(x.shape[0], -1))))


class EqxMLP(eqx.Module):
    """One image (H, W, C) -> logits (N,): Equinox's convention; jax.vmap makes it a batch model."""

    hidden: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self):
        keys = jax.random.split(jax.random.key(0))
        hidden = eqx.nn.Linear(H * W * C, HIDDEN, key=keys[0])
        head = eqx.nn.Linear(HIDDEN, N_CLASSES, key=keys[1])
        hidden = eqx.tree_at(lambda m: (m.weight, m.bias), hidden, (jnp.asarray(MLP_W1.T), jnp.asarray(MLP_B1)))
        head = eqx.tree_at(lambda m: (m.weight, m.bias), head, (jnp.asarray(MLP_W2.T), jnp.asarray(MLP_B2)))
        self.hidden = jax.tree.map(lambda a: a.astype(jnp.float32), hidden)
        self.head = jax.tree.map(lambda a: a.astype(jnp.float32), head)

    def __call__(self, x):
        return self.head(jnp.tanh(self.hidden(x.reshape(-1))))


def _model_kinds():
    linen = LinenMLP()
    params = {
        "params": {
            "Dense_0": {"kernel": jnp.asarray(MLP_W1, jnp.float32), "bias": jnp.asarray(MLP_B1, jnp.float32)},
            "Dense_1": {"kernel": jnp.asarray(MLP_W2, jnp.float32), "bias": jnp.asarray(MLP_B2, jnp.float32)},
        }
    }
    return {
        "plain": _mlp,
        "linen_partial": functools.partial(linen.apply, params),
        "linen_bound": linen.bind(params),
        "nnx": NnxMLP(),
        "equinox": jax.vmap(EqxMLP()),
    }


@pytest.mark.parametrize("kind", ["plain", "linen_partial", "linen_bound", "nnx", "equinox"])
def test_models_from_linen_nnx_equinox_and_plain_functions(kind):
    fn = _model_kinds()[kind]
    x = _images(3)
    t = np.array([2, 0, 4])
    got = jax.jit(lambda xx: F.gradient(fn, xx, t, reduce=None))(x)
    _close(got, _mlp_gradient_np(x, t), rtol=1e-4, atol=1e-5)
    ig = F.integrated_gradients(fn, x, t, steps=4)
    _close(ig, sat_fast.saliency(fn, x, t, steps=4))


def test_equinox_parameters_as_jit_arguments():
    """The functional layer takes the parameters as traced arguments (eqx.filter_jit)."""
    model = EqxMLP()
    x = _images(2)
    t = np.array([1, 3])

    @eqx.filter_jit
    def step(m, xx):
        return F.integrated_gradients(jax.vmap(m), xx, t, steps=4)

    _close(step(model, x), sat_fast.saliency(jax.vmap(model), x, t, steps=4))


# ======================================================================== errors (static, before tracing)


def test_random_methods_need_a_key_and_static_errors_are_clear():
    x = _images(2)
    with pytest.raises(ValueError, match=r"key=jax\.random\.key"):
        F.attribute(_mlp, x, method="smoothgrad")
    with pytest.raises(ValueError, match=r"key=jax\.random\.key"):
        F.integrated_gradients(_mlp, x, baseline="uniform")
    with pytest.raises(ValueError, match=r"images must have shape \(B, H, W, C\), got \(8, 8, 3\)"):
        F.gradient(_mlp, x[0])
    with pytest.raises(ValueError, match="unknown baseline 'noise'"):
        F.integrated_gradients(_mlp, x, baseline="noise")
    with pytest.raises(ValueError, match="reference set shape"):
        F.expected_gradients(_mlp, x, baseline=x[0], key=jax.random.key(0))
    with pytest.raises(ValueError, match="targets must have one class per image"):
        F.gradient(_mlp, x, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="rule must be one of"):
        F.integrated_gradients(_mlp, x, rule="simpson")
    with pytest.raises(TypeError, match="gradcam needs a Flax linen model"):
        F.gradcam(_mlp, x, layer="Conv_0")
    model, variables = _cnn()
    with pytest.raises(ValueError, match=r"unknown gradcam layer 'nope'; layers .*Conv_0"):
        F.gradcam(model.bind(variables), x, layer="nope")
