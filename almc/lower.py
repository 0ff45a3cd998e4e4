"""Lowering: typed Graph -> onnx.ModelProto (inference form).

Reads the types already inferred (never re-infers). Each graph node is lowered
by its op's `lower` rule through an `Emitter`; the tensor a node produces is
named after the node, so ONNX names follow the .alm names. Every intermediate
type goes into `value_info`; each ONNX node's doc_string holds its source
position and block path. Output is deterministic: the same source text, options and
library versions give byte-identical bytes, however the path was spelled (file_names).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import onnx
from onnx import helper

from . import __version__
from .graph import INPUT, Graph, live_nodes, node_params, param_specs
from .init import initialize
from .ops.emit import Emitter
from .ops.registry import lookup, rewrites
from .types import TensorType, onnx_elem_type

OPSET = 21  # one pinned ONNX opset; onnxruntime >= 1.20 implements every op we emit at it
IR_VERSION = 10  # what onnxruntime >= 1.20 reads (onnx's own default can be newer)


def value_info(name: str, t: TensorType):
    elem = onnx_elem_type(t.dtype)
    return helper.make_tensor_value_info(name, elem, [d for d in t.dims])


def file_names(graph: Graph) -> dict[str, str]:
    """Each source file's name (as shown to the user) -> the name the ONNX file records: the
    model's file by its name alone, the files it imports by their path from its folder, the
    standard library as std/...; never the path as typed or the working directory, so that the
    bytes depend on the source text, the options and the library versions alone."""
    from .source import STDLIB_PREFIX

    shown = list(graph.sources)  # the model's own file first
    if not shown:
        return {}
    folder = os.path.dirname(os.path.abspath(shown[0]))
    out = {shown[0]: os.path.basename(shown[0])}
    for name in shown[1:]:
        out[name] = name if name.startswith((STDLIB_PREFIX, "<")) else \
            os.path.relpath(os.path.abspath(name), folder).replace(os.sep, "/")
    return out


def recorded_doc(doc: str, names: dict[str, str]) -> str:
    """A node's `file:line:col in block > ...` with the file as file_names records it."""
    file = next((f for f in names if doc.startswith(f + ":")), None)
    return doc if file is None else names[file] + doc[len(file):]


def source_hash(graph: Graph) -> str:
    h = hashlib.sha256()
    names = file_names(graph)
    for f in sorted(graph.sources, key=lambda f: names[f]):
        h.update(names[f].encode() + b"\0" + graph.sources[f].encode() + b"\0")
    return h.hexdigest()


def names_read(nodes) -> set[str]:
    """The tensor names the nodes read, in their subgraphs (Scan, Loop, If bodies) too."""
    read = set()
    for n in nodes:
        read.update(n.input)
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs):
                read |= names_read(sub.node)
    return read


def outer_reads(nodes, defined=()) -> list[str]:
    """The tensors the nodes read, in their subgraphs too, that neither they nor `defined` make,
    in first-read order: what a subgraph reads from the graph around it."""
    read = []
    for n in nodes:
        read += [i for i in n.input if i]
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs):
                read += outer_reads(sub.node, [i.name for i in sub.input])
    made = set(defined) | {o for n in nodes for o in n.output}
    return [i for i in dict.fromkeys(read) if i not in made]


def compose_transposes(nodes, keep: set[str]) -> list:
    """A Transpose of a Transpose that nothing else reads as one Transpose (attention's keys are
    split into heads, then transposed for q k^T: two permutations written apart)."""
    from collections import Counter

    readers = Counter(i for n in nodes for i in n.input)
    for n in nodes:  # what a Scan's body reads counts too
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            readers.update(outer_reads([n]))
    made = {n.output[0]: n for n in nodes if n.op_type == "Transpose" and n.attribute}  # with its perm
    dropped = set()
    for n in nodes:
        inner = made.get(n.input[0]) if n.op_type == "Transpose" and n.attribute else None
        if inner is None or inner.output[0] in keep or readers[inner.output[0]] != 1:
            continue
        p1, p2 = list(inner.attribute[0].ints), list(n.attribute[0].ints)
        n.input[0] = inner.input[0]
        n.attribute[0].ints[:] = [p1[j] for j in p2]
        dropped.add(id(inner))
    return [n for n in nodes if id(n) not in dropped]


