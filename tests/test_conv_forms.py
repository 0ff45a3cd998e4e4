"""almc/ops/conv_forms.py: which formulation a convolution gets from its sizes, and a whole
training step that uses them (ResNet-18 on 32x32 images, whose last stage runs on 1x1 and 2x2
maps) against the numpy reference executor. test_ops and test_grads check each form op by op
through the conv examples that exercise them."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

import almc
from almc.lower import lower
from almc.ops.conv_forms import ConvGeo, choose
from almc.reference import execute
from almc.runtime import run
from almc.step import training_step

ROOT = Path(__file__).resolve().parents[1]


def geo(kernel, stride, pad, size, out, groups=1, dilation=1):
    n = len(size)
    return ConvGeo((kernel,) * n, (stride,) * n, (dilation,) * n, ((pad, pad),) * n, groups, size, out)


@pytest.mark.parametrize("g,matmul,taps,kernel,pads,dense", [
    # 3x3, pad 1 on a 1x1 map: only the centre tap meets the input; one output = a Gemm
    (geo(3, 1, 1, (1, 1), (1, 1)), True, ((1, 2), (1, 2)), (1, 1), ((0, 0), (0, 0)), False),
    # 3x3, stride 2, pad 1 on 2x2: the window's last two taps per axis cover the map
    (geo(3, 2, 1, (2, 2), (1, 1)), True, ((1, 3), (1, 3)), (2, 2), ((0, 0), (0, 0)), False),
    # 1x1, stride 2 on 2x2: one output that reads x[:, :, 0, 0]
    (geo(1, 2, 0, (2, 2), (1, 1)), True, ((0, 1), (0, 1)), (1, 1), ((0, 0), (0, 0)), False),
    # a 1x3 map: the rows' outer taps meet only padding; grouped, so a Conv with a 1x3 kernel
    (geo(3, 1, 1, (1, 3), (1, 3), groups=2), False, ((1, 2), (0, 3)), (1, 3), ((0, 0), (1, 1)), False),
    # 2x2 map, 3x3 pad 1: each of the 4 x 4 pairs of positions is linked by one tap: one dense matrix
    (geo(3, 1, 1, (2, 2), (2, 2)), False, ((0, 3), (0, 3)), (3, 3), ((1, 1), (1, 1)), True),
    # 4x4 map: the dense matrix would be 256 / 100 zeros-heavy: a Conv
    (geo(3, 1, 1, (4, 4), (4, 4)), False, ((0, 3), (0, 3)), (3, 3), ((1, 1), (1, 1)), False),
    # symbolic sizes: unchanged
    (geo(3, 1, 1, ("H", "W"), ("H", "W")), False, ((0, 3), (0, 3)), (3, 3), ((1, 1), (1, 1)), False),
])
def test_the_form_follows_the_sizes(g, matmul, taps, kernel, pads, dense):
    f = choose(g)
    assert (f.matmul, f.taps, f.geo.kernel, f.geo.pads, f.dense) == (matmul, taps, kernel, pads, dense)


def test_the_weight_gradient_goes_dense_only_where_the_matrix_has_few_zeros():
    assert choose(geo(3, 1, 1, (2, 2), (2, 2))).dense_weight  # 16 pairs, 16 links
    f = choose(geo(3, 2, 1, (4, 4), (2, 2)))  # 64 pairs, 25 links: dense forward and input gradient
    assert f.dense and not f.dense_weight
    assert not choose(geo(3, 2, 1, (8, 8), (4, 4))).dense  # 1024 pairs, 121 links


def test_the_dense_matrix_links_each_pair_of_positions_by_its_tap():
    from almc.ops.conv_forms import _dense_matrix

    m = _dense_matrix(geo(3, 1, 1, (2, 2), (2, 2)))  # [9 taps, 4 out positions * 4 in positions]
    assert m.shape == (9, 16) and m.sum() == 16 and (m.sum(axis=0) == 1).all()
    # output (0, 0) reads input (0, 0) through the centre tap (1, 1) and input (1, 1) through tap (2, 2)
    assert m[4, 0 * 4 + 0] == 1 and m[8, 0 * 4 + 3] == 1


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_resnet18_training_step_on_32x32_matches_the_numpy_reference(target):
    src = (ROOT / "models" / "resnet18.alm").read_text() + """
