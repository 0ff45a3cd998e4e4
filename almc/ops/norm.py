"""Normalisation and regularisation: batchnorm, dropout, lrn (inference forms), with their
gradients; batchnorm_train, batch_mean and batch_var for the training graph."""
from __future__ import annotations

from dataclasses import replace
from math import ceil, floor

import numpy as np

from ..errors import ShapeError
from ..graph import INPUT, Node
from .attrs import Attrs
from .common import count_elements
from .registry import Attr, Op, Param, TorchModule, TrainingForm, lookup, register


def channels_of(x, opname: str) -> int:
    """C of an [N, C, ...] input of rank 2 to 5; it sizes parameters, so it must be known."""
    if not 2 <= x.rank <= 5:
        raise ShapeError(f"{opname} expects an input [N, C] or [N, C, spatial...] of rank 2 to 5, got {x}")
    c = x.dims[1]
    if isinstance(c, str):
        raise ShapeError(f"{opname} needs a known number of channels, got {x}")
    return c


def bn_shape(types, a):
    (x,) = types
    channels_of(x, "batchnorm")
    if a.eps <= 0:
        raise ShapeError(f"batchnorm eps must be positive, got {a.eps:g}")
    if not 0 <= a.momentum <= 1:
        raise ShapeError(f"batchnorm momentum must be in [0, 1], got {a.momentum:g}")
    return x


def bn_params(types, a):
    c = channels_of(types[0], "batchnorm")
    return [Param("weight", (c,), "ones"), Param("bias", (c,), "zeros"),
            Param("running_mean", (c,), "zeros", trainable=False),
            Param("running_var", (c,), "ones", trainable=False)]


def bn_lower(g, ins, p, a, types, out):
    # ONNX's momentum weighs the old running value, PyTorch's the new batch: 1 - m.
    return g.node("BatchNormalization", [ins[0], p["weight"], p["bias"], p["running_mean"], p["running_var"]],
                  out=g.out, epsilon=a.eps, momentum=1.0 - a.momentum, training_mode=0)


def bn_reference(xs, p, a):
    (x,) = xs
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var, w, b = (p[k].astype(np.float64).reshape(shape) for k in ("running_mean", "running_var", "weight", "bias"))
    return ((x - mean) / np.sqrt(var + a.eps) * w + b).astype(x.dtype)


def channel_axes(rank: int) -> tuple[int, ...]:
    """Every axis but the channel axis 1: the axes batch statistics reduce."""
    return (0, *range(2, rank))


def per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """A [C] vector shaped to broadcast along axis 1 of an ndim-D tensor."""
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


# onnxruntime broadcasts a per-channel operand ([1, C, 1, 1]) one run of positions at a time, a
# call per example and channel: on small maps that dominates (Sub([32, 256, 2, 2], [1, 256, 1, 1])
# is many times slower than two operands of one shape, and so are 4x4 maps; figures:
# docs/performance.md). There the tensor is viewed as [N, C x positions] and the per-channel
# values repeated into one such row, which broadcasts over whole rows. On CUDA a broadcast costs
# nothing extra, and the four nodes more would (a step there is bound by launching kernels).
FLAT_MAX_POSITIONS = 16


def channel_op(g, op: str, x: str, v: str, t, out: str | None = None) -> str:
    """ONNX `op`(x, v): x of type t [N, C, ...], v per channel ([1, C, 1, ...] or [C, 1, ...])."""
    positions = t.dims[2:]
    if not g.cpu_kernels or t.rank < 3 or not all(isinstance(d, int) for d in positions) or not 1 < np.prod(positions) <= FLAT_MAX_POSITIONS:
        return g.node(op, [x, v], out=out)
    C, P = t.dims[1], int(np.prod(positions))
    column = g.node("Reshape", [v, g.const("chan_column", [C, 1], np.int64)])
    row = g.node("Reshape", [g.node("Expand", [column, g.const("chan_repeat", [C, P], np.int64)]),
                             g.const("chan_row", [1, C * P], np.int64)])
    y = g.node(op, [g.node("Reshape", [x, g.const("chan_rows", [-1, C * P], np.int64)]), row])
    return g.node("Reshape", [y, g.const("chan_shape", [-1, *t.dims[1:]], np.int64)], out=out)


