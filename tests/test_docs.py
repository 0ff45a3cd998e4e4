"""Every example in the documentation is compiled; error examples must give the
error shown under them; the op reference must match the registry."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import onnx_matches_reference

import almc
from almc.errors import AlmError
from almc.ops.registry import ops_markdown

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "models" / "README.md"]
FENCE = re.compile(r"```(alm|alm-error)\n(.*?)```(?:\s*```text\n(.*?)```)?", re.S)


def examples():
    for doc in DOCS:
        if doc.exists():
            for i, m in enumerate(FENCE.finditer(doc.read_text())):
                yield pytest.param(m.group(1), m.group(2), m.group(3), id=f"{doc.name}-{i}")


@pytest.mark.parametrize("kind,source,expected", list(examples()))
def test_documented_example(kind, source, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if kind == "alm":
        if "model " not in source:  # a library of blocks: it must parse and its blocks build
            (tmp_path / "lib.alm").write_text(source)
            return
        m = almc.load(source)
        assert not m.warnings, [w.message for w in m.warnings]
        onnx_matches_reference(m, batch=2, rtol=1e-4)
    else:
        with pytest.raises(AlmError) as e:
            almc.load(source)
        assert expected is not None, "an alm-error example needs the ```text output after it"
        assert e.value.render() + "\n" == expected


def test_op_reference_is_current():
    text = (ROOT / "docs" / "language.md").read_text()
    section = text.split("<!-- ops:begin -->\n")[1].split("<!-- ops:end -->")[0]
    assert section == ops_markdown(), "regenerate with: python -m almc.ops.registry docs/language.md"


def test_the_training_steps_inputs_come_in_the_documented_order():
    """docs/training.md's input table, row by row, against a step with dropout and Adam."""
    import re

    text = (ROOT / "docs" / "training.md").read_text()
    table = text.split("| inputs, in this order | |")[1].split("\n\n")[0]
    rows = [line.split("|")[1].strip() for line in table.strip().splitlines()[1:]]
    assert rows == ["the model's inputs", "`dropout_mask.NODE`", "the section's inputs", "`epoch`", "`step`",
                    "optimiser state", "every parameter and buffer"]
    m = almc.load("model M {\n input x: f32[N, 4]\n h = dropout(relu(dense(x, 8)), 0.5)\n output y = dense(h, 3)\n}\n"
                  "train M {\n input label: i64[N]\n minimize mean(cross_entropy(y, label))\n optimizer adam()\n}\n")
    names = [i.name for i in m.compile_training_step(gradients=False).graph.input]

    def row(name):
        for k, pattern in enumerate([r"x", r"dropout_mask\..+", r"label", r"epoch", r"step", r"adam_[mv]\..+", r".+"]):
            if re.fullmatch(pattern, name):
                return k
    kinds = [row(n) for n in names]
    assert kinds == sorted(kinds) and set(kinds) == set(range(7))
