"""Sequence ops: embedding, and single-layer recurrent layers rnn / lstm / gru.

The recurrent layers take batch-first x [N, T, features] and keep PyTorch's
parameter names, shapes and gate order (LSTM i, f, g, o; GRU r, z, n), so
weights move to and from torch.nn.RNN / LSTM / GRU(batch_first=True) unchanged.
The lowering reorders the gates into ONNX's order inside the graph (Split /
Concat / Unsqueeze on initializers, which onnxruntime constant-folds) and runs
ONNX's fused RNN / LSTM / GRU in its seq-first layout (layout = 0). Each cell is
one `Cell` entry in CELLS: its equations, written once, drive the numpy reference,
the gradient's Scan bodies and the gradient's numpy reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ShapeError
from ..types import TensorType, onnx_elem_type
from .registry import Attr, Op, Param, TorchModule, register

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


# The weight gradient is a scatter-add of the output gradient's rows into a zero
# table at the looked-up ids (an id seen twice gets both rows).

def embedding_grad(d, n, gy):
    return [None], {"weight": d.op("embedding_grad_weight", [gy, n.inputs[0]],
                                   {"vocab": n.attrs.vocab, "dim": n.attrs.dim})}


def _embedding_grad_shape(types, a):
    gy, ids = types
    if gy.dims[:-1] != ids.dims or gy.dims[-1] != a.dim:
        raise ShapeError(f"embedding_grad_weight: gradient {gy} does not match the ids {ids} and dim = {a.dim}")
    return TensorType(gy.dtype, (a.vocab, a.dim))


def _embedding_grad_lower(g, ins, p, a, types, out):
    from onnx import TensorProto, helper

    gy, ids = ins
    zero = helper.make_tensor("zero", onnx_elem_type(types[0].dtype), [1], [0.0])
    table = g.node("ConstantOfShape", [g.const("table_shape", [a.vocab, a.dim], np.int64)], value=zero)
    if types[1].dtype != "i64":
        ids = g.node("Cast", [ids], to=TensorProto.INT64)
    idx = g.node("Unsqueeze", [ids, g.const("last_axis", [-1], np.int64)])  # [..., 1]: one index tuple per row
    return g.node("ScatterND", [table, idx, gy], out=g.out, reduction="add")


def _embedding_grad_reference(xs, p, a):
    gy, ids = xs
    w = np.zeros((a.vocab, a.dim), dtype=gy.dtype)
    for row, i in zip(gy.reshape(-1, a.dim), ids.reshape(-1)):
        w[i] += row
    return w


register(Op(
    name="embedding_grad_weight", inputs=("g", "ids"),
    attrs=(Attr("vocab", "int"), Attr("dim", "int")),
    shape=_embedding_grad_shape, lower=_embedding_grad_lower, reference=_embedding_grad_reference,
    category="gradient",
    doc="Gradient of embedding with respect to its table: a scatter-add of the gradient rows at the ids (ONNX ScatterND).",
    examples=(((("f32", (4, 3)), ("i64", (4,))), dict(vocab=5, dim=3)),
              ((("f32", (2, 7, 4)), ("i64", (2, 7))), dict(vocab=6, dim=4)),
              ((("f32", (2, 3, 4, 2)), ("i32", (2, 3, 4))), dict(vocab=5, dim=2))),
))


register(Op(
    name="embedding", inputs=("x",),
    attrs=(Attr("vocab", "int", doc="number of rows (token ids run 0 .. vocab-1)"),
           Attr("dim", "int", doc="size of each embedding vector")),
    shape=embedding_shape,
    params=lambda types, a: [Param("weight", (a.vocab, a.dim), "normal", fan_in=a.vocab, fan_out=a.dim)],
    lower=lambda g, ins, p, a, types, out: g.node("Gather", [p["weight"], ins[0]], out=g.out, axis=0),
    reference=lambda xs, p, a: p["weight"][xs[0]],  # the table's dtype: f32, or f64 in gradient checks
    macs=lambda types, out, a: 0,  # a lookup, no arithmetic
    grad=embedding_grad, grad_inputs=(),  # token ids get no gradient
    torch=TorchModule("Embedding", "embedding"),
    doc="Lookup table: integer ids [N, ...] -> f32[N, ..., dim] (ONNX Gather); weight [vocab, dim] as in PyTorch.",
    examples=(((("i64", (4,)),), dict(vocab=5, dim=3)),
              ((("i64", (2, 7)),), dict(vocab=10, dim=4)),
              ((("i32", (2, 3, 4)),), dict(vocab=6, dim=2))),
))


# ---- recurrent layers --------------------------------------------------------
#
# A cell is one record: its gate count, the fused ONNX op with its gate order, and its
# equations, written once against a kernel `k` (the numpy `NumpyKernel` or a Scan body's
# `BodyKernel`). `step` is one time step forward, from the input- and hidden-side
# pre-activations of the gates; `back` is one time step of backpropagation through time. The
# inference lowering uses the fused ONNX op; the numpy reference, the gradient's two Scans and
# its numpy reference all run the cell's own `step` and `back`.

@dataclass(frozen=True)
class Cell:
    name: str
    gates: int
    onnx_op: str
    onnx_order: tuple[int, ...]  # ONNX's gate order, as indices into PyTorch's
    states: int  # 1 (h) or 2 (h, c)
    step: Callable  # (k, ai, ah, states, a) -> (next states, {name: value} the cache reads)
    cache: Callable  # (k, states, saved) -> [(value, width in H)]: what back reads of a step
    back: Callable  # (k, d_states, h_prev, cache, w_hh, a) -> (d_states of the step before, [dA_x] or [dA_x, dA_h])
    doc: str
    onnx_attrs: Callable = lambda a: {}  # the fused op's attributes beyond the sizes
    attrs: tuple = ()  # attributes of this cell only
    variant: dict | None = None  # attributes the examples also try (rnn: relu)


def _dsig(k, s):  # sigmoid' from its value: s (1 - s)
    return k.mul(s, k.sub(k.one, s))


def _sq(k, v):
    return k.mul(v, v)


def _rnn_step(k, ai, ah, states, a):
    pre = k.add(ai, ah)
    hn = k.tanh(pre) if a.nonlinearity == "tanh" else k.relu(pre)
    return (hn,), {"h": hn}


def _rnn_back(k, d_states, hp, cache, w_hh, a):
    (dh,), (hn,) = d_states, cache
    dact = k.sub(k.one, _sq(k, hn)) if a.nonlinearity == "tanh" else k.positive(hn)
    da = k.mul(dh, dact)  # the activation's derivative, read off h_t
    return [k.matmul(da, w_hh)], [da]


def _lstm_step(k, ai, ah, states, a):
    h, c = states
    gates = k.split(k.add(ai, ah), 4)
    i, f, g, o = k.sigmoid(gates[0]), k.sigmoid(gates[1]), k.tanh(gates[2]), k.sigmoid(gates[3])
    cn = k.add(k.mul(f, c), k.mul(i, g))
    hn = k.mul(o, k.tanh(cn))
    return (hn, cn), {"c": c, "acts": (i, f, g, o), "cn": cn}


def _lstm_back(k, d_states, hp, cache, w_hh, a):
    (dh, dc), (c_prev, acts, cn) = d_states, cache
    i, f, g, o = k.split(acts, 4)
    tc = k.tanh(cn)
    do = k.mul(dh, tc)
    dcn = k.add(dc, k.mul(k.mul(dh, o), k.sub(k.one, _sq(k, tc))))  # c_t feeds h_t and c_(t+1)
    da = k.concat(k.mul(k.mul(dcn, g), _dsig(k, i)),  # i
                  k.mul(k.mul(dcn, c_prev), _dsig(k, f)),  # f
                  k.mul(k.mul(dcn, i), k.sub(k.one, _sq(k, g))),  # g
                  k.mul(do, _dsig(k, o)))  # o
    return [k.matmul(da, w_hh), k.mul(dcn, f)], [da]


def _gru_step(k, ai, ah, states, a):
    (h,) = states
    gi, gh = k.split(ai, 3), k.split(ah, 3)
    r = k.sigmoid(k.add(gi[0], gh[0]))
    z = k.sigmoid(k.add(gi[1], gh[1]))
    n = k.tanh(k.add(gi[2], k.mul(r, gh[2])))  # r applied after W_hn h + b_hn
    hn = k.add(n, k.mul(z, k.sub(h, n)))  # (1 - z) n + z h
    return (hn,), {"acts": (r, z, n), "ah_n": gh[2]}


def _gru_back(k, d_states, hp, cache, w_hh, a):
    (dh,), (acts, ah_n) = d_states, cache
    r, z, n = k.split(acts, 3)
    dan = k.mul(k.mul(dh, k.sub(k.one, z)), k.sub(k.one, _sq(k, n)))  # through n = tanh(.)
    dar = k.mul(k.mul(dan, ah_n), _dsig(k, r))
    daz = k.mul(k.mul(dh, k.sub(hp, n)), _dsig(k, z))
    da_x = k.concat(dar, daz, dan)
    da_h = k.concat(dar, daz, k.mul(dan, r))  # the hidden side of n is scaled by r
    return [k.add(k.mul(dh, z), k.matmul(da_h, w_hh))], [da_x, da_h]


CELLS = {c.name: c for c in (
    Cell("rnn", 1, "RNN", (0,), 1, _rnn_step, lambda k, st, s: [(s["h"], 1)], _rnn_back,
         "Elman RNN h_t = act(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh) (ONNX RNN)",
         onnx_attrs=lambda a: {"activations": [a.nonlinearity.capitalize()]},
         attrs=(Attr("nonlinearity", "str", "tanh", ("tanh", "relu"), doc="the cell's activation"),),
         variant={"nonlinearity": "relu"}),
    Cell("lstm", 4, "LSTM", (0, 3, 1, 2), 2, _lstm_step,  # PyTorch i, f, g, o -> ONNX i, o, f, c
         lambda k, st, s: [(s["c"], 1), (k.concat(*s["acts"]), 4), (s["cn"], 1)], _lstm_back,
         "LSTM, PyTorch gate order i, f, g, o (ONNX LSTM)"),
    Cell("gru", 3, "GRU", (1, 0, 2), 1, _gru_step,  # PyTorch r, z, n -> ONNX z, r, h
         lambda k, st, s: [(k.concat(*s["acts"]), 3), (s["ah_n"], 1)], _gru_back,
         "GRU, PyTorch gate order r, z, n, reset applied after W_hn h + b_hn (ONNX GRU, linear_before_reset = 1)",
         onnx_attrs=lambda a: {"linear_before_reset": 1}),  # PyTorch applies r after W_hn h + b_hn
)}


class NumpyKernel:
    """The cells' equations in numpy (the references)."""

    one = 1.0
    add, sub, mul, tanh = staticmethod(np.add), staticmethod(np.subtract), staticmethod(np.multiply), staticmethod(np.tanh)

    def __init__(self, dtype):
        self.dtype = dtype

    def sigmoid(self, v):
        return 1.0 / (1.0 + np.exp(-v))

    def relu(self, v):
        return np.maximum(v, 0.0)

    def positive(self, v):
        return (v > 0).astype(self.dtype)

    def split(self, v, n):
        return np.split(v, n, axis=1)

    def concat(self, *vs):
        return np.concatenate(vs, axis=1)

    def matmul(self, a, b):
        return a @ b


