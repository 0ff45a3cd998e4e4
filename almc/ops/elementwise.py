"""Broadcasting arithmetic (add, sub, mul, div), concat, and scalar constants.

`a + b`, `a - b`, `a * b` and `a / b` on tensors in .alm are these ops; a number
beside a tensor becomes a `constant` node and broadcasts.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..types import TensorType, broadcast
from .registry import Attr, Op, register


def binary(name, onnx_op, fn, doc):
    register(Op(
        name=name, inputs=("a", "b"),
        shape=lambda types, a: broadcast(types[0], types[1]),
        lower=lambda g, ins, p, a, types, out: g.node(onnx_op, ins, out=g.out),
        reference=lambda xs, p, a: fn(xs[0], xs[1]).astype(np.result_type(xs[0], xs[1])),
        macs=lambda types, out, a: out.per_example() if name in ("mul", "div") else 0,
        category="arithmetic", doc=doc,
        examples=(((("f32", (2, 3, 4)), ("f32", (2, 3, 4))), {}),
                  ((("f32", (2, 3, 4, 4)), ("f32", (3, 1, 1))), {}),
                  ((("f32", (2, 1, 5)), ("f32", (4, 1))), {})),
    ))


binary("add", "Add", np.add, "a + b with numpy broadcasting")
binary("sub", "Sub", np.subtract, "a - b with numpy broadcasting")
binary("mul", "Mul", np.multiply, "a * b with numpy broadcasting")
binary("div", "Div", np.divide, "a / b with numpy broadcasting")


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


register(Op(
    name="concat", inputs=("xs",), variadic=True, attrs=(Attr("axis", "int", 1),),
    shape=concat_shape,
    lower=lambda g, ins, p, a, types, out: g.node("Concat", ins, out=g.out, axis=a.axis),
    reference=lambda xs, p, a: np.concatenate(xs, axis=a.axis),
    category="shape",
    doc="Joins tensors along an axis (channels by default): concat(a, b, c) or concat(list).",
    examples=(((("f32", (2, 3, 4, 4)), ("f32", (2, 5, 4, 4))), {}),
              ((("f32", (2, 3)), ("f32", (2, 2)), ("f32", (2, 1))), dict(axis=-1))),
))


register(Op(
    name="constant", inputs=(), attrs=(Attr("value", "float"),),
    shape=lambda types, a: TensorType("f32", ()),
    lower=lambda g, ins, p, a, types, out: g.node(
        "Constant", [], out=g.out, value=_scalar_tensor(a.value)),
    reference=lambda xs, p, a: np.asarray(a.value, np.float32),
    category="arithmetic",
    doc="A float32 scalar; made by build for numbers beside tensors (x * 0.5).",
    examples=(((), dict(value=2.5)),),
))


def _scalar_tensor(v):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(v, np.float32), "value")
