"""The benchmark's PyTorch references: LeNet-5, the MLP and torchvision-equivalent
ResNet-18/50, the modules of tests/torch_reference.py (which tests/test_parity.py
checks against almc by name, shape, output and gradient).

The ResNets follow torchvision.models.resnet (v1.5) and register their modules
in torchvision's order, which is also the order of almc's parameters for
models/resnet{18,50}.alm. So almc's weights map onto `state_dict()` position by
position (`load_almc_weights`), checked by shape.

Imports only torch and numpy (the training-step subprocess loads weights from a
.npz without importing almc or onnxruntime).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from torch_reference import MLP, LeNet5, resnet18, resnet50  # noqa: E402

# arch -> (constructor(classes), the .alm file, input shape without the batch)
ARCHS = {
    "lenet": (lambda classes=10: LeNet5(classes), "models/lenet.alm", (1, 32, 32)),
    "mlp": (lambda classes=10: MLP(classes=classes), "models/mlp.alm", (784,)),
    "resnet18": (resnet18, "models/resnet18.alm", (3, 224, 224)),
    "resnet50": (resnet50, "models/resnet50.alm", (3, 224, 224)),
}


def build(arch: str, classes: int | None = None) -> nn.Module:
    ctor = ARCHS[arch][0]
    return ctor() if classes is None else ctor(classes)


def torch_entries(module: nn.Module) -> list[str]:
    """The state_dict keys that almc has a counterpart for (not num_batches_tracked)."""
    return [k for k in module.state_dict() if not k.endswith("num_batches_tracked")]


def load_almc_weights(module: nn.Module, weights: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """Copy almc's weights (name -> array, in almc's order) into `module` by position,
    checking every shape; returns the (almc name, torch name) pairs."""
    keys = torch_entries(module)
    names = list(weights)
    if len(keys) != len(names):
        raise ValueError(f"almc has {len(names)} parameters and buffers, torch {len(keys)}")
    sd = module.state_dict()
    pairs = []
    with torch.no_grad():
        for a, t in zip(names, keys):
            w = np.asarray(weights[a], np.float32)
            if tuple(w.shape) != tuple(sd[t].shape):
                raise ValueError(f"shape mismatch: almc {a} {w.shape} vs torch {t} {tuple(sd[t].shape)}")
            sd[t].copy_(torch.from_numpy(w))
            pairs.append((a, t))
    return pairs
