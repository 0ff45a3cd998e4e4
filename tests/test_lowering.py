"""Lowering to ONNX: checked, typed, documented, reproducible files that onnxruntime runs like the numpy reference."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import onnx_matches_reference

import almc
from almc.lower import IR_VERSION, OPSET

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
LENET = ROOT / "models" / "lenet.alm"


def test_compiled_model_is_checked_typed_documented_and_dynamic_in_batch():
    m = almc.load(LENET)
    proto = m.compile(seed=3)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == IR_VERSION and [o.version for o in proto.opset_import] == [OPSET]
    assert [n.op_type for n in proto.graph.node] == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool",
                                                     "Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [1, 32, 32]
    infos = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.value_info}
    assert infos["c1.conv"] == ["N", 6, 28, 28] and infos["s4"] == ["N", 16, 5, 5] and infos["c5.flatten"] == ["N", 400]
    conv = proto.graph.node[0]
    assert conv.name == "c1.conv" and conv.doc_string == "lenet.alm:8:10"  # the file by its name alone: bytes that do not depend on the path
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["almc.version"] == almc.__version__ and len(props["almc.source_sha256"]) == 64
    assert sorted(i.name for i in proto.graph.initializer)[:2] == ["c1.conv.bias", "c1.conv.weight"]


def test_compiling_twice_gives_identical_bytes_and_the_seed_matters():
    a = almc.load(LENET).compile(seed=1).SerializeToString()
    b = almc.load(LENET).compile(seed=1).SerializeToString()
    c = almc.load(LENET).compile(seed=2).SerializeToString()
    assert a == b and a != c


@pytest.mark.parametrize("path,params", [(LENET, {}), (ROOT / "models" / "resnet18.alm", {"size": 32, "classes": 10}),
                                         (ROOT / "models" / "rnn.alm", {})], ids=["lenet", "resnet18", "rnn"])
def test_the_exported_file_is_byte_for_byte_what_protobuf_serialises(tmp_path, path, params):
    """almc/onnxfile.py writes the weights from their arrays with hand-written framing: the file
    must equal protobuf's own serialisation of the whole model, and load back to it."""
    import onnx

    from almc.onnxfile import attach, chunks

    m = almc.load(path, **params)
    skeleton, weights = m._lowered(None, False, True)
    assert weights and len(skeleton.graph.initializer) < len(attach(skeleton, weights).graph.initializer)
    expected = attach(skeleton, weights).SerializeToString()
    assert b"".join(bytes(c) for c in chunks(skeleton, weights)) == expected
    m.export(tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == expected == m.compile().SerializeToString()
    assert onnx.load(tmp_path / "m.onnx") == m.compile()


def test_lenet_runs_in_onnxruntime_like_the_numpy_reference():
    m = almc.load(LENET)
    out = onnx_matches_reference(m, batch=3)
    assert out["logits"].shape == (3, 10)


def test_scalar_constants_become_initializers_of_their_consumers_rank():
    """x * 0.5 + 1 on [N, 4, 1, 1]: onnxruntime broadcasts a rank-0 scalar over size-1 axes one
    element at a time, so each number is a [1, 1, 1, 1] initializer; no Constant or Reshape node."""
    from almc.runtime import run

    m = almc.load("model M { input x: f32[N, 4, 1, 1]\n output y = x * 0.5 + 1 }")
    proto = m.compile()
    assert [n.op_type for n in proto.graph.node] == ["Mul", "Add"]
    assert sorted(tuple(t.dims) for t in proto.graph.initializer) == [(1, 1, 1, 1)] * 2
    x = np.random.default_rng(0).standard_normal((3, 4, 1, 1)).astype(np.float32)
    np.testing.assert_array_equal(run(proto, {"x": x}, "cpu")[0]["y"], x * np.float32(0.5) + np.float32(1))

