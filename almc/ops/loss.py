"""Losses and regularisers, as the course writes objectives:
`minimize mean(cross_entropy(logits, label, smoothing = 0.1)) + 5e-4 * l2(weights)`.

Each loss maps a batch to one value per example ([N]); `mean` or `sum` reduce
it. Every loss is written in its numerically stable form (log-sum-exp), so
logits of +-1e4 give finite losses and gradients. Labels get no gradient.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .registry import Attr, Op, register


def _labels(scores: TensorType, label: TensorType, name: str, classes: bool):
    if scores.rank not in (1, 2):
        raise ShapeError(f"{name} expects scores [N] or [N, classes], got {scores}")
    if label.rank != 1 or label.dims[0] != scores.dims[0]:
        raise ShapeError(f"{name} expects labels [N] matching the scores {scores}, got {label}")
    if classes and not label.dtype.startswith("i"):
        raise ShapeError(f"{name} expects integer class labels (i64), got {label}",
                         "declare the labels as input label: i64[N]")
    return TensorType(scores.dtype, (scores.dims[0],))


def _log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _onehot(label, classes, dtype):
    return np.eye(classes, dtype=dtype)[label]


# -- softmax cross-entropy with label smoothing ----------------------------------

def _ce_shape(types, a):
    logits, label = types
    if logits.rank != 2:
        raise ShapeError(f"cross_entropy expects logits [N, classes], got {logits}")
    if not 0.0 <= a.smoothing < 1.0:
        raise ShapeError(f"cross_entropy smoothing must be in [0, 1), got {a.smoothing}")
    return _labels(logits, label, "cross_entropy", True)


def _ce_target(label, classes, smoothing, dtype):
    return _onehot(label, classes, dtype) * (1 - smoothing) + smoothing / classes


def _ce_reference(xs, p, a):
    logits, label = xs
    q = _ce_target(label, logits.shape[1], a.smoothing, logits.dtype)
    return -(q * _log_softmax(logits)).sum(axis=1)


def _ce_lower(g, ins, p, a, types, out):
    logits, label = ins
    lp = g.node("LogSoftmax", [logits], axis=1)
    picked = g.node("GatherElements", [lp, g.node("Unsqueeze", [label, g.const("ax1", [1], np.int64)])], axis=1)
    nll = g.node("Neg", [g.node("Squeeze", [picked, g.const("ax1s", [1], np.int64)])],
                 out=g.out if a.smoothing == 0 else None)
    if a.smoothing == 0:
        return nll
    uniform = g.node("Neg", [g.node("ReduceMean", [lp, g.const("ax1m", [1], np.int64)], keepdims=0)])
    return g.node("Add", [g.node("Mul", [nll, g.const("keep", 1 - a.smoothing)]),
                          g.node("Mul", [uniform, g.const("eps", a.smoothing)])], out=g.out)


def _ce_grad_lower(g, ins, p, a, types, out):  # (softmax(logits) - q) * g
    gy, logits, label = ins
    classes = types[1].dims[1]
    q = g.node("OneHot", [label, g.const("depth", classes, np.int64),
                          g.const("values", [a.smoothing / classes, 1 - a.smoothing + a.smoothing / classes])],
               axis=1)
    diff = g.node("Sub", [g.node("Softmax", [logits], axis=1), q])
    return g.node("Mul", [diff, g.node("Unsqueeze", [gy, g.const("ax1", [1], np.int64)])], out=g.out)


def _ce_grad_reference(xs, p, a):
    gy, logits, label = xs
    q = _ce_target(label, logits.shape[1], a.smoothing, logits.dtype)
    return (np.exp(_log_softmax(logits)) - q) * gy[:, None]


register(Op(
    name="cross_entropy_grad", inputs=("g", "logits", "label"), attrs=(Attr("smoothing", "float", 0.0),),
    shape=lambda types, a: types[1], lower=_ce_grad_lower, reference=_ce_grad_reference, category="gradient",
    doc="Gradient of cross_entropy with respect to the logits: (softmax(logits) - target) * g.",
    examples=(((("f32", (4,)), ("f32", (4, 5)), ("i64", (4,))), dict(smoothing=0.1)),),
))

register(Op(
    name="cross_entropy", inputs=("logits", "label"), attrs=(Attr("smoothing", "float", 0.0),),
    shape=_ce_shape, lower=_ce_lower, reference=_ce_reference, category="loss", grad_inputs=(0,),
    grad=lambda d, n, gy: ([d.op("cross_entropy_grad", [gy, *n.inputs], {"smoothing": n.attrs.smoothing}), None], {}),
    doc="Softmax cross-entropy per example, from logits [N, classes] and integer labels [N]; with label "
        "smoothing s the target is (1 - s) one-hot + s / classes (as PyTorch's label_smoothing).",
    examples=(((("f32", (4, 5)), ("i64", (4,))), {}), ((("f32", (3, 6)), ("i64", (3,))), dict(smoothing=0.1))),
))


# -- binary logistic loss --------------------------------------------------------

def _flat_score(xs):
    s = xs[0].reshape(xs[0].shape[0])
    return s, xs[1].astype(s.dtype)


def _logistic_reference(xs, p, a):  # softplus(s) - y s, stably
    s, y = _flat_score(xs)
    return np.maximum(s, 0) - s * y + np.log1p(np.exp(-np.abs(s)))


def _binary_shape(name):
    def shape(types, a):
        s, y = types
        if s.rank == 2 and s.dims[1] != 1:
            raise ShapeError(f"{name} is a binary loss: it expects scores [N] or [N, 1], got {s}",
                             "for several classes use cross_entropy" if name != "hinge" else None)
        return _labels(s, y, name, False)
    return shape


def _score_and_label(g, ins):
    s = g.node("Reshape", [ins[0], g.const("flat", [-1], np.int64)])
    return s, g.node("Cast", [ins[1]], to=1)


def _logistic_lower(g, ins, p, a, types, out):
    s, y = _score_and_label(g, ins)
    soft = g.node("Softplus", [g.node("Neg", [g.node("Abs", [s])])])
    return g.node("Add", [g.node("Sub", [g.node("Relu", [s]), g.node("Mul", [s, y])]), soft], out=g.out)


def _logistic_grad_lower(g, ins, p, a, types, out):  # (sigmoid(s) - y) * g, shaped as the scores
    gy, score, label = ins
    s, y = _score_and_label(g, [score, label])
    d = g.node("Mul", [g.node("Sub", [g.node("Sigmoid", [s]), y]), gy])
    return g.node("Reshape", [d, g.node("Shape", [score])], out=g.out)


def _logistic_grad_reference(xs, p, a):
    gy, score, label = xs
    s, y = _flat_score([score, label])
    return ((1 / (1 + np.exp(-s)) - y) * gy).reshape(score.shape)


BINARY_EXAMPLES = (((("f32", (4, 1)), ("f32", (4,))), {}), ((("f32", (5,)), ("i64", (5,))), {}))
BINARY_GRAD_EXAMPLES = (((("f32", (4,)), ("f32", (4, 1)), ("f32", (4,))), {}),)

register(Op(
    name="logistic_grad", inputs=("g", "score", "label"), shape=lambda types, a: types[1],
    lower=_logistic_grad_lower, reference=_logistic_grad_reference, category="gradient",
    doc="Gradient of the logistic loss: (sigmoid(s) - y) * g.", examples=BINARY_GRAD_EXAMPLES,
))

register(Op(
    name="logistic", inputs=("score", "label"), shape=_binary_shape("logistic"), lower=_logistic_lower,
    reference=_logistic_reference, category="loss", grad_inputs=(0,),
    grad=lambda d, n, gy: ([d.op("logistic_grad", [gy, *n.inputs]), None], {}),
    doc="Binary logistic loss per example, log(1 + exp(s)) - y s, from scores [N] or [N, 1] and labels "
        "in {0, 1} (logistic regression).",
    examples=BINARY_EXAMPLES,
))


# -- hinge (linear SVM) ----------------------------------------------------------

def _hinge_shape(types, a):
    s, y = types
    if s.rank == 2 and s.dims[1] != 1:
        return _labels(s, y, "hinge", True)
    return _labels(s, y, "hinge", False)


def _multiclass(types):
    return types[0].rank == 2 and types[0].dims[1] != 1


def _hinge_parts(s, label, margin):
    """Margins max(0, margin - s_y + s_j) for j != y, and the mask of active ones."""
    onehot = _onehot(label, s.shape[1], s.dtype)
    sy = (s * onehot).sum(axis=1, keepdims=True)
    raw = margin - sy + s
    active = (raw > 0) * (1 - onehot)
    return np.maximum(raw, 0) * (1 - onehot), active, onehot


def _hinge_reference(xs, p, a):
    s, label = xs
    if s.ndim == 2 and s.shape[1] != 1:  # PyTorch's MultiMarginLoss
        m, _, _ = _hinge_parts(s, label, a.margin)
        return m.sum(axis=1) / s.shape[1]
    s, y = _flat_score(xs)
    return np.maximum(0, a.margin - (2 * y - 1) * s)


def _hinge_lower(g, ins, p, a, types, out):
    if _multiclass(types):
        s, label = ins
        classes = types[0].dims[1]
        onehot = g.node("OneHot", [label, g.const("depth", classes, np.int64), g.const("values", [0.0, 1.0])], axis=1)
        sy = g.node("ReduceSum", [g.node("Mul", [s, onehot]), g.const("ax1", [1], np.int64)], keepdims=1)
        raw = g.node("Add", [g.node("Sub", [g.const("margin", a.margin), sy]), s])
        m = g.node("Mul", [g.node("Relu", [raw]), g.node("Sub", [g.const("one", 1.0), onehot])])
        total = g.node("ReduceSum", [m, g.const("ax1r", [1], np.int64)], keepdims=0)
        return g.node("Div", [total, g.const("classes", float(classes))], out=g.out)
    s, y = _score_and_label(g, ins)
    t = g.node("Sub", [g.node("Mul", [y, g.const("two", 2.0)]), g.const("one", 1.0)])
    return g.node("Relu", [g.node("Sub", [g.const("margin", a.margin), g.node("Mul", [t, s])])], out=g.out)


def _hinge_grad_reference(xs, p, a):
    gy, s, label = xs
    if s.ndim == 2 and s.shape[1] != 1:
        _, active, onehot = _hinge_parts(s, label, a.margin)
        return (active - onehot * active.sum(axis=1, keepdims=True)) / s.shape[1] * gy[:, None]
    sf, y = _flat_score([s, label])
    t = 2 * y - 1
    return (-(t * (a.margin - t * sf > 0)) * gy).reshape(s.shape)


def _hinge_grad_lower(g, ins, p, a, types, out):
    gy, s, label = ins
    if _multiclass(types[1:]):
        classes = types[1].dims[1]
        onehot = g.node("OneHot", [label, g.const("depth", classes, np.int64), g.const("values", [0.0, 1.0])], axis=1)
        sy = g.node("ReduceSum", [g.node("Mul", [s, onehot]), g.const("ax1", [1], np.int64)], keepdims=1)
        raw = g.node("Add", [g.node("Sub", [g.const("margin", a.margin), sy]), s])
        active = g.node("Mul", [g.node("Cast", [g.node("Greater", [raw, g.const("zero", 0.0)])], to=1),
                                g.node("Sub", [g.const("one", 1.0), onehot])])
        count = g.node("ReduceSum", [active, g.const("ax1r", [1], np.int64)], keepdims=1)
        d = g.node("Div", [g.node("Sub", [active, g.node("Mul", [onehot, count])]), g.const("classes", float(classes))])
        return g.node("Mul", [d, g.node("Unsqueeze", [gy, g.const("ax1u", [1], np.int64)])], out=g.out)
    sf, y = _score_and_label(g, [s, label])
    t = g.node("Sub", [g.node("Mul", [y, g.const("two", 2.0)]), g.const("one", 1.0)])
    on = g.node("Cast", [g.node("Greater", [g.node("Sub", [g.const("margin", a.margin), g.node("Mul", [t, sf])]),
                                             g.const("zero", 0.0)])], to=1)
    d = g.node("Mul", [g.node("Neg", [g.node("Mul", [t, on])]), gy])
    return g.node("Reshape", [d, g.node("Shape", [s])], out=g.out)


register(Op(
    name="hinge_grad", inputs=("g", "scores", "label"), attrs=(Attr("margin", "float", 1.0),),
    shape=lambda types, a: types[1], lower=_hinge_grad_lower, reference=_hinge_grad_reference,
    category="gradient", doc="Gradient of the hinge loss with respect to the scores.",
    examples=(((("f32", (4,)), ("f32", (4, 5)), ("i64", (4,))), {}),) + BINARY_GRAD_EXAMPLES,
))

register(Op(
    name="hinge", inputs=("scores", "label"), attrs=(Attr("margin", "float", 1.0),),
    shape=_hinge_shape, lower=_hinge_lower, reference=_hinge_reference, category="loss", grad_inputs=(0,),
    grad=lambda d, n, gy: ([d.op("hinge_grad", [gy, *n.inputs], {"margin": n.attrs.margin}), None], {}),
    doc="Hinge loss of a linear SVM per example: with scores [N, classes] and integer labels, "
        "sum over j != y of max(0, margin - s_y + s_j) / classes (PyTorch's MultiMarginLoss); with "
        "scores [N] or [N, 1] and labels in {0, 1}, max(0, margin - t s) with t = 2y - 1.",
    examples=(((("f32", (4, 5)), ("i64", (4,))), {}), ((("f32", (4, 5)), ("i64", (4,))), dict(margin=2.0)))
    + BINARY_EXAMPLES,
))


# -- squared error (linear / ridge regression) ----------------------------------

def _se_shape(types, a):
    pred, target = types
    if pred.dims != target.dims:
        if pred.rank == 2 and pred.dims[1] == 1 and target.rank == 1:
            return TensorType(pred.dtype, (pred.dims[0],))
        raise ShapeError(f"squared_error expects a target shaped like the prediction {pred}, got {target}")
    if target.dtype != pred.dtype:
        raise ShapeError(f"squared_error expects a float target, got {target}")
    return TensorType(pred.dtype, (pred.dims[0],))


def _se_reference(xs, p, a):
    pred, target = xs
    diff = pred.reshape(pred.shape[0], -1) - target.reshape(target.shape[0], -1)
    return (diff * diff).sum(axis=1)


def _se_lower(g, ins, p, a, types, out):
    shape = g.const("rows", [0, -1], np.int64)
    diff = g.node("Sub", [g.node("Reshape", [ins[0], shape]), g.node("Reshape", [ins[1], shape])])
    return g.node("ReduceSumSquare", [diff, g.const("ax1", [1], np.int64)], keepdims=0, out=g.out)


def _se_grad_lower(g, ins, p, a, types, out):  # 2 (pred - target) g
    gy, pred, target = ins
    shape = g.const("rows", [0, -1], np.int64)
    diff = g.node("Sub", [g.node("Reshape", [pred, shape]), g.node("Reshape", [target, shape])])
    d = g.node("Mul", [diff, g.node("Mul", [g.node("Unsqueeze", [gy, g.const("ax1", [1], np.int64)]), g.const("two", 2.0)])])
    return g.node("Reshape", [d, g.node("Shape", [pred])], out=g.out)


def _se_grad_reference(xs, p, a):
    gy, pred, target = xs
    diff = pred.reshape(pred.shape[0], -1) - target.reshape(target.shape[0], -1)
    return (2 * diff * gy[:, None]).reshape(pred.shape)


register(Op(
    name="squared_error_grad", inputs=("g", "pred", "target"), shape=lambda types, a: types[1],
    lower=_se_grad_lower, reference=_se_grad_reference, category="gradient",
    doc="Gradient of squared_error with respect to the prediction: 2 (pred - target) g.",
    examples=(((("f32", (4,)), ("f32", (4, 3)), ("f32", (4, 3))), {}), ((("f32", (4,)), ("f32", (4, 1)), ("f32", (4,))), {})),
))

register(Op(
    name="squared_error", inputs=("pred", "target"), shape=_se_shape, lower=_se_lower, reference=_se_reference,
    category="loss", grad_inputs=(0,),
    grad=lambda d, n, gy: ([d.op("squared_error_grad", [gy, *n.inputs]), None], {}),
    doc="Squared error per example, the sum over outputs of (pred - target)^2 (linear and ridge regression).",
    examples=(((("f32", (4, 3)), ("f32", (4, 3))), {}), ((("f32", (4, 1)), ("f32", (4,))), {})),
))


# -- the perceptron criterion -------------------------------------------------------

def _perceptron_reference(xs, p, a):
    s, label = xs
    if s.ndim == 2 and s.shape[1] != 1:  # max_j s_j - s_y
        return s.max(axis=1) - s[np.arange(s.shape[0]), label]
    sf, y = _flat_score(xs)
    return np.maximum(0, -(2 * y - 1) * sf)


def _perceptron_lower(g, ins, p, a, types, out):
    if _multiclass(types):
        s, label = ins
        picked = g.node("GatherElements", [s, g.node("Unsqueeze", [label, g.const("ax1", [1], np.int64)])], axis=1)
        sy = g.node("Squeeze", [picked, g.const("ax1s", [1], np.int64)])
        return g.node("Sub", [g.node("ReduceMax", [s, g.const("ax1m", [1], np.int64)], keepdims=0), sy], out=g.out)
    s, y = _score_and_label(g, ins)
    t = g.node("Sub", [g.node("Mul", [y, g.const("two", 2.0)]), g.const("one", 1.0)])
    return g.node("Relu", [g.node("Neg", [g.node("Mul", [t, s])])], out=g.out)


def _perceptron_grad_reference(xs, p, a):
    gy, s, label = xs
    if s.ndim == 2 and s.shape[1] != 1:
        win = _onehot(s.argmax(axis=1), s.shape[1], s.dtype)
        return (win - _onehot(label, s.shape[1], s.dtype)) * gy[:, None]
    sf, y = _flat_score([s, label])
    t = 2 * y - 1
    return (-(t * (-t * sf > 0)) * gy).reshape(s.shape)


def _perceptron_grad_lower(g, ins, p, a, types, out):
    gy, s, label = ins
    if _multiclass(types[1:]):
        classes = types[1].dims[1]
        values = g.const("values", [0.0, 1.0])
        depth = g.const("depth", classes, np.int64)
        win = g.node("OneHot", [g.node("ArgMax", [s], axis=1, keepdims=0), depth, values], axis=1)
        d = g.node("Sub", [win, g.node("OneHot", [label, depth, values], axis=1)])
        return g.node("Mul", [d, g.node("Unsqueeze", [gy, g.const("ax1", [1], np.int64)])], out=g.out)
    sf, y = _score_and_label(g, [s, label])
    t = g.node("Sub", [g.node("Mul", [y, g.const("two", 2.0)]), g.const("one", 1.0)])
    wrong = g.node("Cast", [g.node("Greater", [g.node("Neg", [g.node("Mul", [t, sf])]), g.const("zero", 0.0)])], to=1)
    d = g.node("Mul", [g.node("Neg", [g.node("Mul", [t, wrong])]), gy])
    return g.node("Reshape", [d, g.node("Shape", [s])], out=g.out)


register(Op(
    name="perceptron_grad", inputs=("g", "scores", "label"), shape=lambda types, a: types[1],
    lower=_perceptron_grad_lower, reference=_perceptron_grad_reference, category="gradient",
    doc="Gradient of the perceptron criterion with respect to the scores.",
    examples=(((("f32", (4,)), ("f32", (4, 5)), ("i64", (4,))), {}),) + BINARY_GRAD_EXAMPLES,
))

register(Op(
    name="perceptron", inputs=("scores", "label"), shape=_hinge_shape, lower=_perceptron_lower,
    reference=_perceptron_reference, category="loss", grad_inputs=(0,),
    grad=lambda d, n, gy: ([d.op("perceptron_grad", [gy, *n.inputs]), None], {}),
    doc="The perceptron criterion per example: max(0, -t s) with t = 2y - 1 for scores [N] or [N, 1] and labels "
        "in {0, 1}; max_j s_j - s_y for scores [N, classes] and integer labels.",
    examples=(((("f32", (4, 5)), ("i64", (4,))), {}),) + BINARY_EXAMPLES,
))


# -- regularisers --------------------------------------------------------------

def _scalar(types, a):
    return TensorType("f32", ())


def _sum_of(reduce_op):
    """Lower l2 / l1: one reduction per tensor, added up."""
    def lower(g, ins, p, a, types, out):
        parts = [g.node(reduce_op, [x], keepdims=0) for x in ins]
        total = parts[0]
        for i, part in enumerate(parts[1:]):
            total = g.node("Add", [total, part], out=g.out if i == len(parts) - 2 else None)
        return total if len(parts) > 1 else g.node("Identity", [total], out=g.out)
    return lower


register(Op(
    name="l2", inputs=("xs",), variadic=True, shape=_scalar, lower=_sum_of("ReduceSumSquare"), category="loss",
    reference=lambda xs, p, a: np.asarray(sum((x.astype(np.float64) ** 2).sum() for x in xs)),
    grad=lambda d, n, gy: ([d.op("mul", [x, d.op("mul", [gy, d.const(2.0)])]) for x in n.inputs], {}),
    doc="Sum of squares of every element of its tensors: l2(weights) is ||w||^2 over the layer weights "
        "(biases and batch norm excluded); its gradient is 2 w.",
    examples=(((("f32", (3, 4)), ("f32", (5,))), {}),),
))

register(Op(
    name="l1", inputs=("xs",), variadic=True, shape=_scalar, lower=_sum_of("ReduceL1"), category="loss",
    reference=lambda xs, p, a: np.asarray(sum(np.abs(x.astype(np.float64)).sum() for x in xs)),
    grad=lambda d, n, gy: ([d.op("mul", [d.op("sign", [x]), gy]) for x in n.inputs], {}),
    doc="Sum of absolute values of every element of its tensors (lasso); its gradient is sign(w).",
    examples=(((("f32", (3, 4)), ("f32", (5,))), {}),),
))
