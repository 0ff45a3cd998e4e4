"""almc fmt: the canonical layout keeps the program (same tree, same ONNX), keeps every comment,
is idempotent, and writes files as every almc output is written."""
from __future__ import annotations

import dataclasses
import random
import re
import stat
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from test_docs import examples
from test_models import RUN

import almc
from almc.cli import main
from almc.errors import AlmError, Span
from almc.fmt import format_source
from almc.parse import parse, parser

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("models/*.alm"), *ROOT.glob("almc/stdlib/*.alm")])
DOC_SOURCES = [p for p in examples() if p.values[0] == "alm"]


def shape_of(node):
    """The syntax tree without its positions."""
    if isinstance(node, tuple):
        return tuple(shape_of(x) for x in node)
    if dataclasses.is_dataclass(node) and not isinstance(node, Span):
        return (type(node).__name__, *(shape_of(getattr(node, f.name)) for f in dataclasses.fields(node)
                                       if not isinstance(getattr(node, f.name), Span)))
    return node


def comments(text: str) -> list[str]:
    """Every comment's text, in order (a `#` inside a string is not one)."""
    return [m.group(1).rstrip() for m in re.finditer(r'"[^"\n]*"|(#[^\n]*)', text) if m.group(1)]


def unpositioned(proto: onnx.ModelProto) -> bytes:
    """The ONNX file without what names the text itself: node doc strings (source positions)
    and the source's hash."""
    for node in proto.graph.node:
        node.doc_string = ""
    kept = [p for p in proto.metadata_props if p.key != "almc.source_sha256"]
    assert len(kept) == len(proto.metadata_props) - 1
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    return proto.SerializeToString()


def check_kept(text: str, file: str = "<string>") -> str:
    out = format_source(text, file)
    assert shape_of(parse(out, file)) == shape_of(parse(text, file))
    assert comments(out) == comments(text)
    assert format_source(out, file) == out, "not idempotent"
    return out


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_every_model_and_library_file_is_canonical_and_compiles_to_the_same_onnx(path, tmp_path):
    text = path.read_text()
    assert check_kept(text, str(path)) == text, f"run: almc fmt {path.relative_to(ROOT)}"
    if path.parent.name == "models":  # the same ONNX from a shuffled layout of it, formatted back
        shuffled = check_kept(relaid(text, random.Random(path.name)), str(path))
        assert shuffled.count("\n") >= text.count("\n") - 2
        (tmp_path / path.name).write_text(shuffled)
        kw = RUN[path.stem][0]  # the reduced sizes test_models runs
        a = almc.load(path, **kw).compile(check_runtime=False)
        b = almc.load(tmp_path / path.name, **kw).compile(check_runtime=False)
        assert unpositioned(a) == unpositioned(b)


