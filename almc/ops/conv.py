"""Convolution, 1-D / 2-D / 3-D by the input's rank: conv(x, channels, kernel, ...)."""
from __future__ import annotations

from math import prod

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ShapeError
from ..types import TensorType
from . import conv_forms as forms
from .attrs import weight_inits
from .common import np_pad, per_axis, positive, resolve_pads, window_out
from .conv_forms import ConvGeo
from .registry import Attr, Op, Param, TorchModule, Window, register


def spatial_rank(x: TensorType, opname: str) -> int:
    if x.rank not in (3, 4, 5):
        hint = "conv takes [N, C, L], [N, C, H, W] or [N, C, D, H, W]"
        raise ShapeError(f"{opname} expects a 3-D, 4-D or 5-D input [N, C, spatial...], got {x}", hint)
    return x.rank - 2


def conv_geometry(x: TensorType, a, opname="conv"):
    n = spatial_rank(x, opname)
    kernel = per_axis(a.kernel, n, "kernel")
    stride = per_axis(a.stride, n, "stride")
    dilation = per_axis(a.dilation, n, "dilation")
    positive(kernel, "kernel size")
    positive(stride, "stride")
    positive(dilation, "dilation")
    pads = resolve_pads(a.pad, n, x.dims[2:], kernel, stride, dilation)
    return n, kernel, stride, dilation, pads


def conv_shape(types, a):
    (x,) = types
    n, kernel, stride, dilation, pads = conv_geometry(x, a)
    c = x.dims[1]
    if a.channels <= 0:
        raise ShapeError(f"conv needs a positive number of output channels, got {a.channels}")
    if a.groups <= 0 or (isinstance(c, int) and c % a.groups) or a.channels % a.groups:
        raise ShapeError(f"groups = {a.groups} must divide both the input channels ({c}) and the output channels ({a.channels})")
    out = []
    for i in range(n):
        o = window_out(x.dims[2 + i], kernel[i], stride[i], dilation[i], pads[i], what="kernel")
        if o <= 0:
            raise ShapeError(f"conv output would be empty along spatial axis {i}")
        out.append(o)
    return x.with_dims((x.dims[0], a.channels, *out))


