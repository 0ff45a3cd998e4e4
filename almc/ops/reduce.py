"""Reductions (mean, sum), the ops gradients need to undo broadcasting
(sum_to, expand_as, reduce_sum), matrix products (gemm), and `parameter`,
which reads a parameter as a tensor (for regularisers and optimisers)."""
from __future__ import annotations

from math import prod

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .common import count_elements
from .registry import Attr, Op, register


def _axes(x: TensorType, axis) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(x.rank))
    axes = axis if isinstance(axis, tuple) else (axis,)
    for a in axes:
        if not -x.rank <= a < x.rank:
            raise ShapeError(f"axis {a} is out of range for {x}")
    return tuple(sorted(a % x.rank for a in axes))


def _reduced(x: TensorType, axes, keepdims=False) -> TensorType:
    if keepdims:
        return x.with_dims(tuple(1 if i in axes else d for i, d in enumerate(x.dims)))
    return x.with_dims(tuple(d for i, d in enumerate(x.dims) if i not in axes))


def _lower_reduce(onnx_op):
    def lower(g, ins, p, a, types, out):
        axes = _axes(types[0], a.axis)
        if not axes:
            return g.node("Identity", [ins[0]], out=g.out)
        return g.node(onnx_op, [ins[0], g.const("axes", list(axes), np.int64)], out=g.out,
                      keepdims=int(getattr(a, "keepdims", False)))
    return lower


def _reduce_grad(mean: bool):
    """The gradient of sum (or mean) broadcasts back over the reduced axes (divided by their size)."""
    def grad(d, node, gy):
        axes = _axes(d.g.node(node.inputs[0]).type, node.attrs.axis)
        return [d.op("expand_as", [gy, node.inputs[0]], {"axes": axes, "mean": mean, "kept": node.attrs.keepdims})], {}
    return grad


KEEPDIMS = Attr("keepdims", "bool", False, doc="keep each reduced axis with size 1")
AXIS = Attr("axis", "any", None, doc="an axis or a tuple of axes; all when none")


def _reduce_shape(types, a):
    return _reduced(types[0], _axes(types[0], a.axis), a.keepdims)


def _np_axis(x, a):
    return _axes(TensorType(str(x.dtype), x.shape), a.axis)


register(Op(
    name="mean", inputs=("x",), attrs=(AXIS, KEEPDIMS),
    shape=_reduce_shape, lower=_lower_reduce("ReduceMean"),
    reference=lambda xs, p, a: np.asarray(xs[0].mean(axis=_np_axis(xs[0], a), keepdims=a.keepdims)),
    grad=_reduce_grad(mean=True), category="reduction",
    doc="Mean over the given axes, or over every axis (a scalar); mean(loss) averages a batch of losses.",
    examples=(((("f32", (4, 3)),), {}), ((("f32", (2, 3, 4)),), dict(axis=(1, 2))), ((("f32", (5,)),), dict(axis=0)),
              ((("f32", (2, 3, 4)),), dict(axis=-1, keepdims=True))),
))

register(Op(
    name="sum", inputs=("x",), attrs=(AXIS, KEEPDIMS),
    shape=_reduce_shape, lower=_lower_reduce("ReduceSum"),
    reference=lambda xs, p, a: np.asarray(xs[0].sum(axis=_np_axis(xs[0], a), keepdims=a.keepdims)),
    grad=_reduce_grad(mean=False), category="reduction",
    doc="Sum over the given axes, or over every axis (a scalar).",
    examples=(((("f32", (4, 3)),), {}), ((("f32", (2, 3, 4)),), dict(axis=-1)),
              ((("f32", (2, 3, 4)),), dict(axis=(0, 2), keepdims=True))),
))


def _extreme_grad(d, node, gy):
    return [d.op("extreme_grad", [gy, node.inputs[0], node.id], {"axis": node.attrs.axis,
                                                                  "keepdims": node.attrs.keepdims})], {}


for _name, _onnx, _fn in (("max", "ReduceMax", np.max), ("min", "ReduceMin", np.min)):
    register(Op(
        name=_name, inputs=("x",), attrs=(AXIS, KEEPDIMS),
        shape=_reduce_shape, lower=_lower_reduce(_onnx),
        reference=lambda xs, p, a, _fn=_fn: np.asarray(_fn(xs[0], axis=_np_axis(xs[0], a), keepdims=a.keepdims)),
        grad=_extreme_grad, category="reduction",
        doc=f"{'Largest' if _name == 'max' else 'Smallest'} value over the given axes, or over every axis, when "
            f"{_name}() is given one tensor; with two or more operands it is the elementwise "
            f"{'maximum' if _name == 'max' else 'minimum'}. Ties share the gradient equally.",
        examples=(((("f32", (4, 3)),), {}), ((("f32", (2, 3, 4)),), dict(axis=1)),
                  ((("f32", (2, 3, 4)),), dict(axis=(1, 2), keepdims=True))),
    ))


