"""Pointwise activations and softmax."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .registry import Attr, Op, register


def same(types, a):
    return types[0]


def unary(name, onnx_op, ref, activation=None, attrs=(), onnx_attrs=lambda a: {}, doc=""):
    register(Op(
        name=name, inputs=("x",), attrs=attrs, shape=same,
        lower=lambda g, ins, p, a, types, out: g.node(onnx_op, [ins[0]], out=g.out, **onnx_attrs(a)),
        reference=ref, activation=activation, category="activation", doc=doc,
        examples=(((("f32", (2, 3, 4, 4)),), {}), ((("f32", (3, 5)),), {})),
    ))


unary("relu", "Relu", lambda xs, p, a: np.maximum(xs[0], 0), "relu", doc="max(x, 0)")
unary("leaky_relu", "LeakyRelu", lambda xs, p, a: np.where(xs[0] > 0, xs[0], a.alpha * xs[0]).astype(xs[0].dtype),
      "relu", (Attr("alpha", "float", 0.01),), lambda a: {"alpha": a.alpha}, "x if x > 0 else alpha * x")
unary("sigmoid", "Sigmoid", lambda xs, p, a: (1 / (1 + np.exp(-xs[0]))).astype(xs[0].dtype), "sigmoid",
      doc="1 / (1 + exp(-x))")
unary("tanh", "Tanh", lambda xs, p, a: np.tanh(xs[0]), "tanh", doc="hyperbolic tangent")
unary("identity", "Identity", lambda xs, p, a: xs[0], doc="returns its input")


def axis_of(types, a, name):
    r = types[0].rank
    if not -r <= a.axis < r:
        raise ShapeError(f"{name} axis {a.axis} is out of range for {types[0]}")
    return types[0]


def softmax_ref(xs, p, a):
    x = xs[0].astype(np.float64)
    e = np.exp(x - x.max(axis=a.axis, keepdims=True))
    return (e / e.sum(axis=a.axis, keepdims=True)).astype(xs[0].dtype)


def log_softmax_ref(xs, p, a):
    x = xs[0].astype(np.float64)
    m = x.max(axis=a.axis, keepdims=True)
    return (x - m - np.log(np.exp(x - m).sum(axis=a.axis, keepdims=True))).astype(xs[0].dtype)


for _name, _onnx, _ref in (("softmax", "Softmax", softmax_ref), ("log_softmax", "LogSoftmax", log_softmax_ref)):
    register(Op(
        name=_name, inputs=("x",), attrs=(Attr("axis", "int", 1),),
        shape=lambda types, a, _n=_name: axis_of(types, a, _n),
        lower=lambda g, ins, p, a, types, out, _o=_onnx: g.node(_o, [ins[0]], out=g.out, axis=a.axis),
        reference=_ref, activation="sigmoid", category="activation",
        doc=f"{_name} along an axis (the class axis 1 by default).",
        examples=(((("f32", (3, 10)),), {}), ((("f32", (2, 4, 3)),), dict(axis=-1))),
    ))