def conv_params(types, a):
    (x,) = types
    n, kernel, *_ = conv_geometry(x, a)
    cin = x.dims[1]
    if isinstance(cin, str):
        raise ShapeError(f"conv needs a known number of input channels, got {cin}")
    k = prod(kernel)
    ps = [Param("weight", (a.channels, cin // a.groups, *kernel), a.init,
                fan_in=cin // a.groups * k, fan_out=a.channels // a.groups * k)]
    if a.bias:
        ps.append(Param("bias", (a.channels,), a.bias_init))
    return ps


def conv_lower(g, ins, p, a, types, out):
    n, kernel, stride, dilation, pads = conv_geometry(types[0], a)
    geo = ConvGeo(kernel, stride, dilation, tuple(pads), a.groups, tuple(types[0].dims[2:]), tuple(out.dims[2:]))
    return forms.forward(g, ins[0], p["weight"], p["bias"] if a.bias else None, forms.choose(geo, g.target), a.channels, types[0].dims[1], g.out)


def conv_nd(x, w, stride, dilation, pads, groups):
    """Direct N-d grouped convolution in numpy (the reference, not fast)."""
    n = x.ndim - 2
    x = np_pad(x, pads)
    K = w.shape[2:]
    eff = [(k - 1) * d + 1 for k, d in zip(K, dilation)]
    win = sliding_window_view(x, eff, axis=tuple(range(2, 2 + n)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)
              + tuple(slice(None, None, d) for d in dilation)]
    N, C = x.shape[:2]
    O = win.shape[2:2 + n]
    M = w.shape[0]
    win = win.reshape(N, groups, C // groups, *O, *K)
    wg = w.reshape(groups, M // groups, C // groups, *K)
    o, k = "xyz"[:n], "uvw"[:n]
    y = np.einsum(f"ngc{o}{k},gmc{k}->ngm{o}", win, wg, optimize=True)
    return y.reshape(N, M, *O)


def conv_reference(xs, p, a):
    (x,) = xs
    t = TensorType("f32", x.shape)
    n, kernel, stride, dilation, pads = conv_geometry(t, a)
    y = conv_nd(x, p["weight"], stride, dilation, pads, a.groups)
    if a.bias:
        y = y + p["bias"].reshape(1, -1, *([1] * n))
    return y.astype(x.dtype)


def conv_macs(types, out, a):
    (x,) = types
    n, kernel, *_ = conv_geometry(x, a)
    return out.per_example() * (x.dims[1] // a.groups) * prod(kernel)


def conv_window(types, a):
    n, kernel, stride, dilation, _ = conv_geometry(types[0], a)
    return [Window(kernel[i], stride[i], dilation[i]) for i in range(n)]


WINDOW_ATTRS = (
    Attr("stride", "ints", 1, doc="step of the window, an int or one per spatial axis"),
    Attr("pad", "pad", 0, doc='zero padding: int, per axis (p, q), per side ((b, e), ...), "same" or "valid"'),
    Attr("dilation", "ints", 1, doc="spacing between kernel taps"),
)

# -- gradients ---------------------------------------------------------------
# The input gradient of a convolution is a transposed convolution of the output
# gradient with the same weights; the weight gradient is a convolution of the
# input by the output gradient with batch and channels swapped (the forward
# stride becomes a dilation and the forward dilation a stride).

def window_grad(geometry, grad_input: str, transposed: bool):
    """The gradient rule of a convolution (transposed: a transposed one) whose sizes `geometry`
    resolves: its input gradient is the op `grad_input`, its weight gradient conv_grad_weight
    (with x and the output gradient exchanged when transposed), its bias gradient a sum."""
    def grad(d, n, gy):
        x = n.inputs[0]
        xt = d.type(x)
        _, kernel, stride, dilation, pads = geometry(xt, n.attrs)[:5]
        geo = {"kernel": kernel, "stride": stride, "pads": tuple(pads), "dilation": dilation,
               "groups": n.attrs.groups}
        gx = None
        if d.wants(x):
            gx = d.op(grad_input, [gy, d.param("weight")], {**geo, "size": tuple(xt.dims[2:])})
        grads = {"weight": d.op("conv_grad_weight", [x, gy] if transposed else [gy, x], geo)}
        if n.attrs.bias:
            grads["bias"] = d.op("sum", [gy], {"axis": (0, *range(2, xt.rank))})
        return [gx], grads
    return grad


conv_grad = window_grad(conv_geometry, "conv_grad_input", transposed=False)


GEO_ATTRS = (Attr("kernel", "any"), Attr("stride", "any"), Attr("pads", "any"), Attr("dilation", "any"),
             Attr("groups", "int", 1))


def _grad_input_shape(types, a):
    g, w = types
    return g.with_dims((g.dims[0], w.dims[1] * a.groups, *a.size))


def _geo(a, size, out) -> ConvGeo:
    return ConvGeo(tuple(a.kernel), tuple(a.stride), tuple(a.dilation), tuple(a.pads), a.groups, tuple(size), tuple(out))


def _grad_input_lower(g, ins, p, a, types, out):
    form = forms.choose(_geo(a, a.size, types[0].dims[2:]), g.target)
    return forms.grad_input(g, ins[0], ins[1], form, types[0].dims[1], out.dims[1], g.out)


def _grad_input_reference(xs, p, a):
    """Scatter each output gradient back through every kernel tap (independent of ONNX)."""
    import itertools

    g, w = xs
    n = len(a.size)
    N, M = g.shape[:2]
    C = w.shape[1] * a.groups
    padded = [a.size[i] + a.pads[i][0] + a.pads[i][1] for i in range(n)]
    gx = np.zeros((N, C, *padded), dtype=np.result_type(g, w))
    mg, cg = M // a.groups, C // a.groups
    O = g.shape[2:]
    for grp in range(a.groups):
        gg = g[:, grp * mg:(grp + 1) * mg]
        wg = w[grp * mg:(grp + 1) * mg]
        for k in itertools.product(*(range(x) for x in a.kernel)):
            contrib = np.einsum("nm...,mc->nc...", gg, wg[(slice(None), slice(None), *k)])
            sl = tuple(slice(k[i] * a.dilation[i], k[i] * a.dilation[i] + a.stride[i] * (O[i] - 1) + 1, a.stride[i])
                       for i in range(n))
            gx[(slice(None), slice(grp * cg, (grp + 1) * cg), *sl)] += contrib
    return gx[(slice(None), slice(None), *(slice(a.pads[i][0], a.pads[i][0] + a.size[i]) for i in range(n)))]


register(Op(
    name="conv_grad_input", inputs=("g", "weight"), attrs=GEO_ATTRS + (Attr("size", "any"),),
    shape=_grad_input_shape, lower=_grad_input_lower, reference=_grad_input_reference, category="gradient",
    doc="Gradient of conv with respect to its input: a transposed convolution (ONNX ConvTranspose, "
        "or the forms of ops/conv_forms.py).",
    examples=(
        ((("f32", (2, 4, 5, 5)), ("f32", (4, 3, 3, 3))),
         dict(kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1), size=(9, 9)), {"symbolic_batch": False}),
        ((("f32", (2, 6, 8, 7)), ("f32", (6, 2, 3, 2))),
         dict(kernel=(3, 2), stride=(1, 1), pads=((2, 2), (1, 0)), dilation=(2, 2), groups=2, size=(8, 8)),
         {"symbolic_batch": False}),
        ((("f32", (2, 5, 4)), ("f32", (5, 3, 4))),
         dict(kernel=(4,), stride=(3,), pads=((1, 2),), dilation=(1,), size=(11,)), {"symbolic_batch": False}),
        ((("f32", (2, 6, 1, 1)), ("f32", (6, 4, 3, 3))),
         dict(kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1), size=(2, 2))),
        ((("f32", (2, 6, 1, 1)), ("f32", (6, 4, 1, 1))),
         dict(kernel=(1, 1), stride=(2, 2), pads=((0, 0), (0, 0)), dilation=(1, 1), size=(2, 2))),
        ((("f32", (2, 4, 1, 3)), ("f32", (4, 2, 3, 3))),
         dict(kernel=(3, 3), stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=2, size=(1, 3)),
         {"symbolic_batch": False}),
        ((("f32", (2, 6, 2, 2)), ("f32", (6, 5, 3, 3))),
         dict(kernel=(3, 3), stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), size=(2, 2))),
        ((("f32", (2, 5, 2, 2)), ("f32", (5, 4, 3, 3))),
         dict(kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1), size=(4, 4))),
        ((("f32", (2, 4, 3)), ("f32", (4, 3, 3))),
         dict(kernel=(3,), stride=(1,), pads=((1, 1),), dilation=(1,), size=(3,))),
        # MatMul + Col2Im with dilation, asymmetric pads and stride
        ((("f32", (2, 3, 7, 6)), ("f32", (3, 4, 3, 2))),
         dict(kernel=(3, 2), stride=(1, 1), pads=((2, 1), (0, 1)), dilation=(2, 1), size=(8, 6)),
         {"symbolic_batch": False}),
        ((("f32", (2, 3, 3, 3)), ("f32", (3, 2, 3, 3))),
         dict(kernel=(3, 3), stride=(2, 3), pads=((1, 0), (2, 1)), dilation=(1, 2), size=(6, 9)),
         {"symbolic_batch": False}),
        # columns of more than COL2IM_MAX_COLUMNS values an example: a ConvTranspose (the 2-D
        # examples above without groups are MatMul + Col2Im)
        ((("f32", (1, 4, 30, 30)), ("f32", (4, 20, 3, 3))),
         dict(kernel=(3, 3), stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), size=(30, 30)),
         {"symbolic_batch": False}),
        # stride 1, 32 channels and more on 64 positions or more: a Conv with the weight flipped
        ((("f32", (2, 32, 8, 8)), ("f32", (32, 3, 3, 3))),
         dict(kernel=(3, 3), stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), size=(8, 8))),
        ((("f32", (1, 32, 9, 9)), ("f32", (32, 2, 3, 2))),
         dict(kernel=(3, 2), stride=(1, 1), pads=((2, 1), (0, 1)), dilation=(2, 1), size=(10, 9)),
         {"symbolic_batch": False}),
        ((("f32", (1, 32, 4, 4, 4)), ("f32", (32, 2, 3, 3, 3))),
         dict(kernel=(3, 3, 3), stride=(1, 1, 1), pads=((1, 1), (1, 1), (1, 1)), dilation=(1, 1, 1), size=(4, 4, 4)),
         {"symbolic_batch": False}),
    ),
))


