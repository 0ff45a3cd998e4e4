"""Tensor algebra between activations: matmul, and the axis moves around it (transpose,
permute, squeeze, unsqueeze). A batch axis (a symbolic axis 0, N) stays where it is: every op
here keeps it first, as `almc train` and the exported model's dynamic batch need it."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..types import TensorType, broadcast
from .registry import Attr, Op, register


def _matmul_shape(types, a):
    x, y = types
    if x.rank < 2 or y.rank < 2:
        raise ShapeError(f"matmul multiplies tensors of rank 2 or more, got {x} and {y}",
                         "make a vector a matrix with unsqueeze(v, -1)")
    if x.dims[-1] != y.dims[-2]:
        raise ShapeError(f"matmul: the last axis of {x} does not match the second to last of {y}")
    if x.dtype != y.dtype or not x.dtype.startswith("f"):
        raise ShapeError(f"matmul needs two float tensors of one dtype, got {x} and {y}")
    lead = broadcast(TensorType(x.dtype, x.dims[:-2]), TensorType(y.dtype, y.dims[:-2]))
    return TensorType(x.dtype, (*lead.dims, x.dims[-2], y.dims[-1]))


def _swap_last(d, t):
    return d.op("transpose", [t], {"a": -2, "b": -1})


def _matmul_grad(d, n, gy):  # dA = G B^T, dB = A^T G, each summed back over broadcast axes
    x, y = n.inputs
    return [d.sum_to(d.op("matmul", [gy, _swap_last(d, y)]), x) if d.wants(x) else None,
            d.sum_to(d.op("matmul", [_swap_last(d, x), gy]), y) if d.wants(y) else None], {}


register(Op(
    name="matmul", inputs=("a", "b"), shape=_matmul_shape, grad=_matmul_grad,
    lower=lambda g, ins, p, a, types, out: g.node("MatMul", ins, out=g.out),
    reference=lambda xs, p, a: np.matmul(xs[0], xs[1]),
    macs=lambda types, out, a: out.per_example() * types[0].dims[-1],
    category="math",
    doc="Matrix product over the last two axes, the axes before them broadcast, as torch.matmul: "
        "[N, H, L, d] @ [N, H, d, L] gives [N, H, L, L]. Both operands have rank 2 or more.",
    examples=(((("f32", (2, 3, 4)), ("f32", (2, 4, 5))), {}),
              ((("f32", (2, 3, 4, 5)), ("f32", (5, 6))), {}),
              ((("f32", (2, 1, 4, 5)), ("f32", (2, 3, 5, 2))), {})),
))


def _axis(x: TensorType, axis: int, name: str, extra: int = 0) -> int:
    """`axis` normalised for a tensor of rank x.rank + extra; the batch axis is refused."""
    r = x.rank + extra
    if not -r <= axis < r:
        raise ShapeError(f"{name}: axis {axis} is out of range for {x}")
    axis %= r
    if axis == 0 and _batched(x):
        raise ShapeError(f"{name} cannot move or remove the batch axis 0", "axes count from 0, the batch axis")
    return axis


def _batched(x: TensorType) -> bool:
    return x.rank > 0 and isinstance(x.dims[0], str)


def _permutation(types, a) -> tuple[int, ...]:
    x = types[0]
    if "dims" in a:
        perm = tuple(a.dims)
        if sorted(i % x.rank if -x.rank <= i < x.rank else i for i in perm) != list(range(x.rank)):
            raise ShapeError(f"permute needs each axis of {x} once, got {perm}")
        perm = tuple(i % x.rank for i in perm)
        if perm[0] != 0 and _batched(x):
            raise ShapeError("permute cannot move the batch axis 0", "keep 0 first: permute(x, (0, 2, 1, 3))")
        return perm
    i, j = _axis(x, a.a, "transpose"), _axis(x, a.b, "transpose")
    perm = list(range(x.rank))
    perm[i], perm[j] = j, i
    return tuple(perm)


def _permute_shape(types, a):
    x = types[0]
    return x.with_dims(tuple(x.dims[i] for i in _permutation(types, a)))


def _permute_grad(d, n, gy):
    perm = _permutation([d.type(n.inputs[0])], n.attrs)
    return [d.op("permute", [gy], {"dims": tuple(int(i) for i in np.argsort(perm))})], {}


for _name, _attrs, _doc, _examples in (
        ("transpose", (Attr("a", "int", -2), Attr("b", "int", -1)),
         "Swaps two axes (the last two by default), as torch.transpose: transpose(x, 1, 2)",
         (((("f32", (2, 3, 4)),), {}), ((("f32", (2, 3, 4, 5)),), dict(a=1, b=2)))),
        ("permute", (Attr("dims", "shape", doc="the new order of the axes, 0 first"),),
         "Reorders the axes, as torch.permute: permute(x, (0, 2, 1, 3)) turns [N, L, H, d] into [N, H, L, d]",
         (((("f32", (2, 3, 4, 5)),), dict(dims=(0, 2, 1, 3))), ((("f32", (2, 3, 4)),), dict(dims=(0, -1, 1)))))):
    register(Op(
        name=_name, inputs=("x",), attrs=_attrs, shape=_permute_shape, grad=_permute_grad, category="shape",
        lower=lambda g, ins, p, a, types, out: g.node("Transpose", ins, out=g.out, perm=list(_permutation(types, a))),
        reference=lambda xs, p, a: np.transpose(xs[0], _permutation([TensorType("f32", xs[0].shape)], a)),
        doc=_doc + "; the batch axis 0 stays first.", examples=_examples,
    ))


def _squeeze_shape(types, a):
    x = types[0]
    axis = _axis(x, a.axis, "squeeze")
    if x.dims[axis] != 1:
        raise ShapeError(f"squeeze: axis {a.axis} of {x} has size {x.dims[axis]}, not 1")
    return x.with_dims(x.dims[:axis] + x.dims[axis + 1:])


def _unsqueeze_shape(types, a):
    x = types[0]
    axis = _axis(x, a.axis, "unsqueeze", extra=1)
    return x.with_dims(x.dims[:axis] + (1,) + x.dims[axis:])


def _squeeze_lower(onnx_op, extra):
    def lower(g, ins, p, a, types, out):
        axis = _axis(types[0], a.axis, onnx_op.lower(), extra)
        return g.node(onnx_op, [ins[0], g.const("axes", [axis], np.int64)], out=g.out)
    return lower


register(Op(
    name="squeeze", inputs=("x",), attrs=(Attr("axis", "int"),), shape=_squeeze_shape, category="shape",
    lower=_squeeze_lower("Squeeze", 0),
    reference=lambda xs, p, a: np.squeeze(xs[0], axis=a.axis),
    grad=lambda d, n, gy: ([d.op("unsqueeze", [gy], {"axis": _axis(d.type(n.inputs[0]), n.attrs.axis, "squeeze")})],
                           {}),
    doc="Removes an axis of size 1: squeeze(x, 1) turns [N, 1, L] into [N, L].",
    examples=(((("f32", (2, 1, 4)),), dict(axis=1)), ((("f32", (2, 3, 1)),), dict(axis=-1))),
))

register(Op(
    name="unsqueeze", inputs=("x",), attrs=(Attr("axis", "int"),), shape=_unsqueeze_shape, category="shape",
    lower=_squeeze_lower("Unsqueeze", 1),
    reference=lambda xs, p, a: np.expand_dims(xs[0], a.axis),
    grad=lambda d, n, gy: ([d.op("squeeze", [gy], {"axis": _axis(d.type(n.inputs[0]), n.attrs.axis, "unsqueeze", 1)})],
                           {}),
    doc="Inserts an axis of size 1 at `axis` of the result: unsqueeze(x, -1) turns [N, L] into [N, L, 1].",
    examples=(((("f32", (2, 4)),), dict(axis=1)), ((("f32", (2, 3)),), dict(axis=-1))),
))
