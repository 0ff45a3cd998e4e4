"""Export one of bench/torch_models.py's modules to ONNX, as a user's script would.

    python bench/export_torch.py resnet18 --exporter torchscript -o r18.onnx
    bench/.venv-dynamo/bin/python bench/export_torch.py resnet18 --exporter dynamo -o r18.onnx

bench/run.py times this whole process (interpreter start, `import torch`,
building the module with its random initialisation, the export, writing the
file) against `almc compile models/ARCH.alm -o OUT`. Both keep the batch
dimension dynamic and write one self-contained file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def export(module, arch: str, path, exporter: str, example_batch: int = 2) -> None:
    """The export call that bench/run.py times in-process too."""
    import torch
    from torch_models import ARCHS

    x = torch.zeros(example_batch, *ARCHS[arch][2])  # batch 2: torch.export specialises sizes 0 and 1
    if exporter == "torchscript":
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    elif exporter == "dynamo":
        torch.onnx.export(module, (x,), str(path), dynamo=True, input_names=["image"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("N")},), external_data=False, verbose=False)
    else:
        raise ValueError(f"unknown exporter {exporter!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("arch")
    ap.add_argument("--exporter", choices=["torchscript", "dynamo"], required=True)
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    from torch_models import build

    export(build(args.arch).eval(), args.arch, args.out, args.exporter)


if __name__ == "__main__":
    main()
