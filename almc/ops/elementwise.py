"""Broadcasting arithmetic (add, sub, mul, div), concat, and scalar constants.

`a + b`, `a - b`, `a * b` and `a / b` on tensors in .alm are these ops; a number
beside a tensor becomes a `constant` node and broadcasts.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..types import TensorType, broadcast
from .registry import Attr, Op, register


def _neg(d, g):
    return d.op("mul", [g, d.const(-1.0)])


def _add_grad(d, n, gy):
    a, b = n.inputs
    return [d.sum_to(gy, a) if d.wants(a) else None, d.sum_to(gy, b) if d.wants(b) else None], {}


def _sub_grad(d, n, gy):
    a, b = n.inputs
    return [d.sum_to(gy, a) if d.wants(a) else None, d.sum_to(_neg(d, gy), b) if d.wants(b) else None], {}


def _mul_grad(d, n, gy):
    a, b = n.inputs
    return [d.sum_to(d.op("mul", [gy, b]), a) if d.wants(a) else None,
            d.sum_to(d.op("mul", [gy, a]), b) if d.wants(b) else None], {}


def _div_grad(d, n, gy):  # d(a/b) = g/b, -g*a/b^2 = -(g/b) * y
    a, b = n.inputs
    ga = d.op("div", [gy, b])
    return [d.sum_to(ga, a) if d.wants(a) else None,
            d.sum_to(_neg(d, d.op("mul", [ga, n.id])), b) if d.wants(b) else None], {}


def _pick_grad(which):
    """maximum / minimum: the gradient goes to the operand picked, half to each on a tie (as PyTorch)."""
    def grad(d, n, gy):
        def pick(x, y):
            return d.sum_to(d.op("pick_grad", [gy, x, y], {"which": which}), x) if d.wants(x) else None

        a, b = n.inputs
        return [pick(a, b), pick(b, a)], {}
    return grad


OPERATORS = {"+": "add", "-": "sub", "*": "mul", "/": "div"}  # the op each operator of .alm builds on tensors
GRADS = {"add": _add_grad, "sub": _sub_grad, "mul": _mul_grad, "div": _div_grad, "maximum": _pick_grad("max"),
         "minimum": _pick_grad("min")}


def full_rank_scalars(g, ins: list[str], types, rank: int) -> list[str]:
    """Each rank-0 input given shape [1] * rank. onnxruntime broadcasts a rank-0 scalar over a
    tensor with size-1 axes one element at a time: Mul([32, 512, 1, 1], []) is far slower than
    with the scalar as [1, 1, 1, 1] (1x1 maps, 1x1 conv weights in the optimiser update; figures:
    docs/performance.md).
    A constant becomes a constant of that shape; a computed scalar (the learning rate) is
    reshaped, and onnxruntime's common-subexpression elimination merges the equal Reshapes."""
    if rank < 2:
        return ins
    out = []
    for x, t in zip(ins, types):
        if t.rank == 0:
            value = g.value_of(x)
            x = (g.const("scalar", value.reshape([1] * rank), value.dtype) if value is not None
                 else g.node("Reshape", [x, g.const("ones", [1] * rank, np.int64)]))
        out.append(x)
    return out


def binary(name, onnx_op, fn, doc):
    register(Op(
        name=name, inputs=("a", "b"),
        shape=lambda types, a: broadcast(types[0], types[1]),
        lower=lambda g, ins, p, a, types, out: g.node(onnx_op, full_rank_scalars(g, ins, types, out.rank), out=g.out),
        reference=lambda xs, p, a: fn(xs[0], xs[1]).astype(np.result_type(xs[0], xs[1])),
        macs=lambda types, out, a: out.per_example() if name in ("mul", "div") else 0,
        category="arithmetic", doc=doc, grad=GRADS[name],
        examples=(((("f32", (2, 3, 4)), ("f32", (2, 3, 4))), {}),
                  ((("f32", (2, 3, 4, 4)), ("f32", (3, 1, 1))), {}),
                  ((("f32", (2, 3, 1, 1)), ("f32", ())), {}),
                  ((("f32", (2, 1, 5)), ("f32", (4, 1))), {})),
    ))


binary("add", "Add", np.add, "a + b with numpy broadcasting")
binary("sub", "Sub", np.subtract, "a - b with numpy broadcasting")
binary("mul", "Mul", np.multiply, "a * b with numpy broadcasting")
binary("div", "Div", np.divide, "a / b with numpy broadcasting")
binary("maximum", "Max", np.maximum, "the larger of a and b, elementwise with broadcasting; max(a, b) of tensors")
binary("minimum", "Min", np.minimum, "the smaller of a and b, elementwise with broadcasting; min(a, b) of tensors")


