"""The benchmark's PyTorch references: LeNet-5, the MLP and torchvision-equivalent
ResNet-18/50, written here so that torchvision is not needed.

The ResNets follow torchvision.models.resnet (v1.5: the stride on the
bottleneck's 3x3 conv; bias-free convs, batch norm eps 1e-5, the downsample a
1x1 conv + batch norm) and register their modules in torchvision's order, which
is also the order of almc's parameters for models/resnet{18,50}.alm. So almc's
weights map onto `state_dict()` position by position (`load_almc_weights`),
checked by shape.

Imports only torch and numpy (the training-step subprocess loads weights from a
.npz without importing almc or onnxruntime).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.c5 = nn.Linear(16 * 5 * 5, 120)
        self.f6 = nn.Linear(120, 84)
        self.logits = nn.Linear(84, classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.c3(x)), 2).flatten(1)
        x = torch.relu(self.c5(x))
        x = torch.relu(self.f6(x))
        return self.logits(x)


class MLP(nn.Module):
    def __init__(self, features: int = 784, hidden=(256, 256), classes: int = 10):
        super().__init__()
        layers, width = [], features
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            width = units
        layers.append(nn.Linear(width, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers, classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(classes: int = 1000) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], classes)


def resnet50(classes: int = 1000) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], classes)


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
