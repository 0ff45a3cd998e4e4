"""Sequence ops: embedding, and single-layer recurrent layers rnn / lstm / gru.

The recurrent layers take batch-first x [N, T, features] and keep PyTorch's
parameter names, shapes and gate order (LSTM i, f, g, o; GRU r, z, n), so
weights move to and from torch.nn.RNN / LSTM / GRU(batch_first=True) unchanged.
The lowering reorders the gates into ONNX's order inside the graph (Split /
Concat / Unsqueeze on initializers, which onnxruntime constant-folds) and runs
ONNX's fused RNN / LSTM / GRU in its seq-first layout (layout = 0).
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .registry import Attr, Op, Param, register

INTS = ("i64", "i32")
FLOATS = ("f32", "f64", "f16")


# ---- embedding ---------------------------------------------------------------

def embedding_shape(types, a):
    (x,) = types
    if x.dtype not in INTS:
        raise ShapeError(f"embedding expects integer token ids (i64 or i32), got {x}",
                         "embedding looks rows up by index; a float input wants dense(...) instead")
    if x.rank < 1:
        raise ShapeError(f"embedding expects at least [N], got the scalar {x}")
    if a.vocab <= 0 or a.dim <= 0:
        raise ShapeError(f"embedding needs a positive vocab and dim, got vocab = {a.vocab}, dim = {a.dim}")
    return TensorType("f32", (*x.dims, a.dim))  # the table is f32 whatever the id type


register(Op(
    name="embedding", inputs=("x",),
    attrs=(Attr("vocab", "int", doc="number of rows (token ids run 0 .. vocab-1)"),
           Attr("dim", "int", doc="size of each embedding vector")),
    shape=embedding_shape,
    params=lambda types, a: [Param("weight", (a.vocab, a.dim), "normal", fan_in=a.vocab, fan_out=a.dim)],
    lower=lambda g, ins, p, a, types, out: g.node("Gather", [p["weight"], ins[0]], out=g.out, axis=0),
    reference=lambda xs, p, a: p["weight"][xs[0]].astype(np.float32),
    macs=lambda types, out, a: 0,  # a lookup, no arithmetic
    doc="Lookup table: integer ids [N, ...] -> f32[N, ..., dim] (ONNX Gather); weight [vocab, dim] as in PyTorch.",
    examples=(((("i64", (4,)),), dict(vocab=5, dim=3)),
              ((("i64", (2, 7)),), dict(vocab=10, dim=4)),
              ((("i32", (2, 3, 4)),), dict(vocab=6, dim=2))),
))


# ---- recurrent layers --------------------------------------------------------

# gates per cell, ONNX op, and ONNX's gate order as indices into PyTorch's order
CELLS = {
    "rnn": (1, "RNN", (0,)),
    "lstm": (4, "LSTM", (0, 3, 1, 2)),  # PyTorch i, f, g, o -> ONNX i, o, f, c
    "gru": (3, "GRU", (1, 0, 2)),  # PyTorch r, z, n -> ONNX z, r, h
}


def seq_check(x, a, opname):
    """Checks x [N, T, features] and the attributes; returns the feature count."""
    if x.rank != 3:
        hint = f"{opname} reads a batch-first sequence [N, T, features]"
        if x.rank == 4:
            c, h, w = x.dims[1:]
            hw = h * w if isinstance(h, int) and isinstance(w, int) else f"{h} * {w}"
            hint = (f"to read each image row as a time step, reshape(x, ({h}, {w})) first" if c == 1 else
                    f"make the image a sequence first, e.g. reshape(x, ({c}, {hw})) reads channels as steps")
        elif x.rank == 2:
            hint = f"a single step per example is reshape(x, (1, {x.dims[1]}))"
        raise ShapeError(f"{opname} expects a 3-D input [N, T, features], got {x}", hint)
    if x.dtype not in FLOATS:
        raise ShapeError(f"{opname} expects a float sequence, got {x}",
                         "token ids go through embedding(x, vocab, dim) first" if x.dtype in INTS else None)
    if isinstance(x.dims[2], str):
        raise ShapeError(f"{opname} needs a known number of input features, got {x}")
    if a.hidden <= 0:
        raise ShapeError(f"{opname} needs a positive hidden size, got {a.hidden}")
    return x.dims[2]


def rec_shape(opname):
    def shape(types, a):
        (x,) = types
        seq_check(x, a, opname)
        n, t = x.dims[:2]
        return x.with_dims((n, a.hidden) if a.last else (n, t, a.hidden))
    return shape


def rec_params(opname):
    G = CELLS[opname][0]

    def params(types, a):
        f = seq_check(types[0], a, opname)
        h = a.hidden
        # PyTorch draws all four from U(-1/sqrt(hidden), 1/sqrt(hidden))
        return [Param(name, shape, "uniform_fan_in", fan_in=h, fan_out=h)
                for name, shape in (("weight_ih", (G * h, f)), ("weight_hh", (G * h, h)),
                                    ("bias_ih", (G * h,)), ("bias_hh", (G * h,)))]
    return params


def rec_macs(opname):
    G = CELLS[opname][0]

    def macs(types, out, a):
        x = types[0]
        steps = x.dims[1] if isinstance(x.dims[1], int) else 1
        return steps * G * a.hidden * (x.dims[2] + a.hidden)
    return macs


def onnx_gates(g, tensors, order, axes0):
    """Concatenate each tensor's gate blocks in ONNX order, then add the direction axis."""
    parts = []
    for t in tensors:
        if order == tuple(range(len(order))):
            parts.append(t)
            continue
        pieces = [g.tmp("gate") for _ in order]
        g.node("Split", [t], outputs=pieces, axis=0, num_outputs=len(order))
        parts += [pieces[i] for i in order]
    joined = parts[0] if len(parts) == 1 else g.node("Concat", parts, axis=0)
    return g.node("Unsqueeze", [joined, axes0])