# Ops whose result, from constant inputs, is computed at compile time (by onnx's reference
# evaluator: a relayout is exact, and so is a MatMul with a 0/1 selection such as
# conv_forms._taps_of's, the only MatMul of constants almc's own lowerings write; a user's
# product of two parameters is rounded as numpy rounds) when it is no larger than those inputs. The
# larger folds (a convolution's dense matrix from its weight, ops/conv_forms.py) stay in the
# graph, computed once per run, since they would double the file.
FOLDABLE = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Identity",
            "Flatten", "MatMul", "Add", "Sub", "Mul", "Div", "Neg", "Cast"}


def fold_constants(nodes, inits, params, keep: set[str]):
    """(nodes, initializers, parameters) with every FOLDABLE node whose inputs are all constants
    replaced by its result, under its output's name (a float result among the parameters, which
    the file stores as raw data); the outputs in `keep` stay computed."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    given = {t.name for t in inits} | {k for k, _ in params}
    if not any(n.op_type in FOLDABLE and n.input and all(i in given for i in n.input if i) for n in nodes):
        return nodes, inits, params  # no candidate: spare loading the arrays and a shape inference
    values = {t.name: numpy_helper.to_array(t) for t in inits}
    values.update(params)
    sizes = _result_sizes(nodes, values)
    kept, folded = [], {}
    for n in nodes:
        ins = [i for i in n.input if i]
        if (n.op_type in FOLDABLE and ins and all(i in values for i in ins) and not set(n.output) & keep
                and sizes.get(n.output[0], np.inf) <= sum(values[i].nbytes for i in set(ins))):
            graph = helper.make_graph([n], "fold", [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(
                values[i].dtype), values[i].shape) for i in dict.fromkeys(ins)],
                [helper.make_empty_tensor_value_info(o) for o in n.output])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
            for o, v in zip(n.output, ReferenceEvaluator(model).run(None, {i: values[i] for i in ins})):
                values[o] = folded[o] = np.asarray(v)
            continue
        kept.append(n)
    params = params + [(k, v) for k, v in folded.items() if v.dtype == np.float32]
    inits = inits + [numpy_helper.from_array(v, k) for k, v in folded.items() if v.dtype != np.float32]
    return kept, inits, params


def _result_sizes(nodes, values) -> dict[str, float]:
    """The bytes of each node's first output, from onnx's shape inference over the nodes with
    `values` as typed inputs (inf where it cannot tell)."""
    from onnx import numpy_helper, shape_inference

    produced = {o for n in nodes for o in n.output}
    read = {i for n in nodes for i in n.input if i and i not in produced}
    shapes = [k for k in read if k in values and values[k].dtype == np.int64]  # their values decide shapes
    ins = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(values[k].dtype), values[k].shape)
           for k in read if k in values and k not in shapes]
    ins += [helper.make_empty_tensor_value_info(k) for k in read if k not in values]
    g = helper.make_graph(nodes, "sizes", ins, [], initializer=[numpy_helper.from_array(values[k], k) for k in shapes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    out = {}
    for v in shape_inference.infer_shapes(m).graph.value_info:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if t.HasField("shape") and None not in dims:
            out[v.name] = float(np.prod(dims)) * helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
    return out


def lower(graph: Graph, weights: dict[str, np.ndarray] | None = None, seed: int = 0,
          params_as_inputs: bool = False, target: str = "portable") -> onnx.ModelProto:
    """The ONNX model of a graph. Parameters become initializers, or graph inputs of the same
    names for a training step (`params_as_inputs`), which takes them as inputs and returns them updated.
    `target` (ops/emit.TARGETS: "portable", "cpu" or "cuda") picks between equivalent formulations
    (ops/conv_forms.py); the model computes the same whichever it is."""
    from .onnxfile import attach

    skeleton, params = lower_split(graph, weights, seed, params_as_inputs, target)
    return attach(skeleton, params) if params else skeleton


def lower_split(graph: Graph, weights: dict[str, np.ndarray] | None = None, seed: int = 0,
                params_as_inputs: bool = False, target: str = "portable") -> tuple[onnx.ModelProto, list[tuple[str, np.ndarray]]]:
    """(the model without its parameters' data, [(name, array)] of the parameters, in
    initializer order): `onnxfile` writes the two without copying the arrays through protobuf."""
    if weights is None and not params_as_inputs:
        weights = initialize(graph, seed)
    live = live_nodes(graph)
    names = file_names(graph)
    nodes, inits, infos = [], [], []
    constants: dict = {}
    tensor: dict[str, str] = {}
    out_nodes = set(graph.outputs.values())
    needed = {full for n in live for _, full, _ in node_params(graph, graph.node(n))}
    param_inputs, params = [], []
    for _, full, p in param_specs(graph):
        if full not in needed:
            continue
        if params_as_inputs:
            param_inputs.append(value_info(full, TensorType("f32", p.shape)))
        else:
            params.append((full, weights[full]))
    for node in graph.nodes():
        if node.id not in live:
            continue
        if node.op == INPUT:
            tensor[node.id] = node.id
            continue
        op = lookup(node.op)
        types = [graph.node(i).type for i in node.inputs]
        pnames = {local: full for local, full, _ in node_params(graph, node)}
        g = Emitter(nodes, inits, node.id, recorded_doc(node.doc, names), constants, target)
        name = op.lower(g, [tensor[i] for i in node.inputs], pnames, node.attrs, types, node.type)
        tensor[node.id] = name
        if name == node.id and node.id not in out_nodes:
            infos.append(value_info(name, node.type))
    # An output whose tensor some node computes takes that tensor's name instead of an Identity
    # copy (a training step returns every gradient: copies would double its memory traffic).
    produced = {o for n in nodes for o in n.output}
    taken = set(graph.outputs)
    rename: dict[str, str] = {}
    outputs = []
    for oname, nid in graph.outputs.items():
        t = tensor[nid]
        if t != oname and t in produced and t not in rename and t not in taken:
            rename[t] = oname
        elif t != oname:
            nodes.append(helper.make_node("Identity", [rename.get(t, t)], [oname], name=f"{oname}/output",
                                          doc_string=recorded_doc(graph.node(nid).doc, names)))
        outputs.append(value_info(oname, graph.node(nid).type))
    if rename:
        for n in nodes:
            n.input[:] = [rename.get(i, i) for i in n.input]
            n.output[:] = [rename.get(o, o) for o in n.output]
        infos = [v for v in infos if v.name not in rename]
    for rewrite in rewrites():
        rewrite(nodes)
    keep = {o.name for o in outputs}
    nodes = compose_transposes(nodes, keep)
    if not params_as_inputs:
        nodes, inits, params = fold_constants(nodes, inits, params, keep)
        stored = {t.name for t in inits} | {k for k, _ in params}
        infos = [v for v in infos if v.name not in stored]
    # constants that were reshaped for their consumers (elementwise.full_rank_scalars) may be left unread
    read = names_read(nodes) | {o.name for o in outputs}
    inits = [t for t in inits if t.name in read]
    params = [(k, v) for k, v in params if k in read]
    inputs = [value_info(i, graph.node(i).type) for i in graph.inputs if i in live] + param_inputs
    g = helper.make_graph(nodes, graph.name, inputs, outputs, initializer=inits, value_info=infos)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="almc",
                              producer_version=__version__, ir_version=IR_VERSION,
                              doc_string=f"{graph.name}, compiled by almc {__version__}")
    helper.set_model_props(model, {"almc.version": __version__, "almc.source_sha256": source_hash(graph),
                                   "almc.model": graph.name, "almc.seed": str(seed)})
    return model, params
