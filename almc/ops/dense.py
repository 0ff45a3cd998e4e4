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
    """Gemm; over [N, ..., F] Gemm of the rows [-1, F], reshaped back. That keeps the weight
    [units, F] as PyTorch stores it, where MatMul would need its transpose as a second copy."""
    x = types[0]
    args = [ins[0], p["weight"]] + ([p["bias"]] if a.bias else [])
    if x.rank == 2:
        return g.node("Gemm", args, out=g.out, transB=1)
    rows = g.node("Reshape", [ins[0], g.const("rows", [-1, x.dims[-1]], np.int64)])
    y = g.node("Gemm", [rows, *args[1:]], transB=1)
    lead = g.node("Shape", [ins[0]], end=-1)
    shape = g.node("Concat", [lead, g.const("units", [a.units], np.int64)], axis=0)
    return g.node("Reshape", [y, shape], out=g.out)


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
    """flatten / reshape: the gradient takes the input's shape back."""
    return [d.op("reshape", [gy], {"shape": tuple(d.type(n.inputs[0]).dims[1:])})], {}


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


def reshape_target(x: TensorType, shape):
    per = x.per_example()
    for d in x.dims[1:]:
        if isinstance(d, str):
            raise ShapeError(f"reshape needs known sizes after the batch axis, got {x}")
    if shape.count(-1) > 1:
        raise ShapeError("reshape allows at most one -1 in its shape")
    known = prod(d for d in shape if d != -1)
    if any(d == 0 or d < -1 for d in shape):
        raise ShapeError(f"reshape sizes must be positive (or one -1), got {shape}")
    if -1 in shape:
        if per % known:
            raise ShapeError(f"cannot reshape {per} elements per example into {shape}")
        shape = tuple(per // known if d == -1 else d for d in shape)
    if prod(shape) != per:
        raise ShapeError(f"cannot reshape {x} ({per} elements per example) into [N, {', '.join(map(str, shape))}]")
    return shape


def reshape_lower(g, ins, p, a, types, out):
    target = g.const("shape", [0, *reshape_target(types[0], a.shape)], np.int64)
    return g.node("Reshape", [ins[0], target], out=g.out)


register(Op(
    name="reshape", inputs=("x",), attrs=(Attr("shape", "shape", doc="per-example shape; the batch axis is kept"),),
    grad=reshape_back,
    shape=lambda types, a: types[0].with_dims((types[0].dims[0], *reshape_target(types[0], a.shape))),
    lower=reshape_lower,
    reference=lambda xs, p, a: xs[0].reshape(xs[0].shape[0], *a.shape),
    category="shape",
    doc="Reshape each example; the batch axis stays: reshape(x, (16, 5, 5)) gives [N, 16, 5, 5].",
    examples=(((("f32", (2, 12)),), dict(shape=(3, 4))), ((("f32", (2, 3, 4)),), dict(shape=(-1,)))),
))
