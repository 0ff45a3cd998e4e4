"""The benchmark's tools: the committed results render to the committed tables (bench/report.py),
a run cut short renders what it finished, bench/cuda_check.py gives its verdicts, bench/floor.py
draws and writes every weight, bench/step_memory.py counts a step's live values."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import report  # noqa: E402


@pytest.mark.parametrize("suffix", ["", "-cuda"])
def test_the_committed_results_render_to_the_committed_tables(suffix):
    res = json.loads((BENCH / f"results{suffix}.json").read_text())
    extra = report.sections(BENCH) if not suffix else (None, None)  # bench/zoo.py's, compile_train.py's sections
    assert report.document(res, *extra) == (BENCH / f"RESULTS{suffix.upper()}.md").read_text()


def test_a_run_cut_short_renders_the_sections_it_finished():
    res = json.loads((BENCH / "results-cuda.json").read_text())
    cut = copy.deepcopy(res)
    del cut["train"], cut["env"]["load_end"]
    cut["partial"] = True
    cut["headline"] = report.headline(cut)
    text = report.render(cut)
    assert "**Partial results: the run stopped before it finished" in text
    assert "## 2. Inference" in text and "## 3. Training step" not in text
    assert "training step resnet18" not in text and "inference resnet18 batch 32" in text


def test_the_cuda_report_names_the_onnxruntime_that_ran():
    text = (BENCH / "RESULTS-CUDA.md").read_text()
    assert "onnxruntime 1.31.1 (onnxruntime-gpu wheel, CUDA 13.0)" in text
    assert "| GPU | NVIDIA H200" in text


def test_the_cuda_check_runs_its_checks_and_gives_a_verdict(tmp_path, monkeypatch, capsys):
    """bench/cuda_check.py, with 'cuda' served by the CPU provider: every check runs, agrees, and
    the verdicts are written (so a GPU machine's minutes are not spent finding a bug in it)."""
    import cuda_check

    from almc import runtime

    real_run, real_session = runtime.run, runtime.session

    def run_as_cuda(model, inputs, device="auto"):
        outs, provider = real_run(model, inputs, "cpu")
        return outs, "CUDAExecutionProvider" if device == "cuda" else provider
    monkeypatch.setattr(runtime, "providers_for", lambda device="auto": ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(runtime, "run", run_as_cuda)
    monkeypatch.setattr(runtime, "session", lambda model, device="auto", **k: real_session(model, "cpu", **k))
    monkeypatch.setattr(sys, "argv", ["cuda_check.py", "--out", str(tmp_path)])
    assert cuda_check.main() == 0
    res = json.loads((tmp_path / "cuda-check.json").read_text())
    assert {k for k, v in res.items() if isinstance(v, dict) and v.get("ok")} == {
        "infer_lenet", "infer_resnet18", "infer_resnet50", "step_lenet"}
    assert res["train_same_accuracy"] is True and res["train_cuda"]["test_accuracy"] > 0.9
    assert capsys.readouterr().out.endswith("cuda_check: all ok\n")


def test_the_cuda_check_without_cuda_says_so_and_passes(monkeypatch, capsys):
    import cuda_check

    from almc import runtime

    monkeypatch.setattr(runtime, "providers_for", lambda device="auto": ["CPUExecutionProvider"])
    monkeypatch.setattr(sys, "argv", ["cuda_check.py"])
    assert cuda_check.main() == 0
    assert "no CUDA provider here" in capsys.readouterr().out


def test_the_compile_floor_draws_and_writes_every_weight(tmp_path):
    """bench/floor.py, the context row under `almc compile`: every weight drawn He-normal in its
    shape (vectors as constants, as almc does), all of them written, nothing else."""
    import subprocess

    import numpy as np

    shapes = {"conv.weight": [64, 32, 3, 3], "conv.bias": [64], "dense.weight": [10, 256]}
    (tmp_path / "shapes.json").write_text(json.dumps(shapes))
    out = tmp_path / "floor.bin"
    subprocess.run([sys.executable, str(BENCH / "floor.py"), str(tmp_path / "shapes.json"), "-o", str(out)], check=True)
    data = np.fromfile(out, np.float32)
    assert data.size == 64 * 32 * 9 + 64 + 10 * 256
    conv, bias, dense = np.split(data, [64 * 32 * 9, 64 * 32 * 9 + 64])
    assert not bias.any()
    assert abs(conv.std() / np.sqrt(2 / (32 * 9)) - 1) < 0.03 and abs(conv.mean()) < 0.01
    assert abs(dense.std() / np.sqrt(2 / 256) - 1) < 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["floor.bin", "shapes.json"]  # no temporary left


def test_the_step_memory_replay_counts_views_once_and_frees_after_the_last_read():
    """bench/step_memory.py's liveness replay on a four-node graph: a Reshape shares its input's
    buffer (which then lives until the view's last reader), the caller's output is not counted."""
    import step_memory
    from onnx import helper

    nodes = {n.name: n for n in [
        helper.make_node("Mul", ["x", "x"], ["a"], name="A"),
        helper.make_node("Reshape", ["a", "shape"], ["b"], name="B"),
        helper.make_node("Relu", ["b"], ["c"], name="C"),
        helper.make_node("Add", ["c", "w"], ["out"], name="D")]}
    peak = step_memory.replay(["A", "B", "C", "D"], nodes, {"A": 100, "B": 100, "C": 60, "D": 60}, {"x", "w", "out"})
    assert (peak["bytes"], peak["node"], peak["live"]) == (160, "C", {"a": 100, "c": 60})
    assert step_memory.layer_of("grad/layer3/x/unit1/x/conv2.conv") == "grad/layer3"
    assert step_memory.layer_of("layer2/x/unit0/x/conv1") == "layer2"
