"""Pooling: maxpool, avgpool (1-D/2-D/3-D by rank), their global and adaptive forms."""
from __future__ import annotations

from itertools import product

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ShapeError
from ..types import TensorType, onnx_elem_type
from .common import matmul_along_axes, np_along_axes, onnx_pads, per_axis, positive, resolve_pads, window_out
from .registry import REWRITES, Attr, Op, TorchModule, Window, register


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


def ceil_mode(size, kernel, stride, pads, ceil: bool) -> int:
    """ONNX's ceil_mode: 1 only where it changes an output size. Where it does not, 1 would compute
    the same, but onnx's reference evaluator gets the size wrong (8x8 by 3x3, stride 1, pad 1: 10x10)."""
    if not ceil:
        return 0
    return int(any(isinstance(L, str) or window_out(L, k, s, 1, p, True) != window_out(L, k, s, 1, p, False)
                   for L, k, s, p in zip(size, kernel, stride, pads)))


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
        n, kernel, stride, pads, out_sizes = pool_geometry(types[0], a, onnx_op)
        x, size = ins[0], types[0].dims[2:]
        ceil = ceil_mode(size, kernel, stride, pads, a.ceil)
        extra = {"count_include_pad": int(a.count_pad)} if onnx_op == "AveragePool" else {}
        if extra.get("count_include_pad") and ceil and any(b or e for b, e in pads):
            # OpenVINO counts the ceil-mode overhang as padding: pad explicitly and count what lies
            # inside, which is the padding and not the overhang
            padded = [L + b + e for L, (b, e) in zip(size, pads)]
            if [window_out(L, k, s, 1, (0, 0), True) for L, k, s in zip(padded, kernel, stride)] == list(out_sizes):
                x = g.node("Pad", [x, g.const("pads", [0, 0, *(b for b, _ in pads), 0, 0, *(e for _, e in pads)], np.int64)])
                pads, extra = [(0, 0)] * n, {"count_include_pad": 0}
        return g.node(onnx_op, [x], out=g.out, kernel_shape=list(kernel), strides=list(stride),
                      pads=onnx_pads(pads), ceil_mode=ceil, **extra)
    return lower


# -- gradients ---------------------------------------------------------------

def maxpool_grad(d, n, gy):
    x = n.inputs[0]
    nsp, kernel, stride, pads, _ = pool_geometry(d.type(x), n.attrs, "maxpool")
    return [d.op("maxpool_grad", [gy, x], {"kernel": kernel, "stride": stride, "pads": tuple(pads),
                                           "ceil": n.attrs.ceil})], {}


def _maxpool_grad_lower(g, ins, p, a, types, out):
    """Route each output gradient to the input element that won its window, through
    MaxPool's indices (flat positions in the unpadded input). Windows that do not overlap
    (stride >= kernel) send at most one gradient to each element: MaxUnpool places them
    (faster than the scatter on LeNet's 2x2 pools; figures: docs/performance.md), except on the
    portable target (OpenVINO has no MaxUnpool); otherwise ScatterElements adds them up."""
    gy, x = ins
    idx = g.tmp("indices")
    kernel, stride, pads = list(a.kernel), list(a.stride), list(a.pads)
    pooled = x
    if g.target == "portable" and all(s == 1 for s in stride) and len(kernel) < 3:
        # onnx's reference evaluator numbers the indices of a stride-1 MaxPool wrongly; one more
        # axis of size 1, pooled with stride 2, takes it down its right path (same flat indices)
        pooled = g.node("Unsqueeze", [x, g.const("last_axis", [-1], np.int64)])
        kernel, stride, pads = kernel + [1], stride + [2], pads + [(0, 0)]
    g.node("MaxPool", [pooled], outputs=[g.tmp("max"), idx], kernel_shape=kernel, strides=stride,
           pads=onnx_pads(pads), ceil_mode=ceil_mode(types[1].dims[2:], a.kernel, a.stride, a.pads, a.ceil))
    shape = g.node("Shape", [x])
    if g.target != "portable" and all(s >= k for s, k in zip(a.stride, a.kernel)):
        return g.node("MaxUnpool", [gy, idx, shape], out=g.out, kernel_shape=list(a.kernel), strides=list(a.stride),
                      pads=onnx_pads(a.pads))
    from onnx import helper

    flat = g.const("flat", [-1], np.int64)
    zeros = g.node("ConstantOfShape", [g.node("ReduceProd", [shape], keepdims=1)],
                   value=helper.make_tensor("zero", onnx_elem_type(types[0].dtype), [1], [0.0]))
    scattered = g.node("ScatterElements", [zeros, g.node("Reshape", [idx, flat]), g.node("Reshape", [gy, flat])],
                       axis=0, reduction="add")
    return g.node("Reshape", [scattered, shape], out=g.out)


