"""The pipeline, written once: check = validate ∘ build ∘ load (parse + imports);
compile = lower ∘ check. Each step is a pass in its own module."""
from __future__ import annotations

from .build import build_model
from .errors import AlmError, Collector, Diagnostic
from .graph import Graph
from .shapes import Limits
from .source import load_program
from .validate import validate


def check(path=None, text=None, *, model: str | None = None, params: dict | None = None,
          name: str = "<string>", allow_outside: bool = False, limits: Limits | None = None) -> tuple[Graph, list]:
    """Parse, build, validate and type a model. Returns (graph, warnings); raises AlmError."""
    c = Collector()
    prog = load_program(c, path=path, text=text, name=name, allow_outside=allow_outside)
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

        graph.train = build_training(builder, frame, trains[0])
        graph.inputs = [i for i in graph.inputs if i not in graph.train.labels]
    c.check()
    graph = validate(graph, c)
    c.check()
    graph.sources = dict(c.sources)
    return graph, c.warnings


def _file_span(shown):
    from .errors import Span

    return Span(shown, 1, 1, 1, 1)
