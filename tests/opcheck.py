"""Helpers to run one registered op three ways: shape rule, numpy reference, onnxruntime."""
from __future__ import annotations

import numpy as np

from almc.graph import INPUT, Graph, Node
from almc.ops.registry import lookup, resolve_attrs
from almc.types import TensorType


def single_op_graph(opname: str, specs, attrs: dict, batch="N") -> Graph:
    """A graph of inputs x0.. feeding one `opname` node y; batch axis made symbolic."""
    op = lookup(opname)
    a = resolve_attrs(op, attrs)
    g = Graph(name=f"single_{opname}")
    ins = []
    top = max((len(d) for _, d in specs), default=0)
    lead = next((d[0] for _, d in specs if len(d) == top and d), None)
    for i, (dtype, dims) in enumerate(specs):
        dims = tuple(dims)
        if batch and top >= 2 and dims and dims[0] == lead:
            dims = (batch, *dims[1:])
        n = g.add(Node(f"x{i}", INPUT, type=TensorType(dtype, dims)))
        ins.append(n.id)
    types = [g.node(i).type for i in ins]
    g.add(Node("y", opname, tuple(ins), a, type=op.shape(types, a)))
    g.outputs["y"] = "y"
    return g


def random_inputs(specs, seed=0, high=5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i, (dtype, dims) in enumerate(specs):
        if dtype.startswith("i"):
            out[f"x{i}"] = rng.integers(0, high, dims).astype(np.int64 if dtype == "i64" else np.int32)
        else:
            out[f"x{i}"] = rng.standard_normal(dims).astype(np.float32)
    return out


def assert_close(actual, expected, rtol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])  # -inf where a mask puts it
    scale = max(1.0, float(np.abs(expected[finite]).max())) if finite.any() else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)
