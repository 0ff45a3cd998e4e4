"""The deployment exports against float32: size, onnxruntime latency (CPU, 2 threads) and what
they compute, for LeNet-5 trained on the digits and ResNet-18 at 224 x 224.

    python bench/deploy.py        # about 2 minutes on 2 cores; prints a Markdown table

LeNet-5: trained by its own training section (seed 0), then almc.deploy's fp16 and int8 files
(int8 calibrated on 256 images of the training split); test accuracy on the 359 test images.
ResNet-18: seed-0 weights, 1000 classes; int8 calibrated on 64 images of N(0, 1) noise; what it
computes is compared with the float32 file on 16 other noise images (the top-1 class agreement
and the largest difference relative to the largest logit), since untrained weights have no
accuracy to lose.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workers import alternate, ort_session  # noqa: E402


def latency(protos: dict, x: np.ndarray, reps: int) -> dict:
    """Median seconds per call of each file on `x`, contenders alternating (workers.alternate)."""
    calls = {}
    for name, proto in protos.items():
        sess = ort_session(proto.SerializeToString(), "cpu")
        feeds = {sess.get_inputs()[0].name: x}
        sess.run(None, feeds)
        calls[name] = (lambda s, f: lambda: s.run(None, f))(sess, feeds)
    times, *_ = alternate(calls, next(iter(calls)), reps)
    return {k: statistics.median(v) for k, v in times.items()}


def outputs(proto, x):
    sess = ort_session(proto.SerializeToString(), "cpu")
    return np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 64]})[0] for i in range(0, len(x), 64)])


def main() -> None:
    import almc
    from almc import deploy
    from almc.train import TrainOptions, prepare_data

    rows = []
    lenet = almc.load(ROOT / "models" / "lenet.alm")
    lenet.train()
    _, xs, ys = prepare_data(lenet.graph, lenet.graph.train, TrainOptions())
    fp32 = lenet.compile()
    files = {"fp32": fp32, "fp16": deploy.to_fp16(fp32), "int8": deploy.quantize_int8(fp32, "image", xs[0][:256])}
    for batch in (1, 32):
        t = latency(files, xs[2][:batch], 30)
        for k, proto in files.items():
            acc = float((outputs(proto, xs[2]).argmax(1) == ys[2]).mean())
            rows.append(("LeNet-5", k, batch, len(proto.SerializeToString()), t[k], f"test accuracy {acc:.4f}"))
    resnet = almc.load(ROOT / "models" / "resnet18.alm")
    rng = np.random.default_rng(0)
    fp32 = resnet.compile()
    calibration = rng.standard_normal((64, 3, 224, 224)).astype(np.float32)
    files = {"fp32": fp32, "fp16": deploy.to_fp16(fp32), "int8": deploy.quantize_int8(fp32, "image", calibration)}
    probe = rng.standard_normal((16, 3, 224, 224)).astype(np.float32)
    ref = outputs(fp32, probe)
    for batch in (1, 8):
        t = latency(files, probe[:batch], 6)
        for k, proto in files.items():
            y = outputs(proto, probe)
            agree = float((y.argmax(1) == ref.argmax(1)).mean())
            diff = float(np.abs(y - ref).max() / np.abs(ref).max())
            rows.append(("ResNet-18", k, batch, len(proto.SerializeToString()), t[k],
                         f"top-1 as fp32 {agree:.3f}, max difference {diff:.1e}"))
    print(f"`python bench/deploy.py`, {time.strftime('%Y-%m-%d')}, onnxruntime CPU, 2 threads\n")
    print("| model | file | batch | bytes | median latency | computes |")
    print("|---|---|---:|---:|---:|---|")
    for model, k, batch, size, t, what in rows:
        print(f"| {model} | {k} | {batch} | {size:,} | {t * 1e3:.3f} ms | {what} |")


if __name__ == "__main__":
    main()
