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