def onnx_per_channel(g, v: str, rank: int, name: str) -> str:
    """ONNX: [C] -> [C, 1, ...] so that it broadcasts along axis 1 of a rank-`rank` tensor."""
    if rank <= 2:
        return v
    return g.node("Unsqueeze", [v, g.const(name, list(range(1, rank - 1)), np.int64)])


def bn_grad(d, n, gy):
    """Inference form: the running statistics are constants, so y is affine in x per channel."""
    x = n.inputs[0]
    eps = {"eps": n.attrs.eps}
    var = d.param("running_var")
    gx = d.op("batchnorm_grad_input", [gy, d.param("weight"), var], eps) if d.wants(x) else None
    gw = d.op("batchnorm_grad_weight", [gy, x, d.param("running_mean"), var], eps)
    gb = d.op("sum", [gy], {"axis": channel_axes(d.type(x).rank)})
    return [gx], {"weight": gw, "bias": gb}


def _bn_vec_check(types, opname, *vecs):
    c = channels_of(types[0], opname)
    for i in vecs:
        if tuple(types[i].dims) != (c,):
            raise ShapeError(f"{opname} expects [{c}] per-channel vectors, got {types[i]}")


def _bn_grad_input_shape(types, a):
    _bn_vec_check(types, "batchnorm_grad_input", 1, 2)
    return types[0]


def _bn_grad_input_lower(g, ins, p, a, types, out):
    gy, w, var = ins
    scale = g.node("Div", [w, g.node("Sqrt", [g.node("Add", [var, g.const("eps", a.eps)])])])
    return g.node("Mul", [gy, onnx_per_channel(g, scale, types[0].rank, "caxes")], out=g.out)


def _bn_grad_input_reference(xs, p, a):
    gy, w, var = xs
    return gy * per_channel(w / np.sqrt(var + a.eps), gy.ndim)


register(Op(
    name="batchnorm_grad_input", inputs=("g", "weight", "var"), attrs=(Attr("eps", "float", 1e-5),),
    shape=_bn_grad_input_shape, lower=_bn_grad_input_lower, reference=_bn_grad_input_reference,
    category="gradient",
    doc="Gradient of inference batchnorm with respect to x: g * weight / sqrt(var + eps) per channel.",
    examples=(
        ((("f32", (3, 5)), ("f32", (5,)), ("f32", (5,))), {}, {"positive": True}),
        ((("f32", (2, 3, 4, 4)), ("f32", (3,)), ("f32", (3,))), dict(eps=0.1), {"positive": True}),
    ),
))


def _bn_grad_weight_shape(types, a):
    _bn_vec_check(types[1:], "batchnorm_grad_weight", 1, 2)
    if tuple(types[0].dims) != tuple(types[1].dims):
        raise ShapeError(f"batchnorm_grad_weight: the gradient {types[0]} and x {types[1]} differ")
    return types[1].with_dims((types[1].dims[1],))


def _bn_grad_weight_lower(g, ins, p, a, types, out):
    gy, x, mean, var = ins
    r = types[1].rank
    std = g.node("Sqrt", [g.node("Add", [var, g.const("eps", a.eps)])])
    xhat = g.node("Div", [g.node("Sub", [x, onnx_per_channel(g, mean, r, "maxes")]),
                          onnx_per_channel(g, std, r, "saxes")])
    return g.node("ReduceSum", [g.node("Mul", [gy, xhat]), g.const("axes", list(channel_axes(r)), np.int64)],
                  keepdims=0, out=g.out)


def _bn_grad_weight_reference(xs, p, a):
    gy, x, mean, var = xs
    xhat = (x - per_channel(mean, x.ndim)) / per_channel(np.sqrt(var + a.eps), x.ndim)
    return (gy * xhat).sum(axis=channel_axes(x.ndim))


