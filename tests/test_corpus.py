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
`tests/test_errors.py` and `tests/test_hostile.py`:

- an empty file: `m.alm:1:1: error: m.alm is empty`;
- a binary file: `this is a binary file, not .alm text (it contains a NUL byte)`;
- text that is not UTF-8: `the file is not valid UTF-8 (byte 0xe9)`, at the byte;
- brackets nested more than 200 deep: `brackets are nested more than 200 levels deep`;
- a missing import: `cannot find the imported file "blocks/nope.alm"`; a circular one:
  `circular import: a.alm → b.alm → a.alm`; a self import: `m.alm imports itself`;
  an import outside the model's folder: `import "../shared.alm" leaves the directory of m.alm`
  (allowed with `--allow-outside-imports`);
- errors inside an imported file name that file and add `imported from m.alm:1:1`;
- a `std/` import that climbs out of the standard library:
  `import "std/../../b.alm" leaves the standard library`;
- a model file that is not a regular file, or too large to be one:
  `fifo.alm: error: fifo.alm is not a regular file (a FIFO, device or socket), not a .alm file`,
  `dir.alm: error: dir.alm is a directory, not a .alm file`,
  `big.alm: error: big.alm is 1,099,511,627,776 bytes: more than a model file's 16,777,216`;
- a model whose evaluation runs away (nested loops, a list doubled 40 times, a block that
  calls itself twice per level): `building the model takes more than 1,000,000 evaluation
  steps (loop iterations, block calls, statements and list elements)`, at the statement or
  expression where the budget ran out, with the hint
  `check the loops and the recursion; a larger model may raise the budget with --max-eval-steps`.

Data, weights and ONNX files that cannot be read are reported as
`path: error: message` (exit status 1): see docs/training.md.

Outputs are checked before any work starts, and refused with exit status 2
(`tests/test_hostile.py`):

- an output that is one of the command's inputs, whatever its spelling (`./m.alm`,
  a hard link, a symbolic link): `the output m.alm is an input of this command: writing it
  would destroy it; give another name with -o` (`--out`, `--metrics` for `almc train`;
  a link adds the input's name: `... is an input of this command (m.alm): ...`);
- an output that is not a regular file: `pipe is not a regular file (a device, FIFO or
  socket): almc writes only regular files; give another name with -o`;
- `the folder missing does not exist`, `m.alm is not a folder`, `d is a directory; give a
  file name with -o`, `cannot write in the folder out (permission denied)`, a file name too
  long for the file system (`the file name of ... is too long (254 bytes; the file system
  takes 255 and almc's temporary name adds 14)`);
- `almc train` checks `--out`, `--metrics` and `--checkpoint DIR` (`--checkpoint afile is a
  file, not a folder`) before it compiles anything;
- `almc train`'s `--batch`, `--epochs`, `--seed` and `--lr` keep the bounds and messages of
  the training section: `--epochs: epochs must be an integer from 1 to 1,000,000, got the
  integer 0`, `--lr: sgd's lr must not be negative, got -1.0`.

Data, weights and checkpoints are checked before they are read or allocated: a FIFO or
a directory given as a file (`thing.npz: error: is not a regular file (a FIFO, device or
socket)`), an `.npy` whose header claims more than the file holds (`its header claims
float32[1000000000000, 4] (16,000,000,000,000 bytes), but the file holds 64`), an `.npz`
that would inflate past 4 GiB or whose member's header lies (`array 'x_train' claims ...
but its member holds 193`), weights that are not finite floats (`array 'y.weight' holds
NaN or infinite values`, `array 'y.weight' is int64, but y.weight is a float parameter`).
`almc run` checks every input against the model, `.onnx` or `.alm` (`x.npy: error: input
'x' must be f32[N, 4], got shape [2, 7]`). Before training, the data must fit the model
(`the data (...) have labels 0 to 9, but output 'y' (f32[N, 3]) has 3 classes: ...`,
`classes 3, 42: the data (...) have no example labelled 42`), and every input of the
training section must reach the objective (`the objective does not use the input 'label'`).
Numbers a model cannot hold are located errors (`an integer of 5,000 digits is more than
the 4000 almc reads`, `the number 1e400 is too large: it is infinite as a float`, `the
number ... does not fit in a float32 tensor`), and so are imports of a directory or a
symbolic-link loop and expressions nested more than 100,000 levels deep. `almc check
--grad` refuses a model of more than 20,000,000 parameters (it runs in float64 numpy).
At most 50 diagnostics are printed, then `... and N more diagnostics not shown`.
Weights larger than the memory the machine has available are refused before they are
drawn (exit status 1; under Linux's overcommit the allocation would succeed and the OOM
killer end the process without a word): `out of memory: the model or the data need more
memory than this machine has (the parameters take 28,000,280,000 bytes as float32, and this
machine has 24,438,910,976 available); make them smaller (or lower --max-params, which
bounds every layer)`; any other exhausted allocation gives the same message without the
figures.

A compile killed mid-write leaves its temporary file (`.m.onnx.1a2b3c4d.tmp`) beside the
output; the next write of the same output removes it once no writer holds it.
"""


def test_error_catalogue_is_current():
    doc = CORPUS.parent.parent / "docs" / "errors.md"
    assert doc.read_text() == catalogue(), "regenerate with: python tests/test_corpus.py"


if __name__ == "__main__":
    (CORPUS.parent.parent / "docs" / "errors.md").write_text(catalogue())
