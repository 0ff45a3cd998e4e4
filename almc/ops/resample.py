"""Ops that change spatial resolution: conv_transpose, upsample, crop, center_crop (U-Net's decoder)."""
from __future__ import annotations

from dataclasses import replace
from math import prod

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from . import conv_forms as forms
from .attrs import weight_inits
from .common import np_pad, onnx_pads, per_axis, positive, resolve_pads
from .conv import GEO_ATTRS, WINDOW_ATTRS, spatial_rank, window_grad
from .conv_forms import ConvGeo
from .registry import Attr, Op, Param, TorchModule, Window, register


def known_spatial(x: TensorType, opname: str) -> tuple[int, ...]:
    for d in x.dims[2:]:
        if isinstance(d, str):
            raise ShapeError(f"{opname} needs known spatial sizes, got {x}")
    return x.dims[2:]


# ---- conv_transpose ---------------------------------------------------------------

def ct_geometry(x: TensorType, a):
    """(n, kernel, stride, dilation, pads, output_pad, out spatial sizes) of a transposed conv."""
    n = spatial_rank(x, "conv_transpose")
    kernel, stride, dilation, opad = (per_axis(v, n, w) for v, w in (
        (a.kernel, "kernel"), (a.stride, "stride"), (a.dilation, "dilation"), (a.output_pad, "output_pad")))
    positive(kernel, "kernel size")
    positive(stride, "stride")
    positive(dilation, "dilation")
    for i in range(n):
        if not 0 <= opad[i] < max(stride[i], dilation[i]):
            raise ShapeError(f"conv_transpose output_pad ({opad[i]}) must be >= 0 and smaller than the stride "
                             f"({stride[i]}) or the dilation ({dilation[i]})",
                             "output_pad only picks among the sizes a strided conv maps to one size")
    size = known_spatial(x, "conv_transpose")
    if a.pad == "same":  # out = in * stride (+ output_pad): the inverse of a "same" strided conv
        pads = []
        for i in range(n):
            total = (kernel[i] - 1) * dilation[i] + 1 - stride[i]
            if total < 0:
                raise ShapeError(f'conv_transpose pad = "same" needs the kernel ({kernel[i]}, dilation '
                                 f'{dilation[i]}) to span at least the stride ({stride[i]})',
                                 "use kernel >= stride, or an explicit pad with output_pad")
            pads.append((total // 2, total - total // 2))
    else:
        pads = resolve_pads(a.pad, n, size, kernel, stride, dilation)
    out = []
    for i in range(n):
        o = (size[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 + opad[i] - sum(pads[i])
        if o <= 0:
            raise ShapeError(f"conv_transpose output would be empty along spatial axis {i} of {x}: "
                             f"padding {pads[i]} removes more than the {o + sum(pads[i])} positions it makes")
        out.append(o)
    return n, kernel, stride, dilation, pads, opad, out


def ct_shape(types, a):
    (x,) = types
    *_, out = ct_geometry(x, a)
    c = x.dims[1]
    if a.channels <= 0:
        raise ShapeError(f"conv_transpose needs a positive number of output channels, got {a.channels}")
    if a.groups <= 0 or (isinstance(c, int) and c % a.groups) or a.channels % a.groups:
        raise ShapeError(f"groups = {a.groups} must divide both the input channels ({c}) "
                         f"and the output channels ({a.channels})")
    return x.with_dims((x.dims[0], a.channels, *out))


def ct_params(types, a):
    (x,) = types
    kernel = ct_geometry(x, a)[1]
    cin = x.dims[1]
    if isinstance(cin, str):
        raise ShapeError(f"conv_transpose needs a known number of input channels, got {x}")
    k = prod(kernel)
    # Fans follow PyTorch's convention for transposed weights [C_in, C_out/g, *k]: fan_in = dim 1 * k.
    ps = [Param("weight", (cin, a.channels // a.groups, *kernel), a.init,
                fan_in=a.channels // a.groups * k, fan_out=cin // a.groups * k)]
    if a.bias:
        ps.append(Param("bias", (a.channels,), a.bias_init))
    return ps


def ct_lower(g, ins, p, a, types, out):
    n, kernel, stride, dilation, pads, opad, _ = ct_geometry(types[0], a)
    geo = ConvGeo(tuple(kernel), tuple(stride), tuple(dilation), tuple(pads), a.groups, tuple(out.dims[2:]),
                  tuple(types[0].dims[2:]))
    if g.target == "portable" and a.groups > 1 and forms.transposed_portable(geo):
        return forms.transposed_as_conv(g, ins[0], p["weight"], geo, types[0].dims[1], a.channels, g.out,
                                        p["bias"] if a.bias else None)
    args = [ins[0], p["weight"]] + ([p["bias"]] if a.bias else [])
    return g.node("ConvTranspose", args, out=g.out, kernel_shape=list(kernel), strides=list(stride),
                  dilations=list(dilation), pads=onnx_pads(pads), output_padding=list(opad), group=a.groups)


def conv_transpose_nd(x, w, stride, dilation, pads, opad, groups):
    """Transposed conv by scatter-add: each kernel tap adds x * w into a strided slice of the output."""
    N, C, *I = x.shape
    K = w.shape[2:]
    mg = w.shape[1]
    full = [(i - 1) * s + d * (k - 1) + 1 + o for i, s, d, k, o in zip(I, stride, dilation, K, opad)]
    y = np.zeros((N, groups, mg, *full))
    xg = x.astype(np.float64).reshape(N, groups, C // groups, *I)
    wg = w.astype(np.float64).reshape(groups, C // groups, mg, *K)
    sp = "xyz"[:len(I)]
    for tap in np.ndindex(*K):
        contrib = np.einsum(f"ngc{sp},gcm->ngm{sp}", xg, wg[(slice(None),) * 3 + tap])
        at = tuple(slice(t * d, t * d + (i - 1) * s + 1, s) for t, d, i, s in zip(tap, dilation, I, stride))
        y[(slice(None),) * 3 + at] += contrib
    y = y.reshape(N, groups * mg, *full)
    return y[(slice(None),) * 2 + tuple(slice(b, f - e) for (b, e), f in zip(pads, full))]


def ct_reference(xs, p, a):
    (x,) = xs
    n, kernel, stride, dilation, pads, opad, _ = ct_geometry(TensorType("f32", x.shape), a)
    y = conv_transpose_nd(x, p["weight"], stride, dilation, pads, opad, a.groups)
    if a.bias:
        y = y + p["bias"].reshape(1, -1, *([1] * n))
    return y.astype(x.dtype)


# The gradients of a transposed convolution swap conv's: the input gradient is a plain
# convolution of the output gradient with the same weights [C, M/groups, *k] (read as a conv
# weight from M to C channels); the weight gradient is conv's weight gradient with the roles
# of x and the output gradient exchanged (conv_grad_weight(x, g)).

ct_grad = window_grad(ct_geometry, "conv_transpose_grad_input", transposed=True)


def _ct_grad_input_shape(types, a):
    g, w = types
    n = len(a.size)
    if g.rank != n + 2 or w.rank != n + 2 or w.dims[1] * a.groups != g.dims[1]:
        raise ShapeError(f"conv_transpose_grad_input: gradient {g} does not fit the weight {w}")
    return g.with_dims((g.dims[0], w.dims[0], *a.size))


def _ct_grad_input_lower(g, ins, p, a, types, out):
    """ONNX Conv; when output_pad reaches the stride (possible with dilation > stride) the conv
    yields more positions than x has, and the extra ones are cut off."""
    n = len(a.size)
    ysz = types[0].dims[2:]
    full = [(ysz[i] + a.pads[i][0] + a.pads[i][1] - a.dilation[i] * (a.kernel[i] - 1) - 1) // a.stride[i] + 1
            for i in range(n)]
    extra = full != list(a.size)
    y = g.node("Conv", ins, out=None if extra else g.out, kernel_shape=list(a.kernel), strides=list(a.stride),
               dilations=list(a.dilation), pads=onnx_pads(a.pads), group=a.groups)
    if not extra:
        return y
    return g.node("Slice", [y, g.const("starts", [0] * n, np.int64), g.const("ends", list(a.size), np.int64),
                            g.const("axes", list(range(2, n + 2)), np.int64)], out=g.out)


def _ct_grad_input_reference(xs, p, a):
    """Gather, tap by tap: gx[c, i] += sum over m of g_padded[m, i * stride + tap * dilation] * w[c, m, tap]."""
    g, w = xs
    gp = np_pad(g, a.pads)
    N, M = g.shape[:2]
    C = w.shape[0]
    mg, cg = M // a.groups, C // a.groups
    gx = np.zeros((N, C, *a.size), dtype=np.result_type(g, w))
    for grp in range(a.groups):
        gg = gp[:, grp * mg:(grp + 1) * mg]
        for tap in np.ndindex(*a.kernel):
            at = tuple(slice(t * dl, t * dl + s * (size - 1) + 1, s)
                       for t, dl, s, size in zip(tap, a.dilation, a.stride, a.size))
            wt = w[(slice(grp * cg, (grp + 1) * cg), slice(None), *tap)]
            gx[:, grp * cg:(grp + 1) * cg] += np.einsum("nm...,cm->nc...", gg[(slice(None), slice(None), *at)], wt)
    return gx


register(Op(
    name="conv_transpose_grad_input", inputs=("g", "weight"), attrs=GEO_ATTRS + (Attr("size", "any"),),
    shape=_ct_grad_input_shape, lower=_ct_grad_input_lower, reference=_ct_grad_input_reference,
    category="gradient",
    doc="Gradient of conv_transpose with respect to its input: a convolution with the same weights (ONNX Conv).",
    examples=(
        ((("f32", (2, 3, 10, 10)), ("f32", (4, 3, 2, 2))),
         dict(kernel=(2, 2), stride=(2, 2), pads=((0, 0), (0, 0)), dilation=(1, 1), size=(5, 5)),
         {"symbolic_batch": False}),
        ((("f32", (2, 6, 12, 12)), ("f32", (4, 3, 3, 3))),
         dict(kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=2, size=(6, 6)),
         {"symbolic_batch": False}),
        ((("f32", (2, 2, 25)), ("f32", (3, 2, 4))),
         dict(kernel=(4,), stride=(3,), pads=((1, 2),), dilation=(2,), size=(7,)), {"symbolic_batch": False}),
        ((("f32", (2, 2, 11)), ("f32", (3, 2, 3))),
         dict(kernel=(3,), stride=(1,), pads=((0, 0),), dilation=(3,), size=(3,)), {"symbolic_batch": False}),
    ),
))


register(Op(
    name="conv_transpose", inputs=("x",),
    attrs=(Attr("channels", "int", doc="output channels"),
           Attr("kernel", "ints", doc="kernel size, an int or one per spatial axis"),
           WINDOW_ATTRS[0],
           replace(WINDOW_ATTRS[1], doc='removed from the output: int, per axis (p, q), per side ((b, e), ...), '
                                        '"valid" (0) or "same" (output = input * stride)'),
           Attr("output_pad", "ints", 0, doc="extra size at the end of each spatial axis (< stride or dilation)"),
           WINDOW_ATTRS[2],
           Attr("groups", "int", 1, doc="grouped transposed convolution"),
           Attr("bias", "bool", True),
           *weight_inits()),
    shape=ct_shape, params=ct_params, lower=ct_lower, reference=ct_reference, grad=ct_grad,
    torch=TorchModule("ConvTransposeNd", "upconv"),
    macs=lambda types, out, a: types[0].per_example() * (a.channels // a.groups) * prod(ct_geometry(types[0], a)[1]),
    window=lambda types, a: [Window(k, s, d, transposed=True) for k, s, d in zip(*ct_geometry(types[0], a)[1:4])],
    doc="Transposed convolution over 1, 2 or 3 spatial axes (ONNX ConvTranspose), U-Net's up-convolution; "
        "weight [C, channels/groups, *kernel]; out = (in-1)*stride - pads + dilation*(kernel-1) + output_pad + 1.",
    examples=(
        ((("f32", (2, 4, 5, 5)),), dict(channels=3, kernel=2, stride=2)),
        ((("f32", (2, 4, 6, 6)),), dict(channels=6, kernel=3, stride=2, pad=1, output_pad=1, groups=2)),
        ((("f32", (2, 3, 7)),), dict(channels=2, kernel=4, stride=3, pad=((1, 2),), output_pad=2, dilation=2, bias=False)),
        ((("f32", (1, 2, 3, 4, 4)),), dict(channels=3, kernel=(2, 3, 3), stride=(1, 2, 2), pad="same")),
        ((("f32", (2, 3, 5, 4)),), dict(channels=4, kernel=(3, 2), dilation=(2, 1), pad="same", init="he")),
    ),
))


# ---- upsample --------------------------------------------------------------------

def up_geometry(x: TensorType, a):
    if x.rank not in (3, 4, 5):
        raise ShapeError(f"upsample expects a 3-D, 4-D or 5-D input [N, C, spatial...], got {x}")
    scale = per_axis(a.scale, x.rank - 2, "scale")
    positive(scale, "scale")
    return scale, [d * s for d, s in zip(known_spatial(x, "upsample"), scale)]


def up_lower(g, ins, p, a, types, out):
    scale, _ = up_geometry(types[0], a)
    scales = g.const("scales", [1.0, 1.0, *scale], np.float32)
    if a.mode == "nearest":  # PyTorch nn.Upsample(mode="nearest"): src = floor(dst / scale)
        how = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:  # PyTorch (bi/tri)linear with align_corners=False
        how = dict(mode="linear", coordinate_transformation_mode="half_pixel")
    return g.node("Resize", [ins[0], "", scales], out=g.out, **how)


def lerp_axis(x, axis, s):
    """Linear resize of one axis by s, half-pixel centres, sources clamped to the edge."""
    L = x.shape[axis]
    src = np.clip((np.arange(L * s) + 0.5) / s - 0.5, 0, L - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, L - 1)
    w = (src - i0).reshape([-1 if k == axis else 1 for k in range(x.ndim)])
    return np.take(x, i0, axis) * (1 - w) + np.take(x, i1, axis) * w


def up_reference(xs, p, a):
    (x,) = xs
    scale, _ = up_geometry(TensorType("f32", x.shape), a)
    y = x.astype(np.float64)
    for i, s in enumerate(scale):
        axis = 2 + i
        if a.mode == "nearest":
            y = np.take(y, np.arange(x.shape[axis] * s) // s, axis)
        else:
            y = lerp_axis(y, axis, s)
    return y.astype(x.dtype)


# upsample is linear in x, so its gradient is its transpose: nearest sums each scale block;
# linear spreads every output gradient back onto the two sources it interpolated.

def up_grad(d, n, gy):
    scale, _ = up_geometry(d.type(n.inputs[0]), n.attrs)
    return [d.op("upsample_grad", [gy], {"scale": tuple(scale), "mode": n.attrs.mode})], {}


def _up_grad_shape(types, a):
    (g,) = types
    if g.rank != len(a.scale) + 2:
        raise ShapeError(f"upsample_grad: {g} does not have {len(a.scale)} spatial axes")
    size = known_spatial(g, "upsample_grad")
    for L, s in zip(size, a.scale):
        if s <= 0 or L % s:
            raise ShapeError(f"upsample_grad: spatial size {L} is not a multiple of the scale {s}")
    return g.with_dims((*g.dims[:2], *(L // s for L, s in zip(size, a.scale))))


def lerp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] in float64: row j holds the weights linear resizing (half-pixel centres,
    sources clamped to the edge, no antialiasing) gives the n_in sources of output j. The numbers
    of ONNX Resize (linear, half_pixel) and torch.nn.functional.interpolate(align_corners=False);
    upsample's gradient and almc.data's image resizing both use it."""
    src = np.clip((np.arange(n_out) + 0.5) / (n_out / n_in) - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1 - frac)
    np.add.at(m, (rows, i1), frac)
    return m


def _up_grad_lower(g, ins, p, a, types, out):
    (gy,) = ins
    size = types[0].dims[2:]
    n = len(size)
    small = [L // s for L, s in zip(size, a.scale)]
    if a.mode == "nearest":  # [N, C, H*s, W*t] -> [N, C, H, s, W, t], summed over s and t
        blocks = [v for L, s in zip(small, a.scale) for v in (L, s)]
        split = g.node("Reshape", [gy, g.const("blocks", [0, 0, *blocks], np.int64)])
        return g.node("ReduceSum", [split, g.const("axes", [3 + 2 * i for i in range(n)], np.int64)], keepdims=0,
                      out=g.out)
    # linear: per axis, a MatMul by the interpolation matrix [L * s, L] along that axis
    axes = [i for i in range(n) if a.scale[i] > 1]
    y = gy
    if not axes:
        return g.node("Identity", [gy], out=g.out)
    last = 2 + n - 1
    for k, i in enumerate(axes):
        ax = 2 + i
        perm = list(range(n + 2))
        perm[ax], perm[last] = perm[last], perm[ax]
        final = k == len(axes) - 1
        m = g.const(f"lerp{i}", lerp_matrix(small[i] * a.scale[i], small[i]))
        if ax == last:
            y = g.node("MatMul", [y, m], out=g.out if final else None)
        else:
            moved = g.node("MatMul", [g.node("Transpose", [y], perm=perm), m])
            y = g.node("Transpose", [moved], perm=perm, out=g.out if final else None)
    return y


def _up_grad_reference(xs, p, a):
    (gy,) = xs
    gx = gy
    for i, s in enumerate(a.scale):
        axis = 2 + i
        L = gx.shape[axis] // s
        moved = np.moveaxis(gx, axis, 0)  # [L * s, ...]
        acc = np.zeros((L, *moved.shape[1:]), dtype=gy.dtype)
        for j in range(L * s):  # output j came from source floor(j / s), or from two sources mixed
            if a.mode == "nearest":
                acc[j // s] += moved[j]
                continue
            pos = min(max((j + 0.5) / s - 0.5, 0.0), L - 1.0)
            lo = int(np.floor(pos))
            hi = min(lo + 1, L - 1)
            acc[lo] += (1 - (pos - lo)) * moved[j]
            acc[hi] += (pos - lo) * moved[j]
        gx = np.moveaxis(acc, 0, axis)
    return gx


register(Op(
    name="upsample_grad", inputs=("g",),
    attrs=(Attr("scale", "any"), Attr("mode", "str", "nearest", ("nearest", "linear"))),
    shape=_up_grad_shape, lower=_up_grad_lower, reference=_up_grad_reference, category="gradient",
    doc="Gradient of upsample: the sum over each scale block (nearest), or the transpose of the "
        "interpolation (linear: each output gradient goes back to its two sources by their weights).",
    examples=(
        ((("f32", (2, 3, 8, 8)),), dict(scale=(2, 2))),
        ((("f32", (2, 3, 9, 9)),), dict(scale=(3, 3))),
        ((("f32", (1, 2, 2, 6, 12)),), dict(scale=(1, 2, 3))),
        ((("f32", (2, 3, 8, 15)),), dict(scale=(2, 3), mode="linear")),
        ((("f32", (2, 2, 15)),), dict(scale=(3,), mode="linear")),
        ((("f32", (1, 2, 4, 6, 8)),), dict(scale=(2, 2, 2), mode="linear")),
        ((("f32", (2, 2, 4, 6)),), dict(scale=(1, 2), mode="linear")),
        ((("f32", (2, 2, 4, 3)),), dict(scale=(1, 1), mode="linear")),
    ),
))


register(Op(
    name="upsample", inputs=("x",),
    attrs=(Attr("scale", "ints", 2, doc="integer factor, an int or one per spatial axis"),
           Attr("mode", "str", "nearest", ("nearest", "linear"),
                doc="nearest copies (PyTorch nearest); linear interpolates (align_corners = false)")),
    shape=lambda types, a: types[0].with_dims((*types[0].dims[:2], *up_geometry(types[0], a)[1])),
    lower=up_lower, reference=up_reference, grad=up_grad,
    macs=lambda types, out, a: 0 if a.mode == "nearest" else out.per_example() * (types[0].rank - 2),
    window=lambda types, a: [Window(1 if a.mode == "nearest" else 2, s, transposed=True)
                             for s in up_geometry(types[0], a)[0]],
    category="resample",
    doc="Scales the spatial axes by integer factors (ONNX Resize), as PyTorch nn.Upsample.",
    examples=(
        ((("f32", (2, 3, 4, 4)),), {}),
        ((("f32", (2, 3, 3, 3)),), dict(scale=3)),
        ((("f32", (1, 2, 2, 3, 3)),), dict(scale=(1, 2, 3))),
        ((("f32", (2, 3, 4, 5)),), dict(scale=(2, 3), mode="linear")),
        ((("f32", (2, 2, 5)),), dict(scale=3, mode="linear")),
        ((("f32", (1, 2, 2, 3, 4)),), dict(mode="linear")),
        ((("f32", (2, 2, 1, 3)),), dict(scale=(3, 1), mode="linear")),
    ),
))


# ---- crop / center_crop ----------------------------------------------------------

def crop_window(x: TensorType, target, opname: str, what: str):
    """(axis, start, end) for each spatial axis that shrinks; start as torchvision's center_crop."""
    if x.rank < 3:
        raise ShapeError(f"{opname} expects an input with spatial axes [N, C, spatial...], got {x}")
    cuts = []
    for i, (d, t) in enumerate(zip(x.dims[2:], target)):
        if d == t:  # also covers equal symbolic sizes: nothing to cut
            continue
        if isinstance(d, str) or isinstance(t, str):
            raise ShapeError(f"{opname} needs known spatial sizes, got {x} and {what}")
        if not 0 < t <= d:
            raise ShapeError(f"{opname} cannot cut {x} down to {what}: spatial axis {i} is {d}, the crop {t}",
                             "crop only shrinks; crop the larger tensor to the smaller one" if t > d else None)
        start = int(round((d - t) / 2))  # Python rounds half to even, as torchvision does
        cuts.append((2 + i, start, start + t))
    return cuts


def crop_dims(x, cuts):
    dims = list(x.dims)
    for axis, s, e in cuts:
        dims[axis] = e - s
    return x.with_dims(dims)


def slice_lower(g, x, cuts):
    if not cuts:
        return x  # nothing to cut: alias the input, emit nothing
    ax, st, en = zip(*cuts)
    return g.node("Slice", [x, g.const("starts", st, np.int64), g.const("ends", en, np.int64),
                            g.const("axes", ax, np.int64)], out=g.out)


def slice_reference(x, cuts):
    idx = [slice(None)] * x.ndim
    for axis, s, e in cuts:
        idx[axis] = slice(s, e)
    return x[tuple(idx)]


def crop_cuts(types, a):
    x, like = types
    if like.rank != x.rank:
        raise ShapeError(f"crop needs `like` of the same rank as its input, got {x} and like = {like}")
    return crop_window(x, like.dims[2:], "crop", f"like = {like}")


def center_crop_cuts(types, a):
    (x,) = types
    size = a.size if isinstance(a.size, tuple) else (a.size,) * (x.rank - 2)
    if len(size) != x.rank - 2:
        raise ShapeError(f"center_crop size {a.size} has {len(size)} entries but {x} has {x.rank - 2} spatial axes")
    return crop_window(x, size, "center_crop", f"size {a.size}")


CROP_DOC = (" Start per axis = round((in - out) / 2) with Python's half-to-even rounding, exactly "
            "torchvision.transforms.functional.center_crop (so (in - out) = 3 starts at 2, 5 at 2, 7 at 4).")

# Cropping keeps a window of x: its gradient is the output gradient put back in place, with
# zeros where x was cut away. `like` only lends its size: it gets no gradient.

def crop_grad_rule(cuts_of):
    def grad(d, n, gy):
        x = n.inputs[0]
        xt = d.type(x)
        types = [d.type(i) for i in n.inputs]
        cut = {axis: (s, e) for axis, s, e in cuts_of(types, n.attrs)}
        if not cut:
            return [gy] + [None] * (len(n.inputs) - 1), {}
        pads = tuple((cut[ax][0], xt.dims[ax] - cut[ax][1]) if ax in cut else (0, 0) for ax in range(2, xt.rank))
        return [d.op("crop_grad", [gy], {"pads": pads})] + [None] * (len(n.inputs) - 1), {}
    return grad


def _crop_grad_shape(types, a):
    (g,) = types
    if g.rank != len(a.pads) + 2:
        raise ShapeError(f"crop_grad: {g} does not have {len(a.pads)} spatial axes")
    dims = list(g.dims)
    for i, (b, e) in enumerate(a.pads):
        if b < 0 or e < 0:
            raise ShapeError(f"crop_grad pads must not be negative, got {a.pads}")
        if b or e:
            if isinstance(dims[2 + i], str):
                raise ShapeError(f"crop_grad needs known sizes on the padded axes, got {g}")
            dims[2 + i] += b + e
    return g.with_dims(dims)


register(Op(
    name="crop_grad", inputs=("g",), attrs=(Attr("pads", "any", doc="(begin, end) zeros per spatial axis"),),
    shape=_crop_grad_shape,
    lower=lambda g, ins, p, a, types, out: g.node(
        "Pad", [ins[0], g.const("pads", [0, 0, *(b for b, _ in a.pads), 0, 0, *(e for _, e in a.pads)], np.int64)],
        out=g.out, mode="constant"),
    reference=lambda xs, p, a: np_pad(xs[0], a.pads),
    category="gradient", doc="Gradient of crop and center_crop: the gradient padded back with zeros (ONNX Pad).",
    examples=(
        ((("f32", (2, 3, 4, 6)),), dict(pads=((2, 3), (1, 2)))),
        ((("f32", (2, 4, 4)),), dict(pads=((2, 1),))),
        ((("f32", (1, 2, 5, 3, 2)),), dict(pads=((0, 0), (2, 1), (2, 3)))),
    ),
))


register(Op(
    name="crop", inputs=("x", "like"),
    shape=lambda types, a: crop_dims(types[0], crop_cuts(types, a)),
    lower=lambda g, ins, p, a, types, out: slice_lower(g, ins[0], crop_cuts(types, a)),
    reference=lambda xs, p, a: slice_reference(
        xs[0], crop_cuts([TensorType("f32", xs[0].shape), TensorType("f32", xs[1].shape)], a)),
    category="shape", grad=crop_grad_rule(crop_cuts), grad_inputs=(0,),
    doc="Centre crop of x's spatial axes to the spatial size of `like` (U-Net skip connections); "
        "batch and channels are kept (ONNX Slice)." + CROP_DOC,
    examples=(
        ((("f32", (2, 3, 9, 9)), ("f32", (2, 5, 4, 6))), {}),
        ((("f32", (2, 4, 7)), ("f32", (2, 1, 4))), {}),
        ((("f32", (1, 2, 5, 6, 7)), ("f32", (1, 2, 5, 3, 2))), {}),
    ),
))

register(Op(
    name="center_crop", inputs=("x",), attrs=(Attr("size", "ints", doc="spatial size, an int or one per spatial axis"),),
    shape=lambda types, a: crop_dims(types[0], center_crop_cuts(types, a)),
    lower=lambda g, ins, p, a, types, out: slice_lower(g, ins[0], center_crop_cuts(types, a)),
    reference=lambda xs, p, a: slice_reference(xs[0], center_crop_cuts([TensorType("f32", xs[0].shape)], a)),
    category="shape", grad=crop_grad_rule(center_crop_cuts),
    doc="Centre crop of the spatial axes to `size`; batch and channels are kept (ONNX Slice)." + CROP_DOC,
    examples=(
        ((("f32", (2, 3, 10, 10)),), dict(size=6)),
        ((("f32", (2, 3, 9, 8)),), dict(size=(4, 5))),
        ((("f32", (2, 2, 7)),), dict(size=2)),
        ((("f32", (1, 2, 5, 6, 7)),), dict(size=(5, 3, 2))),
    ),
))