register(Op(
    name="batchnorm_grad_weight", inputs=("g", "x", "mean", "var"), attrs=(Attr("eps", "float", 1e-5),),
    shape=_bn_grad_weight_shape, lower=_bn_grad_weight_lower, reference=_bn_grad_weight_reference,
    category="gradient",
    doc="Gradient of batchnorm with respect to its weight: sum of g * (x - mean) / sqrt(var + eps) "
        "over every axis but 1 (running or batch statistics).",
    examples=(
        ((("f32", (3, 5)), ("f32", (3, 5)), ("f32", (5,)), ("f32", (5,))), {}, {"positive": True}),
        ((("f32", (2, 3, 4, 4)), ("f32", (2, 3, 4, 4)), ("f32", (3,)), ("f32", (3,))), dict(eps=0.1),
         {"positive": True}),
        ((("f32", (2, 3, 3, 2, 2)), ("f32", (2, 3, 3, 2, 2)), ("f32", (3,)), ("f32", (3,))), {},
         {"positive": True}),
    ),
))



def bn_training(g, node) -> TrainingForm:
    """Training normalises with the batch's statistics: batchnorm_train, reading this node's weights."""
    new = g.add(Node(f"{node.id}.train", "batchnorm_train", node.inputs, Attrs(eps=node.attrs.eps), node.span,
                     node.scope, node.layer, node.type, owner=node.id)).id
    return TrainingForm(new, "batchnorm: inference uses running_mean / running_var; training uses the batch's "
                             "statistics and updates the running ones")


def bn_state_update(d, node) -> dict[str, str]:
    """The running statistics after a training step, as PyTorch keeps them: (1 - m) old + m batch,
    the variance unbiased."""
    x, m = node.inputs[0], node.attrs.momentum
    stats = {"running_mean": d.op("batch_mean", [x]), "running_var": d.op("batch_var", [x], {"unbiased": True})}
    out = {}
    for local, batch in stats.items():
        old = d.param(local, owner=node.id)
        out[local] = d.op("add", [d.op("mul", [old, d.const(1 - m)]), d.op("mul", [batch, d.const(m)])])
    return out


def bn_fold(g, bn, w: dict, overwrite: bool) -> None:
    """Fold into the layer before it, at export: at inference batch norm is an affine map per channel,
    y = s (x - mean) + beta with s = gamma / sqrt(var + eps), so a producer whose output channel c is
    W[c] x + b[c] (its `out_channel_axis` is batch norm's axis 1) takes W' = s W, b' = s (b - mean) + beta.
    `overwrite`: the caller handed over fresh weights, so the kernel is scaled in place (a fresh
    process pays for first touching every page of a new array)."""
    prev = g.node(bn.inputs[0])
    op = lookup(prev.op)
    if op is None or op.out_channel_axis is None or op.out_channel_axis(bn.type.rank) != 1:
        return
    if len(g.consumers(prev.id)) != 1 or prev.id in g.outputs.values():
        return
    gamma, beta = w[f"{bn.id}.weight"], w[f"{bn.id}.bias"]
    mean, var = w[f"{bn.id}.running_mean"], w[f"{bn.id}.running_var"]
    scale = (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + bn.attrs.eps))
    kernel = w[f"{prev.id}.weight"]
    bias = w[f"{prev.id}.bias"].astype(np.float64) if prev.attrs.bias else np.zeros(len(scale))
    # the kernel is the bulk of the weights: one float32 product, not a float64 round trip
    scale32 = scale.astype(np.float32).reshape(-1, *([1] * (kernel.ndim - 1)))
    if overwrite:
        kernel *= scale32
    else:
        w[f"{prev.id}.weight"] = kernel * scale32
    w[f"{prev.id}.bias"] = ((bias - mean) * scale + beta).astype(np.float32)
    g.nx.nodes[prev.id]["node"] = replace(prev, attrs=Attrs({**prev.attrs, "bias": True}))
    g.redirect(bn.id, prev.id)
    g.nx.remove_node(bn.id)
    for p in bn_params([g.node(prev.id).type], bn.attrs):
        w.pop(f"{bn.id}.{p.name}", None)


register(Op(
    name="batchnorm", inputs=("x",),
    attrs=(Attr("eps", "float", 1e-5, doc="added to the variance"),
           Attr("momentum", "float", 0.1, doc="training only: weight of the new batch in the running stats (PyTorch)")),
    shape=bn_shape, params=bn_params, lower=bn_lower, reference=bn_reference, grad=bn_grad,
    training=bn_training, state_update=bn_state_update, fold=bn_fold, torch=TorchModule("BatchNormNd", "bn"),
    macs=lambda types, out, a: out.per_example(), transparent=True, category="normalization",
    doc="Batch normalisation over the channel axis 1 with the running statistics (ONNX BatchNormalization, "
        "inference); weight, bias, running_mean, running_var are [C].",
    examples=(
        ((("f32", (3, 5)),), {}),
        ((("f32", (2, 4, 6)),), dict(eps=1e-3)),
        ((("f32", (2, 3, 5, 5)),), dict(eps=0.1, momentum=0.01)),
        ((("f32", (2, 2, 3, 4, 4)),), {}),
    ),
))


