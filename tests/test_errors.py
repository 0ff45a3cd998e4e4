"""Errors that need files, imports or the command line; the corpus covers the rest."""
from __future__ import annotations

import pytest

import almc
from almc.cli import main
from almc.errors import AlmError

MODEL = "model M {\n input x: f32[N, 2]\n output y = relu(x)\n}\n"


def check(capsys, *args):
    code = main(["check", *map(str, args)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.err


def test_rendering_shows_the_line_a_caret_and_the_hint(write, capsys, monkeypatch):
    monkeypatch.chdir(write("m.alm", "").parent)
    write("m.alm", "model M {\n    input x: f32[N, 16, 5, 5]\n    f6 = conv(x, 8, 7)\n    output y = f6\n}\n")
    code, err = check(capsys, "m.alm")
    assert code == 1
    assert err == ("m.alm:3:10: error: conv: the kernel (7) is larger than the padded input (5)\n"
                   "        f6 = conv(x, 8, 7)\n"
                   "             ^^^^^^^^^^^^^\n"
                   "  hint: pad = 3 keeps the size 5\n")


def test_all_independent_errors_are_reported_in_order(write, capsys, monkeypatch):
    monkeypatch.chdir(write("m.alm", "").parent)
    write("m.alm", "model M {\n input x: f32[N, 2]\n a = relu(q)\n b = dense(x, 2.5)\n c = relu(a)\n output y = c\n}\n")
    code, err = check(capsys, "m.alm")
    assert code == 1
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert lines == ["m.alm:3:11: error: undefined name 'q'",
                     "m.alm:4:15: error: dense's argument 'units' expects an integer, got the number 2.5"]
    assert err.rstrip().endswith("2 errors")  # c = relu(a) follows from the first error: not reported


@pytest.mark.parametrize("content,message", [
    (b"", "m.alm:1:1: error: m.alm is empty"),
    (b"model M {\x00\x01}", "m.alm:1:10: error: this is a binary file, not .alm text (it contains a NUL byte)"),
    (b"model M {\n input x: f32[N, 2] # caf\xe9\n}", "m.alm:2:26: error: the file is not valid UTF-8 (byte 0xe9)"),
    (b"model M {\n output y = " + b"(" * 10_000 + b"x" + b")" * 10_000 + b"\n}",
     "m.alm:2:212: error: brackets are nested more than 200 levels deep"),
], ids=["empty", "binary", "latin1", "nested"])
def test_unreadable_sources(write, capsys, monkeypatch, content, message):
    p = write("m.alm", "")
    p.write_bytes(content)
    monkeypatch.chdir(p.parent)
    code, err = check(capsys, "m.alm")
    assert code == 1
    assert err.splitlines()[0] == message


def test_a_very_long_line_is_shown_shortened(write, capsys, monkeypatch):
    line = " output y = relu(x) " + "+ x " * 5000 + "+ q"
    p = write("m.alm", "model M {\n input x: f32[N, 2]\n" + line + "\n}\n")
    monkeypatch.chdir(p.parent)
    code, err = check(capsys, "m.alm")
    assert code == 1
    first, shown = err.splitlines()[:2]
    assert first == f"m.alm:3:{line.index('q') + 1}: error: undefined name 'q'"
    assert shown.endswith(" ...") and len(shown) < 220


def test_long_expression_chains_do_not_exhaust_the_stack():
    m = almc.load("model M {\n input x: f32[N, 2]\n output y = x" + " + x" * 3000 + "\n}")
    assert len(m.graph.nx) == 3001


def test_a_nonexistent_file_is_a_usage_error(capsys):
    assert main(["check", "/no/such/model.alm"]) == 2
    assert capsys.readouterr().err == "almc: error: no such file: /no/such/model.alm\n"


@pytest.mark.parametrize("argv", [[], ["check"], ["frobnicate", "x.alm"], ["compile", "--seed", "x", "m.alm"]])
def test_usage_errors_exit_2_without_traceback(argv, capsys):
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_internal_errors_ask_for_a_report_and_debug_shows_the_traceback(monkeypatch, capsys, write):
    p = write("m.alm", MODEL)
    monkeypatch.setattr("almc.api.summarize", lambda g: 1 / 0)
    assert main(["check", str(p)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("almc: internal error: ZeroDivisionError: division by zero\nThis is a bug in almc.")
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "check", str(p)])


# -- imports -----------------------------------------------------------------

def test_missing_import(write, capsys, monkeypatch):
    p = write("m.alm", 'import "blocks/nope.alm"\n' + MODEL)
    monkeypatch.chdir(p.parent)
    code, err = check(capsys, "m.alm")
    assert code == 1
    assert err.splitlines()[0] == 'm.alm:1:1: error: cannot find the imported file "blocks/nope.alm"'


def test_missing_standard_library_file_lists_what_exists(write, capsys, monkeypatch):
    p = write("m.alm", 'import "std/nope.alm"\n' + MODEL)
    monkeypatch.chdir(p.parent)
    code, err = check(capsys, "m.alm")
    assert err.splitlines()[0] == 'm.alm:1:1: error: cannot find the imported file "std/nope.alm"'
    assert "the standard library has:" in err


def test_self_import(write, capsys, monkeypatch):
    p = write("m.alm", 'import "m.alm"\n' + MODEL)
    monkeypatch.chdir(p.parent)
    code, err = check(capsys, "m.alm")
    assert err.splitlines()[0] == "m.alm:1:1: error: m.alm imports itself"


def test_circular_import_names_the_chain(write, capsys, monkeypatch):
    write("a.alm", 'import "b.alm"\nblock fa(x) { return x }\n')
    write("b.alm", 'import "a.alm"\nblock fb(x) { return x }\n')
    p = write("m.alm", 'import "a.alm"\n' + MODEL)
    monkeypatch.chdir(p.parent)
    code, err = check(capsys, "m.alm")
    assert code == 1
    assert err.splitlines()[0] == "b.alm:1:1: error: circular import: a.alm → b.alm → a.alm"
    assert "  imported from b.alm:1:1" not in err and "  imported from a.alm:1:1" in err


def test_error_inside_an_imported_file_names_it_and_the_chain(write, capsys, monkeypatch):
    write("lib/blocks.alm", "block f(x) {\n  return relu(x\n}\n")
    p = write("m.alm", 'import "lib/blocks.alm"\n' + MODEL)
    monkeypatch.chdir(p.parent)
    code, err = check(capsys, "m.alm")
    assert code == 1
    assert err.splitlines()[0] == "lib/blocks.alm:3:1: error: unexpected '}': the '(' at 2:14 is not closed"
    assert "  imported from m.alm:1:1" in err


def test_imports_may_not_leave_the_model_folder_unless_allowed(write, capsys, monkeypatch):
    write("shared.alm", "block f(x) { return relu(x) }\n")
    p = write("proj/m.alm", 'import "../shared.alm"\nmodel M {\n input x: f32[N, 2]\n output y = f(x)\n}\n')
    monkeypatch.chdir(p.parent)
    code, err = check(capsys, "m.alm")
    assert code == 1
    assert err.splitlines()[0] == 'm.alm:1:1: error: import "../shared.alm" leaves the directory of m.alm'
    code, err = check(capsys, "m.alm", "--allow-outside-imports")
    assert code == 0


def test_several_models_need_model_flag(write, capsys):
    p = write("m.alm", MODEL + MODEL.replace("model M", "model K"))
    assert main(["check", str(p), "--model", "K"]) == 0
    assert "model K is well-formed" in capsys.readouterr().out
    assert main(["check", str(p), "--model", "Q"]) == 1
    assert "has no model 'Q' (it has M, K)" in capsys.readouterr().err


def test_api_raises_alm_error_with_every_diagnostic():
    with pytest.raises(AlmError) as e:
        almc.load("model M {\n input x: f32[N, 2]\n a = relu(q)\n b = relu(r)\n output y = x\n}")
    assert [(d.span.line, d.message) for d in e.value.diagnostics if d.severity == "error"] == [
        (3, "undefined name 'q'"), (4, "undefined name 'r'")]


def test_a_written_file_has_the_usual_permissions_and_no_temporary_is_left(tmp_path):
    import os
    import stat

    from almc.files import atomic_write

    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.bin", [b"ab", memoryview(b"cd")])
    finally:
        os.umask(umask)
    assert (tmp_path / "a.bin").read_bytes() == b"abcd"
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
    assert [f.name for f in tmp_path.iterdir()] == ["a.bin"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupted_compile_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, sig):
    """Interrupt `almc compile` of VGG-16 (550 MB of weights) while it writes its output."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "vgg.onnx"
    out.write_bytes(b"precious")
    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    p = subprocess.Popen([sys.executable, "-c", "import sys; from almc.cli import main; sys.exit(main(None))",
                          "compile", str(root / "models" / "vgg16.alm"), "-o", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(f.name.endswith(".tmp") for f in tmp_path.iterdir()):
        if p.poll() is not None:
            break
        time.sleep(0.002)
    assert p.poll() is None, "the compile ended before it started writing"
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130
    assert err.strip() == "almc: interrupted; nothing was written"
    assert out.read_bytes() == b"precious"
    assert [f.name for f in tmp_path.iterdir()] == ["vgg.onnx"]
