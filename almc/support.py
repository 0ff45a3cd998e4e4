"""Does the installed onnxruntime implement every op a model uses?

Loading a whole model into onnxruntime answers it but costs a session, which for a large
training step takes a second or more. So we remember, per onnxruntime version and opset, the op
types that have loaded before (in ~/.cache/almc), and for the op types not yet seen load a model
of one node of each (one_node_per_op), with the types of the whole model's. The tests load every
registered op's lowering.
"""
from __future__ import annotations

import json
import os
import re
from importlib import metadata
from pathlib import Path

from .errors import AlmError, Diagnostic, Span


def ort_version() -> str:
    for dist in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def cache_file(opset: int) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "almc" / f"onnxruntime-{ort_version()}-opset{opset}.json"


def _known(opset: int) -> set[str]:
    try:
        return set(json.loads(cache_file(opset).read_text())["loaded"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _remember(opset: int, ops: set[str]) -> None:
    f = cache_file(opset)
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        from .files import atomic_write

        atomic_write(f, json.dumps({"loaded": sorted(_known(opset) | ops)}).encode())
    except OSError:
        pass  # a read-only home only costs speed


def ensure_supported(model, opset: int) -> None:
    """Raise a located AlmError if onnxruntime cannot load an op of `model`."""
    used = {n.op_type for n in model.graph.node}
    if used <= _known(opset):
        return
    import onnxruntime as ort

    from .runtime import session

    errors = (ort.capi.onnxruntime_pybind11_state.NotImplemented, ort.capi.onnxruntime_pybind11_state.Fail)
    try:
        probe = one_node_per_op(model, used - _known(opset))
        try:
            session((probe or model).SerializeToString(), device="cpu")
        except errors as e:
            if probe is None or _unimplemented(e):
                raise
            session(model.SerializeToString(), device="cpu")  # the probe itself was at fault: the model decides
    except errors as e:
        m = _unimplemented(e)
        if not m:
            raise
        op_type, version, node_name = m.groups()
        node = next((n for n in model.graph.node if n.name == node_name), None)
        span = _span_of(node.doc_string) if node is not None else Span("<model>", 0, 0, 0, 0)
        raise AlmError(Diagnostic(f"onnxruntime {ort_version()} cannot run ONNX op {op_type} at opset {version}",
                                  span, "upgrade onnxruntime, or use another op")) from None
    _remember(opset, used)


def _unimplemented(e):
    return re.search(r"implementation for (\w+)\((\d+)\) node with name '([^']*)'", str(e))


def one_node_per_op(model, op_types: set[str]):
    """A model of the first node of each of `op_types` alone (None where a type is unknown), what
    it reads (its subgraphs too) made graph inputs of the types shape inference gives: onnxruntime
    finds a kernel for each just as in the whole model, and a session of a few nodes opens in
    milliseconds where EfficientNet-B0's step (6197 nodes) took a second."""
    import onnx
    from onnx import helper

    from .lower import outer_reads

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: helper.make_tensor_type_proto(t.data_type, list(t.dims)) for t in g.initializer})
    nodes, seen = [], set()
    for n in g.node:
        if n.op_type in op_types and n.op_type not in seen:
            seen.add(n.op_type)
            nodes.append(n)
    made = {o for n in nodes for o in n.output}
    inputs, outputs = {}, []
    for n in nodes:
        for name in outer_reads([n]):
            if name and name not in inputs and name not in made:
                if name not in types:
                    return None  # shape inference left a type open: check the whole model
                inputs[name] = helper.make_value_info(name, types[name])
        outputs += [helper.make_value_info(o, types[o]) if o in types else helper.make_empty_tensor_value_info(o)
                    for o in n.output if o]
    graph = helper.make_graph(nodes, "probe", list(inputs.values()), outputs)
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)


def _span_of(doc: str) -> Span:
    m = re.match(r"(.*):(\d+):(\d+)", doc.split(" in ")[0])
    if not m:
        return Span("<model>", 0, 0, 0, 0)
    return Span(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(2)), int(m.group(3)) + 1)