# ---- training mode: batch statistics ------------------------------------------------

def _stat_shape(opname):
    def shape(types, a):
        (x,) = types
        return x.with_dims((channels_of(x, opname),))
    return shape


# Batch statistics are always written as _batch_moments writes them, in batch norm's forward,
# its gradients and the running-statistics update alike: with the constants shared (emit.py),
# onnxruntime's common-subexpression elimination then computes them once per step.

def _batch_mean_lower(g, ins, p, a, types, out):
    _, mean, _, _ = _batch_moments(g, ins[0], types[0])
    return g.node("Reshape", [mean, g.const("vector", [-1], np.int64)], out=g.out)


def _batch_var_lower(g, ins, p, a, types, out):
    axes, _, _, var = _batch_moments(g, ins[0], types[0])
    if not a.unbiased:
        return g.node("Reshape", [var, g.const("vector", [-1], np.int64)], out=g.out)
    biased = g.node("Reshape", [var, g.const("vector", [-1], np.int64)])
    count = count_elements(g, g.node("Shape", [ins[0]]), axes)  # n per channel: n / (n - 1)
    factor = g.node("Div", [count, g.node("Sub", [count, g.const("one", 1.0)])])
    return g.node("Mul", [biased, factor], out=g.out)


def _batch_var_reference(xs, p, a):
    (x,) = xs
    axes = channel_axes(x.ndim)
    n = np.prod([x.shape[i] for i in axes])
    mean = x.sum(axis=axes, keepdims=True) / n
    return ((x - mean) ** 2).sum(axis=axes) / (n - 1 if a.unbiased else n)


register(Op(
    name="batch_mean", inputs=("x",), shape=_stat_shape("batch_mean"), lower=_batch_mean_lower,
    reference=lambda xs, p, a: xs[0].mean(axis=channel_axes(xs[0].ndim)),
    category="gradient",
    doc="Per-channel mean over every axis but 1 ([N, C, ...] -> [C]): the batch statistic of batch norm.",
    examples=(((("f32", (4, 3)),), {}), ((("f32", (2, 3, 4, 5)),), {}), ((("f32", (2, 2, 3, 2, 2)),), {})),
))

register(Op(
    name="batch_var", inputs=("x",), attrs=(Attr("unbiased", "bool", False, doc="divide by n - 1 (PyTorch's running_var)"),),
    shape=_stat_shape("batch_var"), lower=_batch_var_lower, reference=_batch_var_reference,
    category="gradient",
    doc="Per-channel variance over every axis but 1 ([N, C, ...] -> [C]); biased (divides by n) unless unbiased.",
    examples=(((("f32", (4, 3)),), {}), ((("f32", (2, 3, 4, 5)),), {}),
              ((("f32", (4, 3)),), dict(unbiased=True)), ((("f32", (2, 3, 4, 5)),), dict(unbiased=True)),
              ((("f32", (2, 2, 3, 2, 2)),), dict(unbiased=True))),
))


def _batch_moments(g, x: str, t):
    """(axes, mean, x - mean, biased variance) of x (of type t), the statistics kept as [1, C, 1, ...]."""
    axes = g.const("axes", list(channel_axes(t.rank)), np.int64)
    mean = g.node("ReduceMean", [x, axes], keepdims=1)
    centred = channel_op(g, "Sub", x, mean, t)
    return axes, mean, centred, g.node("ReduceMean", [g.node("Mul", [centred, centred]), axes], keepdims=1)


def _batch_xhat_onnx(g, x: str, t, eps: float):
    """(axes, xhat = (x - mean) / std, std = sqrt(var + eps)) with the batch statistics, std kept
    as [1, C, 1, ...]. The forward pass and both gradients write it alike, so onnxruntime's
    common-subexpression elimination computes it once per step."""
    axes, _, centred, var = _batch_moments(g, x, t)
    std = g.node("Sqrt", [g.node("Add", [var, g.const("eps", eps)])])
    return axes, channel_op(g, "Div", centred, std, t), std


