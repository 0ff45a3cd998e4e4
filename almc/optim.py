"""The training step as one graph: forward, objective, gradients and the optimiser update.

`training_step(graph)` differentiates the objective of the graph's training
section and appends, for every trainable parameter, the optimiser's update as
ordinary graph nodes. The resulting graph lowers to one standard ONNX model:

    inputs:  the model's inputs, the labels, `epoch` (training progress in epochs
             after this step, fractional), `step` (0, 1, ...), every parameter and
             buffer under its inference name, the optimiser state
             (`momentum.P` for SGD with momentum, `adam_m.P` and `adam_v.P` for Adam)
    outputs: `loss`, `lr`, `output.O` (the model's first output on this batch),
             `grad.P` per trainable parameter (unless `gradients=False`: `almc
             train` leaves them out, so onnxruntime need not keep every gradient
             to the end of the step), `next.P` and `next.S` for every updated
             parameter and state tensor

docs/training.md documents the interface; `almc train` drives it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import networkx as nx

from .autodiff import PARAMETER, Diff, differentiate
from .errors import AlmError, Diagnostic
from .graph import INPUT, Graph, Node, in_layers, node_params, param_specs, trainable_params
from .ops.registry import Attrs
from .types import TensorType

SCALAR = TensorType("f32", ())


@dataclass
class Mode:
    """What differs between the inference and the training graph, node by node."""

    dropout: dict[str, tuple[str, float]] = field(default_factory=dict)  # mask input -> (dropout node, p)
    batchnorm: dict[str, str] = field(default_factory=dict)  # inference node -> training node


def to_training(graph: Graph) -> tuple[Graph, Mode]:
    """The training form of a graph: dropout multiplies by a mask fed with each batch (zeros and
    1 / (1 - p), drawn from the seed, so a resumed run draws the same masks), and batch norm
    normalises with the batch's statistics."""
    g = graph.copy()
    mode = Mode()
    for node in graph.nodes():
        node = g.node(node.id)  # its inputs may already be rewired
        if node.op == "dropout" and node.attrs.p > 0:
            x = g.node(node.inputs[0]).type
            if any(isinstance(d, str) for d in x.dims[1:]):
                raise AlmError(Diagnostic(f"training dropout needs known sizes after the batch axis, got {x}",
                                          node.span), g.sources)
            mask = g.add(Node(f"dropout_mask.{node.id}", INPUT, type=x, span=node.span, layer=node.layer)).id
            new = g.add(Node(f"{node.id}.train", "mul", (node.inputs[0], mask), Attrs(), node.span, node.scope,
                             node.layer, x)).id
            g.redirect(node.id, new)
            mode.dropout[mask] = (node.id, node.attrs.p)
        elif node.op == "batchnorm":
            new = g.add(Node(f"{node.id}.train", "batchnorm_train", node.inputs, Attrs(eps=node.attrs.eps),
                             node.span, node.scope, node.layer, node.type, owner=node.id)).id
            g.redirect(node.id, new)
            mode.batchnorm[node.id] = new
    if g.train is not None and g.train.loss in mode.batchnorm:
        g.train = replace(g.train, loss=mode.batchnorm[g.train.loss])
    return g, mode


@dataclass
class StepSignature:
    params: list[str] = field(default_factory=list)  # every parameter and buffer, as inputs
    trainable: list[str] = field(default_factory=list)
    state: dict[str, tuple[int, ...]] = field(default_factory=dict)  # optimiser state input -> shape
    updates: dict[str, str] = field(default_factory=dict)  # input name -> output name of its next value
    mode: Mode = field(default_factory=Mode)


def lr_scale_of(graph: Graph, owner: str) -> float:
    layer = graph.node(owner).layer
    scales = graph.train.lr_scale
    best = max((n for n in scales if in_layers(layer, [n])), key=len, default=None)
    return scales[best] if best is not None else 1.0


