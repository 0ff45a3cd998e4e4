"""The training section: `train Model { ... }` -> a TrainSpec.

    train LeNet5 {
        input label: i64[N]
        minimize mean(cross_entropy(logits, label, smoothing = 0.1)) + 5e-4 * l2(weights)
        optimizer sgd(lr = 0.05, momentum = 0.9)
        schedule cosine(warmup = 1)
        batch 64
        epochs 10
        freeze c1, c3
        lr_scale c5, f6 = 0.1
    }

It is evaluated by the model's own builder, in a frame inside the model's, so
the objective reads the model's values by name (`logits`, `c5`). `weights` is
every trainable weight (not biases, not batch norm), `params` every trainable
parameter, and `biases` the biases: regularisers take them, `l2(weights)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import syntax as s
from .build import POISON, Builder, Frame, Tensor, describe
from .errors import did_you_mean
from .graph import Graph, Node, in_layers, param_specs
from .ops.reduce import PARAMETER
from .ops.registry import lookup, resolve_attrs
from .ops.schedule import DEFAULT_SCHEDULE, SCHEDULES
from .optimizers import OPTIMIZERS as OPTIMIZER_RECORDS
from .shapes import infer_node

OPTIMIZERS = {name: o.defaults for name, o in OPTIMIZER_RECORDS.items()}  # the settings each takes
# The counts a training section and almc train's flags set, with their bounds: one rule, one message.
COUNTS = {"batch": (1, 1 << 20), "epochs": (1, 1_000_000), "seed": (0, 2 ** 32 - 1)}


def count_error(name: str, v) -> str | None:
    """Why `v` cannot be the training section's `name` (batch, epochs, seed), or None."""
    lo, hi = COUNTS[name]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        return f"{name} must be an integer from {lo:,} to {hi:,}, got {describe(v)}"
    return None


