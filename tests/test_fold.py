"""Batch norm folded into the layer before it at export."""
from __future__ import annotations

import numpy as np

import almc

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
LENET = ROOT / "models" / "lenet.alm"


def test_batch_norm_folds_into_the_conv_before_it_and_computes_the_same():
    import collections

    # 96x96: every stage keeps maps of 3x3 or more, so every conv stays a Conv (see conv_forms)
    m = almc.load(ROOT / "models" / "resnet18.alm", size=96, classes=10)
    rng = np.random.default_rng(0)
    w = m.initial_weights()
    for k in w:  # non-trivial statistics and affine parameters
        if ".batchnorm." in k or k.split(".")[-1] in ("running_mean", "running_var") or "/conv2." in k:
            w[k] = (np.abs(rng.standard_normal(w[k].shape)) + 0.5 if k.endswith("var")
                    else rng.standard_normal(w[k].shape) * 0.3).astype(np.float32)
    m.weights = w
    before = {k: v.copy() for k, v in w.items()}
    folded, plain = m.compile(), m.compile(fold=False)
    for k, v in before.items():  # the model's own weights are folded into copies, never overwritten
        np.testing.assert_array_equal(m.weights[k], v)
    ops = collections.Counter(n.op_type for n in folded.graph.node)
    assert "BatchNormalization" not in ops and ops["Conv"] == 20
    assert collections.Counter(n.op_type for n in plain.graph.node)["BatchNormalization"] == 20
    x = rng.standard_normal((2, 3, 96, 96)).astype(np.float32)
    from almc.runtime import run

    a, b = run(folded, {"image": x}, "cpu")[0]["logits"], run(plain, {"image": x}, "cpu")[0]["logits"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_fresh_weights_fold_in_place_to_the_same_values():
    import onnx.numpy_helper

    from almc.fold import fold_layers

    m = almc.load(ROOT / "models" / "resnet18.alm", size=32, classes=10)
    _, expected = fold_layers(m.graph, m.initial_weights(3))
    got = {t.name: onnx.numpy_helper.to_array(t) for t in m.compile(seed=3).graph.initializer}
    # a weight that only a constant relayout reads (a 1x1 map's conv as a Gemm) is stored relaid
    # out, under the name of what it became (lower.fold_constants); the others under their own
    stored = set(expected) & set(got)
    assert m.weights is None and len(stored) > len(expected) // 2
    for k in stored:
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)

