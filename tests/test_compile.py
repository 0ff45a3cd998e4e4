"""Lowering to ONNX and the compile / run / summary / graph commands, end to end."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import onnx_matches_reference

import almc
from almc.cli import main
from almc.lower import IR_VERSION, OPSET

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
LENET = ROOT / "models" / "lenet.alm"


def test_lenet_summary_matches_the_course_slide():
    s = almc.load(LENET).summary()
    assert [r.name for r in s.rows] == ["c1", "s2", "c3", "s4", "c5", "f6", "logits"]
    assert [r.params for r in s.rows if r.params] == [156, 2416, 48120, 10164, 850]
    assert [r.activations for r in s.rows] == [4704, 1176, 1600, 400, 120, 84, 10]
    assert s.total_params == s.trainable_params == 61706
    assert [r.macs for r in s.rows] == [117600, 0, 240000, 0, 48000, 10080, 840]
    assert [r.receptive_field for r in s.rows[:4]] == [[5, 5], [6, 6], [14, 14], [16, 16]]
    assert [r.jump for r in s.rows[:4]] == [[1, 1], [2, 2], [2, 2], [4, 4]]
    assert s.rows[-1].receptive_field is None  # dense sees the whole input


def test_summary_command_table_and_json(capsys):
    assert main(["summary", str(LENET)]) == 0
    out = capsys.readouterr().out
    assert "c1      conv→relu           f32[N, 6, 28, 28]      156        4,704    117,600    5     1" in out
    assert "parameters:  61,706 (61,706 trainable, 0 frozen)" in out
    assert main(["summary", str(LENET), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == 61706 and data["rows"][0]["params"] == 156
    assert data["activations"] == 8094


def test_receptive_field_takes_the_largest_path_through_branches():
    m = almc.load("""
