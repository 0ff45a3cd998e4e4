"""The pipelines, each written once as its sequence of passes (each pass a module of its own):

    check            load (parse + imports) → build (with the train section) → validate
    compile_inference   fold_layers → lower_split → verify         (the exported model)
    compile_evaluation  lower, weights as inputs                    (almc train's validation passes)
    compile_step        training_step → lower, weights as inputs → verify   (the training step)
    gradient_graphs     to_training → differentiate                  (almc check --grad, in numpy)

The Python API, `almc train`, `almc check --grad` and bench/ compile through these and
nothing else, so that what is benchmarked is what users run.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from .build import BudgetExceeded, build_model
from .errors import AlmError, Collector, Diagnostic
from .graph import Graph
from .parse import MAX_EXPR_DEPTH
from .shapes import Limits
from .source import load_program
from .validate import validate

# build evaluates an expression recursively, up to about 5 Python frames a level of nesting; parse
# refuses expressions deeper than MAX_EXPR_DEPTH, so this stack always suffices (Python 3.11 and
# later run Python-to-Python calls without growing the C stack)
RECURSION_LIMIT = 5 * MAX_EXPR_DEPTH + 10_000


def check(path=None, text=None, **options) -> tuple[Graph, list]:
    """Parse, build, validate and type a model. Returns (graph, warnings); raises AlmError."""
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(max(saved, RECURSION_LIMIT))
    try:
        return _check(path, text, **options)
    finally:
        sys.setrecursionlimit(saved)


def _check(path=None, text=None, *, model: str | None = None, params: dict | None = None,
           name: str = "<string>", allow_outside: bool = False, limits: Limits | None = None,
           base=None) -> tuple[Graph, list]:
    c = Collector()
    prog = load_program(c, path=path, text=text, name=name, allow_outside=allow_outside, base=base)
    c.check()
    models = prog.root.models
    shown = str(path) if path is not None else name
    if not models and not prog.root.blocks and not (c.sources.get(shown) or "").strip():
        raise AlmError(Diagnostic(f"{shown} is empty", _file_span(shown),
                                  "a model file declares: model Name { input ... output ... }"), c.sources)
    if not models:
        raise AlmError(Diagnostic(f"{shown} defines no model", _file_span(shown),
                                  "declare one: model Name { input x: f32[N, ...] ... output y = ... }"), c.sources)
    if model is None:
        if len(models) > 1:
            names = ", ".join(m.name for m in models)
            raise AlmError(Diagnostic(f"{shown} defines several models ({names}); choose one with --model",
                                      models[1].span), c.sources)
        chosen = models[0]
    else:
        chosen = next((m for m in models if m.name == model), None)
        if chosen is None:
            raise AlmError(Diagnostic(f"{shown} has no model '{model}' (it has {', '.join(m.name for m in models)})",
                                      _file_span(shown)), c.sources)
    graph, builder, frame = build_model(prog.blocks, chosen, c, params, limits)
    trains = [t for t in prog.root.trains if t.model == chosen.name]
    for t in prog.root.trains:
        if t.model not in {m.name for m in models}:
            c.error(f"train {t.model}: there is no model {t.model} in this file", t.span)
    if len(trains) > 1:
        c.error(f"model {chosen.name} has more than one training section", trains[1].span)
    if trains and not c.errors:
        from .objective import build_training

        try:
            graph.train = build_training(builder, frame, trains[0])
        except BudgetExceeded:
            c.check()
        graph.inputs = [i for i in graph.inputs if i not in graph.train.labels]
    c.check()
    graph = validate(graph, c)
    c.check()
    graph.sources = dict(c.sources)
    graph.files = tuple(prog.files)
    return graph, c.warnings


def _file_span(shown):
    from .errors import Span

    return Span(shown, 1, 1, 1, 1)


def compile_inference(graph: Graph, weights: dict, *, seed: int = 0, fold: bool = True, overwrite: bool = False,
                      check_runtime: bool = True):
    """(the inference model without its weights' data, [(name, array)] of its weights), verified.
    `fold` folds layers into the one before (batch norm into conv); `overwrite`: `weights` is the
    caller's to give away (freshly drawn), so folding may scale them in place."""
    from .fold import fold_layers
    from .lower import lower_split
    from .onnxfile import checkable

    if fold:
        graph, weights = fold_layers(graph, weights, overwrite=overwrite)
    skeleton, params = lower_split(graph, weights, seed)
    verify(checkable(skeleton, params), check_runtime)
    return skeleton, params


def compile_evaluation(graph: Graph, target: str = "portable"):
    """The inference model with its parameters as inputs: almc train's validation and test passes
    feed it the weights the step holds."""
    from .lower import lower

    return lower(graph, params_as_inputs=True, target=target)


@dataclass
class CompiledStep:
    proto: object  # onnx.ModelProto
    graph: Graph  # the step's graph
    signature: object  # step.StepSignature: its parameters, state and in-place updates


def compile_step(graph: Graph, *, gradients: bool = True, target: str = "portable", checked: bool = True) -> CompiledStep:
    """The training step (docs/training.md), verified unless `checked=False` (almc train runs
    what it has just built, as every test does). `gradients=False` leaves out the grad.P outputs
    (what almc train runs); `target` picks among equivalent formulations (ops/emit.TARGETS): the
    default runs in every ONNX runtime, "cpu" and "cuda" only in onnxruntime (almc train's)."""
    from .lower import lower
    from .step import training_step

    step, sig = training_step(graph, gradients)
    proto = lower(step, params_as_inputs=True, target=target)
    if checked:
        verify(proto)
    return CompiledStep(proto, step, sig)


def gradient_graphs(graph: Graph):
    """(the training form, its Mode, the graph with the gradients, {parameter: gradient node}, the
    trainable parameters): what `almc check --grad` runs in the numpy reference executor."""
    from .autodiff import differentiate
    from .graph import trainable_params
    from .step import to_training

    trainable = trainable_params(graph)
    g, mode = to_training(graph)
    dg, grads = differentiate(g, graph.train.loss, trainable)
    return g, mode, dg, grads, trainable


def verify(model, check_runtime: bool = True) -> None:
    """The full ONNX checker, then onnxruntime's op support."""
    import onnx

    from .lower import OPSET
    from .support import ensure_supported

    onnx.checker.check_model(model, full_check=True)
    if check_runtime:
        ensure_supported(model, OPSET)
