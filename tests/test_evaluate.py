"""almc evaluate and almc predict against numpy: the same split as almc train, the objective in
inference mode (dropout off), accuracy, per-class precision / recall / F1 and the confusion
matrix counted independently, top-k probabilities; and --threads, the load-aware default,
--debug after the command."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import trained_folder

import almc
from almc.cli import main
from almc.runtime import default_threads
from almc.train import TrainOptions, prepare_data

MODELS = Path(__file__).resolve().parent.parent / "models"
MODEL = """model Net(hidden = 32) {
    input image: f32[N, 1, 8, 8]
    h = dropout(relu(dense(flatten(image), hidden)), 0.5)
    output logits = dense(h, 10)
}
train Net {
    input label: i64[N]
    minimize mean(cross_entropy(logits, label))
    optimizer adam(lr = 0.01)
    batch 64
    epochs 3
}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_folder(tmp_path_factory, "evaluate", MODEL, "--metrics", "{d}/metrics.json")


def evaluate_json(capsys, *argv):
    capsys.readouterr()
    assert main(["evaluate", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def reference(model_path, ckpt, split):
    """The split as training prepared it, the inference outputs, and the metrics counted by hand."""
    m = almc.load(model_path)
    m.load_weights(ckpt)
    _, xs, ys = prepare_data(m.graph, m.graph.train, TrainOptions())
    x, y = {"train": (xs[0], ys[0]), "val": (xs[1], ys[1]), "test": (xs[2], ys[2])}[split]
    logits = m.run(x)["logits"].astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_softmax[np.arange(len(y)), y].mean()
    pred = logits.argmax(axis=1)
    pairs = Counter(zip(y.tolist(), pred.tolist()))
    return x, y, pred, loss, pairs


@pytest.mark.parametrize("split", ["test", "val"])
def test_evaluate_matches_numpy_on_the_training_split(trained, capsys, split):
    ckpt = trained / "ck" / "last.npz"
    got = evaluate_json(capsys, trained / "net.alm", "--weights", ckpt, "--split", split)
    x, y, pred, loss, pairs = reference(trained / "net.alm", ckpt, split)
    assert got["examples"] == len(y) and got["split"] == split
    assert got["loss"] == pytest.approx(loss, rel=1e-5)  # dropout off: the inference outputs' loss
    assert got["accuracy"] == float((pred == y).mean())
    assert got["confusion"] == [[pairs[(t, p)] for p in range(10)] for t in range(10)]
    for c, row in enumerate(got["per_class"]):
        tp = pairs[(c, c)]
        predicted = sum(v for (t, p), v in pairs.items() if p == c)
        actual = sum(v for (t, p), v in pairs.items() if t == c)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert (row["class"], row["support"]) == (c, actual)
        assert row["precision"] == pytest.approx(precision) and row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(f1)


def test_evaluate_gives_the_test_accuracy_training_reported(trained, capsys):
    metrics = json.loads((trained / "metrics.json").read_text())
    got = evaluate_json(capsys, trained / "net.alm", "--weights", trained / "ck" / "last.npz")
    assert got["accuracy"] == metrics["test_accuracy"]
    m = almc.load(trained / "net.alm")
    m.load_weights(trained / "ck" / "last.npz")
    from_python = m.evaluate()
    assert {k: v for k, v in from_python.items() if k != "seconds"} == {k: v for k, v in got.items() if k != "seconds"}


def test_the_text_report(trained, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(trained / "net.alm"), "--weights", str(trained / "ck" / "last.npz")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Net on the test split of digits: 1,258 train / 180 val / 359 test, 10 classes, "
                             "examples [1, 8, 8]: 359 examples, ")
    assert out[1].startswith("loss      ") and out[2].startswith("accuracy  ") and out[3].startswith("macro F1  ")
    assert out[5] == "class  precision  recall      F1  support"
    assert out[17] == "confusion (rows: true class, columns: predicted)"
    assert out[18].split() == [str(c) for c in range(10)]
    rows = [list(map(int, line.split())) for line in out[19:29]]
    assert [r[0] for r in rows] == list(range(10)) and sum(sum(r[1:]) for r in rows) == 359


def test_a_binary_model_reports_the_datas_labels(capsys):
    """models/logistic.alm keeps digits 3 and 8 (`classes 3, 8`) and has one logit per example."""
    got = evaluate_json(capsys, MODELS / "logistic.alm")
    assert got["labels"] == [3, 8] and [r["class"] for r in got["per_class"]] == [3, 8]
    assert got["examples"] == 72 and sum(map(sum, got["confusion"])) == 72
    assert got["accuracy"] == pytest.approx(sum(got["confusion"][i][i] for i in range(2)) / 72)


def test_a_regression_reports_its_loss_alone(capsys):
    got = evaluate_json(capsys, MODELS / "ridge.alm", "--split", "val")
    assert got["examples"] == 180 and got["loss"] > 0 and "accuracy" not in got


def test_evaluate_refuses_what_it_cannot_evaluate(tmp_path, capsys):
    (tmp_path / "plain.alm").write_text("model P {\n input x: f32[N, 4]\n output y = dense(x, 3)\n}\n")
    assert main(["evaluate", str(tmp_path / "plain.alm")]) == 1
    assert "error: model P has no training section" in capsys.readouterr().err
    assert main(["evaluate", str(MODELS / "mlp.alm"), "--split", "everything"]) == 2
    assert "invalid choice: 'everything'" in capsys.readouterr().err
    assert main(["evaluate", str(MODELS / "mlp.alm"), "--weights", str(tmp_path / "none.npz")]) == 1
    assert capsys.readouterr().err.strip().startswith(f"{tmp_path / 'none.npz'}: error:")


@pytest.mark.parametrize("value,message", [("0", "expects a positive integer, got 0"),
                                           ("5000", "expects at most 1024 threads, got 5,000")])
def test_threads_are_bounded(capsys, value, message):
    assert main(["train", str(MODELS / "mlp.alm"), "--threads", value]) == 2
    assert message in capsys.readouterr().err


def test_threads_reach_the_sessions(monkeypatch, capsys):
    import almc.runtime

    seen = []
    real = almc.runtime.session

    def recording(model, device="auto", threads=None, memory_pattern=True):
        seen.append(threads)
        return real(model, device, threads, memory_pattern)
    monkeypatch.setattr(almc.runtime, "session", recording)
    assert main(["train", str(MODELS / "logistic.alm"), "--threads", "1", "--epochs", "1", "--no-progress"]) == 0
    assert main(["evaluate", str(MODELS / "logistic.alm"), "--threads", "1"]) == 0
    assert seen == [1, 1, 1]


def test_the_default_threads_leave_out_the_cpus_other_processes_keep_busy(monkeypatch):
    import builtins
    import io

    real_open = builtins.open

    def loadavg(running):
        def fake(path, *a, **k):
            return io.StringIO(f"1.00 0.50 0.20 {running}/300 4242\n") if path == "/proc/loadavg" else real_open(path, *a, **k)
        return fake
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for running, threads in ((1, 4), (2, 3), (4, 1), (9, 1)):  # the count includes this process
        monkeypatch.setattr(builtins, "open", loadavg(running))
        assert default_threads() == threads


def test_debug_may_follow_the_command(tmp_path, capsys):
    (tmp_path / "m.alm").write_text("model M {\n input x: f32[N, 4]\n output y = dense(x, 3)\n}\n")
    assert main(["compile", str(tmp_path / "m.alm"), "-o", str(tmp_path / "m.onnx"), "--debug"]) == 0
    assert main(["weights", "export", str(tmp_path / "none.npz"), "-o", str(tmp_path / "w.npz"), "--debug"]) == 1


# ---- almc predict ----------------------------------------------------------------------------------

def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("source", ["alm", "onnx"])
def test_predict_gives_the_top_classes_of_each_example(trained, capsys, source):
    ckpt = trained / "ck" / "last.npz"
    x, y, pred, _, _ = reference(trained / "net.alm", ckpt, "test")
    np.save(trained / "one.npy", x[0])  # one example, without the batch axis
    np.save(trained / "four.npy", x[1:5])
    m = almc.load(trained / "net.alm")
    m.load_weights(ckpt)
    probs = softmax(m.run(x[:5])["logits"].astype(np.float64))
    if source == "onnx":
        m.export(trained / "net.onnx")
        argv = [trained / "net.onnx"]
    else:
        argv = [trained / "net.alm", "--weights", ckpt]
    capsys.readouterr()
    assert main(["predict", *map(str, argv), str(trained / "one.npy"), str(trained / "four.npy"), "--top", "2",
                 "-o", str(trained / f"p_{source}.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    want = [(f"{trained / 'one.npy'}", 0)] + [(f"{trained / 'four.npy'}", i) for i in range(4)]
    for line, (path, i), p in zip(out, want, probs):
        top = np.argsort(-p)[:2]
        assert line == f"{path}[{i}]: {top[0]} ({p[top[0]]:.4f}), {top[1]} ({p[top[1]]:.4f})"
    assert out[5] == f"wrote {trained / f'p_{source}.csv'}"
    rows = (trained / f"p_{source}.csv").read_text().splitlines()
    assert rows[0] == "file,index,class_1,p_1,class_2,p_2" and len(rows) == 6
    cells = rows[2].split(",")
    assert cells[:3] == [str(trained / "four.npy"), "0", str(np.argmax(probs[1]))]
    assert float(cells[3]) == pytest.approx(probs[1].max(), rel=1e-5)


def test_predict_names_the_datas_labels_for_a_binary_model(tmp_path, capsys):
    """models/logistic.alm: one logit, `classes 3, 8`: the sigmoid is the probability of 8."""
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    m = almc.load(MODELS / "logistic.alm")
    p8 = 1 / (1 + np.exp(-float(m.run(x[None])["logit"].reshape(-1)[0])))
    capsys.readouterr()
    assert main(["predict", str(MODELS / "logistic.alm"), str(tmp_path / "x.npy")]) == 0
    got = capsys.readouterr()
    first, second = (8, p8), (3, 1 - p8)
    first, second = (first, second) if p8 >= 0.5 else (second, first)
    assert got.out.strip() == f"{tmp_path / 'x.npy'}[0]: {first[0]} ({first[1]:.4f}), {second[0]} ({second[1]:.4f})"
    assert got.err.strip() == "almc: warning: no --weights: predicting with LogisticRegression's initial weights (seed 0)"


def test_predict_refuses_what_has_no_classes_or_does_not_fit(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros(64, np.float32))
    np.save(tmp_path / "bad.npy", np.zeros((2, 5), np.float32))
    assert main(["predict", str(MODELS / "ridge.alm"), str(tmp_path / "x.npy")]) == 2
    assert capsys.readouterr().err.strip() == ("almc: error: Ridge is trained on float targets (a regression): it "
                                               "has no classes to predict; use almc run")
    assert main(["predict", str(MODELS / "mlp.alm"), str(tmp_path / "bad.npy")]) == 1
    assert capsys.readouterr().err.strip().endswith(f"{tmp_path / 'bad.npy'}: error: input 'image' must be "
                                                    "f32[N, 784], got shape [2, 5]")
    assert main(["predict", str(MODELS / "mlp.alm"), str(tmp_path / "x.npy"), "-o", str(tmp_path / "x.npy")]) == 2
    assert "is an input of this command" in capsys.readouterr().err