def _batch_xhat(x, eps):
    """numpy: (x - batch mean) / sqrt(batch var + eps), with the biased variance."""
    axes = channel_axes(x.ndim)
    centred = x - x.mean(axis=axes, keepdims=True)
    return centred / np.sqrt((centred ** 2).mean(axis=axes, keepdims=True) + eps)


def bn_train_shape(types, a):
    (x,) = types
    channels_of(x, "batchnorm_train")
    if a.eps <= 0:
        raise ShapeError(f"batchnorm eps must be positive, got {a.eps:g}")
    return x


def bn_train_lower(g, ins, p, a, types, out):
    t = types[0]
    _, xhat, _ = _batch_xhat_onnx(g, ins[0], t, a.eps)
    scaled = channel_op(g, "Mul", xhat, onnx_per_channel(g, p["weight"], t.rank, "waxes"), t)
    return channel_op(g, "Add", scaled, onnx_per_channel(g, p["bias"], t.rank, "baxes"), t, out=g.out)


def bn_train_reference(xs, p, a):
    (x,) = xs
    return _batch_xhat(x, a.eps) * per_channel(p["weight"], x.ndim) + per_channel(p["bias"], x.ndim)


def bn_train_grad(d, n, gy):
    """The full batch-norm backward: the batch mean and variance depend on x too."""
    x = n.inputs[0]
    eps = {"eps": n.attrs.eps}
    gx = d.op("batchnorm_train_grad", [gy, x, d.param("weight")], eps) if d.wants(x) else None
    gw = d.op("batchnorm_train_grad_weight", [gy, x], eps)
    gb = d.op("sum", [gy], {"axis": channel_axes(d.type(x).rank)})
    return [gx], {"weight": gw, "bias": gb}


register(Op(
    name="batchnorm_train", inputs=("x",), attrs=(Attr("eps", "float", 1e-5),),
    shape=bn_train_shape, lower=bn_train_lower, reference=bn_train_reference, grad=bn_train_grad,
    macs=lambda types, out, a: out.per_example(), transparent=True, category="gradient",
    doc="Training-mode batch norm: weight * (x - batch mean) / sqrt(batch var + eps) + bias, the biased "
        "variance over every axis but 1. It has no parameters of its own: it is made with owner = the "
        "inference batchnorm node and reads that node's weight and bias (tested in tests/test_batchnorm_train.py).",
    examples=(),
))


def _bn_train_grad_weight_lower(g, ins, p, a, types, out):
    gy, x = ins
    axes, xhat, _ = _batch_xhat_onnx(g, x, types[1], a.eps)
    return g.node("ReduceSum", [g.node("Mul", [gy, xhat]), axes], keepdims=0, out=g.out)


register(Op(
    name="batchnorm_train_grad_weight", inputs=("g", "x"), attrs=(Attr("eps", "float", 1e-5),),
    shape=lambda types, a: types[1].with_dims((channels_of(types[1], "batchnorm_train_grad_weight"),)),
    lower=_bn_train_grad_weight_lower,
    reference=lambda xs, p, a: (xs[0] * _batch_xhat(xs[1], a.eps)).sum(axis=channel_axes(xs[1].ndim)),
    category="gradient",
    doc="Gradient of training-mode batchnorm with respect to its weight: sum(g * xhat), xhat normalised "
        "with the batch statistics.",
    examples=(
        ((("f32", (4, 3)), ("f32", (4, 3))), {}),
        ((("f32", (2, 3, 4, 4)), ("f32", (2, 3, 4, 4))), dict(eps=0.1)),
        ((("f32", (2, 3, 3, 2, 2)), ("f32", (2, 3, 3, 2, 2))), {}),
    ),
))


def _bn_train_grad_shape(types, a):
    gy, x, w = types
    c = channels_of(x, "batchnorm_train_grad")
    if tuple(gy.dims) != tuple(x.dims) or tuple(w.dims) != (c,):
        raise ShapeError(f"batchnorm_train_grad: expects g and x alike and weight [{c}], got {gy}, {x}, {w}")
    return x