train ResNet18 { input label: i64[N]
  minimize mean(cross_entropy(logits, label))
  optimizer sgd(lr = 0.1, momentum = 0.9) }"""
    m = almc.load(src, classes=10, size=32)
    step, sig = training_step(m.graph)
    model = lower(step, params_as_inputs=True, target=target)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    if target == "cpu":
        # layer3 (1x1 maps): 4 convs forward, 4 input and 4 weight gradients are Gemms; 20 - 4 Conv forward
        assert ops["Gemm"] >= 12 and ops["ConvTranspose"] < 19
    else:
        # one cuDNN kernel per pass: 20 Conv forward, 20 weight gradients as Conv, 19 input gradients
        # (none for the image) as ConvTranspose; the fc layer's Gemms; no broadcasting rewritten as rows
        assert (ops["Conv"], ops["ConvTranspose"], ops["Gemm"], ops["Col2Im"]) == (40, 19, 3, 0)
        assert ops["Expand"] <= 2 and len(model.graph.node) < 1900
    rng = np.random.default_rng(0)
    w = m.initial_weights()
    feeds = {k: v for k, v in w.items() if k in {i.name for i in model.graph.input}}
    feeds |= {k: (rng.standard_normal(s) * 0.01).astype(np.float32) for k, s in sig.state.items()}
    feeds |= {"image": rng.standard_normal((8, 3, 32, 32)).astype(np.float32), "label": np.arange(8) % 10,
              "epoch": np.array(0.5, np.float32)}
    got = run(model, feeds, "cpu")[0]
    ref = execute(step, w, {k: v for k, v in feeds.items() if k not in w})
    for name in step.outputs:
        if name.startswith(("grad.", "next.", "loss")):
            a, b = got[name], ref[name]
            scale = max(1.0, float(np.abs(b).max()))
            assert np.abs(a - b).max() <= 2e-4 * scale, name


def test_the_input_gradient_is_col2im_on_the_cpu_and_convtranspose_for_cuda():
    """LeNet's second conv (6 -> 16 channels, 14x14 -> 10x10): on the CPU its input gradient is one
    MatMul to columns and a Col2Im, which onnxruntime has for the CPU only; a step tuned for CUDA
    keeps the ConvTranspose. Both compute the same step."""
    m = almc.load(ROOT / "models" / "lenet.alm")  # with its training section
    step, sig = training_step(m.graph)
    models = {t: lower(step, params_as_inputs=True, target=t) for t in ("cpu", "cuda")}
    ops = {t: collections.Counter(n.op_type for n in p.graph.node) for t, p in models.items()}
    assert ops["cpu"]["Col2Im"] == 1 and ops["cpu"]["ConvTranspose"] == 0
    assert ops["cuda"]["Col2Im"] == 0 and ops["cuda"]["ConvTranspose"] == 1
    assert m.compile_training_step(target="cuda").SerializeToString() == models["cuda"].SerializeToString()
    rng = np.random.default_rng(1)
    w = m.initial_weights()
    feeds = {k: v for k, v in w.items() if k in {i.name for i in models["cpu"].graph.input}}
    feeds |= {k: (rng.standard_normal(s) * 0.01).astype(np.float32) for k, s in sig.state.items()}
    feeds |= {"image": rng.standard_normal((5, 1, 32, 32)).astype(np.float32), "label": np.arange(5) % 10,
              "epoch": np.array(0.5, np.float32)}
    cpu, cuda = run(models["cpu"], feeds, "cpu")[0], run(models["cuda"], feeds, "cpu")[0]
    ref = execute(step, w, {k: v for k, v in feeds.items() if k not in w})
    for name in step.outputs:
        if name.startswith(("grad.", "next.", "loss")):
            scale = max(1.0, float(np.abs(ref[name]).max()))
            assert np.abs(cpu[name] - ref[name]).max() <= 1e-5 * scale, name
            assert np.abs(cuda[name] - ref[name]).max() <= 1e-5 * scale, name