def _grad_weight_shape(types, a):
    g, x = types
    return g.with_dims((g.dims[1], x.dims[1] // a.groups, *a.kernel))


def _grad_weight_lower(g, ins, p, a, types, out):
    gt, xt = types
    form = forms.choose(_geo(a, xt.dims[2:], gt.dims[2:]), g.target)
    return forms.grad_weight(g, ins[0], ins[1], form, xt.dims[1], gt.dims[1], g.out)


def _grad_weight_reference(xs, p, a):
    g, x = xs
    n = x.ndim - 2
    xp = np_pad(x, a.pads)
    eff = [(k - 1) * dl + 1 for k, dl in zip(a.kernel, a.dilation)]
    win = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + n)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in a.stride)
              + tuple(slice(None, None, dl) for dl in a.dilation)]
    win = win[(slice(None), slice(None)) + tuple(slice(0, o) for o in g.shape[2:])]
    N, C = x.shape[:2]
    M = g.shape[1]
    win = win.reshape(N, a.groups, C // a.groups, *win.shape[2:])
    gg = g.reshape(N, a.groups, M // a.groups, *g.shape[2:])
    o, k = "xyz"[:n], "uvw"[:n]
    w = np.einsum(f"ngc{o}{k},ngm{o}->gmc{k}", win, gg, optimize=True)
    return w.reshape(M, C // a.groups, *a.kernel)


register(Op(
    name="conv_grad_weight", inputs=("g", "x"), attrs=GEO_ATTRS,
    shape=_grad_weight_shape, lower=_grad_weight_lower, reference=_grad_weight_reference, category="gradient",
    doc="Gradient of conv with respect to its weight: a convolution of the input by the output gradient.",
    examples=(
        ((("f32", (2, 4, 5, 5)), ("f32", (2, 3, 9, 9))),
         dict(kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1)), {"symbolic_batch": False}),
        ((("f32", (2, 6, 8, 7)), ("f32", (2, 4, 8, 8))),
         dict(kernel=(3, 2), stride=(1, 1), pads=((2, 2), (1, 0)), dilation=(2, 2), groups=2), {"symbolic_batch": False}),
        ((("f32", (2, 5, 4)), ("f32", (2, 3, 11))),
         dict(kernel=(4,), stride=(3,), pads=((1, 2),), dilation=(1,)), {"symbolic_batch": False}),
        ((("f32", (2, 6, 1, 1)), ("f32", (2, 4, 2, 2))),
         dict(kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1))),
        ((("f32", (2, 6, 1, 1)), ("f32", (2, 4, 2, 2))),
         dict(kernel=(1, 1), stride=(2, 2), pads=((0, 0), (0, 0)), dilation=(1, 1))),
        ((("f32", (2, 4, 1, 3)), ("f32", (2, 4, 1, 3))),
         dict(kernel=(3, 3), stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=2), {"symbolic_batch": False}),
        ((("f32", (2, 6, 2, 2)), ("f32", (2, 5, 2, 2))),
         dict(kernel=(3, 3), stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1))),
        # 4x4 -> 2x2, stride 2: a dense forward and input gradient, a Conv weight gradient
        ((("f32", (2, 5, 2, 2)), ("f32", (2, 4, 4, 4))),
         dict(kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1))),
        ((("f32", (2, 4, 3)), ("f32", (2, 3, 3))),
         dict(kernel=(3,), stride=(1,), pads=((1, 1),), dilation=(1,))),
        # 16 input channels and up: one Gemm per kernel tap (conv_forms)
        ((("f32", (2, 5, 3, 3)), ("f32", (2, 16, 6, 6))),
         dict(kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1))),
        ((("f32", (2, 4, 8, 6)), ("f32", (2, 16, 8, 7))),
         dict(kernel=(3, 2), stride=(1, 1), pads=((2, 2), (1, 0)), dilation=(2, 2)), {"symbolic_batch": False}),
        ((("f32", (2, 3, 4)), ("f32", (2, 16, 11))),
         dict(kernel=(4,), stride=(3,), pads=((1, 2),), dilation=(1,))),
        ((("f32", (1, 3, 2, 3, 3)), ("f32", (1, 16, 4, 5, 5))),
         dict(kernel=(3, 3, 3), stride=(2, 2, 2), pads=((1, 1), (1, 1), (1, 1)), dilation=(1, 1, 1)),
         {"symbolic_batch": False}),
    ),
))