def _bn_train_grad_lower(g, ins, p, a, types, out):
    """weight / std * (g - mean(g) - xhat * mean(g * xhat)), means over every axis but 1."""
    gy, x, w = ins
    t = types[1]
    axes, xhat, std = _batch_xhat_onnx(g, x, t, a.eps)
    mg = g.node("ReduceMean", [gy, axes], keepdims=1)
    mgx = g.node("ReduceMean", [g.node("Mul", [gy, xhat]), axes], keepdims=1)
    inner = g.node("Sub", [channel_op(g, "Sub", gy, mg, t), channel_op(g, "Mul", xhat, mgx, t)])
    scale = g.node("Div", [onnx_per_channel(g, w, t.rank, "waxes"), std])
    return channel_op(g, "Mul", inner, scale, t, out=g.out)


def _bn_train_grad_reference(xs, p, a):
    """Back through y = w * xhat + b, xhat = (x - mu) / s, mu and s^2 = mean((x - mu)^2) per channel,
    term by term (the chain rule written out, not the closed form the lowering uses)."""
    gy, x, w = xs
    axes = channel_axes(x.ndim)
    n = np.prod([x.shape[i] for i in axes])
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + a.eps)
    gxhat = gy * per_channel(w, x.ndim)
    gvar = (gxhat * (x - mu)).sum(axis=axes, keepdims=True) * -0.5 * inv ** 3
    gmu = -(gxhat * inv).sum(axis=axes, keepdims=True) - gvar * 2 * (x - mu).sum(axis=axes, keepdims=True) / n
    return gxhat * inv + gvar * 2 * (x - mu) / n + gmu / n


register(Op(
    name="batchnorm_train_grad", inputs=("g", "x", "weight"), attrs=(Attr("eps", "float", 1e-5),),
    shape=_bn_train_grad_shape, lower=_bn_train_grad_lower, reference=_bn_train_grad_reference,
    category="gradient",
    doc="Gradient of training-mode batchnorm with respect to x, through the batch statistics: "
        "weight / std * (g - mean(g) - xhat * mean(g * xhat)).",
    examples=(
        ((("f32", (4, 3)), ("f32", (4, 3)), ("f32", (3,))), {}),
        ((("f32", (2, 3, 4, 4)), ("f32", (2, 3, 4, 4)), ("f32", (3,))), dict(eps=0.1)),
        ((("f32", (2, 3, 3, 2, 2)), ("f32", (2, 3, 3, 2, 2)), ("f32", (3,))), {}),
    ),
))



def dropout_shape(types, a):
    if not 0 <= a.p < 1:
        raise ShapeError(f"dropout probability p must be in [0, 1), got {a.p:g}",
                         "p is the fraction of units dropped during training")
    return types[0]


def dropout_training(g, node) -> TrainingForm | None:
    """Training multiplies by a mask input fed with each batch: zeros and 1 / (1 - p), drawn from a
    generator the caller seeds (almc train: from the seed and the step, so a resumed run draws the same)."""
    p = node.attrs.p
    if p == 0:
        return None
    x = g.node(node.inputs[0]).type
    if any(isinstance(d, str) for d in x.dims[1:]):
        raise ShapeError(f"training dropout needs known sizes after the batch axis, got {x}")
    mask = g.add(Node(f"dropout_mask.{node.id}", INPUT, type=x, span=node.span, layer=node.layer)).id
    new = g.add(Node(f"{node.id}.train", "mul", (node.inputs[0], mask), Attrs(), node.span, node.scope,
                     node.layer, x)).id
    return TrainingForm(new, f"dropout(p = {p:g}): inference passes x through; training multiplies by the mask "
                             f"input {mask}", mask, lambda rng, shape: (rng.random(shape) >= p) / (1 - p))


register(Op(
    name="dropout", inputs=("x",), attrs=(Attr("p", "float", 0.5, doc="drop probability during training"),),
    shape=dropout_shape,
    lower=lambda g, ins, p, a, types, out: ins[0],  # identity at inference: emit nothing, alias the input
    reference=lambda xs, p, a: xs[0],
    grad=lambda d, n, gy: ([gy], {}),  # inference form; training replaces it by a multiply by a mask
    training=dropout_training,
    transparent=True, category="normalization",
    doc="Randomly zeroes units during training; the identity at inference (lowers to nothing).",
    examples=(((("f32", (2, 3, 4, 4)),), {}), ((("f32", (3, 7)),), dict(p=0.2)), ((("f32", (2, 5)),), dict(p=0.0))),
))