def rec_lower(opname):
    _, onnx_op, order = CELLS[opname]

    def lower(g, ins, p, a, types, out):
        axes0 = g.const("axes0", [0], np.int64)
        w = onnx_gates(g, [p["weight_ih"]], order, axes0)  # [1, G*H, F]
        r = onnx_gates(g, [p["weight_hh"]], order, axes0)  # [1, G*H, H]
        b = onnx_gates(g, [p["bias_ih"], p["bias_hh"]], order, axes0)  # [1, 2*G*H]
        xt = g.node("Transpose", [ins[0]], perm=[1, 0, 2])  # [T, N, F]
        extra = {}
        if opname == "gru":
            extra["linear_before_reset"] = 1  # PyTorch applies r after W_hn h + b_hn
        if opname == "rnn":
            extra["activations"] = [a.nonlinearity.capitalize()]
        y, yh = g.tmp("y"), g.tmp("y_h")
        g.node(onnx_op, [xt, w, r, b], outputs=["", yh] if a.last else [y],
               hidden_size=a.hidden, direction="forward", layout=0, **extra)
        if a.last:
            return g.node("Squeeze", [yh, axes0], out=g.out)  # [1, N, H] -> [N, H]
        yt = g.node("Transpose", [y], perm=[2, 0, 1, 3])  # [T, 1, N, H] -> [N, T, 1, H]
        return g.node("Squeeze", [yt, g.const("axes2", [2], np.int64)], out=g.out)
    return lower


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def rec_reference(opname):
    """PyTorch's equations (torch.nn.RNN / LSTM / GRU docs), one step at a time, in float64."""
    G = CELLS[opname][0]

    def reference(xs, p, a):
        x = xs[0].astype(np.float64)
        w_ih, w_hh, b_ih, b_hh = (p[k].astype(np.float64) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        n, T, _ = x.shape
        h = np.zeros((n, a.hidden))
        c = np.zeros((n, a.hidden))
        ys = []
        for t in range(T):
            gi = np.split(x[:, t] @ w_ih.T + b_ih, G, axis=1)  # input part of each gate
            gh = np.split(h @ w_hh.T + b_hh, G, axis=1)  # hidden part of each gate
            if opname == "rnn":
                s = gi[0] + gh[0]
                h = np.tanh(s) if a.nonlinearity == "tanh" else np.maximum(s, 0.0)
            elif opname == "lstm":
                i, f, gg, o = (sigmoid(gi[0] + gh[0]), sigmoid(gi[1] + gh[1]),
                               np.tanh(gi[2] + gh[2]), sigmoid(gi[3] + gh[3]))
                c = f * c + i * gg
                h = o * np.tanh(c)
            else:
                r, z = sigmoid(gi[0] + gh[0]), sigmoid(gi[1] + gh[1])
                nn = np.tanh(gi[2] + r * gh[2])
                h = (1.0 - z) * nn + z * h
            ys.append(h)
        y = h if a.last else np.stack(ys, axis=1)
        return y.astype(xs[0].dtype)
    return reference


REC_DOCS = {
    "rnn": "Elman RNN h_t = act(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh) (ONNX RNN)",
    "lstm": "LSTM, PyTorch gate order i, f, g, o (ONNX LSTM)",
    "gru": "GRU, PyTorch gate order r, z, n, reset applied after W_hn h + b_hn (ONNX GRU, linear_before_reset = 1)",
}

for _name in CELLS:
    _extra, _relu_examples = (), ()
    if _name == "rnn":
        _extra = (Attr("nonlinearity", "str", "tanh", ("tanh", "relu"), doc="the cell's activation"),)
        _relu_examples = (((("f32", (2, 6, 4)),), dict(hidden=3, nonlinearity="relu")),
                          ((("f32", (2, 3, 4)),), dict(hidden=2, last=True, nonlinearity="relu")))
    register(Op(
        name=_name, inputs=("x",),
        attrs=(Attr("hidden", "int", doc="hidden state size"),
               Attr("last", "bool", False, doc="return only the last step [N, hidden] instead of [N, T, hidden]"),
               *_extra),
        shape=rec_shape(_name), params=rec_params(_name), lower=rec_lower(_name),
        reference=rec_reference(_name), macs=rec_macs(_name),
        window=lambda types, a: "global",  # each step sees every earlier step
        doc=(f"{REC_DOCS[_name]}: batch-first x [N, T, features] -> [N, T, hidden], or [N, hidden] "
             "with last = true; one layer, forward, zero initial state. Parameters weight_ih [G*hidden, features], "
             "weight_hh [G*hidden, hidden], bias_ih, bias_hh [G*hidden] as in PyTorch. "
             "macs count T steps, or 1 step when T is symbolic."),
        examples=(
            ((("f32", (2, 5, 3)),), dict(hidden=4)),
            ((("f32", (3, 4, 6)),), dict(hidden=5, last=True)),
            ((("f32", (1, 7, 2)),), dict(hidden=3)),
            *_relu_examples,
        ),
    ))
