"""Grouped and depthwise convolutions in the training step: each pass is a constant number of
nodes whatever the group count (ops/conv_forms.py), on every target, and the step's gradients
are those of central finite differences (float64, numpy reference executor)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import almc
from almc.compiler import compile_step, gradient_graphs
from almc.gradcheck import central_differences
from almc.ops.emit import TARGETS

GROUPED = """
model Grouped {{
    input x: f32[N, {c}, 9, 9]
    h = conv(x, {c}, kernel = 1)
    output y = conv(h, {m}, kernel = 3, stride = {s}, dilation = {d}, pad = 1, groups = {g})
}}
"""
TRAIN = """
train Grouped {{
    input t: f32[N, {dims}]
    minimize mean(squared_error(y, t))
    optimizer sgd(lr = 0.1)
}}
"""
# (input channels, output channels, groups, stride, dilation): two groups, depthwise (groups = C),
# depthwise with a channel multiplier
CASES = [(4, 6, 2, 2, 1), (4, 6, 2, 1, 2), (6, 6, 6, 2, 2), (6, 6, 6, 1, 1), (3, 6, 3, 2, 1)]


def grouped(c, m, g, s, d):
    text = GROUPED.format(c=c, m=m, g=g, s=s, d=d)
    dims = ", ".join(map(str, almc.load(text).outputs["y"].dims[1:]))
    return almc.load(text + TRAIN.format(dims=dims))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("c,m,g,s,d", CASES)
def test_grouped_conv_gradients_match_finite_differences(c, m, g, s, d, target):
    model = grouped(c, m, g, s, d)
    rng = np.random.default_rng(0)
    weights = {k: rng.standard_normal(v.shape) * 0.5 for k, v in model.initial_weights(0).items()}
    feeds = {"x": rng.standard_normal((2, c, 9, 9)),
             "t": rng.standard_normal((2, *model.outputs["y"].dims[1:]))}
    step = compile_step(model.graph, gradients=True, target=target).proto
    sess = ort.InferenceSession(step.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    values = {**feeds, **weights, "epoch": np.array(0.5)}
    out = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {k: np.asarray(values[k], np.float32) for k in names})))
    loss_graph = gradient_graphs(model.graph)[0].copy()
    loss_graph.outputs = {"loss": loss_graph.train.loss}
    for name in ("h.weight", "y.weight", "y.bias"):  # h's gradient needs y's input gradient
        idx = rng.choice(weights[name].size, size=min(8, weights[name].size), replace=False)
        fd = central_differences(loss_graph, weights, feeds, weights[name], idx, 1e-6)
        got = out[f"grad.{name}"].reshape(-1)[idx]
        np.testing.assert_allclose(got, fd, rtol=1e-3, atol=1e-4 * np.abs(fd).max(), err_msg=name)


DEPTHWISE = """
model Separable(groups = 1) {
    input x: f32[N, 3, 32, 32]
    h = conv(x, 32, kernel = 3, stride = 2, pad = 1) |> relu
    for width in [32, 64, 128, 960] {
        h = conv(h, h.channels, kernel = 3, pad = 1, groups = h.channels if groups == 0 else 1) |> relu
        h = conv(h, width, kernel = 1) |> relu
    }
    h = conv(h, 960, kernel = 5, stride = 2, pad = 2, dilation = 1, groups = 960 if groups == 0 else 1) |> relu
    output logits = dense(flatten(global_avgpool(h)), 10)
}
train Separable {
    input label: i64[N]
    minimize mean(cross_entropy(logits, label))
    optimizer sgd(lr = 0.1)
}
"""


@pytest.mark.parametrize("target", TARGETS)
def test_a_depthwise_network_step_has_at_most_twice_the_nodes_of_its_ungrouped_twin(target):
    nodes = {}
    for groups in (0, 1):  # 0: depthwise (groups = channels, up to 960), 1: the same layers ungrouped
        m = almc.load(DEPTHWISE, groups=groups)
        nodes[groups] = len(compile_step(m.graph, gradients=False, target=target, checked=False).proto.graph.node)
    assert nodes[0] <= 2 * nodes[1], nodes


def test_the_group_count_does_not_change_the_node_count():
    counts = {}
    for g in (2, 8, 960):
        text = f"""
model M {{
    input x: f32[N, 960, 8, 8]
    output y = conv(x, 960, kernel = 3, pad = 1, groups = {g}) |> relu
}}
train M {{
    input t: f32[N, 960, 8, 8]
    minimize mean(squared_error(y, t))
    optimizer sgd(lr = 0.1)
}}
"""
        for target in TARGETS:
            counts[g, target] = len(compile_step(almc.load(text).graph, target=target, checked=False).proto.graph.node)
    for target in TARGETS:  # two groups of 480 channels are a batched MatMul, 960 of one an elementwise product
        assert max(counts[g, target] for g in (2, 8, 960)) < 60, counts
        assert counts[2, target] - 4 <= counts[960, target] <= counts[2, target] + 4, counts