class BodyKernel:
    """The cells' equations as nodes of a Scan body (`Body`); constants go to the outer graph."""

    def __init__(self, body, g, one, npd, elem):
        self.b, self.g, self.one, self.npd, self.elem = body, g, one, npd, elem

    def add(self, x, y):
        return self.b("Add", x, y)

    def sub(self, x, y):
        return self.b("Sub", x, y)

    def mul(self, x, y):
        return self.b("Mul", x, y)

    def matmul(self, x, y):
        return self.b("MatMul", x, y)

    def sigmoid(self, v):
        return self.b("Sigmoid", v)

    def tanh(self, v):
        return self.b("Tanh", v)

    def relu(self, v):
        return self.b("Relu", v)

    def positive(self, v):
        return self.b("Cast", self.b("Greater", v, self.g.const("zero", 0.0, self.npd)), to=self.elem)

    def split(self, v, n):
        return self.b("Split", v, n_out=n, axis=1, num_outputs=n)

    def concat(self, *vs):
        return self.b("Concat", *vs, axis=1)


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


def rec_shape(cell: Cell):
    def shape(types, a):
        (x,) = types
        seq_check(x, a, cell.name)
        n, t = x.dims[:2]
        return x.with_dims((n, a.hidden) if a.last else (n, t, a.hidden))
    return shape


