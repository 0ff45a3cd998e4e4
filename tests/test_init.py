"""Parameter initialisation: by the following activation, exact distributions, independent draws."""
from __future__ import annotations

import numpy as np
import pytest

import almc

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
LENET = ROOT / "models" / "lenet.alm"


def test_initialisation_follows_the_activation():
    m = almc.load("""
model M {
    input x: f32[N, 400]
    r = dense(x, 300) |> relu
    t = dense(r, 300) |> tanh
    b = dense(t, 300, init = "he") |> batchnorm |> relu
    output y = dense(b, 200)
}""")
    w = m.initial_weights(seed=0)
    assert np.std(w["r.dense.weight"]) == pytest.approx(np.sqrt(2 / 400), rel=0.02)   # He normal
    lim = np.sqrt(6 / (300 + 300))
    assert np.abs(w["t.dense.weight"]).max() <= lim and np.std(w["t.dense.weight"]) == pytest.approx(lim / np.sqrt(3), rel=0.02)
    assert np.std(w["b.dense.weight"]) == pytest.approx(np.sqrt(2 / 300), rel=0.02)
    assert not w["r.dense.bias"].any()
    assert (w["b.batchnorm.weight"] == 1).all() and (w["b.batchnorm.running_var"] == 1).all()
    lim = np.sqrt(6 / (300 + 200))  # no activation after the last layer: Glorot
    assert np.abs(w["y.weight"]).max() <= lim


@pytest.mark.parametrize("shape", [(1,), (7,), (300, 401), (64, 3, 3, 3)])
def test_normal_draws_follow_the_normal_distribution(shape):
    from math import erf, sqrt

    from almc.init import normal

    a = normal(np.random.default_rng(5), shape, 0.5)
    assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous and np.isfinite(a).all()
    if a.size < 1000:
        return
    x = np.sort(a.ravel().astype(np.float64)) / 0.5
    # Kolmogorov-Smirnov distance to the standard normal CDF: 1.63 / sqrt(n) is its 1% critical value
    cdf = 0.5 * (1 + np.vectorize(erf)(x / sqrt(2)))
    n = len(x)
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.63 / np.sqrt(n)
    # the two halves (cosine and sine of the same angles) are uncorrelated
    half = n // 2
    flat = a.ravel()
    assert abs(np.corrcoef(flat[:half], flat[half:2 * half])[0, 1]) < 4 / np.sqrt(half)


def test_a_parameter_does_not_depend_on_the_others():
    a = almc.load("model M { input x: f32[N, 4]\n h = dense(x, 3)\n output y = dense(h, 2) }").initial_weights(0)
    b = almc.load("model M { input x: f32[N, 4]\n h = dense(x, 3)\n k = dense(x, 5)\n output y = dense(h, 2)\n output z = k }").initial_weights(0)
    np.testing.assert_array_equal(a["y.weight"], b["y.weight"])



def test_initialisers_as_calls_per_weight_and_bias():
    m = almc.load("""
model M {
    input x: f32[N, 400]
    a = dense(x, 300, init = normal(0.05), bias_init = constant(0.1))
    b = dense(a, 300, init = uniform(-0.2, 0.3), bias_init = "ones")
    c = conv(reshape(b, (3, 10, 10)), 200, 3, init = "he_uniform", bias_init = normal(1.0))
    d = dense(flatten(c), 100, init = "glorot_normal")
    e = dense(d, 50, init = trunc_normal(0.1))
    output y = e
}""")
    w = m.initial_weights(seed=0)
    assert np.std(w["a.weight"]) == pytest.approx(0.05, rel=0.02) and abs(np.mean(w["a.weight"])) < 1e-3
    assert (w["a.bias"] == np.float32(0.1)).all() and (w["b.bias"] == 1).all()
    u = w["b.weight"]
    assert u.min() >= -0.2 and u.max() < 0.3 and np.mean(u) == pytest.approx(0.05, abs=2e-3)
    lim = np.sqrt(6 / 27)  # kaiming_uniform_: fan_in = 3 * 3 * 3
    assert np.abs(w["c.weight"]).max() <= lim and np.std(w["c.weight"]) == pytest.approx(lim / np.sqrt(3), rel=0.02)
    assert np.std(w["c.bias"]) == pytest.approx(1.0, rel=0.15)
    assert np.std(w["d.weight"]) == pytest.approx(np.sqrt(2 / (200 * 64 + 100)), rel=0.02)
    t = w["e.weight"]
    # N(0, 0.1^2) cut at 2 std: the std of the truncated normal is 0.1 * 0.8796
    assert np.abs(t).max() <= 0.2 and np.std(t) == pytest.approx(0.1 * 0.8796, rel=0.03)


def test_free_parameters_and_fixed_tensors():
    m = almc.load("""
model M {
    input x: f32[N, 3, 4]
    token = parameter((1, 1, 4), init = normal(0.02))
    pos = parameter((1, 4, 4))
    proj = parameter((4, 6), init = normal(1.0), trainable = false)
    h = concat(broadcast(token, x[:, :1]), x) + pos
    output y = cos(matmul(h, proj))
}""")
    w = m.initial_weights(seed=0)
    assert w["token.value"].shape == (1, 1, 4) and not w["pos.value"].any()
    s = m.summary()
    assert (s.total_params, s.trainable_params) == (4 + 16, 4 + 16)
    assert s.buffers == 24
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    h = np.concatenate([np.broadcast_to(w["token.value"], (2, 1, 4)), x], axis=1) + w["pos.value"]
    np.testing.assert_allclose(m.run({"x": x}, device="cpu")["y"], np.cos(h @ w["proj.value"]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("init,message", [
    ("normal(-1)", "normal(): the std must be positive, got -1.0"),
    ("uniform(1, 0)", "uniform(): needs low < high, got uniform(1, 0)"),
    ("normal(1, 2)", "normal(): normal takes 1 number: normal(std)"),
    ("\"trunc_normal(0)\"", "dense's argument 'init': the std must be positive, got 0.0"),
    ("\"gauss\"", "dense's argument 'init': an initialiser is one of"),
    ("3", "dense's argument 'init' expects an initialiser such as \"he\" or normal(0.02), got the integer 3"),
])
def test_bad_initialisers_are_located(init, message):
    from almc.errors import AlmError

    with pytest.raises(AlmError) as e:
        almc.load(f"model M {{\n input x: f32[N, 4]\n output y = dense(x, 2, init = {init})\n}}\n")
    assert e.value.diagnostics[0].message.startswith(message)