def share_pool_indices(nodes: list) -> None:
    """A max pool's gradient recomputes the pool with its indices (above). onnxruntime's
    common-subexpression elimination merges two equal MaxPools only when both produce the
    indices, so the forward pool of such a pair produces them too, unread: the pool then runs
    once, with its indices, in the forward pass (LeNet's step is slightly faster, alternating in
    one process; figures: docs/performance.md)."""
    def key(n):
        return n.input[0], tuple(sorted((a.name, tuple(a.ints) or a.i) for a in n.attribute))

    with_indices = {key(n) for n in nodes if n.op_type == "MaxPool" and len(n.output) == 2}
    for n in nodes:
        if n.op_type == "MaxPool" and len(n.output) == 1 and key(n) in with_indices:
            n.output.append(f"{n.output[0]}.indices")


REWRITES.append(share_pool_indices)


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
        # stride > kernel with padding: the MaxUnpool path with pads
        ((("f32", (2, 2, 3, 3)), ("f32", (2, 2, 8, 8))), dict(kernel=(2, 2), stride=(3, 3), pads=((1, 1), (1, 1)))),
    ),
))


def avgpool_grad(d, n, gy):
    x = n.inputs[0]
    xt = d.type(x)
    nsp, kernel, stride, pads, _ = pool_geometry(xt, n.attrs, "avgpool")
    return [d.op("avgpool_grad", [gy], {"kernel": kernel, "stride": stride, "pads": tuple(pads),
                                        "count_pad": n.attrs.count_pad, "size": tuple(xt.dims[2:])})], {}


def _avgpool_grad_shape(types, a):
    (g,) = types
    n = len(a.size)
    if g.rank != n + 2 or len(a.kernel) != n or len(a.stride) != n or len(a.pads) != n:
        raise ShapeError(f"avgpool_grad: {g} does not match {n} spatial axes")
    return g.with_dims((*g.dims[:2], *a.size))


def _window_counts(size, kernel, stride, pads, out, count_pad):
    """The divisor of every pooling window, [*out]: the positions it covers inside the input,
    or inside the padded input with count_pad (the ceil-mode overhang never counts)."""
    per_axis_counts = []
    for L, k, s, (b, e), o in zip(size, kernel, stride, pads, out):
        start = np.arange(o) * s - b
        lo, hi = (-b, L + e) if count_pad else (0, L)
        per_axis_counts.append(np.minimum(start + k, hi) - np.maximum(start, lo))
    counts = per_axis_counts[0]
    for c in per_axis_counts[1:]:
        counts = np.multiply.outer(counts, c)
    return counts


def _avgpool_grad_lower(g, ins, p, a, types, out):
    """Divide each window's gradient by its count, then spread it over the window: a
    ConvTranspose with a ones kernel, the channels folded into the batch ([N*C, 1, ...])
    so that the channel count may be symbolic. The end padding (or output_padding, when
    trailing inputs lie in no window) makes the ConvTranspose produce exactly `size`."""
    (gy,) = ins
    n = len(a.size)
    o = types[0].dims[2:]
    counts = _window_counts(a.size, a.kernel, a.stride, a.pads, o, a.count_pad)
    scaled = g.node("Div", [gy, g.const("counts", counts.reshape(1, 1, *o))])
    folded = g.node("Reshape", [scaled, g.const("fold", [-1, 1, *o], np.int64)])
    ends, opad = [], []
    for i in range(n):
        rest = (o[i] - 1) * a.stride[i] + a.kernel[i] - a.pads[i][0] - a.size[i]
        ends.append(max(rest, 0))
        opad.append(max(-rest, 0))
    spread = g.node("ConvTranspose", [folded, g.const("ones", np.ones((1, 1, *a.kernel)))],
                    kernel_shape=list(a.kernel), strides=list(a.stride),
                    pads=[b for b, _ in a.pads] + ends, output_padding=opad)
    shape = g.node("Concat", [g.node("Shape", [gy], start=0, end=2), g.const("size", list(a.size), np.int64)], axis=0)
    return g.node("Reshape", [spread, shape], out=g.out)


