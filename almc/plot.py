"""Plots of a training run and an evaluation, through matplotlib (the optional extra
`pip install 'almc[plot]'`): the curves of `almc train --metrics` (loss and accuracies per
epoch, training against validation) and the confusion matrix of `almc evaluate`.

Each function returns the matplotlib Figure; `save` writes it atomically in the format its
file name says (.png, .svg, .pdf).
"""
from __future__ import annotations

import io
from pathlib import Path

from .errors import FileError, UsageError

FORMATS = ("png", "svg", "pdf")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError("plotting needs matplotlib, an optional extra: pip install 'almc[plot]' "
                         "(or pip install matplotlib)") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_format(path) -> str:
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise UsageError(f"cannot tell the format of {path}: use .png, .svg or .pdf")
    return fmt


def require(path) -> None:
    """Before the work whose result is plotted: a format almc writes, and matplotlib there."""
    plot_format(path)
    _pyplot()


def check_metrics(metrics, source: str = "the metrics") -> list[dict]:
    """The per-epoch records of `almc train --metrics` output, or a FileError naming `source`."""
    epochs = metrics.get("epochs") if isinstance(metrics, dict) else None
    if not isinstance(epochs, list) or not all(isinstance(e, dict) and isinstance(e.get("epoch"), int)
                                               and isinstance(e.get("train_loss"), (int, float)) for e in epochs):
        raise FileError(source, "not the metrics of almc train (a JSON object whose \"epochs\" lists "
                                "{\"epoch\", \"train_loss\", ...} records; almc train --metrics writes one)")
    if not epochs:
        raise FileError(source, "holds no epoch to plot")
    return epochs


def curves(metrics: dict, source: str = "the metrics"):
    """Loss per epoch (left) and accuracy per epoch (right: training, validation, the final test
    accuracy as a dashed line); a regression has the loss alone."""
    epochs = check_metrics(metrics, source)
    plt = _pyplot()
    x = [e["epoch"] for e in epochs]
    accuracy = any(e.get("train_accuracy") is not None for e in epochs)
    fig, axes = plt.subplots(1, 2 if accuracy else 1, figsize=(10 if accuracy else 5.5, 4), squeeze=False)
    loss_ax = axes[0][0]
    loss_ax.plot(x, [e["train_loss"] for e in epochs], marker="o", label="train loss")
    loss_ax.set(xlabel="epoch", ylabel="loss", title=f"{metrics.get('model', 'model')}: loss")
    loss_ax.legend()
    if accuracy:
        ax = axes[0][1]
        ax.plot(x, [e.get("train_accuracy") for e in epochs], marker="o", label="train accuracy")
        if any(e.get("val_accuracy") is not None for e in epochs):
            ax.plot(x, [e.get("val_accuracy") for e in epochs], marker="s", label="validation accuracy")
        if metrics.get("test_accuracy") is not None:
            ax.axhline(metrics["test_accuracy"], linestyle="--", color="gray",
                       label=f"test accuracy {metrics['test_accuracy']:.4f}")
        ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
        ax.legend()
    from matplotlib.ticker import MaxNLocator

    for row in axes:
        for ax in row:
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    fig.tight_layout()
    return fig


def confusion(metrics: dict):
    """The confusion matrix of `almc evaluate` (rows: the true class, columns: the predicted one),
    each cell with its count."""
    plt = _pyplot()
    matrix, labels = metrics["confusion"], metrics["labels"]
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), [str(c) for c in labels])
    ax.set_yticks(range(len(labels)), [str(c) for c in labels])
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"{metrics['model']}, {metrics['split']} split: accuracy {metrics['accuracy']:.4f}")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:,}", ha="center", va="center", color="white" if v > top / 2 else "black")
    fig.tight_layout()
    return fig


def save(fig, path) -> Path:
    from .files import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format=plot_format(path), dpi=120)
    _pyplot().close(fig)
    return atomic_write(path, buf.getvalue())