def lrn_shape(types, a):
    (x,) = types
    channels_of(x, "lrn")
    if a.size <= 0 or a.size % 2 == 0:
        raise ShapeError(f"lrn size must be a positive odd number of channels, got {a.size}",
                         "onnxruntime implements only odd sizes (window centred on the channel)")
    if a.k <= 0:
        raise ShapeError(f"lrn k must be positive (it keeps the denominator away from zero), got {a.k:g}")
    return x


def lrn_lower(g, ins, p, a, types, out):
    attrs = dict(size=a.size, alpha=a.alpha, beta=a.beta, bias=a.k)
    if g.target == "portable":
        return _lrn_portable(g, ins[0], a, types[0].dims[1])
    if types[0].rank == 4:
        return g.node("LRN", [ins[0]], out=g.out, **attrs)
    # onnxruntime's LRN takes only 4-D input: fold the spatial axes into [N, C, -1, 1] and back.
    flat = g.node("Reshape", [ins[0], g.const("shape4", [0, 0, -1, 1], np.int64)])
    y = g.node("LRN", [flat], **attrs)
    return g.node("Reshape", [y, g.node("Shape", [ins[0]])], out=g.out)


def _lrn_portable(g, x, a, channels: int):
    """LRN in ops onnx's reference evaluator gets right (its LRN sums over the wrong axis): the
    window's mean of x^2 is an AveragePool over the channels of [N, 1, C, positions], padding
    counted, so that alpha * mean = alpha / size * sum."""
    lo, hi = floor((a.size - 1) / 2), ceil((a.size - 1) / 2)
    sq = g.node("Reshape", [g.node("Mul", [x, x]), g.const("shape_n1cp", [0, 1, channels, -1], np.int64)])
    mean = g.node("AveragePool", [sq], kernel_shape=[a.size, 1], pads=[lo, 0, hi, 0], count_include_pad=1)
    mean = g.node("Reshape", [mean, g.node("Shape", [x])])
    d = g.node("Add", [g.node("Mul", [mean, g.const("alpha", a.alpha)]), g.const("k", a.k)])
    return g.node("Div", [x, g.node("Pow", [d, g.const("beta", a.beta)])], out=g.out)


def lrn_reference(xs, p, a):
    (x,) = xs
    x64 = x.astype(np.float64)
    sq = x64 ** 2
    C = x.shape[1]
    lo, hi = floor((a.size - 1) / 2), ceil((a.size - 1) / 2)  # channels before / after c (ONNX)
    ssum = np.stack([sq[:, max(0, c - lo):min(C - 1, c + hi) + 1].sum(axis=1) for c in range(C)], axis=1)
    return (x64 / (a.k + a.alpha / a.size * ssum) ** a.beta).astype(x.dtype)


# LRN's gradient. With D_c = k + alpha / size * S_c, S_c the sum of x^2 over the window W(c)
# of channels around c, and y_c = x_c * D_c^-beta:
#   dL/dx_j = g_j D_j^-beta - 2 alpha beta / size * x_j * sum over {c : j in W(c)} of g_c x_c D_c^(-beta-1)
# and j lies in W(c) exactly when c lies in the mirrored window around j (the same window,
# since size is odd).

def lrn_grad(d, n, gy):
    a = n.attrs
    return [d.op("lrn_grad", [gy, n.inputs[0]], {"size": a.size, "alpha": a.alpha, "beta": a.beta, "k": a.k})], {}


def _lrn_grad_shape(types, a):
    gy, x = types
    if tuple(gy.dims) != tuple(x.dims):
        raise ShapeError(f"lrn_grad: the gradient {gy} and x {x} differ")
    return lrn_shape([x], a)


