"""dense (fully connected over the last axis, ONNX Gemm) and the ops that reshape into it:
flatten, reshape."""
from __future__ import annotations

from math import prod

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .attrs import weight_inits
from .registry import Attr, Op, Param, TorchModule, register


def dense_shape(types, a):
    (x,) = types
    if x.rank < 2:
        raise ShapeError(f"dense expects an input [N, ..., features], got {x}")
    if isinstance(x.dims[-1], str):
        raise ShapeError(f"dense needs a known number of input features (the last axis), got {x}")
    if a.units <= 0:
        raise ShapeError(f"dense needs a positive number of units, got {a.units}")
    return x.with_dims((*x.dims[:-1], a.units))


def dense_params(types, a):
    fin = types[0].dims[-1]
    ps = [Param("weight", (a.units, fin), a.init, fan_in=fin, fan_out=a.units)]
    if a.bias:
        ps.append(Param("bias", (a.units,), a.bias_init))
    return ps


def dense_lower(g, ins, p, a, types, out):
    """Gemm for [N, F]; over [N, ..., F] MatMul by the weight's transpose, then Add: the file keeps
    PyTorch's [units, F] layout and onnxruntime folds the Transpose once, when the session starts
    (4 to 30% faster than Gemm over the rows reshaped: bench/dense_forms.py, docs/performance.md)."""
    args = [ins[0], p["weight"]] + ([p["bias"]] if a.bias else [])
    if types[0].rank == 2:
        return g.node("Gemm", args, out=g.out, transB=1)
    y = g.node("MatMul", [ins[0], g.node("Transpose", [p["weight"]], perm=[1, 0])], out=None if a.bias else g.out)
    return g.node("Add", [y, p["bias"]], out=g.out) if a.bias else y


def dense_reference(xs, p, a):
    y = xs[0] @ p["weight"].T
    return y + p["bias"] if a.bias else y


def dense_grad(d, n, gy):
    x = n.inputs[0]
    rank = d.type(x).rank
    if rank == 2:
        gx = d.op("gemm", [gy, d.param("weight")]) if d.wants(x) else None
        grads = {"weight": d.op("gemm", [gy, x], {"trans_a": True})}
    else:
        gx = d.op("matmul", [gy, d.param("weight")]) if d.wants(x) else None
        grads = {"weight": d.op("dense_weight_grad", [gy, x])}
    if n.attrs.bias:
        grads["bias"] = d.op("sum", [gy], {"axis": tuple(range(rank - 1)) if rank > 2 else 0})
    return [gx], grads


def _rows(g, t, width):
    return g.node("Reshape", [t, g.const(f"rows{width}", [-1, width], np.int64)])


register(Op(
    name="dense_weight_grad", inputs=("g", "x"),
    shape=lambda types, a: TensorType(types[0].dtype, (types[0].dims[-1], types[1].dims[-1])),
    lower=lambda g, ins, p, a, types, out: g.node(
        "Gemm", [_rows(g, ins[0], types[0].dims[-1]), _rows(g, ins[1], types[1].dims[-1])], out=g.out, transA=1),
    reference=lambda xs, p, a: np.tensordot(xs[0], xs[1], axes=(list(range(xs[0].ndim - 1)),) * 2),
    category="gradient", doc="The weight gradient of dense over [N, ..., F]: the sum over rows of g^T x.",
    examples=(((("f32", (2, 3, 4)), ("f32", (2, 3, 5))), {}),),
))


def reshape_back(d, n, gy):
    """flatten / reshape: the gradient takes the input's shape back (read at run time where sizes
    are symbolic)."""
    x = n.inputs[0]
    if any(isinstance(dim, str) for dim in d.type(x).dims[1:]):
        return [d.op("reshape_as", [gy, x])], {}
    return [d.op("reshape", [gy], {"shape": tuple(d.type(x).dims[1:])})], {}


register(Op(
    name="reshape_as", inputs=("x", "like"), shape=lambda types, a: types[0].with_dims(types[1].dims),
    lower=lambda g, ins, p, a, types, out: g.node("Reshape", [ins[0], g.node("Shape", [ins[1]])], out=g.out),
    reference=lambda xs, p, a: xs[0].reshape(xs[1].shape), category="gradient",
    doc="x reshaped to the shape of `like` (the gradient of a reshape with symbolic sizes).",
    examples=(((("f32", (2, 12)), ("f32", (2, 3, 4))), {}),),
))


