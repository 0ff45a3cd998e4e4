"""Tensor algebra between activations: matmul, and the axis moves around it (transpose,
permute, squeeze, unsqueeze). A batch axis (a symbolic axis 0, N) stays where it is: every op
here keeps it first, as `almc train` and the exported model's dynamic batch need it."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..types import TensorType, broadcast
from .common import matmul_along_axes, np_along_axes, per_axis
from .registry import Attr, Op, Param, TorchModule, register


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


# -- slicing: x[:, 1:], x[..., :k], x[:, ::2], x[:, 0] (an index is a slice of one, squeezed) ----------

END = 2 ** 62  # a slice's end on an axis of unknown size: to the end (ONNX clamps it)


def _slice_len(d, start, end, step):
    """The sliced length of an axis of size d (an int, or a symbol when unknown)."""
    if isinstance(d, int):
        return len(range(start, min(end, d), step))
    if end != END:
        return end - start
    return -start if start < 0 else (d if start == 0 else f"{d}-{start}")


def _slice_shape(types, a):
    x = types[0]
    dims = list(x.dims)
    for axis, start, end, step in zip(a.axes, a.starts, a.ends, a.steps):
        n = _slice_len(dims[axis], start, end, step)
        if isinstance(n, int) and n <= 0:
            raise ShapeError(f"the slice of axis {axis} of {x} is empty")
        dims[axis] = n
    return x.with_dims(dims)


def _ints(g, name, values):
    return g.const(name, list(values), np.int64)


def _slice_lower(g, ins, p, a, types, out):
    return g.node("Slice", [ins[0], _ints(g, "starts", a.starts), _ints(g, "ends", a.ends), _ints(g, "axes", a.axes),
                            _ints(g, "steps", a.steps)], out=g.out)


def _slice_index(a):
    index = {}
    for axis, start, end, step in zip(a.axes, a.starts, a.ends, a.steps):
        index[axis] = slice(start, None if end == END else end, step)
    return index


def _slice_reference(xs, p, a):
    x = xs[0]
    index = _slice_index(a)
    return x[tuple(index.get(i, slice(None)) for i in range(x.ndim))]


def _slice_grad_reference(xs, p, a):
    gy, x = xs
    out = np.zeros(x.shape, np.result_type(gy, x))
    index = _slice_index(a)
    out[tuple(index.get(i, slice(None)) for i in range(x.ndim))] = gy
    return out


def _slice_grad_lower(g, ins, p, a, types, out):
    """Zeros with g where the slice read: a strided axis first spreads g out with step - 1 zeros
    between its values, then Pad puts the zeros before and after each axis."""
    gy, x = ins
    gt, xt = types
    t = gy
    for axis, step in zip(a.axes, a.steps):
        if step == 1:
            continue
        m = gt.dims[axis]
        spread = g.node("Pad", [g.node("Unsqueeze", [t, _ints(g, "after", [axis + 1])]),
                                _ints(g, "gap", [0, step - 1]), g.const("zero", 0.0), _ints(g, "after", [axis + 1])])
        shape = g.node("Shape", [spread])
        merged = g.node("Concat", [g.node("Slice", [shape, _ints(g, "zero_i", [0]), _ints(g, "axis", [axis])]),
                                   _ints(g, "minus_one", [-1]),
                                   g.node("Slice", [shape, _ints(g, "past", [axis + 2]), _ints(g, "end", [END])])], axis=0)
        t = g.node("Reshape", [spread, merged])
        t = g.node("Slice", [t, _ints(g, "zero_i", [0]), _ints(g, "used", [(m - 1) * step + 1]), _ints(g, "axis", [axis])])
    begins, ends = [], []
    for axis, start, end, step in zip(a.axes, a.starts, a.ends, a.steps):
        d = xt.dims[axis]
        if isinstance(d, int):
            span = (_slice_len(d, start, end, step) - 1) * step + 1  # from the first value read to the last
            begins.append(g.const("b", [start], np.int64))
            ends.append(g.const("e", [d - start - span], np.int64))
            continue
        size = g.node("Slice", [g.node("Shape", [x]), _ints(g, "axis", [axis]), _ints(g, "axis_end", [axis + 1])])
        if start < 0:  # x[:, -k:] on an axis of unknown size: begins at size - k
            begins.append(g.node("Add", [size, _ints(g, "start", [start])]))
            ends.append(_ints(g, "zero_i", [0]) if end == END else _ints(g, "stop", [-end]))
        else:
            begins.append(_ints(g, "start", [start]))
            ends.append(_ints(g, "zero_i", [0]) if end == END else g.node("Sub", [size, _ints(g, "stop", [end])]))
    pads = g.node("Concat", begins + ends, axis=0)
    return g.node("Pad", [t, pads, g.const("zero", 0.0), _ints(g, "axes", a.axes)], out=g.out)


SLICE_ATTRS = (Attr("axes", "any"), Attr("starts", "any"), Attr("ends", "any"), Attr("steps", "any"))
register(Op(
    name="slice", inputs=("x",), attrs=SLICE_ATTRS, shape=_slice_shape, lower=_slice_lower,
    reference=_slice_reference, category="gradient",
    grad=lambda d, n, gy: ([d.op("slice_grad", [gy, n.inputs[0]], n.attrs)], {}),
    doc="x[start:end:step] on some axes (what a subscript x[:, 1:] builds; ends of 2^62 run to the end).",
    examples=(((("f32", (2, 5, 6)),), dict(axes=(1, 2), starts=(1, 0), ends=(4, 6), steps=(1, 2))),
              ((("f32", (2, 7)),), dict(axes=(1,), starts=(2,), ends=(7,), steps=(3,)))),
))
register(Op(
    name="slice_grad", inputs=("g", "x"), attrs=SLICE_ATTRS, shape=lambda types, a: types[1],
    lower=_slice_grad_lower, reference=_slice_grad_reference, category="gradient",
    doc="The gradient of slice: zeros the shape of x, with g where the slice read.",
    examples=(((("f32", (2, 3, 3)), ("f32", (2, 5, 6))), dict(axes=(1, 2), starts=(1, 0), ends=(4, 6), steps=(1, 2))),
              ((("f32", (2, 2)), ("f32", (2, 7))), dict(axes=(1,), starts=(2,), ends=(7,), steps=(3,)))),
))


# -- free tensors: parameter (learned, or fixed when trainable = false) and broadcast -----------

def _parameter_shape(types, a):
    if not a.shape or any(d <= 0 for d in a.shape):
        raise ShapeError(f"a parameter's shape needs positive sizes, got {tuple(a.shape)}")
    return TensorType("f32", tuple(a.shape))


def _parameter_params(types, a):
    shape = tuple(a.shape)
    field = int(np.prod(shape[2:])) if len(shape) > 2 else 1  # fans as torch.nn.init computes them
    fan_in, fan_out = (shape[1] * field, shape[0] * field) if len(shape) > 1 else (shape[0], shape[0])
    return [Param("value", shape, a.init, trainable=a.trainable, fan_in=fan_in, fan_out=fan_out)]


register(Op(
    name="parameter", inputs=(),
    attrs=(Attr("shape", "shape", doc="its shape; no batch axis"),
           Attr("init", "init", "zeros", doc='an initialiser: "zeros", normal(0.02), trunc_normal(0.02), ...'),
           Attr("trainable", "bool", True, doc="false: drawn once at compile time and never trained (a buffer)")),
    shape=_parameter_shape, params=_parameter_params,
    lower=lambda g, ins, p, a, types, out: p["value"], reference=lambda xs, p, a: p["value"],
    grad=lambda d, n, gy: ([], {"value": gy}), category="layer", torch=TorchModule("Parameter"),
    doc="A free tensor of the model, learned by training (a class token, a positional embedding), or, with "
        "trainable = false, a fixed random tensor (random features). It has no batch axis: it broadcasts in "
        "arithmetic, and broadcast(p, like) repeats it over the batch.",
    examples=(((), dict(shape=(1, 3, 4)), {"symbolic_batch": False}),
              ((), dict(shape=(5,), init="normal(0.5)", trainable=False), {"symbolic_batch": False})),
))


def _broadcast_shape(types, a):
    x, like = types
    try:
        out = broadcast(x, like)
    except ShapeError:
        raise ShapeError(f"{x} does not broadcast to {like}") from None
    if out.dims != like.dims:
        raise ShapeError(f"{x} broadcast with {like} is {out}, larger than {like}")
    return out


register(Op(
    name="broadcast", inputs=("x", "like"), shape=_broadcast_shape, grad_inputs=(0,),
    lower=lambda g, ins, p, a, types, out: g.node("Expand", [ins[0], g.node("Shape", [ins[1]])], out=g.out),
    reference=lambda xs, p, a: np.broadcast_to(xs[0], xs[1].shape).copy(),
    grad=lambda d, n, gy: ([d.sum_to(gy, n.inputs[0]), None], {}), category="shape",
    doc="x repeated (broadcast) to the shape of `like`, as torch's x.expand_as(like): "
        "broadcast(class_token, x[:, :1]) gives [N, 1, D] from [1, 1, D].",
    examples=(((("f32", (1, 4)), ("f32", (2, 1, 4))), {}), ((("f32", (3, 1)), ("f32", (2, 3, 5))), {})),
))


# -- stack and pad ---------------------------------------------------------------------

def _stack_shape(types, a):
    first = types[0]
    if any(t != first for t in types):
        raise ShapeError(f"stack needs tensors of one type, got {', '.join(map(str, types))}")
    axis = _axis(first, a.axis, "stack", extra=1)
    return first.with_dims(first.dims[:axis] + (len(types),) + first.dims[axis:])


def _stack_lower(g, ins, p, a, types, out):
    axis = _axis(types[0], a.axis, "stack", extra=1)
    axes = _ints(g, "axes", [axis])
    return g.node("Concat", [g.node("Unsqueeze", [x, axes]) for x in ins], out=g.out, axis=axis)


def _stack_grad(d, n, gy):
    axis = _axis(d.type(n.inputs[0]), n.attrs.axis, "stack", extra=1)
    return [d.op("squeeze", [d.op("slice_axis", [gy], {"axis": axis, "start": k, "end": k + 1})], {"axis": axis})
            if d.wants(x) else None for k, x in enumerate(n.inputs)], {}


register(Op(
    name="stack", inputs=("xs",), variadic=True, attrs=(Attr("axis", "int", 1),), shape=_stack_shape,
    lower=_stack_lower, reference=lambda xs, p, a: np.stack(xs, axis=a.axis), grad=_stack_grad, category="shape",
    doc="Joins tensors of one shape along a new axis (1 by default), as torch.stack: stack(a, b, c) or "
        "stack(list) of [N, F] gives [N, 3, F].",
    examples=(((("f32", (2, 3)), ("f32", (2, 3)), ("f32", (2, 3))), {}),
              ((("f32", (2, 4, 5)), ("f32", (2, 4, 5))), dict(axis=-1))),
))

PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}  # almc's name: ONNX's


def _pad_pairs(x: TensorType, a) -> list[tuple[int, int]]:
    """(begin, end) per spatial axis of [N, C, spatial...]."""
    n = x.rank - 2
    if n < 1:
        raise ShapeError(f"pad expects [N, C, spatial...], got {x}")
    if isinstance(a.pads, str):
        raise ShapeError(f'pad takes sizes, not "{a.pads}"')
    if isinstance(a.pads, tuple) and a.pads and isinstance(a.pads[0], tuple):
        if len(a.pads) != n:
            raise ShapeError(f"pad has {len(a.pads)} (begin, end) pairs but {x} has {n} spatial axes")
        pairs = [tuple(p) for p in a.pads]
    else:
        pairs = [(p, p) for p in per_axis(a.pads, n, "pads")]
    for i, (b, e) in enumerate(pairs):
        size = x.dims[2 + i]
        if b < 0 or e < 0:
            raise ShapeError(f"pad sizes must be non-negative, got {a.pads}")
        if isinstance(size, str) and a.mode != "constant" and (b or e):
            raise ShapeError(f'pad mode "{a.mode}" needs known spatial sizes, got {x}')
        if a.mode == "reflect" and isinstance(size, int) and max(b, e) >= size:
            raise ShapeError(f"reflect padding ({max(b, e)}) must be smaller than the size {size} of {x}")
    return pairs


def _pad_shape(types, a):
    x = types[0]
    pairs = _pad_pairs(x, a)
    return x.with_dims((*x.dims[:2], *(d + b + e if isinstance(d, int) else (d if not b + e else f"{d}+{b + e}")
                                       for d, (b, e) in zip(x.dims[2:], pairs))))


def _pad_lower(g, ins, p, a, types, out):
    pairs = _pad_pairs(types[0], a)
    pads = [0, 0, *(b for b, _ in pairs), 0, 0, *(e for _, e in pairs)]
    args = [ins[0], _ints(g, "pads", pads)] + ([g.const("value", a.value)] if a.mode == "constant" else [])
    return g.node("Pad", args, out=g.out, mode=PAD_MODES[a.mode])


def pad_matrix(n_in: int, before: int, after: int, mode: str) -> np.ndarray:
    """[n_in + before + after, n_in]: which input each padded position copies (none for constant)."""
    m = np.zeros((n_in + before + after, n_in))
    for j in range(m.shape[0]):
        i = j - before
        if mode == "replicate":
            i = min(max(i, 0), n_in - 1)
        elif mode == "reflect":
            i = -i if i < 0 else (2 * (n_in - 1) - i if i >= n_in else i)
        if 0 <= i < n_in:
            m[j, i] = 1
    return m


def _pad_grad(d, n, gy):
    return [d.op("pad_grad", [gy, n.inputs[0]], n.attrs)], {}


def _pad_grad_lower(g, ins, p, a, types, out):  # g along each padded axis times the copy matrix^T
    x = types[1]
    pairs = _pad_pairs(x, a)
    axes = [i for i, (b, e) in enumerate(pairs) if b or e]
    if not axes:
        return g.node("Identity", [ins[0]], out=g.out)
    if a.mode == "constant":  # the inside: a Slice
        starts = [pairs[i][0] for i in axes]
        ends = [-pairs[i][1] if pairs[i][1] else END for i in axes]
        return g.node("Slice", [ins[0], _ints(g, "starts", starts), _ints(g, "ends", ends),
                                _ints(g, "axes", [2 + i for i in axes])], out=g.out)
    return matmul_along_axes(g, ins[0], {2 + i: pad_matrix(x.dims[2 + i], *pairs[i], a.mode).T for i in axes}, x.rank)


def _pad_reference(xs, p, a):
    x = xs[0]
    pairs = [(0, 0), (0, 0), *_pad_pairs(TensorType("f32", x.shape), a)]
    if a.mode == "constant":
        return np.pad(x, pairs, constant_values=a.value)
    return np.pad(x, pairs, mode={"reflect": "reflect", "replicate": "edge"}[a.mode])


def _pad_grad_reference(xs, p, a):
    gy, x = xs
    pairs = _pad_pairs(TensorType("f32", x.shape), a)
    out = np_along_axes(gy.astype(np.float64), {2 + i: pad_matrix(x.shape[2 + i], b, e, a.mode).T
                                               for i, (b, e) in enumerate(pairs)})
    return out.astype(np.result_type(gy, x))


PAD_ATTRS = (Attr("pads", "pad", doc="per spatial axis: an int, one per axis, or (begin, end) pairs"),
             Attr("mode", "str", "constant", tuple(PAD_MODES)), Attr("value", "float", 0.0))
register(Op(
    name="pad", inputs=("x",), attrs=PAD_ATTRS, shape=_pad_shape, lower=_pad_lower, reference=_pad_reference,
    grad=_pad_grad, category="shape",
    doc='Pads the spatial axes of [N, C, spatial...]: mode "constant" (with value), "reflect" (the edge not '
        'repeated) or "replicate" (the edge repeated), as torch.nn.functional.pad; pad(x, ((1, 2), (0, 3))).',
    examples=(((("f32", (2, 3, 4, 5)),), dict(pads=1)), ((("f32", (2, 2, 5, 4)),), dict(pads=((1, 2), (0, 3)), value=0.5)),
              ((("f32", (2, 2, 5, 4)),), dict(pads=((1, 2), (3, 0)), mode="reflect")),
              ((("f32", (2, 2, 5)),), dict(pads=((2, 3),), mode="replicate"))),
))
register(Op(
    name="pad_grad", inputs=("g", "x"), attrs=PAD_ATTRS, shape=lambda types, a: types[1], lower=_pad_grad_lower,
    reference=_pad_grad_reference, category="gradient",
    doc="The gradient of pad: the inside of g (constant), plus what each padded position copied (reflect, replicate).",
    examples=(((("f32", (2, 3, 6, 7)), ("f32", (2, 3, 4, 5))), dict(pads=1)),
              ((("f32", (2, 2, 8, 7)), ("f32", (2, 2, 5, 4))), dict(pads=((1, 2), (3, 0)), mode="reflect")),
              ((("f32", (2, 2, 10)), ("f32", (2, 2, 5))), dict(pads=((2, 3),), mode="replicate"))),
))


# -- chunk and split: several slices at once (build makes one slice node per piece) ------------

def pieces(kind: str, size, arg) -> list[tuple[int, int]]:
    """[(start, end)] of chunk(x, n) or split(x, sizes) along an axis of `size`, as torch.chunk
    (pieces of ceil(size / n), the last one smaller, maybe fewer than n) and torch.split (an int:
    pieces of that size; a list: those sizes, which must add up to the axis)."""
    if isinstance(size, str):
        raise ShapeError(f"{kind} needs the size of the axis known, got {size}")
    if kind == "chunk":
        if isinstance(arg, bool) or not isinstance(arg, int) or arg <= 0:
            raise ShapeError(f"chunk needs a positive number of chunks, got {arg!r}")
        step = -(-size // arg)
        return [(s, min(s + step, size)) for s in range(0, size, step)]
    if isinstance(arg, int) and not isinstance(arg, bool):
        if arg <= 0:
            raise ShapeError(f"split needs a positive piece size, got {arg}")
        return [(s, min(s + arg, size)) for s in range(0, size, arg)]
    if not isinstance(arg, tuple) or not arg or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                        for v in arg):
        raise ShapeError(f"split takes a piece size or a list of positive sizes, got {arg!r}")
    if sum(arg) != size:
        raise ShapeError(f"split sizes {list(arg)} add up to {sum(arg)}, not to the axis size {size}")
    ends = np.cumsum(arg).tolist()
    return [(e - v, e) for v, e in zip(arg, ends)]


# -- causal masking: the scores a position may not see (later positions) ------------------------

def _future(n: int) -> np.ndarray:
    return np.triu(np.ones((n, n), bool), k=1)


def _causal_shape(types, a):
    x = types[0]
    if x.rank < 2 or isinstance(x.dims[-1], str) or x.dims[-1] != x.dims[-2]:
        raise ShapeError(f"causal_mask expects scores [..., L, L] with a known length L, got {x}")
    return x


register(Op(
    name="causal_mask", inputs=("x",), shape=_causal_shape,
    lower=lambda g, ins, p, a, types, out: g.node(
        "Where", [g.const("future", _future(types[0].dims[-1]), np.bool_), g.const("minus_inf", -np.inf), ins[0]],
        out=g.out),
    reference=lambda xs, p, a: np.where(_future(xs[0].shape[-1]), -np.inf, xs[0]).astype(xs[0].dtype),
    grad=lambda d, n, gy: ([d.op("causal_mask_grad", [gy])], {}), category="math",
    doc="Attention scores [..., L, L] with every entry above the diagonal (a later key) set to -inf, so that "
        "softmax gives it no weight: causal (decoder) self-attention.",
    # -inf in y * r defeats finite differences; tests/test_transformer.py checks the gradient against PyTorch
    examples=(((("f32", (2, 3, 4, 4)),), {}, {"finite_differences": False}),
              ((("f32", (2, 5, 5)),), {}, {"finite_differences": False})),
))
register(Op(
    name="causal_mask_grad", inputs=("g",), shape=_causal_shape,
    lower=lambda g, ins, p, a, types, out: g.node(
        "Where", [g.const("future", _future(types[0].dims[-1]), np.bool_), g.const("zero", 0.0), ins[0]], out=g.out),
    reference=lambda xs, p, a: np.where(_future(xs[0].shape[-1]), 0, xs[0]).astype(xs[0].dtype),
    category="gradient", doc="The gradient of causal_mask: g, zero above the diagonal.",
    examples=(((("f32", (2, 3, 4, 4)),), {}),),
))