# Builtins of .alm that are ops when given a tensor: (elementwise op of several operands, op of one tensor)
TENSOR_FORMS = {"max": ("maximum", "max"), "min": ("minimum", "min"), "abs": (None, "abs")}


def _unreduce(g, t, axes, keepdims):
    """A reduced tensor with its reduced axes back as size 1."""
    return t if keepdims or not axes else g.node("Unsqueeze", [t, g.const("axes", list(axes), np.int64)])


def _extreme_grad_lower(g, ins, p, a, types, out):  # g * (x == y) / (number of elements equal to y)
    gy, x, y = ins
    axes = _axes(types[1], a.axis)
    hit = g.node("Cast", [g.node("Equal", [x, _unreduce(g, y, axes, a.keepdims)])], to=1)
    count = g.node("Max", [g.node("ReduceSum", [hit, g.const("axes", list(axes), np.int64)], keepdims=1),
                           g.const("one", 1.0)])  # y is the max of x, so at least 1; not 0 / 0 on other inputs
    share = g.node("Div", [_unreduce(g, gy, axes, a.keepdims), count])
    return g.node("Mul", [hit, share], out=g.out)


def _extreme_grad_reference(xs, p, a):
    gy, x, y = xs
    axes = _np_axis(x, a)
    if not a.keepdims:
        y, gy = np.expand_dims(y, axes), np.expand_dims(gy, axes)
    hit = (x == y).astype(np.result_type(gy, x))
    return hit * gy / np.maximum(hit.sum(axis=axes, keepdims=True), 1)


register(Op(
    name="extreme_grad", inputs=("g", "x", "y"), attrs=(AXIS, KEEPDIMS),
    shape=lambda types, a: types[1], lower=_extreme_grad_lower, reference=_extreme_grad_reference,
    category="gradient", doc="Gradient of max / min over axes: g where x equals the result y, shared among ties.",
    examples=(((("f32", ()), ("f32", (4, 3)), ("f32", ())), {}),
              ((("f32", (2, 4)), ("f32", (2, 3, 4)), ("f32", (2, 4))), dict(axis=1)),
              ((("f32", (2, 1, 1)), ("f32", (2, 3, 4)), ("f32", (2, 1, 1))), dict(axis=(1, 2), keepdims=True))),
))


def _argmax_shape(types, a):
    x = types[0]
    axis = _axes(x, a.axis)[0]
    return TensorType("i64", _reduced(x, (axis,), a.keepdims).dims)


register(Op(
    name="argmax", inputs=("x",), attrs=(Attr("axis", "int", -1), KEEPDIMS),
    shape=_argmax_shape,
    lower=lambda g, ins, p, a, types, out: g.node("ArgMax", ins, out=g.out, axis=a.axis, keepdims=int(a.keepdims)),
    reference=lambda xs, p, a: np.argmax(xs[0], axis=a.axis, keepdims=a.keepdims).astype(np.int64),
    category="reduction",
    doc="Index (int64) of the largest value along an axis (the last by default); the first on ties. Inference "
        "only: it has no gradient, so no objective may depend on it.",
    examples=(((("f32", (4, 10)),), {}), ((("f32", (2, 3, 5)),), dict(axis=1, keepdims=True))),
))


def _expand_shape(types, a):
    g, x = types
    if g.rank + (len(a.axes) if g.rank and not a.kept else 0) != x.rank and g.rank != 0:
        raise ShapeError(f"expand_as: {g} with axes {a.axes} does not align with {x}")
    return x.with_dims(x.dims)


def _expand_lower(g, ins, p, a, types, out):
    src = ins[0]
    shape = g.node("Shape", [ins[1]])
    if a.mean:  # divided before it is expanded: fewer values, and no scalar against [N, C, 1, 1]
        axes = list(a.axes) if types[0].rank else list(range(types[1].rank))
        count = count_elements(g, shape, g.const("axes_i", axes, np.int64))
        src = g.node("Div", [src, count])
    if types[0].rank and a.axes and not a.kept:
        src = g.node("Unsqueeze", [src, g.const("axes", list(a.axes), np.int64)])
    return g.node("Expand", [src, shape], out=g.out)


def _expand_reference(xs, p, a):
    gy, x = xs
    if gy.ndim and a.axes and not a.kept:
        gy = np.expand_dims(gy, a.axes)
    out = np.broadcast_to(gy, x.shape).astype(np.result_type(gy, np.float32), copy=True)
    if a.mean:
        axes = a.axes if gy.ndim else range(x.ndim)
        out /= prod(x.shape[i] for i in axes)
    return out


