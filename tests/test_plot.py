"""almc plot, train --plot and evaluate --confusion: the figures hold the metrics' numbers, the
files are what their names say, and bad input (a metrics file that is not one, an unknown format,
matplotlib absent) is refused before any work."""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from almc.cli import main

pytest.importorskip("matplotlib")

from almc.plot import confusion, curves  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"
METRICS = {"model": "Net", "test_accuracy": 0.9,
           "epochs": [{"epoch": 1, "train_loss": 2.0, "train_accuracy": 0.5, "val_accuracy": 0.6},
                      {"epoch": 2, "train_loss": 1.0, "train_accuracy": 0.8, "val_accuracy": 0.85},
                      {"epoch": 3, "train_loss": 0.5, "train_accuracy": 0.95, "val_accuracy": 0.9}]}


def test_the_curves_hold_the_metrics_numbers():
    fig = curves(METRICS)
    loss_ax, acc_ax = fig.axes
    (loss,) = loss_ax.get_lines()
    assert list(loss.get_xdata()) == [1, 2, 3] and list(loss.get_ydata()) == [2.0, 1.0, 0.5]
    train, val, test = acc_ax.get_lines()
    assert list(train.get_ydata()) == [0.5, 0.8, 0.95] and list(val.get_ydata()) == [0.6, 0.85, 0.9]
    assert list(test.get_ydata()) == [0.9, 0.9]
    assert [t.get_text() for t in acc_ax.get_legend().get_texts()] == [
        "train accuracy", "validation accuracy", "test accuracy 0.9000"]


def test_a_regression_has_the_loss_alone():
    fig = curves({"epochs": [{**e, "train_accuracy": None, "val_accuracy": None} for e in METRICS["epochs"]]})
    assert len(fig.axes) == 1


def test_almc_plot_writes_png_and_svg(tmp_path, capsys):
    (tmp_path / "m.json").write_text(json.dumps(METRICS))
    assert main(["plot", str(tmp_path / "m.json"), "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path / "m.json"), "-o", str(tmp_path / "c.svg")]) == 0
    root = ET.parse(tmp_path / "c.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert capsys.readouterr().out.splitlines() == [f"wrote {tmp_path / 'c.png'}", f"wrote {tmp_path / 'c.svg'}"]


@pytest.mark.parametrize("content,message", [
    ("{not json", "not JSON"),
    ('{"epochs": 3}', 'not the metrics of almc train'),
    ('{"epochs": []}', "holds no epoch to plot"),
], ids=["not-json", "no-records", "empty"])
def test_almc_plot_refuses_what_is_not_a_metrics_file(tmp_path, capsys, content, message):
    (tmp_path / "m.json").write_text(content)
    assert main(["plot", str(tmp_path / "m.json"), "-o", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{tmp_path / 'm.json'}: error: {message}")
    assert not (tmp_path / "c.png").exists()


def test_bad_outputs_are_refused_before_training(tmp_path, capsys):
    argv = ["train", str(MODELS / "logistic.alm"), "--no-progress", "--metrics", str(tmp_path / "m.json")]
    assert main([*argv, "--plot", str(tmp_path / "c.txt")]) == 2
    assert capsys.readouterr().err.strip() == f"almc: error: cannot tell the format of {tmp_path / 'c.txt'}: use .png, .svg or .pdf"
    assert not (tmp_path / "m.json").exists()  # nothing trained
    assert main(["plot", str(tmp_path / "m.json"), "-o", str(tmp_path / "m.json")]) == 2


def test_matplotlib_absent_is_named_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["train", str(MODELS / "logistic.alm"), "--no-progress", "--plot", str(tmp_path / "c.png")]) == 2
    assert capsys.readouterr().err.strip() == ("almc: error: plotting needs matplotlib, an optional extra: "
                                               "pip install 'almc[plot]' (or pip install matplotlib)")


def test_train_plot_and_evaluate_confusion(tmp_path, capsys):
    assert main(["train", str(MODELS / "logistic.alm"), "--no-progress", "--epochs", "3", "--metrics",
                 str(tmp_path / "m.json"), "--plot", str(tmp_path / "c.png"), "--checkpoint", str(tmp_path / "ck")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote curves: {tmp_path / 'c.png'}" in capsys.readouterr().out
    assert main(["evaluate", str(MODELS / "logistic.alm"), "--weights", str(tmp_path / "ck" / "last.npz"), "--json",
                 "--confusion", str(tmp_path / "cm.svg")]) == 0
    got = json.loads(capsys.readouterr().out)
    assert ET.parse(tmp_path / "cm.svg").getroot().tag == "{http://www.w3.org/2000/svg}svg"
    fig = confusion(got)  # the cells' texts are the counts, row by row
    (ax,) = fig.axes
    cells = [t.get_text() for t in ax.texts]
    assert cells == [f"{v:,}" for row in got["confusion"] for v in row]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "8"]


# ---- TensorBoard event files ----------------------------------------------------------------------

def read_events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of TensorBoard event files, read as TensorBoard reads them: TFRecord framing
    (length, its CRC, the Event proto, its CRC) and tensorboardX's Event message."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
    return scalars


def test_train_writes_tensorboard_events(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    tb = tmp_path / "tb"
    assert main(["train", str(MODELS / "logistic.alm"), "--no-progress", "--epochs", "3", "--tensorboard", str(tb),
                 "--metrics", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    got = read_events(tb)
    assert sorted(got) == ["accuracy/test", "accuracy/train", "accuracy/validation", "loss/train"]
    for tag, key in (("loss/train", "train_loss"), ("accuracy/train", "train_accuracy"),
                     ("accuracy/validation", "val_accuracy")):
        assert [s for s, _ in got[tag]] == [1, 2, 3]
        assert [v for _, v in got[tag]] == pytest.approx([e[key] for e in metrics["epochs"]], rel=1e-6)
    assert got["accuracy/test"] == [(3, pytest.approx(metrics["test_accuracy"], rel=1e-6))]
    assert f"wrote TensorBoard events: {tb}" in capsys.readouterr().out


def test_tensorboard_absent_or_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    assert main(["train", str(MODELS / "logistic.alm"), "--no-progress", "--tensorboard", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.strip() == f"almc: error: --tensorboard {tmp_path / 'afile'} is a file, not a folder"
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    assert main(["train", str(MODELS / "logistic.alm"), "--no-progress", "--tensorboard", str(tmp_path / "tb")]) == 2
    assert capsys.readouterr().err.strip() == ("almc: error: --tensorboard writes through tensorboardX, an optional "
                                               "extra: pip install 'almc[tensorboard]' (or pip install tensorboardX)")
    assert not (tmp_path / "tb").exists()
