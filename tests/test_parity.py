"""The course's architectures against their reference implementations in PyTorch.

Every model in models/ has a PyTorch module written here: torchvision's own structure
and state_dict names where torchvision defines the model (AlexNet, VGG-16, GoogLeNet
without the auxiliary classifiers, ResNet-18 / -50 v1.5), the C3D port's names for C3D,
and a plain module (conv1, fc1, lstm, ...) for the others. For each model:

- names and shapes: the module's state_dict, minus PyTorch's num_batches_tracked, is
  exactly the model's parameters under almc/weights.py's name scheme, at full size (the
  modules are built on the meta device, so this allocates nothing), and so are the
  parameter counts;
- outputs: the module's weights (randomised, batch norm with random affine parameters and
  running statistics) go through `almc weights import` (state_dict -> almc checkpoint),
  almc's ONNX runs them in onnxruntime, and the outputs equal PyTorch's in eval mode to
  1e-4 relative; heavy models at a reduced input size, the full size marked slow;
- gradients: almc's training step against PyTorch autograd for ResNet-18 (3x32x32, 10
  classes), GoogLeNet's inception module and U-Net's first stage: the loss and every
  parameter's gradient to 1e-4 relative (LeNet, the MLP and the recurrent models are in
  test_train_parity.py).

"Relative" is relative to the largest magnitude of the compared tensor:
|almc - torch| <= 1e-4 * (|torch| + max |torch|). The measured figures are printed (-s).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import almc
from almc.init import param_specs
from almc.lower import lower
from almc.optim import training_step
from almc.runtime import run
from almc.weights import import_weights, name_map, write_checkpoint

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional
MODELS = Path(__file__).resolve().parent.parent / "models"
RTOL = 1e-4


# ---- torchvision's models, written out (torchvision is not a dependency) ----------------------

class AlexNet(nn.Module):
    """torchvision.models.AlexNet. `pool = False` leaves out AdaptiveAvgPool2d((6, 6)), which is
    the identity at 224 (as almc's model does at every size) and `features` sizes the first Linear."""

    def __init__(self, classes=1000, pool=True, features=256 * 6 * 6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6)) if pool else nn.Identity()
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(features, 4096), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class VGG16(nn.Module):
    """torchvision.models.vgg16 (configuration "D", no batch norm); `pool` as in AlexNet (7 x 7)."""

    def __init__(self, classes=1000, pool=True, features=512 * 7 * 7):
        super().__init__()
        layers, cin = [], 3
        for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7)) if pool else nn.Identity()
        self.classifier = nn.Sequential(
            nn.Linear(features, 4096), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(4096, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        # torchvision's "5x5" branch has a 3x3 kernel (pytorch/vision #906)
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """torchvision.models.GoogLeNet(aux_logits=False, transform_input=False)."""

    def __init__(self, classes=1000):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for m in "abcde":
            x = getattr(self, f"inception4{m}")(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, planes, stride), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5: the stride is on the 3x3 conv."""

    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = conv1x1(cin, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = conv1x1(planes, planes * 4), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """torchvision.models.ResNet."""

    def __init__(self, block, depths, classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, (planes, n) in enumerate(zip([64, 128, 256, 512], depths), 1):
            setattr(self, f"layer{i}", self._make_layer(block, planes, n, 1 if i == 1 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(classes=1000):
    return ResNet(BasicBlock, [2, 2, 2, 2], classes)


def resnet50(classes=1000):
    return ResNet(Bottleneck, [3, 4, 6, 3], classes)


# ---- the other models, as plain PyTorch modules ------------------------------------------------

def center_crop(x, like):
    """torchvision.transforms.functional.center_crop: start = round((in - out) / 2)."""
    h, w = like.shape[-2:]
    top, left = int(round((x.shape[-2] - h) / 2.0)), int(round((x.shape[-1] - w) / 2.0))
    return x[..., top:top + h, left:left + w]


class UNet(nn.Module):
    """Ronneberger, Fischer & Brox 2015, Fig. 1, as models/unet.alm: two valid 3x3 convs + ReLU per
    level, 2x2 max pools, 2x2 up-convolutions halving the channels, the skip connection
    centre-cropped and concatenated in front of the up-sampled map, a final 1x1 conv. Layers are
    attributes in forward order: conv1 .. conv19, upconv1 .. upconv4."""

    def __init__(self, channels=1, classes=2, widths=(64, 128, 256, 512)):
        super().__init__()
        self.widths, self.convs = list(widths), 0
        cin = channels
        for w in widths:
            cin = self._double(cin, w)
        cin = self._double(cin, widths[-1] * 2)
        for i, w in enumerate(reversed(widths), 1):
            setattr(self, f"upconv{i}", nn.ConvTranspose2d(cin, w, 2, stride=2))
            cin = self._double(2 * w, w)
        self._conv(cin, classes, 1)

    def _conv(self, cin, cout, k):
        self.convs += 1
        setattr(self, f"conv{self.convs}", nn.Conv2d(cin, cout, k))

    def _double(self, cin, cout):
        self._conv(cin, cout, 3)
        self._conv(cout, cout, 3)
        return cout

    def forward(self, x):
        k = iter(range(1, self.convs + 1))

        def double(x):
            x = F.relu(getattr(self, f"conv{next(k)}")(x))
            return F.relu(getattr(self, f"conv{next(k)}")(x))

        skips = []
        for _ in self.widths:
            x = double(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = double(x)
        for i, skip in enumerate(reversed(skips), 1):
            up = getattr(self, f"upconv{i}")(x)
            x = double(torch.cat([center_crop(skip, up), up], 1))
        return getattr(self, f"conv{next(k)}")(x)


class C3D(nn.Module):
    """Tran et al. 2015's Sports-1M C3D, as its common PyTorch port names it (conv1, conv2,
    conv3a .. conv5b, fc6 .. fc8; pool5 pads height and width by 1). Returns the logits (the port
    applies a softmax after fc8)."""

    def __init__(self, classes=487, features=8192):
        super().__init__()
        cin = 3
        for name, c in [("1", 64), ("2", 128), ("3a", 256), ("3b", 256), ("4a", 512), ("4b", 512),
                        ("5a", 512), ("5b", 512)]:
            setattr(self, f"conv{name}", nn.Conv3d(cin, c, 3, padding=1))
            cin = c
        self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        self.pool = nn.MaxPool3d(2, 2)
        self.pool5 = nn.MaxPool3d(2, 2, padding=(0, 1, 1))
        self.fc6, self.fc7, self.fc8 = nn.Linear(features, 4096), nn.Linear(4096, 4096), nn.Linear(4096, classes)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        for s in "34":
            x = self.pool(F.relu(getattr(self, f"conv{s}b")(F.relu(getattr(self, f"conv{s}a")(x)))))
        x = self.pool5(F.relu(self.conv5b(F.relu(self.conv5a(x)))))
        x = self.dropout(F.relu(self.fc6(x.flatten(1))))
        x = self.dropout(F.relu(self.fc7(x)))
        return self.fc8(x)


class LeNet5(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class MLP(nn.Module):
    def __init__(self, features=784, hidden=(256, 256), classes=10):
        super().__init__()
        sizes = [features, *hidden, classes]
        for i in range(len(sizes) - 1):
            setattr(self, f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))
        self.n = len(sizes) - 1

    def forward(self, x):
        for i in range(1, self.n):
            x = F.relu(getattr(self, f"fc{i}")(x))
        return getattr(self, f"fc{self.n}")(x)


class Recurrent(nn.Module):
    """The RNN / LSTM / GRU classifiers: one stacked nn.RNN / nn.LSTM / nn.GRU and a Linear on
    the last step's hidden state."""

    def __init__(self, kind, features=28, hidden=128, layers=1, classes=10):
        super().__init__()
        self.kind = kind
        setattr(self, kind, getattr(nn, kind.upper())(features, hidden, num_layers=layers, batch_first=True))
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        seq, _ = getattr(self, self.kind)(x)
        return self.fc(seq[:, -1])


class Logistic(nn.Linear):
    """nn.Linear(features, 1) whose output is the logit; the probability is its sigmoid."""

    def forward(self, x):
        logit = super().forward(x)
        return {"logit": logit, "prob": torch.sigmoid(logit)}


# ---- the cases ------------------------------------------------------------------------------------

# name -> (almc parameters for the run, torch module for them, input shape per example,
#          torch module at full size, full-size almc parameters, full-size input shape)
CASES = {
    "perceptron": ({}, lambda: nn.Linear(64, 1), (64,)),
    "logistic": ({}, lambda: Logistic(64, 1), (64,)),
    "linear_svm": ({}, lambda: nn.Linear(64, 10), (64,)),
    "ridge": ({}, lambda: nn.Linear(64, 1), (64,)),
    "mlp": ({}, MLP, (784,)),
    "lenet": ({}, LeNet5, (1, 32, 32)),
    "rnn": ({}, lambda: Recurrent("rnn"), (28, 28)),
    "lstm": ({}, lambda: Recurrent("lstm"), (28, 28)),
    "gru": ({}, lambda: Recurrent("gru"), (28, 28)),
    "lstm2": ({"layers": 2, "hidden": 32}, lambda: Recurrent("lstm", hidden=32, layers=2), (9, 28)),
    # reduced sizes (models/test_models.py's): the torchvision models without their adaptive pool,
    # which is the identity only at 224, and a first Linear sized for the smaller map
    "alexnet": ({"size": 127}, lambda: AlexNet(pool=False, features=256 * 3 * 3), (3, 127, 127)),
    "vgg16": ({"size": 64}, lambda: VGG16(pool=False, features=512 * 2 * 2), (3, 64, 64)),
    "googlenet": ({"size": 64}, GoogLeNet, (3, 64, 64)),
    "resnet18": ({"size": 64}, resnet18, (3, 64, 64)),
    "resnet50": ({"size": 64}, resnet50, (3, 64, 64)),
    "unet": ({"size": 188}, UNet, (1, 188, 188)),
    "c3d": ({"size": 32}, lambda: C3D(features=512 * 2 * 2), (3, 16, 32, 32)),
}
FULL = {  # the module at the model's default (published) size
    "alexnet": AlexNet, "vgg16": VGG16, "c3d": C3D,
    **{k: v[1] for k, v in CASES.items() if k not in ("alexnet", "vgg16", "c3d")},
}
FULL_INPUT = {"alexnet": (3, 224, 224), "vgg16": (3, 224, 224), "googlenet": (3, 224, 224),
              "resnet18": (3, 224, 224), "resnet50": (3, 224, 224), "unet": (1, 572, 572),
              "c3d": (3, 16, 112, 112)}
SLOW_FULL = ["alexnet", "googlenet", "resnet18", "resnet50", "vgg16", "unet", "c3d"]  # ~20 s or less each on 2 cores
FIGURES: dict[str, float] = {}


def model_file(name):
    return MODELS / f"{name.rstrip('0123456789') if name == 'lstm2' else name}.alm"


def load(name, **params):
    return almc.load(model_file(name), **params)


def built(make, seed=0):
    """The module, randomised; built on the meta device first, which skips PyTorch's own
    initialisation (every parameter and buffer is drawn by randomise)."""
    with torch.device("meta"):
        module = make()
    module = randomise(module.to_empty(device="cpu"), seed)
    assert all(torch.isfinite(v).all() for v in module.state_dict().values())
    return module


def randomise(module, seed=0):
    """He-normal weights (a signal that neither dies nor explodes through 16 layers), non-zero
    biases, and batch norm with random affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) else m.weight.shape[0] * 4
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.num_batches_tracked.fill_(1000)
            elif isinstance(m, (nn.RNN, nn.LSTM, nn.GRU)):
                for p in m.parameters():
                    p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / math.sqrt(m.hidden_size))
    return module.eval()


def expected_names(model) -> dict[str, tuple]:
    """The model's parameters under its name scheme, with their shapes (nothing allocated)."""
    names = name_map(model.graph)
    return {names[full]: tuple(p.shape) for _, full, p in param_specs(model.graph)}


def state_shapes(module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * max(np.abs(b).max(), 1e-6), err_msg=what)


def through_import(m, module, tmp_path, fmt):
    """The module's state_dict -> a weights file -> almc weights import -> checkpoint -> m."""
    sd = module.state_dict()
    path = tmp_path / f"weights.{fmt}"
    if fmt == "pt":
        torch.save(sd, path)
    else:
        np.savez(path, **{k: v.numpy() for k, v in sd.items()})
    weights, report = import_weights(m, path)
    assert report.exact, report.text()
    assert len(report.match.loaded) == len(weights)
    assert len(report.skipped) == sum(k.endswith("num_batches_tracked") for k in sd)
    ckpt = tmp_path / "imported.npz"
    write_checkpoint(ckpt, m, weights)
    m.load_weights(ckpt)
    return weights


def compare_outputs(name, m, module, per_example, tmp_path, fmt, batch=2, unfolded=False):
    through_import(m, module, tmp_path, fmt)
    x = np.random.default_rng(1).standard_normal((batch, *per_example)).astype(np.float32)
    got = m.run(x)
    with torch.no_grad():
        want = module(torch.from_numpy(x))
    if not isinstance(want, dict):
        want = {next(iter(m.outputs)): want}
    worst = 0.0
    for k, v in want.items():
        close(got[k], v.numpy(), f"{name}.{k}")
        worst = max(worst, relative(got[k], v.numpy()))
    note = ""
    if unfolded:  # almc folds batch norm into the conv before it by default; unfolded too
        plain, _ = run(m.compile(fold=False), {next(iter(m.inputs)): x}, device="cpu")
        for k, v in want.items():
            close(plain[k], v.numpy(), f"{name}.{k} with batch norm unfolded")
        note = f" (batch norm unfolded: {max(relative(plain[k], v.numpy()) for k, v in want.items()):.2e})"
    FIGURES[name] = worst
    print(f"\nparity {name} {list(x.shape)}: max relative difference {worst:.2e}{note}")
    return worst


# ---- tests ----------------------------------------------------------------------------------------

def test_every_model_has_a_reference():
    assert {p.stem for p in MODELS.glob("*.alm")} == {model_file(n).stem for n in CASES}


@pytest.mark.parametrize("name", sorted(FULL))
def test_names_shapes_and_parameter_count_at_full_size(name):
    params = {k: v for k, v in CASES[name][0].items() if k not in ("size",)}
    m = load(name, **params)
    with torch.device("meta"):
        module = FULL[name]()
    assert expected_names(m) == state_shapes(module)
    trainable = sum(p.numel() for p in module.parameters())
    assert m.summary().trainable_params == trainable


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_match_pytorch_eval_mode(name, tmp_path):
    params, make, per_example = CASES[name]
    module = built(make)
    compare_outputs(name, load(name, **params), module, per_example, tmp_path,
                    "pt" if name in ("resnet18", "lenet", "lstm") else "npz",
                    unfolded=name in ("googlenet", "resnet18", "resnet50"))


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_FULL)
def test_outputs_match_pytorch_at_full_size(name, tmp_path):
    module = built(FULL[name])
    compare_outputs(f"{name}@full", load(name), module, FULL_INPUT[name], tmp_path, "npz", batch=1)