def _lrn_grad_lower(g, ins, p, a, types, out):
    """Channel-window sums as a Conv with a ones kernel over [N, 1, C, rest] (C known, the rest any)."""
    gy, x = ins
    c = types[1].dims[1]
    half = (a.size - 1) // 2
    fold = g.const("fold", [0, 1, c, -1], np.int64)
    ones = g.const("ones", np.ones((1, 1, a.size, 1)))
    shape = g.node("Shape", [x])

    def window_sum(t):
        s = g.node("Conv", [g.node("Reshape", [t, fold]), ones], kernel_shape=[a.size, 1], pads=[half, 0, half, 0])
        return g.node("Reshape", [s, shape])

    denom = g.node("Add", [g.const("k", a.k),
                           g.node("Mul", [g.const("alpha_n", a.alpha / a.size), window_sum(g.node("Mul", [x, x]))])])
    dpow = g.node("Pow", [denom, g.const("neg_beta", -a.beta)])  # D^-beta
    inner = g.node("Div", [g.node("Mul", [gy, g.node("Mul", [x, dpow])]), denom])  # g x D^(-beta-1)
    back = g.node("Mul", [g.const("coef", 2 * a.alpha * a.beta / a.size), g.node("Mul", [x, window_sum(inner)])])
    return g.node("Sub", [g.node("Mul", [gy, dpow]), back], out=g.out)


def _lrn_grad_reference(xs, p, a):
    """Channel by channel: the direct term, plus each channel c's share back to the channels of W(c)."""
    gy, x = xs
    C = x.shape[1]
    lo, hi = floor((a.size - 1) / 2), ceil((a.size - 1) / 2)
    win = [range(max(0, c - lo), min(C - 1, c + hi) + 1) for c in range(C)]
    denom = [a.k + a.alpha / a.size * sum(x[:, j] ** 2 for j in win[c]) for c in range(C)]
    gx = np.stack([gy[:, c] * denom[c] ** -a.beta for c in range(C)], axis=1)
    for c in range(C):
        share = gy[:, c] * x[:, c] * -a.beta * denom[c] ** (-a.beta - 1) * a.alpha / a.size
        for j in win[c]:
            gx[:, j] += share * 2 * x[:, j]
    return gx


register(Op(
    name="lrn_grad", inputs=("g", "x"),
    attrs=(Attr("size", "int", 5), Attr("alpha", "float", 1e-4), Attr("beta", "float", 0.75), Attr("k", "float", 2.0)),
    shape=_lrn_grad_shape,
    lower=_lrn_grad_lower, reference=_lrn_grad_reference, category="gradient",
    doc="Gradient of lrn with respect to x: g D^-beta - 2 alpha beta / size * x * "
        "(window sum of g x D^(-beta-1)), D = k + alpha / size * (window sum of x^2).",
    examples=(
        ((("f32", (2, 7, 4, 4)), ("f32", (2, 7, 4, 4))), {}),
        ((("f32", (2, 4, 3, 3)), ("f32", (2, 4, 3, 3))), dict(size=3, alpha=0.5, beta=0.6, k=1.0)),
        ((("f32", (2, 6, 5)), ("f32", (2, 6, 5))), dict(size=7, alpha=1.0, beta=1.0)),
        ((("f32", (1, 5, 2, 3, 3)), ("f32", (1, 5, 2, 3, 3))), dict(size=1, alpha=0.3)),
        ((("f32", (3, 6)), ("f32", (3, 6))), dict(alpha=0.2)),
    ),
))


register(Op(
    name="lrn", inputs=("x",),
    attrs=(Attr("size", "int", 5, doc="channels in the window (odd)"),
           Attr("alpha", "float", 1e-4), Attr("beta", "float", 0.75),
           Attr("k", "float", 2.0, doc="additive constant (ONNX bias; AlexNet uses 2)")),
    shape=lrn_shape, lower=lrn_lower, reference=lrn_reference, grad=lrn_grad,
    macs=lambda types, out, a: out.per_example() * a.size, category="normalization",
    doc="Local response normalisation across channels (AlexNet; ONNX LRN): "
        "y = x / (k + alpha / size * sum of x^2 over the size channels around c)^beta.",
    examples=(
        ((("f32", (2, 7, 4, 4)),), {}),
        ((("f32", (2, 4, 3, 3)),), dict(size=3, alpha=0.5, beta=0.6, k=1.0)),
        ((("f32", (2, 6, 5)),), dict(size=7, alpha=1.0, beta=1.0)),
        ((("f32", (1, 5, 2, 3, 3)),), dict(size=1, alpha=0.3)),
        ((("f32", (3, 6)),), dict(alpha=0.2)),
    ),
))
