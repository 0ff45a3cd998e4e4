"""Pooling: maxpool, avgpool (1-D/2-D/3-D by rank) and global_avgpool."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ShapeError
from ..types import TensorType
from .common import onnx_pads, per_axis, positive, resolve_pads, window_out
from .registry import Attr, Op, Window, register


def pool_geometry(x: TensorType, a, opname):
    if x.rank not in (3, 4, 5):
        raise ShapeError(f"{opname} expects a 3-D, 4-D or 5-D input [N, C, spatial...], got {x}")
    n = x.rank - 2
    kernel = per_axis(a.kernel, n, "kernel")
    stride = per_axis(a.stride if a.stride is not None else a.kernel, n, "stride")
    positive(kernel, "kernel size")
    positive(stride, "stride")
    dil = (1,) * n
    pads = resolve_pads(a.pad, n, x.dims[2:], kernel, stride, dil)
    for i, (b, e) in enumerate(pads):
        if b >= kernel[i] or e >= kernel[i]:
            raise ShapeError(f"{opname} padding ({max(b, e)}) must be smaller than its kernel ({kernel[i]})")
    out = [window_out(x.dims[2 + i], kernel[i], stride[i], 1, pads[i], a.ceil, what="pooling window")
           for i in range(n)]
    return n, kernel, stride, pads, out


def pool_shape_rule(opname):
    def shape(types, a):
        (x,) = types
        *_, out = pool_geometry(x, a, opname)
        return x.with_dims((*x.dims[:2], *out))
    return shape


def pool_window(types, a):
    n, kernel, stride, _, _ = pool_geometry(types[0], a, "pool")
    return [Window(kernel[i], stride[i]) for i in range(n)]


def windows(x, kernel, stride, pads, out, fill):
    """Sliding windows [N, C, *out, *kernel] over x padded with `fill` (ceil mode pads the end further)."""
    n = len(kernel)
    widths = [(0, 0), (0, 0)]
    for i in range(n):
        need = (out[i] - 1) * stride[i] + kernel[i]
        extra = max(need - (x.shape[2 + i] + pads[i][0] + pads[i][1]), 0)
        widths.append((pads[i][0], pads[i][1] + extra))
    xp = np.pad(x, widths, constant_values=fill)
    w = sliding_window_view(xp, kernel, axis=tuple(range(2, 2 + n)))
    return w[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)][
        (slice(None), slice(None)) + tuple(slice(0, o) for o in out)]


def maxpool_reference(xs, p, a):
    (x,) = xs
    n, kernel, stride, pads, out = pool_geometry(TensorType("f32", x.shape), a, "maxpool")
    w = windows(x, kernel, stride, pads, out, -np.inf)
    return w.max(axis=tuple(range(-n, 0))).astype(x.dtype)


def avgpool_reference(xs, p, a):
    (x,) = xs
    n, kernel, stride, pads, out = pool_geometry(TensorType("f32", x.shape), a, "avgpool")
    axes = tuple(range(-n, 0))
    total = windows(x, kernel, stride, pads, out, 0.0).sum(axis=axes)
    if a.count_pad:  # padding counts, the ceil-mode overhang does not (ONNX / PyTorch)
        ones = np.pad(np.ones(x.shape, x.dtype), [(0, 0), (0, 0)] + list(pads), constant_values=1.0)
        inner = [(0, 0)] * n
        count = windows(ones, kernel, stride, inner, out, 0.0).sum(axis=axes)
    else:
        count = windows(np.ones(x.shape, x.dtype), kernel, stride, pads, out, 0.0).sum(axis=axes)
    return (total / count).astype(x.dtype)


def pool_lower_rule(onnx_op):
    def lower(g, ins, p, a, types, out):
        n, kernel, stride, pads, _ = pool_geometry(types[0], a, onnx_op)
        extra = {"count_include_pad": int(a.count_pad)} if onnx_op == "AveragePool" else {}
        return g.node(onnx_op, [ins[0]], out=g.out, kernel_shape=list(kernel), strides=list(stride),
                      pads=onnx_pads(pads), ceil_mode=int(a.ceil), **extra)
    return lower



# -- gradients ---------------------------------------------------------------

def maxpool_grad(d, n, gy):
    x = n.inputs[0]
    nsp, kernel, stride, pads, _ = pool_geometry(d.type(x), n.attrs, "maxpool")
    return [d.op("maxpool_grad", [gy, x], {"kernel": kernel, "stride": stride, "pads": tuple(pads),
                                           "ceil": n.attrs.ceil})], {}


def _maxpool_grad_lower(g, ins, p, a, types, out):
    """Route each output gradient to the input element that won its window, through
    MaxPool's indices (flat positions in the unpadded input) and a scatter-add."""
    gy, x = ins
    idx = g.tmp("indices")
    g.node("MaxPool", [x], outputs=[g.tmp("max"), idx], kernel_shape=list(a.kernel), strides=list(a.stride),
           pads=onnx_pads(a.pads), ceil_mode=int(a.ceil))
    flat = g.const("flat", [-1], np.int64)
    zeros = g.node("Mul", [g.node("Reshape", [x, flat]), g.const("zero", 0.0)])
    scattered = g.node("ScatterElements", [zeros, g.node("Reshape", [idx, flat]), g.node("Reshape", [gy, flat])],
                       axis=0, reduction="add")
    return g.node("Reshape", [scattered, g.node("Shape", [x])], out=g.out)


