"""Time each ONNX formulation almc can emit for a convolution and its gradients, layer by layer,
in onnxruntime (CPU, 2 threads): the figures behind the choices in almc/ops/conv_forms.py.

    python bench/conv_forms.py            # ResNet-18 on 32x32 (batch 32), LeNet (batch 64), one 56x56 layer,
                                          # EfficientNet-B0's depthwise layers (weight gradient)

Each formulation is built by the same emitters almc's lowering uses, as a one-op model taking the
weight as an input (as in a training step), checked against the first one's output, and timed
(median of 20 runs after 3). A `*` marks the one almc picks for that layer.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from almc.ops import conv_forms as F
from almc.ops.emit import Emitter

# (label, N, C, M, size, kernel, stride, pad)
LAYERS = [
    ("LeNet c1", 64, 1, 6, 32, 5, 1, 0),
    ("LeNet c3", 64, 6, 16, 14, 5, 1, 0),
    ("ResNet-18 stem", 32, 3, 64, 32, 7, 2, 3),
    ("ResNet-18 layer0 (8x8)", 32, 64, 64, 8, 3, 1, 1),
    ("ResNet-18 layer1 (4x4)", 32, 128, 128, 4, 3, 1, 1),
    ("ResNet-18 layer1 down (8->4)", 32, 64, 128, 8, 3, 2, 1),
    ("ResNet-18 layer2 down (4->2)", 32, 128, 256, 4, 3, 2, 1),
    ("ResNet-18 layer2 (2x2)", 32, 256, 256, 2, 3, 1, 1),
    ("ResNet-18 layer3 (1x1)", 32, 512, 512, 1, 3, 1, 1),
    ("56x56, 64 channels", 32, 64, 64, 56, 3, 1, 1),
    ("56x56 -> 28x28, 64 -> 128 channels", 32, 64, 128, 56, 3, 2, 1),
]


# depthwise layers of EfficientNet-B0 at 64x64 (batch 32): (label, N, C, size, kernel, stride)
DEPTHWISE = [
    ("depthwise 32ch 32x32 k3", 32, 32, 32, 3, 1),
    ("depthwise 96ch 32x32 k3 s2", 32, 96, 32, 3, 2),
    ("depthwise 144ch 16x16 k5 s2", 32, 144, 16, 5, 2),
    ("depthwise 672ch 4x4 k5", 32, 672, 4, 5, 1),
    ("depthwise 1152ch 2x2 k3", 32, 1152, 2, 3, 1),
]


def session(build, inputs: dict[str, np.ndarray], threads: int):
    nodes, inits = [], []
    g = Emitter(nodes, inits, "y")
    out = build(g)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in inputs.items()],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]), out


def timed(build, inputs, threads, reps=20):
    s, out = session(build, inputs, threads)
    for _ in range(3):
        y = s.run([out], inputs)[0]
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        s.run([out], inputs)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__}, {args.threads} threads; median ms per call\n")
    print("| layer | pass | formulation: ms |\n|---|---|---|")
    for label, N, C, M, H, k, s, p in LAYERS:
        out = (H + 2 * p - k) // s + 1
        geo = F.ConvGeo((k, k), (s, s), (1, 1), ((p, p), (p, p)), 1, (H, H), (out, out))
        form = F.choose(geo)
        plain = F.Form(geo, ((0, k), (0, k)), False, geo.kernel)
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        w = rng.standard_normal((M, C, k, k)).astype(np.float32)
        gy = rng.standard_normal((N, M, out, out)).astype(np.float32)
        variants = {"forward": {"Conv": lambda g, f=plain: F.forward(g, "x", "w", None, f, M, C, None)},
                    "input grad": {"ConvTranspose": lambda g: g.node("ConvTranspose", ["gy", "w"], kernel_shape=[k, k],
                                                                     strides=[s, s], pads=[p] * 4,
                                                                     output_padding=F.output_padding(geo))},
                    "weight grad": {"Conv, operands transposed": lambda g: F._grad_weight_conv(g, "gy", "x", geo, C, M, None),
                                    "Gemm per tap": lambda g: F._grad_weight_per_tap(g, "gy", "x", geo, C, M, None)}}
        if form.matmul or form.dense or form.pruned:
            name = "Gemm" if form.matmul else "dense matrix" if form.dense else "taps dropped"
            variants["forward"][name] = lambda g, f=form: F.forward(g, "x", "w", None, f, M, C, None)
            variants["input grad"][name] = lambda g, f=form: F.grad_input(g, "gy", "w", f, M, C, None)
            # the dense weight gradient is timed even where almc keeps the per-tap or Conv form
            wform = replace(form, dense_weight=True) if form.dense else form
            variants["weight grad"][name] = lambda g, f=wform: F.grad_weight(g, "gy", "x", f, C, M, None)
        variants["input grad"]["MatMul + Col2Im"] = lambda g: F._grad_input_col2im(g, "gy", "w", geo, [M, C], None)
        if s == 1:
            variants["input grad"]["Conv, weight flipped"] = lambda g: F.transposed_as_conv(g, "gy", "w", geo, M, C, None)
        feeds = {"forward": {"x": x, "w": w}, "input grad": {"gy": gy, "w": w}, "weight grad": {"gy": gy, "x": x}}
        picks = {"forward": _pick_forward(form), "input grad": _pick_input(form, geo, M, C),
                 "weight grad": _pick_weight(form, C)}
        for what, builds in variants.items():
            cells, first = [], None
            for name, build in builds.items():
                ms, y = timed(build, feeds[what], args.threads)
                if first is None:
                    first = y
                elif not np.allclose(y, first, rtol=1e-3, atol=1e-3 * float(np.abs(first).max())):
                    raise SystemExit(f"{label} {what}: {name} disagrees with {next(iter(builds))}")
                cells.append(f"{'*' if name == picks[what] else ''}{name} {ms:.2f}")
            print(f"| {label} | {what} | {', '.join(cells)} |", flush=True)
    for label, N, C, H, k, s in DEPTHWISE:  # the weight gradient: the two forms a grouped conv may take
        p = k // 2
        out = (H + 2 * p - k) // s + 1
        geo = F.ConvGeo((k, k), (s, s), (1, 1), ((p, p), (p, p)), C, (H, H), (out, out))
        feeds = {"gy": rng.standard_normal((N, C, out, out)).astype(np.float32),
                 "x": rng.standard_normal((N, C, H, H)).astype(np.float32)}
        cells, first = [], None
        for name, build in {"*grouped Conv, operands transposed": F._grad_weight_conv,
                            "unfolded (portable)": F._grad_weight_unfolded}.items():
            ms, y = timed(lambda g, b=build: b(g, "gy", "x", geo, C, C, None), feeds, args.threads)
            if first is not None and not np.allclose(y, first, rtol=1e-3, atol=1e-3 * float(np.abs(first).max())):
                raise SystemExit(f"{label}: {name} disagrees")
            first = y if first is None else first
            cells.append(f"{name} {ms:.2f}")
        print(f"| {label} | weight grad | {', '.join(cells)} |", flush=True)
        w = rng.standard_normal((C, 1, k, k)).astype(np.float32)
        pick = "flipped" if s == 1 else "ConvTranspose"
        builds = {"ConvTranspose": lambda g: g.node("ConvTranspose", ["gy", "w"], kernel_shape=[k, k], strides=[s, s],
                                                    pads=[p] * 4, group=C, output_padding=F.output_padding(geo)),
                  "flipped": lambda g: F.transposed_as_conv(g, "gy", "w", geo, C, C, None)}
        cells, first = [], None
        for name, build in builds.items():
            ms, y = timed(build, {"gy": feeds["gy"], "w": w}, args.threads)
            if first is not None and not np.allclose(y, first, rtol=1e-3, atol=1e-3 * float(np.abs(first).max())):
                raise SystemExit(f"{label}: {name} disagrees")
            first = y if first is None else first
            cells.append(f"{'*' if name == pick else ''}{name} {ms:.2f}")
        print(f"| {label} | input grad | {', '.join(cells)} |", flush=True)


def _pick_forward(form):
    return "Gemm" if form.matmul else "dense matrix" if form.dense else "taps dropped" if form.pruned else "Conv"


def _pick_input(form, geo, M, C):
    if form.matmul or form.dense or form.pruned:
        return _pick_forward(form)
    if F._flip_pays(geo, M):
        return "Conv, weight flipped"
    return "MatMul + Col2Im" if F._col2im_pays(geo, C) else "ConvTranspose"


def _pick_weight(form, C):
    if form.matmul or form.dense_weight or form.pruned:
        return _pick_forward(form)
    return "Gemm per tap" if C >= F.MIN_CHANNELS_PER_TAP else "Conv, operands transposed"


if __name__ == "__main__":
    main()
