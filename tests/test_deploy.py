"""almc compile --precision fp16 and --quantize int8: standard ONNX (the checker, onnxruntime and
onnx's reference evaluator run it), float32 at the ends, outputs near the float32 file's, and a
trained LeNet-5 keeps its test accuracy to a point."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import almc
from almc.cli import main
from almc.runtime import session
from almc.train import TrainOptions, prepare_data

LENET = Path(__file__).resolve().parent.parent / "models" / "lenet.alm"


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    d = tmp_path_factory.mktemp("deploy")
    assert main(["train", str(LENET), "--no-progress", "--epochs", "10", "--checkpoint", str(d / "ck")]) == 0
    assert main(["compile", str(LENET), "--weights", str(d / "ck" / "last.npz"), "-o", str(d / "fp32.onnx")]) == 0
    m = almc.load(LENET)
    _, xs, ys = prepare_data(m.graph, m.graph.train, TrainOptions())
    return d, xs[2], ys[2]


def run_ort(path, x):
    sess = session(str(path), "cpu")
    return sess.run(None, {"image": x})[0]


def accuracy(path, x, y):
    return float((run_ort(path, x).argmax(axis=1) == y).mean())


@pytest.mark.parametrize("flags,kind", [(["--precision", "fp16"], "fp16"), (["--quantize", "int8"], "int8")])
def test_the_deployment_file_keeps_the_test_accuracy(lenet, capsys, flags, kind):
    d, x, y = lenet
    out = d / f"{kind}.onnx"
    capsys.readouterr()
    assert main(["compile", str(LENET), "--weights", str(d / "ck" / "last.npz"), *flags, "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    assert [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input] == [("image", onnx.TensorProto.FLOAT)]
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    fp32, small = accuracy(d / "fp32.onnx", x, y), accuracy(out, x, y)
    assert small >= fp32 - 0.01  # at most one point lost
    size = out.stat().st_size / (d / "fp32.onnx").stat().st_size
    ops = {n.op_type for n in proto.graph.node}
    if kind == "fp16":
        assert 0.45 < size < 0.55 and "Cast" in ops
        assert {i.data_type for i in proto.graph.initializer if i.dims} == {onnx.TensorProto.FLOAT16}
        np.testing.assert_allclose(run_ort(out, x[:8]), run_ort(d / "fp32.onnx", x[:8]), rtol=0, atol=2e-2)
    else:
        assert size < 0.35 and {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the report: both files' size, latency and accuracy, as measured here
    assert lines[0].startswith(f"  fp32: {(d / 'fp32.onnx').stat().st_size:,} bytes, ")
    assert lines[0].endswith(f"test accuracy {fp32:.4f}")
    assert lines[1].startswith(f"  {kind}: {out.stat().st_size:,} bytes, ") and lines[1].endswith(f"{small:.4f}")
    # standard ONNX: onnx's reference evaluator computes what onnxruntime computes
    ref = ReferenceEvaluator(proto).run(None, {"image": x[:4]})[0]
    np.testing.assert_allclose(ref, run_ort(out, x[:4]), rtol=0, atol=5e-2 if kind == "int8" else 2e-2)


@pytest.mark.parametrize("argv,message", [
    (["--train", "--precision", "fp16"], "--precision fp16 and --quantize are for the inference model, not --train"),
    (["--precision", "fp16", "--quantize", "int8"], "give --precision fp16 or --quantize int8, not both"),
    (["--calibrate", "digits"], "--calibrate goes with --quantize int8"),
])
def test_bad_combinations(tmp_path, capsys, argv, message):
    assert main(["compile", str(LENET), *argv, "-o", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.strip() == f"almc: error: {message}"
    assert not (tmp_path / "x.onnx").exists()


def test_quantizing_needs_data_to_calibrate_on(tmp_path, capsys):
    (tmp_path / "m.alm").write_text("model M {\n input x: f32[N, 4]\n output y = dense(x, 3)\n}\n")
    assert main(["compile", str(tmp_path / "m.alm"), "--quantize", "int8", "-o", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.strip() == (
        "almc: error: --quantize calibrates on the data of M's training section, and it has none: give examples "
        "of its input with --calibrate X.npy, or add a training section")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32))
    assert main(["compile", str(tmp_path / "m.alm"), "--quantize", "int8", "--calibrate", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "q.onnx")]) == 0
    q, f = session(str(tmp_path / "q.onnx"), "cpu"), almc.load(tmp_path / "m.alm")
    x = np.load(tmp_path / "x.npy")[:8]
    np.testing.assert_allclose(q.run(None, {"x": x})[0], f.run(x)["y"], rtol=0, atol=0.05)
    np.save(tmp_path / "bad.npy", np.zeros((4, 5), np.float32))
    assert main(["compile", str(tmp_path / "m.alm"), "--quantize", "int8", "--calibrate", str(tmp_path / "bad.npy"),
                 "-o", str(tmp_path / "q2.onnx")]) == 1
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'bad.npy'}: error: input 'x' must be f32[N, 4], got shape [4, 5]"
    assert main(["compile", str(tmp_path / "m.alm"), "--precision", "fp16", "-o", str(tmp_path / "h.onnx")]) == 0
    assert onnx.load(tmp_path / "h.onnx").graph.initializer[0].data_type == onnx.TensorProto.FLOAT16
