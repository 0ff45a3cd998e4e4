"""One registry-driven test walks every op: shape rule, numpy reference, ONNX in
onnxruntime (each target's formulation: ops/emit.TARGETS), and onnx's strict shape
inference must all agree. A new op is tested the moment it is registered with `examples`;
tests/test_portable.py runs the portable forms in the other runtimes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from opcheck import assert_close, random_inputs, single_op_graph

from almc.init import initialize
from almc.lower import lower
from almc.ops.emit import TARGETS
from almc.ops.registry import all_ops
from almc.reference import execute
from almc.runtime import run

CASES = [(name, i, ex) for name, op in sorted(all_ops().items()) for i, ex in enumerate(op.examples)]


def test_every_op_has_examples():
    alone = {"read_param", "batchnorm_train"}  # read another node's parameters: see test_batchnorm_train.py
    missing = [name for name, op in all_ops().items() if not op.examples and name not in alone]
    assert not missing, f"ops without examples (untested): {missing}"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name,i,example", CASES, ids=[f"{n}-{i}" for n, i, _ in CASES])
def test_op_reference_onnx_and_shape_agree(name, i, example, target):
    specs, attrs, *opts = example
    symbolic = (opts[0] if opts else {}).get("symbolic_batch", True)
    g = single_op_graph(name, specs, attrs, batch="N" if symbolic else None)
    weights = initialize(g, seed=1)
    # non-trivial values for every parameter and buffer (zeros would hide bias bugs)
    rng = np.random.default_rng(7)
    for k, w in weights.items():
        weights[k] = (rng.standard_normal(w.shape) * 0.5).astype(np.float32)
        if k.endswith("running_var"):
            weights[k] = np.abs(weights[k]) + 0.5
    feeds = random_inputs(specs, seed=i)
    if (opts[0] if opts else {}).get("positive"):
        feeds = {k: np.abs(v) for k, v in feeds.items()}
    expected = execute(g, weights, feeds)["y"]
    ours = g.node("y").type
    assert expected.shape[1:] == tuple(ours.dims[1:]), "shape rule disagrees with the numpy reference"
    model = lower(g, weights, target=target)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type.shape.dim
    got = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in out]
    assert got == list(ours.dims)
    actual, provider = run(model, feeds, device="cpu")
    assert provider == "CPUExecutionProvider"
    assert_close(actual["y"], expected)