@pytest.mark.parametrize("kind,source,expected", DOC_SOURCES)
def test_every_documented_example_is_canonical_and_formats_to_the_same_onnx(kind, source, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = check_kept(source)
    assert out == source, "the docs show canonical layout: format the block with almc fmt"
    if "model " in source:
        assert unpositioned(almc.load(source).compile(check_runtime=False)) == \
            unpositioned(almc.load(out).compile(check_runtime=False))


def relaid(text: str, rng: random.Random) -> str:
    """`text` with every gap between tokens replaced by random spaces and line breaks (a comment
    still ends its line): what a careless editor might leave."""
    tokens = list(parser().lex(text))
    spans = [(t.start_pos, t.end_pos) for t in tokens]
    out, pos = [], 0
    for start, end in spans:
        gap = text[pos:start]
        pieces = re.findall(r"#[^\n]*", gap)
        choice = rng.choice([" ", "  ", "\n", " \n\t ", "\n\n"]) if pos else ""
        out.append("".join(f" {c}\n" for c in pieces) + choice if pieces else choice)
        out.append(text[start:end])
        pos = end
    tail = re.findall(r"#[^\n]*", text[pos:])
    out.append("".join(f"\n{c}" for c in tail) + "\n")
    return "".join(out)


def test_the_layout_rules():
    text = ('# head\n\n\nimport "lib.alm"\nimport "lib2.alm"\n'
            'model   M( a=1 ,b = [1,2,] ){   # opens\n'
            '  input x : f32[ N , 4 ]\n  # inside\n\n\n'
            '  h = dense( x , 8 ) |>relu   # t1\n'
            '  k = h [ : , 1 : ] + - h[...,:2] ** 2 ** -1\n'
            '  y = foo(a,\n    b, c = (1 +\n    2))\n'
            '  z = bar(\n      h,   # about h\n      # about k\n      k\n  )\n'
            '  w = h\n    |> relu |> dense(3)\n'
            '  output o = z if a>1 else not w   # end\n  # before close\n}\n'
            '# between\ntrain M { input label: i64[N] minimize mean(o)\n freeze c1,\n   c3\n}\n# tail\n')
    assert format_source(text) == (
        '# head\n\nimport "lib.alm"\nimport "lib2.alm"\n\n'
        'model M(a = 1, b = [1, 2,]) {  # opens\n'
        '    input x: f32[N, 4]\n    # inside\n\n'
        '    h = dense(x, 8) |> relu  # t1\n'
        '    k = h[:, 1:] + -h[..., :2] ** 2 ** -1\n'
        '    y = foo(a,\n            b, c = (1 + 2))\n'
        '    z = bar(\n        h,  # about h\n        # about k\n        k\n    )\n'
        '    w = h\n        |> relu |> dense(3)\n'
        '    output o = z if a > 1 else not w  # end\n    # before close\n}\n\n'
        '# between\ntrain M {\n    input label: i64[N]\n    minimize mean(o)\n    freeze c1,\n        c3\n}\n\n'
        '# tail\n')


def test_trailing_comments_of_consecutive_lines_line_up_two_spaces_after_the_longest():
    text = "model M {\n input x: f32[N, 4]  # a\n y = x # b\n\n output z = relu(y)       # c\n}\n"
    assert format_source(text) == ("model M {\n    input x: f32[N, 4]  # a\n    y = x               # b\n\n"
                                   "    output z = relu(y)  # c\n}\n")


def test_crlf_files_stay_crlf_and_a_bom_is_dropped():
    text = "\ufeffmodel M {\r\n  input x: f32[N, 4]   # a\r\n  output y = x\r\n}\r\n"
    assert format_source(text) == "model M {\r\n    input x: f32[N, 4]  # a\r\n    output y = x\r\n}\r\n"


def test_a_syntax_error_is_reported_as_everywhere_and_nothing_is_written(tmp_path, capsys):
    bad = tmp_path / "bad.alm"
    bad.write_text("model M {\n    input x: f32[N, 4]\n    y = dense(x, \n}\n")
    assert main(["fmt", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:4:1: error: unexpected '}}': the '(' at 3:14 is not closed" in err
    assert "0 files reformatted, 0 already formatted, 1 with errors" in err
    assert bad.read_text() == "model M {\n    input x: f32[N, 4]\n    y = dense(x, \n}\n"


def test_fmt_rewrites_in_place_keeping_permissions_and_links(tmp_path, capsys):
    a, b = tmp_path / "a.alm", tmp_path / "sub" / "b.alm"
    b.parent.mkdir()
    a.write_text("model A {\ninput x: f32[N, 2]\noutput y = relu( x )\n}\n")
    b.write_text("model B {\n    input x: f32[N, 2]\n    output y = x\n}\n")
    a.chmod(0o640)
    link = tmp_path / "link.alm"
    link.symlink_to(a)
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"{a}: would be reformatted", f"{link}: would be reformatted"]
    assert "2 files would be reformatted, 1 already formatted" in out.err
    assert main(["fmt", str(link)]) == 0
    assert link.is_symlink() and stat.S_IMODE(a.stat().st_mode) == 0o640
    assert a.read_text() == "model A {\n    input x: f32[N, 2]\n    output y = relu(x)\n}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.alm", "link.alm", "sub"]  # no temporary left
    assert main(["fmt", "--check", str(tmp_path)]) == 0


def test_fmt_diff_writes_nothing(tmp_path, capsys):
    a = tmp_path / "a.alm"
    a.write_text("model A {\ninput x: f32[N, 2]\noutput y = x\n}\n")
    assert main(["fmt", "--diff", str(a)]) == 0
    out = capsys.readouterr().out
    assert "-input x: f32[N, 2]\n-output y = x\n+    input x: f32[N, 2]\n+    output y = x\n" in out
    assert a.read_text() == "model A {\ninput x: f32[N, 2]\noutput y = x\n}\n"


def test_fmt_refuses_what_it_cannot_format(tmp_path, capsys):
    assert main(["fmt", str(tmp_path / "missing.alm")]) == 2
    assert "no such file" in capsys.readouterr().err
    ro, ok = tmp_path / "ro.alm", tmp_path / "ok.alm"
    for f in (ro, ok):
        f.write_text("model A {\ninput x: f32[N, 2]\noutput y = x\n}\n")
    ro.chmod(0o444)
    assert main(["fmt", "-", str(ro)]) == 2
    assert main(["fmt", str(ro), str(ok)]) == 1
    out = capsys.readouterr()
    assert f"{ro}: error: is read-only; it was left as it is" in out.err
    assert "1 file reformatted, 0 already formatted, 1 with errors" in out.err
    assert ro.read_text() == "model A {\ninput x: f32[N, 2]\noutput y = x\n}\n"
    assert ok.read_text() == "model A {\n    input x: f32[N, 2]\n    output y = x\n}\n"


def test_fmt_reads_stdin_and_writes_stdout():
    run = subprocess.run([sys.executable, "-m", "almc", "fmt", "-"], input=b"model A {\ninput x: f32[N, 2]\n"
                         b"output y = x  }", capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"model A {\n    input x: f32[N, 2]\n    output y = x\n}\n"
    run = subprocess.run([sys.executable, "-m", "almc", "fmt", "-"], input=b"model \xff", capture_output=True,
                         timeout=60)
    assert run.returncode == 1 and b"<stdin>:1:7: error: the file is not valid UTF-8 (byte 0xff)" in run.stderr


def test_a_deep_expression_formats_without_recursion():
    text = "model M {\n    input x: f32[N, 2]\n    output y = " + "-" * 5000 + "x\n}\n"
    assert format_source(text) == text


def test_format_source_raises_the_parsers_errors():
    with pytest.raises(AlmError, match="^<string>:1:9: error: '{' is never closed$"):
        format_source("model M {")
