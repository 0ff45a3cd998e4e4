"""Normalisation and regularisation: batchnorm, dropout, lrn (inference forms)."""
from __future__ import annotations

from math import ceil, floor

import numpy as np

from ..errors import ShapeError
from .registry import Attr, Op, Param, register


def channels_of(x, opname: str) -> int:
    """C of an [N, C, ...] input of rank 2 to 5; it sizes parameters, so it must be known."""
    if not 2 <= x.rank <= 5:
        raise ShapeError(f"{opname} expects an input [N, C] or [N, C, spatial...] of rank 2 to 5, got {x}")
    c = x.dims[1]
    if isinstance(c, str):
        raise ShapeError(f"{opname} needs a known number of channels, got {x}")
    return c


def bn_shape(types, a):
    (x,) = types
    channels_of(x, "batchnorm")
    if a.eps <= 0:
        raise ShapeError(f"batchnorm eps must be positive, got {a.eps:g}")
    if not 0 <= a.momentum <= 1:
        raise ShapeError(f"batchnorm momentum must be in [0, 1], got {a.momentum:g}")
    return x


def bn_params(types, a):
    c = channels_of(types[0], "batchnorm")
    return [Param("weight", (c,), "ones"), Param("bias", (c,), "zeros"),
            Param("running_mean", (c,), "zeros", trainable=False),
            Param("running_var", (c,), "ones", trainable=False)]


def bn_lower(g, ins, p, a, types, out):
    # ONNX's momentum weighs the old running value, PyTorch's the new batch: 1 - m.
    return g.node("BatchNormalization", [ins[0], p["weight"], p["bias"], p["running_mean"], p["running_var"]],
                  out=g.out, epsilon=a.eps, momentum=1.0 - a.momentum, training_mode=0)


def bn_reference(xs, p, a):
    (x,) = xs
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var, w, b = (p[k].astype(np.float64).reshape(shape) for k in ("running_mean", "running_var", "weight", "bias"))
    return ((x - mean) / np.sqrt(var + a.eps) * w + b).astype(x.dtype)


register(Op(
    name="batchnorm", inputs=("x",),
    attrs=(Attr("eps", "float", 1e-5, doc="added to the variance"),
           Attr("momentum", "float", 0.1, doc="training only: weight of the new batch in the running stats (PyTorch)")),
    shape=bn_shape, params=bn_params, lower=bn_lower, reference=bn_reference,
    macs=lambda types, out, a: out.per_example(), transparent=True, category="normalization",
    doc="Batch normalisation over the channel axis 1 with the running statistics (ONNX BatchNormalization, "
        "inference); weight, bias, running_mean, running_var are [C].",
    examples=(
        ((("f32", (3, 5)),), {}),
        ((("f32", (2, 4, 6)),), dict(eps=1e-3)),
        ((("f32", (2, 3, 5, 5)),), dict(eps=0.1, momentum=0.01)),
        ((("f32", (2, 2, 3, 4, 4)),), {}),
    ),
))


def dropout_shape(types, a):
    if not 0 <= a.p < 1:
        raise ShapeError(f"dropout probability p must be in [0, 1), got {a.p:g}",
                         "p is the fraction of units dropped during training")
    return types[0]


register(Op(
    name="dropout", inputs=("x",), attrs=(Attr("p", "float", 0.5, doc="drop probability during training"),),
    shape=dropout_shape,
    lower=lambda g, ins, p, a, types, out: ins[0],  # identity at inference: emit nothing, alias the input
    reference=lambda xs, p, a: xs[0],
    transparent=True, category="normalization",
    doc="Randomly zeroes units during training; the identity at inference (lowers to nothing).",
    examples=(((("f32", (2, 3, 4, 4)),), {}), ((("f32", (3, 7)),), dict(p=0.2)), ((("f32", (2, 5)),), dict(p=0.0))),
))


def lrn_shape(types, a):
    (x,) = types
    channels_of(x, "lrn")
    if a.size <= 0 or a.size % 2 == 0:
        raise ShapeError(f"lrn size must be a positive odd number of channels, got {a.size}",
                         "onnxruntime implements only odd sizes (window centred on the channel)")
    if a.k <= 0:
        raise ShapeError(f"lrn k must be positive (it keeps the denominator away from zero), got {a.k:g}")
    return x


def lrn_lower(g, ins, p, a, types, out):
    attrs = dict(size=a.size, alpha=a.alpha, beta=a.beta, bias=a.k)
    if types[0].rank == 4:
        return g.node("LRN", [ins[0]], out=g.out, **attrs)
    # onnxruntime's LRN takes only 4-D input: fold the spatial axes into [N, C, -1, 1] and back.
    flat = g.node("Reshape", [ins[0], g.const("shape4", [0, 0, -1, 1], np.int64)])
    y = g.node("LRN", [flat], **attrs)
    return g.node("Reshape", [y, g.node("Shape", [ins[0]])], out=g.out)


def lrn_reference(xs, p, a):
    (x,) = xs
    x64 = x.astype(np.float64)
    sq = x64 ** 2
    C = x.shape[1]
    lo, hi = floor((a.size - 1) / 2), ceil((a.size - 1) / 2)  # channels before / after c (ONNX)
    ssum = np.stack([sq[:, max(0, c - lo):min(C - 1, c + hi) + 1].sum(axis=1) for c in range(C)], axis=1)
    return (x64 / (a.k + a.alpha / a.size * ssum) ** a.beta).astype(x.dtype)


register(Op(
    name="lrn", inputs=("x",),
    attrs=(Attr("size", "int", 5, doc="channels in the window (odd)"),
           Attr("alpha", "float", 1e-4), Attr("beta", "float", 0.75),
           Attr("k", "float", 2.0, doc="additive constant (ONNX bias; AlexNet uses 2)")),
    shape=lrn_shape, lower=lrn_lower, reference=lrn_reference,
    macs=lambda types, out, a: out.per_example() * a.size, category="normalization",
    doc="Local response normalisation across channels (AlexNet; ONNX LRN): "
        "y = x / (k + alpha / size * sum of x^2 over the size channels around c)^beta.",
    examples=(
        ((("f32", (2, 7, 4, 4)),), {}),
        ((("f32", (2, 4, 3, 3)),), dict(size=3, alpha=0.5, beta=0.6, k=1.0)),
        ((("f32", (2, 6, 5)),), dict(size=7, alpha=1.0, beta=1.0)),
        ((("f32", (1, 5, 2, 3, 3)),), dict(size=1, alpha=0.3)),
        ((("f32", (3, 6)),), dict(alpha=0.2)),
    ),
))
