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


def catalogue() -> str:
    """docs/errors.md: every broken model of the corpus with the diagnostics it gets."""
    out = [HEADER]
    for path in FILES:
        text = path.read_text(errors="replace")
        source = "\n".join(ln for ln in text.splitlines() if not ln.startswith("# expect: ")).rstrip()
        out.append(f"### {path.stem.replace('_', ' ')}\n\n`tests/corpus/{path.name}`\n\n```\n{source}\n```\n")
        out.append("```text\n" + "\n".join(f"{path.name}:{e}" for e in expectations(path)) + "\n```\n")
    return "\n".join(out)


HEADER = """# Error catalogue

Every kind of mistake almc reports, each with a broken model and the exact
diagnostics `almc check` prints for it (`file:line:col: severity: message`;
the terminal also shows the source line, a caret under the span and a hint).
Each entry is a file of `tests/corpus/`, and `tests/test_corpus.py` checks that
almc still prints exactly these lines, so this page cannot go stale. Errors
that need several files (imports), odd bytes or the command line are tested in
`tests/test_errors.py`:

- an empty file: `m.alm:1:1: error: m.alm is empty`;
- a binary file: `this is a binary file, not .alm text (it contains a NUL byte)`;
- text that is not UTF-8: `the file is not valid UTF-8 (byte 0xe9)`, at the byte;
- brackets nested more than 200 deep: `brackets are nested more than 200 levels deep`;
- a missing import: `cannot find the imported file "blocks/nope.alm"`; a circular one:
  `circular import: a.alm → b.alm → a.alm`; a self import: `m.alm imports itself`;
  an import outside the model's folder: `import "../shared.alm" leaves the directory of m.alm`
  (allowed with `--allow-outside-imports`);
- errors inside an imported file name that file and add `imported from m.alm:1:1`.

Data, weights and ONNX files that cannot be read are reported as
`path: error: message` (exit status 1): see docs/training.md.
"""


def test_error_catalogue_is_current():
    doc = CORPUS.parent.parent / "docs" / "errors.md"
    assert doc.read_text() == catalogue(), "regenerate with: python tests/test_corpus.py"


if __name__ == "__main__":
    (CORPUS.parent.parent / "docs" / "errors.md").write_text(catalogue())
