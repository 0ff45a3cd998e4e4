"""Shape inference: the one place an op's shape rule is applied.

`infer_node` is called by build as each node is created (hyper-parameters may
read shapes, and errors belong at the call); `infer_shapes` re-derives every
type of a finished graph in topological order, for graphs that later passes
rewrite. Both check the size limits, so a layer that would allocate too much is
refused before anything is allocated.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .errors import ShapeError
from .graph import INPUT, Graph
from .ops.registry import lookup
from .types import TensorType


@dataclass(frozen=True)
class Limits:
    max_params_per_layer: int = 2_000_000_000
    max_activations_per_example: int = 2_000_000_000
    # Building a model is a program run: loop iterations, block calls, statements and the elements
    # of every list made all count against one budget, so no model can make almc work without end.
    # models/resnet50.alm takes 229.
    max_eval_steps: int = 1_000_000


DEFAULT_LIMITS = Limits()


def infer_node(opname: str, types: list[TensorType], attrs, limits: Limits | None = None) -> TensorType:
    op = lookup(opname)
    limits = limits or DEFAULT_LIMITS
    if op.params is not None:  # parameters are float32, and ONNX does not mix float widths in one op
        for t in types:
            if t.dtype in ("f16", "f64"):
                raise ShapeError(f"{opname} computes in float32 (its parameters are float32), got {t}",
                                 "declare the input f32")
    out = op.shape(types, attrs)
    for d in out.dims:
        if isinstance(d, int) and d <= 0:
            raise ShapeError(f"{opname} would produce an empty tensor {out}")
    if out.per_example() > limits.max_activations_per_example:
        raise ShapeError(f"{opname} output {out} has {out.per_example():,} elements per example, "
                         f"over the limit of {limits.max_activations_per_example:,}",
                         "check the sizes, or raise the limit with --max-activations")
    if op.params is not None:
        n = sum(prod(p.shape) for p in op.params(types, attrs))
        if n > limits.max_params_per_layer:
            raise ShapeError(f"{opname} would have {n:,} parameters, over the limit of {limits.max_params_per_layer:,}",
                             "check the sizes, or raise the limit with --max-params")
    return out


def infer_shapes(graph: Graph, limits: Limits | None = None) -> Graph:
    g = graph.copy()
    for node in g.nodes():
        if node.op == INPUT:
            continue
        g.set_type(node.id, infer_node(node.op, [g.node(i).type for i in node.inputs], node.attrs, limits))
    return g
