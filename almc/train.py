"""Training: run the ONNX training step in onnxruntime, epoch after epoch.

The step is compiled by compiler.compile_step and run by runner.StepRunner
(parameters and optimiser state as device-resident OrtValues that each step
updates in place; only the batch goes in and the loss comes out), as bench/
runs it. Each epoch ends with a validation pass (the inference graph,
weights as inputs) and an atomic checkpoint; the run ends with the test
accuracy and, if asked, the trained inference model.

Reproducibility: the initial weights come from the seed, and epoch k shuffles
with a generator seeded by (seed, k), so a run resumed from a checkpoint reaches
the same weights as one that was never interrupted.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .checkpoint import CHECKPOINT, load_checkpoint, match_weights, save_checkpoint
from .errors import AlmError, Diagnostic, UsageError
from .files import atomic_write, check_output, check_output_folder
from .graph import Graph


@dataclass
class TrainOptions:
    data: str | None = None
    epochs: int | None = None
    batch: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    metrics: str | None = None
    checkpoint: str | None = None
    resume: bool = False
    out: str | None = None
    progress: bool = True
    init: dict | None = None  # starting weights (fine-tuning), by parameter name
    threads: int | None = None  # onnxruntime's intra-op threads (default: every usable CPU, runtime.usable_cpus)
    plot: str | None = None  # where to plot the curves after training (.png, .svg, .pdf)
    tensorboard: str | None = None  # a folder for TensorBoard event files, written every epoch


class TrainingStopped(Exception):
    """The loss became NaN or infinite (exit 1): names the step; the last good checkpoint stays."""


def _spec_with(graph: Graph, opts: TrainOptions):
    spec = graph.train
    if spec is None:
        raise AlmError(Diagnostic(f"model {graph.name} has no training section", graph.span,
                                  f"add one: train {graph.name} {{ input label: i64[N]  minimize ... }}"), graph.sources)
    from .objective import count_error, rate_error

    changes = {}
    for name in ("epochs", "batch", "seed"):  # the training section's own bounds and messages
        v = getattr(opts, name)
        if v is not None:
            problem = count_error(name, v)
            if problem:
                raise UsageError(f"--{name}: {problem}")
            if name != "seed":
                changes[name] = v
    if opts.lr is not None:
        problem = rate_error(spec.optimizer, "lr", opts.lr)
        if problem:
            raise UsageError(f"--lr: {problem}")
        changes["opt"] = {**spec.opt, "lr": opts.lr}
    return replace(spec, **changes)


def prepare_data(graph: Graph, spec, opts: TrainOptions):
    from . import data as datasets

    if len(graph.inputs) != 1 or len(spec.labels) != 1:
        raise UsageError(f"almc train feeds one data input and one label input; {graph.name} has inputs "
                         f"{', '.join(graph.inputs)} and labels {', '.join(spec.labels) or 'none'}")
    ds = datasets.load(opts.data or spec.data, seed=opts.seed)
    if spec.classes:
        absent = [c for c in spec.classes if not (np.any(ds.y_train == c) or np.any(ds.y_val == c)
                                                  or np.any(ds.y_test == c))]
        if absent:
            raise UsageError(f"classes {', '.join(map(str, spec.classes))}: the data ({ds.describe()}) have no "
                             f"example labelled {absent[0]}")
        ds = _keep_classes(ds, spec.classes)
    x_type = graph.node(graph.inputs[0]).type
    y_type = graph.node(spec.labels[0]).type
    if x_type.dtype.startswith("i"):
        raise UsageError(f"input '{graph.inputs[0]}' takes {x_type} (integer ids), but almc train feeds float "
                         f"examples ({ds.describe()})")
    _check_label_range(graph, spec, ds, y_type)
    try:
        fit = [datasets.fit_input(x, x_type.dims[1:]) for x in (ds.x_train, ds.x_val, ds.x_test)]
    except ValueError as e:
        raise UsageError(f"the data do not fit input '{graph.inputs[0]}' ({x_type}): {e}") from None
    ys = [y.astype(y_type.numpy_dtype) for y in (ds.y_train, ds.y_val, ds.y_test)]
    return ds, fit, ys


def check_outputs(graph: Graph, opts: TrainOptions) -> None:
    """Every file the run will write is checked before it starts: not an input, a writable place."""
    inputs = [*graph.files, opts.data if opts.data and Path(opts.data).exists() else None]
    for flag, path in (("--metrics", opts.metrics), ("--out", opts.out), ("--plot", opts.plot)):
        if path:
            check_output(path, inputs, flag)
    if opts.plot:  # matplotlib and the format, before a run that could not be plotted at its end
        from .plot import require

        require(opts.plot)
    if opts.checkpoint:
        check_output_folder(opts.checkpoint, "--checkpoint")
    if opts.tensorboard:
        check_output_folder(opts.tensorboard, "--tensorboard")
        _event_writer_class()


def _event_writer_class():
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise UsageError("--tensorboard writes through tensorboardX, an optional extra: pip install "
                         "'almc[tensorboard]' (or pip install tensorboardX)") from None
    return SummaryWriter


def _scalars(writer, step: int, values: dict) -> None:
    if writer is not None:
        for tag, v in values.items():
            if v is not None:
                writer.add_scalar(tag, v, step)


def _check_label_range(graph: Graph, spec, ds, y_type) -> None:
    """Integer labels must index the classes of the model's first output [N, C], or training would
    end in onnxruntime's Gather error on the first batch that holds one."""
    out = graph.node(next(iter(graph.outputs.values()))).type
    if not y_type.dtype.startswith("i") or out.rank != 2 or not isinstance(out.dims[1], int) or out.dims[1] < 2:
        return
    top = max(int(y.max()) for y in (ds.y_train, ds.y_val, ds.y_test) if len(y))
    low = min(int(y.min()) for y in (ds.y_train, ds.y_val, ds.y_test) if len(y))
    first = next(iter(graph.outputs))
    if top >= out.dims[1] or low < 0:
        raise UsageError(f"the data ({ds.describe()}) have labels {low} to {top}, but output '{first}' ({out}) "
                         f"has {out.dims[1]} classes: give the model {top + 1} outputs, or keep some classes "
                         "with `classes 0, 1, ...` in the training section")