def _avgpool_grad_reference(xs, p, a):
    """Window by window: add g / count to every input position the window covers."""
    (gy,) = xs
    n = len(a.size)
    N, C = gy.shape[:2]
    gx = np.zeros((N, C, *a.size), dtype=gy.dtype)
    for pos in np.ndindex(*gy.shape[2:]):
        sl, count = [], 1
        for i in range(n):
            start = pos[i] * a.stride[i] - a.pads[i][0]
            end = start + a.kernel[i]
            lo, hi = max(start, 0), min(end, a.size[i])
            sl.append(slice(lo, hi))
            if a.count_pad:
                count *= min(end, a.size[i] + a.pads[i][1]) - max(start, -a.pads[i][0])
            else:
                count *= hi - lo
        share = gy[(slice(None), slice(None), *pos)].reshape(N, C, *([1] * n)) / count
        gx[(slice(None), slice(None), *sl)] += share
    return gx


register(Op(
    name="avgpool_grad", inputs=("g",),
    attrs=(Attr("kernel", "any"), Attr("stride", "any"), Attr("pads", "any"), Attr("count_pad", "bool", False),
           Attr("size", "any", doc="the input's spatial size")),
    shape=_avgpool_grad_shape, lower=_avgpool_grad_lower, reference=_avgpool_grad_reference,
    category="gradient",
    doc="Gradient of avgpool: each window's gradient, divided by the window's count, spread over the window.",
    examples=(
        ((("f32", (2, 3, 4, 4)),), dict(kernel=(2, 2), stride=(2, 2), pads=((0, 0), (0, 0)), size=(8, 8))),
        ((("f32", (2, 3, 5, 5)),), dict(kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)), size=(9, 9))),
        ((("f32", (2, 3, 5, 5)),), dict(kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)), count_pad=True,
                                        size=(9, 9))),
        ((("f32", (2, 2, 5)),), dict(kernel=(3,), stride=(2,), pads=((0, 0),), size=(10,))),
        ((("f32", (2, 2, 4)),), dict(kernel=(3,), stride=(2,), pads=((1, 1),), count_pad=True, size=(6,))),
        ((("f32", (2, 2, 3)),), dict(kernel=(2,), stride=(3,), pads=((0, 0),), size=(9,))),
        ((("f32", (1, 2, 2, 3, 3)),), dict(kernel=(2, 2, 2), stride=(1, 2, 2), pads=((0, 0), (1, 0), (0, 1)),
                                           size=(3, 5, 5))),
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
    grad=maxpool_grad, torch=TorchModule("MaxPoolNd"),
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
    grad=avgpool_grad, window=pool_window, category="pooling",
    doc="Average pooling over 1, 2 or 3 spatial axes (ONNX AveragePool).",
    examples=(
        ((("f32", (2, 3, 8, 8)),), dict(kernel=2)),
        ((("f32", (2, 3, 9, 9)),), dict(kernel=3, stride=2, pad=1)),
        ((("f32", (2, 3, 9, 9)),), dict(kernel=3, stride=2, pad=1, count_pad=True)),
        ((("f32", (2, 2, 10)),), dict(kernel=3, stride=2, ceil=True)),
        ((("f32", (2, 2, 6)),), dict(kernel=3, stride=2, pad=1, ceil=True, count_pad=True)),
        ((("f32", (2, 2, 9)),), dict(kernel=2, stride=3)),
    ),
))


