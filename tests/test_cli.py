"""The command line end to end: compile, run, graph, the Python API beside it, exit codes and streams."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import almc
from almc.cli import main

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
LENET = ROOT / "models" / "lenet.alm"


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
    assert main(["run", str(LENET), "--input", "x.npy"]) == 1  # the data file is wrong: named, exit 1
    assert capsys.readouterr().err == "x.npy: error: input 'image' must be f32[N, 1, 32, 32], got shape [2, 3, 32, 32]\n"


def test_graph_command_writes_dot_and_explains_missing_graphviz(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["graph", str(LENET), "-o", "g.dot"]) == 0
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith('digraph "LeNet5" {')
    assert '"c1.conv" -> "c1" [label="f32[N, 6, 28, 28]"];' in dot
    # a label's two lines are split by DOT's newline escape, not by an escaped backslash shown as text
    assert '"image" [label="image\\ninput f32[N, 1, 32, 32]", shape=oval' in dot
    assert '"c1" [label="c1\\nrelu"];' in dot and "\\\\n" not in dot
    monkeypatch.setenv("PATH", str(tmp_path))  # no Graphviz here
    assert main(["graph", str(LENET), "-o", "g.svg"]) == 2
    assert "needs Graphviz's 'dot' program: install the graphviz package" in capsys.readouterr().err
    assert not (tmp_path / "g.svg").exists()


RESNET18 = LENET.parent / "resnet18.alm"


def _labelled_counts(dot: str) -> list[int]:
    import re

    return [int(n.replace(",", "")) for n in re.findall(r"\\n([\d,]+) parameters", dot)]


@pytest.mark.parametrize("depth", [None, 0, 1])
def test_graph_draws_block_calls_as_clusters_with_parameter_counts(depth):
    from almc.draw import to_dot

    m = almc.load(RESNET18)
    dot = to_dot(m.graph, depth)
    calls = {c for n in m.graph.nodes() for c in n.calls}
    assert sum(_labelled_counts(dot)) == m.summary().trainable_params == 11_689_512  # each parameter drawn once
    if depth is None:  # every call a cluster, nested as the calls are
        assert dot.count("subgraph ") == len(calls) == 36
        assert 'subgraph "cluster_layer0/x/unit0/x/" {' in dot and 'label="basic_block (layer0/x/unit0/x)"' in dot
    elif depth == 0:  # the stem and the four stages, one node each, in a chain
        assert dot.count("subgraph ") == 0 and dot.count("shape=box3d") == 5
        assert '"x/" -> "layer0/x/" [label="f32[N, 64, 56, 56]"];' in dot
        assert '"layer3/x/" [label="resnet_stage\\nlayer3/x\\n8,393,728 parameters", shape=box3d' in dot
    else:  # the stages as clusters around their blocks, each block one node
        assert dot.count("subgraph ") == 5 and dot.count("shape=box3d") == 9


def test_graph_depth_must_not_be_negative(tmp_path, capsys):
    assert main(["graph", str(LENET), "-o", str(tmp_path / "g.dot"), "--depth", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "almc: error: --depth must be 0 or more, got -1"


@pytest.mark.skipif(__import__("shutil").which("dot") is None, reason="Graphviz is not installed")
def test_graph_svg_draws_the_clusters(tmp_path):
    import xml.etree.ElementTree as ET

    assert main(["graph", str(RESNET18), "-o", str(tmp_path / "r.svg")]) == 0
    groups = ET.parse(tmp_path / "r.svg").getroot().iter("{http://www.w3.org/2000/svg}g")
    assert sum(g.get("class") == "cluster" for g in groups) == 36


@pytest.mark.skipif(__import__("shutil").which("dot") is None, reason="Graphviz is not installed")
def test_graph_command_renders_svg(tmp_path):
    assert main(["graph", str(LENET), "-o", str(tmp_path / "g.svg")]) == 0
    import xml.etree.ElementTree as ET

    texts = [t.text for t in ET.parse(tmp_path / "g.svg").getroot().iter("{http://www.w3.org/2000/svg}text")]
    assert "input f32[N, 1, 32, 32]" in texts and "relu" in texts
    assert not any("\\n" in (t or "") for t in texts)


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



@pytest.mark.parametrize("text,value", [
    ("7", 7), ("0.5", 0.5), ("true", True), ('"relu"', "relu"), ("relu", "relu"),
    ("1,2", (1, 2)), ("(1, 2)", (1, 2)), ("[1, 2]", (1, 2)), ("8,", (8,)), ("(8,)", (8,)), ("[8]", (8,)),
    ("[]", ()), ("()", ()),
])
def test_define_values(text, value):
    from almc.cli import parse_value

    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_a_one_item_list_reaches_the_model(tmp_path, capsys):
    """`-D hidden=[8]` used to arrive as the string "[8]" (the for loop then refused a string)."""
    assert main(["summary", str(LENET.parent / "mlp.alm"), "-D", "hidden=[8]", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trainable_params"] == 784 * 8 + 8 + 8 * 10 + 10


@pytest.mark.parametrize("train", [False, True])
def test_the_bytes_depend_on_the_text_not_on_how_the_path_is_spelled(tmp_path, monkeypatch, train):
    """almc compile of one file by a relative path, an absolute one, through `..`, from another
    folder and through a symbolic link writes the same bytes; the nodes name the model's file by
    its name and an imported one by its path from the model's folder."""
    (tmp_path / "net" / "blocks").mkdir(parents=True)
    (tmp_path / "net" / "blocks" / "b.alm").write_text("block twice(x) {\n    return dense(x, 4) |> relu\n}\n")
    (tmp_path / "net" / "m.alm").write_text(
        'import "blocks/b.alm"\nmodel M {\n    input x: f32[N, 3]\n    output y = twice(x)\n}\n'
        "train M {\n    input t: f32[N, 4]\n    minimize mean(squared_error(y, t))\n}\n")
    (tmp_path / "link").symlink_to(tmp_path / "net")
    spellings = [(tmp_path / "net", "m.alm"), (tmp_path / "net", "./blocks/../m.alm"), (tmp_path, "net/m.alm"),
                 (tmp_path / "net" / "blocks", str(tmp_path / "net" / "m.alm")), (tmp_path, "link/m.alm")]
    written = []
    for k, (cwd, path) in enumerate(spellings):
        monkeypatch.chdir(cwd)
        out = tmp_path / f"out{k}.onnx"
        assert main(["compile", path, "-o", str(out)] + (["--train"] if train else [])) == 0
        written.append(out.read_bytes())
    assert all(w == written[0] for w in written)
    docs = {n.doc_string.split(" in ")[0].rsplit(":", 2)[0] for n in onnx.load(tmp_path / "out0.onnx").graph.node}
    assert "blocks/b.alm" in docs <= {"m.alm", "blocks/b.alm"}