def rec_params(cell: Cell):
    G = cell.gates

    def params(types, a):
        f = seq_check(types[0], a, cell.name)
        h = a.hidden
        # PyTorch draws all four from U(-1/sqrt(hidden), 1/sqrt(hidden))
        return [Param(name, shape, "uniform_fan_in", fan_in=h, fan_out=h)
                for name, shape in (("weight_ih", (G * h, f)), ("weight_hh", (G * h, h)),
                                    ("bias_ih", (G * h,)), ("bias_hh", (G * h,)))]
    return params


def rec_macs(cell: Cell):
    G = cell.gates

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


def rec_lower(cell: Cell):
    order = cell.onnx_order

    def lower(g, ins, p, a, types, out):
        if g.target == "portable" and cell.onnx_attrs(a).get("activations", ["Tanh"]) != ["Tanh"]:
            # onnx's reference evaluator runs RNN with tanh only: the steps as a Scan
            return _scan_forward(g, cell, ins[0], p, a, types[0])
        axes0 = g.const("axes0", [0], np.int64)
        w = onnx_gates(g, [p["weight_ih"]], order, axes0)  # [1, G*H, F]
        r = onnx_gates(g, [p["weight_hh"]], order, axes0)  # [1, G*H, H]
        b = onnx_gates(g, [p["bias_ih"], p["bias_hh"]], order, axes0)  # [1, 2*G*H]
        xt = g.node("Transpose", [ins[0]], perm=[1, 0, 2])  # [T, N, F]
        y, yh = g.tmp("y"), g.tmp("y_h")
        g.node(cell.onnx_op, [xt, w, r, b], outputs=["", yh] if a.last else [y],
               hidden_size=a.hidden, direction="forward", layout=0, **cell.onnx_attrs(a))
        if a.last:
            return g.node("Squeeze", [yh, axes0], out=g.out)  # [1, N, H] -> [N, H]
        yt = g.node("Transpose", [y], perm=[2, 0, 1, 3])  # [T, 1, N, H] -> [N, T, 1, H]
        return g.node("Squeeze", [yt, g.const("axes2", [2], np.int64)], out=g.out)
    return lower