# ---- gradients -------------------------------------------------------------------------------------

def almc_step(m, feeds, weights):
    """loss, gradients and updated buffers of almc's training step, as in test_train_parity.py."""
    g, sig = training_step(m.graph)
    proto = lower(g, params_as_inputs=True)
    names = {i.name for i in proto.graph.input}
    state = {k: np.zeros(s, np.float32) for k, s in sig.state.items()}
    all_feeds = {**feeds, **weights, **state, "epoch": np.array(1.0, np.float32), "step": np.array(0.0, np.float32)}
    out, _ = run(proto, {k: v for k, v in all_feeds.items() if k in names}, device="cpu")
    return out, sig


def compare_gradients(what, m, module, x, y, tmp_path, names="auto"):
    """One training step of almc against autograd (float64, train mode: batch statistics)."""
    weights = through_import(m, module, tmp_path, "npz") if names == "auto" else None
    if weights is None:
        np.savez(tmp_path / "w.npz", **{k: v.numpy() for k, v in module.state_dict().items()})
        weights, report = import_weights(m, tmp_path / "w.npz", names)
        assert report.exact, report.text()
    out, sig = almc_step(m, {m.graph.inputs[0]: x, "label": y}, weights)
    ref = module.double().train()
    loss = F.cross_entropy(ref(torch.from_numpy(x).double()), torch.from_numpy(y))
    ref.zero_grad()
    loss.backward()
    to_torch = name_map(m.graph, names)
    params = dict(ref.named_parameters())
    buffers = dict(ref.named_buffers())
    close(out["loss"], loss.item(), "loss")
    worst = relative(out["loss"], loss.item())
    assert set(sig.trainable) == {k for k in weights if not k.endswith(("running_mean", "running_var"))}
    for k in sig.trainable:
        want = params[to_torch[k]].grad.numpy()
        close(out[f"grad.{k}"], want, f"grad.{k} ({to_torch[k]})")
        worst = max(worst, relative(out[f"grad.{k}"], want))
    stats = [k for k in weights if k.endswith(("running_mean", "running_var"))]
    for k in stats:  # the running statistics after the step, updated as PyTorch updates them
        close(out[f"next.{k}"], buffers[to_torch[k]].numpy(), f"next.{k}")
    FIGURES[f"grad {what}"] = worst
    print(f"\ngradients {what}: loss and {len(sig.trainable)} gradients, {len(stats)} running statistics; "
          f"max relative difference {worst:.2e}")


