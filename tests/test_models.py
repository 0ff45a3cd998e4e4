"""End-to-end tests of the model zoo in models/*.alm.

For every model file:
- it loads (parse, build, validate) and its declared outputs at the default
  (full) size are the ones the paper / torchvision gives;
- it runs in onnxruntime at batch 1 and batch 2 (a reduced input size for the
  heavy image models, where the architecture allows one), the outputs have the
  expected shapes and are finite, batch 2's first row equals batch 1's, and
  batch 2 agrees with the independent numpy reference executor;
- its trainable parameter count at full size is exact: the published
  torchvision numbers for the torchvision models, and for the others a count
  written out below layer by layer (summary allocates no weights, so this is cheap).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import almc
from almc.reference import execute

MODELS = Path(__file__).resolve().parent.parent / "models"

# name -> (parameters for the run test, input shape per example, output shapes per example)
RUN = {
    "perceptron": ({}, (64,), {"score": (1,)}),
    "logistic": ({}, (64,), {"logit": (1,), "prob": (1,)}),
    "linear_svm": ({}, (64,), {"scores": (10,)}),
    "ridge": ({}, (64,), {"y": (1,)}),
    "mlp": ({}, (784,), {"logits": (10,)}),
    "lenet": ({}, (1, 32, 32), {"logits": (10,)}),
    "rnn": ({}, (28, 28), {"logits": (10,)}),
    "lstm": ({}, (28, 28), {"logits": (10,)}),
    "gru": ({}, (28, 28), {"logits": (10,)}),
    # reduced sizes: AlexNet and VGG-16 pool their smaller map (3x3, 2x2) to a smaller grid (2x2, 3x3),
    # C3D feeds its classifier the smaller map (2x2); the conv layers are unchanged
    "alexnet": ({"size": 127, "pooled": 2}, (3, 127, 127), {"logits": (1000,)}),
    "vgg16": ({"size": 64, "pooled": 3}, (3, 64, 64), {"logits": (1000,)}),
    "googlenet": ({"size": 64}, (3, 64, 64), {"logits": (1000,)}),
    "resnet18": ({"size": 64}, (3, 64, 64), {"logits": (1000,)}),
    "resnet50": ({"size": 64}, (3, 64, 64), {"logits": (1000,)}),
    "unet": ({"size": 188}, (1, 188, 188), {"logits": (2, 4, 4)}),  # 188: the smallest valid U-Net tile
    "c3d": ({"size": 32}, (3, 16, 32, 32), {"logits": (487,)}),
    "vit_b_16": ({"size": 32, "patch": 8, "dim": 64, "heads": 4, "mlp": 128, "depth": 2}, (3, 32, 32),
                 {"logits": (1000,)}),
    "efficientnet_b0": ({"size": 64}, (3, 64, 64), {"logits": (1000,)}),
    "vit_digits": ({}, (1, 16, 16), {"logits": (10,)}),
}

SLOW = {"alexnet", "vgg16", "unet", "c3d"}  # > 2 s each on a 2-core CPU (weights, session, reference)

# declared types at the default parameters (full size)
FULL = {
    "perceptron": ({"x": "f32[N, 64]"}, {"score": "f32[N, 1]"}),
    "logistic": ({"x": "f32[N, 64]"}, {"logit": "f32[N, 1]", "prob": "f32[N, 1]"}),
    "linear_svm": ({"x": "f32[N, 64]"}, {"scores": "f32[N, 10]"}),
    "ridge": ({"x": "f32[N, 64]"}, {"y": "f32[N, 1]"}),
    "mlp": ({"image": "f32[N, 784]"}, {"logits": "f32[N, 10]"}),
    "lenet": ({"image": "f32[N, 1, 32, 32]"}, {"logits": "f32[N, 10]"}),
    "rnn": ({"seq": "f32[N, T, 28]"}, {"logits": "f32[N, 10]"}),
    "lstm": ({"seq": "f32[N, T, 28]"}, {"logits": "f32[N, 10]"}),
    "gru": ({"seq": "f32[N, T, 28]"}, {"logits": "f32[N, 10]"}),
    "alexnet": ({"image": "f32[N, 3, 224, 224]"}, {"logits": "f32[N, 1000]"}),
    "vgg16": ({"image": "f32[N, 3, 224, 224]"}, {"logits": "f32[N, 1000]"}),
    "googlenet": ({"image": "f32[N, 3, 224, 224]"}, {"logits": "f32[N, 1000]"}),
    "resnet18": ({"image": "f32[N, 3, 224, 224]"}, {"logits": "f32[N, 1000]"}),
    "resnet50": ({"image": "f32[N, 3, 224, 224]"}, {"logits": "f32[N, 1000]"}),
    "unet": ({"image": "f32[N, 1, 572, 572]"}, {"logits": "f32[N, 2, 388, 388]"}),
    "c3d": ({"clip": "f32[N, 3, 16, 112, 112]"}, {"logits": "f32[N, 487]"}),
    "vit_b_16": ({"image": "f32[N, 3, 224, 224]"}, {"logits": "f32[N, 1000]"}),
    "efficientnet_b0": ({"image": "f32[N, 3, 224, 224]"}, {"logits": "f32[N, 1000]"}),
    "vit_digits": ({"image": "f32[N, 1, 16, 16]"}, {"logits": "f32[N, 10]"}),
}


# ---- independent parameter counts -------------------------------------------

def conv(cin, cout, k, dims=2, bias=True):
    return cout * cin * k ** dims + (cout if bias else 0)


def dense(fin, fout):
    return fin * fout + fout


def recurrent(gates, features, hidden):
    # PyTorch: weight_ih, weight_hh and two bias vectors per gate
    return gates * hidden * (features + hidden + 2)


def unet_params():
    n, cin = 0, 1
    for c in (64, 128, 256, 512, 1024):  # contracting path and bottom: two valid 3x3 convs
        n += conv(cin, c, 3) + conv(c, c, 3)
        cin = c
    for c in (512, 256, 128, 64):  # 2x2 up-conv halving channels, then two 3x3 convs on the concat
        n += conv(cin, c, 2) + conv(2 * c, c, 3) + conv(c, c, 3)
        cin = c
    return n + conv(64, 2, 1)


def vit_params(channels, size, patch, dim, depth, mlp, classes):
    tokens = (size // patch) ** 2
    layer = 2 * 2 * dim + dense(dim, 3 * dim) + dense(dim, dim) + dense(dim, mlp) + dense(mlp, dim)
    return conv(channels, dim, patch) + dim + (tokens + 1) * dim + depth * layer + 2 * dim + dense(dim, classes)


def c3d_params():
    widths = [64, 128, 256, 256, 512, 512, 512, 512]
    n = sum(conv(cin, c, 3, dims=3) for cin, c in zip([3] + widths, widths))
    return n + dense(512 * 1 * 4 * 4, 4096) + dense(4096, 4096) + dense(4096, 487)


TRAINABLE = {
    # published torchvision counts (torchvision.models.*, 1000 classes)
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "googlenet": 6_624_904,  # without the auxiliary classifiers
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "vit_b_16": 86_567_656,
    "efficientnet_b0": 5_288_548,
    # the course's LeNet-5 (docs/models.md)
    "lenet": 61_706,
    # counted layer by layer
    "perceptron": dense(64, 1),
    "logistic": dense(64, 1),
    "linear_svm": dense(64, 10),
    "ridge": dense(64, 1),
    "mlp": dense(784, 256) + dense(256, 256) + dense(256, 10),
    "rnn": recurrent(1, 28, 128) + dense(128, 10),
    "lstm": recurrent(4, 28, 128) + dense(128, 10),
    "gru": recurrent(3, 28, 128) + dense(128, 10),
    "unet": unet_params(),  # 31,030,658
    "c3d": c3d_params(),  # 79,991,015
    "vit_digits": vit_params(1, 16, 4, 64, 2, 128, 10),  # 69,962
}


# ---- helpers ------------------------------------------------------------------

def load(name, **params):
    return almc.load(MODELS / f"{name}.alm", **params)


def nontrivial_weights(m):
    """The model's initial weights, with biases and batch-norm statistics made non-zero / non-one,
    so that the comparison with the reference would notice a dropped or misplaced term."""
    w = m.initial_weights(seed=1)
    rng = np.random.default_rng(5)
    for k, v in w.items():
        if k.endswith("running_var"):
            w[k] = (np.abs(rng.standard_normal(v.shape)) + 0.5).astype(np.float32)
        elif k.endswith(("running_mean", "bias", "bias_ih", "bias_hh")) or (v.ndim == 1 and k.endswith("weight")):
            w[k] = (0.1 * rng.standard_normal(v.shape) + (1.0 if v.ndim == 1 and k.endswith("weight") else 0.0)).astype(np.float32)
    return w


def case(name):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


# ---- tests --------------------------------------------------------------------

def test_every_model_file_is_tested():
    files = {p.stem for p in MODELS.glob("*.alm")}
    assert files == set(RUN) == set(FULL) == set(TRAINABLE)


@pytest.mark.parametrize("name", sorted(FULL))
def test_declared_types_at_full_size(name):
    m = load(name)
    inputs, outputs = FULL[name]
    assert {k: str(t) for k, t in m.inputs.items()} == inputs
    assert {k: str(t) for k, t in m.outputs.items()} == outputs
    assert not m.warnings


@pytest.mark.parametrize("name", sorted(TRAINABLE))
def test_trainable_parameters_exact(name):
    s = load(name).summary()
    assert s.trainable_params == TRAINABLE[name]
    assert s.frozen_params == 0


@pytest.mark.parametrize("name", [case(n) for n in sorted(RUN)])
def test_runs_at_batch_1_and_2(name):
    params, per_example, expected = RUN[name]
    m = load(name, **params)
    (input_name,) = m.inputs
    m.weights = nontrivial_weights(m)
    x = np.random.default_rng(0).standard_normal((2, *per_example)).astype(np.float32)
    one = m.run(x[:1])
    two = m.run(x)
    assert set(one) == set(two) == set(expected)
    for k, shape in expected.items():
        assert one[k].shape == (1, *shape)
        assert two[k].shape == (2, *shape)
        assert one[k].dtype == two[k].dtype == np.float32
        assert np.isfinite(two[k]).all()
        np.testing.assert_allclose(two[k][:1], one[k], rtol=1e-4, atol=1e-4 * np.abs(one[k]).max())
    ref = execute(m.graph, m.weights, {input_name: x})
    for k in expected:
        scale = np.abs(ref[k]).max()
        np.testing.assert_allclose(two[k], ref[k], rtol=1e-3, atol=1e-4 * scale,
                                   err_msg=f"{name}.{k}: onnxruntime and the numpy reference disagree")


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_recurrent_models_take_any_sequence_length(name):
    m = load(name)
    for steps in (1, 5, 40):
        x = np.random.default_rng(steps).standard_normal((3, steps, 28)).astype(np.float32)
        y = m.run(x)["logits"]
        assert y.shape == (3, 10) and np.isfinite(y).all()


def test_size_parameters():
    # ResNets: the global average pool makes the classifier independent of the input size
    for name in ("resnet18", "resnet50"):
        assert load(name, size=64).summary().trainable_params == TRAINABLE[name]
    # U-Net: valid tiles are 188 + 16 k, output = size - 184
    for size in (188, 204, 572):
        assert str(load("unet", size=size).outputs["logits"]) == f"f32[N, 2, {size - 184}, {size - 184}]"
    # stacked recurrent layers and other widths through the list / int parameters
    assert load("mlp", hidden=(512, 128, 64)).summary().trainable_params == (
        dense(784, 512) + dense(512, 128) + dense(128, 64) + dense(64, 10))
    assert load("lstm", layers=2).summary().trainable_params == (
        recurrent(4, 28, 128) + recurrent(4, 128, 128) + dense(128, 10))
    assert str(load("resnet18", classes=10).outputs["logits"]) == "f32[N, 10]"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "unet", "c3d", "vit_b_16",
                                  "efficientnet_b0"])
def test_runs_at_full_size(name):
    # onnxruntime's shapes at the published input size agree with the declared output types
    m = load(name)
    (t,) = m.inputs.values()
    x = np.random.default_rng(0).standard_normal((1, *t.dims[1:])).astype(np.float32)
    out = m.run(x)
    for k, want in m.outputs.items():
        assert out[k].shape == (1, *want.dims[1:])
        assert np.isfinite(out[k]).all()


def test_the_zoo_table_gives_the_summary_figures():
    """models/README.md's table: every model, with summary's parameters, buffers and multiply-adds."""
    rows = {}
    for line in (MODELS / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`") and cells[0].endswith(".alm`"):
            rows[cells[0][1:-5]] = cells[3], cells[4]
    assert set(rows) == set(RUN)
    for name, (params, macs) in sorted(rows.items()):
        s = load(name).summary()
        written = f"{s.trainable_params:,}" + (f" (+{s.buffers:,} buffers)" if s.buffers else "")
        assert (params, macs.removesuffix(" per step")) == (written, f"{s.macs:,}"), name
