"""Pointwise activations and softmax."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .norm import per_channel
from .registry import Attr, Op, Param, TorchModule, register


def same(types, a):
    return types[0]


def unary(name, onnx_op, ref, init_before=None, attrs=(), onnx_attrs=lambda a: {}, doc="", grad=None):
    register(Op(
        name=name, inputs=("x",), attrs=attrs, shape=same,
        lower=lambda g, ins, p, a, types, out: g.node(onnx_op, [ins[0]], out=g.out, **onnx_attrs(a)),
        reference=ref, init_before=init_before, category="activation", doc=doc, grad=grad,
        examples=(((("f32", (2, 3, 4, 4)),), {}), ((("f32", (3, 5)),), {})),
    ))


# gradient rules: the backward ops (relu_grad, ...) are defined at the end of this file
unary("relu", "Relu", lambda xs, p, a: np.maximum(xs[0], 0), "he", doc="max(x, 0)",
      grad=lambda d, n, gy: ([d.op("relu_grad", [gy, n.inputs[0]])], {}))
unary("leaky_relu", "LeakyRelu", lambda xs, p, a: np.where(xs[0] > 0, xs[0], a.alpha * xs[0]).astype(xs[0].dtype),
      "he", (Attr("alpha", "float", 0.01),), lambda a: {"alpha": a.alpha}, "x if x > 0 else alpha * x",
      grad=lambda d, n, gy: ([d.op("leaky_relu_grad", [gy, n.inputs[0]], {"alpha": n.attrs.alpha})], {}))
unary("sigmoid", "Sigmoid", lambda xs, p, a: (1 / (1 + np.exp(-xs[0]))).astype(xs[0].dtype), "glorot",
      doc="1 / (1 + exp(-x))", grad=lambda d, n, gy: ([d.op("sigmoid_grad", [gy, n.id])], {}))
unary("tanh", "Tanh", lambda xs, p, a: np.tanh(xs[0]), "glorot", doc="hyperbolic tangent",
      grad=lambda d, n, gy: ([d.op("tanh_grad", [gy, n.id])], {}))
unary("identity", "Identity", lambda xs, p, a: xs[0], doc="returns its input", grad=lambda d, n, gy: ([gy], {}))


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
        reference=_ref, init_before="glorot", category="activation",
        grad=lambda d, n, gy, _n=_name: ([d.op(f"{_n}_grad", [gy, n.id], {"axis": n.attrs.axis})], {}),
        doc=f"{_name} along an axis (the class axis 1 by default).",
        examples=(((("f32", (3, 10)),), {}), ((("f32", (2, 4, 3)),), dict(axis=-1))),
    ))


# -- gradients ---------------------------------------------------------------
# Each backward op takes the output gradient first, then the forward value it needs.

def _backward(name, fn, onnx_build, attrs=(), doc=""):
    register(Op(
        name=name, inputs=("g", "v"), attrs=attrs, shape=lambda types, a: types[0],
        lower=lambda g, ins, p, a, types, out: onnx_build(g, ins, a),
        reference=lambda xs, p, a: fn(xs[0], xs[1], a).astype(np.result_type(xs[0], xs[1])),
        category="gradient", doc=doc,
        examples=(((("f32", (2, 3, 4)), ("f32", (2, 3, 4))), {}), ((("f32", (3, 5)), ("f32", (3, 5))), {})),
    ))


def _relu_grad_onnx(g, ins, a):
    mask = g.node("Cast", [g.node("Greater", [ins[1], g.const("zero", 0.0)])], to=1)
    return g.node("Mul", [ins[0], mask], out=g.out)


def _leaky_grad_onnx(g, ins, a):
    slope = g.node("Where", [g.node("Greater", [ins[1], g.const("zero", 0.0)]), g.const("one", 1.0),
                             g.const("alpha", a.alpha)])
    return g.node("Mul", [ins[0], slope], out=g.out)


def _sigmoid_grad_onnx(g, ins, a):  # g * y * (1 - y)
    return g.node("Mul", [g.node("Mul", [ins[0], ins[1]]), g.node("Sub", [g.const("one", 1.0), ins[1]])], out=g.out)


def _tanh_grad_onnx(g, ins, a):  # g * (1 - y^2)
    return g.node("Mul", [ins[0], g.node("Sub", [g.const("one", 1.0), g.node("Mul", [ins[1], ins[1]])])], out=g.out)


def _softmax_grad_onnx(g, ins, a):  # y * (g - sum(g * y))
    gy = g.node("Mul", [ins[0], ins[1]])
    s = g.node("ReduceSum", [gy, g.const("axes", [a.axis], np.int64)], keepdims=1)
    return g.node("Mul", [ins[1], g.node("Sub", [ins[0], s])], out=g.out)


def _log_softmax_grad_onnx(g, ins, a):  # g - exp(y) * sum(g)
    s = g.node("ReduceSum", [ins[0], g.const("axes", [a.axis], np.int64)], keepdims=1)
    return g.node("Sub", [ins[0], g.node("Mul", [g.node("Exp", [ins[1]]), s])], out=g.out)


_backward("relu_grad", lambda g, x, a: g * (x > 0), _relu_grad_onnx, doc="g * (x > 0), with x the input")
_backward("leaky_relu_grad", lambda g, x, a: g * np.where(x > 0, 1.0, a.alpha), _leaky_grad_onnx,
          (Attr("alpha", "float", 0.01),), "g * (1 if x > 0 else alpha)")
_backward("sigmoid_grad", lambda g, y, a: g * y * (1 - y), _sigmoid_grad_onnx, doc="g * y * (1 - y), y the output")
_backward("tanh_grad", lambda g, y, a: g * (1 - y * y), _tanh_grad_onnx, doc="g * (1 - y^2), y the output")
_backward("softmax_grad", lambda g, y, a: y * (g - (g * y).sum(axis=a.axis, keepdims=True)), _softmax_grad_onnx,
          (Attr("axis", "int", 1),), "y * (g - sum(g * y)), y the output")
_backward("log_softmax_grad", lambda g, y, a: g - np.exp(y) * g.sum(axis=a.axis, keepdims=True),
          _log_softmax_grad_onnx, (Attr("axis", "int", 1),), "g - exp(y) * sum(g), y the output")



# -- prelu: a leaky relu whose slope is learned ----------------------------------------------

def _slopes(types, a) -> int:
    x = types[0]
    if not a.per_channel:
        return 1
    if x.rank < 2 or isinstance(x.dims[1], str):
        raise ShapeError(f"prelu with per_channel = true needs [N, C, ...] with a known C, got {x}")
    return x.dims[1]


def _slope_view(g, w, rank, per_channel):  # [C] -> [C, 1, ...] so that it broadcasts over axis 1
    if not per_channel or rank <= 2:
        return w
    return g.node("Reshape", [w, g.const("per_channel", [-1] + [1] * (rank - 2), np.int64)])


def _np_slope(w, ndim, channels):
    return per_channel(w, ndim) if channels else w


def _prelu_grad(d, n, gy):
    x, a = n.inputs[0], n.attrs
    rank = d.type(x).rank
    w = d.param("weight")
    gx = d.op("prelu_grad", [gy, x, w], {"per_channel": a.per_channel}) if d.wants(x) else None
    below = d.op("mul", [gy, d.op("minimum", [x, d.const(0.0)])])  # dy/dw = min(x, 0)
    gw = (d.op("sum", [below], {"axis": (0, *range(2, rank))}) if a.per_channel and rank > 1
          else d.sum_to(below, w))
    return [gx], {"weight": gw}


register(Op(
    name="prelu", inputs=("x",), attrs=(Attr("per_channel", "bool", False, doc="one slope per channel (axis 1)"),),
    shape=lambda types, a: (_slopes(types, a), types[0])[1],
    params=lambda types, a: [Param("weight", (_slopes(types, a),), "constant(0.25)")],
    lower=lambda g, ins, p, a, types, out: g.node(
        "PRelu", [ins[0], _slope_view(g, p["weight"], types[0].rank, a.per_channel)], out=g.out),
    reference=lambda xs, p, a: np.where(xs[0] > 0, xs[0], _np_slope(p["weight"], xs[0].ndim, a.per_channel) * xs[0]),
    grad=_prelu_grad, init_before="he", category="activation", torch=TorchModule("PReLU", "prelu"),
    doc="x if x > 0 else w * x with a learned slope w (0.25 at first), one for all or one per channel, as "
        "torch.nn.PReLU(num_parameters = 1 or C).",
    examples=(((("f32", (2, 3, 4, 4)),), {}), ((("f32", (2, 3, 4, 4)),), dict(per_channel=True)),
              ((("f32", (3, 5)),), dict(per_channel=True))),
))


def _prelu_grad_lower(g, ins, p, a, types, out):  # g where x > 0, else g * w
    gy, x, w = ins
    slope = _slope_view(g, w, types[1].rank, a.per_channel)
    return g.node("Where", [g.node("Greater", [x, g.const("zero", 0.0)]), gy, g.node("Mul", [gy, slope])], out=g.out)


register(Op(
    name="prelu_grad", inputs=("g", "x", "w"), attrs=(Attr("per_channel", "bool", False),),
    shape=lambda types, a: types[1], lower=_prelu_grad_lower,
    reference=lambda xs, p, a: np.where(xs[1] > 0, xs[0], xs[0] * _np_slope(xs[2], xs[1].ndim, a.per_channel)),
    category="gradient", doc="The input gradient of prelu: g if x > 0, else g * w.",
    examples=(((("f32", (2, 3, 4)), ("f32", (2, 3, 4)), ("f32", (1,))), {}),
              ((("f32", (2, 3, 4)), ("f32", (2, 3, 4)), ("f32", (3,))), dict(per_channel=True))),
))
