"""almc train end to end: accuracy reached, checkpoints, resume, NaN, metrics, freezing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import FROZEN

import almc
from almc.cli import main
from almc.step import training_step

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


@pytest.mark.slow
def test_lenet_reaches_98_percent_on_the_digits(tmp_path):
    m = almc.load(MODELS / "lenet.alm")
    metrics = m.train(metrics=str(tmp_path / "m.json"))
    assert metrics["test_accuracy"] >= 0.98
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"] and len(saved["epochs"]) == 20
    assert set(saved["epochs"][0]) == {"epoch", "train_loss", "train_accuracy", "val_accuracy", "seconds"}
    assert saved["epochs"][-1]["train_accuracy"] > 0.95
    assert saved["epochs"][-1]["train_loss"] < saved["epochs"][0]["train_loss"]


@pytest.mark.slow
def test_the_digits_vit_reaches_96_percent():
    # models/vit_digits.alm's own training section (AdamW, cosine, 40 epochs): 97.5% when written
    metrics = almc.load(MODELS / "vit_digits.alm").train()
    assert metrics["test_accuracy"] >= 0.96


@pytest.mark.parametrize("name,least", [("mlp", 0.95), ("logistic", 0.95), ("linear_svm", 0.9), ("perceptron", 0.95)])
def test_course_models_train(name, least):
    metrics = almc.load(MODELS / f"{name}.alm").train()
    assert metrics["test_accuracy"] >= least


def test_ridge_regression_trains_without_accuracy():
    metrics = almc.load(MODELS / "ridge.alm").train(epochs=5)
    assert metrics["test_accuracy"] is None
    assert metrics["epochs"][-1]["train_loss"] < metrics["epochs"][0]["train_loss"]


def test_interrupted_then_resumed_reaches_the_same_weights(tmp_path, monkeypatch):
    import almc.train as trainer

    straight = almc.load(MODELS / "mlp.alm")
    straight.train(epochs=3, seed=5)
    save = trainer.save_checkpoint

    def save_then_interrupt(path, graph, weights, state, epoch, *rest):  # Ctrl-C right after epoch 2's checkpoint
        save(path, graph, weights, state, epoch, *rest)
        if epoch == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(trainer, "save_checkpoint", save_then_interrupt)
    with pytest.raises(trainer.TrainingStopped, match="Resume from the last epoch with: --checkpoint .* --resume"):
        almc.load(MODELS / "mlp.alm").train(epochs=3, seed=5, checkpoint=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]  # nothing half-written
    monkeypatch.setattr(trainer, "save_checkpoint", save)
    resumed = almc.load(MODELS / "mlp.alm")
    metrics = resumed.train(epochs=3, seed=5, checkpoint=str(tmp_path), resume=True)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    for k, v in straight.weights.items():
        np.testing.assert_array_equal(resumed.weights[k], v, err_msg=k)


def test_a_seed_gives_the_same_weights_however_busy_the_machine_is(monkeypatch):
    """Inference's default threads shrink with the load; the step's float sums are split by
    thread, so training keeps to every usable CPU and the weights do not depend on the load."""
    import almc.runtime as runtime

    quiet = almc.load(MODELS / "lenet.alm")
    quiet.train(epochs=1, seed=3, progress=False)
    monkeypatch.setattr(runtime, "default_threads", lambda: 1)  # as if other processes held the rest
    busy = almc.load(MODELS / "lenet.alm")
    busy.train(epochs=1, seed=3, progress=False)
    for k, v in quiet.weights.items():
        np.testing.assert_array_equal(busy.weights[k], v, err_msg=k)


def test_trained_weights_are_exported(tmp_path):
    m = almc.load(MODELS / "logistic.alm")
    m.train(epochs=2, out=str(tmp_path / "t.onnx"))
    proto = onnx.load(tmp_path / "t.onnx")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    np.testing.assert_array_equal(inits["logit.weight"], m.weights["logit.weight"])
    assert not np.array_equal(inits["logit.weight"], m.initial_weights()["logit.weight"])


def test_a_nan_loss_stops_with_the_step_named_and_keeps_the_last_checkpoint(tmp_path, capsys):
    ck = tmp_path / "ck"
    assert main(["train", str(MODELS / "mlp.alm"), "--epochs", "1", "--checkpoint", str(ck), "--no-progress"]) == 0
    before = (ck / "last.npz").read_bytes()
    capsys.readouterr()
    code = main(["train", str(MODELS / "mlp.alm"), "--lr", "1e9", "--epochs", "3", "--checkpoint", str(ck),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("almc: error: the loss became nan at step ") or err.startswith(
        "almc: error: the loss became inf at step ")
    assert "(epoch 1)" in err
    assert (ck / "last.npz").read_bytes() == before


def test_a_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    ck = tmp_path / "ck"
    assert main(["train", str(MODELS / "logistic.alm"), "--epochs", "1", "--checkpoint", str(ck), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["compile", str(MODELS / "mlp.alm"), "--weights", str(ck / "last.npz"), "-o", str(tmp_path / "x.onnx")]) == 1
    assert capsys.readouterr().err == (f"{ck / 'last.npz'}: error: the checkpoint has no parameter 'units0/h.dense.weight': "
                                       "it was saved from another model\n")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    assert main(["compile", str(MODELS / "mlp.alm"), "--weights", str(tmp_path / "bad.npz")]) == 1
    assert "not a readable almc checkpoint" in capsys.readouterr().err


def test_compile_from_a_checkpoint(tmp_path, capsys):
    ck = tmp_path / "ck"
    m = almc.load(MODELS / "linear_svm.alm")
    m.train(epochs=1, checkpoint=str(ck))
    assert main(["compile", str(MODELS / "linear_svm.alm"), "--weights", str(ck / "last.npz"),
                 "-o", str(tmp_path / "svm.onnx")]) == 0
    proto = onnx.load(tmp_path / "svm.onnx")
    w = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    np.testing.assert_array_equal(w["scores.weight"], m.weights["scores.weight"])




def test_frozen_layers_get_no_gradient_nodes_and_do_not_change():
    m = almc.load(FROZEN)
    g, sig = training_step(m.graph)
    assert "a.dense.weight" not in sig.trainable
    grads_of_a = [n for n in g.nodes() if n.op in ("gemm",) and "a.dense" in n.id]
    assert not grads_of_a
    assert not any(n.op == "read_param" and n.owner == "a.dense" for n in g.nodes())  # not in l2 either
    start = m.initial_weights()
    m.train()
    np.testing.assert_array_equal(m.weights["a.dense.weight"], start["a.dense.weight"])
    assert not np.array_equal(m.weights["b.dense.weight"], start["b.dense.weight"])


def test_lr_scale_scales_the_step():
    m = almc.load(FROZEN)
    g, _ = training_step(m.graph)
    scaled = [n for n in g.nodes() if n.layer == "update/b" and n.op == "mul" and "lr" in n.inputs]
    assert scaled and {g.node(i).attrs.value for n in scaled for i in n.inputs if g.node(i).op == "constant"} == {0.5}


def test_compile_train_writes_the_documented_step(tmp_path, capsys):
    assert main(["compile", str(MODELS / "lenet.alm"), "--train", "-o", str(tmp_path / "step.onnx")]) == 0
    proto = onnx.load(tmp_path / "step.onnx")
    onnx.checker.check_model(proto, full_check=True)
    ins = [i.name for i in proto.graph.input]
    outs = [o.name for o in proto.graph.output]
    assert ins[:3] == ["image", "label", "epoch"]
    assert "c1.conv.weight" in ins and "momentum.c1.conv.weight" in ins
    assert outs[:3] == ["loss", "lr", "output.logits"]
    assert {"grad.c1.conv.weight", "next.c1.conv.weight", "next.momentum.c1.conv.weight"} <= set(outs)
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)  # standard ONNX only
    # tuned for the CPU: LeNet's second conv takes its input gradient through Col2Im, which
    # onnxruntime has for the CPU only; --target cuda keeps the ConvTranspose
    assert [n.op_type for n in proto.graph.node].count("Col2Im") == 1
    assert main(["compile", str(MODELS / "lenet.alm"), "--train", "--target", "cuda", "-o", str(tmp_path / "c.onnx")]) == 0
    ops = [n.op_type for n in onnx.load(tmp_path / "c.onnx").graph.node]
    assert "Col2Im" not in ops and ops.count("ConvTranspose") == 1


def test_check_grad_command(capsys):
    assert main(["check", "--grad", str(MODELS / "mlp.alm")]) == 0
    out = capsys.readouterr().out
    assert "gradient check (float64, central differences, batch 2):" in out
    rows = [ln for ln in out.splitlines() if ln.startswith("  units") or ln.startswith("  logits.")]
    assert len(rows) == 6 and all(float(r.split()[-1]) < 1e-4 for r in rows)


def test_diff_modes_lists_dropout_and_batchnorm(capsys):
    assert main(["diff-modes", str(MODELS / "lenet.alm")]) == 0
    assert capsys.readouterr().out == "LeNet5: inference and training compute the same nodes\n"
    assert main(["diff-modes", str(MODELS / "vgg16.alm")]) == 0
    assert capsys.readouterr().out.count(": dropout(p = 0.5)") == 2


def test_diff_modes_names_each_layer_as_the_summary_does(capsys):
    """ResNet-18's batch norms end some statements and not others; they are named one way."""
    assert main(["diff-modes", str(MODELS / "resnet18.alm"), "-D", "size=32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ResNet18: layers that differ between inference and training (named as in almc summary)"
    rows = {r.name for r in almc.load(MODELS / "resnet18.alm", size=32).summary().rows if r.ops.endswith("batchnorm")}
    named = [line.split(": batchnorm:")[0].strip() for line in lines[1:]]
    assert len(named) == 20 and set(named) == rows
    assert "x/conv1.conv_bn" in named and "layer0/x/unit0/x/conv2" in named


def test_training_needs_a_section(capsys, tmp_path):
    assert main(["train", str(MODELS / "unet.alm"), "--no-progress"]) == 1
    assert "model UNet has no training section" in capsys.readouterr().err


FINETUNE = (MODELS / "lenet.alm").read_text().split("# Training as in the course")[0] + """
train LeNet5 {
    input label: i64[N]
    minimize mean(cross_entropy(logits, label))
    optimizer sgd(lr = 0.05, momentum = 0.9)
    freeze c1, c3
    lr_scale c5, f6 = 0.1
    classes 3, 8
    epochs 2
    batch 32
}
"""


def test_fine_tuning_replaces_the_head_and_reports_what_was_loaded(tmp_path, capsys):
    ck = tmp_path / "pre"
    assert main(["train", str(MODELS / "lenet.alm"), "--epochs", "1", "--checkpoint", str(ck), "--no-progress"]) == 0
    (tmp_path / "ft.alm").write_text(FINETUNE)
    capsys.readouterr()
    assert main(["train", str(tmp_path / "ft.alm"), "-D", "classes=2", "--init", str(ck / "last.npz"),
                 "--no-progress", "--checkpoint", str(tmp_path / "ft")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"starting from {ck / 'last.npz'}: loaded 8 parameters by name\n"
                          "  shape mismatch, initialised fresh: logits.weight is [10, 84] in the file, [2, 84] in the model\n"
                          "  shape mismatch, initialised fresh: logits.bias is [10] in the file, [2] in the model\n")
    from almc.checkpoint import read_checkpoint

    pre, _, _ = read_checkpoint(ck / "last.npz")
    tuned, _, _ = read_checkpoint(tmp_path / "ft" / "last.npz")
    np.testing.assert_array_equal(tuned["c1.conv.weight"], pre["c1.conv.weight"])  # frozen
    assert not np.array_equal(tuned["c5.dense.weight"], pre["c5.dense.weight"])  # tuned at a tenth of the rate
    assert tuned["logits.weight"].shape == (2, 84)


def test_a_max_pool_runs_once_in_a_training_step(tmp_path):
    """The gradient recomputes each max pool with its indices; the forward pool asks for the
    indices too, so that onnxruntime merges the two (ops/pool.py: share_pool_indices). An
    inference model's pools do not compute indices."""
    import onnxruntime as ort

    m = almc.load(str(MODELS / "lenet.alm"))
    step = m.compile_training_step(gradients=False)
    assert sum(n.op_type == "MaxPool" for n in step.graph.node) == 4
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    ort.InferenceSession(step.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    pools = [n for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node if n.op_type == "MaxPool"]
    assert [len(n.output) for n in pools] == [2, 2]
    assert [len(n.output) for n in m.compile().graph.node if n.op_type == "MaxPool"] == [1, 1]


def test_training_on_cuda_lowers_the_step_and_the_evaluation_for_cuda(monkeypatch):
    """Where onnxruntime would run on CUDA, both graphs `almc train` builds take CUDA's formulations
    (here the sessions themselves run on the CPU, which computes the same)."""
    from almc import lower as lower_mod
    from almc import runtime

    targets = []
    real_lower, real_session = lower_mod.lower, runtime.session

    def lower(graph, *a, target="cpu", **k):
        targets.append(target)
        return real_lower(graph, *a, target=target, **k)
    monkeypatch.setattr(lower_mod, "lower", lower)
    monkeypatch.setattr(runtime, "providers_for", lambda device="auto": ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(runtime, "session", lambda model, device="auto", **k: real_session(model, "cpu", **k))
    m = almc.load(MODELS / "lenet.alm")
    metrics = m.train(epochs=1, seed=0)
    assert targets == ["cuda", "cuda"]
    assert metrics["test_accuracy"] > 0.5


def test_resume_says_where_it_resumes(tmp_path, capsys):
    from almc.cli import main

    ck = tmp_path / "ck"
    assert main(["train", str(MODELS / "mlp.alm"), "--epochs", "2", "--checkpoint", str(ck), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", str(MODELS / "mlp.alm"), "--epochs", "4", "--checkpoint", str(ck), "--resume",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"resumed from {ck / 'last.npz'} after epoch 2 of 4"
    assert out[2].startswith("trained MLP for epochs 3 to 4 in ")
    assert main(["train", str(MODELS / "mlp.alm"), "--epochs", "4", "--checkpoint", str(ck), "--resume",
                 "--no-progress", "--metrics", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:3] == [f"resumed from {ck / 'last.npz'} after epoch 4 of 4", out[2]]
    assert out[2].startswith("trained MLP for no epoch (the checkpoint had all 4) in ")
    import json

    assert json.loads((tmp_path / "m.json").read_text())["resumed_after_epoch"] == 4
