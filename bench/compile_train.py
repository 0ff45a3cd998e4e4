"""`almc compile --train` as a user runs it, in a fresh process, cold (an empty ~/.cache/almc, as on
a fresh machine or in CI) and warm, for ResNet-18 and the depthwise EfficientNet-B0, with the
step's node count per target:

    python bench/compile_train.py            # median of 3 runs each, on 224 x 224 inputs

The models are models/NAME.alm with a cross-entropy training section appended (the files have none).
It writes bench/results-compile-train.json and, where bench/run.py has run, its section of RESULTS.md.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import document, render_compile_train, sections  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MODELS = {"resnet18": "ResNet18", "efficientnet_b0": "EfficientNet_B0"}
TRAIN = "\ntrain {model} {{\n    input label: i64[N]\n    minimize mean(cross_entropy(logits, label))\n" \
        "    optimizer sgd(lr = 0.1, momentum = 0.9)\n}}\n"


def compile_once(src: Path, out: Path, cache: Path, target: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "almc", "compile", str(src), "--train", "--target", target, "-o", str(out)],
                   check=True, stdout=subprocess.DEVNULL, env={"XDG_CACHE_HOME": str(cache), "PATH": "/usr/bin:/bin"})
    return time.perf_counter() - t


def main() -> None:
    import onnxruntime

    runs, rows = 3, []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, model in MODELS.items():
            src = tmp / f"{name}.alm"
            src.write_text((ROOT / "models" / f"{name}.alm").read_text() + TRAIN.format(model=model))
            for target in ("portable", "cpu", "cuda"):
                cold, warm = [], []
                for k in range(runs):
                    cache = tmp / f"cache-{name}-{target}-{k}"  # empty: cold
                    cold.append(compile_once(src, tmp / "step.onnx", cache, target))
                    warm.append(compile_once(src, tmp / "step.onnx", cache, target))
                nodes = len(onnx.load(tmp / "step.onnx", load_external_data=False).graph.node)
                rows.append({"model": name, "target": target, "nodes": nodes,
                             "cold_s": statistics.median(cold), "warm_s": statistics.median(warm)})
                print(rows[-1], flush=True)
    res = {"command": "python bench/compile_train.py", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "versions": f"Python {platform.python_version()}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}",
           "runs": runs, "rows": rows}
    (BENCH / "results-compile-train.json").write_text(json.dumps(res, indent=1) + "\n")
    print(render_compile_train(res))
    if (BENCH / "results.json").exists():  # RESULTS.md: run.py's last run, then the other sections
        (BENCH / "RESULTS.md").write_text(document(json.loads((BENCH / "results.json").read_text()), *sections(BENCH)))


if __name__ == "__main__":
    main()
