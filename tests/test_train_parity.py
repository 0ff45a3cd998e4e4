"""The training step against PyTorch autograd and torch.optim: same weights, same
batch, same objective; loss, every gradient and every updated parameter must
agree to 1e-4 relative. torch is a test-only extra (pip install torch==2.13.0)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import almc
from almc.lower import lower
from almc.runtime import run
from almc.step import training_step

torch = pytest.importorskip("torch")
F = torch.nn.functional
ROOT = Path(__file__).resolve().parent.parent


def almc_step(m, feeds, weights, state=None, epoch=1.0, step=0.0):
    g, sig = training_step(m.graph)
    proto = lower(g, params_as_inputs=True)
    names = {i.name for i in proto.graph.input}
    state = state or {k: np.zeros(s, np.float32) for k, s in sig.state.items()}
    all_feeds = {**feeds, **weights, **state, "epoch": np.array(epoch, np.float32), "step": np.array(step, np.float32)}
    out, _ = run(proto, {k: v for k, v in all_feeds.items() if k in names}, device="cpu")
    return out, sig


def close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max(), 1e-3)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


def lenet_torch(w, x):
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
    h = F.relu(F.conv2d(x, t["c1.conv.weight"], t["c1.conv.bias"]))
    h = F.max_pool2d(h, 2)
    h = F.relu(F.conv2d(h, t["c3.conv.weight"], t["c3.conv.bias"]))
    h = F.max_pool2d(h, 2).flatten(1)
    h = F.relu(F.linear(h, t["c5.dense.weight"], t["c5.dense.bias"]))
    h = F.relu(F.linear(h, t["f6.dense.weight"], t["f6.dense.bias"]))
    return F.linear(h, t["logits.weight"], t["logits.bias"]), t


def test_lenet_loss_and_every_gradient_match_pytorch():
    m = almc.load(ROOT / "models" / "lenet.alm")
    rng = np.random.default_rng(0)
    w = m.initial_weights(seed=3)
    for k in w:
        w[k] = w[k] + rng.standard_normal(w[k].shape).astype(np.float32) * 0.05  # non-zero biases
    x = rng.standard_normal((8, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    out, sig = almc_step(m, {"image": x, "label": y}, w)
    logits, t = lenet_torch(w, torch.tensor(x, dtype=torch.float64))
    weights = [t[k] for k in t if k.endswith("weight")]
    loss = F.cross_entropy(logits, torch.tensor(y), label_smoothing=0.1) + 5e-4 * sum((p ** 2).sum() for p in weights)
    loss.backward()
    close(out["loss"], loss.item(), "loss")
    assert set(sig.trainable) == set(w)
    for k in w:
        close(out[f"grad.{k}"], t[k].grad.numpy(), f"grad.{k}")
    # SGD with momentum 0.9 from zero state at the first step: v = g, w' = w - lr * v, lr from the schedule
    lr = float(out["lr"])
    for k in w:
        close(out[f"next.{k}"], w[k] - lr * t[k].grad.numpy(), f"next.{k}")


MLP = """
model MLP {
    input x: f32[N, 20]
    h = dense(x, 16) |> tanh
    h2 = dense(h, 12) |> sigmoid
    output logits = dense(h2, 5)
}
train MLP {
    input label: i64[N]
    minimize mean(cross_entropy(logits, label)) + 1e-2 * l2(weights) + 3e-3 * l1(biases)
    optimizer OPT
}
"""


@pytest.mark.parametrize("opt,make", [
    ("sgd(lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 0.01)",
     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adam(lr = 0.01, weight_decay = 0.001)", lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.001)),
    ("adamw(lr = 0.01, weight_decay = 0.1)", lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1)),
])
def test_mlp_three_steps_match_torch_optim(opt, make):
    m = almc.load(MLP.replace("OPT", opt))
    rng = np.random.default_rng(1)
    w = {k: (v + rng.standard_normal(v.shape) * 0.1).astype(np.float32) for k, v in m.initial_weights(0).items()}
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
    torch_opt = make(list(t.values()))
    state = None
    for step in range(3):
        x = rng.standard_normal((6, 20)).astype(np.float32)
        y = rng.integers(0, 5, 6)
        out, sig = almc_step(m, {"x": x, "label": y}, w, state, step=float(step))
        torch_opt.zero_grad()
        xt = torch.tensor(x, dtype=torch.float64)
        h = torch.tanh(F.linear(xt, t["h.dense.weight"], t["h.dense.bias"]))
        h2 = torch.sigmoid(F.linear(h, t["h2.dense.weight"], t["h2.dense.bias"]))
        logits = F.linear(h2, t["logits.weight"], t["logits.bias"])
        loss = (F.cross_entropy(logits, torch.tensor(y))
                + 1e-2 * sum((t[k] ** 2).sum() for k in t if k.endswith("weight"))
                + 3e-3 * sum(t[k].abs().sum() for k in t if k.endswith("bias")))
        loss.backward()
        close(out["loss"], loss.item(), f"loss at step {step}")
        for k in w:
            close(out[f"grad.{k}"], t[k].grad.numpy(), f"grad.{k} at step {step}")
        torch_opt.step()
        for k in w:
            close(out[f"next.{k}"], t[k].detach().numpy(), f"next.{k} at step {step}")
        w = {k: out[f"next.{k}"] for k in w}
        state = {k: out[f"next.{k}"] for k in sig.state}


def test_stable_for_huge_logits():
    m = almc.load("""
model M { input x: f32[N, 3]
 output logits = dense(x, 4) }
