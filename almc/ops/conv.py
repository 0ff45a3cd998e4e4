"""Convolution, 1-D / 2-D / 3-D by the input's rank: conv(x, channels, kernel, ...)."""
from __future__ import annotations

from math import prod

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ShapeError
from ..types import TensorType
from .common import np_pad, onnx_pads, per_axis, positive, resolve_pads, window_out
from .registry import Attr, Op, Param, Window, register


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
        ps.append(Param("bias", (a.channels,), "zeros"))
    return ps


def conv_lower(g, ins, p, a, types, out):
    n, kernel, stride, dilation, pads = conv_geometry(types[0], a)
    args = [ins[0], p["weight"]] + ([p["bias"]] if a.bias else [])
    return g.node("Conv", args, out=g.out, kernel_shape=list(kernel), strides=list(stride),
                  dilations=list(dilation), pads=onnx_pads(pads), group=a.groups)


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

register(Op(
    name="conv",
    inputs=("x",),
    attrs=(Attr("channels", "int", doc="output channels"),
           Attr("kernel", "ints", doc="kernel size, an int or one per spatial axis"),
           *WINDOW_ATTRS,
           Attr("groups", "int", 1, doc="grouped convolution; groups = channels is depthwise"),
           Attr("bias", "bool", True),
           Attr("init", "str", "auto", ("auto", "he", "glorot", "normal", "uniform_fan_in"))),
    shape=conv_shape, params=conv_params, lower=conv_lower, reference=conv_reference,
    macs=conv_macs, window=conv_window,
    doc="Convolution over 1, 2 or 3 spatial axes (ONNX Conv); weight [channels, C/groups, *kernel].",
    examples=(
        ((("f32", (2, 3, 9, 9)),), dict(channels=4, kernel=3, stride=2, pad=1)),
        ((("f32", (2, 4, 8, 8)),), dict(channels=6, kernel=(3, 2), pad="same", dilation=2, groups=2)),
        ((("f32", (2, 3, 11)),), dict(channels=5, kernel=4, stride=3, pad=((1, 2),), bias=False)),
        ((("f32", (1, 2, 5, 6, 6)),), dict(channels=3, kernel=3, pad=1)),
    ),
))