def training_step(graph: Graph, gradients: bool = True) -> tuple[Graph, StepSignature]:
    spec = graph.train
    if spec is None or not spec.loss:
        raise AlmError(Diagnostic(f"model {graph.name} has no training section", graph.span,
                                  f"add one: train {graph.name} {{ input label: i64[N] minimize ... }}"), graph.sources)
    trainable = trainable_params(graph)
    if not trainable:
        raise AlmError(Diagnostic("every parameter is frozen: there is nothing to train", graph.span), graph.sources)
    graph, mode = to_training(graph)
    g, grads = differentiate(graph, spec.loss, trainable)
    sig = StepSignature(params=[full for _, full, _ in param_specs(g)], trainable=trainable, mode=mode)
    g.inputs = [i for i in g.inputs if i not in mode.dropout] + list(mode.dropout)
    for lab in spec.labels:
        g.inputs.append(lab)
    first = next(iter(graph.outputs))  # the model's first output, for the running training accuracy
    # before the update adds readers of its own
    late = _unordered_reads(g, grads, trainable, [spec.loss, graph.outputs[first], *grads.values()])
    d = Diff(g, prefix="update/")
    d.cur = g.node(spec.loss)
    epoch = g.add(Node("epoch", INPUT, type=SCALAR, span=g.node(spec.loss).span, layer="epoch")).id
    step = g.add(Node("step", INPUT, type=SCALAR, span=g.node(spec.loss).span, layer="step")).id
    lr = d.op("lr_schedule", [epoch], {"kind": spec.schedule, "lr": spec.opt["lr"], "epochs": float(spec.epochs),
                                       **{k: v for k, v in spec.sched.items()}}, name="lr")
    outputs = {"loss": spec.loss, "lr": lr}
    outputs[f"output.{first}"] = graph.outputs[first]
    for full in trainable:
        owner, local = full.rsplit(".", 1)
        d.cur = g.node(owner)
        w = d.param(local, owner=owner)
        gr = grads.get(full)
        outputs[f"grad.{full}"] = gr if gr is not None else d.op("mul", [w, d.const(0.0)])
        rate = lr if lr_scale_of(g, owner) == 1.0 else d.op("mul", [lr, d.const(lr_scale_of(g, owner))])
        if late[full]:  # the update may overwrite w in place: see _unordered_reads
            rate = d.op("after", [rate, *late[full]])
        new_w = _update(d, g, sig, spec, full, w, outputs[f"grad.{full}"], rate, step, outputs)
        outputs[f"next.{full}"] = new_w
        sig.updates[full] = f"next.{full}"
    for bn, train_node in mode.batchnorm.items():  # running statistics, as PyTorch keeps them
        d.cur = g.node(bn)
        x, m = g.node(bn).inputs[0], g.node(bn).attrs.momentum
        stats = {"running_mean": d.op("batch_mean", [x]), "running_var": d.op("batch_var", [x], {"unbiased": True})}
        for local, batch in stats.items():
            old = d.param(local, owner=bn)
            new = d.op("add", [d.op("mul", [old, d.const(1 - m)]), d.op("mul", [batch, d.const(m)])])
            outputs[f"next.{bn}.{local}"] = new
            sig.updates[f"{bn}.{local}"] = f"next.{bn}.{local}"
    g.outputs = {k: v for k, v in outputs.items() if gradients or not k.startswith("grad.")}
    return g, sig


