"""Normalisations over each example's own values: layer_norm, group_norm, instance_norm.

Unlike batch norm they keep no running statistics, so training and inference are one form.
Each normalises x over some axes of one example (the last k; each group of channels with
the spatial axes; the spatial axes of each channel), then scales and shifts. Their gradients
share two backward ops: `norm_hat` (the normalised x) and `norm_grad` (dx from g * weight).
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .norm import per_channel
from .registry import Attr, Op, Param, TorchModule, register

EPS = Attr("eps", "float", 1e-5)


# -- which axes each op normalises: (axes of x, or of x seen as [N, groups, rest] when groups) --

def _layer_spec(x: TensorType, a):
    if not 1 <= a.dims < x.rank:
        raise ShapeError(f"layer_norm normalises the last dims axes, 1 to {x.rank - 1} for {x}, got dims = {a.dims}")
    shape = x.dims[x.rank - a.dims:]
    if any(isinstance(d, str) for d in shape):
        raise ShapeError(f"layer_norm needs known sizes on the axes it normalises, got {x}")
    return tuple(range(x.rank - a.dims, x.rank)), 0, shape


def _channels(x: TensorType, name: str, min_rank: int) -> int:
    if x.rank < min_rank or isinstance(x.dims[1], str):
        raise ShapeError(f"{name} expects [N, C{', spatial...' if min_rank > 2 else ', ...'}] with a known C"
                         f"{' and at least one spatial axis' if min_rank > 2 else ''}, got {x}")
    return x.dims[1]


def _group_spec(x: TensorType, a):
    c = _channels(x, "group_norm", 2)
    if a.groups <= 0 or c % a.groups:
        raise ShapeError(f"group_norm needs groups dividing the {c} channels, got groups = {a.groups}")
    return (2,), a.groups, (c,)


def _instance_spec(x: TensorType, a):
    return tuple(range(2, x.rank)), 0, (_channels(x, "instance_norm", 3),)


# -- numpy ---------------------------------------------------------------------

def _grouped(x, groups):
    return x.reshape(x.shape[0], groups, -1) if groups else x


def _stats(x, axes, groups, eps):
    """(xhat, 1 / std) in the normalised view."""
    v = _grouped(x.astype(np.float64), groups)
    centred = v - v.mean(axis=axes, keepdims=True)
    rstd = 1 / np.sqrt((centred ** 2).mean(axis=axes, keepdims=True) + eps)
    return centred * rstd, rstd


def _hat_reference(xs, p, a):
    return _stats(xs[0], a.axes, a.groups, a.eps)[0].reshape(xs[0].shape).astype(xs[0].dtype)


def _norm_grad_reference(xs, p, a):
    gh, x = xs
    xhat, rstd = _stats(x, a.axes, a.groups, a.eps)
    g = _grouped(gh.astype(np.float64), a.groups)
    dx = rstd * (g - g.mean(axis=a.axes, keepdims=True) - xhat * (g * xhat).mean(axis=a.axes, keepdims=True))
    return dx.reshape(x.shape).astype(np.result_type(gh, x))


# -- ONNX of the backward ops ----------------------------------------------------------

def _onnx_stats(g, x, a):
    """(xhat, rstd, the view's reshape back or None) in ONNX."""
    if a.groups:
        x = g.node("Reshape", [x, g.const("groups", [0, a.groups, -1], np.int64)])
    axes = g.const("axes", list(a.axes), np.int64)
    centred = g.node("Sub", [x, g.node("ReduceMean", [x, axes], keepdims=1)])
    var = g.node("ReduceMean", [g.node("Mul", [centred, centred]), axes], keepdims=1)
    rstd = g.node("Reciprocal", [g.node("Sqrt", [g.node("Add", [var, g.const("eps", a.eps)])])])
    return g.node("Mul", [centred, rstd]), rstd, axes


def _back(g, t, like, a, out):
    return g.node("Reshape", [t, g.node("Shape", [like])], out=out) if a.groups else g.node("Identity", [t], out=out)


def _hat_lower(g, ins, p, a, types, out):
    xhat, _, _ = _onnx_stats(g, ins[0], a)
    return _back(g, xhat, ins[0], a, g.out)


def _norm_grad_lower(g, ins, p, a, types, out):  # rstd (gh - mean(gh) - xhat mean(gh xhat))
    gh, x = ins
    xhat, rstd, axes = _onnx_stats(g, x, a)
    if a.groups:
        gh = g.node("Reshape", [gh, g.const("groups", [0, a.groups, -1], np.int64)])
    m1 = g.node("ReduceMean", [gh, axes], keepdims=1)
    m2 = g.node("ReduceMean", [g.node("Mul", [gh, xhat]), axes], keepdims=1)
    dx = g.node("Mul", [rstd, g.node("Sub", [g.node("Sub", [gh, m1]), g.node("Mul", [xhat, m2])])])
    return _back(g, dx, x, a, g.out)


BACKWARD_ATTRS = (Attr("axes", "any"), Attr("groups", "int", 0), EPS)
BACKWARD_EXAMPLES = ((dict(axes=(2,)), (2, 3, 4)), (dict(axes=(2, 3)), (2, 3, 4, 5)),
                     (dict(axes=(2,), groups=2), (2, 4, 3, 3)))
register(Op(
    name="norm_hat", inputs=("x",), attrs=BACKWARD_ATTRS, shape=lambda types, a: types[0],
    lower=_hat_lower, reference=_hat_reference, category="gradient",
    doc="(x - mean) / sqrt(var + eps) over `axes` of each example (of [N, groups, rest] when groups > 0).",
    examples=tuple(((("f32", s),), at) for at, s in BACKWARD_EXAMPLES),
))
register(Op(
    name="norm_grad", inputs=("g", "x"), attrs=BACKWARD_ATTRS, shape=lambda types, a: types[1],
    lower=_norm_grad_lower, reference=_norm_grad_reference, category="gradient",
    doc="The input gradient of a normalisation over `axes`, from g times its weight.",
    examples=tuple(((("f32", s), ("f32", s)), at) for at, s in BACKWARD_EXAMPLES),
))


# -- the three ops --------------------------------------------------------------------

def normalisation(name, spec, lower, attrs, doc, examples, channels, torch_cls, affine_default=True):
    """Register a normalisation; spec(x, a) -> (axes, groups, parameter shape). channels: the
    weight and bias are per channel (axis 1); else they have the normalised axes' shape."""
    def shape(types, a):
        x = types[0]
        if not x.dtype.startswith("f"):
            raise ShapeError(f"{name} expects a float tensor, got {x}")
        if a.eps <= 0:
            raise ShapeError(f"{name} eps must be positive, got {a.eps:g}")
        spec(x, a)
        return x

    def params(types, a):
        if not a.affine:
            return []
        shape_ = tuple(spec(types[0], a)[2])
        return [Param("weight", shape_, "ones"), Param("bias", shape_, "zeros")]

    def affine(t, p, a, rank):  # numpy: weight and bias broadcast over x
        if not a.affine:
            return t
        w, b = p["weight"].astype(np.float64), p["bias"].astype(np.float64)
        if channels:
            w, b = per_channel(w, rank), per_channel(b, rank)
        return t * w + b

    def reference(xs, p, a):
        x = xs[0]
        axes, groups, _ = spec(TensorType("f32", x.shape), a)
        xhat = _stats(x, axes, groups, a.eps)[0].reshape(x.shape)
        return affine(xhat, p, a, x.ndim).astype(x.dtype)

    def grad(d, n, gy):
        x, a = n.inputs[0], n.attrs
        rank = d.type(x).rank
        axes, groups, _ = spec(d.type(x), a)
        battrs = {"axes": axes, "groups": groups, "eps": a.eps}
        w = None
        if a.affine:
            w = d.param("weight")
            for _ in range(rank - 2 if channels else 0):
                w = d.op("unsqueeze", [w], {"axis": -1})
        grads = {}
        if a.affine:
            outer = (0, *range(2, rank)) if channels else tuple(range(rank - len(d.type(w).dims)))
            grads["weight"] = d.op("sum", [d.op("mul", [gy, d.op("norm_hat", [x], battrs)])], {"axis": outer})
            grads["bias"] = d.op("sum", [gy], {"axis": outer})
        gx = d.op("norm_grad", [d.op("mul", [gy, w]) if w else gy, x], battrs) if d.wants(x) else None
        return [gx], grads

    register(Op(
        name=name, inputs=("x",), attrs=(*attrs, EPS, Attr("affine", "bool", affine_default)), shape=shape,
        params=params, lower=lower, reference=reference, grad=grad, category="normalization",
        torch=TorchModule(torch_cls, "norm"),
        doc=doc, examples=examples,
    ))


def _affine_inputs(g, p, a, shape):
    if a.affine:
        return [p["weight"], p["bias"]]
    return [g.const("ones", np.ones(shape)), g.const("zeros", np.zeros(shape))]


normalisation(
    "layer_norm", _layer_spec,
    lambda g, ins, p, a, types, out: g.node(
        "LayerNormalization", [ins[0], *_affine_inputs(g, p, a, _layer_spec(types[0], a)[2])], out=g.out,
        axis=-a.dims, epsilon=a.eps),
    (Attr("dims", "int", 1, doc="how many trailing axes to normalise"),),
    "Normalises each example over its last `dims` axes, then weight * x + bias with weight and bias of those "
    "axes' shape, as torch.nn.LayerNorm(x.shape[-dims:]) (transformers: dims = 1).",
    (((("f32", (2, 5, 6)),), {}), ((("f32", (2, 3, 4, 4)),), dict(dims=3)), ((("f32", (3, 6)),), dict(affine=False))),
    channels=False, torch_cls="LayerNorm")
normalisation(
    "group_norm", _group_spec,
    lambda g, ins, p, a, types, out: g.node(
        "GroupNormalization", [ins[0], *_affine_inputs(g, p, a, _group_spec(types[0], a)[2])], out=g.out,
        num_groups=a.groups, epsilon=a.eps),
    (Attr("groups", "int", doc="channel groups, dividing C"),),
    "Normalises each example over each group of channels together with the spatial axes, then a per-channel "
    "weight and bias, as torch.nn.GroupNorm(groups, C).",
    (((("f32", (2, 4, 3, 3)),), dict(groups=2)), ((("f32", (2, 6, 5)),), dict(groups=3)),
     ((("f32", (2, 4, 3, 3)),), dict(groups=4, affine=False))),
    channels=True, torch_cls="GroupNorm")
normalisation(
    "instance_norm", _instance_spec,
    lambda g, ins, p, a, types, out: g.node(
        "InstanceNormalization", [ins[0], *_affine_inputs(g, p, a, _instance_spec(types[0], a)[2])], out=g.out,
        epsilon=a.eps),
    (),
    "Normalises each channel of each example over its spatial axes, as torch.nn.InstanceNorm2d (no running "
    "statistics, so the same in training and inference); affine = true adds a per-channel weight and bias.",
    (((("f32", (2, 3, 4, 4)),), {}), ((("f32", (2, 3, 5)),), dict(affine=True))),
    channels=True, torch_cls="InstanceNormNd", affine_default=False)
