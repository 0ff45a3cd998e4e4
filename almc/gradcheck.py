"""`almc check --grad`: every parameter's symbolic gradient against central finite
differences, on a small random batch, in float64 through the numpy reference
executor (independent of onnxruntime)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .compiler import gradient_graphs
from .init import initialize
from .reference import execute


@dataclass
class GradReport:
    param: str
    shape: tuple
    checked: int
    worst_rel_error: float


def central_differences(loss_graph, weights: dict, feeds: dict, array: np.ndarray, idx, eps: float) -> np.ndarray:
    """(loss(x + eps) - loss(x - eps)) / (2 eps) for each flat index in `idx` of `array`, one of the
    arrays in `weights` or `feeds`, nudged in place and restored; the loss is `loss_graph`'s
    output "loss" run by the numpy reference executor."""
    flat = array.reshape(-1)  # a view: nudging it nudges the array the executor reads
    out = []
    for j in idx:
        old = flat[j]
        flat[j] = old + eps
        up = float(execute(loss_graph, weights, feeds)["loss"])
        flat[j] = old - eps
        down = float(execute(loss_graph, weights, feeds)["loss"])
        flat[j] = old
        out.append((up - down) / (2 * eps))
    return np.array(out)


def random_batch(graph, labels, batch: int, rng) -> dict[str, np.ndarray]:
    feeds = {}
    classes = 2
    for out in graph.outputs.values():
        t = graph.node(out).type
        if t.rank == 2 and isinstance(t.dims[1], int) and t.dims[1] > 1:
            classes = t.dims[1]
            break
    for name in list(graph.inputs) + list(labels):
        t = graph.node(name).type
        dims = [batch if i == 0 else (d if isinstance(d, int) else 3) for i, d in enumerate(t.dims)]
        if t.dtype.startswith("i"):
            feeds[name] = rng.integers(0, classes, dims).astype(t.numpy_dtype)
        elif name in labels:
            feeds[name] = rng.integers(0, 2, dims).astype(np.float64)
        else:
            feeds[name] = rng.standard_normal(dims)
    return feeds


def gradient_check(graph, batch: int = 2, seed: int = 0, samples: int = 5, eps: float = 1e-6) -> list[GradReport]:
    spec = graph.train
    g, mode, dg, grads, trainable = gradient_graphs(graph)
    loss_graph = g.copy()
    loss_graph.outputs = {"loss": g.train.loss}
    dg.outputs = {"loss": g.train.loss, **grads}
    rng = np.random.default_rng(seed)
    feeds = random_batch(graph, spec.labels, batch, rng)
    for name, form in mode.random_inputs.items():
        feeds[name] = form.draw(rng, [batch, *g.node(name).type.dims[1:]])
    weights = {k: v.astype(np.float64) for k, v in initialize(graph, seed).items()}
    got = execute(dg, weights, feeds)
    reports = []
    for name in trainable:
        size = weights[name].size
        idx = rng.choice(size, size=min(samples, size), replace=False)
        worst = 0.0
        for fd, sym in zip(central_differences(loss_graph, weights, feeds, weights[name], idx, eps),
                           got[name].reshape(-1)[idx]):
            worst = max(worst, abs(fd - sym) / max(abs(fd), abs(sym), 1e-4))
        reports.append(GradReport(name, tuple(weights[name].shape), len(idx), worst))
    return reports
