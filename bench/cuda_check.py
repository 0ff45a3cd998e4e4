"""almc's own CUDA paths against the CPU: run by bench/gpu.sh after the benchmark.

    python bench/cuda_check.py [--out DIR]     # writes DIR/cuda-check.json (default bench/)

1. Inference through `almc.runtime` (strict float32) for LeNet, ResNet-18 and ResNet-50:
   CUDA's outputs against the CPU's.
2. One LeNet training step with its gradients, compiled for each target and run on each
   provider from the same weights and batch.
3. `almc train models/lenet.alm` for 3 epochs on each device: the same test accuracy.

Exits 1 when a check fails; without a usable CUDA provider it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-5  # relative to max(1, the largest CPU output): float32 rounding, not TF32's ~1e-3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench"))
    args = ap.parse_args()
    import almc
    from almc import runtime

    if runtime.providers_for("auto")[0] != "CUDAExecutionProvider":
        print("bench/cuda_check.py: no CUDA provider here: nothing to check.")
        return 0
    res, failed = {}, []
    rng = np.random.default_rng(0)
    for name in ("lenet", "resnet18", "resnet50"):
        proto = almc.load(ROOT / "models" / f"{name}.alm").compile()
        dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
        feeds = {proto.graph.input[0].name: rng.standard_normal([2, *dims]).astype(np.float32)}
        (y_cpu, p_cpu), (y_gpu, p_gpu) = runtime.run(proto, feeds, "cpu"), runtime.run(proto, feeds, "cuda")
        k = next(iter(y_cpu))
        scale = max(1.0, float(np.abs(y_cpu[k]).max()))
        r = {"providers": [p_cpu, p_gpu], "max_abs_diff": float(np.abs(y_cpu[k] - y_gpu[k]).max()), "scale": scale}
        r["ok"] = p_gpu == "CUDAExecutionProvider" and r["max_abs_diff"] <= TOL * scale
        res[f"infer_{name}"] = r
    m = almc.load(ROOT / "models" / "lenet.alm")
    sess = {t: runtime.session(m.compile_training_step(gradients=True, target=t).SerializeToString(), t,
                               memory_pattern=False) for t in ("cpu", "cuda")}
    w = m.initial_weights()
    inputs = sess["cpu"].get_inputs()
    feeds = {}
    for i in inputs:
        shape = [d if isinstance(d, int) else 8 for d in i.shape]
        if i.name in w:
            feeds[i.name] = w[i.name]
        elif "int" in i.type:
            feeds[i.name] = rng.integers(0, 10, shape).astype(np.int64)
        elif i.name in ("epoch", "step"):
            feeds[i.name] = np.array(1.0, np.float32)
        elif i.name == inputs[0].name:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        else:  # optimiser state
            feeds[i.name] = np.zeros(shape, np.float32)
    outs = {t: dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds))) for t, s in sess.items()}
    worst = max((float(np.abs(outs["cpu"][k] - outs["cuda"][k]).max() / max(1.0, float(np.abs(outs["cpu"][k]).max()))), k)
                for k in outs["cpu"])
    res["step_lenet"] = {"providers": [s.get_providers()[0] for s in sess.values()], "worst_rel_diff": worst,
                         "loss": [float(outs[t]["loss"]) for t in outs], "ok": worst[0] <= TOL}
    for dev in ("cuda", "cpu"):
        t0 = time.perf_counter()
        met = almc.load(ROOT / "models" / "lenet.alm").train(epochs=3, device=dev)
        res[f"train_{dev}"] = {"wall_s": time.perf_counter() - t0,
                               **{k: v for k, v in met.items() if not isinstance(v, (list, dict))}}
    # one test example may flip: the two devices round differently over 3 epochs of updates
    res["train_same_accuracy"] = abs(res["train_cuda"]["test_accuracy"] - res["train_cpu"]["test_accuracy"]) <= 1 / 300
    for k, v in res.items():
        print(k, v, flush=True)
        if (isinstance(v, dict) and not v.get("ok", True)) or v is False:
            failed.append(k)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cuda-check.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    print("cuda_check:", "FAILED " + ", ".join(failed) if failed else "all ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