model M {
    input x: f32[N, 1, 32, 32]
    a = conv(x, 2, 3)                 # rf 3
    b = conv(a, 2, 3, stride = 2)     # rf 5, jump 2
    c = conv(b, 2, 3, pad = 1)        # rf 9
    d = maxpool(a, 2) |> center_crop(c.shape[2])   # rf 4 along its path
    output y = concat(c, d)
}""")
    rows = {r.name: r for r in m.summary().rows}
    assert rows["c"].receptive_field == [9, 9] and rows["c"].jump == [2, 2]
    assert rows["d"].receptive_field == [4, 4]
    assert rows["y"].receptive_field == [9, 9] and rows["y"].jump == [2, 2]


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
    assert conv.name == "c1.conv" and conv.doc_string == f"{LENET}:8:10"
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


def test_lenet_runs_in_onnxruntime_like_the_numpy_reference():
    m = almc.load(LENET)
    out = onnx_matches_reference(m, batch=3)
    assert out["logits"].shape == (3, 10)


def test_compile_command_writes_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compile", str(LENET)]) == 0
    assert (tmp_path / "lenet.onnx").exists()
    assert capsys.readouterr().out.startswith("wrote lenet.onnx: 12 ONNX nodes, 61,706 parameters, opset 21")
    assert main(["compile", str(LENET), "-o", "sub dir é/out.onnx"]) == 2
    (tmp_path / "sub dir é").mkdir()
    assert main(["compile", str(LENET), "-o", "sub dir é/out.onnx", "-D", "classes=7"]) == 0
    proto = onnx.load(tmp_path / "sub dir é" / "out.onnx")
    assert proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.onnx", "sub dir é"]  # no temporary files left


def test_a_failing_compile_leaves_an_existing_output_alone(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"precious")
    bad = tmp_path / "bad.alm"
    bad.write_text("model M {\n input x: f32[N, 2]\n output y = dense(x)\n}\n")
    assert main(["compile", str(bad), "-o", str(out)]) == 1
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.alm", "m.onnx"]


def test_run_command_on_alm_and_onnx(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    np.save("x.npy", x)
    assert main(["compile", str(LENET), "-o", "lenet.onnx"]) == 0
    assert main(["run", "lenet.onnx", "--input", "x.npy", "--output", "y.npy", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "ran on CPUExecutionProvider" in out and "logits: float32[2, 10]" in out
    y_onnx = np.load("y.npy")
    assert main(["run", str(LENET), "--input", "image=x.npy", "-o", "y2.npy"]) == 0
    np.testing.assert_array_equal(np.load("y2.npy"), y_onnx)  # same seed, same weights


@pytest.mark.parametrize("content,message", [
    (b"not numpy", "x.npy: error: not a readable .npy file"),
])
def test_run_rejects_damaged_inputs(tmp_path, capsys, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.npy").write_bytes(content)
    assert main(["run", str(LENET), "--input", "x.npy"]) == 1
    assert capsys.readouterr().err.startswith(message)


def test_run_rejects_a_damaged_onnx_file_and_wrong_shapes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", np.zeros((2, 3, 32, 32), np.float32))
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    assert main(["run", "bad.onnx", "--input", "x.npy"]) == 1
    assert capsys.readouterr().err.startswith("bad.onnx: error: not a valid ONNX model")
    assert main(["run", str(LENET), "--input", "x.npy"]) == 2
    assert capsys.readouterr().err == "almc: error: input 'image' must be f32[N, 1, 32, 32], got shape [2, 3, 32, 32]\n"


def test_graph_command_writes_dot_and_explains_missing_graphviz(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["graph", str(LENET), "-o", "g.dot"]) == 0
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith('digraph "LeNet5" {')
    assert '"c1.conv" -> "c1" [label="f32[N, 6, 28, 28]"];' in dot
    monkeypatch.setenv("PATH", str(tmp_path))  # no Graphviz here
    assert main(["graph", str(LENET), "-o", "g.svg"]) == 2
    assert "needs Graphviz's 'dot' program: install the graphviz package" in capsys.readouterr().err
    assert not (tmp_path / "g.svg").exists()


@pytest.mark.skipif(__import__("shutil").which("dot") is None, reason="Graphviz is not installed")
def test_graph_command_renders_svg(tmp_path):
    assert main(["graph", str(LENET), "-o", str(tmp_path / "g.svg")]) == 0
    assert b"<svg" in (tmp_path / "g.svg").read_bytes()


def test_python_api_mirrors_the_cli(tmp_path):
    m = almc.load(str(LENET))
    assert m.name == "LeNet5" and str(m.inputs["image"]) == "f32[N, 1, 32, 32]"
    m.export(tmp_path / "l.onnx")
    assert onnx.load(tmp_path / "l.onnx").SerializeToString() == m.compile().SerializeToString()
    y = m.run(np.zeros((1, 1, 32, 32), np.float32))["logits"]
    assert y.shape == (1, 10) and m.provider == "CPUExecutionProvider"


def test_a_closed_pipe_is_not_an_error(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(f"{sys.executable} -m almc.cli summary {LENET} | head -c 10", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout == "model LeNe" and "error" not in r.stderr


def test_the_console_script_flushes_everything_and_keeps_the_exit_code(tmp_path, capsys):
    """`almc` (cli.entry) ends the process with os._exit after main(): the whole output must be
    out by then (ResNet-50's summary: 20 KB, past the pipe's buffering) and the code kept."""
    import subprocess
    import sys

    resnet50 = ROOT / "models" / "resnet50.alm"
    assert main(["summary", str(resnet50)]) == 0
    expected = capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "almc.cli", "summary", str(resnet50)], capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, expected, "") and len(expected) > 8192
    r = subprocess.run([sys.executable, "-m", "almc.cli", "compile", str(tmp_path / "none.alm")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("almc: error: no such file") and r.stdout == ""


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

    from almc.fold import fold_batchnorm

    m = almc.load(ROOT / "models" / "resnet18.alm", size=32, classes=10)
    _, expected = fold_batchnorm(m.graph, m.initial_weights(3))
    got = {t.name: onnx.numpy_helper.to_array(t) for t in m.compile(seed=3).graph.initializer}
    assert m.weights is None and set(expected) <= set(got)
    for k, v in expected.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_receptive_field_of_an_up_convolution():
    """A 2x2 stride-2 up-convolution: each output reads one input pixel; the jump halves."""
    s = almc.load("model Up { input x: f32[N, 1, 8, 8]\n output y = conv_transpose(x, 1, 2, stride = 2) }").summary()
    assert s.rows[-1].receptive_field == [1, 1] and s.rows[-1].jump == [0.5, 0.5]
    s = almc.load("model Up { input x: f32[N, 1, 8, 8]\n output y = conv_transpose(x, 1, 3, stride = 1) }").summary()
    assert s.rows[-1].receptive_field == [3, 3] and s.rows[-1].jump == [1, 1]


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


def test_checking_and_summarising_do_not_import_onnx():
    """onnx (0.06 s of import) is loaded when a model is lowered, not when it is only checked or
    summarised: `almc summary models/resnet50.alm` 0.31 -> 0.26 s as a process."""
    import subprocess
    import sys

    code = ("import sys, almc; m = almc.load('models/lstm.alm'); m.summary(); "
            "assert 'onnx' not in sys.modules, 'onnx imported'; m.compile(check_runtime=False); "
            "assert 'onnx' in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
