"""dense over [N, L, F]: almc's Reshape -> Gemm -> Reshape against MatMul + Add with the weight
stored transposed (the issue's suggestion), in onnxruntime on this machine's CPU.

    python bench/dense_forms.py [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def model(form: str, n_in: int, n_out: int, w: np.ndarray, b: np.ndarray):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L", n_in])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L", n_out])
    inits = [numpy_helper.from_array(b, "b")]
    if form == "gemm":
        inits += [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([-1, n_in], np.int64), "rows"),
                  numpy_helper.from_array(np.array([n_out], np.int64), "units")]
        nodes = [helper.make_node("Reshape", ["x", "rows"], ["r"]),
                 helper.make_node("Gemm", ["r", "w", "b"], ["g"], transB=1),
                 helper.make_node("Shape", ["x"], ["lead"], end=-1),
                 helper.make_node("Concat", ["lead", "units"], ["shape"], axis=0),
                 helper.make_node("Reshape", ["g", "shape"], ["y"])]
    elif form == "matmul_t":  # the weight in PyTorch's layout, transposed in the graph (folded by onnxruntime)
        inits += [numpy_helper.from_array(w, "w")]
        nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["m"]),
                 helper.make_node("Add", ["m", "b"], ["y"])]
    else:
        inits += [numpy_helper.from_array(np.ascontiguousarray(w.T), "wt")]
        nodes = [helper.make_node("MatMul", ["x", "wt"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    g = helper.make_graph(nodes, form, [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    return m.SerializeToString()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for n, L, f_in, f_out in [(1, 197, 768, 3072), (8, 197, 768, 768), (32, 64, 256, 256)]:
        w = rng.standard_normal((f_out, f_in)).astype(np.float32)
        b = rng.standard_normal(f_out).astype(np.float32)
        x = rng.standard_normal((n, L, f_in)).astype(np.float32)
        times, outs = {}, {}
        for form in ("gemm", "matmul", "matmul_t"):
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            s = ort.InferenceSession(model(form, f_in, f_out, w, b), so, providers=["CPUExecutionProvider"])
            for _ in range(3):
                outs[form] = s.run(None, {"x": x})[0]
            best = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(10):
                    s.run(None, {"x": x})
                best.append((time.perf_counter() - t0) / 10)
            times[form] = min(best)
        np.testing.assert_allclose(outs["gemm"], outs["matmul"], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(outs["matmul_t"], outs["matmul"], rtol=1e-4, atol=1e-3)
        print(f"[{n}, {L}, {f_in}] -> {f_out}: Reshape+Gemm {times['gemm'] * 1e3:.2f} ms, "
              f"MatMul+Add {times['matmul'] * 1e3:.2f} ms, Transpose(W)+MatMul+Add {times['matmul_t'] * 1e3:.2f} ms; "
              f"Gemm / MatMul {times['gemm'] / times['matmul']:.3f}")


if __name__ == "__main__":
    main()
