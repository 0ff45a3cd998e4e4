"""The corpus of broken models: each tests/corpus/*.alm ends with `# expect:` lines
giving every diagnostic `almc check` must print (line:col: severity: message), in
order, and nothing else; the exit status must be 1 and no traceback may appear."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from almc.cli import main

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(CORPUS.glob("*.alm"))
DIAG = re.compile(r"^(\S+?):(\d+):(\d+): (error|warning): (.*)$")


def expectations(path: Path) -> list[str]:
    return [line[len("# expect: "):] for line in path.read_text(errors="replace").splitlines()
            if line.startswith("# expect: ")]


def test_corpus_is_large_enough():
    assert len(FILES) >= 60


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_broken_model_is_reported_precisely(path, capsys, monkeypatch):
    monkeypatch.chdir(CORPUS)
    code = main(["check", path.name])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    got = []
    for line in err.splitlines():
        m = DIAG.match(line)
        if m:
            assert m.group(1) == path.name, line
            got.append(f"{m.group(2)}:{m.group(3)}: {m.group(4)}: {m.group(5)}")
    assert code == 1
    assert got == expectations(path)