def _keep_classes(ds, classes):
    def keep(x, y):
        mask = np.isin(y, classes)
        relabel = {c: i for i, c in enumerate(classes)}
        return x[mask], np.array([relabel[int(v)] for v in y[mask]], dtype=np.int64)
    parts = [keep(ds.x_train, ds.y_train), keep(ds.x_val, ds.y_val), keep(ds.x_test, ds.y_test)]
    return replace(ds, x_train=parts[0][0], y_train=parts[0][1], x_val=parts[1][0], y_val=parts[1][1],
                   x_test=parts[2][0], y_test=parts[2][1], classes=len(classes))


def predictions_correct(scores: np.ndarray, y: np.ndarray) -> int:
    """How many predictions are right: argmax over classes, or score > 0 for one output."""
    from .evaluate import predicted_classes

    if not np.issubdtype(y.dtype, np.integer):
        y = y.astype(np.int64)
    return int((predicted_classes(scores) == y).sum())


def train(model, opts: TrainOptions) -> dict:
    """Train `model` (an api.Model) in place; returns the metrics."""
    from .compiler import compile_evaluation, compile_step
    from .data import batches
    from .init import initialize
    from .runner import StepRunner
    from .runtime import providers_for, session, usable_cpus

    graph = model.graph
    spec = _spec_with(graph, opts)
    check_outputs(graph, opts)  # before any work: a bad output path must not cost the run
    graph_t = replace(graph, train=spec)
    target = "cuda" if providers_for(opts.device)[0] == "CUDAExecutionProvider" else "cpu"
    compiled = compile_step(graph_t, gradients=False, target=target, checked=False)
    sig = compiled.signature
    ds, (x_tr, x_va, x_te), (y_tr, y_va, y_te) = prepare_data(graph, spec, opts)
    model.data_record = ds.image_record()
    if len(x_tr) == 0:
        raise UsageError("the training split is empty")
    classify = np.issubdtype(y_tr.dtype, np.integer)  # float targets: a regression, no accuracy

    # A fixed thread count, not the load-aware inference default: the step's float sums are split
    # by thread, so the same seed gives the same weights only on the same number of threads.
    threads = opts.threads or usable_cpus()
    step_sess = session(compiled.proto.SerializeToString(), opts.device, threads=threads, memory_pattern=False)
    eval_sess = session(compile_evaluation(graph, target).SerializeToString(), opts.device, threads=threads)
    provider = step_sess.get_providers()[0]
    dev = "cuda" if provider == "CUDAExecutionProvider" else "cpu"
    first_out = next(iter(graph.outputs))

    weights = initialize(graph, opts.seed)
    if opts.init:
        weights, _ = match_weights(weights, opts.init)
    state = {name: np.zeros(shape, np.float32) for name, shape in sig.state.items()}
    start_epoch, step, history = 0, 0, []
    ckpt_dir = Path(opts.checkpoint) if opts.checkpoint else None
    if opts.resume:
        if ckpt_dir is None:
            raise UsageError("--resume needs --checkpoint DIR")
        weights, state, start_epoch, step, history = load_checkpoint(ckpt_dir / CHECKPOINT, graph, weights, state)
    runner = StepRunner(step_sess, compiled, weights, state, dev, opts.seed)
    del weights, state

    x_name, y_name = graph.inputs[0], spec.labels[0]
    steps_per_epoch = math.ceil(len(x_tr) / spec.batch)
    events = _event_writer_class()(opts.tensorboard) if opts.tensorboard else None
    t_start = time.perf_counter()
    examples = 0
    step_times: list[float] = []
    try:
        for epoch in range(start_epoch, spec.epochs):
            t0 = time.perf_counter()
            rng = np.random.default_rng([opts.seed, epoch])
            losses, correct, seen = [], 0, 0
            bar = _progress(opts.progress, steps_per_epoch, epoch, spec.epochs)
            for xb, yb in batches(x_tr, y_tr, spec.batch, rng):
                outs = runner.run({x_name: xb, y_name: yb}, (step + 1) / steps_per_epoch, step)
                step_times.append(runner.run_s)
                loss = float(outs["loss"].numpy())
                if not math.isfinite(loss):
                    where = f"step {step + 1} (epoch {epoch + 1})"
                    kept = f"; the last good checkpoint is {ckpt_dir / CHECKPOINT}" if ckpt_dir and epoch > start_epoch else ""
                    raise TrainingStopped(f"the loss became {loss} at {where}; training stopped{kept}. "
                                          "Lower the learning rate, or check the data")
                losses.append(loss * len(xb))
                if classify:
                    correct += predictions_correct(outs[f"output.{first_out}"].numpy(), yb)
                seen += len(xb)
                step += 1
                examples += len(xb)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{sum(losses) / seen:.4f}", **({"acc": f"{correct / seen:.4f}"} if classify else {}),
                                    ex_s=f"{seen / (time.perf_counter() - t0):,.0f}")
            current = runner.weights()
            val_acc = evaluate(eval_sess, current, x_name, x_va, y_va, first_out) if classify and len(x_va) else None
            record = {"epoch": epoch + 1, "train_loss": sum(losses) / seen,
                      "train_accuracy": correct / seen if classify else None,
                      "val_accuracy": val_acc, "seconds": time.perf_counter() - t0}
            history.append(record)
            _scalars(events, epoch + 1, {"loss/train": record["train_loss"], "accuracy/train": record["train_accuracy"],
                                         "accuracy/validation": val_acc})
            if events is not None:
                events.flush()
            if bar is not None:
                bar.set_postfix(loss=f"{record['train_loss']:.4f}",
                                **({"acc": f"{record['train_accuracy']:.4f}"} if classify else {}),
                                val_acc=f"{val_acc:.4f}" if val_acc is not None else "-")
                bar.close()
            if ckpt_dir is not None:
                save_checkpoint(ckpt_dir / CHECKPOINT, graph, current, runner.state(), epoch + 1, step, history,
                                model.data_record)
    except KeyboardInterrupt:
        if events is not None:
            events.close()
        msg = "interrupted; nothing half-written was left"
        if ckpt_dir is not None and (ckpt_dir / CHECKPOINT).exists():
            msg += f". Resume from the last epoch with: --checkpoint {ckpt_dir} --resume"
        raise TrainingStopped(msg) from None
    except BaseException:  # a NaN loss, a full disk: the events written so far stay readable
        if events is not None:
            events.close()
        raise
    wall = time.perf_counter() - t_start
    final = runner.weights()
    model.weights = final
    test_acc = evaluate(eval_sess, final, x_name, x_te, y_te, first_out) if classify and len(x_te) else None
    if events is not None:
        _scalars(events, len(history), {"accuracy/test": test_acc})
        events.close()
    metrics = {"model": graph.name, "data": ds.describe(), "provider": provider, "optimizer": spec.optimizer,
               "batch": spec.batch, "epochs": history, "test_accuracy": test_acc, "wall_time": wall,
               "examples_per_second": examples / wall if wall > 0 else None,
               "median_step_seconds": float(np.median(step_times)) if step_times else None, "seed": opts.seed,
               "resumed_after_epoch": start_epoch if opts.resume else None}
    if opts.metrics:
        atomic_write(opts.metrics, (json.dumps(metrics, indent=2) + "\n").encode())
    if opts.out:
        model.export(opts.out)
    if opts.plot:
        from .plot import curves, save

        save(curves(metrics), opts.plot)
    return metrics


def evaluate(sess, weights, x_name, x, y, out_name, batch: int = 256) -> float:
    names = {i.name for i in sess.get_inputs()}
    feeds = {k: v for k, v in weights.items() if k in names}
    correct = 0
    for start in range(0, len(x), batch):
        feeds[x_name] = np.ascontiguousarray(x[start:start + batch])
        scores = sess.run([out_name], feeds)[0]
        correct += predictions_correct(scores, y[start:start + batch])
    return correct / len(x)


def _progress(enabled, total, epoch, epochs):
    if not enabled:
        return None
    from tqdm.auto import tqdm  # a notebook's widget inside Jupyter (where ipywidgets is), else the terminal's

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="step", file=sys.stderr, leave=True,
                dynamic_ncols=True)