def _maxpool_grad_reference(xs, p, a):
    gy, x = xs
    n = x.ndim - 2
    out = gy.shape[2:]
    w = windows(x, a.kernel, a.stride, a.pads, out, -np.inf)  # [N, C, *out, *kernel]
    flatw = w.reshape(*w.shape[:2 + n], -1)
    arg = flatw.argmax(axis=-1)  # first maximum, as onnxruntime
    gx = np.zeros(tuple(x.shape[:2]) + tuple(x.shape[2 + i] + a.pads[i][0] + a.pads[i][1] + a.stride[i] * out[i]
                                             for i in range(n)), dtype=np.result_type(gy, x))
    for pos in np.ndindex(*out):
        k = np.unravel_index(arg[(slice(None), slice(None), *pos)], a.kernel)
        for nn in range(x.shape[0]):
            for c in range(x.shape[1]):
                at = tuple(pos[i] * a.stride[i] + k[i][nn, c] for i in range(n))
                gx[(nn, c, *at)] += gy[(nn, c, *pos)]
    return gx[(slice(None), slice(None), *(slice(a.pads[i][0], a.pads[i][0] + x.shape[2 + i]) for i in range(n)))]


register(Op(
    name="maxpool_grad", inputs=("g", "x"),
    attrs=(Attr("kernel", "any"), Attr("stride", "any"), Attr("pads", "any"), Attr("ceil", "bool", False)),
    shape=lambda types, a: types[1], lower=_maxpool_grad_lower, reference=_maxpool_grad_reference,
    category="gradient", doc="Gradient of maxpool: each window's gradient goes to its maximum.",
    examples=(
        ((("f32", (2, 3, 4, 4)), ("f32", (2, 3, 8, 8))), dict(kernel=(2, 2), stride=(2, 2), pads=((0, 0), (0, 0)))),
        ((("f32", (2, 2, 5, 5)), ("f32", (2, 2, 9, 9))),
         dict(kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)), ceil=True)),
        ((("f32", (2, 2, 3)), ("f32", (2, 2, 7))), dict(kernel=(3,), stride=(2,), pads=((0, 0),))),
    ),
))


POOL_ATTRS = (
    Attr("kernel", "ints", doc="window size, an int or one per spatial axis"),
    Attr("stride", "ints", None, doc="defaults to the kernel size"),
    Attr("pad", "pad", 0),
    Attr("ceil", "bool", False, doc="ceil mode: keep a last partial window"),
)

register(Op(
    name="maxpool", inputs=("x",), attrs=POOL_ATTRS,
    shape=pool_shape_rule("maxpool"), lower=pool_lower_rule("MaxPool"), reference=maxpool_reference,
    grad=maxpool_grad,
    window=pool_window, category="pooling",
    doc="Max pooling over 1, 2 or 3 spatial axes (ONNX MaxPool).",
    examples=(
        ((("f32", (2, 3, 8, 8)),), dict(kernel=2)),
        ((("f32", (2, 3, 9, 9)),), dict(kernel=3, stride=2, pad=1, ceil=True)),
        ((("f32", (2, 2, 7)),), dict(kernel=3, stride=2)),
        ((("f32", (1, 2, 4, 6, 6)),), dict(kernel=(1, 2, 2))),
    ),
))

register(Op(
    name="avgpool", inputs=("x",), attrs=POOL_ATTRS + (Attr("count_pad", "bool", False, doc="count padded zeros in the mean"),),
    shape=pool_shape_rule("avgpool"), lower=pool_lower_rule("AveragePool"), reference=avgpool_reference,
    window=pool_window, category="pooling",
    doc="Average pooling over 1, 2 or 3 spatial axes (ONNX AveragePool).",
    examples=(
        ((("f32", (2, 3, 8, 8)),), dict(kernel=2)),
        ((("f32", (2, 3, 9, 9)),), dict(kernel=3, stride=2, pad=1)),
        ((("f32", (2, 3, 9, 9)),), dict(kernel=3, stride=2, pad=1, count_pad=True)),
        ((("f32", (2, 2, 10)),), dict(kernel=3, stride=2, ceil=True)),
    ),
))


def gap_shape(types, a):
    (x,) = types
    if x.rank < 3:
        raise ShapeError(f"global_avgpool expects an input with spatial axes [N, C, ...], got {x}")
    return x.with_dims((*x.dims[:2], *([1] * (x.rank - 2))))


register(Op(
    name="global_avgpool", inputs=("x",),
    shape=gap_shape,
    lower=lambda g, ins, p, a, types, out: g.node("GlobalAveragePool", [ins[0]], out=g.out),
    reference=lambda xs, p, a: xs[0].mean(axis=tuple(range(2, xs[0].ndim)), keepdims=True),
    window=lambda types, a: "global", category="pooling",
    doc="Mean over every spatial axis; keeps them as size 1 ([N, C, 1, 1]).",
    examples=(((("f32", (2, 3, 5, 5)),), {}), ((("f32", (2, 4, 3, 2, 2)),), {})),
))