register(Op(
    name="dense", inputs=("x",), grad=dense_grad,
    out_channel_axis=lambda rank: rank - 1, torch=TorchModule("Linear", "fc"),
    attrs=(Attr("units", "int", doc="output features"), Attr("bias", "bool", True),
           *weight_inits()),
    shape=dense_shape, params=dense_params, lower=dense_lower, reference=dense_reference,
    macs=lambda types, out, a: out.per_example() * types[0].dims[-1],
    window=lambda types, a: "global",
    doc="Fully connected layer y = x W^T + b over the last axis, as torch.nn.Linear: [N, features] or "
        "[N, ..., features] (each token of a sequence); weight [units, features] as in PyTorch.",
    examples=(((("f32", (3, 7)),), dict(units=5)), ((("f32", (2, 4)),), dict(units=3, bias=False)),
              ((("f32", (2, 3, 7)),), dict(units=5)), ((("f32", (2, 2, 3, 4)),), dict(units=3, bias=False))),
))


def flatten_shape(types, a):
    (x,) = types
    if x.rank < 2:
        raise ShapeError(f"flatten expects at least [N, ...], got {x}")
    for d in x.dims[1:]:
        if isinstance(d, str):
            raise ShapeError(f"flatten needs known sizes after the batch axis, got {x}")
    return x.with_dims((x.dims[0], prod(x.dims[1:])))


register(Op(
    name="flatten", inputs=("x",), shape=flatten_shape, grad=reshape_back, torch=TorchModule("Flatten"),
    lower=lambda g, ins, p, a, types, out: g.node("Flatten", [ins[0]], out=g.out, axis=1),
    reference=lambda xs, p, a: xs[0].reshape(xs[0].shape[0], -1),
    category="shape",
    doc="Keeps the batch axis and flattens the rest: [N, C, H, W] -> [N, C*H*W].",
    examples=(((("f32", (2, 3, 4, 5)),), {}),),
))


def reshape_target(x: TensorType, shape) -> tuple:
    """The per-example shape, its -1 resolved. Sizes may be symbolic (a name such as "T") when
    one entry at most is not known at compile time: ONNX's Reshape and numpy infer that one."""
    if shape.count(-1) > 1:
        raise ShapeError("reshape allows at most one -1 in its shape")
    if any(not isinstance(d, str) and (d == 0 or d < -1) for d in shape):
        raise ShapeError(f"reshape sizes must be positive (or one -1), got {shape}")
    have = [d for d in x.dims[1:] if isinstance(d, str)]
    named = [d for d in shape if isinstance(d, str)]
    if len(named) + (-1 in shape) > 1 and (have or named):
        raise ShapeError(f"reshape keeps at most one size unknown at compile time (a name or -1), got {shape}")
    for d in named:
        if d not in have:
            raise ShapeError(f"reshape: the size {d} is not an axis of {x}")
    per = prod(d for d in x.dims[1:] if isinstance(d, int))
    known = prod(d for d in shape if isinstance(d, int) and d != -1)
    rest = list(have)
    for d in named:
        rest.remove(d)
    if -1 in shape:
        if per % known:
            raise ShapeError(f"cannot reshape {x} ({per} known elements per example) into {shape}")
        k = per // known
        fill = "*".join(rest + ([str(k)] if k != 1 else [])) if rest else k  # T, T*4, or a number
        return tuple(fill if d == -1 else d for d in shape)
    if rest or per != known:
        count = f" ({per} elements per example)" if not have else ""
        raise ShapeError(f"cannot reshape {x}{count} into [{', '.join(map(str, (x.dims[0], *shape)))}]")
    return tuple(shape)


def reshape_lower(g, ins, p, a, types, out):
    target = [d if isinstance(d, int) else -1 for d in reshape_target(types[0], a.shape)]  # one unknown: -1
    return g.node("Reshape", [ins[0], g.const("shape", [0, *target], np.int64)], out=g.out)


def _reshape_reference(xs, p, a):
    return xs[0].reshape(xs[0].shape[0], *(-1 if isinstance(d, str) else d for d in a.shape))


register(Op(
    name="reshape", inputs=("x",),
    attrs=(Attr("shape", "dims", doc="per-example shape; the batch axis is kept; one size may be -1 or a name"),),
    grad=reshape_back,
    shape=lambda types, a: types[0].with_dims((types[0].dims[0], *reshape_target(types[0], a.shape))),
    lower=reshape_lower,
    reference=_reshape_reference,
    category="shape",
    doc="Reshape each example; the batch axis stays: reshape(x, (16, 5, 5)) gives [N, 16, 5, 5]. One size may "
        "be -1 or a symbolic size: reshape(x, (x.shape[1], 4, 3)) of [N, T, 12] gives [N, T, 4, 3].",
    examples=(((("f32", (2, 12)),), dict(shape=(3, 4))), ((("f32", (2, 3, 4)),), dict(shape=(-1,)))),
))
