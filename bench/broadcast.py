"""Time onnxruntime's elementwise kernels on the operand shapes a training step has, the figures
behind elementwise.full_rank_scalars and norm.channel_op (docs/performance.md).

    python bench/broadcast.py        # a few seconds

Each row is a one-op model applied 50 times in a chain (CPU, 2 threads); µs per op, median of 20.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper


def per_op_us(op: str, x_shape, c_shape, reps: int = 50) -> float:
    nodes, prev = [], "x"
    for i in range(reps):
        nodes.append(helper.make_node(op, [prev, "c"], [f"t{i}"]))
        prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
                                           helper.make_tensor_value_info("c", TensorProto.FLOAT, c_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 2, 1, 3
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {"x": np.ones(x_shape, np.float32), "c": np.ones(c_shape, np.float32)}
    for _ in range(3):
        s.run(None, feeds)
    ts = []
    for _ in range(20):
        t = time.perf_counter()
        s.run(None, feeds)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) / reps * 1e6


def main() -> None:
    print(f"onnxruntime {ort.__version__}, 2 threads; µs per Mul\n")
    print("| x | other operand | µs |\n|---|---|---:|")
    cases = [((32, 512, 1, 1), ()), ((32, 512, 1, 1), (1, 1, 1, 1)), ((32, 512), ()),
             ((32, 256, 2, 2), (1, 256, 1, 1)), ((32, 256, 2, 2), (32, 256, 2, 2)), ((32, 1024), (1, 1024)),
             ((32, 128, 4, 4), (1, 128, 1, 1)), ((32, 128, 4, 4), (32, 128, 4, 4)), ((32, 2048), (1, 2048)),
             ((32, 64, 8, 8), (1, 64, 1, 1)), ((32, 64, 8, 8), (32, 64, 8, 8))]
    for x, c in cases:
        print(f"| {list(x)} | {list(c)} | {per_op_us('Mul', x, c):.1f} |", flush=True)


if __name__ == "__main__":
    main()
