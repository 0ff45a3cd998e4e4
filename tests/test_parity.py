"""The course's architectures against their reference implementations in PyTorch.

Every model in models/ has a PyTorch module in tests/torch_reference.py: torchvision's own structure
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
from almc.checkpoint import write_checkpoint
from almc.graph import param_specs
from almc.lower import lower
from almc.naming import name_map
from almc.runtime import run
from almc.step import training_step
from almc.weights import import_weights

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional
MODELS = Path(__file__).resolve().parent.parent / "models"
RTOL = 1e-4

from torch_reference import (  # noqa: E402  (torch is there: after the importorskip)
    C3D,
    MLP,
    VGG16,
    AlexNet,
    GoogLeNet,
    Inception,
    LeNet5,
    Logistic,
    Recurrent,
    UNet,
    efficientnet_b0,
    resnet18,
    resnet50,
    vit_b_16,
    vit_digits,
)

# ---- the cases ------------------------------------------------------------------------------------

VIT_SMALL = {"size": 32, "patch": 8, "dim": 64, "heads": 4, "mlp": 128, "depth": 2}
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
    # reduced sizes, the adaptive pool's output too (to keep the classifier small): AlexNet pools its
    # 3 x 3 map to 2 x 2 (overlapping windows), VGG its 2 x 2 map to 3 x 3 (windows repeat inputs)
    "alexnet": ({"size": 127, "pooled": 2}, lambda: AlexNet(pooled=2), (3, 127, 127)),
    "vgg16": ({"size": 64, "pooled": 3}, lambda: VGG16(pooled=3), (3, 64, 64)),
    "googlenet": ({"size": 64}, GoogLeNet, (3, 64, 64)),
    "resnet18": ({"size": 64}, resnet18, (3, 64, 64)),
    "resnet50": ({"size": 64}, resnet50, (3, 64, 64)),
    "unet": ({"size": 188}, UNet, (1, 188, 188)),
    "c3d": ({"size": 32}, lambda: C3D(features=512 * 2 * 2), (3, 16, 32, 32)),
    # ViT: 4 x 4 patches of 8 x 8, two narrower encoder layers; EfficientNet-B0 whole, at 64 x 64
    "vit_b_16": (VIT_SMALL, lambda: vit_b_16(**VIT_SMALL), (3, 32, 32)),
    "efficientnet_b0": ({"size": 64}, efficientnet_b0, (3, 64, 64)),
    "vit_digits": ({}, vit_digits, (1, 16, 16)),
}
REDUCED = ("size", "pooled", *VIT_SMALL)  # the run's parameters that change no name or shape at full size
FULL = {  # the module at the model's default (published) size
    "alexnet": AlexNet, "vgg16": VGG16, "c3d": C3D, "vit_b_16": vit_b_16,
    **{k: v[1] for k, v in CASES.items() if k not in ("alexnet", "vgg16", "c3d", "vit_b_16")},
}
FULL_INPUT = {"alexnet": (3, 224, 224), "vgg16": (3, 224, 224), "googlenet": (3, 224, 224),
              "resnet18": (3, 224, 224), "resnet50": (3, 224, 224), "unet": (1, 572, 572),
              "c3d": (3, 16, 112, 112), "vit_b_16": (3, 224, 224), "efficientnet_b0": (3, 224, 224)}
SLOW_FULL = ["alexnet", "googlenet", "resnet18", "resnet50", "vgg16", "unet", "c3d", "vit_b_16", "efficientnet_b0"]  # ~20 s or less each on 2 cores
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
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            elif isinstance(m, nn.MultiheadAttention):  # its out_proj is a Linear, handled above
                m.in_proj_weight.copy_(torch.randn(m.in_proj_weight.shape, generator=g) / math.sqrt(m.embed_dim))
                m.in_proj_bias.copy_(torch.randn(m.in_proj_bias.shape, generator=g) * 0.1)
            else:  # free tensors (ViT's class token and positional embedding)
                for p in m.parameters(recurse=False):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
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
    write_checkpoint(ckpt, m.graph, weights)
    m.load_weights(ckpt)
    return weights


def compare_outputs(name, m, module, per_example, tmp_path, fmt, batch=2, unfolded=False, double=False):
    """double: compare with the module in float64, where PyTorch's own float32 result is itself
    too far from the exact one for the tolerance (EfficientNet-B0's 49 layers at 224 x 224)."""
    through_import(m, module, tmp_path, fmt)
    x = np.random.default_rng(1).standard_normal((batch, *per_example)).astype(np.float32)
    got = m.run(x)
    with torch.no_grad():
        want = module.double()(torch.from_numpy(x).double()) if double else module(torch.from_numpy(x))
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
    params = {k: v for k, v in CASES[name][0].items() if k not in REDUCED}
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
                    unfolded=name in ("googlenet", "resnet18", "resnet50", "efficientnet_b0"))


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_FULL)
def test_outputs_match_pytorch_at_full_size(name, tmp_path):
    module = built(FULL[name])
    compare_outputs(f"{name}@full", load(name), module, FULL_INPUT[name], tmp_path, "npz", batch=1,
                    double=name == "efficientnet_b0")


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


# ResNeXt and Wide ResNet: models/resnet50.alm with torchvision's groups and width_per_group
WIDE = {"resnext50_32x4d": ({"groups": 32, "width_per_group": 4}, 25_028_904),
        "wide_resnet50_2": ({"groups": 1, "width_per_group": 128}, 68_883_240)}


@pytest.mark.parametrize("variant", sorted(WIDE))
def test_resnet50_variants_have_torchvision_names_and_counts(variant):
    params, count = WIDE[variant]
    m = load("resnet50", **params)
    with torch.device("meta"):
        module = resnet50_variant(**params)
    assert expected_names(m) == state_shapes(module)
    assert m.summary().trainable_params == sum(p.numel() for p in module.parameters()) == count


@pytest.mark.slow
def test_resnext_matches_torch_at_64(tmp_path):
    params = WIDE["resnext50_32x4d"][0]
    m = load("resnet50", size=64, classes=10, **params)
    compare_outputs("resnext50_32x4d", m, built(lambda: resnet50_variant(classes=10, **params)), (3, 64, 64),
                    tmp_path, "npz")


def resnet50_variant(classes=1000, groups=1, width_per_group=64):
    from torch_reference import Bottleneck, ResNet

    return ResNet(Bottleneck, [3, 4, 6, 3], classes, groups=groups, width_per_group=width_per_group)