def _unordered_reads(g: Graph, grads: dict[str, str], trainable: list[str], computed: list[str]) -> dict[str, list[str]]:
    """Parameter -> the nodes that read it (of those the step computes: `computed` and their
    ancestors) but that its update would not wait for.

    `almc train` binds every `next.P` to P's own buffer, so that a step holds one copy of the
    parameters and optimiser state, not two; the update must then come after every read of P. It
    waits for P's gradient, and so for the gradient's ancestors (the forward reads it needs), and
    its own read is elementwise (each element is read before it is written). A conv's input
    gradient also reads the weight, and so does a regulariser's term of the loss; neither is an
    ancestor of the gradient. The update's learning rate goes through `after` those. Optimiser
    state and running statistics are read by their update alone (tests/test_inplace.py checks it
    all on the ONNX graph)."""
    order = list(nx.topological_sort(g.nx))
    index = {n: i for i, n in enumerate(order)}
    ancestors: dict[str, int] = {}  # a bit per node, by topological index
    for n in order:
        bits = 0
        for p in g.nx.predecessors(n):
            bits |= ancestors[p] | 1 << index[p]
        ancestors[n] = bits
    live = 0
    for n in computed:
        live |= ancestors[n] | 1 << index[n]
    readers: dict[str, list[str]] = {}
    for n in order:
        if not live >> index[n] & 1:  # an inference node that the training form replaced
            continue
        node = g.node(n)
        if node.op == PARAMETER:
            readers.setdefault(f"{node.owner}.{node.attrs.name}", []).extend(g.nx.successors(n))
        else:
            for _, full, _ in node_params(g, node):
                readers.setdefault(full, []).append(n)
    late = {}
    for full in trainable:
        gr = grads.get(full)
        waited = ancestors[gr] | 1 << index[gr] if gr is not None else 0
        late[full] = [r for r in readers.get(full, []) if not waited >> index[r] & 1]
    return late


def _state(g: Graph, sig: StepSignature, name: str, like: str) -> str:
    t = g.node(like).type
    g.add(Node(name, INPUT, type=t, span=g.node(like).span, layer=name))
    sig.state[name] = tuple(t.dims)
    return name


def _update(d: Diff, g: Graph, sig: StepSignature, spec, full: str, w: str, gr: str, lr: str, step: str,
            outputs: dict) -> str:
    o = spec.opt
    mul, add, sub = (lambda a, b: d.op("mul", [a, b])), (lambda a, b: d.op("add", [a, b])), (lambda a, b: d.op("sub", [a, b]))
    c = d.const
    if spec.optimizer == "sgd":
        if o["weight_decay"]:
            gr = add(gr, mul(w, c(o["weight_decay"])))
        direction = gr
        if o["momentum"]:
            v = _state(g, sig, f"momentum.{full}", w)
            v_new = add(mul(v, c(o["momentum"])), gr)  # PyTorch's buffer: v = momentum v + g
            outputs[f"next.{v}"] = v_new
            sig.updates[v] = f"next.{v}"
            direction = add(gr, mul(v_new, c(o["momentum"]))) if o["nesterov"] else v_new
        return sub(w, mul(direction, lr))
    # adam / adamw
    if spec.optimizer == "adam" and o["weight_decay"]:
        gr = add(gr, mul(w, c(o["weight_decay"])))  # Adam's L2 penalty goes through the moments
    m = _state(g, sig, f"adam_m.{full}", w)
    v = _state(g, sig, f"adam_v.{full}", w)
    b1, b2 = o["beta1"], o["beta2"]
    m_new = add(mul(m, c(b1)), mul(gr, c(1 - b1)))
    v_new = add(mul(v, c(b2)), mul(mul(gr, gr), c(1 - b2)))
    outputs[f"next.{m}"], outputs[f"next.{v}"] = m_new, v_new
    sig.updates[m], sig.updates[v] = f"next.{m}", f"next.{v}"
    m_hat = d.op("div", [m_new, d.op("bias_correction", [step], {"beta": b1})])
    v_hat = d.op("div", [v_new, d.op("bias_correction", [step], {"beta": b2})])
    direction = d.op("div", [m_hat, add(d.op("sqrt", [v_hat]), c(o["eps"]))])
    if spec.optimizer == "adamw" and o["weight_decay"]:
        direction = add(direction, mul(w, c(o["weight_decay"])))  # decoupled weight decay
    return sub(w, mul(direction, lr))


