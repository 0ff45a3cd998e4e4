"""The interface op lowerings write ONNX through.

`Emitter` is handed to an op's `lower` rule for one graph node. `g.node(...)`
appends an ONNX node and returns its output name; `g.const(...)` adds a constant
initializer; `g.out` is the name the node's result should carry. Every ONNX node
gets a name derived from the graph node and the source position in doc_string.

Constants are shared: a value already emitted for an earlier node is reused under its first
name. Besides a smaller file, this lets onnxruntime's common-subexpression elimination merge
the same computation written by two lowerings (batch norm's statistics, recomputed by its
forward, its gradient and its running-statistics update, read the same `axes` and `eps`).
"""
from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

# What a lowering's choices between equivalent formulations are made for (docs/training.md):
# - "portable": ops that onnxruntime, onnx's reference evaluator and OpenVINO all run, with a
#   symbolic batch; where that allows, the forms tuned for onnxruntime's CPU kernels;
# - "cpu", "cuda": onnxruntime's providers; free to use what only onnxruntime runs where it is
#   faster there (MaxUnpool, a Conv whose weight holds the batch: ops/pool.py, ops/conv_forms.py).
TARGETS = ("portable", "cpu", "cuda")


class Emitter:
    def __init__(self, nodes: list, initializers: list, node_id: str, doc: str = "", constants: dict | None = None,
                 target: str = "portable"):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        self.nodes = nodes
        self.target = target
        # onnxruntime's CPU kernels decide between the portable forms too (portable and cpu)
        self.cpu_kernels = target != "cuda"
        self.initializers = initializers
        self.id = node_id
        self.out = node_id
        self.doc = doc
        self.constants = {} if constants is None else constants  # (dtype, shape, bytes) -> name, and name -> array
        self._count = 0
        self._nodes_emitted = 0

    def tmp(self, suffix: str) -> str:
        self._count += 1
        return f"{self.id}.{suffix}{self._count}"

    def node(self, op_type: str, inputs: list[str], out: str | None = None, outputs: list[str] | None = None, **attrs) -> str:
        outs = outputs if outputs is not None else [out if out is not None else self.tmp(op_type.lower())]
        self._nodes_emitted += 1
        name = self.id if self._nodes_emitted == 1 else f"{self.id}/{op_type}_{self._nodes_emitted}"
        n = helper.make_node(op_type, list(inputs), outs, name=name, doc_string=self.doc,
                             **{k: v for k, v in attrs.items() if v is not None})
        self.nodes.append(n)
        return outs[0]

    def const(self, suffix: str, value, dtype=np.float32) -> str:
        """An initializer holding `value`; equal constants share one (onnxruntime's common-
        subexpression elimination then sees their consumers as equal)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self.constants:
            name = f"{self.id}.{suffix}"
            self.constants[key] = name
            self.constants[name] = arr  # and back, for value_of
            self.initializers.append(numpy_helper.from_array(arr, name))
        return self.constants[key]

    def value_of(self, tensor: str):
        """The array of a tensor made by `const`, or None."""
        return self.constants.get(tensor)
