"""almc evaluate: a trained model on a split of its data: the objective, the accuracy, each
class's precision, recall and F1, and the confusion matrix.

The model runs as it is exported (inference mode: dropout off, batch norm on its running
statistics), with the training section's objective as a second output, so the loss is the one
`almc train` minimises, evaluated as PyTorch's `model.eval()` would; it is averaged over the
batches weighted by their sizes, as train_loss is. The data are prepared exactly as `almc train`
prepares them (the same split from the same seed, the same `classes`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from .errors import UsageError

SPLITS = ("test", "val", "train")


@dataclass
class EvalOptions:
    data: str | None = None
    split: str = "test"
    seed: int = 0  # the split's seed: the one training used
    device: str = "auto"
    threads: int | None = None
    batch: int = 256


def evaluate(model, opts: EvalOptions) -> dict:
    """Metrics of `model` (an api.Model, with its trained `.weights` or its initial ones)."""
    from .compiler import compile_evaluation
    from .runtime import session
    from .train import TrainOptions, _spec_with, prepare_data

    graph = model.graph
    spec = _spec_with(graph, TrainOptions())
    if opts.split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, got '{opts.split}'")
    ds, xs, ys = prepare_data(graph, spec, TrainOptions(data=opts.data, seed=opts.seed))
    k = {"train": 0, "val": 1, "test": 2}[opts.split]  # prepare_data's order
    x, y = xs[k], ys[k]
    if len(x) == 0:
        raise UsageError(f"the {opts.split} split of the data ({ds.describe()}) is empty")
    first = next(iter(graph.outputs))
    with_loss = replace(graph, inputs=[*graph.inputs, *spec.labels],
                        outputs={first: graph.outputs[first], "loss": spec.loss})
    sess = session(compile_evaluation(with_loss).SerializeToString(), opts.device, threads=opts.threads)
    weights = model.weights if model.weights is not None else model.initial_weights()
    names = {i.name for i in sess.get_inputs()}
    feeds = {k: v for k, v in weights.items() if k in names}
    x_name, y_name = graph.inputs[0], spec.labels[0]
    t0 = time.perf_counter()
    loss_sum, scores = 0.0, []
    for start in range(0, len(x), opts.batch):
        feeds[x_name] = np.ascontiguousarray(x[start:start + opts.batch])
        feeds[y_name] = np.ascontiguousarray(y[start:start + opts.batch])
        out, loss = sess.run([first, "loss"], feeds)
        loss_sum += float(loss) * len(feeds[x_name])
        scores.append(out)
    metrics = {"model": graph.name, "data": ds.describe(), "split": opts.split, "examples": len(x),
               "provider": sess.get_providers()[0], "loss": loss_sum / len(x)}
    if np.issubdtype(y.dtype, np.integer):
        metrics.update(classification(np.concatenate(scores), y, spec.classes))
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


def predicted_classes(scores: np.ndarray) -> np.ndarray:
    """The class of each row: the largest score of [N, C] outputs, the sign of [N] or [N, 1] ones
    (a binary model's single logit or margin), as almc train counts its accuracy."""
    if scores.ndim == 2 and scores.shape[1] > 1:
        return scores.argmax(axis=1)
    return (scores.reshape(len(scores), -1)[:, 0] > 0).astype(np.int64)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """[N, C] class probabilities: the softmax of [N, C] scores (C > 1); for one score per example
    (a logit or a margin), the sigmoid as the probability of the second class."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim == 2 and scores.shape[1] > 1:
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    p = 1.0 / (1.0 + np.exp(-scores.reshape(len(scores), -1)[:, 0]))
    return np.stack([1.0 - p, p], axis=1)


def top_classes(scores: np.ndarray, k: int, labels=None) -> list[list[tuple[int, float]]]:
    """Each example's k most probable classes as (label, probability), the most probable first."""
    probs = probabilities(scores)
    labels = list(labels) if labels and len(labels) == probs.shape[1] else list(range(probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(labels[c], float(row[c])) for c in idx] for row, idx in zip(probs, order)]


def classification(scores: np.ndarray, y: np.ndarray, labels=None) -> dict:
    """Accuracy, per-class precision / recall / F1 / support and the confusion matrix (rows: the
    true class, columns: the predicted one). A class never predicted has precision 0, as
    scikit-learn's zero_division=0. `labels`: the data's label of each class (the training
    section's `classes 3, 8` numbers them 0, 1)."""
    pred = predicted_classes(scores)
    classes = max(int(scores.shape[1]) if scores.ndim == 2 and scores.shape[1] > 1 else 2,
                  int(y.max()) + 1, int(pred.max()) + 1)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (y.astype(np.int64), pred), 1)
    tp = np.diag(confusion)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(classes), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(classes), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(classes), where=precision + recall > 0)
    labels = list(labels) if labels and len(labels) == classes else list(range(classes))
    per_class = [{"class": labels[c], "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                  "support": int(actual[c])} for c in range(classes)]
    present = actual > 0
    return {"accuracy": float(tp.sum() / len(y)), "labels": labels, "per_class": per_class,
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "confusion": confusion.tolist()}


def report(m: dict) -> str:
    """The metrics as text: a summary line, the per-class table, the confusion matrix."""
    lines = [f"{m['model']} on the {m['split']} split of {m['data']}: {m['examples']:,} examples, "
             f"{m['provider']}", f"loss      {m['loss']:.4f}"]
    if "accuracy" not in m:
        return "\n".join(lines)
    lines += [f"accuracy  {m['accuracy']:.4f}", f"macro F1  {m['macro_f1']:.4f}", "",
              "class  precision  recall      F1  support"]
    for r in m["per_class"]:
        lines.append(f"{r['class']:>5}  {r['precision']:>9.4f}  {r['recall']:>6.4f}  {r['f1']:>6.4f}  {r['support']:>7,}")
    confusion = m["confusion"]
    width = max(5, len(f"{max(max(row) for row in confusion):,}") + 1)
    lines += ["", "confusion (rows: true class, columns: predicted)",
              " " * 6 + "".join(f"{c:>{width}}" for c in m["labels"])]
    for c, row in zip(m["labels"], confusion):
        lines.append(f"{c:>5} " + "".join(f"{v:>{width},}" for v in row))
    return "\n".join(lines)
