"""Summary: the per-layer table, its JSON, receptive fields, and the frozen / trainable counts."""
from __future__ import annotations

import json

from helpers import FROZEN

import almc
from almc.cli import main

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


def test_receptive_field_of_an_up_convolution():
    """A 2x2 stride-2 up-convolution: each output reads one input pixel; the jump halves."""
    s = almc.load("model Up { input x: f32[N, 1, 8, 8]\n output y = conv_transpose(x, 1, 2, stride = 2) }").summary()
    assert s.rows[-1].receptive_field == [1, 1] and s.rows[-1].jump == [0.5, 0.5]
    s = almc.load("model Up { input x: f32[N, 1, 8, 8]\n output y = conv_transpose(x, 1, 3, stride = 1) }").summary()
    assert s.rows[-1].receptive_field == [3, 3] and s.rows[-1].jump == [1, 1]


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




def test_a_frozen_layer_counts_as_frozen_in_the_table_the_json_and_the_step(tmp_path, capsys):
    path = tmp_path / "frozen.alm"
    path.write_text(FROZEN)
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "parameters:  1,482 (442 trainable, 1,040 frozen)" in out
    assert "1,040 frozen" in next(line for line in out.splitlines() if line.startswith("a "))
    assert main(["summary", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["trainable_params"], s["frozen_params"], s["total_params"], s["buffers"]) == (442, 1040, 1482, 0)
    assert [(r["name"], r["params"], r["frozen"]) for r in s["rows"]] == [("a", 0, 1040), ("b", 272, 0),
                                                                          ("logits", 170, 0)]
    from almc.graph import trainable_params
    from almc.step import training_step

    graph = almc.load(path).graph
    _, sig = training_step(graph)
    assert sig.trainable == trainable_params(graph) == ["b.dense.weight", "b.dense.bias", "logits.weight",
                                                        "logits.bias"]


def test_a_model_shows_its_summary_and_graph_in_a_notebook(monkeypatch):
    from html.parser import HTMLParser

    from almc.summary import HEAD, table_cells

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.rows[-1].append(self.cell)
                self.cell = None

    m = almc.load(LENET)
    parser = Cells()
    parser.feed(m._repr_html_())
    assert parser.rows == [HEAD, *table_cells(m.summary())]
    assert "parameters:  61,706 (61,706 trainable, 0 frozen)" in m._repr_html_()
    monkeypatch.setenv("PATH", "")  # no Graphviz: the notebook shows the table alone
    assert m._repr_svg_() is None



@__import__("pytest").mark.skipif(__import__("shutil").which("dot") is None, reason="Graphviz is not installed")
def test_a_model_draws_its_graph_in_a_notebook():
    import xml.etree.ElementTree as ET

    root = ET.fromstring(almc.load(LENET)._repr_svg_().encode())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert "input f32[N, 1, 32, 32]" in texts
