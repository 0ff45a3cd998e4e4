"""Gradients of rnn / lstm / gru and embedding end to end: the differentiated graph, lowered
once with a symbolic sequence length T, runs in onnxruntime for several T and agrees with
PyTorch's autograd (and with the numpy reference executor)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from almc.autodiff import differentiate
from almc.graph import INPUT, Graph, Node, trainable_params
from almc.lower import lower
from almc.ops.registry import Attrs, lookup, resolve_attrs
from almc.reference import execute
from almc.runtime import run
from almc.shapes import infer_node
from almc.types import TensorType

torch = pytest.importorskip("torch")

F, H = 3, 4
CELLS = [("rnn", {"nonlinearity": "tanh"}), ("rnn", {"nonlinearity": "relu"}), ("lstm", {}), ("gru", {})]


def loss_graph(opname, attrs, x_type):
    """loss = sum(op(x) * r): its gradient with respect to the op's output is r."""
    g = Graph(name=f"grad_{opname}")
    g.add(Node("x", INPUT, type=x_type))
    op = lookup(opname)
    a = resolve_attrs(op, attrs)
    y = g.add(Node("y", opname, ("x",), a, type=op.shape([x_type], a))).type
    g.add(Node("r", INPUT, type=y))
    g.add(Node("yr", "mul", ("y", "r"), Attrs(), type=infer_node("mul", [y, y], Attrs())))
    g.add(Node("loss", "sum", ("yr",), Attrs(axis=None, keepdims=False), type=TensorType("f32", ())))
    g.outputs = {"loss": "loss"}
    return g


def torch_grads(opname, attrs, weights, x, r):
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[opname]
    kw = {"nonlinearity": attrs["nonlinearity"]} if opname == "rnn" else {}
    m = cls(F, H, batch_first=True, **kw).double()
    with torch.no_grad():
        for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(m, f"{k}_l0").copy_(torch.from_numpy(weights[f"y.{k}"].astype(np.float64)))
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    y, _ = m(xt)
    if attrs.get("last"):
        y = y[:, -1]
    (y * torch.from_numpy(r.astype(np.float64))).sum().backward()
    out = {f"y.{k}": getattr(m, f"{k}_l0").grad.numpy() for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    out["x"] = xt.grad.numpy()
    return out


@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("opname,extra", CELLS, ids=[f"{n}-{e.get('nonlinearity', '')}" for n, e in CELLS])
def test_bptt_runs_for_a_sequence_length_known_only_at_run_time(opname, extra, last):
    attrs = {"hidden": H, "last": last, **extra}
    g = loss_graph(opname, attrs, TensorType("f32", ("N", "T", F)))
    params = trainable_params(g)
    dg, grads = differentiate(g, "loss", params, inputs=["x"])
    dg.outputs = {f"d/{k}": v for k, v in grads.items()}  # not the initializers' names
    rng = np.random.default_rng(3)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[opname]
    shapes = {"weight_ih": (G * H, F), "weight_hh": (G * H, H), "bias_ih": (G * H,), "bias_hh": (G * H,)}
    weights = {f"y.{k}": (rng.standard_normal(s) * 0.5).astype(np.float32) for k, s in shapes.items()}
    model = lower(dg, weights)
    onnx.checker.check_model(model, full_check=True)
    for T in (1, 3, 5):  # one model, several sequence lengths
        x = rng.standard_normal((2, T, F)).astype(np.float32)
        r = rng.standard_normal((2, H) if last else (2, T, H)).astype(np.float32)
        got, _ = run(model, {"x": x, "r": r}, device="cpu")
        ref = execute(dg, weights, {"x": x, "r": r})
        want = torch_grads(opname, attrs, weights, x, r)
        for k, v in want.items():
            np.testing.assert_allclose(got[f"d/{k}"], v, rtol=1e-4, atol=1e-5, err_msg=f"{opname} T={T}: onnx {k}")
            np.testing.assert_allclose(ref[f"d/{k}"], v, rtol=1e-4, atol=1e-5, err_msg=f"{opname} T={T}: reference {k}")


def test_embedding_weight_gradient_adds_repeated_ids():
    g = loss_graph("embedding", {"vocab": 6, "dim": 3}, TensorType("i64", ("N", "T")))
    dg, grads = differentiate(g, "loss", trainable_params(g))
    dg.outputs = {f"d/{k}": v for k, v in grads.items()}  # not the initializers' names
    rng = np.random.default_rng(0)
    weights = {"y.weight": rng.standard_normal((6, 3)).astype(np.float32)}
    ids = np.array([[1, 4, 1, 1], [0, 4, 2, 1]], np.int64)
    r = rng.standard_normal((2, 4, 3)).astype(np.float32)
    got, _ = run(lower(dg, weights), {"x": ids, "r": r}, device="cpu")
    want = np.zeros((6, 3), np.float32)
    np.add.at(want, ids.reshape(-1), r.reshape(-1, 3))
    np.testing.assert_allclose(got["d/y.weight"], want, rtol=1e-6, atol=1e-6)
    assert not want[[3, 5]].any()