def _pick_lower(g, ins, p, a, types, out):  # g * ((a > b) + 0.5 (a == b)), with < for min
    gy, x, y = ins
    won = g.node("Cast", [g.node("Greater" if a.which == "max" else "Less", [x, y])], to=1)
    tie = g.node("Mul", [g.node("Cast", [g.node("Equal", [x, y])], to=1), g.const("half", 0.5)])
    return g.node("Mul", [gy, g.node("Add", [won, tie])], out=g.out)


def _pick_reference(xs, p, a):
    gy, x, y = xs
    won = (x > y) if a.which == "max" else (x < y)
    return (gy * (won + 0.5 * (x == y))).astype(gy.dtype)


register(Op(
    name="pick_grad", inputs=("g", "a", "b"), attrs=(Attr("which", "str", "max", ("max", "min")),),
    shape=lambda types, a: types[0], lower=_pick_lower, reference=_pick_reference, category="gradient",
    doc="Gradient of maximum / minimum for operand a: g where a won, g / 2 on a tie, else 0.",
    examples=(((("f32", (2, 3, 4)), ("f32", (2, 3, 4)), ("f32", (3, 1))), {}),
              ((("f32", (2, 3, 4)), ("f32", (2, 3, 4)), ("f32", (2, 3, 4))), dict(which="min"))),
))


def concat_shape(types, a):
    first = types[0]
    r = first.rank
    if not -r <= a.axis < r:
        raise ShapeError(f"concat axis {a.axis} is out of range for {first}")
    axis = a.axis % r
    if axis == 0:
        raise ShapeError("concat along the batch axis 0 is not supported; use axis >= 1")
    total = 0
    for t in types:
        if t.rank != r or t.dtype != first.dtype:
            raise ShapeError(f"concat needs inputs of one rank and dtype, got {', '.join(map(str, types))}")
        for i in range(r):
            if i != axis and t.dims[i] != first.dims[i]:
                raise ShapeError(
                    f"concat on axis {axis} needs every other axis equal, got {', '.join(map(str, types))}",
                    "crop the larger input first (crop(x, like = y))" if i >= 2 else None)
        if isinstance(t.dims[axis], str) or isinstance(total, str):
            total = f"{total}+{t.dims[axis]}" if total else t.dims[axis]
        else:
            total += t.dims[axis]
    return first.with_dims((*first.dims[:axis], total, *first.dims[axis + 1:]))


def _concat_grad(d, n, gy):
    axis = n.attrs.axis % d.type(n.id).rank
    out, start = [], 0
    for i in n.inputs:
        size = d.type(i).dims[axis]
        out.append(d.op("slice_axis", [gy], {"axis": axis, "start": start, "end": start + size}) if d.wants(i) else None)
        start += size
    return out, {}


register(Op(
    name="concat", inputs=("xs",), variadic=True, attrs=(Attr("axis", "int", 1),),
    shape=concat_shape, grad=_concat_grad,
    lower=lambda g, ins, p, a, types, out: g.node("Concat", ins, out=g.out, axis=a.axis),
    reference=lambda xs, p, a: np.concatenate(xs, axis=a.axis),
    category="shape",
    doc="Joins tensors along an axis (channels by default): concat(a, b, c) or concat(list).",
    examples=(((("f32", (2, 3, 4, 4)), ("f32", (2, 5, 4, 4))), {}),
              ((("f32", (2, 3)), ("f32", (2, 2)), ("f32", (2, 1))), dict(axis=-1))),
))


def _slice_shape(types, a):
    x = types[0]
    if not 0 <= a.start < a.end <= x.dims[a.axis]:
        raise ShapeError(f"slice [{a.start}, {a.end}) is out of range for axis {a.axis} of {x}")
    return x.with_dims((*x.dims[:a.axis], a.end - a.start, *x.dims[a.axis + 1:]))


register(Op(
    name="slice_axis", inputs=("x",), attrs=(Attr("axis", "int"), Attr("start", "int"), Attr("end", "int")),
    shape=_slice_shape,
    lower=lambda g, ins, p, a, types, out: g.node(
        "Slice", [ins[0], g.const("starts", [a.start], np.int64), g.const("ends", [a.end], np.int64),
                  g.const("axes", [a.axis], np.int64)], out=g.out),
    reference=lambda xs, p, a: np.take(xs[0], range(a.start, a.end), axis=a.axis),
    category="gradient", doc="x[start:end] along one axis (the gradient of concat).",
    examples=(((("f32", (2, 5, 3)),), dict(axis=1, start=1, end=4)),),
))


register(Op(
    name="constant", inputs=(), attrs=(Attr("value", "float"),), leaf=True,
    shape=lambda types, a: TensorType("f32", ()),
    lower=lambda g, ins, p, a, types, out: g.const("value", a.value),
    reference=lambda xs, p, a: np.asarray(a.value, np.float32),
    category="arithmetic", grad=lambda d, n, gy: ([], {}),
    doc="A float32 scalar; made by build for numbers beside tensors (x * 0.5). Lowered to an initializer.",
    examples=(((), dict(value=2.5)),),
))


