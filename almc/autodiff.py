"""Reverse-mode differentiation as a graph pass: Graph + loss -> Graph with gradient nodes.

Walk the nodes that lie between a trainable parameter and the loss in reverse
topological order; each op's `grad` rule turns the gradient of its output into
graph nodes computing the gradients of its inputs and parameters; gradients
that meet (fan-out, a parameter read twice) are summed. Nodes that do not lead
to a trainable parameter are not differentiated, and frozen parameters get no
gradient nodes at all. The new nodes carry the span of the forward node they
come from, so errors and ONNX doc strings still lead back to the .alm line.
"""
from __future__ import annotations

from .errors import AlmError, Diagnostic, ShapeError
from .graph import INPUT, Graph, Node, node_params
from .ops.reduce import PARAMETER
from .ops.registry import Attrs, lookup, resolve_attrs
from .shapes import infer_node


class Diff:
    """What a gradient rule may do: add nodes, read types and parameters."""

    def __init__(self, graph: Graph, prefix: str = "grad/"):
        self.g = graph
        self.prefix = prefix
        self.cur: Node | None = None
        self._used = set(graph.nx.nodes)
        self.req: set[str] = set(graph.nx.nodes)

    def fresh(self, base: str) -> str:
        k, nid = 1, base
        while nid in self._used:
            k += 1
            nid = f"{base}_{k}"
        self._used.add(nid)
        return nid

    def op(self, opname: str, inputs, attrs=None, owner: str | None = None, name: str | None = None) -> str:
        op = lookup(opname)
        a = attrs if isinstance(attrs, Attrs) else resolve_attrs(op, dict(attrs or {}))
        types = [self.g.node(i).type for i in inputs]
        try:
            t = infer_node(opname, types, a)
        except ShapeError as e:  # a bug in a gradient rule, not in the user's model
            raise AssertionError(f"gradient rule of {self.cur.op} built an ill-typed {opname}: {e.message}") from None
        cur = self.cur
        nid = self.fresh(name or f"{self.prefix}{cur.id}.{opname}")
        layer = cur.layer if self.prefix == "grad/" and cur.layer.startswith("grad/") else f"{self.prefix}{cur.layer}"
        self.g.add(Node(nid, opname, tuple(inputs), a, cur.span, cur.scope, layer, t, owner))
        return nid

    def type(self, nid: str):
        return self.g.node(nid).type

    def const(self, value: float) -> str:
        return self.op("constant", [], {"value": float(value)})

    def param(self, name: str, owner: str | None = None) -> str:
        """A node whose value is parameter `name` of the current node (or of `owner`)."""
        owner = owner or self.cur.owner or self.cur.id
        shape = next(p.shape for local, _, p in node_params(self.g, self.g.node(owner)) if local == name)
        return self.op(PARAMETER, [], {"name": name, "shape": shape}, owner=owner)

    def wants(self, nid: str) -> bool:
        """Does the gradient of this input matter? (Rules may skip the work when not.)"""
        return nid in self.req

    def sum_to(self, g: str, like: str) -> str:
        """Reduce a broadcast gradient back to the shape of `like` (numpy broadcasting in reverse)."""
        if self.type(g).dims == self.type(like).dims:
            return g
        return self.op("sum_to", [g], {"shape": tuple(self.type(like).dims)})


def needs_grad(graph: Graph, trainable: set[str], inputs=()) -> set[str]:
    """Nodes whose value depends on a trainable parameter (or on one of `inputs`)."""
    out: set[str] = set(inputs)
    for node in graph.nodes():
        own = node.op != INPUT and any(full in trainable for _, full, _ in _read_params(graph, node))
        if own or any(i in out for i in node.inputs):
            out.add(node.id)
    return out


def _read_params(graph: Graph, node: Node):
    """The parameters a node reads: a `parameter` node reads exactly one."""
    ps = node_params(graph, node)
    if node.op == PARAMETER:
        return [x for x in ps if x[0] == node.attrs.name]
    return ps  # its own, or its owner's (batchnorm_train normalises with the inference node's weight)


def differentiate(graph: Graph, loss: str, trainable: list[str], inputs=()) -> tuple[Graph, dict[str, str]]:
    """Add the nodes computing d loss / d p for every trainable parameter p (and every input
    node id in `inputs`, for gradient checks). Returns the new graph and {name: gradient node id}.
    `loss` must be a scalar."""
    g = graph.copy()
    if g.node(loss).type.rank != 0:
        raise AlmError(Diagnostic(f"the objective must be a scalar, got {g.node(loss).type}", g.node(loss).span,
                                  "reduce it, e.g. mean(...)"), g.sources)
    want = set(trainable)
    req = needs_grad(g, want, inputs)
    d = Diff(g)
    d.req = req
    order = [n for n in g.nodes() if n.id in req]
    d.cur = g.node(loss)
    cot: dict[str, list[str]] = {loss: [d.const(1.0)]}
    pgrads: dict[str, list[str]] = {}
    for node in reversed(order):
        if node.id not in cot or node.op == INPUT:
            continue
        d.cur = node
        gy = _accumulate(d, cot.pop(node.id))
        op = lookup(node.op)
        if op.grad is None:
            raise AlmError(Diagnostic(f"{node.op} cannot be differentiated (it has no gradient rule)", node.span,
                                      "freeze the layers before it, or use another op"), g.sources)
        in_grads, p_grads = op.grad(d, node, gy)
        assert len(in_grads) == len(node.inputs), f"{node.op}: one gradient per input"
        for i, gi in zip(node.inputs, in_grads):
            if gi is not None and i in req:
                assert d.type(gi).dims == g.node(i).type.dims, (node.op, d.type(gi), g.node(i).type)
                cot.setdefault(i, []).append(gi)
        owner = node.owner or node.id
        for local, gp in p_grads.items():
            full = f"{owner}.{local}"
            if full in want:
                pgrads.setdefault(full, []).append(gp)
    grads = {}
    for i in inputs:
        if i in cot:
            d.cur = g.node(i)
            grads[i] = _accumulate(d, cot.pop(i))
    for full in trainable:
        if full in pgrads:
            d.cur = g.node(pgrads[full][0])
            grads[full] = _accumulate(d, pgrads[full])
    return g, grads


def _accumulate(d: Diff, parts: list[str]) -> str:
    total = parts[0]
    for p in parts[1:]:
        total = d.op("add", [total, p])
    return total
