"""The typed dataflow graph: a thin, immutable-by-convention wrapper over networkx.

A node per operation (op name, resolved attributes, source span, block path,
the source-level name it belongs to), an edge per tensor. Edges carry the input
position (`index`) because an op's inputs are ordered; `Node.inputs` keeps the
same order. No pass logic lives here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import networkx as nx

from .errors import UNKNOWN, Span
from .ops.registry import Attrs, Param, lookup
from .types import TensorType

INPUT = "input"  # the op name of graph inputs (they have no registry entry)


@dataclass(frozen=True)
class Node:
    id: str
    op: str
    inputs: tuple[str, ...] = ()
    attrs: Attrs = field(default_factory=Attrs)
    span: Span = UNKNOWN
    scope: tuple[str, ...] = ()  # block call path, outermost first, e.g. ("resnet_stage", "bottleneck")
    layer: str = ""  # the source-level value this node computes part of (summary rows)
    type: TensorType | None = None
    owner: str | None = None  # gradient and update nodes read the parameters of this forward node
    calls: tuple[str, ...] = ()  # one id per block call in scope ("i0/h/"): which call a node belongs to

    @property
    def doc(self) -> str:
        where = f"{self.span.file}:{self.span.line}:{self.span.col}"
        return where + (f" in {' > '.join(self.scope)}" if self.scope else "")


@dataclass
class Graph:
    name: str = "model"
    nx: nx.DiGraph = field(default_factory=nx.DiGraph)
    inputs: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> node id
    sources: dict[str, str] = field(default_factory=dict)  # file -> text (diagnostics, hashing)
    files: tuple = ()  # the source files read, resolved: a command's output must not be one of them
    span: Span = UNKNOWN  # the model's name in its source
    train: object = None  # the training section (objective.TrainSpec), when the file has one
    # (statement span, name, value) for every name a statement bound, in build order (a block's
    # statements once per call): what the language server shows on hover
    bindings: list = field(default_factory=list)

    def add(self, node: Node) -> Node:
        assert node.id not in self.nx, node.id
        self.nx.add_node(node.id, node=node)
        for i, src in enumerate(node.inputs):
            self.nx.add_edge(src, node.id, index=i)
        if node.op == INPUT:
            self.inputs.append(node.id)
        return node

    def node(self, nid: str) -> Node:
        return self.nx.nodes[nid]["node"]

    def __contains__(self, nid: str) -> bool:
        return nid in self.nx

    def nodes(self) -> list[Node]:
        """Nodes in a deterministic topological order (ties broken by insertion order)."""
        order = {n: i for i, n in enumerate(self.nx.nodes)}
        return [self.node(n) for n in nx.lexicographical_topological_sort(self.nx, key=order.__getitem__)]

    def consumers(self, nid: str) -> list[Node]:
        return [self.node(c) for c in self.nx.successors(nid)]

    def set_type(self, nid: str, t: TensorType) -> None:
        self.nx.nodes[nid]["node"] = replace(self.node(nid), type=t)

    def redirect(self, old: str, new: str) -> None:
        """Make every consumer of `old` (but `new` itself) and every output read `new` instead."""
        for c in list(self.nx.successors(old)):
            if c == new:
                continue
            node = self.node(c)
            self.nx.remove_edge(old, c)
            for i, src in enumerate(node.inputs):
                if src == old:
                    self.nx.add_edge(new, c, index=i)
            self.nx.nodes[c]["node"] = replace(node, inputs=tuple(new if i == old else i for i in node.inputs))
        self.outputs = {k: (new if v == old else v) for k, v in self.outputs.items()}

    def copy(self) -> "Graph":
        g = replace(self, nx=self.nx.copy(), inputs=list(self.inputs), outputs=dict(self.outputs),
                    sources=dict(self.sources))
        return g


def is_leaf(node: Node) -> bool:
    """A value the compiler made (a constant, a parameter read), not a computation of the model."""
    return node.op != INPUT and lookup(node.op).leaf


def node_params(graph: Graph, node: Node) -> list[tuple[str, str, Param]]:
    """(local name, full name, Param) of the parameters a node reads: its own, or its owner's."""
    owner = graph.node(node.owner) if node.owner else node
    if owner.op == INPUT:
        return []
    op = lookup(owner.op)
    if op.params is None:
        return []
    types = [graph.node(i).type for i in owner.inputs]
    return [(p.name, f"{owner.id}.{p.name}", p) for p in op.params(types, owner.attrs)]


def param_specs(graph: Graph) -> list[tuple[str, str, Param]]:
    """(node id, full parameter name, Param) for every parameter and buffer, in graph order."""
    out = []
    for node in graph.nodes():
        if node.op == INPUT or node.owner:
            continue
        out += [(node.id, full, p) for _, full, p in node_params(graph, node)]
    return out


def in_layers(layer: str, names) -> bool:
    """Is `layer` one of `names`, or inside a block call named by one of them?"""
    return any(layer == n or layer.startswith(n + "/") for n in names)


def is_frozen(graph: Graph, nid: str) -> bool:
    """Does the training section freeze the layer of node `nid` (`freeze c1, c3`)? The one rule
    that summary, the training step and gradient checking share."""
    return graph.train is not None and in_layers(graph.node(nid).layer, graph.train.frozen)


def trainable_params(graph: Graph) -> list[str]:
    """Full names of the parameters training updates, in graph order: the trainable parameters
    (not buffers) of every layer the training section does not freeze."""
    return [full for nid, full, p in param_specs(graph) if p.trainable and not is_frozen(graph, nid)]


def live_nodes(graph: Graph) -> set[str]:
    """Nodes that some output depends on."""
    live = set()
    for nid in graph.outputs.values():
        live.add(nid)
        live |= nx.ancestors(graph.nx, nid)
    return live
