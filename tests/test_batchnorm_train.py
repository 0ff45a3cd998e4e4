"""batchnorm_train: training-mode batch norm, which owns no parameters and reads those of
the inference batchnorm node it was made for (owner). test_ops / test_grads build single-op
graphs without owners, so this file builds x -> batchnorm (inference) plus a batchnorm_train
node with owner = that node, and checks it the same ways: numpy reference against the ONNX
lowering in onnxruntime, strict ONNX shape inference, and its gradient rule against
central finite differences in float64."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from opcheck import assert_close
from test_grads import with_loss

from almc.autodiff import differentiate
from almc.gradcheck import central_differences
from almc.graph import INPUT, Graph, Node, trainable_params
from almc.lower import lower
from almc.ops.registry import Attrs, lookup, resolve_attrs
from almc.reference import execute
from almc.runtime import run
from almc.types import TensorType

# (2, 4, 6) and (3, 4, 2, 2): maps of at most norm.FLAT_MAX_POSITIONS positions, whose per-channel
# operations run on [N, C x positions] rows (norm.channel_op)
SHAPES = [(4, 3), (2, 4, 6), (2, 3, 5, 5), (2, 2, 3, 4, 4), (3, 4, 2, 2)]
EPS = [1e-5, 1e-3, 0.1, 1e-5, 1e-5]


def bn_train_graph(shape, eps=1e-5, batch="N") -> Graph:
    """x -> bn (inference batchnorm, owns weight / bias / running stats) and y = batchnorm_train(x)
    with owner = bn; only y is an output."""
    g = Graph(name="bn_train")
    dims = (batch, *shape[1:]) if batch else tuple(shape)
    t = TensorType("f32", dims)
    g.add(Node("x", INPUT, type=t))
    g.add(Node("bn", "batchnorm", ("x",), resolve_attrs(lookup("batchnorm"), {"eps": eps}), type=t))
    g.add(Node("y", "batchnorm_train", ("x",), resolve_attrs(lookup("batchnorm_train"), {"eps": eps}), type=t,
               owner="bn"))
    g.outputs["y"] = "y"
    return g


def random_weights(g, rng, dtype=np.float32):
    c = g.node("x").type.dims[1]
    w = {f"bn.{k}": (rng.standard_normal(c) * 0.5).astype(dtype) for k in ("weight", "bias", "running_mean")}
    w["bn.running_var"] = (np.abs(rng.standard_normal(c)) + 0.5).astype(dtype)
    return w


@pytest.mark.parametrize("shape,eps", list(zip(SHAPES, EPS)), ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("batch", ["N", None], ids=["symbolic", "fixed"])
def test_reference_and_onnx_agree(shape, eps, batch):
    g = bn_train_graph(shape, eps, batch)
    rng = np.random.default_rng(len(shape))
    weights = random_weights(g, rng)
    feeds = {"x": (rng.standard_normal(shape) * 2 + 1).astype(np.float32)}
    expected = execute(g, weights, feeds)["y"]
    model = lower(g, weights)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value if d.HasField("dim_value") else d.dim_param for d in out] == list(g.node("y").type.dims)
    # it reads the inference node's parameters (it has none of its own), as a training step's inputs
    assert {"bn.weight", "bn.bias"} <= {i.name for i in lower(g, params_as_inputs=True).graph.input}
    actual, _ = run(model, feeds, device="cpu")
    assert_close(actual["y"], expected)


@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_matches_torch_training_batch_norm(shape):
    torch = pytest.importorskip("torch")
    g = bn_train_graph(shape, 1e-5)
    rng = np.random.default_rng(3)
    weights = random_weights(g, rng, np.float64)
    x = rng.standard_normal(shape) * 3 - 1
    ours = execute(g, weights, {"x": x})["y"]
    rm, rv = torch.zeros(shape[1], dtype=torch.float64), torch.ones(shape[1], dtype=torch.float64)
    ref = torch.nn.functional.batch_norm(torch.from_numpy(x), rm, rv, torch.from_numpy(weights["bn.weight"]),
                                         torch.from_numpy(weights["bn.bias"]), training=True, momentum=1.0, eps=1e-5)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-10, atol=1e-10)
    # with momentum 1 torch's running statistics are the batch's: mean and the unbiased variance
    stats = {k: lookup(k).reference([x], {}, resolve_attrs(lookup(k), kw))
             for k, kw in (("batch_mean", {}), ("batch_var", {"unbiased": True}))}
    np.testing.assert_allclose(stats["batch_mean"], rm.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stats["batch_var"], rv.numpy(), rtol=1e-10, atol=1e-12)
    biased = lookup("batch_var").reference([x], {}, Attrs(unbiased=False))
    np.testing.assert_allclose(biased, x.var(axis=(0, *range(2, x.ndim))), rtol=1e-12)


def _fd_check(g, grads_graph, grads, weights, feeds, names, rng):
    got = execute(grads_graph, weights, feeds)
    for name in names:
        value = (weights if name in weights else feeds)[name]
        assert name in got, f"no gradient for {name}"
        idx = rng.choice(value.size, size=min(value.size, 24), replace=False)
        fd = central_differences(g, weights, feeds, value, idx, 1e-6)
        np.testing.assert_allclose(got[name].reshape(-1)[idx], fd, rtol=1e-5, atol=1e-6,
                                   err_msg=f"batchnorm_train: gradient of {name}")


@pytest.mark.parametrize("shape,eps", list(zip(SHAPES, EPS)), ids=[str(s) for s in SHAPES])
def test_gradient_matches_finite_differences(shape, eps):
    g = with_loss(bn_train_graph(shape, eps))
    rng = np.random.default_rng(11 + len(shape))
    weights = random_weights(g, rng, np.float64)
    feeds = {"x": rng.standard_normal(shape) * 2 + 0.5, "r": rng.standard_normal(shape)}
    params = trainable_params(g)
    assert params == ["bn.weight", "bn.bias"]
    dg, grads = differentiate(g, "loss", params, inputs=["x"])
    assert set(grads) == {"x", "bn.weight", "bn.bias"}
    dg.outputs = dict(grads)
    _fd_check(g, dg, grads, weights, feeds, ["x", "bn.weight", "bn.bias"], rng)


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=[str(s) for s in SHAPES[1:3]])
def test_gradient_graph_lowers_and_matches_reference(shape):
    """The backward ops the rule emits (batchnorm_train_grad, batchnorm_grad_weight over batch_mean /
    batch_var, parameter reads through the owner) run in onnxruntime as in the reference executor."""
    g = with_loss(bn_train_graph(shape, 1e-3))
    rng = np.random.default_rng(5)
    weights = random_weights(g, rng)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32), "r": rng.standard_normal(shape).astype(np.float32)}
    dg, grads = differentiate(g, "loss", trainable_params(g), inputs=["x"])
    dg.outputs = {f"grad_{k.replace('.', '_')}": v for k, v in grads.items()}
    expected = execute(dg, weights, feeds)
    model = lower(dg, weights)
    onnx.checker.check_model(model, full_check=True)
    actual, _ = run(model, feeds, device="cpu")
    for k in expected:
        assert_close(actual[k], expected[k], rtol=1e-4)


def test_parameter_gradients_without_input_gradients():
    """A batchnorm right after a data input: nothing before it is trainable, and it owns no
    parameters itself, yet its owner's weight and bias must get gradients."""
    shape = (4, 3, 2, 2)
    g = with_loss(bn_train_graph(shape))
    rng = np.random.default_rng(2)
    weights = random_weights(g, rng, np.float64)
    feeds = {"x": rng.standard_normal(shape), "r": rng.standard_normal(shape)}
    dg, grads = differentiate(g, "loss", trainable_params(g))
    assert set(grads) == {"bn.weight", "bn.bias"}
    dg.outputs = dict(grads)
    _fd_check(g, dg, grads, weights, feeds, ["bn.weight", "bn.bias"], rng)
