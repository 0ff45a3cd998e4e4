"""`almc compile --train` as a user runs it, in a fresh process, cold (an empty ~/.cache/almc, as on
a fresh machine or in CI) and warm, for ResNet-18 and the depthwise EfficientNet-B0, with the
step's node count per target:

    python bench/compile_train.py            # median of 3 runs each, on 224 x 224 inputs

The models are models/NAME.alm with a cross-entropy training section appended (the files have none).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"resnet18": "ResNet18", "efficientnet_b0": "EfficientNet_B0"}
TRAIN = "\ntrain {model} {{\n    input label: i64[N]\n    minimize mean(cross_entropy(logits, label))\n" \
        "    optimizer sgd(lr = 0.1, momentum = 0.9)\n}}\n"


def compile_once(src: Path, out: Path, cache: Path, target: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "almc", "compile", str(src), "--train", "--target", target, "-o", str(out)],
                   check=True, stdout=subprocess.DEVNULL, env={"XDG_CACHE_HOME": str(cache), "PATH": "/usr/bin:/bin"})
    return time.perf_counter() - t


def main() -> None:
    print("| model | target | nodes | cold s | warm s |\n|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, model in MODELS.items():
            src = tmp / f"{name}.alm"
            src.write_text((ROOT / "models" / f"{name}.alm").read_text()
                           + TRAIN.format(model=model))
            for target in ("portable", "cpu", "cuda"):
                cold, warm = [], []
                for k in range(3):
                    cache = tmp / f"cache-{name}-{target}-{k}"  # empty: cold
                    cold.append(compile_once(src, tmp / "step.onnx", cache, target))
                    warm.append(compile_once(src, tmp / "step.onnx", cache, target))
                nodes = len(onnx.load(tmp / "step.onnx", load_external_data=False).graph.node)
                print(f"| {name} | {target} | {nodes} | {statistics.median(cold):.2f} | {statistics.median(warm):.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
