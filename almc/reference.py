"""The numpy reference executor: runs a Graph with each op's own numpy kernel.

It shares nothing with the ONNX lowering, so agreement between the two (tested
for every op) is evidence that both are right.
"""
from __future__ import annotations

import numpy as np

from .graph import INPUT, Graph, node_params
from .ops.registry import lookup


def execute(graph: Graph, weights: dict[str, np.ndarray], inputs: dict[str, np.ndarray],
            keep_all: bool = False) -> dict[str, np.ndarray]:
    import networkx as nx

    needed = set(graph.outputs.values())
    for nid in list(needed):
        needed |= nx.ancestors(graph.nx, nid)
    vals: dict[str, np.ndarray] = {}
    for node in graph.nodes():
        if node.id not in needed and not keep_all:
            continue
        if node.op == INPUT:
            vals[node.id] = np.asarray(inputs[node.id])
            continue
        op = lookup(node.op)
        params = {local: weights[full] for local, full, _ in node_params(graph, node)}
        vals[node.id] = op.reference([vals[i] for i in node.inputs], params, node.attrs)
    if keep_all:
        return vals
    return {name: vals[nid] for name, nid in graph.outputs.items()}