train M { input label: i64[N]
 minimize mean(cross_entropy(logits * 1e4, label, smoothing = 0.1)) }""")
    w = {"logits.weight": np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], np.float32),
         "logits.bias": np.zeros(4, np.float32)}
    x = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    out, _ = almc_step(m, {"x": x, "label": np.array([1, 3])}, w)
    xt = torch.tensor(x, dtype=torch.float64)
    tw = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
    loss = F.cross_entropy(F.linear(xt, tw["logits.weight"], tw["logits.bias"]) * 1e4, torch.tensor([1, 3]),
                           label_smoothing=0.1)
    loss.backward()
    assert np.isfinite(out["loss"]) and all(np.isfinite(out[f"grad.{k}"]).all() for k in w)
    close(out["loss"], loss.item(), "loss")
    for k in w:
        close(out[f"grad.{k}"], tw[k].grad.numpy(), k)


@pytest.mark.parametrize("name,cls", [("lstm", "LSTM"), ("gru", "GRU"), ("rnn", "RNN")])
def test_recurrent_classifier_step_matches_pytorch(name, cls):
    m = almc.load(ROOT / "models" / f"{name}.alm", hidden=6, features=5)
    rng = np.random.default_rng(2)
    w = {k: (v + rng.standard_normal(v.shape) * 0.1).astype(np.float32) for k, v in m.initial_weights(0).items()}
    x = rng.standard_normal((4, 7, 5)).astype(np.float32)
    y = rng.integers(0, 10, 4)
    out, _ = almc_step(m, {"seq": x, "label": y}, w)
    rec = getattr(torch.nn, cls)(5, 6, batch_first=True).double()
    prefix = next(k for k in w if k.endswith("weight_ih")).rsplit(".", 1)[0]
    with torch.no_grad():
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(rec, f"{p}_l0").copy_(torch.tensor(w[f"{prefix}.{p}"]))
    head_w = torch.tensor(w["logits.weight"], dtype=torch.float64, requires_grad=True)
    head_b = torch.tensor(w["logits.bias"], dtype=torch.float64, requires_grad=True)
    seq, _ = rec(torch.tensor(x, dtype=torch.float64))
    loss = F.cross_entropy(F.linear(seq[:, -1], head_w, head_b), torch.tensor(y))
    loss.backward()
    close(out["loss"], loss.item(), "loss")
    for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        close(out[f"grad.{prefix}.{p}"], getattr(rec, f"{p}_l0").grad.numpy(), p)
    close(out["grad.logits.weight"], head_w.grad.numpy(), "head")
    close(out["grad.logits.bias"], head_b.grad.numpy(), "head bias")


BLOCK = """import "std/resnet.alm"
model Block {
    input x: f32[N, 4, 6, 6]
    y = basic_block(x, 8, 2)
    output logits = global_avgpool(y) |> flatten |> dense(3)
}
train Block {
    input label: i64[N]
    minimize mean(cross_entropy(logits, label)) + 1e-3 * l2(weights)
    optimizer sgd(lr = 0.1, momentum = 0.9)
}
"""


def test_resnet_basic_block_with_batch_norm_matches_pytorch():
    m = almc.load(BLOCK)
    rng = np.random.default_rng(4)
    w = {k: (v + rng.standard_normal(v.shape) * 0.1).astype(np.float32) for k, v in m.initial_weights(0).items()}
    for k in w:
        if k.endswith("running_var"):
            w[k] = np.abs(w[k]) + 0.5
    x = rng.standard_normal((5, 4, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 5)
    out, _ = almc_step(m, {"x": x, "label": y}, w)
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=not k.endswith(("running_mean", "running_var")))
         for k, v in w.items()}
    bns = {}

    def conv_bn(h, conv, bn, stride, pad):
        h = F.conv2d(h, t[f"{conv}.weight"], stride=stride, padding=pad)
        rm, rv = t[f"{bn}.running_mean"].clone(), t[f"{bn}.running_var"].clone()
        h = F.batch_norm(h, rm, rv, t[f"{bn}.weight"], t[f"{bn}.bias"], training=True, momentum=0.1, eps=1e-5)
        bns[bn] = (rm, rv)
        return h

    xt = torch.tensor(x, dtype=torch.float64)
    h = F.relu(conv_bn(xt, "y/conv1.conv_bn.conv", "y/conv1.conv_bn.batchnorm", 2, 1))
    h = conv_bn(h, "y/conv2.conv", "y/conv2", 1, 1)
    s = conv_bn(xt, "y.shortcut.conv_bn.conv", "y.shortcut.conv_bn.batchnorm", 2, 0)
    h = F.relu(h + s).mean(dim=(2, 3))
    logits = F.linear(h, t["logits.weight"], t["logits.bias"])
    loss = F.cross_entropy(logits, torch.tensor(y)) + 1e-3 * sum(
        (v ** 2).sum() for k, v in t.items() if k.endswith("conv.weight") or k == "logits.weight")
    loss.backward()
    close(out["loss"], loss.item(), "loss")
    trainable = [k for k in w if not k.endswith(("running_mean", "running_var"))]
    for k in trainable:
        close(out[f"grad.{k}"], t[k].grad.numpy(), f"grad.{k}")
    for bn, (rm, rv) in bns.items():  # the running statistics, updated as PyTorch updates them
        close(out[f"next.{bn}.running_mean"], rm.numpy(), f"{bn}.running_mean")
        close(out[f"next.{bn}.running_var"], rv.numpy(), f"{bn}.running_var")
