"""bench/run.py's report: the committed results render to the committed tables, a run cut short
renders what it finished, and the step check's verdict follows its rule."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import run  # noqa: E402


@pytest.mark.parametrize("suffix", ["", "-cuda"])
def test_the_committed_results_render_to_the_committed_tables(suffix):
    res = json.loads((BENCH / f"results{suffix}.json").read_text())
    assert run.render(res) == (BENCH / f"RESULTS{suffix.upper()}.md").read_text()


def test_a_run_cut_short_renders_the_sections_it_finished():
    res = json.loads((BENCH / "results-cuda.json").read_text())
    cut = copy.deepcopy(res)
    del cut["train"], cut["env"]["load_end"]
    cut["partial"] = True
    cut["headline"] = run.headline(cut)
    text = run.render(cut)
    assert "**Partial results: the run stopped before it finished" in text
    assert "## 2. Inference" in text and "## 3. Training step" not in text
    assert "training step resnet18" not in text and "inference resnet18 batch 32" in text


def test_the_cuda_report_names_the_onnxruntime_that_ran():
    text = (BENCH / "RESULTS-CUDA.md").read_text()
    assert "onnxruntime 1.31.1 (onnxruntime-gpu wheel, CUDA 13.0)" in text
    assert "| GPU | NVIDIA H200" in text
