"""The newer architectures against PyTorch on the CPU: ViT-B/16 and EfficientNet-B0 inference,
and a Vision Transformer's training step (models/vit_digits.alm).

    python bench/zoo.py            # about 4 minutes on 2 cores; its section of bench/RESULTS.md
    python bench/zoo.py --quick    # fewer rounds

Inference: models/vit_b_16.alm and models/efficientnet_b0.alm at 224 x 224 against
torch.onnx.export (TorchScript exporter, dynamic batch) of tests/torch_reference.py's module
with the same weights: the module's randomised state_dict (batch norm statistics too) imported
into almc by `almc.weights.import_weights`, torchvision's names. Both files run in the
benchmark's onnxruntime session (bench/workers.py: 2 intra-op threads, ORT_ENABLE_ALL), and
PyTorch eager runs too; almc's output must agree with the module's in float64 to 1e-4 (relative
to the largest) before anything is timed. Batch 1 and batch 8, contenders alternating (workers.alternate). The op
histogram of each file after onnxruntime's optimisations shows what it fused.

Training: models/vit_digits.alm's step (AdamW, label smoothing 0.1, cosine schedule, batch 32),
compiled by almc.compiler.compile_step and run by almc.runner.StepRunner as `almc train` runs
it, against PyTorch eager with the same initial weights (almc's, under torchvision's names),
torch.optim.AdamW and the same learning rate at each step. The first steps' losses must agree to
1e-4 before the steps are timed.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

from report import document, median_ms, render_zoo, sections  # noqa: E402
from workers import alternate, eager_runner, graph_stats, onnx_runner, optimized_ops  # noqa: E402

THREADS = 2
TOL = 1e-4


def inference(name: str, make, dims: tuple, wd: Path, reps: int, batches=(1, 8)) -> dict:
    import torch
    from test_parity import built

    import almc
    from almc.weights import import_weights

    module = built(make)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    np.savez(wd / f"{name}.npz", **sd)
    m = almc.load(ROOT / "models" / f"{name}.alm")
    weights, report = import_weights(m, wd / f"{name}.npz")
    assert report.exact, report.text()
    m.weights = weights
    paths = {"almc": wd / f"{name}_almc.onnx", "torchscript": wd / f"{name}_torch.onnx"}
    m.export(paths["almc"])
    x0 = torch.zeros(2, *dims)
    torch.onnx.export(module, (x0,), str(paths["torchscript"]), dynamo=False, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    import onnx

    entry = {"graphs": {}, "check": {}, "times": {}}
    runners = {"eager": eager_runner(module, "cpu")}
    for k, path in paths.items():
        stats = graph_stats(onnx.load(str(path), load_external_data=False))
        stats["after_ort"] = optimized_ops(str(path), wd, f"{name}_{k}")
        entry["graphs"][k] = stats
        runners[f"onnx:{k}"] = onnx_runner(str(path), "cpu", THREADS)
    # the reference: the module in float64 (EfficientNet-B0's float32 result in PyTorch is itself
    # 2e-4 from it at 224 x 224, see tests/test_parity.py)
    x = np.random.default_rng(1).standard_normal((2, *dims)).astype(np.float32)
    with torch.no_grad():
        ref = copy.deepcopy(module).double()(torch.from_numpy(x).double()).numpy()
    scale = float(np.abs(ref).max())
    for k, r in runners.items():
        diff = float(np.abs(r(x, True) - ref).max())
        entry["check"][k] = diff / scale
        if k == "onnx:almc" and diff > TOL * scale:
            raise SystemExit(f"{name}: almc's output differs from PyTorch's in float64 by {diff / scale:.2e} "
                             f"relative (> {TOL})")
    for batch in batches:
        xb = np.random.default_rng(batch).standard_normal((batch, *dims)).astype(np.float32)
        once = {k: r(xb, False, prepare=True) for k, r in runners.items()}
        for f in once.values():
            f()
        times, block, rounds, _ = alternate(once, "onnx:almc", reps)
        entry["times"][batch] = {"block": block, "rounds": rounds, "times": times}
        print(f"{name} batch {batch}: " + ", ".join(f"{k} {median_ms(v):.1f} ms" for k, v in times.items()),
              flush=True)
    return entry


def training(reps: int, steps_checked: int = 3) -> dict:
    import torch
    import torch.nn.functional as F
    from torch_reference import vit_digits
    from workers import ort_session

    import almc
    from almc.compiler import compile_step
    from almc.ops.schedule import learning_rate
    from almc.runner import StepRunner
    from almc.weights import export_weights

    m = almc.load(ROOT / "models" / "vit_digits.alm")
    weights = m.initial_weights(0)
    t = m.graph.train
    compiled = compile_step(m.graph, gradients=False, target="cpu")  # as almc train on the CPU
    sess = ort_session(compiled.proto.SerializeToString(), "cpu", THREADS, memory_pattern=False)
    state = {k: np.zeros(s, np.float32) for k, s in compiled.signature.state.items()}
    runner = StepRunner(sess, compiled, weights, state, "cpu")
    x_name, y_name = m.graph.inputs[0], t.labels[0]

    module = vit_digits()
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in
                            export_weights(weights, m.graph, "torchvision").items()}, strict=True)
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=0.002, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)

    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((32, 1, 16, 16)).astype(np.float32), rng.integers(0, 10, 32).astype(np.int64))
               for _ in range(4)]
    per_epoch = 45  # the digits' 1,437 training images in batches of 32
    counters = {"almc": 0, "eager": 0}

    def lr(k):
        return learning_rate((k + 1) / per_epoch, kind="cosine", lr=0.002, epochs=40, warmup=2)

    def almc_step():
        k = counters["almc"]
        xb, yb = batches[k % len(batches)]
        counters["almc"] += 1
        return float(runner.run({x_name: xb, y_name: yb}, (k + 1) / per_epoch, k)["loss"].numpy())

    def torch_step():
        k = counters["eager"]
        xb, yb = batches[k % len(batches)]
        counters["eager"] += 1
        for g in opt.param_groups:
            g["lr"] = lr(k)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(module(torch.from_numpy(xb)), torch.from_numpy(yb), label_smoothing=0.1)
        loss.backward()
        opt.step()
        return float(loss.item())

    losses = [(almc_step(), torch_step()) for _ in range(steps_checked)]
    for k, (a, b) in enumerate(losses):
        if abs(a - b) > TOL * abs(b):
            raise SystemExit(f"vit_digits step {k}: almc loss {a} against PyTorch {b}")
    mapped = export_weights(runner.weights(), m.graph, "torchvision")
    sd = module.state_dict()
    # absolute differences: Adam moves a weight by up to lr per step whatever its gradient, so where
    # the exact gradient is 0 (the key projection's bias: softmax ignores a shift of a query's
    # scores) both sides step on rounding noise and differ by up to lr
    diffs = sorted(((float(np.abs(v - sd[k].numpy()).max()), k) for k, v in mapped.items()), reverse=True)
    times, block, rounds, _ = alternate({"almc": almc_step, "eager": torch_step}, "almc", reps)
    print("vit_digits step batch 32: " + ", ".join(f"{k} {median_ms(v):.2f} ms" for k, v in times.items()),
          flush=True)
    return {"losses": losses, "weight_diffs": diffs[:3], "block": block, "rounds": rounds,
            "times": times, "nodes": len(compiled.proto.graph.node)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--out", default=str(BENCH), help="where results-zoo.json goes, and the section into RESULTS.md if results.json is there")
    args = ap.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    import onnxruntime
    import torch
    from torch_reference import efficientnet_b0, vit_b_16

    torch.set_num_threads(THREADS)
    t0 = time.perf_counter()
    res = {"command": "python bench/zoo.py" + (" --quick" if args.quick else ""), "load": os.getloadavg(),
           "machine": f"{os.cpu_count()} CPUs", "inference": {},
           "versions": f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"}
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        for name, make in (("efficientnet_b0", efficientnet_b0), ("vit_b_16", vit_b_16)):
            res["inference"][name] = inference(name, make, (3, 224, 224), wd, 6 if args.quick else 12)
    res["training"] = training(100 if args.quick else 400)
    res["load_after"] = os.getloadavg()
    res["wall_s"] = time.perf_counter() - t0
    out = Path(args.out)
    (out / "results-zoo.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(render_zoo(json.loads((out / "results-zoo.json").read_text())))
    if (out / "results.json").exists():  # RESULTS.md: run.py's last run, then this section
        main_res = json.loads((out / "results.json").read_text())
        (out / "RESULTS.md").write_text(document(main_res, *sections(out)))


if __name__ == "__main__":
    main()
