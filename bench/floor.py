"""The floor under `almc compile ARCH`: what any compile with almc's libraries must do, and nothing else.

    python bench/floor.py SHAPES.json -o OUT

A fresh interpreter imports the four libraries almc compiles with (numpy, networkx, onnx,
lark), draws a He-normal value for every weight of the model, in the model's own shapes,
with almc's own sampler and threads (`almc.init.draw_all`), and writes them with almc's own
atomic write (`almc.files`, fsync included). No parsing, no graph, no shape inference, no lowering, no
checker, no ONNX framing. bench/run.py times it beside `almc compile`: the difference is what
almc's passes cost, and the floor over the torch exporter's time is the best ratio any compile
written on these libraries could reach on this machine.

SHAPES.json is {name: shape} for one architecture (bench/run.py writes it from the model).
"""
from __future__ import annotations

import argparse
import json
import sys

import lark  # noqa: F401  (each import is part of the floor)
import networkx  # noqa: F401
import numpy as np
import onnx  # noqa: F401

from almc.files import atomic_write
from almc.init import draw_all


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    with open(args.shapes) as f:
        shapes = json.load(f)
    # He normal for every weight, and the constants almc gives biases and batch-norm vectors
    specs = [(name, "he" if len(shape) >= 2 else "zeros", tuple(shape), int(np.prod(shape[1:])), shape[0])
             for name, shape in shapes.items()]
    arrays = draw_all(specs)
    atomic_write(args.output, [a.data for a in arrays.values()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
