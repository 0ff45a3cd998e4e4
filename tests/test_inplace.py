"""The training step may write every `next.X` into X's own buffer (almc train binds them so):
each update is ordered behind every read of what it overwrites (step._unordered_reads, the
`after` op). Checked two ways for every model with a training section, ResNet-18 and each
optimiser: in the ONNX graph (every node that reads X, directly, through a view or inside a
Scan or Loop body, is an ancestor of the node that writes next.X), and by running three steps
with the outputs bound to the inputs' buffers against three steps with outputs of their own:
the parameters and optimiser state must come out bit for bit the same."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import random_feeds

import almc
from almc.lower import lower
from almc.runner import bind_state, device_value
from almc.runtime import session, usable_cpus
from almc.step import training_step

ROOT = Path(__file__).resolve().parent.parent
TRAINED = ["gru", "lenet", "linear_svm", "logistic", "lstm", "mlp", "perceptron", "ridge", "rnn"]
RESNET_TRAIN = """
train ResNet18 {
    input label: i64[N]
    minimize mean(cross_entropy(logits, label)) + 5e-4 * l2(weights)
    optimizer sgd(lr = 0.1, momentum = 0.9)
}
"""
MLP = """
model MLP {
    input x: f32[N, 12]
    h = dense(x, 16) |> batchnorm |> relu |> dropout(0.25)
    a = dense(h, 8) |> tanh
    output logits = dense(a, 4)
    output aux = dense(h, 3)
}
train MLP {
    input label: i64[N]
    minimize mean(cross_entropy(logits, label, smoothing = 0.1)) + 1e-3 * l2(weights)
    optimizer OPT
    freeze a
    lr_scale logits = 0.5
}
"""
OPTIMIZERS = ["sgd(lr = 0.1)", "sgd(lr = 0.1, momentum = 0.9, weight_decay = 0.01)",
              "sgd(lr = 0.1, momentum = 0.9, nesterov = true)", "adam(lr = 0.01, weight_decay = 0.001)",
              "adamw(lr = 0.01, weight_decay = 0.1)"]
VIEWS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}  # outputs that may share the input's memory


def reads(node) -> set[str]:
    """What a node reads: its inputs and, in Scan and Loop bodies, the outer tensors."""
    out = set(node.input)
    for a in node.attribute:
        for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs:
            for n in sub.node:
                out |= reads(n)
    return out


def unordered_reads(proto) -> list[str]:
    """For each `next.X`: the nodes that read X but are not ancestors of the node writing next.X."""
    nodes = list(proto.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    readers: dict[str, list] = {}
    for n in nodes:
        for t in reads(n):
            readers.setdefault(t, []).append(n)
    problems = []
    for out in (o.name for o in proto.graph.output if o.name.startswith("next.")):
        writer = producer[out]
        ancestors, stack = set(), [writer]
        while stack:
            for t in reads(stack.pop()):
                p = producer.get(t)
                if p is not None and p.name not in ancestors:
                    ancestors.add(p.name)
                    stack.append(p)
        seen, stack = set(), [out[len("next."):]]
        while stack:  # X and every view of it
            for r in readers.get(stack.pop(), []):
                if r.name in seen:
                    continue
                seen.add(r.name)
                if r is not writer and r.name not in ancestors:
                    problems.append(f"{out}: {r.op_type} {r.name}")
                if r.op_type in VIEWS:
                    stack.append(r.output[0])
    return problems


def step_feeds(m, sig, proto, rng, batch=3):
    """Random inputs for a step: the data, labels, dropout masks; parameters and state apart."""
    classes = m.graph.node(next(iter(m.graph.outputs.values()))).type.dims[-1]
    return random_feeds(proto, rng, classes, batch, skip={*sig.params, *sig.state, "epoch", "step"})


def run_steps(m, in_place: bool, steps: int = 3) -> dict[str, np.ndarray]:
    g, sig = training_step(m.graph, gradients=False)
    proto = lower(g, params_as_inputs=True)
    s = session(proto, "cpu", threads=usable_cpus())  # the same count for both runs: sums split by thread
    weights = m.initial_weights(0)
    values = {k: device_value(v, "cpu") for k, v in {**weights, **{k: np.zeros(shape) for k, shape in sig.state.items()}}.items()
              if k in {i.name for i in proto.graph.input}}
    outputs = [o.name for o in s.get_outputs()]
    binding = s.io_binding()
    rng = np.random.default_rng(0)
    for k in range(steps):
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, x in {**step_feeds(m, sig, proto, rng), "epoch": np.array((k + 1) / 4, np.float32),
                        "step": np.array(k, np.float32)}.items():
            if name in {i.name for i in proto.graph.input}:
                binding.bind_cpu_input(name, np.ascontiguousarray(x))
        inplace = {out: values[name] for name, out in sig.updates.items()} if in_place else {}
        bind_state(binding, values, inplace, outputs, "cpu")
        s.run_with_iobinding(binding)
        got = dict(zip(outputs, binding.get_outputs()))
        assert np.isfinite(got["loss"].numpy())
        if not in_place:
            values.update({name: got[out] for name, out in sig.updates.items()})
    return {k: v.numpy().copy() for k, v in values.items()}


def corpus():
    for name in TRAINED:
        yield name, lambda name=name: almc.load(str(ROOT / "models" / f"{name}.alm"))
    yield "resnet18", lambda: almc.load((ROOT / "models" / "resnet18.alm").read_text() + RESNET_TRAIN,
                                        classes=10, size=32)
    for opt in OPTIMIZERS:
        yield f"mlp {opt}", lambda opt=opt: almc.load(MLP.replace("OPT", opt))


CASES = list(corpus())


@pytest.mark.parametrize("make", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_every_read_of_an_updated_tensor_comes_before_its_update(make):
    m = make()
    g, sig = training_step(m.graph, gradients=False)
    proto = lower(g, params_as_inputs=True)
    assert not unordered_reads(proto)
    assert {f"next.{k}" for k in sig.updates} <= {o.name for o in proto.graph.output}


def test_an_output_the_step_does_not_return_is_not_computed_to_order_an_update():
    m = almc.load(MLP.replace("OPT", OPTIMIZERS[1]))
    g, _ = training_step(m.graph, gradients=False)
    proto = lower(g, params_as_inputs=True)
    assert not [n.name for n in proto.graph.node if n.name.startswith("aux")]
    assert "next.aux.weight" in {o.name for o in proto.graph.output}


def test_the_check_finds_a_read_after_the_update():
    """Without the ordering, a conv's input gradient may read its weight after the update: the
    check above must see it (it is what would make the in-place run differ)."""
    m = CASES[1][1]()  # lenet
    g, _ = training_step(m.graph, gradients=False)
    proto = lower(g, params_as_inputs=True)
    skip = {}  # each `after` bypassed: its Where nodes pass their second input on
    for n in proto.graph.node:
        if n.op_type == "Where" and ".after" in n.name:
            skip[n.output[0]] = skip.get(n.input[1], n.input[1])
    for n in proto.graph.node:
        n.input[:] = [skip.get(i, i) for i in n.input]
    assert any("c3.conv.weight" in p for p in unordered_reads(proto))


@pytest.mark.parametrize("make", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_steps_in_place_compute_the_same_bits(make):
    m = make()
    a, b = run_steps(m, in_place=False), run_steps(m, in_place=True)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_device_values_own_their_memory():
    """almc train writes each step into these values: they must not be views of the arrays
    they were made from (an OrtValue made with ortvalue_from_numpy on the CPU is one)."""
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    v = device_value(a, "cpu")
    a[:] = -1
    np.testing.assert_array_equal(v.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert v.numpy().dtype == np.float32


@pytest.mark.parametrize("make", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_the_ordering_survives_onnxsim(make):
    """A user who simplifies a step with onnxsim (a test extra) keeps a step that may run in
    place: it drops some of the `after` gates, never one that orders a read before its update."""
    onnxsim = pytest.importorskip("onnxsim")
    proto = make().compile_training_step(gradients=False)
    simplified, ok = onnxsim.simplify(proto)
    assert ok and len(simplified.graph.node) < len(proto.graph.node)
    assert not unordered_reads(simplified)
