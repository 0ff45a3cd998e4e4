"""Parameter initialisation: per op, per following activation, reproducible from a seed.

`auto` resolves to He normal (std = sqrt(2 / fan_in)) when the layer's output
feeds a ReLU-like activation (looking through batchnorm and dropout), and to
Glorot uniform (limit = sqrt(6 / (fan_in + fan_out))) otherwise, as the course
recommends for tanh / sigmoid / linear outputs. Biases start at zero, batch norm
at scale 1 / shift 0 / mean 0 / variance 1.

Each parameter draws from its own generator seeded by (seed, crc32(name)), so a
parameter's initial value does not depend on the order or presence of others.
"""
from __future__ import annotations

import zlib

import numpy as np

from .graph import INPUT, Graph, node_params
from .ops.registry import Param, lookup


def param_specs(graph: Graph) -> list[tuple[str, str, Param]]:
    """(node id, full parameter name, Param) for every parameter and buffer, in graph order."""
    out = []
    for node in graph.nodes():
        if node.op == INPUT or node.owner:
            continue
        out += [(node.id, full, p) for _, full, p in node_params(graph, node)]
    return out


def activation_after(graph: Graph, nid: str) -> str | None:
    """The activation a node's output flows into, looking through transparent ops."""
    seen = set()
    frontier = [nid]
    found = None
    while frontier:
        cur = frontier.pop()
        for c in graph.consumers(cur):
            if c.id in seen:
                continue
            seen.add(c.id)
            op = lookup(c.op)
            if op.activation:
                if op.activation == "relu":
                    return "relu"
                found = found or op.activation
            elif op.transparent:
                frontier.append(c.id)
    return found


def resolve_init(graph: Graph, nid: str, p: Param) -> str:
    if p.init != "auto":
        return p.init
    return "he" if activation_after(graph, nid) == "relu" else "glorot"


def draw(init: str, shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    if init == "zeros":
        return np.zeros(shape, np.float32)
    if init == "ones":
        return np.ones(shape, np.float32)
    if init == "he":
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
    if init == "glorot":
        lim = np.float32(np.sqrt(6.0 / (fan_in + fan_out)))
        return (rng.random(shape, dtype=np.float32) * 2 - 1) * lim
    if init == "normal":
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01)
    if init == "uniform_fan_in":  # PyTorch's default for Linear / Conv / RNN
        lim = np.float32(1.0 / np.sqrt(fan_in))
        return (rng.random(shape, dtype=np.float32) * 2 - 1) * lim
    raise ValueError(f"unknown initialiser {init}")


def initialize(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    weights = {}
    for nid, name, p in param_specs(graph):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        weights[name] = draw(resolve_init(graph, nid, p), p.shape, p.fan_in, p.fan_out, rng)
    return weights
