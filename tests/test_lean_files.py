"""Lean files: onnxsim and onnxoptimizer (test extras) find nothing to remove in an inference model
of models/ (test_models.RUN's sizes) but folds that would grow the file. almc folds constant
subgraphs at compile time (lower.fold_constants: recurrent weights stored in ONNX's gate order, a
small map's conv weight as its Gemm matrix) and composes transposes (lower.compose_transposes).

The weights are redrawn at random first: onnxsim drops an Add of a bias that is zero at
initialisation (ViT's), which a trained model's is not. What onnxsim may still fold grows the
file: the dense matrix of a convolution over a map hardly larger than its kernel (ops/conv_forms.py),
kept as a product with the weight since storing it would double ResNet-18's file at 64x64."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from test_models import RUN
from test_portable import load

onnxsim = pytest.importorskip("onnxsim")
onnxoptimizer = pytest.importorskip("onnxoptimizer")
SLOW = {"alexnet", "vgg16", "unet", "c3d", "googlenet", "resnet50", "efficientnet_b0"}
# the models where onnxsim precomputes a dense convolution matrix, and by how much the file grows
GROWS = {"resnet18", "resnet50", "googlenet", "c3d"}


def redrawn(proto):
    rng = np.random.default_rng(0)
    for t in proto.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.size > 1:
            t.CopyFrom(numpy_helper.from_array(rng.uniform(0.5, 1.5, a.shape).astype(np.float32), t.name))
    return proto


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in RUN])
def test_simplifiers_find_nothing_to_remove(name):
    proto = redrawn(load(name).compile())
    simplified, ok = onnxsim.simplify(proto)
    assert ok
    # (both may add nodes: a MatMul and its bias over [N, T, D] become Reshape, Gemm, Reshape)
    assert len(onnxoptimizer.optimize(proto).graph.node) >= len(proto.graph.node)
    if name in GROWS:
        assert len(simplified.graph.node) < len(proto.graph.node)
        assert simplified.ByteSize() > 1.1 * proto.ByteSize()
    else:
        assert len(simplified.graph.node) >= len(proto.graph.node)


def test_recurrent_weights_are_stored_in_onnx_gate_order():
    """An LSTM's inference model is the fused op and its classifier: no Split/Concat reordering
    PyTorch's gates (i, f, g, o) into ONNX's (i, o, f, c) at run time."""
    proto = load("lstm").compile()
    assert [n.op_type for n in proto.graph.node] == ["Transpose", "LSTM", "Squeeze", "Gemm"]
    w = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    lstm = next(n for n in proto.graph.node if n.op_type == "LSTM")
    W = w[lstm.input[1]][0]  # [4H, F] in ONNX order
    torch_order = load("lstm").initial_weights(0)["layer0/h.weight_ih"]
    H = W.shape[0] // 4
    i, f, g, o = (torch_order[k * H:(k + 1) * H] for k in range(4))
    np.testing.assert_array_equal(W, np.concatenate([i, o, f, g]))
    assert onnx.checker.check_model(proto, full_check=True) is None
