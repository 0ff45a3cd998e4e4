"""Ops of the optimiser step: the learning-rate schedule, sqrt, Adam's bias correction, and `after`,
which orders an update behind the reads of the tensor it overwrites."""
from __future__ import annotations

import math

import numpy as np

from ..types import TensorType
from .registry import Attr, Op, register

# The schedules a training section may name (`schedule cosine(warmup = 1)`), each with its settings'
# defaults; the section's base lr and epochs complete them.
SCHEDULES = {
    "constant": {"warmup": 0.0},
    "step": {"warmup": 0.0, "every": 10.0, "gamma": 0.1},
    "cosine": {"warmup": 0.0, "min_lr": 0.0},
}
DEFAULT_SCHEDULE = "constant"


def learning_rate(epoch: float, *, kind: str, lr: float, epochs: float = 1.0, warmup: float = 0.0,
                  every: float = SCHEDULES["step"]["every"], gamma: float = SCHEDULES["step"]["gamma"],
                  min_lr: float = SCHEDULES["cosine"]["min_lr"]) -> float:
    """The learning rate at a fractional epoch, in Python: the reference of lr_schedule's lowering
    (and what bench/ feeds PyTorch's optimiser)."""
    if kind == "step":
        value = lr * gamma ** math.floor(epoch / every)
    elif kind == "cosine":
        value = min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(epoch / epochs, 1.0)))
    else:
        value = lr
    if warmup > 0:
        value *= min(1.0, epoch / warmup)
    return value


def _schedule_reference(xs, p, a):
    return np.asarray(learning_rate(float(np.asarray(xs[0])), **a), np.float32)


def _schedule_lower(g, ins, p, a, types, out):
    e = ins[0]
    if a.kind == "step":
        k = g.node("Floor", [g.node("Div", [e, g.const("every", a.every)])])
        lr = g.node("Mul", [g.const("lr", a.lr), g.node("Pow", [g.const("gamma", a.gamma), k])])
    elif a.kind == "cosine":
        frac = g.node("Min", [g.node("Div", [e, g.const("epochs", a.epochs)]), g.const("one", 1.0)])
        half = g.node("Mul", [g.node("Add", [g.const("one_", 1.0), g.node("Cos", [g.node("Mul", [frac, g.const("pi", math.pi)])])]),
                              g.const("half", 0.5)])
        lr = g.node("Add", [g.const("min_lr", a.min_lr), g.node("Mul", [half, g.const("span", a.lr - a.min_lr)])])
    else:
        lr = g.const("lr", a.lr)
    if a.warmup > 0:
        ramp = g.node("Min", [g.node("Div", [e, g.const("warmup", a.warmup)]), g.const("one_w", 1.0)])
        return g.node("Mul", [lr, ramp], out=g.out)
    return g.node("Identity", [lr], out=g.out)


register(Op(
    name="lr_schedule", inputs=("epoch",),
    attrs=(Attr("kind", "str", DEFAULT_SCHEDULE, tuple(SCHEDULES)), Attr("lr", "float"),
           Attr("epochs", "float", 1.0), Attr("warmup", "float", 0.0),
           Attr("every", "float", SCHEDULES["step"]["every"]), Attr("gamma", "float", SCHEDULES["step"]["gamma"]),
           Attr("min_lr", "float", SCHEDULES["cosine"]["min_lr"])),
    shape=lambda types, a: TensorType("f32", ()), lower=_schedule_lower, reference=_schedule_reference,
    category="gradient",
    doc="The learning rate at a (fractional) epoch: constant, step (times gamma every `every` epochs) or "
        "cosine (to min_lr at `epochs`), with a linear warm-up over `warmup` epochs.",
    examples=tuple(((("f32", ()),), dict(kind=k, lr=0.1, epochs=5.0, warmup=w, every=2.0))
                   for k in SCHEDULES for w in (0.0, 1.5)),
))


def _bias_correction_lower(g, ins, p, a, types, out):  # 1 - beta^(step + 1)
    t = g.node("Add", [ins[0], g.const("one", 1.0)])
    return g.node("Sub", [g.const("one_", 1.0), g.node("Pow", [g.const("beta", a.beta), t])], out=g.out)


register(Op(
    name="bias_correction", inputs=("step",), attrs=(Attr("beta", "float"),),
    shape=lambda types, a: TensorType("f32", ()), lower=_bias_correction_lower,
    reference=lambda xs, p, a: np.asarray(1 - a.beta ** (float(np.asarray(xs[0])) + 1), np.float32),
    category="gradient", doc="Adam's bias correction 1 - beta^(step + 1), step counted from 0.",
    examples=(((("f32", ()),), dict(beta=0.9)),),
))


def _after_lower(g, ins, p, a, types, out):
    """x, by a Where over one element of each dependency: onnxruntime runs it only once every
    dependency is computed, and no rewrite can drop the read (the element is not a constant)."""
    from onnx import TensorProto

    x = ins[0]
    for k, dep in enumerate(ins[1:]):
        first = g.node("Gather", [g.node("Reshape", [dep, g.const("flat", [-1], np.int64)]),
                                  g.const("first", 0, np.int64)])
        x = g.node("Where", [g.node("Cast", [first], to=TensorProto.BOOL), x, x],
                   out=g.out if k == len(ins) - 2 else None)
    return x if len(ins) > 1 else g.node("Identity", [x], out=g.out)


register(Op(
    name="after", inputs=("x", "deps"), variadic=True, shape=lambda types, a: types[0], lower=_after_lower,
    reference=lambda xs, p, a: xs[0], category="gradient",
    doc="x itself, computed only after every dependency: a training step orders each parameter's update "
        "behind the reads of that parameter it would not otherwise wait for (a conv's input gradient reads "
        "its weight), so that the update may overwrite the parameter in place.",
    examples=(((("f32", ()), ("f32", (2, 3))), {}), ((("f32", (4,)), ("f32", (3, 2, 2)), ("f32", (5,))), {})),
))
