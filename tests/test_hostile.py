"""Hostile and careless input: nothing almc is given may destroy a file the user has, hang, or
read without bound. Each case asserts the exit status, the message, and that the files the
command was given are unchanged."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from almc.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from workers import mem, reset_peak  # noqa: E402  (VmRSS / VmHWM and their reset, as the benchmark reads them)

MODEL = "model M {\n input x: f32[N, 4]\n output y = dense(x, 3)\n}\n"
TRAINED = MODEL + ("train M {\n input label: i64[N]\n minimize mean(cross_entropy(y, label))\n"
                   " epochs 1\n batch 8\n}\n")


WALL_LIMIT_S = 60  # every case, whatever it is given: no hang, no runaway work
PEAK_LIMIT_MIB = 300  # and what it may add to the process's resident memory at its peak


def run(capsys, *argv):
    measured = reset_peak()
    before = mem()["VmRSS"] if measured else 0.0
    t0 = time.perf_counter()
    code = main([str(a) for a in argv])
    assert time.perf_counter() - t0 < WALL_LIMIT_S
    if measured:
        assert mem()["VmHWM"] - before < PEAK_LIMIT_MIB, argv
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "internal error" not in out.err
    return code, out.err.strip()


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.alm").write_text(MODEL)
    return tmp_path


# ---- an output that is an input ------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["m.alm", "./m.alm", "sub/../m.alm", "hard.alm", "link.alm"])
def test_compile_refuses_to_write_over_its_model(here, capsys, spelling):
    (here / "sub").mkdir()
    os.link(here / "m.alm", here / "hard.alm")
    os.symlink("m.alm", here / "link.alm")
    code, err = run(capsys, "compile", "m.alm", "-o", spelling)
    assert code == 2
    assert err.startswith(f"almc: error: the output {Path(spelling)} is an input of this command")
    if spelling in ("hard.alm", "link.alm"):
        assert "is an input of this command (m.alm): " in err
    assert err.endswith("writing it would destroy it; give another name with -o")
    assert (here / "m.alm").read_text() == MODEL


def test_compile_refuses_to_write_over_an_imported_file(here, capsys):
    (here / "blocks.alm").write_text("block twice(x) {\n return relu(x)\n}\n")
    (here / "m.alm").write_text('import "blocks.alm"\n' + MODEL.replace("dense(x, 3)", "twice(dense(x, 3))"))
    code, err = run(capsys, "compile", "m.alm", "-o", "blocks.alm")
    assert code == 2 and "the output blocks.alm is an input of this command" in err
    assert (here / "blocks.alm").read_text().startswith("block twice")


def test_run_refuses_to_write_its_output_over_the_model_or_an_input(here, capsys):
    assert run(capsys, "compile", "m.alm", "-o", "t.onnx")[0] == 0
    np.save(here / "x.npy", np.ones((2, 4), np.float32))
    before = (here / "t.onnx").read_bytes(), (here / "x.npy").read_bytes()
    for target in ("t.onnx", "x.npy"):
        code, err = run(capsys, "run", "t.onnx", "--input", "x.npy", "--output", target)
        assert code == 2 and f"the output {target} is an input of this command" in err
    assert ((here / "t.onnx").read_bytes(), (here / "x.npy").read_bytes()) == before


def test_train_refuses_an_output_that_is_its_model_before_training(here, capsys):
    (here / "m.alm").write_text(TRAINED)
    t0 = time.perf_counter()
    code, err = run(capsys, "train", "m.alm", "--out", "m.alm", "--no-progress")
    assert code == 2 and "the output m.alm is an input of this command" in err and "--out" in err
    assert time.perf_counter() - t0 < 5  # refused before any training
    assert (here / "m.alm").read_text() == TRAINED


def test_weights_import_refuses_to_write_over_the_weights_it_reads(here, capsys):
    np.savez(here / "w.npz", **{"y.weight": np.zeros((3, 4), np.float32)})
    before = (here / "w.npz").read_bytes()
    code, err = run(capsys, "weights", "import", "m.alm", "w.npz", "-o", "w.npz")
    assert code == 2 and "the output w.npz is an input of this command" in err
    assert (here / "w.npz").read_bytes() == before


# ---- outputs that are not regular files ----------------------------------------------------------

def test_a_fifo_as_output_is_refused_and_stays_a_fifo(here, capsys):
    os.mkfifo(here / "pipe")
    code, err = run(capsys, "compile", "m.alm", "-o", "pipe")
    assert code == 2 and err == ("almc: error: pipe is not a regular file (a device, FIFO or socket): almc writes only "
                                 "regular files; give another name with -o")
    assert (here / "pipe").is_fifo()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_a_device_node_as_output_is_refused_and_kept(here, capsys):
    os.mknod(here / "null", 0o666 | 0o020000, os.makedev(1, 3))  # a copy of /dev/null
    code, err = run(capsys, "compile", "m.alm", "-o", "null")
    assert code == 2 and "null is not a regular file" in err
    assert (here / "null").is_char_device()


def test_the_api_never_replaces_a_device_or_fifo(here):
    import almc
    from almc.errors import FileError

    os.mkfifo(here / "pipe")
    with pytest.raises(FileError, match="is not a regular file"):
        almc.load(here / "m.alm").export(here / "pipe")
    assert (here / "pipe").is_fifo()


@pytest.mark.parametrize("argv,message", [
    (["compile", "m.alm", "-o", "missing/m.onnx"], "almc: error: the folder missing does not exist"),
    (["compile", "m.alm", "-o", "m.alm/x.onnx"], "almc: error: m.alm is not a folder"),
    (["compile", "m.alm", "-o", "d"], "almc: error: d is a directory; give a file name with -o"),
    (["compile", "m.alm", "-o", "a" * 250 + ".onnx"], "almc: error: the file name of aaaa"),
], ids=["missing-folder", "file-as-folder", "directory", "long-name"])
def test_bad_output_paths(here, capsys, argv, message):
    (here / "d").mkdir()
    code, err = run(capsys, *argv)
    assert code == 2 and err.startswith(message)
    assert len(err) < 300  # a long name is elided


def test_train_checks_its_output_folders_before_it_starts(here, capsys):
    (here / "m.alm").write_text(TRAINED)
    (here / "afile").write_text("keep")
    cases = {("--metrics", "nowhere/metrics.json"): "the folder nowhere does not exist",
             ("--out", "nowhere/t.onnx"): "the folder nowhere does not exist",
             ("--checkpoint", "afile"): "--checkpoint afile is a file, not a folder"}
    for (flag, value), message in cases.items():
        t0 = time.perf_counter()
        code, err = run(capsys, "train", "m.alm", flag, value, "--no-progress")
        assert code == 2 and message in err, err
        assert time.perf_counter() - t0 < 5
    assert (here / "afile").read_text() == "keep"


# ---- leftovers -------------------------------------------------------------------------------------

def test_stale_temporary_files_of_a_killed_writer_are_swept(here, capsys):
    stale = here / ".m.onnx.deadbeef.tmp"
    fresh = here / ".m.onnx.0123abcd.tmp"
    other = here / ".other.onnx.deadbeef.tmp"
    for p in (stale, fresh, other):
        p.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    assert run(capsys, "compile", "m.alm", "-o", "m.onnx")[0] == 0
    assert not stale.exists()  # no writer holds it: removed
    assert fresh.exists()  # it may be a concurrent writer's
    assert other.exists()  # another target's


def test_a_killed_compile_leaves_a_file_the_next_write_removes(here):
    import almc

    ready = here / "ready"
    code = (f"import os, signal, almc.files as f\n"
            f"def data():\n"
            f"    yield b'x' * 1000\n"
            f"    open({str(ready)!r}, 'w').close()\n"
            f"    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"f.atomic_write({str(here / 'm.onnx')!r}, data())\n")
    subprocess.run([sys.executable, "-c", code], timeout=60)
    assert ready.exists()
    left = list(here.glob(".m.onnx.*.tmp"))
    assert len(left) == 1
    old = time.time() - 3600
    os.utime(left[0], (old, old))
    almc.load(here / "m.alm").export(here / "m.onnx")
    assert not left[0].exists() and (here / "m.onnx").stat().st_size > 0


# ---- sources that are not files, or too big ----------------------------------------------------------

def test_a_fifo_as_the_model_file_is_refused_without_hanging(here):
    os.mkfifo(here / "fifo.alm")
    r = subprocess.run([sys.executable, "-m", "almc.cli", "check", "fifo.alm"], cwd=here, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[0] == ("fifo.alm: error: fifo.alm is not a regular file (a FIFO, device or "
                                                "socket), not a .alm file")


def test_a_huge_model_file_is_refused_before_it_is_read(here, capsys):
    with open(here / "big.alm", "wb") as f:
        f.truncate(1 << 40)  # sparse: claims a terabyte, holds nothing
    code, err = run(capsys, "check", "big.alm")
    assert code == 1
    assert err.splitlines()[0] == ("big.alm: error: big.alm is 1,099,511,627,776 bytes: more than a model file's "
                                   "16,777,216")


def test_a_directory_as_the_model_names_no_position(here, capsys):
    (here / "dir.alm").mkdir()
    code, err = run(capsys, "check", "dir.alm")
    assert (code, err.splitlines()[0]) == (1, "dir.alm: error: dir.alm is a directory, not a .alm file")


def test_a_stdlib_import_cannot_climb_out_of_the_standard_library(here, capsys):
    outside = Path(here / "b.alm")
    outside.write_text("block b(x) {\n return x\n}\n")
    import almc.source

    up = os.path.relpath(here / "b.alm", almc.source.stdlib_dir())
    (here / "m.alm").write_text(f'import "std/{up}"\n' + MODEL)
    code, err = run(capsys, "check", "m.alm")
    assert code == 1
    assert err.splitlines()[0] == f'm.alm:1:1: error: import "std/{up}" leaves the standard library'


# ---- counts and rates: the same bounds in the file and on the command line -------------------------

@pytest.mark.parametrize("flag,value,message", [
    ("--batch", "0", "batch must be an integer from 1 to 1,048,576, got the integer 0"),
    ("--batch", "-4", "batch must be an integer from 1 to 1,048,576, got the integer -4"),
    ("--epochs", "0", "epochs must be an integer from 1 to 1,000,000, got the integer 0"),
    ("--epochs", "-3", "epochs must be an integer from 1 to 1,000,000, got the integer -3"),
    ("--epochs", "1000000000000", "epochs must be an integer from 1 to 1,000,000, got the integer 1000000000000"),
    ("--seed", "-1", "seed must be an integer from 0 to 4,294,967,295, got the integer -1"),
    ("--lr", "-1", "sgd's lr must not be negative, got -1.0"),
    ("--lr", "nan", "sgd's lr must be a finite number, got nan"),
], ids=["batch0", "batch-neg", "epochs0", "epochs-neg", "epochs-huge", "seed-neg", "lr-neg", "lr-nan"])
def test_train_flags_keep_the_bounds_of_the_training_section(here, capsys, flag, value, message):
    (here / "m.alm").write_text(TRAINED)
    code, err = run(capsys, "train", "m.alm", flag, value, "--no-progress")
    assert (code, err) == (2, f"almc: error: {flag}: {message}")


def test_the_section_refuses_what_the_flags_refuse(here, capsys):
    (here / "m.alm").write_text(TRAINED.replace(" epochs 1\n", " epochs 1000000000000\n"))
    code, err = run(capsys, "check", "m.alm")
    assert code == 1
    assert err.splitlines()[0] == ("m.alm:8:9: error: epochs must be an integer from 1 to 1,000,000, got the "
                                   "integer 1000000000000")


# ---- evaluation budget --------------------------------------------------------------------------------

@pytest.mark.parametrize("body,where", [
    ("for i in range(100000) {\n  for j in range(100000) {\n   k = i\n  }\n }\n", "4:3"),
    ("xs = (1, 2)\n" + "".join(f" xs{k + 1} = xs{k or ''} + xs{k or ''}\n" for k in range(40)).replace("xs0", "xs"),
     None),
], ids=["nested-loops", "doubling-list"])
def test_runaway_evaluation_stops_at_the_budget_with_a_located_error(here, capsys, body, where):
    (here / "m.alm").write_text("model M {\n input x: f32[N, 4]\n" + body + " output y = relu(x)\n}\n")
    t0 = time.perf_counter()
    code, err = run(capsys, "check", "m.alm")
    assert time.perf_counter() - t0 < 20
    assert code == 1
    first = err.splitlines()[0]
    assert "error: building the model takes more than 1,000,000 evaluation steps" in first
    assert "hint: check the loops and the recursion; a larger model may raise the budget with --max-eval-steps" in err
    if where:
        assert first.startswith(f"m.alm:{where}: ")


def test_exponential_recursion_stops_at_the_budget(here, capsys):
    (here / "m.alm").write_text("block f(x, n) {\n y = f(x, n - 1) if n > 0 else x\n z = f(x, n - 1) if n > 0 else x\n"
                                " return y\n}\nmodel M {\n input x: f32[N, 4]\n output y = f(relu(x), 40)\n}\n")
    t0 = time.perf_counter()
    code, err = run(capsys, "check", "m.alm")
    assert time.perf_counter() - t0 < 30 and code == 1
    assert "evaluation steps" in err.splitlines()[0]


def test_the_budget_can_be_raised(here, capsys):
    (here / "m.alm").write_text("model M {\n input x: f32[N, 4]\n for i in range(3000) {\n  k = i\n }\n"
                                " output y = relu(x)\n}\n")
    assert run(capsys, "check", "m.alm", "--max-eval-steps", "5000")[0] == 1
    assert run(capsys, "check", "m.alm", "--max-eval-steps", "10000")[0] == 0


# ---- positions and long diagnostics ------------------------------------------------------------------

@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_positions_count_lines_under_every_line_ending(here, capsys, newline):
    lines = ["model M {", " input x: f32[N, 4]", " y = relu(q)", " output z = y", "}", ""]
    (here / "m.alm").write_bytes(newline.join(lines).encode())
    code, err = run(capsys, "check", "m.alm")
    assert code == 1
    assert err.splitlines()[:3] == ["m.alm:3:11: error: undefined name 'q'", "     y = relu(q)", "              ^"]


def test_a_unicode_line_separator_in_a_comment_does_not_move_the_shown_line(here, capsys):
    (here / "m.alm").write_text("model M {\n input x: f32[N, 4] # a\u2028b\u2029c\n y = relu(q)\n output z = y\n}\n")
    code, err = run(capsys, "check", "m.alm")
    assert err.splitlines()[:2] == ["m.alm:3:11: error: undefined name 'q'", "     y = relu(q)"]


def test_thousands_of_errors_are_reported_in_linear_time_and_capped(here, capsys):
    def timed(n):
        (here / "m.alm").write_text("model M {\n input x: f32[N, 4]\n" + "".join(f" v{i} = relu(u{i})\n" for i in range(n))
                                    + " output y = relu(x)\n}\n")
        t0 = time.perf_counter()
        code, err = run(capsys, "check", "m.alm")
        return code, err, time.perf_counter() - t0

    _, _, small = timed(500)
    code, err, large = timed(4000)
    assert code == 1
    assert large < 20 and large < 16 * small  # 8x the errors: linear, with room for noise
    lines = err.splitlines()
    assert sum(": error: " in ln for ln in lines) == 50  # the first 50 shown
    assert lines[-2:] == ["... and 3,950 more diagnostics not shown", "4000 errors"]


def test_a_huge_undefined_name_is_elided_in_the_message(here, capsys):
    name = "n" * 2_000_000
    (here / "m.alm").write_text(f"model M {{\n input x: f32[N, 4]\n output y = relu({name})\n}}\n")
    code, err = run(capsys, "check", "m.alm")
    assert code == 1 and len(err) < 3000
    assert err.startswith("m.alm:3:18: error: undefined name 'nnnn") and "..." in err.splitlines()[0]


# ---- almc run: data errors name the file (exit 1), for .onnx models as for .alm -----------------------

def _header_claiming(rows: int) -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, 4), }" % rows
    header += " " * (118 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64


@pytest.mark.parametrize("array,message", [
    (np.ones((2, 4), np.int64), "x.npy: error: input 'x' must be f32[N, 4], got an array of int64"),
    (np.ones((2, 4, 1), np.float32), "x.npy: error: input 'x' must be f32[N, 4], got shape [2, 4, 1]"),
    (np.float32(1), "x.npy: error: input 'x' must be f32[N, 4], got shape []"),
    (np.ones((2, 7), np.float32), "x.npy: error: input 'x' must be f32[N, 4], got shape [2, 7]"),
    (_header_claiming(10 ** 12), "x.npy: error: its header claims float32[1000000000000, 4] (16,000,000,000,000 "
                                 "bytes), but the file holds 64"),
    (b"PK\x03\x04zip", "x.npy: error: expected a single array (.npy), got an archive"),
], ids=["int64", "rank3", "scalar", "wrong-width", "huge-header", "archive"])
@pytest.mark.parametrize("model", ["m.alm", "t.onnx"])
def test_run_checks_every_input_against_the_model(here, capsys, array, message, model):
    assert run(capsys, "compile", "m.alm", "-o", "t.onnx")[0] == 0
    if isinstance(array, bytes):
        (here / "x.npy").write_bytes(array)
    else:
        np.save(here / "x.npy", array)
    code, err = run(capsys, "run", model, "--input", "x.npy")
    assert (code, err) == (1, message)


def test_run_names_an_input_the_model_does_not_have(here, capsys):
    assert run(capsys, "compile", "m.alm", "-o", "t.onnx")[0] == 0
    np.save(here / "x.npy", np.ones((2, 4), np.float32))
    assert run(capsys, "run", "t.onnx", "--input", "foo=x.npy") == (2, "almc: error: t.onnx has no input 'foo' "
                                                                       "(its inputs: x)")
    assert run(capsys, "run", "m.alm", "--input", "foo=x.npy") == (2, "almc: error: M has no input 'foo' "
                                                                      "(its inputs: x)")


# ---- user mistakes that used to end in "internal error" -----------------------------------------------

@pytest.mark.parametrize("line,message", [
    (" k = " + "1" * 5000, "m.alm:3:6: error: an integer of 5,000 digits is more than the 4000 almc reads"),
    (" k = int(1e400)", "m.alm:3:10: error: the number 1e400 is too large: it is infinite as a float"),
    (" k = int(1e308 * 10.0)", "m.alm:3:10: error: the result is not a finite number"),
    (" k = relu(x) * 10 ** 40", "m.alm:3:6: error: the number 10000000000000000000...00000000000000000 does not "
                                "fit in a float32 tensor"),
], ids=["huge-int", "inf-literal", "inf-arithmetic", "huge-constant"])
def test_numbers_beyond_what_a_model_can_hold(here, capsys, line, message):
    (here / "m.alm").write_text("model M {\n input x: f32[N, 4]\n" + line + "\n output y = relu(x)\n}\n")
    code, err = run(capsys, "check", "m.alm")
    assert (code, err.splitlines()[0]) == (1, message)


def test_imports_of_a_directory_or_a_symlink_loop(here, capsys):
    (here / "dir.alm").mkdir()
    os.symlink("b.alm", here / "a.alm")
    os.symlink("a.alm", here / "b.alm")
    for target, message in (("dir.alm", 'cannot import "dir.alm": it is a directory, not a .alm file'),
                            ("a.alm", 'cannot import "a.alm": its symbolic links form a loop')):
        (here / "m.alm").write_text(f'import "{target}"\n' + MODEL)
        code, err = run(capsys, "check", "m.alm")
        assert (code, err.splitlines()[0]) == (1, f"m.alm:1:1: error: {message}")


def test_an_objective_that_ignores_a_label_is_a_located_error(here, capsys):
    (here / "m.alm").write_text(MODEL + "train M {\n input label: i64[N]\n minimize mean(y * y)\n}\n")
    code, err = run(capsys, "check", "m.alm")
    assert (code, err.splitlines()[0]) == (1, "m.alm:6:2: error: the objective does not use the input 'label'")


DIGITS = "digits: 1,258 train / 180 val / 359 test, 10 classes, examples [1, 8, 8]"


@pytest.mark.parametrize("model,message", [
    ("model M {\n input x: f32[N, 1, 8, 8]\n output y = dense(flatten(x), 3)\n}\n"
     "train M {\n input label: i64[N]\n minimize mean(cross_entropy(y, label))\n}\n",
     f"the data ({DIGITS}) have labels 0 to 9, but output 'y' (f32[N, 3]) has 3 classes: give the model 10 "
     "outputs, or keep some classes with `classes 0, 1, ...` in the training section"),
    ("model M {\n input x: f32[N, 1, 8, 8]\n output y = dense(flatten(x), 10)\n}\n"
     "train M {\n input label: i64[N]\n minimize mean(cross_entropy(y, label))\n classes 3, 42\n}\n",
     f"classes 3, 42: the data ({DIGITS}) have no example labelled 42"),
    ("model M {\n input x: i64[N, 64]\n output y = dense(flatten(embedding(x, 5, 2)), 10)\n}\n"
     "train M {\n input label: i64[N]\n minimize mean(cross_entropy(y, label))\n}\n",
     f"input 'x' takes i64[N, 64] (integer ids), but almc train feeds float examples ({DIGITS})"),
], ids=["labels-beyond-classes", "absent-class", "ids-from-images"])
def test_data_that_cannot_feed_the_model_are_refused_before_training(here, capsys, model, message):
    (here / "m.alm").write_text(model)
    code, err = run(capsys, "train", "m.alm", "--no-progress")
    assert (code, err) == (2, f"almc: error: {message}")


@pytest.mark.parametrize("argv,message", [
    (["--max-params", "-5"], "almc: error: argument --max-params: expects a positive integer, got -5"),
    (["--max-activations", "0"], "almc: error: argument --max-activations: expects a positive integer, got 0"),
    (["-D", "hidden=1,,2"], "almc: error: -D: the list '1,,2' has an empty item"),
], ids=["max-params", "max-activations", "empty-item"])
def test_bad_flags(here, capsys, argv, message):
    assert run(capsys, "check", "m.alm", *argv) == (2, message)


def test_out_of_memory_is_the_models_size_not_a_bug(here, capsys, monkeypatch):
    import almc.api

    def exhausted(self, seed=None):
        raise MemoryError("Unable to allocate 3.6 TiB")

    monkeypatch.setattr(almc.api.Model, "initial_weights", exhausted)
    code, err = run(capsys, "compile", "m.alm")
    assert code == 1 and err.startswith("almc: error: out of memory: the model or the data need more memory")


def test_weights_larger_than_the_free_memory_are_refused_before_drawing(here, capsys, monkeypatch):
    """Under overcommit numpy's allocation succeeds and filling it ends in the OOM killer, so
    the draw is checked against the memory available first."""
    import almc.init

    monkeypatch.setattr(almc.init, "available_memory", lambda: 40)
    code, err = run(capsys, "compile", "m.alm", "-o", "m.onnx")
    assert (code, err) == (1, "almc: error: out of memory: the model or the data need more memory than this machine "
                              "has (the parameters take 60 bytes as float32, and this machine has 40 available); make "
                              "them smaller (or lower --max-params, which bounds every layer)")
    assert not (here / "m.onnx").exists()


# ---- long expressions: valid ones compile, over-deep ones get a located error --------------------------

@pytest.mark.parametrize("expr", ["x" + " |> relu" * 20_000, "-" * 50_000 + "x"], ids=["pipe-20000", "minus-50000"])
def test_long_valid_expressions_build(here, capsys, expr):
    (here / "m.alm").write_text(f"model M {{\n input x: f32[N, 4]\n output y = {expr}\n}}\n")
    code, err = run(capsys, "check", "m.alm")
    assert (code, err) == (0, "")


@pytest.mark.parametrize("expr", ["not " * 30_000 + "true", "1 ** " * 20_000 + "1"], ids=["not-30000", "pow-20000"])
def test_long_number_expressions_evaluate(here, capsys, expr):
    (here / "m.alm").write_text(f"model M {{\n input x: f32[N, 4]\n k = {expr}\n output y = relu(x)\n}}\n")
    assert run(capsys, "check", "m.alm")[0] == 0


def test_an_expression_deeper_than_the_limit_is_located(here, capsys):
    (here / "m.alm").write_text("model M {\n input x: f32[N, 4]\n output y = " + "-" * 100_001 + "x\n}\n")
    code, err = run(capsys, "check", "m.alm")
    assert code == 1
    assert err.splitlines()[0] == "m.alm:3:14: error: an expression nested more than 100,000 levels deep"


# ---- archives, weights and folders that would cost the run --------------------------------------------

def _npz_with_lying_header(path: Path, key: str) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{key}.npy", _header_claiming(10 ** 12))


@pytest.mark.parametrize("command", [
    ["train", "m.alm", "--data", "w.npz", "--no-progress"],
    ["weights", "import", "m.alm", "w.npz", "-o", "ck.npz"],
    ["compile", "m.alm", "--weights", "w.npz"],
], ids=["data", "weights", "checkpoint"])
def test_an_archive_whose_header_lies_is_refused_before_allocating(here, capsys, command):
    (here / "m.alm").write_text(TRAINED)
    _npz_with_lying_header(here / "w.npz", "x_train")
    code, err = run(capsys, *command)
    assert code == 1
    assert err.splitlines()[0] == ("w.npz: error: array 'x_train' claims float32[1000000000000, 4] "
                                   "(16,000,000,000,000 bytes), but its member holds 193")


def test_an_archive_that_would_inflate_past_the_limit_is_refused(here, capsys, monkeypatch):
    import almc.files

    monkeypatch.setattr(almc.files, "MAX_ARCHIVE_BYTES", 1000)
    monkeypatch.setattr(almc.files.check_npz, "__defaults__", (1000,))
    (here / "m.alm").write_text(TRAINED)
    np.savez_compressed(here / "w.npz", x_train=np.zeros((100, 100), np.float32))  # 40 KB inflated, tiny on disk
    code, err = run(capsys, "train", "m.alm", "--data", "w.npz", "--no-progress")
    assert code == 1 and "its arrays would inflate to 40,128 bytes, more than the 1,000 almc reads" in err


@pytest.mark.parametrize("value,message", [
    (np.full((3, 4), np.nan, np.float32), "array 'y.weight' holds NaN or infinite values; nothing was written"),
    (np.ones((3, 4), np.int64), "array 'y.weight' is int64, but y.weight is a float parameter: save the weights as floats"),
], ids=["nan", "int64"])
def test_weights_import_refuses_arrays_that_are_not_finite_floats(here, capsys, value, message):
    np.savez(here / "w.npz", **{"y.weight": value, "y.bias": np.zeros(3, np.float32)})
    code, err = run(capsys, "weights", "import", "m.alm", "w.npz", "-o", "ck.npz")
    assert (code, err) == (1, f"w.npz: error: {message}")
    assert not (here / "ck.npz").exists()


def test_a_folder_that_refuses_files_is_found_before_the_work(here, capsys):
    code, err = run(capsys, "compile", "m.alm", "-o", "/proc/m.onnx")
    assert code == 2 and err.startswith("almc: error: cannot write in the folder /proc (")


def test_gradient_checking_refuses_a_model_too_large_for_numpy(here, capsys):
    (here / "m.alm").write_text("model M {\n input x: f32[N, 5000]\n output y = dense(x, 5000)\n}\n"
                                "train M {\n input label: i64[N]\n minimize mean(cross_entropy(y, label))\n}\n")
    code, err = run(capsys, "check", "m.alm", "--grad")
    assert code == 2 and err.startswith("almc: error: --grad runs M in float64 numpy, several times per parameter "
                                        "tensor: its 25,005,000 parameters are more than the 20,000,000 it checks")


# ---- every command that writes, against every kind of bad output ---------------------------------------

WRITERS = {  # command -> (argv with {out}, the flag it names, the suffix its output needs)
    "compile": (["compile", "m.alm", "-o", "{out}"], "-o", ".onnx"),
    "compile-train": (["compile", "m.alm", "--train", "-o", "{out}"], "-o", ".onnx"),
    "run": (["run", "m.alm", "--input", "x.npy", "--output", "{out}"], "-o", ".npy"),
    "graph": (["graph", "m.alm", "-o", "{out}"], "-o", ".dot"),
    "weights-import": (["weights", "import", "m.alm", "w.npz", "-o", "{out}"], "-o", ".npz"),
    "weights-export": (["weights", "export", "ck.npz", "-o", "{out}"], "-o", ".npz"),
    "train-out": (["train", "m.alm", "--no-progress", "--out", "{out}"], "--out", ".onnx"),
    "train-metrics": (["train", "m.alm", "--no-progress", "--metrics", "{out}"], "--metrics", ".json"),
    "train-plot": (["train", "m.alm", "--no-progress", "--plot", "{out}"], "--plot", ".png"),
    "evaluate-confusion": (["evaluate", "m.alm", "--confusion", "{out}"], "--confusion", ".png"),
    "predict": (["predict", "m.alm", "x.npy", "-o", "{out}"], "-o", ".csv"),
    "plot": (["plot", "mj.json", "-o", "{out}"], "-o", ".png"),
}
BAD_OUTPUTS = {  # kind -> (output path given the suffix, expected message given the path and the flag)
    "directory": (lambda sfx: f"d{sfx}", lambda p, flag: f"almc: error: {p} is a directory; give a file name with {flag}"),
    "fifo": (lambda sfx: f"pipe{sfx}", lambda p, flag: f"almc: error: {p} is not a regular file (a device, FIFO or "
                                                        f"socket): almc writes only regular files; give another "
                                                        f"name with {flag}"),
    "missing-folder": (lambda sfx: f"nowhere/out{sfx}", lambda p, flag: "almc: error: the folder nowhere does not exist"),
    "file-as-folder": (lambda sfx: f"m.alm/out{sfx}", lambda p, flag: "almc: error: m.alm is not a folder"),
    "proc": (lambda sfx: f"/proc/out{sfx}", lambda p, flag: "almc: error: cannot write in the folder /proc ("),
    "long-name": (lambda sfx: "n" * 250 + sfx, lambda p, flag: "almc: error: the file name of nnnnnnnn"),
    "same-as-input": (lambda sfx: f"in{sfx}", lambda p, flag: f"almc: error: the output {p} is an input of this "
                                                               "command"),
}


@pytest.mark.parametrize("kind", list(BAD_OUTPUTS))
@pytest.mark.parametrize("command", list(WRITERS))
def test_every_writer_refuses_every_bad_output(here, capsys, command, kind):
    argv, flag, sfx = WRITERS[command]
    make_path, expected = BAD_OUTPUTS[kind]
    out = make_path(sfx)
    (here / "m.alm").write_text(TRAINED)
    np.save(here / "x.npy", np.ones((2, 4), np.float32))
    np.savez(here / "w.npz", **{"y.weight": np.zeros((3, 4), np.float32)})
    assert run(capsys, "weights", "import", "m.alm", "w.npz", "-o", "ck.npz")[0] == 0
    (here / "mj.json").write_text('{"epochs": [{"epoch": 1, "train_loss": 1.0}]}')
    (here / f"d{sfx}").mkdir()
    os.mkfifo(here / f"pipe{sfx}")
    if kind == "same-as-input":  # the command's own input under another name: a hard link
        source = {"run": "x.npy", "weights-import": "w.npz", "weights-export": "ck.npz", "predict": "x.npy",
                  "plot": "mj.json"}.get(command, "m.alm")
        os.link(here / source, here / out)
    before = {p.name: p.read_bytes() for p in here.iterdir() if p.is_file()}
    code, err = run(capsys, *[a.replace("{out}", out) for a in argv])
    assert code == 2, err
    assert err.startswith(expected(out, flag)), err
    assert {p.name: p.read_bytes() for p in here.iterdir() if p.is_file()} == before  # nothing changed
    assert (here / f"pipe{sfx}").is_fifo()


# ---- every reader, given a FIFO or a directory: refused at once, never a hang ------------------------

READERS = {  # reader -> argv with {path} (the file it reads), and what the path needs to end with
    "run-input": (["run", "m.alm", "--input", "{path}"], ".npy"),
    "run-model": (["run", "{path}", "--input", "x.npy"], ".onnx"),
    "compile-weights": (["compile", "m.alm", "--weights", "{path}", "-o", "out.onnx"], ".npz"),
    "weights-import": (["weights", "import", "m.alm", "{path}", "-o", "ck.npz"], ".npz"),
    "train-data": (["train", "m.alm", "--data", "{path}", "--no-progress"], ".npz"),
    "train-init": (["train", "m.alm", "--init", "{path}", "--no-progress"], ".npz"),
    "evaluate-weights": (["evaluate", "m.alm", "--weights", "{path}"], ".npz"),
    "evaluate-data": (["evaluate", "m.alm", "--data", "{path}"], ".npz"),
    "predict-input": (["predict", "m.alm", "{path}"], ".npy"),
    "predict-model": (["predict", "{path}", "x.npy"], ".onnx"),
    "plot-metrics": (["plot", "{path}", "-o", "c.png"], ".json"),
    "quantize-calibrate": (["compile", "m.alm", "--quantize", "int8", "--calibrate", "{path}", "-o", "q.onnx"], ".npy"),
}


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_refuses_a_fifo_or_directory_without_hanging(here, reader, kind):
    argv, sfx = READERS[reader]
    (here / "m.alm").write_text(TRAINED)
    np.save(here / "x.npy", np.ones((2, 4), np.float32))
    path = here / f"thing{sfx}"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    r = subprocess.run([sys.executable, "-m", "almc.cli", *[a.replace("{path}", path.name) for a in argv]],
                       cwd=here, capture_output=True, text=True, timeout=60)
    assert r.returncode in (1, 2), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert f"thing{sfx}" in r.stderr.splitlines()[0]
    assert path.is_fifo() if kind == "fifo" else path.is_dir()


# ---- time and memory stay bounded on the inputs built to exhaust them -----------------------------------

PEAK = ("import resource, subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-m', 'almc.cli', *sys.argv[1:]], capture_output=True, text=True)\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


@pytest.mark.parametrize("case", ["npy-header", "npz-header", "doubling-list", "terabyte-model"])
def test_hostile_files_cost_little_time_and_memory(here, case):
    (here / "m.alm").write_text(TRAINED)
    if case == "npy-header":
        (here / "x.npy").write_bytes(_header_claiming(10 ** 12))
        argv = ["run", "m.alm", "--input", "x.npy"]
    elif case == "npz-header":
        _npz_with_lying_header(here / "w.npz", "x_train")
        argv = ["train", "m.alm", "--data", "w.npz", "--no-progress"]
    elif case == "doubling-list":
        (here / "m.alm").write_text("model M {\n input x: f32[N, 4]\n xs0 = (1, 2)\n"
                                    + "".join(f" xs{k + 1} = xs{k} + xs{k}\n" for k in range(40))
                                    + " output y = relu(x)\n}\n")
        argv = ["check", "m.alm"]
    else:
        with open(here / "big.alm", "wb") as f:
            f.truncate(1 << 40)
        argv = ["check", "big.alm"]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PEAK, *argv], cwd=here, capture_output=True, text=True, timeout=120)
    code, peak_kib = map(int, r.stdout.split())
    assert code == 1
    assert time.perf_counter() - t0 < 30
    assert peak_kib < 400 * 1024  # an almc process that only checks: well under 400 MiB


def test_concurrent_writers_of_one_output_leave_one_complete_file(here):
    procs = [subprocess.Popen([sys.executable, "-m", "almc.cli", "compile", "m.alm", "-o", "out.onnx", "--seed",
                               str(k)], cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for k in range(4)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    import onnx

    onnx.checker.check_model(onnx.load(here / "out.onnx"), full_check=True)
    assert not list(here.glob(".out.onnx.*.tmp"))


@pytest.mark.parametrize("dtype", ["f16", "f64"])
def test_a_layer_with_float32_parameters_refuses_another_float_width_at_check(here, capsys, dtype):
    (here / "m.alm").write_text(MODEL.replace("f32", dtype))
    code, err = run(capsys, "check", "m.alm")
    assert (code, err.splitlines()[0]) == (1, f"m.alm:3:13: error: dense computes in float32 (its parameters are "
                                              f"float32), got {dtype}[N, 4]")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_on_a_full_device_is_an_error_not_a_success(here):
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "almc.cli", "summary", "m.alm"], cwd=here, stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 1 and "No space left on device" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("model", ["e.alm", "e.onnx"])
def test_an_embedding_id_past_the_table_is_a_data_error_without_onnxruntimes_log(here, model):
    (here / "e.alm").write_text("model M {\n input x: i64[N, 3]\n output y = embedding(x, 5, 2)\n}\n")
    np.save(here / "ids.npy", np.array([[1, 2, 9]], np.int64))
    assert subprocess.run([sys.executable, "-m", "almc.cli", "compile", "e.alm", "-o", "e.onnx"], cwd=here,
                          capture_output=True, timeout=60).returncode == 0
    r = subprocess.run([sys.executable, "-m", "almc.cli", "run", model, "--input", "ids.npy"], cwd=here,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.startswith(f"{model}: error: onnxruntime could not run it on these inputs: ")
    assert "idx=9" in r.stderr and "\x1b[" not in r.stderr and len(r.stderr.splitlines()) == 1
