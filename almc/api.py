"""The Python API, mirroring the command line:

    >>> import almc
    >>> m = almc.load("models/lenet.alm")
    >>> m.summary().total_params
    61706
    >>> proto = m.compile(seed=0)          # an onnx.ModelProto
    >>> m.export("lenet.onnx")             # doctest: +SKIP
    >>> m.run(np.zeros((2, 1, 32, 32), np.float32))["logits"].shape   # doctest: +SKIP
    (2, 10)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .compiler import check, compile_inference, compile_step
from .errors import FileError, UsageError
from .files import atomic_write
from .graph import Graph
from .shapes import Limits
from .summary import Summary, summarize


class Model:
    def __init__(self, graph: Graph, warnings=(), seed: int = 0):
        self.graph = graph
        self.warnings = list(warnings)
        self.seed = seed
        self.weights: dict[str, np.ndarray] | None = None  # set by training or load_weights
        self.data_record: dict | None = None  # how training prepared its images (data.Dataset.image_record)
        self._session = None

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def inputs(self) -> dict:
        return {i: self.graph.node(i).type for i in self.graph.inputs}

    @property
    def outputs(self) -> dict:
        return {o: self.graph.node(n).type for o, n in self.graph.outputs.items()}

    def summary(self) -> Summary:
        return summarize(self.graph)

    def _repr_html_(self) -> str:
        """In a notebook, a model shows its summary table."""
        return self.summary()._repr_html_()

    def _repr_svg_(self) -> str | None:
        """In a notebook, its graph (None without Graphviz: the notebook shows the table alone)."""
        import shutil

        from .draw import render

        return render(self.graph, "svg", depth=1).decode() if shutil.which("dot") else None

    def initial_weights(self, seed: int | None = None) -> dict[str, np.ndarray]:
        from .init import initialize

        return initialize(self.graph, self.seed if seed is None else seed)

    def compile(self, seed: int | None = None, check_runtime: bool = True, fold: bool = True):
        """Lower to an onnx.ModelProto (trained weights if there are any, else initialised from the seed).
        `fold` folds each batch norm into the conv or dense layer before it (inference computes the same)."""
        from .onnxfile import attach

        return attach(*self._lowered(seed, check_runtime, fold))

    def export(self, path: str | os.PathLike, seed: int | None = None, fold: bool = True) -> Path:
        return self._export(path, seed, fold)[0]

    def _export(self, path, seed, fold):
        """(path, the model without its weights' data): the weights go to the file from their arrays."""
        from .onnxfile import chunks

        skeleton, params = self._lowered(seed, True, fold)
        return atomic_write(path, chunks(skeleton, params)), skeleton

    def _lowered(self, seed, check_runtime, fold):
        """(model without the parameters' data, [(name, array)]) of the inference model, checked."""
        seed = self.seed if seed is None else seed
        fresh = self.weights is None
        weights = self.initial_weights(seed) if fresh else self.weights
        skeleton, params = compile_inference(self.graph, weights, seed=seed, fold=fold, overwrite=fresh,
                                             check_runtime=check_runtime)
        if self.data_record is not None:  # almc predict reads image files as training read its data
            skeleton.metadata_props.add(key="almc.data", value=json.dumps(self.data_record))
        return skeleton, params

    def train(self, data: str | None = None, **options) -> dict:
        """Train with the model's training section; returns the metrics. Options are those of
        `almc train` (epochs, batch, lr, seed, device, metrics, checkpoint, resume, out, progress).
        Afterwards `.weights` holds the trained weights, which `.compile()` and `.export()` use."""
        from .train import TrainOptions, train

        options.setdefault("progress", False)
        metrics = train(self, TrainOptions(data=data, **options))
        self._session = None
        return metrics

    def evaluate(self, data: str | None = None, **options) -> dict:
        """The metrics of `almc evaluate` on a split of the data (options: split, seed, device,
        threads): the objective, accuracy, per-class precision / recall / F1, confusion matrix."""
        from .evaluate import EvalOptions, evaluate

        return evaluate(self, EvalOptions(data=data, **options))

    def load_weights(self, path: str | os.PathLike) -> None:
        """Take the weights of an almc checkpoint (checked against this model's parameters)."""
        from .checkpoint import check_weights, read_checkpoint

        weights, _, meta = read_checkpoint(path)
        check_weights(path, self.graph, weights, self.initial_weights())
        self.weights = {k: v.astype(np.float32) for k, v in weights.items()}
        self.data_record = meta.get("data") if isinstance(meta.get("data"), dict) else None
        self._session = None

    def compile_training_step(self, gradients: bool = True, target: str = "portable"):
        """The training step as an onnx.ModelProto (see docs/training.md); `gradients=False`
        leaves out the grad.P outputs (what `almc train` runs). `target`: "portable" runs in every
        ONNX runtime; "cpu" and "cuda" are tuned for onnxruntime's providers and run only there."""
        return compile_step(self.graph, gradients=gradients, target=target).proto

    def run(self, inputs, device: str = "auto", threads: int | None = None) -> dict[str, np.ndarray]:
        """Run in onnxruntime. `inputs`: one array (single-input models) or a dict by input name.
        `threads`: onnxruntime's intra-op threads (default: runtime.default_threads)."""
        from .runtime import session

        feeds = self._feeds(inputs)
        if self._session is None:
            self._session = session(self.compile(check_runtime=False).SerializeToString(), device, threads=threads)
        names = [o.name for o in self._session.get_outputs()]
        return dict(zip(names, self._session.run(names, feeds)))

    @property
    def provider(self) -> str | None:
        return self._session.get_providers()[0] if self._session else None

    def _feeds(self, inputs) -> dict[str, np.ndarray]:
        if not isinstance(inputs, dict):
            if len(self.graph.inputs) != 1:
                raise UsageError(f"{self.name} has inputs {', '.join(self.graph.inputs)}: pass a dict")
            inputs = {self.graph.inputs[0]: inputs}
        feeds = {}
        for name, t in self.inputs.items():
            if name not in inputs:
                raise UsageError(f"missing input '{name}' ({t})")
            feeds[name] = check_input(name, np.asarray(inputs[name]), t)
        extra = set(inputs) - set(self.inputs)
        if extra:
            raise UsageError(f"{self.name} has no input '{sorted(extra)[0]}'")
        return feeds


def check_input(name: str, x: np.ndarray, t, path: str | None = None) -> np.ndarray:
    """Check an array against a declared input type; casts between float widths and int widths.
    A mismatch is a UsageError, or a FileError naming `path` (exit 1) for an array read from a file."""
    def refuse(got: str):
        message = f"input '{name}' must be {t}, got {got}"
        raise FileError(path, message) if path else UsageError(message)

    want = np.dtype(t.numpy_dtype)
    if x.dtype != want:
        if x.dtype.kind == want.kind or (x.dtype.kind in "iu" and want.kind in "iu"):
            x = x.astype(want)
        else:
            refuse(f"an array of {x.dtype}")
    if x.ndim != t.rank or any(isinstance(d, int) and d != s for d, s in zip(t.dims, x.shape)):
        refuse(f"shape [{', '.join(map(str, x.shape))}]")
    return x


def load(source, *, model: str | None = None, seed: int = 0, allow_outside: bool = False,
         limits: Limits | None = None, **params) -> Model:
    """A Model from a .alm path or from source text; keyword arguments set model parameters."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and source.endswith(".alm") and "\n" not in source):
        graph, warnings = check(path=source, model=model, params=params, allow_outside=allow_outside, limits=limits)
    else:
        graph, warnings = check(text=source, model=model, params=params, allow_outside=allow_outside, limits=limits)
    return Model(graph, warnings, seed)
