"""Pointwise math and the activations of modern networks, each defined with its derivative.

`pointwise` registers an op and its backward op `NAME_grad` (g * f'(x), x the input) side by
side: the forward lowering, the ONNX nodes of f'(x), and a numpy reference of each. The
references are written from the definitions (erf from math.erf), not from the lowerings.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError
from .registry import Attr, Op, register

SHAPES = ((2, 3, 4, 4), (3, 5))
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _same(types, a):
    if not types[0].dtype.startswith("f"):
        raise ShapeError(f"expects a float tensor, got {types[0]}")
    return types[0]


def pointwise(name, doc, forward, reference, deriv, deriv_ref, *, attrs=(), category="math", init_before=None,
              positive=False, check=None, example=None):
    """forward(g, x, a, out) emits f(x), its last node named `out`; deriv(g, x, a) emits f'(x).
    reference(x, a) and deriv_ref(x, a) are numpy; `positive`: the examples need x > 0;
    check(a) raises ShapeError for bad attributes; `example`: attributes for the registry tests."""
    opts = ({"positive": True},) if positive else ()
    grad_name = f"{name}_grad"

    def shape(types, a):
        if check:
            check(a)
        return _same(types, a)

    register(Op(
        name=name, inputs=("x",), attrs=attrs, shape=shape,
        lower=lambda g, ins, p, a, types, out: forward(g, ins[0], a, g.out),
        reference=lambda xs, p, a: np.asarray(reference(xs[0].astype(np.float64), a)).astype(xs[0].dtype),
        init_before=init_before, category=category, doc=doc,
        grad=lambda d, n, gy: ([d.op(grad_name, [gy, n.inputs[0]], n.attrs)], {}),
        examples=tuple(((("f32", s),), example or {}, *opts) for s in SHAPES),
    ))
    register(Op(
        name=grad_name, inputs=("g", "x"), attrs=attrs, shape=lambda types, a: types[0],
        lower=lambda g, ins, p, a, types, out: g.node("Mul", [ins[0], deriv(g, ins[1], a)], out=g.out),
        reference=lambda xs, p, a: (xs[0] * deriv_ref(xs[1].astype(np.float64), a)).astype(
            np.result_type(xs[0], xs[1])),
        category="gradient", doc=f"g * {name}'(x), with x the input",
        examples=tuple(((("f32", s), ("f32", s)), example or {}, *opts) for s in SHAPES),
    ))


def onnx_op(op_type, **fixed):
    """The forward of an op that is one ONNX node."""
    return lambda g, x, a, out: g.node(op_type, [x], out=out, **fixed)


def _cast(g, b):
    return g.node("Cast", [b], to=1)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# -- math ----------------------------------------------------------------------

pointwise("exp", "e to the power x", onnx_op("Exp"), lambda x, a: np.exp(x),
          lambda g, x, a: g.node("Exp", [x]), lambda x, a: np.exp(x))
pointwise("log", "natural logarithm (x > 0)", onnx_op("Log"), lambda x, a: np.log(x),
          lambda g, x, a: g.node("Reciprocal", [x]), lambda x, a: 1 / x, positive=True)
pointwise("sqrt", "square root (x >= 0)", onnx_op("Sqrt"), lambda x, a: np.sqrt(x),
          lambda g, x, a: g.node("Div", [g.const("half", 0.5), g.node("Sqrt", [x])]), lambda x, a: 0.5 / np.sqrt(x),
          positive=True)
pointwise("abs", "|x|; abs(x) of a tensor", onnx_op("Abs"), lambda x, a: np.abs(x),
          lambda g, x, a: g.node("Sign", [x]), lambda x, a: np.sign(x))
pointwise("neg", "-x", onnx_op("Neg"), lambda x, a: -x,
          lambda g, x, a: g.const("minus_one", -1.0), lambda x, a: -np.ones_like(x))
pointwise("cos", "cosine", onnx_op("Cos"), lambda x, a: np.cos(x),
          lambda g, x, a: g.node("Neg", [g.node("Sin", [x])]), lambda x, a: -np.sin(x))
pointwise("sin", "sine", onnx_op("Sin"), lambda x, a: np.sin(x),
          lambda g, x, a: g.node("Cos", [x]), lambda x, a: np.cos(x))
pointwise("erf", "the error function, 2/sqrt(pi) times the integral of exp(-t^2) from 0 to x", onnx_op("Erf"),
          lambda x, a: _erf(x),
          lambda g, x, a: g.node("Mul", [g.const("two_over_sqrt_pi", 2 / math.sqrt(math.pi)),
                                         g.node("Exp", [g.node("Neg", [g.node("Mul", [x, x])])])]),
          lambda x, a: 2 / math.sqrt(math.pi) * np.exp(-x * x))
pointwise("pow", "x to a constant power: pow(x, 2), also written x ** 2 (x > 0 unless the exponent is an integer)",
          lambda g, x, a, out: g.node("Pow", [x, g.const("exponent", a.exponent)], out=out),
          lambda x, a: np.power(x, a.exponent),
          lambda g, x, a: g.node("Mul", [g.const("exponent", a.exponent),
                                         g.node("Pow", [x, g.const("exponent_less_one", a.exponent - 1)])]),
          lambda x, a: a.exponent * np.power(x, a.exponent - 1),
          attrs=(Attr("exponent", "float"),), positive=True, example=dict(exponent=2.5))
register(Op(
    name="sign", inputs=("x",), shape=_same,
    lower=lambda g, ins, p, a, types, out: g.node("Sign", ins, out=g.out),
    reference=lambda xs, p, a: np.sign(xs[0]), category="math",
    doc="-1, 0 or 1 by the sign of x; not differentiable (its derivative is 0 wherever it exists)",
    examples=(((("f32", (3, 4)),), {}),),
))


# -- clipping: clip, relu6, hardtanh ---------------------------------------------

def clipping(name, doc, bounds, attrs=(), **kw):
    """An op that limits x to [lo, hi] = bounds(attributes); its derivative is 1 strictly inside
    (PyTorch's hardtanh backward), else 0."""
    def check(a):
        lo, hi = bounds(a)
        if not lo < hi:
            raise ShapeError(f"the lower bound {lo} must be below the upper bound {hi}")

    def forward(g, x, a, out):
        lo, hi = bounds(a)
        return g.node("Clip", [x, g.const("lo", lo), g.const("hi", hi)], out=out)

    pointwise(name, doc, forward, lambda x, a: np.clip(x, *bounds(a)), lambda g, x, a: _inside(g, x, *bounds(a)),
              lambda x, a: _inside_ref(x, *bounds(a)), attrs=attrs, check=check, **kw)


def _inside(g, x, lo, hi):
    return _cast(g, g.node("And", [g.node("Greater", [x, g.const("lo", lo)]), g.node("Less", [x, g.const("hi", hi)])]))


def _inside_ref(x, lo, hi):
    return ((x > lo) & (x < hi)).astype(np.float64)


clipping("clip", "x limited to [lo, hi]: min(max(x, lo), hi)", lambda a: (a.lo, a.hi),
         (Attr("lo", "float"), Attr("hi", "float")), example=dict(lo=-0.5, hi=0.8))
clipping("relu6", "min(max(x, 0), 6) (MobileNet)", lambda a: (0.0, 6.0), category="activation", init_before="he")
clipping("hardtanh", "x limited to [min_val, max_val], as torch.nn.Hardtanh", lambda a: (a.min_val, a.max_val),
         (Attr("min_val", "float", -1.0), Attr("max_val", "float", 1.0)), category="activation")


# -- smooth activations ------------------------------------------------------------

C_TANH = math.sqrt(2 / math.pi)  # gelu's tanh approximation: tanh(C (x + K x^3))
K_TANH = 0.044715


def _gelu_ref(x, a):
    if a.approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(C_TANH * (x + K_TANH * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _gelu_deriv_ref(x, a):
    if a.approximate == "tanh":
        t = np.tanh(C_TANH * (x + K_TANH * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * C_TANH * (1 + 3 * K_TANH * x * x)
    return 0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _gelu_deriv(g, x, a):
    half, one = g.const("half", 0.5), g.const("one", 1.0)
    x2 = g.node("Mul", [x, x])
    if a.approximate == "tanh":  # 0.5 (1 + t) + 0.5 x (1 - t^2) C (1 + 3 K x^2)
        inner = g.node("Mul", [x, g.node("Add", [one, g.node("Mul", [g.const("k", K_TANH), x2])])])
        t = g.node("Tanh", [g.node("Mul", [g.const("c", C_TANH), inner])])
        slope = g.node("Mul", [g.const("c", C_TANH),
                               g.node("Add", [one, g.node("Mul", [g.const("three_k", 3 * K_TANH), x2])])])
        rest = g.node("Mul", [g.node("Mul", [half, x]), g.node("Mul", [g.node("Sub", [one, g.node("Mul", [t, t])]),
                                                                       slope])])
        return g.node("Add", [g.node("Mul", [half, g.node("Add", [one, t])]), rest])
    # Phi(x) + x phi(x)
    cdf = g.node("Mul", [half, g.node("Add", [one, g.node("Erf", [g.node("Mul", [x, g.const("rsqrt2", 1 / math.sqrt(2))])])])])
    pdf = g.node("Mul", [g.const("rsqrt_2pi", 1 / math.sqrt(2 * math.pi)),
                         g.node("Exp", [g.node("Mul", [x2, g.const("minus_half", -0.5)])])])
    return g.node("Add", [cdf, g.node("Mul", [x, pdf])])


pointwise("gelu", 'x Phi(x), Phi the normal CDF (BERT, ViT); approximate = "tanh" is the tanh form, as PyTorch\'s',
          lambda g, x, a, out: g.node("Gelu", [x], out=out, approximate=a.approximate), _gelu_ref,
          _gelu_deriv, _gelu_deriv_ref, category="activation", init_before="he",
          attrs=(Attr("approximate", "str", "none", choices=("none", "tanh")),))


def _silu_deriv(g, x, a):  # s (1 + x (1 - s))
    s = g.node("Sigmoid", [x])
    one = g.const("one", 1.0)
    return g.node("Mul", [s, g.node("Add", [one, g.node("Mul", [x, g.node("Sub", [one, s])])])])


pointwise("silu", "x * sigmoid(x), also called swish (EfficientNet)",
          lambda g, x, a, out: g.node("Mul", [x, g.node("Sigmoid", [x])], out=out), lambda x, a: x * _sigmoid(x),
          _silu_deriv, lambda x, a: _sigmoid(x) * (1 + x * (1 - _sigmoid(x))), category="activation",
          init_before="he")
pointwise("elu", "x if x > 0 else alpha * (exp(x) - 1)", lambda g, x, a, out: g.node("Elu", [x], out=out, alpha=a.alpha),
          lambda x, a: np.where(x > 0, x, a.alpha * np.expm1(x)),
          lambda g, x, a: g.node("Where", [g.node("Greater", [x, g.const("zero", 0.0)]), g.const("one", 1.0),
                                           g.node("Mul", [g.const("alpha", a.alpha), g.node("Exp", [x])])]),
          lambda x, a: np.where(x > 0, 1.0, a.alpha * np.exp(x)), category="activation", init_before="he",
          attrs=(Attr("alpha", "float", 1.0),))


def _softplus(g, x, a, out):  # log(1 + exp(beta x)) / beta
    if a.beta == 1:
        return g.node("Softplus", [x], out=out)
    beta = g.const("beta", a.beta)
    return g.node("Div", [g.node("Softplus", [g.node("Mul", [x, beta])]), beta], out=out)


def _check_beta(a):
    if not a.beta > 0:
        raise ShapeError(f"beta must be positive, got {a.beta}")


pointwise("softplus", "log(1 + exp(beta x)) / beta, a smooth relu", _softplus,
          lambda x, a: np.logaddexp(0, a.beta * x) / a.beta,
          lambda g, x, a: g.node("Sigmoid", [g.node("Mul", [x, g.const("beta", a.beta)]) if a.beta != 1 else x]),
          lambda x, a: _sigmoid(a.beta * x), category="activation", init_before="he",
          attrs=(Attr("beta", "float", 1.0),), check=_check_beta)


def _hardswish_deriv(g, x, a):  # 0 below -3, x / 3 + 1/2 up to 3, 1 above (PyTorch's backward)
    mid = g.node("Add", [g.node("Mul", [x, g.const("third", 1 / 3)]), g.const("half", 0.5)])
    upper = g.node("Where", [g.node("Greater", [x, g.const("three", 3.0)]), g.const("one", 1.0), mid])
    return g.node("Where", [g.node("Less", [x, g.const("minus_three", -3.0)]), g.const("zero", 0.0), upper])


pointwise("hardswish", "x * relu6(x + 3) / 6 (MobileNetV3)", onnx_op("HardSwish"),
          lambda x, a: x * np.clip(x + 3, 0, 6) / 6, _hardswish_deriv,
          lambda x, a: np.where(x < -3, 0.0, np.where(x > 3, 1.0, x / 3 + 0.5)), category="activation",
          init_before="he")
pointwise("hardsigmoid", "relu6(x + 3) / 6 (MobileNetV3)", onnx_op("HardSigmoid", alpha=1 / 6, beta=0.5),
          lambda x, a: np.clip(x + 3, 0, 6) / 6,
          lambda g, x, a: g.node("Mul", [_inside(g, x, -3.0, 3.0), g.const("sixth", 1 / 6)]),
          lambda x, a: _inside_ref(x, -3.0, 3.0) / 6, category="activation", init_before="glorot")


def _mish_deriv(g, x, a):  # t + x sigmoid(x) (1 - t^2), t = tanh(softplus(x))
    t = g.node("Tanh", [g.node("Softplus", [x])])
    one_less = g.node("Sub", [g.const("one", 1.0), g.node("Mul", [t, t])])
    return g.node("Add", [t, g.node("Mul", [g.node("Mul", [x, g.node("Sigmoid", [x])]), one_less])])


def _mish_deriv_ref(x, a):
    t = np.tanh(np.logaddexp(0, x))
    return t + x * _sigmoid(x) * (1 - t * t)


pointwise("mish", "x * tanh(softplus(x))", onnx_op("Mish"), lambda x, a: x * np.tanh(np.logaddexp(0, x)),
          _mish_deriv, _mish_deriv_ref, category="activation", init_before="he")
