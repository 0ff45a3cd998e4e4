"""The reference for `almc train models/lenet.alm`: the same run in PyTorch.

Same initial weights (almc's, seed 0), same data split and batches (almc.data,
shuffled per epoch with the same generator), same objective (cross-entropy
with label smoothing 0.1 + 5e-4 * sum of squared weights), same optimiser (SGD,
momentum 0.9) and the same cosine schedule with one warm-up epoch, evaluated at
the same fractional epochs. Prints both runs' test accuracy and median step time.

    pip install torch==2.13.0      # a test/benchmark extra, never a runtime dependency
    python bench/lenet_torch.py [--threads 2]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import almc
from almc import data as datasets

ROOT = Path(__file__).resolve().parent.parent


def lr_at(epoch: float, lr: float, epochs: int, warmup: float) -> float:
    """almc's cosine schedule at a fractional epoch: its Python reference, almc/ops/schedule.py."""
    from almc.ops.schedule import learning_rate

    return learning_rate(epoch, kind="cosine", lr=lr, epochs=epochs, warmup=warmup)


def forward(t, x):
    h = F.max_pool2d(F.relu(F.conv2d(x, t["c1.conv.weight"], t["c1.conv.bias"])), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, t["c3.conv.weight"], t["c3.conv.bias"])), 2).flatten(1)
    h = F.relu(F.linear(h, t["c5.dense.weight"], t["c5.dense.bias"]))
    h = F.relu(F.linear(h, t["f6.dense.weight"], t["f6.dense.bias"]))
    return F.linear(h, t["logits.weight"], t["logits.bias"])


def torch_run(seed: int = 0):
    m = almc.load(ROOT / "models" / "lenet.alm")
    spec = m.graph.train
    ds = datasets.load(None, seed=seed)
    dims = m.inputs["image"].dims[1:]
    x_tr, x_te = datasets.fit_input(ds.x_train, dims), datasets.fit_input(ds.x_test, dims)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in m.initial_weights(seed).items()}
    opt = torch.optim.SGD(list(t.values()), lr=spec.opt["lr"], momentum=spec.opt["momentum"])
    steps_per_epoch = math.ceil(len(x_tr) / spec.batch)
    step, times = 0, []
    start = time.perf_counter()
    for epoch in range(spec.epochs):
        rng = np.random.default_rng([seed, epoch])
        for xb, yb in datasets.batches(x_tr, ds.y_train, spec.batch, rng):
            for group in opt.param_groups:
                group["lr"] = lr_at((step + 1) / steps_per_epoch, spec.opt["lr"], spec.epochs, spec.sched["warmup"])
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = F.cross_entropy(forward(t, torch.from_numpy(xb)), torch.from_numpy(yb), label_smoothing=0.1)
            loss = loss + 5e-4 * sum((v ** 2).sum() for k, v in t.items() if k.endswith("weight"))
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            step += 1
    wall = time.perf_counter() - start
    with torch.no_grad():
        acc = (forward(t, torch.from_numpy(x_te)).argmax(1).numpy() == ds.y_test).mean()
    return float(acc), statistics.median(times), wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = almc.load(ROOT / "models" / "lenet.alm")
    metrics = m.train(device="cpu")
    acc, step, wall = torch_run()
    print("| run | test accuracy | median step | wall time |")
    print("|---|---:|---:|---:|")
    print(f"| almc (onnxruntime, {metrics['provider']}) | {metrics['test_accuracy']:.4f} | "
          f"{metrics['median_step_seconds'] * 1e3:.2f} ms | {metrics['wall_time']:.2f} s |")
    print(f"| PyTorch {torch.__version__} eager, {args.threads} threads | {acc:.4f} | {step * 1e3:.2f} ms | {wall:.2f} s |")


if __name__ == "__main__":
    main()
