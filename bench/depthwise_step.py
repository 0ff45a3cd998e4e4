"""The depthwise network's training step against PyTorch eager on the CPU: models/efficientnet_b0.alm
at 3x64x64, 10 classes, batch 32, SGD with momentum 0.9 (a cross-entropy training section
appended), run by almc.runner.StepRunner as `almc train` runs it (the cpu target), against
tests/torch_reference.py's EfficientNet-B0 with torch.optim.SGD; both on 2 threads, alternating
rounds of 3 steps in one process after 3 warm-up steps each:

    python bench/depthwise_step.py [--rounds 8] [--target cpu]

Only speed is measured here (the steps are not compared: tests/test_train_parity.py and
tests/test_parity.py check almc's numbers against PyTorch's).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
TRAIN = ("\ntrain EfficientNet_B0 {\n    input label: i64[N]\n    minimize mean(cross_entropy(logits, label))\n"
         "    optimizer sgd(lr = 0.01, momentum = 0.9)\n}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--target", choices=("portable", "cpu", "cuda"), default="cpu")
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F
    from torch_reference import efficientnet_b0

    import almc
    from almc.compiler import compile_step
    from almc.runner import StepRunner
    from almc.runtime import session

    torch.set_num_threads(2)
    m = almc.load((ROOT / "models" / "efficientnet_b0.alm").read_text() + TRAIN, size=64, classes=10)
    c = compile_step(m.graph, gradients=False, target=args.target, checked=False)
    runner = StepRunner(session(c.proto.SerializeToString(), "cpu", threads=2, memory_pattern=False), c,
                        m.initial_weights(0), {k: np.zeros(s, np.float32) for k, s in c.signature.state.items()}, "cpu")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 3, 64, 64)).astype(np.float32), rng.integers(0, 10, 32)
    module = efficientnet_b0(classes=10).train()
    opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    count = [0]

    def almc_step():
        runner.run({"image": x, "label": y}, 0.5, count[0])
        count[0] += 1

    def torch_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(module(xt), yt).backward()
        opt.step()

    times = {almc_step: [], torch_step: []}
    for f in times:
        for _ in range(3):
            f()
    for _ in range(args.rounds):
        for f, ts in times.items():
            t = time.perf_counter()
            for _ in range(3):
                f()
            ts.append((time.perf_counter() - t) / 3)
    a, t = (statistics.median(ts) * 1e3 for ts in times.values())
    print(f"EfficientNet-B0 3x64x64, batch 32, {args.target} step of {len(c.proto.graph.node)} nodes: "
          f"almc {a:.1f} ms, PyTorch eager {t:.1f} ms, almc / PyTorch {a / t:.2f}")


if __name__ == "__main__":
    main()