def gap_shape(types, a):
    (x,) = types
    if x.rank < 3:
        raise ShapeError(f"global_avgpool expects an input with spatial axes [N, C, ...], got {x}")
    return x.with_dims((*x.dims[:2], *([1] * (x.rank - 2))))


def gap_grad(d, n, gy):
    """Every position gets g / (number of positions): drop the size-1 axes, broadcast back as a mean."""
    x = n.inputs[0]
    spatial = tuple(range(2, d.type(x).rank))
    flat = d.op("sum", [gy], {"axis": spatial})  # [N, C, 1, 1] -> [N, C]
    return [d.op("expand_as", [flat, x], {"axes": spatial, "mean": True})], {}


register(Op(
    name="global_avgpool", inputs=("x",),
    shape=gap_shape,
    lower=lambda g, ins, p, a, types, out: g.node("GlobalAveragePool", [ins[0]], out=g.out),
    reference=lambda xs, p, a: xs[0].mean(axis=tuple(range(2, xs[0].ndim)), keepdims=True),
    window=lambda types, a: "global", category="pooling", grad=gap_grad,
    doc="Mean over every spatial axis; keeps them as size 1 ([N, C, 1, 1]).",
    examples=(((("f32", (2, 3, 5, 5)),), {}), ((("f32", (2, 4, 3, 2, 2)),), {})),
))


# -- global max pooling and adaptive average pooling ------------------------------------------

register(Op(
    name="global_maxpool", inputs=("x",), shape=gap_shape,
    # ReduceMax, not GlobalMaxPool: onnx's reference evaluator runs GlobalMaxPool on 2-D maps only
    lower=lambda g, ins, p, a, types, out: g.node(
        "ReduceMax", [ins[0], g.const("spatial", list(range(2, types[0].rank)), np.int64)], out=g.out, keepdims=1),
    reference=lambda xs, p, a: xs[0].max(axis=tuple(range(2, xs[0].ndim)), keepdims=True),
    window=lambda types, a: "global", category="pooling",
    grad=lambda d, n, gy: ([d.op("extreme_grad", [gy, n.inputs[0], n.id],
                                 {"axis": tuple(range(2, d.type(n.inputs[0]).rank)), "keepdims": True})], {}),
    doc="Largest value over every spatial axis; keeps them as size 1 ([N, C, 1, 1]).",
    examples=(((("f32", (2, 3, 5, 5)),), {}), ((("f32", (2, 4, 7)),), {})),
))


def adaptive_windows(n_out: int, n_in: int) -> list[tuple[int, int]]:
    """[(start, end)] of each output: inputs floor(i n_in / n_out) to ceil((i + 1) n_in / n_out) - 1, the
    windows of torch.nn.AdaptiveAvgPool and AdaptiveMaxPool (overlapping when n_out does not divide n_in)."""
    return [((i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)) for i in range(n_out)]