def conv_size_hint(graph, node) -> str | None:
    """An unpadded stride-1 conv shrank its input: the pad that would have kept the size."""
    a = node.attrs
    if a.pad != 0 or a.stride != 1:
        return None
    k = a.kernel if isinstance(a.kernel, int) else a.kernel[0]
    p = (k - 1) * (a.dilation if isinstance(a.dilation, int) else 1) // 2
    if not p:
        return None
    size = "x".join(str(d) for d in graph.node(node.inputs[0]).type.dims[2:])
    return f"pad = {p} in {node.layer} keeps {size}"


register(Op(
    name="conv",
    inputs=("x",),
    attrs=(Attr("channels", "int", doc="output channels"),
           Attr("kernel", "ints", doc="kernel size, an int or one per spatial axis"),
           *WINDOW_ATTRS,
           Attr("groups", "int", 1, doc="grouped convolution; groups = channels is depthwise"),
           Attr("bias", "bool", True),
           *weight_inits()),
    shape=conv_shape, params=conv_params, lower=conv_lower, reference=conv_reference,
    macs=conv_macs, window=conv_window, grad=conv_grad, size_hint=conv_size_hint,
    out_channel_axis=lambda rank: 1, torch=TorchModule("ConvNd", "conv"),
    doc="Convolution over 1, 2 or 3 spatial axes (ONNX Conv); weight [channels, C/groups, *kernel].",
    examples=(
        ((("f32", (2, 3, 9, 9)),), dict(channels=4, kernel=3, stride=2, pad=1)),
        ((("f32", (2, 4, 8, 8)),), dict(channels=6, kernel=(3, 2), pad="same", dilation=2, groups=2)),
        ((("f32", (2, 3, 11)),), dict(channels=5, kernel=4, stride=3, pad=((1, 2),), bias=False)),
        ((("f32", (1, 2, 5, 6, 6)),), dict(channels=3, kernel=3, pad=1)),
        # small maps (conv_forms): taps that meet only padding dropped; one output position = Gemm
        ((("f32", (2, 8, 1, 1)),), dict(channels=6, kernel=3, pad=1)),
        ((("f32", (2, 4, 2, 2)),), dict(channels=5, kernel=3, stride=2, pad=1)),
        ((("f32", (2, 4, 2, 2)),), dict(channels=6, kernel=1, stride=2, bias=False)),
        ((("f32", (2, 4, 1, 3)),), dict(channels=4, kernel=3, pad=1, groups=2)),
        ((("f32", (2, 5, 2, 2)),), dict(channels=6, kernel=3, pad=1)),
        ((("f32", (2, 4, 4, 4)),), dict(channels=5, kernel=3, stride=2, pad=1)),  # dense, not its weight gradient
        ((("f32", (2, 3, 3)),), dict(channels=4, kernel=3, pad=1, bias=False)),
    ),
))
