"""Deployment exports: float16 weights and compute (`almc compile --precision fp16`) and static
int8 quantisation (`almc compile --quantize int8 --calibrate DATA`), both through onnxruntime's
own tools, and the comparison `almc compile` prints against the float32 file: size, onnxruntime
latency and test accuracy.

- fp16: onnxruntime.transformers.float16 converts every float32 initializer and op to float16,
  keeping float32 inputs and outputs (a Cast at each end), so callers feed what they fed before.
- int8: onnxruntime.quantization.quantize_static in the QDQ format (QuantizeLinear /
  DequantizeLinear pairs, standard ONNX that every runtime reads): weights int8 per output
  channel, activations uint8 with ranges calibrated (MinMax) on examples of the training split,
  prepared as `almc train` prepares them.
"""
from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

CALIBRATION_EXAMPLES = 256  # from the training split: the ranges settle well before this


def to_fp16(proto):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return topologically_sorted(convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False))


def topologically_sorted(proto):
    """The graph's nodes in an order where each one follows what it reads, as ONNX requires (the
    float16 converter appends its input Casts after the nodes that read them; onnxruntime sorts
    for itself, onnx's checker and other runtimes refuse)."""
    graph = proto.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        progressed = [n for n in pending if all(i in ready for i in n.input)]
        if not progressed:  # a cycle, or a name nothing produces: leave it for the checker to name
            ordered += rest
            break
        for n in progressed:
            ready.update(n.output)
        ordered += progressed
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    return proto


def quantize_int8(proto, input_name: str, examples: np.ndarray):
    """The model with int8 weights and uint8 activations (QDQ), calibrated on `examples`."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: examples[i:i + 32]} for i in range(0, len(examples), 32)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        onnx.save(proto, src)
        logging.disable(logging.WARNING)  # its advice to pre-process: almc's files are shape-inferred already
        try:
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        return onnx.load(str(dst))


def calibration_data(model, data: str | None, seed: int = 0):
    """(examples for calibration, the test split's (x, y) or None). `data` may be a .npy of the
    model's input examples, taken as they are (at most CALIBRATION_EXAMPLES); otherwise the
    training split of `data` or the training section's data, prepared as `almc train` prepares
    them, with the test split beside it."""
    from .errors import UsageError
    from .train import TrainOptions, _spec_with, prepare_data

    if data is not None and data.endswith(".npy"):
        from .api import check_input
        from .files import read_array

        name = model.graph.inputs[0]
        x = check_input(name, read_array(data), model.graph.node(name).type, data)
        return x[:CALIBRATION_EXAMPLES], None
    if model.graph.train is None:
        raise UsageError(f"--quantize calibrates on the data of {model.name}'s training section, and it has none: "
                         "give examples of its input with --calibrate X.npy, or add a training section")
    spec = _spec_with(model.graph, TrainOptions())
    _, xs, ys = prepare_data(model.graph, spec, TrainOptions(data=data, seed=seed))
    return xs[0][:CALIBRATION_EXAMPLES], (xs[2], ys[2])


def compare(protos: dict, input_name: str, test=None, reps: int = 20) -> dict:
    """For each file (name -> ModelProto): its size, onnxruntime's median latency at batch 1 on the
    CPU, and its accuracy on the test split when `test` (x, y) is given."""
    from .evaluate import predicted_classes
    from .runtime import session

    out = {}
    for name, proto in protos.items():
        data = proto.SerializeToString()
        sess = session(data, "cpu")
        first = sess.get_outputs()[0].name
        x1 = test[0][:1] if test is not None else None
        entry = {"bytes": len(data)}
        if x1 is not None:
            sess.run([first], {input_name: x1})  # warm-up
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                sess.run([first], {input_name: x1})
                times.append(time.perf_counter() - t0)
            entry["latency_s"] = statistics.median(times)
            x, y = test
            scores = np.concatenate([sess.run([first], {input_name: x[i:i + 256]})[0] for i in range(0, len(x), 256)])
            if np.issubdtype(y.dtype, np.integer):
                entry["accuracy"] = float((predicted_classes(scores) == y).mean())
        out[name] = entry
    return out