TRAIN = """
train {model} {{
    input label: i64[N]
    minimize mean(cross_entropy(logits, label))
    optimizer sgd(lr = 0.1)
}}
"""


def test_resnet18_gradients_match_pytorch(tmp_path):
    text = (MODELS / "resnet18.alm").read_text() + TRAIN.format(model="ResNet18")
    m = almc.load(text, classes=10, size=32)
    torch.manual_seed(1)
    module = randomise(resnet18(classes=10))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    compare_gradients("ResNet-18 3x32x32", m, module, x, y, tmp_path)


INCEPTION = """import "std/inception.alm"
model InceptionNet {
    input x: f32[N, 12, 7, 7]
    y = inception(x, 4, 6, 8, 3, 5, 2)
    output logits = global_avgpool(y) |> flatten |> dense(5)
}
""" + TRAIN.format(model="InceptionNet")


class InceptionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.inception3a = Inception(12, 4, 6, 8, 3, 5, 2)
        self.fc = nn.Linear(19, 5)

    def forward(self, x):
        return self.fc(self.inception3a(x).mean(dim=(2, 3)))


def test_inception_module_gradients_match_pytorch(tmp_path):
    m = almc.load(INCEPTION)
    torch.manual_seed(2)
    module = randomise(InceptionNet())
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 12, 7, 7)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    compare_gradients("inception module", m, module, x, y, tmp_path, names="torchvision")


class UNetStage(nn.Module):
    """U-Net's first level: double_conv (two valid 3x3 convs + ReLU) and the 2x2 max pool."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc(x.mean(dim=(2, 3)))


def test_unet_first_stage_gradients_match_pytorch(tmp_path):
    text = (MODELS / "unet.alm").read_text() + """
model UNetStage {
    input image: f32[N, 1, 20, 20]
    skip, x = contract(image, 8)
    output logits = global_avgpool(x) |> flatten |> dense(3)
}
""" + TRAIN.format(model="UNetStage")
    m = almc.load(text, model="UNetStage")
    torch.manual_seed(3)
    module = randomise(UNetStage())
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 1, 20, 20)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    compare_gradients("U-Net first stage", m, module, x, y, tmp_path, names="pytorch")
