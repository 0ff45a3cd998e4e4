"""The training-step graph: forward in training form, objective, gradients and the optimiser update.

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
from .errors import AlmError, Diagnostic, ShapeError
from .graph import INPUT, Graph, Node, in_layers, node_params, param_specs, trainable_params
from .ops.registry import TrainingForm, lookup
from .optimizers import OPTIMIZERS, Update
from .types import TensorType

SCALAR = TensorType("f32", ())


@dataclass
class Mode:
    """What differs between the inference and the training graph: each node with a training form
    (its op's `training` rule), in graph order."""

    forms: dict[str, TrainingForm] = field(default_factory=dict)  # inference node -> its training form

    @property
    def random_inputs(self) -> dict[str, TrainingForm]:
        """Input name -> the form that reads it: inputs fed a fresh random draw with every batch."""
        return {f.random_input: f for f in self.forms.values() if f.random_input}


def to_training(graph: Graph) -> tuple[Graph, Mode]:
    """The training form of a graph: every node whose op has a training form is replaced by it."""
    g = graph.copy()
    mode = Mode()
    for node in graph.nodes():
        node = g.node(node.id)  # its inputs may already be rewired
        op = lookup(node.op)  # None for a graph input
        if op is None or op.training is None:
            continue
        try:
            form = op.training(g, node)
        except ShapeError as e:
            raise AlmError(Diagnostic(e.args[0], node.span), g.sources) from None
        if form is not None:
            g.redirect(node.id, form.node)
            mode.forms[node.id] = form
    if g.train is not None and g.train.loss in mode.forms:
        g.train = replace(g.train, loss=mode.forms[g.train.loss].node)
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
    randoms = list(mode.random_inputs)
    g.inputs = [i for i in g.inputs if i not in randoms] + randoms
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
    optimizer = OPTIMIZERS[spec.optimizer]
    for full in trainable:
        owner, local = full.rsplit(".", 1)
        d.cur = g.node(owner)
        w = d.param(local, owner=owner)
        gr = grads.get(full)
        outputs[f"grad.{full}"] = gr if gr is not None else d.op("mul", [w, d.const(0.0)])
        rate = lr if lr_scale_of(g, owner) == 1.0 else d.op("mul", [lr, d.const(lr_scale_of(g, owner))])
        if late[full]:  # the update may overwrite w in place: see _unordered_reads
            rate = d.op("after", [rate, *late[full]])

        def state(prefix, full=full, w=w):
            return _state(g, sig, f"{prefix}.{full}", w)

        def next_value(s, value):
            outputs[f"next.{s}"] = value
            sig.updates[s] = f"next.{s}"

        u = Update(d, spec.opt, step, state, next_value)
        outputs[f"next.{full}"] = optimizer.update(u, w, outputs[f"grad.{full}"], rate)
        sig.updates[full] = f"next.{full}"
    for nid in mode.forms:  # buffers a training step updates (batch norm's running statistics)
        node = g.node(nid)
        rule = lookup(node.op).state_update
        if rule is not None:
            d.cur = node
            for local, new in rule(d, node).items():
                outputs[f"next.{nid}.{local}"] = new
                sig.updates[f"{nid}.{local}"] = f"next.{nid}.{local}"
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
