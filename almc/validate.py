"""Validation: graph-level checks that no single call can see.

Name, argument and shape errors are found by build where the call is; here we
check what needs the whole graph: that it is acyclic (a cycle is reported with
its path), and which values no output uses (a warning each, at the statement).
"""
from __future__ import annotations

import networkx as nx

from .errors import Collector
from .graph import INPUT, Graph, is_leaf, live_nodes


def validate(graph: Graph, c: Collector) -> Graph:
    if not nx.is_directed_acyclic_graph(graph.nx):
        cycle = [u for u, _ in nx.find_cycle(graph.nx)]
        first = graph.node(cycle[0])
        path = " → ".join(f"{n} ({graph.node(n).span.line}:{graph.node(n).span.col})" for n in cycle)
        c.error(f"cycle: {path} → {cycle[0]}", first.span)
        return graph
    live = live_nodes(graph)
    if graph.train is not None and graph.train.loss:  # the objective uses values too
        live |= {graph.train.loss} | nx.ancestors(graph.nx, graph.train.loss)
    warned = set()
    for node in graph.nodes():
        if node.id in live or node.layer in warned or is_leaf(node):
            continue
        layer_live = any(n.id in live for n in graph.nodes() if n.layer == node.layer)
        if layer_live:
            continue
        warned.add(node.layer)
        what = "input" if node.op == INPUT else "value"
        c.warning(f"{what} '{node.layer}' is never used by an output", node.span,
                  "remove it, or use it" if what == "value" else "remove the input, or use it")
    return graph