def adaptive_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in]: row i averages the inputs of window i (adaptive_windows)."""
    m = np.zeros((n_out, n_in))
    for i, (lo, hi) in enumerate(adaptive_windows(n_out, n_in)):
        m[i, lo:hi] = 1 / (hi - lo)
    return m


def _adaptive_geometry(types, a, opname):
    x = types[0]
    if x.rank not in (3, 4, 5) or any(isinstance(d, str) for d in x.dims[2:]):
        raise ShapeError(f"{opname} expects [N, C, spatial...] with known spatial sizes, got {x}")
    size = per_axis(a.size, x.rank - 2, "size")
    positive(size, "output size")
    return list(x.dims[2:]), list(size)


def _equal_windows(size_in, size):
    """The kernel (= stride) of a pool with the adaptive windows, or None where they are unequal."""
    if all(i % o == 0 for i, o in zip(size_in, size)):
        return [i // o for i, o in zip(size_in, size)]
    return None


def adaptive_shape_rule(opname):
    def shape(types, a):
        return types[0].with_dims((*types[0].dims[:2], *_adaptive_geometry(types, a, opname)[1]))
    return shape


def _adaptive_lower(g, ins, p, a, types, out):
    """AveragePool where every output size divides its input (equal windows), else a MatMul by the
    averaging matrix along each axis that changes."""
    size_in, size = _adaptive_geometry(types, a, "adaptive_avgpool")
    if size_in == size:  # the identity (AlexNet and VGG at 224): no node
        return ins[0]
    kernel = _equal_windows(size_in, size)
    if kernel:
        return g.node("AveragePool", [ins[0]], out=g.out, kernel_shape=kernel, strides=kernel)
    return matmul_along_axes(g, ins[0], _adaptive_matrices(size_in, size), types[0].rank)


def _adaptive_matrices(size_in, size, transposed=False) -> dict:
    """{axis: averaging matrix} for each spatial axis whose size changes (its transpose for the gradient)."""
    return {2 + i: (adaptive_matrix(m, n).T if transposed else adaptive_matrix(m, n))
            for i, (n, m) in enumerate(zip(size_in, size)) if n != m}


def _adaptive_reference(xs, p, a):
    x = xs[0]
    size = per_axis(a.size, x.ndim - 2, "size")
    out = x.astype(np.float64)
    for i, n_out in enumerate(size):  # each output the mean of its window, written out
        n_in = out.shape[2 + i]
        parts = [out.take(range((j * n_in) // n_out, -((-(j + 1) * n_in) // n_out)), axis=2 + i).mean(
            axis=2 + i, keepdims=True) for j in range(n_out)]
        out = np.concatenate(parts, axis=2 + i)
    return out.astype(x.dtype)


def _adaptive_grad_lower(g, ins, p, a, types, out):
    return matmul_along_axes(g, ins[0], _adaptive_matrices(a.size_in, a.size, transposed=True), types[0].rank)


def _adaptive_grad_reference(xs, p, a):
    gy = np_along_axes(xs[0].astype(np.float64), _adaptive_matrices(a.size_in, a.size, transposed=True))
    return gy.astype(xs[0].dtype)


def _adaptive_grad(d, n, gy):
    size_in, size = _adaptive_geometry([d.type(n.inputs[0])], n.attrs, "adaptive_avgpool")
    if size_in == size:
        return [gy], {}
    return [d.op("adaptive_avgpool_grad", [gy], {"size_in": tuple(size_in), "size": tuple(size)})], {}


register(Op(
    name="adaptive_avgpool_grad", inputs=("g",), attrs=(Attr("size_in", "any"), Attr("size", "any")),
    shape=lambda types, a: types[0].with_dims((*types[0].dims[:2], *a.size_in)),
    lower=_adaptive_grad_lower, reference=_adaptive_grad_reference, category="gradient",
    doc="The gradient of adaptive_avgpool: each output's g shared equally over its window.",
    examples=(((("f32", (2, 3, 3, 2)),), dict(size_in=(7, 4), size=(3, 2))),),
))

ADAPTIVE_SIZE = Attr("size", "ints", doc="output size, an int or one per axis")

register(Op(
    name="adaptive_avgpool", inputs=("x",), attrs=(ADAPTIVE_SIZE,),
    shape=adaptive_shape_rule("adaptive_avgpool"),
    lower=_adaptive_lower, reference=_adaptive_reference, category="pooling",
    window=lambda types, a: "global",
    grad=_adaptive_grad,
    torch=TorchModule("AdaptiveAvgPoolNd"),
    doc="Average pooling to a fixed output size, exactly as torch.nn.AdaptiveAvgPool1d/2d/3d at any input size "
        "(output i averages inputs floor(i in / out) to ceil((i + 1) in / out) - 1).",
    examples=(((("f32", (2, 3, 12, 8)),), dict(size=(6, 4))), ((("f32", (2, 3, 13, 5)),), dict(size=6)),
              ((("f32", (2, 2, 3, 3)),), dict(size=(6, 2))), ((("f32", (2, 2, 7)),), dict(size=3))),
))


# -- adaptive max pooling ------------------------------------------------------------------------

def _adaptive_max_lower(g, ins, p, a, types, out):
    """MaxPool where every output size divides its input (equal windows), else the maximum of each
    window one axis at a time (the maximum of a box is the maximum of its rows' maxima)."""
    size_in, size = _adaptive_geometry(types, a, "adaptive_maxpool")
    if size_in == size:  # the identity: no node
        return ins[0]
    kernel = _equal_windows(size_in, size)
    if kernel:  # maxpool_grad's MaxPool, attribute for attribute: share_pool_indices merges the two
        return g.node("MaxPool", [ins[0]], out=g.out, kernel_shape=kernel, strides=kernel,
                      pads=[0] * 2 * len(kernel), ceil_mode=0)
    changed = [i for i in range(len(size)) if size_in[i] != size[i]]
    t = ins[0]
    for i in changed:
        t = _max_along(g, t, 2 + i, size_in[i], size[i], g.out if i == changed[-1] else None)
    return t


def _max_along(g, t, axis, n_in, n_out, out):
    """The maximum of each adaptive window along one axis: a ReduceMax of its Slice (a window of
    one input is its Slice, one of the whole axis needs none), the windows concatenated."""
    def ints(v):
        return g.const(f"i{v}", [v], np.int64)

    if n_out == 1:  # one window, the whole axis (n_in > 1: the axis changes)
        return g.node("ReduceMax", [t, ints(axis)], out=out, keepdims=1)
    parts = []
    for lo, hi in adaptive_windows(n_out, n_in):
        part = t if (lo, hi) == (0, n_in) else g.node("Slice", [t, ints(lo), ints(hi), ints(axis)])
        parts.append(part if hi - lo == 1 else g.node("ReduceMax", [part, ints(axis)], keepdims=1))
    return g.node("Concat", parts, out=out, axis=axis)


def _adaptive_max_reference(xs, p, a):
    """Window by window: the maximum of the inputs it covers."""
    x = xs[0]
    size = per_axis(a.size, x.ndim - 2, "size")
    y = np.zeros((*x.shape[:2], *size), dtype=x.dtype)
    for pos in np.ndindex(*size):
        box = tuple(slice((j * n) // m, -((-(j + 1) * n) // m)) for j, n, m in zip(pos, x.shape[2:], size))
        y[(slice(None), slice(None), *pos)] = x[(slice(None), slice(None), *box)].max(axis=tuple(range(2, x.ndim)))
    return y


def _adaptive_max_grad(d, n, gy):
    """The identity passes g on; equal windows take maxpool's gradient (the first maximum of each
    window, as PyTorch); unequal ones adaptive_maxpool_grad."""
    x = n.inputs[0]
    size_in, size = _adaptive_geometry([d.type(x)], n.attrs, "adaptive_maxpool")
    if size_in == size:
        return [gy], {}
    kernel = _equal_windows(size_in, size)
    if kernel:
        return [d.op("maxpool_grad", [gy, x], {"kernel": tuple(kernel), "stride": tuple(kernel),
                                               "pads": ((0, 0),) * len(kernel), "ceil": False})], {}
    return [d.op("adaptive_maxpool_grad", [gy, x])], {}


def _window_table(size_in, size) -> np.ndarray:
    """[outputs, longest window]: the flat input positions of each window, row-major (the
    rows of shorter windows repeat their first position, which never wins an ArgMax)."""
    rows = []
    for box in np.ndindex(*size):
        ranges = [range(*adaptive_windows(m, n)[j]) for j, n, m in zip(box, size_in, size)]
        rows.append([int(np.ravel_multi_index(k, size_in)) for k in product(*ranges)])
    longest = max(map(len, rows))
    return np.array([r + [r[0]] * (longest - len(r)) for r in rows], dtype=np.int64)


def _adaptive_max_grad_shape(types, a):
    g, x = types
    if g.rank != x.rank:
        raise ShapeError(f"adaptive_maxpool_grad: {g} does not match {x}")
    return x


def _adaptive_max_grad_lower(g, ins, p, a, types, out):
    """Every window of x at once, gathered through the table of its positions ([N, C, windows,
    longest]); ArgMax (the first maximum, as PyTorch) picks each window's winner, and
    ScatterElements adds each output's g at its winner (overlapping windows may share one)."""
    from onnx import helper

    gy, x = ins
    size_in, size = list(types[1].dims[2:]), list(types[0].dims[2:])
    table = _window_table(size_in, size)
    flat = g.const("flat", [0, 0, -1], np.int64)
    xf = g.node("Reshape", [x, flat])
    arg = g.node("ArgMax", [g.node("Gather", [xf, g.const("table", table, np.int64)], axis=2)], axis=3, keepdims=0)
    start = g.const("starts", np.arange(len(table)) * table.shape[1], np.int64)
    at = g.node("Gather", [g.const("positions", table.reshape(-1), np.int64), g.node("Add", [arg, start])], axis=0)
    zeros = g.node("ConstantOfShape", [g.node("Shape", [xf])],
                   value=helper.make_tensor("zero", onnx_elem_type(types[0].dtype), [1], [0.0]))
    gx = g.node("ScatterElements", [zeros, at, g.node("Reshape", [gy, flat])], axis=2, reduction="add")
    return g.node("Reshape", [gx, g.const("shape", [0, 0, *size_in], np.int64)], out=g.out)


def _adaptive_max_grad_reference(xs, p, a):
    """Window by window: its g added at the first maximum of the window (row-major)."""
    gy, x = xs
    size_in, size = x.shape[2:], gy.shape[2:]
    gx = np.zeros(x.shape, dtype=np.result_type(gy, x))
    for pos in np.ndindex(*size):
        box = [((j * n) // m, -((-(j + 1) * n) // m)) for j, n, m in zip(pos, size_in, size)]
        for nn, c in np.ndindex(*x.shape[:2]):
            w = x[(nn, c, *(slice(lo, hi) for lo, hi in box))]
            k = np.unravel_index(np.argmax(w), w.shape)
            gx[(nn, c, *(lo + i for (lo, _), i in zip(box, k)))] += gy[(nn, c, *pos)]
    return gx


register(Op(
    name="adaptive_maxpool_grad", inputs=("g", "x"),
    shape=_adaptive_max_grad_shape, lower=_adaptive_max_grad_lower, reference=_adaptive_max_grad_reference,
    category="gradient",
    doc="The gradient of adaptive_maxpool: each output's g goes to the first maximum of its window; "
        "overlapping windows add theirs.",
    examples=(
        ((("f32", (2, 3, 3, 3)), ("f32", (2, 3, 5, 7))), {}),
        ((("f32", (2, 2, 3, 3)), ("f32", (2, 2, 2, 2))), {}),
        ((("f32", (2, 2, 3)), ("f32", (2, 2, 7))), {}),
        ((("f32", (1, 2, 2, 3, 3)), ("f32", (1, 2, 4, 5, 3))), {}),
    ),
))
register(Op(
    name="adaptive_maxpool", inputs=("x",), attrs=(ADAPTIVE_SIZE,),
    shape=adaptive_shape_rule("adaptive_maxpool"),
    lower=_adaptive_max_lower, reference=_adaptive_max_reference, category="pooling",
    window=lambda types, a: "global",
    grad=_adaptive_max_grad,
    torch=TorchModule("AdaptiveMaxPoolNd"),
    doc="Max pooling to a fixed output size, exactly as torch.nn.AdaptiveMaxPool1d/2d/3d at any input size "
        "(output i is the largest of inputs floor(i in / out) to ceil((i + 1) in / out) - 1).",
    examples=(
        ((("f32", (2, 3, 8, 8)),), dict(size=(4, 4))),
        ((("f32", (2, 3, 8, 8)),), dict(size=2)),
        ((("f32", (2, 3, 5, 7)),), dict(size=3)),
        ((("f32", (2, 2, 2, 2)),), dict(size=3)),
        ((("f32", (2, 2, 7)),), dict(size=3)),
        ((("f32", (2, 2, 12)),), dict(size=4)),
        ((("f32", (1, 2, 4, 5, 3)),), dict(size=(2, 3, 3))),
        ((("f32", (1, 2, 4, 6, 2)),), dict(size=(2, 3, 1))),
        ((("f32", (2, 3, 4, 4)),), dict(size=4)),
    ),
))
