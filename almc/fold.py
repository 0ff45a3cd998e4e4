"""Inference-only rewrites before export: each op with a `fold` rule (batch norm) folds into the
layer before it where it can, so the exported model has one Conv / Gemm where it had two nodes
and computes the same values up to rounding. Training graphs are never folded."""
from __future__ import annotations

import numpy as np

from .graph import Graph
from .ops.registry import lookup


def fold_layers(graph: Graph, weights: dict[str, np.ndarray],
                   overwrite: bool = False) -> tuple[Graph, dict[str, np.ndarray]]:
    """The folded graph and weights. `overwrite`: the caller hands over `weights` (freshly drawn
    ones), which the rules may then scale in place."""
    g = graph.copy()
    w = dict(weights)
    for node in graph.nodes():
        op = lookup(node.op)  # None for a graph input
        if op is not None and op.fold is not None:
            op.fold(g, node, w, overwrite)
    return g, w