register(Op(
    name="expand_as", inputs=("g", "like"),
    attrs=(Attr("axes", "any", ()), Attr("mean", "bool", False), Attr("kept", "bool", False)),
    shape=_expand_shape, lower=_expand_lower, reference=_expand_reference, category="gradient",
    doc="Broadcasts g to the shape of `like`, re-inserting the reduced `axes` unless they were `kept` with size 1 "
        "(the gradient of mean / sum).",
    examples=(((("f32", ()), ("f32", (2, 3))), {}), ((("f32", (3,)), ("f32", (2, 3, 4))), dict(axes=(0, 2))),
              ((("f32", ()), ("f32", (2, 3))), dict(mean=True)),
              ((("f32", (3,)), ("f32", (2, 3, 4))), dict(axes=(0, 2), mean=True)),
              ((("f32", (1, 3, 1)), ("f32", (2, 3, 4))), dict(axes=(0, 2), mean=True, kept=True))),
))


def _sum_to_axes(x: TensorType, shape):
    lead = x.rank - len(shape)
    if lead < 0:
        raise ShapeError(f"sum_to: cannot reduce {x} to the larger rank of {shape}")
    keep = [lead + i for i, d in enumerate(shape) if d == 1 and x.dims[lead + i] != 1]
    return tuple(range(lead)), tuple(keep)


def _sum_to_lower(g, ins, p, a, types, out):
    lead, keep = _sum_to_axes(types[0], a.shape)
    y = ins[0]
    if keep:
        y = g.node("ReduceSum", [y, g.const("keep", list(keep), np.int64)], keepdims=1,
                   out=None if lead else g.out)
    if lead:
        y = g.node("ReduceSum", [y, g.const("lead", list(lead), np.int64)], keepdims=0, out=g.out)
    return y


def _sum_to_reference(xs, p, a):
    lead, keep = _sum_to_axes(TensorType("f32", xs[0].shape), a.shape)
    y = xs[0].sum(axis=keep, keepdims=True) if keep else xs[0]
    return y.sum(axis=lead) if lead else y


register(Op(
    name="sum_to", inputs=("x",), attrs=(Attr("shape", "any"),),
    shape=lambda types, a: (_sum_to_axes(types[0], a.shape), types[0].with_dims(tuple(a.shape)))[1],
    lower=_sum_to_lower, reference=_sum_to_reference, category="gradient",
    doc="Sums a broadcast result back to `shape` (numpy broadcasting in reverse).",
    examples=(((("f32", (2, 3, 4)),), dict(shape=(3, 1))), ((("f32", (2, 3, 4, 4)),), dict(shape=(3, 1, 1)))),
))


def _gemm_shape(types, a):
    x, y = types
    if x.rank != 2 or y.rank != 2:
        raise ShapeError(f"gemm expects 2-D operands, got {x} and {y}")
    m, k = (x.dims[1], x.dims[0]) if a.trans_a else x.dims
    k2, n = (y.dims[1], y.dims[0]) if a.trans_b else y.dims
    if k != k2:
        raise ShapeError(f"gemm: inner dimensions differ: {x} and {y}")
    return x.with_dims((m, n))


register(Op(
    name="gemm", inputs=("a", "b"), attrs=(Attr("trans_a", "bool", False), Attr("trans_b", "bool", False)),
    shape=_gemm_shape,
    lower=lambda g, ins, p, a, types, out: g.node("Gemm", ins, out=g.out, transA=int(a.trans_a), transB=int(a.trans_b)),
    reference=lambda xs, p, a: (xs[0].T if a.trans_a else xs[0]) @ (xs[1].T if a.trans_b else xs[1]),
    category="gradient", doc="Matrix product of 2-D tensors, optionally transposed (ONNX Gemm).",
    examples=(((("f32", (3, 4)), ("f32", (4, 5))), {}, {"symbolic_batch": False}),
              ((("f32", (4, 3)), ("f32", (4, 5))), dict(trans_a=True), {"symbolic_batch": False}),
              ((("f32", (3, 4)), ("f32", (5, 4))), dict(trans_b=True), {"symbolic_batch": False})),
))


PARAMETER = "read_param"  # the op that reads a parameter as a tensor (regularisers, optimisers)


register(Op(
    name=PARAMETER, inputs=(), attrs=(Attr("name", "str"), Attr("shape", "any", None)), leaf=True,
    shape=lambda types, a: TensorType("f32", tuple(a.shape)),
    lower=lambda g, ins, p, a, types, out: p[a.name],
    reference=lambda xs, p, a: p[a.name],
    grad=lambda d, node, gy: ([], {node.attrs.name: gy}), category="gradient",
    doc="A parameter of another node, read as a tensor (regularisers, optimiser updates).",
))
