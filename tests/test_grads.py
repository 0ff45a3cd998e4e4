"""Every gradient rule against central finite differences, in float64, through the
numpy reference executor: d/dx sum(op(x) * R) for inputs and parameters."""
from __future__ import annotations

import numpy as np
import pytest
from opcheck import single_op_graph

from almc.autodiff import differentiate
from almc.gradcheck import central_differences
from almc.graph import INPUT, Node, trainable_params
from almc.init import initialize
from almc.ops.registry import Attrs, all_ops, lookup
from almc.reference import execute
from almc.shapes import infer_node
from almc.types import TensorType

CASES = [(name, i, ex) for name, op in sorted(all_ops().items()) if op.grad is not None
         for i, ex in enumerate(op.examples) if (ex[2:] or [{}])[0].get("finite_differences", True)]


def with_loss(g):
    """loss = sum(y * r) for a random input r: its gradient with respect to y is r."""
    y = g.node("y").type
    g.add(Node("r", INPUT, type=TensorType("f32", y.dims)))
    g.add(Node("yr", "mul", ("y", "r"), Attrs(), type=infer_node("mul", [y, y], Attrs())))
    g.add(Node("loss", "sum", ("yr",), Attrs(axis=None, keepdims=False), type=TensorType("f32", ())))
    g.outputs = {"loss": "loss"}
    return g


def test_every_differentiable_op_is_checked():
    assert len(CASES) >= 39


@pytest.mark.parametrize("name,i,example", CASES, ids=[f"{n}-{i}" for n, i, _ in CASES])
def test_gradient_matches_finite_differences(name, i, example):
    specs, attrs, *opts = example
    g0 = single_op_graph(name, specs, attrs, batch="N")
    op = lookup(name)
    rng = np.random.default_rng(100 + i)
    feeds = {}
    for k, (dtype, dims) in enumerate(specs):
        if dtype.startswith("i"):
            feeds[f"x{k}"] = rng.integers(0, 5, dims).astype(np.int64)
        else:
            feeds[f"x{k}"] = rng.standard_normal(dims)
            if (opts[0] if opts else {}).get("positive"):  # log, sqrt, pow: away from 0, where they are smooth
                feeds[f"x{k}"] = np.abs(feeds[f"x{k}"]) + 0.2
    weights = _weights(g0, rng)
    feeds["r"] = rng.standard_normal(execute(g0, weights, feeds)["y"].shape)
    g = with_loss(g0.copy())
    diff_inputs = [f"x{k}" for k, (dtype, _) in enumerate(specs)
                   if dtype.startswith("f") and (op.grad_inputs is None or k in op.grad_inputs)]
    params = trainable_params(g)
    dg, grads = differentiate(g, "loss", params, inputs=diff_inputs)
    dg.outputs = dict(grads)
    got = execute(dg, weights, feeds)

    for name_ in diff_inputs + params:
        value = (weights if name_ in weights else feeds)[name_]
        assert name_ in got, f"no gradient for {name_}"
        assert got[name_].shape == value.shape
        idx = rng.choice(value.size, size=min(value.size, 24), replace=False)
        fd = central_differences(g, weights, feeds, value, idx, 1e-6)
        np.testing.assert_allclose(got[name_].reshape(-1)[idx], fd, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{name}: gradient of {name_}")


def _weights(g, rng):
    w = {k: v.astype(np.float64) for k, v in initialize(g, 0).items()}
    for k in w:
        w[k] = rng.standard_normal(w[k].shape) * 0.5
        if k.endswith("running_var"):
            w[k] = np.abs(w[k]) + 0.5
    return w
