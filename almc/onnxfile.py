"""An ONNX file written from a model skeleton and numpy weights, without copying the weights
through protobuf.

`onnx.numpy_helper.from_array`, `helper.make_graph` and `SerializeToString` each copy every
weight: four copies, a large share of a big model's compile (figures: docs/performance.md).
Here the skeleton (the model with its small initializers but not the parameters) is serialised
by protobuf, and each parameter's bytes go to the file straight from its array, as the raw_data
of a TensorProto whose framing is written by hand. The pieces are laid out in protobuf's
canonical field order, so the file is byte for byte what
`attach(skeleton, params).SerializeToString()` gives (tested): one ModelProto with a single
graph field, readable by any protobuf reader.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

GRAPH_FIELD = 7  # ModelProto.graph
INITIALIZER_FIELD = 5  # GraphProto.initializer
RAW_DATA_FIELD = 9  # TensorProto.raw_data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int) -> bytes:
    return _varint(field << 3 | 2)  # wire type 2: length-delimited


def _split(message, field: int):
    """(the fields numbered below `field`, those above) of a message, as two copies."""
    low, high = type(message)(), type(message)()
    low.CopyFrom(message)
    high.CopyFrom(message)
    for fd, _ in message.ListFields():
        (high if fd.number < field else low).ClearField(fd.name)
        if fd.number == field:
            high.ClearField(fd.name)
    return low, high


def _tensor_entry(name: str, array: np.ndarray) -> list:
    """GraphProto.initializer entry for a float32 array: framing bytes, then the array's memory."""
    array = np.ascontiguousarray(array, dtype="<f4")
    head = onnx.TensorProto(dims=array.shape, data_type=onnx.TensorProto.FLOAT, name=name).SerializeToString()
    head += _key(RAW_DATA_FIELD) + _varint(array.nbytes)
    return [_key(INITIALIZER_FIELD) + _varint(len(head) + array.nbytes) + head, memoryview(array).cast("B")]


def chunks(skeleton: onnx.ModelProto, params: list[tuple[str, np.ndarray]]) -> list:
    """The serialised model as a list of bytes-like pieces: the skeleton's graph gets `params`
    as its first initializers (before the skeleton's own)."""
    model_low, model_high = _split(skeleton, GRAPH_FIELD)
    graph_low, graph_rest = _split(skeleton.graph, INITIALIZER_FIELD)
    own = onnx.GraphProto()
    own.initializer.extend(skeleton.graph.initializer)
    graph_pieces = [graph_low.SerializeToString()]
    for name, array in params:
        graph_pieces += _tensor_entry(name, array)
    graph_pieces += [own.SerializeToString(), graph_rest.SerializeToString()]
    size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in graph_pieces)
    return [model_low.SerializeToString(), _key(GRAPH_FIELD) + _varint(size), *graph_pieces,
            model_high.SerializeToString()]


def attach(skeleton: onnx.ModelProto, params: list[tuple[str, np.ndarray]]) -> onnx.ModelProto:
    """The whole ModelProto: `params` become the graph's first initializers."""
    model = onnx.ModelProto()
    model.CopyFrom(skeleton)
    del model.graph.initializer[:]
    model.graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(a, np.float32), n) for n, a in params)
    model.graph.initializer.extend(skeleton.graph.initializer)
    return model


def checkable(skeleton: onnx.ModelProto, params: list[tuple[str, np.ndarray]]) -> onnx.ModelProto:
    """The skeleton with each parameter declared as a graph input of its type instead of carried
    as data: what onnx.checker's full check (structure, types, shape inference) needs, without
    the weights' bytes to parse. The weights' dtypes and shapes are the arrays' own, so nothing
    is skipped that the file could get wrong."""
    model = onnx.ModelProto()
    model.CopyFrom(skeleton)
    model.graph.input.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, a.shape) for n, a in params)
    return model


def input_types(model: onnx.ModelProto) -> dict:
    """The inputs a caller feeds (not initializers), as almc TensorTypes: symbolic dimensions by
    their names; None for an element type .alm has no name for."""
    from .types import DTYPES, TensorType

    by_enum = {getattr(onnx.TensorProto, enum): name for name, (_, enum) in DTYPES.items()}
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        dtype = by_enum.get(t.elem_type)
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
        out[i.name] = TensorType(dtype, dims) if dtype else None
    return out
