"""What a training step holds at its peak: a liveness replay of one step as onnxruntime ran it.

    python bench/step_memory.py resnet18 [--top 15]

Runs the benchmark's step (bench/workers.py: AlmcStep, the way `almc train` runs it) under
onnxruntime's profiler, takes the order in which the last step's kernels ran and the size of
each node's output from the profile, and the consumers of each value from the optimised graph
that session ran (saved with `optimized_model_filepath`). Replaying that order,
a value is live from its node until its last reader; views (Reshape, Flatten, Squeeze,
Unsqueeze, Identity) share their input's buffer; the step's inputs and outputs are the
caller's (the parameters and optimiser state, bound in place) and not counted. Prints the
peak, the node it falls on, what is live there by layer, and the largest live values.

The replay counts intermediates only: onnxruntime's arena holds a little more (its chunks
are not a perfect fit), and the process holds the parameters, the optimiser state, the
libraries and the session besides (docs/performance.md, Memory).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

VIEWS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def replay(order: list[str], nodes: dict, out_bytes: dict[str, int], caller_owned: set[str]) -> dict:
    """Peak of the live intermediates over `order` (node names), with what is live there."""
    pos = {n: i for i, n in enumerate(order)}
    producer, root = {}, {}
    for n in order:
        node = nodes[n]
        for o in node.output:
            producer[o] = n
            view = node.op_type in VIEWS and node.input[0] in producer
            root[o] = root[node.input[0]] if view else o
    last_read = {}
    for n in order:
        for i in nodes[n].input:
            if i in producer:
                last_read[root[i]] = max(last_read.get(root[i], -1), pos[n])
    kept = {root[o] for o in caller_owned if o in root}
    live, total = {}, 0
    peak = {"bytes": 0, "node": None, "live": {}}
    for k, n in enumerate(order):
        node = nodes[n]
        if node.op_type not in VIEWS:
            outs = [o for o in node.output if o]
            for o in outs:
                if o not in caller_owned:
                    live[o] = out_bytes.get(n, 0) / len(outs)
                    total += live[o]
        if total > peak["bytes"]:
            peak = {"bytes": total, "node": n, "live": dict(live)}
        for r in [r for r in live if r not in kept and last_read.get(r, -1) <= k]:
            total -= live.pop(r)
    peak["producer"] = producer
    peak["op"] = {o: nodes[producer[o]].op_type for o in peak["live"]}
    return peak


def layer_of(node_name: str) -> str:
    """'grad/layer3/x/unit1/...' -> 'grad/layer3', 'layer2/x/...' -> 'layer2'."""
    parts = node_name.split("/")
    return "/".join(parts[:2]) if parts[0] in ("grad", "update") and len(parts) > 1 else parts[0]


def main() -> int:
    import numpy as np
    import onnx
    import run
    import workers
    from config import TRAIN_MODELS

    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=sorted(TRAIN_MODELS))
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        run.prepare(wd, [], [args.model])
        cfg = workers.load_train_config(wd, args.model)
        data = np.load(wd / f"train_{args.model}_data.npz")
        weights = dict(np.load(wd / f"train_{args.model}_weights.npz"))
        batches = [(np.ascontiguousarray(x), np.ascontiguousarray(y)) for x, y in zip(data["x"], data["y"])]
        step = workers.AlmcStep(cfg, weights, "cpu", 2, profile=str(wd / "prof"), optimized=str(wd / "optimised.onnx"))
        for k in range(3):
            step.step(*batches[k % len(batches)], (k + 1) / 40, k)
        events = json.loads(Path(step.sess.end_profiling()).read_text())
        graph = onnx.load(str(wd / "optimised.onnx")).graph  # what this session ran
    first, last = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-1]
    kernels = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                      and first <= e["ts"] <= last), key=lambda e: e["ts"])
    order = [e["name"][:-len("_kernel_time")] for e in kernels]
    out_bytes = {e["name"][:-len("_kernel_time")]: int(e["args"].get("output_size", 0)) for e in kernels}
    nodes = {n.name: n for n in graph.node}
    unknown = [n for n in order if n not in nodes]
    if unknown:
        raise SystemExit(f"{len(unknown)} profiled nodes are not in the optimised graph (first: {unknown[0]})")
    caller_owned = {v.name for v in graph.input} | {v.name for v in graph.output} | {t.name for t in graph.initializer}
    peak = replay(order, nodes, out_bytes, caller_owned)
    mib = 2 ** 20
    print(f"{args.model}: {len(order)} kernels; live intermediates peak at {peak['bytes'] / mib:.1f} MiB, "
          f"at kernel {order.index(peak['node']) + 1} ({peak['node']})")
    by_layer = defaultdict(float)
    for o, b in peak["live"].items():
        by_layer[layer_of(peak["producer"][o])] += b
    print("\nlive at the peak, by layer (MiB):")
    for name, b in sorted(by_layer.items(), key=lambda kv: -kv[1]):
        if b >= mib / 100:
            print(f"  {b / mib:7.2f}  {name}")
    print(f"\nthe {args.top} largest live values (MiB):")
    for o, b in sorted(peak["live"].items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {b / mib:7.2f}  {peak['op'][o]:<12} {o}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