def rate_error(optimizer: str, name: str, v) -> str | None:
    """Why `v` cannot be an optimiser's or schedule's number setting `name`, or None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"{optimizer}'s {name} expects a number, got {describe(v)}"
    if not math.isfinite(v):
        return f"{optimizer}'s {name} must be a finite number, got {v}"
    if v < 0:
        return f"{optimizer}'s {name} must not be negative, got {v}"
    return None


SETTINGS = ("minimize", "optimizer", "schedule", "batch", "epochs", "freeze", "lr_scale", "data", "seed", "classes")


@dataclass
class TrainSpec:
    model: str
    loss: str  # node id of the scalar objective
    labels: list[str] = field(default_factory=list)  # the section's inputs
    optimizer: str = "sgd"
    opt: dict = field(default_factory=lambda: dict(OPTIMIZERS["sgd"]))
    schedule: str = DEFAULT_SCHEDULE
    sched: dict = field(default_factory=lambda: dict(SCHEDULES[DEFAULT_SCHEDULE]))
    batch: int = 64
    epochs: int = 10
    frozen: tuple[str, ...] = ()  # layer names (or block prefixes) whose parameters are frozen
    lr_scale: dict = field(default_factory=dict)  # layer name or prefix -> learning-rate multiplier
    data: str | None = None
    seed: int | None = None
    classes: tuple[int, ...] | None = None  # keep these labels of the data, renumbered 0, 1, ...


def build_training(b: Builder, model_frame: Frame, train: s.TrainDef) -> TrainSpec | None:
    g = b.graph
    frame = Frame(prefix="", parent=model_frame, in_model=True)
    spec = TrainSpec(model=train.model, loss="")
    layers = sorted({n.layer for n in g.nodes()})
    settings = [st for st in train.body if isinstance(st, s.Setting)]
    for st in settings:  # freezing first: the parameter sets below leave frozen layers out
        if st.name not in SETTINGS:
            b.err(f"unknown training setting '{st.name}'", st.name_span,
                  did_you_mean(st.name, SETTINGS, f"settings: {', '.join(SETTINGS)}"))
        elif st.name in ("freeze", "lr_scale"):
            names = _layer_names(b, st, layers)
            if st.name == "freeze":
                if st.value is not None:
                    b.err("freeze takes layer names: freeze c1, c3", st.value.span)
                spec.frozen += tuple(names)
            else:
                scale = b.eval(st.value, frame) if st.value is not None else None
                if st.value is None or isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
                    b.err("lr_scale gives layers a learning-rate multiplier: lr_scale c5, f6 = 0.1",
                          (st.value or st).span)
                else:
                    spec.lr_scale.update({n: float(scale) for n in names})
    frame.vars["weights"] = lambda: _param_set(b, spec, "weights")
    frame.vars["params"] = lambda: _param_set(b, spec, "params")
    frame.vars["biases"] = lambda: _param_set(b, spec, "biases")
    for name in ("weights", "params", "biases"):
        frame.defined_at[name] = train.span
    b.exec_body(tuple(st for st in train.body if not isinstance(st, s.Setting)), frame)
    for st in train.body:
        if isinstance(st, s.Input):
            v = frame.vars.get(st.name)
            if isinstance(v, Tensor):
                spec.labels.append(v.id)
    seen = set()
    for st in settings:
        if st.name in seen and st.name not in ("freeze", "lr_scale"):
            b.err(f"'{st.name}' is set twice", st.name_span)
            continue
        seen.add(st.name)
        if st.name == "minimize":
            spec.loss = _objective(b, st, frame) or ""
        elif st.name in ("optimizer", "schedule"):
            _choice(b, st, frame, spec)
        elif st.name in ("batch", "epochs", "seed"):
            v = _one(b, st, frame)
            if v is POISON:
                continue
            problem = count_error(st.name, v)
            if problem:
                b.err(problem, st.values[0].span)
            else:
                setattr(spec, st.name, v)
        elif st.name == "classes":
            vals = [b.eval(e, frame) for e in st.values]
            if any(v is POISON for v in vals):
                continue
            if st.value is not None or len(vals) < 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                                                            for v in vals):
                b.err("classes takes two or more label values of the data to keep, e.g. classes 0, 1", st.span)
            else:
                spec.classes = tuple(vals)
        elif st.name == "data":
            v = _one(b, st, frame)
            if v is not POISON and not isinstance(v, str):
                b.err(f"data names a data set or file, got {describe(v)}", st.values[0].span,
                      'data "digits", data "mnist:path/to/idx", or data "file.npz"')
            elif v is not POISON:
                spec.data = v
    if "minimize" not in seen:
        b.err(f"the training section of {train.model} has no objective", train.span,
              "add one: minimize mean(cross_entropy(logits, label))")
    elif spec.loss:
        import networkx as nx

        used = nx.ancestors(g.nx, spec.loss)
        for st in train.body:
            v = frame.vars.get(st.name) if isinstance(st, s.Input) else None
            if isinstance(v, Tensor) and v.id not in used:
                b.err(f"the objective does not use the input '{st.name}'", st.span,
                      "use it in the objective (minimize ... cross_entropy(logits, label)), or remove the input")
    return spec


def _one(b: Builder, st: s.Setting, frame: Frame):
    if len(st.values) != 1 or st.value is not None:
        return b.err(f"{st.name} takes one value", st.span)
    return b.eval(st.values[0], frame)


def _objective(b: Builder, st: s.Setting, frame: Frame) -> str | None:
    if len(st.values) != 1 or st.value is not None:
        b.err("minimize takes one expression", st.span)
        return None
    b.layer = "objective"
    v = b.eval(st.values[0], frame, "objective")
    b.layer = ""
    if v is POISON:
        return None
    if not isinstance(v, Tensor):
        b.err(f"the objective must be a tensor expression, got {describe(v)}", st.values[0].span)
        return None
    t = b.graph.node(v.id).type
    if t.rank != 0:
        b.err(f"the objective must be a scalar, got {t}", st.values[0].span,
              "average the per-example losses: minimize mean(...)")
        return None
    return v.id


def _choice(b: Builder, st: s.Setting, frame: Frame, spec: TrainSpec) -> None:
    table = OPTIMIZERS if st.name == "optimizer" else SCHEDULES
    if len(st.values) != 1 or st.value is not None or not isinstance(st.values[0], (s.Call, s.Name)):
        example = "sgd(lr = 0.1, momentum = 0.9)" if st.name == "optimizer" else "cosine(warmup = 1)"
        b.err(f"{st.name} takes one of {', '.join(table)}, e.g. {st.name} {example}", st.span)
        return
    e = st.values[0]
    kind = e.func if isinstance(e, s.Call) else e.id
    span = e.func_span if isinstance(e, s.Call) else e.span
    if kind not in table:
        b.err(f"unknown {st.name} '{kind}'", span, did_you_mean(kind, table, f"choose one of {', '.join(table)}"))
        return
    values = dict(table[kind])
    if isinstance(e, s.Call):
        if e.args:
            b.err(f"{st.name} {kind} takes keyword arguments: {', '.join(f'{k} = ...' for k in values)}",
                  e.args[0].span)
            return
        for kw in e.kwargs:
            if kw.name not in values:
                b.err(f"{kind} has no setting '{kw.name}'", kw.span,
                      did_you_mean(kw.name, values, f"{kind} takes: {', '.join(values)}"))
                continue
            v = b.eval(kw.value, frame)
            if v is POISON:
                continue
            want = type(values[kw.name])
            if want is bool and not isinstance(v, bool):
                b.err(f"{kind}'s {kw.name} expects true or false, got {describe(v)}", kw.value.span)
                continue
            problem = rate_error(kind, kw.name, v) if want is float else None
            if problem:
                b.err(problem, kw.value.span)
                continue
            values[kw.name] = float(v) if want is float else v
    if st.name == "optimizer":
        spec.optimizer, spec.opt = kind, values
    else:
        spec.schedule, spec.sched = kind, values


def _layer_names(b: Builder, st: s.Setting, layers: list[str]) -> list[str]:
    out = []
    for e in st.values:
        if not isinstance(e, s.Name):
            b.err(f"{st.name} takes layer names, got an expression", e.span, f"{st.name} c1, c3")
            continue
        if e.id in layers or any(layer.startswith(e.id + "/") for layer in layers):
            out.append(e.id)
        else:
            b.err(f"no layer named '{e.id}' to {st.name}", e.span,
                  did_you_mean(e.id, layers, "name a value of the model, e.g. c1"))
    return out


def _param_set(b: Builder, spec: TrainSpec, kind: str):
    g: Graph = b.graph
    out = []
    for nid, full, p in param_specs(g):
        node = g.node(nid)
        if not p.trainable or in_layers(node.layer, spec.frozen):
            continue
        if kind == "weights" and (p.name != "weight" or lookup(node.op).category == "normalization"):
            continue
        if kind == "biases" and p.name != "bias":
            continue
        pid = f"param/{full}"
        if pid not in g:
            op = lookup(PARAMETER)
            a = resolve_attrs(op, {"name": p.name, "shape": p.shape})
            g.add(Node(pid, PARAMETER, (), a, node.span, node.scope, "objective", infer_node(PARAMETER, [], a),
                       owner=nid))
            b.used_ids.add(pid)
        out.append(Tensor(pid))
    return tuple(out)
