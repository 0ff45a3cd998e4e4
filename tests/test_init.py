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