def _forward_steps(cell: Cell, k, x, w_ih, w_hh, b_ih, b_hh, a):
    """The cell over every step of x in numpy: per step (h_(t-1), the states after it, its cache)."""
    n, T, _ = x.shape
    states = tuple(np.zeros((n, a.hidden), x.dtype) for _ in range(cell.states))
    steps = []
    for t in range(T):
        ai, ah = x[:, t] @ w_ih.T + b_ih, states[0] @ w_hh.T + b_hh
        new, saved = cell.step(k, ai, ah, states, a)
        steps.append((states[0], new, [v for v, _ in cell.cache(k, states, saved)]))
        states = new
    return steps


def rec_reference(cell: Cell):
    """The cell's equations (PyTorch's, torch.nn.RNN / LSTM / GRU), one step at a time, in float64."""
    def reference(xs, p, a):
        x = xs[0].astype(np.float64)
        w = [p[k].astype(np.float64) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        ys = [new[0] for _, new, _ in _forward_steps(cell, NumpyKernel(np.float64), x, *w, a)]
        h = ys[-1] if ys else np.zeros((x.shape[0], a.hidden))
        y = h if a.last else np.stack(ys, axis=1)
        return y.astype(xs[0].dtype)
    return reference


# ---- recurrent gradients: backpropagation through time -------------------------
#
# The gradient of a recurrent layer splits in two. `{cell}_bptt` runs the time
# loop: it recomputes the forward pass (one ONNX Scan over the steps, keeping what
# the backward step needs: the cell's `cache`) and then walks the steps in reverse
# (a second Scan, running the cell's `back`, with the gradients of the hidden state,
# and of the cell state for LSTM, as loop-carried values). Its result packs, for
# every step t, the gradient of the input-side pre-activation  x_t W_ih^T + b_ih
# (dA_x), of the hidden-side one  h_(t-1) W_hh^T + b_hh  (dA_h; equal to dA_x except
# in the GRU's n gate, which r scales), and the previous hidden state h_(t-1):
#
#     pack [N, T, G*H + G*H + H] = [dA_x | dA_h | h_(t-1)]
#
# Everything else is parallel over the steps: dx = dA_x W_ih, dW_ih = sum dA_x^T x,
# dW_hh = sum dA_h^T h_(t-1), db = sum dA (the recurrent_grad_* ops). Scan takes
# its trip count from the data, so this works for a sequence length T known only
# at run time.

def _cell_attrs(cell: Cell, a) -> dict:
    return {x.name: a[x.name] for x in cell.attrs}


def rec_grad(cell: Cell):
    G = cell.gates

    def grad(d, n, gy):
        x = n.inputs[0]
        a = n.attrs
        w_ih, w_hh, b_ih, b_hh = (d.param(k) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        attrs = {"hidden": a.hidden, "last": a.last, **_cell_attrs(cell, a)}
        pack = d.op(f"{cell.name}_bptt", [gy, x, w_ih, w_hh, b_ih, b_hh], attrs)
        geo = {"hidden": a.hidden, "gates": G}
        gx = d.op("recurrent_grad_x", [pack, w_ih], geo) if d.wants(x) else None
        return [gx], {
            "weight_ih": d.op("recurrent_grad_weight_ih", [pack, x], geo),
            "weight_hh": d.op("recurrent_grad_weight_hh", [pack], geo),
            "bias_ih": d.op("recurrent_grad_bias", [pack], {**geo, "part": "ih"}),
            "bias_hh": d.op("recurrent_grad_bias", [pack], {**geo, "part": "hh"}),
        }
    return grad


def bptt_shape(cell: Cell):
    G = cell.gates
    opname = f"{cell.name}_bptt"

    def shape(types, a):
        gy, x, w_ih, w_hh, b_ih, b_hh = types
        f = seq_check(x, a, opname)
        n, t, _ = x.dims
        h = a.hidden
        want = [(n, h) if a.last else (n, t, h), (G * h, f), (G * h, h), (G * h,), (G * h,)]
        for what, ty, dims in zip(("gradient", "weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                                  (gy, w_ih, w_hh, b_ih, b_hh), want):
            if ty.dims != tuple(dims):
                raise ShapeError(f"{opname}: {what} is {ty}, expected [{', '.join(map(str, dims))}]")
        return x.with_dims((n, t, (2 * G + 1) * h))
    return shape


class Body:
    """A Scan body graph, built node by node. Names carry the node id and a tag, so
    they stay unique in the model. Declare the states' inputs before the scanned ones, and the
    new states' outputs before the scanned ones."""

    def __init__(self, g, tag, elem):
        from onnx import helper

        self.helper = helper
        self.g, self.tag, self.elem = g, tag, elem
        self.nodes, self.inputs, self.outputs = [], [], []
        self.k = 0

    def name(self, s):
        self.k += 1
        return f"{self.g.id}.{self.tag}.{s}{self.k}"

    def input(self, s, dims):
        nm = self.name(s)
        self.inputs.append(self.helper.make_tensor_value_info(nm, self.elem, list(dims)))
        return nm

    def __call__(self, op, *ins, n_out=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op, list(ins), outs, name=outs[0], **attrs))
        return outs[0] if n_out == 1 else outs

    def output(self, value, s, dims):
        nm = self.name(s)  # a fresh name: a body output must not be a body input
        self.nodes.append(self.helper.make_node("Identity", [value], [nm], name=nm))
        self.outputs.append(self.helper.make_tensor_value_info(nm, self.elem, list(dims)))

    def outer(self) -> list[str]:
        """The outer graph's tensors the body reads (the weights, constants), in first-read order."""
        from ..lower import outer_reads

        return outer_reads(self.nodes, [i.name for i in self.inputs])

    def graph(self, n_states: int, carried: list[str]):
        """The body with each of `carried` (outer tensors) as one more state, passed on unchanged:
        OpenVINO's Scan reads no outer tensor. The carried states come after the real ones."""
        h = self.helper
        ins, outs, nodes = list(self.inputs), list(self.outputs), list(self.nodes)
        for k, t in enumerate(carried):
            inner, passed = f"{self.g.id}.{self.tag}.carried{k}", f"{self.g.id}.{self.tag}.carried{k}.next"
            ins.insert(n_states + k, h.make_empty_tensor_value_info(inner))
            outs.insert(n_states + k, h.make_empty_tensor_value_info(passed))
            nodes.append(h.make_node("Identity", [inner], [passed], name=passed))
        rename = {t: f"{self.g.id}.{self.tag}.carried{k}" for k, t in enumerate(carried)}
        for n in nodes:
            n.input[:] = [rename.get(i, i) for i in n.input]
        return h.make_graph(nodes, f"{self.g.id}.{self.tag}", ins, outs)


def scan(g, body, states, seq, reverse, n_scan_out):
    """Run `body` over axis 1 (time) of the batch-first `seq` tensors [N, T, ...], last step first
    if `reverse`; returns (final states, scan outputs [N, T, ...] in time order). On the portable
    target the Scan runs forward over axis 0, all that onnx's reference evaluator implements (the
    sequences go in time-major, reversed if need be, and the outputs come back batch-first), and
    reads the weights as carried states."""
    if g.target != "portable":  # onnxruntime's Scan: over axis 1, both ways, reading the weights outside
        d = int(reverse)
        outs = [g.tmp("final") for _ in states] + [g.tmp("steps") for _ in range(n_scan_out)]
        g.node("Scan", list(states) + list(seq), outputs=outs, body=body.graph(len(states), []),
               num_scan_inputs=len(seq), scan_input_axes=[1] * len(seq), scan_input_directions=[d] * len(seq),
               scan_output_axes=[1] * n_scan_out, scan_output_directions=[d] * n_scan_out)
        return outs[:len(states)], outs[len(states):]

    def reverse_time(t):  # [N, T, ...]: the last step first
        return g.node("Slice", [t, g.const("rev_start", [-1], np.int64), g.const("rev_end", [-2 ** 63], np.int64),
                                g.const("rev_axis", [1], np.int64), g.const("rev_step", [-1], np.int64)])

    def time_major(t):
        return g.node("Transpose", [reverse_time(t) if reverse else t], perm=[1, 0, 2])

    def batch_first(t):
        t = g.node("Transpose", [t], perm=[1, 0, 2])
        return reverse_time(t) if reverse else t

    carried = body.outer()
    finals = [g.tmp("final") for _ in list(states) + carried]
    steps = [g.tmp("steps") for _ in range(n_scan_out)]
    g.node("Scan", list(states) + carried + [time_major(t) for t in seq], outputs=finals + steps,
           body=body.graph(len(states), carried), num_scan_inputs=len(seq))
    return finals[:len(states)], [batch_first(t) for t in steps]


STATE_NAMES = ("h", "c")


def _forward_body(g, cell: Cell, x, w_ih, w_hh, b_ih, b_hh, a, xt):
    """What each Scan over a layer's steps forward starts from: (the zero state [N, H], the
    input-side pre-activations of every step at once [N, T, G*H], the body with one step of the
    cell, its new states output, its kernel, its state inputs, the new states, what the step saved)."""
    from onnx import helper

    elem, npd = onnx_elem_type(xt.dtype), np.dtype(xt.numpy_dtype)
    N, H = xt.dims[0], a.hidden
    nh = g.node("Concat", [g.node("Shape", [x], start=0, end=1), g.const("h", [H], np.int64)], axis=0)
    zeros = g.node("ConstantOfShape", [nh], value=helper.make_tensor("zero", elem, [1], [0.0]))
    ai_all = g.node("Add", [g.node("MatMul", [x, g.node("Transpose", [w_ih])]), b_ih])
    w_hh_t = g.node("Transpose", [w_hh])
    f = Body(g, "fwd", elem)
    fk = BodyKernel(f, g, g.const("one", 1.0, npd), npd, elem)
    states = tuple(f.input(s, (N, H)) for s in STATE_NAMES[:cell.states])
    ai = f.input("ai", (N, cell.gates * H))
    new, saved = cell.step(fk, ai, f("Add", f("MatMul", states[0], w_hh_t), b_hh), states, a)
    for s, v in zip(STATE_NAMES, new):
        f.output(v, s, (N, H))
    return zeros, ai_all, f, fk, states, new, saved


def _scan_forward(g, cell: Cell, x, p, a, xt):
    """The layer's steps as one Scan over the cell's own equations (as the gradient's forward)."""
    zeros, ai_all, f, _, _, new, _ = _forward_body(g, cell, x, p["weight_ih"], p["weight_hh"], p["bias_ih"],
                                                   p["bias_hh"], a, xt)
    if not a.last:
        f.output(new[0], "y", (xt.dims[0], a.hidden))
    finals, steps = scan(g, f, [zeros] * cell.states, [ai_all], reverse=False, n_scan_out=0 if a.last else 1)
    return g.node("Identity", [finals[0] if a.last else steps[0]], out=g.out)


def bptt_lower(cell: Cell):
    G = cell.gates

    def lower(g, ins, p, a, types, out):
        gy, x, w_ih, w_hh, b_ih, b_hh = ins
        xt = types[1]
        elem, npd = onnx_elem_type(xt.dtype), np.dtype(xt.numpy_dtype)
        N, H = xt.dims[0], a.hidden

        # -- forward: recompute the states, keep what the backward step reads
        zeros, ai_all, f, fk, states, _, saved = _forward_body(g, cell, x, w_ih, w_hh, b_ih, b_hh, a, xt)
        cache = cell.cache(fk, states, saved)
        for k, (v, width) in enumerate([(states[0], 1)] + cache):
            f.output(v, f"cache{k}", (N, width * H))
        _, (h_prev, *caches) = scan(g, f, [zeros] * cell.states, [ai_all], reverse=False, n_scan_out=1 + len(cache))

        # -- backward: the steps in reverse, carrying dL/dh (and dL/dc)
        b = Body(g, "bwd", elem)
        bk = BodyKernel(b, g, g.const("one", 1.0, npd), npd, elem)
        d_states = [b.input(f"d{s}", (N, H)) for s in STATE_NAMES[:cell.states]]
        if not a.last:
            d_states[0] = b("Add", d_states[0], b.input("gy", (N, H)))  # the step's own output gradient
        hp = b.input("h_prev", (N, H))
        cs = [b.input(f"cache{k}", (N, width * H)) for k, (_, width) in enumerate(cache)]
        d_prev, das = cell.back(bk, d_states, hp, cs, w_hh, a)
        outs = [(v, H) for v in d_prev] + [(v, G * H) for v in das]
        for k, (v, width) in enumerate(outs):
            b.output(v, f"out{k}", (N, width))
        init = [gy if a.last else zeros] + [zeros] * (cell.states - 1)
        seq = ([] if a.last else [gy]) + [h_prev] + caches
        _, grads = scan(g, b, init, seq, reverse=True, n_scan_out=len(das))
        da_x, da_h = (grads[0], grads[0]) if len(grads) == 1 else grads
        return g.node("Concat", [da_x, da_h, h_prev], out=g.out, axis=2)
    return lower


def bptt_reference(cell: Cell):
    """Backpropagation through time in numpy: the cell's `step` forward, its `back` in reverse."""
    G = cell.gates

    def reference(xs, p, a):
        gy, x, w_ih, w_hh, b_ih, b_hh = xs
        dt = np.result_type(*xs)
        k = NumpyKernel(dt)
        x, w_ih, w_hh, b_ih, b_hh = (v.astype(dt) for v in (x, w_ih, w_hh, b_ih, b_hh))
        n, T, _ = x.shape
        H = a.hidden
        steps = _forward_steps(cell, k, x, w_ih, w_hh, b_ih, b_hh, a)
        out = np.zeros((n, T, (2 * G + 1) * H), dt)
        d_states = [gy.astype(dt) if a.last else np.zeros((n, H), dt)] + [np.zeros((n, H), dt)] * (cell.states - 1)
        for t in reversed(range(T)):
            hp, _, cache = steps[t]
            if not a.last:
                d_states[0] = d_states[0] + gy[:, t]
            d_states, das = cell.back(k, d_states, hp, cache, w_hh, a)
            dax, dah = (das[0], das[0]) if len(das) == 1 else das
            out[:, t] = np.concatenate([dax, dah, hp], axis=1)
        return out
    return reference


for _cell in CELLS.values():
    def _ex(n, t, f, h, last=False, _G=_cell.gates, **kw):
        gy = ("f32", (n, h) if last else (n, t, h))
        return ((gy, ("f32", (n, t, f)), ("f32", (_G * h, f)), ("f32", (_G * h, h)), ("f32", (_G * h,)),
                 ("f32", (_G * h,))), dict(hidden=h, last=last, **kw))

    _v = _cell.variant
    register(Op(
        name=f"{_cell.name}_bptt", inputs=("g", "x", "weight_ih", "weight_hh", "bias_ih", "bias_hh"),
        attrs=(Attr("hidden", "int"), Attr("last", "bool", False), *_cell.attrs),
        shape=bptt_shape(_cell), lower=bptt_lower(_cell), reference=bptt_reference(_cell), category="gradient",
        doc=(f"Backpropagation through time of {_cell.name}: per step [dA_x | dA_h | h_(t-1)], the gradients of the "
             "input- and hidden-side gate pre-activations and the previous state (two ONNX Scans: the forward "
             "recomputed, then the steps in reverse)."),
        examples=(_ex(2, 5, 3, 4), _ex(2, 4, 2, 3, last=True), _ex(1, 1, 2, 2),  # batch != G*hidden (symbolic N)
                  *((_ex(2, 5, 3, 3, **_v), _ex(3, 3, 4, 2, last=True, **_v)) if _v else ())),
    ))


def pack_parts(a):
    """Slices of the last axis of a bptt pack: dA_x, dA_h, h_(t-1)."""
    gh = a.gates * a.hidden
    return {"ih": (0, gh), "hh": (gh, 2 * gh), "h": (2 * gh, 2 * gh + a.hidden)}


def pack_slice(g, pack, a, part):
    lo, hi = pack_parts(a)[part]
    return g.node("Slice", [pack, g.const(f"{part}_lo", [lo], np.int64), g.const(f"{part}_hi", [hi], np.int64),
                            g.const(f"{part}_axis", [2], np.int64)])


def pack_check(pack, a, opname):
    if pack.rank != 3 or pack.dims[2] != (2 * a.gates + 1) * a.hidden:
        raise ShapeError(f"{opname}: {pack} is not a bptt pack of {a.gates} gates of {a.hidden}")


PACK_ATTRS = (Attr("hidden", "int"), Attr("gates", "int"))


def _grad_x_shape(types, a):
    pack, w_ih = types
    pack_check(pack, a, "recurrent_grad_x")
    return pack.with_dims((*pack.dims[:2], w_ih.dims[1]))


def _grad_wih_shape(types, a):
    pack, x = types
    pack_check(pack, a, "recurrent_grad_weight_ih")
    return pack.with_dims((a.gates * a.hidden, x.dims[2]))


def _grad_whh_shape(types, a):
    pack_check(types[0], a, "recurrent_grad_weight_hh")
    return types[0].with_dims((a.gates * a.hidden, a.hidden))


def _grad_bias_shape(types, a):
    pack_check(types[0], a, "recurrent_grad_bias")
    return types[0].with_dims((a.gates * a.hidden,))


def _outer_steps(g, left, right, width_l, width_r):
    """sum over n and t of left[n, t]^T right[n, t]: flatten (n, t) and one Gemm."""
    l2 = g.node("Reshape", [left, g.const("flat_l", [-1, width_l], np.int64)])
    r2 = g.node("Reshape", [right, g.const("flat_r", [-1, width_r], np.int64)])
    return g.node("Gemm", [l2, r2], out=g.out, transA=1)


def _pack(xs, a, part):
    lo, hi = pack_parts(a)[part]
    return xs[0][:, :, lo:hi]


register(Op(
    name="recurrent_grad_x", inputs=("pack", "weight_ih"), attrs=PACK_ATTRS, shape=_grad_x_shape,
    lower=lambda g, ins, p, a, types, out: g.node("MatMul", [pack_slice(g, ins[0], a, "ih"), ins[1]], out=g.out),
    reference=lambda xs, p, a: np.einsum("ntg,gf->ntf", _pack(xs, a, "ih"), xs[1]),
    category="gradient", doc="Gradient of a recurrent layer's input from its bptt pack: dA_x W_ih.",
    examples=(((("f32", (2, 5, 27)), ("f32", (12, 3))), dict(hidden=3, gates=4)),
              ((("f32", (3, 4, 12)), ("f32", (4, 5))), dict(hidden=4, gates=1))),
))

register(Op(
    name="recurrent_grad_weight_ih", inputs=("pack", "x"), attrs=PACK_ATTRS, shape=_grad_wih_shape,
    lower=lambda g, ins, p, a, types, out: _outer_steps(g, pack_slice(g, ins[0], a, "ih"), ins[1],
                                                        a.gates * a.hidden, types[1].dims[2]),
    reference=lambda xs, p, a: np.einsum("ntg,ntf->gf", _pack(xs, a, "ih"), xs[1]),
    category="gradient", doc="Gradient of weight_ih from a bptt pack: the sum over steps of dA_x^T x_t.",
    examples=(((("f32", (2, 5, 27)), ("f32", (2, 5, 2))), dict(hidden=3, gates=4)),
              ((("f32", (3, 4, 14)), ("f32", (3, 4, 5))), dict(hidden=2, gates=3))),
))

register(Op(
    name="recurrent_grad_weight_hh", inputs=("pack",), attrs=PACK_ATTRS, shape=_grad_whh_shape,
    lower=lambda g, ins, p, a, types, out: _outer_steps(g, pack_slice(g, ins[0], a, "hh"), pack_slice(g, ins[0], a, "h"),
                                                        a.gates * a.hidden, a.hidden),
    reference=lambda xs, p, a: np.einsum("ntg,nth->gh", _pack(xs, a, "hh"), _pack(xs, a, "h")),
    category="gradient", doc="Gradient of weight_hh from a bptt pack: the sum over steps of dA_h^T h_(t-1).",
    examples=(((("f32", (2, 5, 27)),), dict(hidden=3, gates=4)),
              ((("f32", (3, 4, 14)),), dict(hidden=2, gates=3))),
))

register(Op(
    name="recurrent_grad_bias", inputs=("pack",), attrs=PACK_ATTRS + (Attr("part", "str", "ih", ("ih", "hh")),),
    shape=_grad_bias_shape,
    lower=lambda g, ins, p, a, types, out: g.node("ReduceSum", [pack_slice(g, ins[0], a, a.part),
                                                                g.const("axes01", [0, 1], np.int64)],
                                                  out=g.out, keepdims=0),
    reference=lambda xs, p, a: _pack(xs, a, a.part).sum(axis=(0, 1)),
    category="gradient", doc="Gradient of bias_ih (part = ih) or bias_hh (part = hh) from a bptt pack: dA summed.",
    examples=(((("f32", (2, 5, 27)),), dict(hidden=3, gates=4, part="ih")),
              ((("f32", (3, 4, 14)),), dict(hidden=2, gates=3, part="hh"))),
))


for _cell in CELLS.values():
    _v = _cell.variant
    register(Op(
        name=_cell.name, inputs=("x",),
        attrs=(Attr("hidden", "int", doc="hidden state size"),
               Attr("last", "bool", False, doc="return only the last step [N, hidden] instead of [N, T, hidden]"),
               *_cell.attrs),
        shape=rec_shape(_cell), params=rec_params(_cell), lower=rec_lower(_cell),
        reference=rec_reference(_cell), macs=rec_macs(_cell), grad=rec_grad(_cell),
        window=lambda types, a: "global",  # each step sees every earlier step
        torch=TorchModule(_cell.name.upper(), _cell.name, stacked=True),
        doc=(f"{_cell.doc}: batch-first x [N, T, features] -> [N, T, hidden], or [N, hidden] "
             "with last = true; one layer, forward, zero initial state. Parameters weight_ih [G*hidden, features], "
             "weight_hh [G*hidden, hidden], bias_ih, bias_hh [G*hidden] as in PyTorch. "
             "macs count T steps, or 1 step when T is symbolic."),
        examples=(
            ((("f32", (2, 5, 3)),), dict(hidden=4)),
            ((("f32", (3, 4, 6)),), dict(hidden=4, last=True)),
            ((("f32", (1, 5, 2)),), dict(hidden=3)),
            *(((((("f32", (2, 5, 4)),), dict(hidden=3, **_v)), ((("f32", (2, 3, 4)),), dict(hidden=2, last=True, **_v)))
               if _v else ())),
        ),
    ))
