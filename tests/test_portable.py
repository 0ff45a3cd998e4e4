"""What almc writes is standard ONNX in fact: every model in models/ (at test_models.RUN's reduced
sizes), its inference model and its training step (the default, portable target), runs unmodified
with a symbolic batch in onnxruntime, in onnx's reference evaluator and in OpenVINO's CPU plugin,
and the three agree (docs/training.md, "What runs where").

Agreement is measured per output tensor, relative to its largest value, or to its norm
(||a - b|| / ||a||). Where the function is smooth the runtimes differ by float32 rounding only:
the inference outputs within 1e-5, and in the step the loss and the outputs within 1e-5, the
gradients, the optimiser's moments and the running statistics (sums over the batch) within 1e-4
in norm. Four things are not smooth, and the comparison allows for each:
- Adam's first step divides each gradient by its own size: where a gradient is rounding noise (a
  key bias under softmax, a weight on a state that starts at zero) the update is the noise's sign.
  A parameter's update (next.P - P) is compared where P's gradient is above that noise.
- A ReLU whose input one runtime rounds to just below zero and another to just above sends one
  element's gradient elsewhere. In the deep networks (DEEP) this happens: in VGG-16, one of fc1's
  8192 units at -2.3e-6 in onnxruntime and +1.1e-6 in OpenVINO (its largest 7.8) moves every
  gradient below it by 1.7% in norm. Their gradients are compared within 5e-2 in norm; a wrong
  formulation is off by far more.
- A shift that a batch norm in training mode takes out again has no gradient: EfficientNet's
  projection's batch-norm bias feeds the next block's batch norm. Its gradient, 3e-8 to 9e-7
  in norm against the step's largest 13, is rounding noise in each runtime; so is the running
  mean of the batch norm after the next block's bias-free 1x1 expansion (1e-8). Each output is
  compared relative to its own size or to 1e-5 of the largest of its kind (gradients, momenta,
  running statistics, ...), whichever is larger.
- Batch norm in training mode over two examples normalises by the spread of as few as two
  values: ResNet-50's logits move by 6.6e-5 in onnxruntime itself when every weight moves one ulp.
  The deep networks' step outputs are compared within 2e-4.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import random_feeds
from opcheck import random_inputs, single_op_graph
from test_models import RUN
from test_ops import CASES as OP_CASES

import almc
from almc.compiler import compile_step
from almc.init import initialize
from almc.lower import lower

ov = pytest.importorskip("openvino")
ROOT = Path(__file__).resolve().parent.parent
BATCH = 2
SLOW = {"alexnet", "vgg16", "unet", "c3d", "googlenet", "resnet50", "efficientnet_b0"}  # > 5 s each
DEEP = SLOW | {"resnet18"}
# batch norm over a 1x1 map and two examples normalises two values to -1 and +1 whatever they
# are: its gradient is zero, and what the runtimes compute is rounding noise
STEP_BATCH = {"googlenet": 4, "efficientnet_b0": 4, "resnet50": 4, "resnet18": 4}


def train_section(name: str, m) -> str:
    """A training section for a model file that has none (the image classifiers, U-Net)."""
    if m.graph.train is not None:
        return ""
    out = next(iter(m.outputs))
    if name == "unet":
        dims = ", ".join(str(d) for d in m.outputs[out].dims[1:])
        return (f"\ntrain {m.name} {{\n    input target: f32[N, {dims}]\n"
                f"    minimize mean(squared_error({out}, target))\n    optimizer sgd(lr = 0.01, momentum = 0.9)\n}}\n")
    return (f"\ntrain {m.name} {{\n    input label: i64[N]\n    minimize mean(cross_entropy({out}, label))\n"
            f"    optimizer sgd(lr = 0.01, momentum = 0.9)\n}}\n")


def load(name: str):
    params = RUN[name][0]
    text = (ROOT / "models" / f"{name}.alm").read_text()
    return almc.load(text + train_section(name, almc.load(text, **params)), **params)


def run_onnxruntime(proto, feeds):
    import onnxruntime as ort

    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def run_reference(proto, feeds):
    from onnx.reference import ReferenceEvaluator

    return dict(zip([o.name for o in proto.graph.output], ReferenceEvaluator(proto).run(None, feeds)))


def run_openvino(proto, feeds):
    core = ov.Core()
    model = core.read_model(proto.SerializeToString(), b"")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    kept = {n for i in compiled.inputs for n in i.get_names()}  # it drops inputs nothing reads (epoch)
    res = compiled({k: v for k, v in feeds.items() if k in kept})
    return {o.name: np.asarray(res[compiled.outputs[k]]) for k, o in enumerate(proto.graph.output)}


RUNTIMES = {"reference": run_reference, "openvino": run_openvino}


def relative(a, b, norm="max", floor: float = 1e-30) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not a.size:
        return 0.0
    with np.errstate(invalid="ignore"):  # equal infinities (a causal mask's -inf) agree
        diff = np.where(a == b, 0.0, np.abs(a - b))
    a = np.where(np.isfinite(a), a, 0.0)
    if norm == "max":
        return float(diff.max() / max(np.abs(a).max(), floor, 1e-30))
    return float(np.linalg.norm(diff) / max(np.linalg.norm(a), floor, 1e-30))


def params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def classes_of(m) -> int:
    return m.outputs[next(iter(m.outputs))].dims[-1]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", params(RUN))
def test_inference_model_runs_everywhere(name, runtime):
    m = load(name)
    proto = m.compile()
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    feeds = random_feeds(proto, np.random.default_rng(0), classes_of(m), BATCH, scale=0.5)
    want, got = run_onnxruntime(proto, feeds), RUNTIMES[runtime](proto, feeds)
    assert want.keys() == got.keys()
    for k in want:
        assert relative(want[k], got[k]) <= 1e-5, k


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", params(RUN))
def test_training_step_runs_everywhere(name, runtime):
    m = load(name)
    compiled = compile_step(m.graph, gradients=True)  # the default target: portable
    proto, sig = compiled.proto, compiled.signature
    feeds = random_feeds(proto, np.random.default_rng(1), classes_of(m), STEP_BATCH.get(name, BATCH), scale=0.5)
    feeds.update({k: v for k, v in m.initial_weights(0).items() if k in feeds})
    feeds.update({k: np.zeros(shape, np.float32) for k, shape in sig.state.items() if k in feeds})
    feeds.update({k: np.array(v, np.float32) for k, v in (("epoch", 0.5), ("step", 1.0)) if k in feeds})
    want, got = run_onnxruntime(proto, feeds), RUNTIMES[runtime](proto, feeds)
    assert want.keys() == got.keys()
    assert np.isfinite(want["loss"])
    smooth, grads = (2e-4, 5e-2) if name in DEEP else (1e-5, 1e-4)
    scale = {}  # the largest (in norm, and element) of each kind of output: what "zero up to rounding" is measured by
    for k, v in want.items():
        norm, top = scale.get(kind(k, sig), (0.0, 0.0))
        scale[kind(k, sig)] = max(norm, float(np.linalg.norm(v))), max(top, float(np.abs(v).max(initial=0.0)))
    for k in want:
        norm, top = scale[kind(k, sig)]
        if k.startswith("grad.") or k.startswith("next.") and k[5:] not in sig.trainable:
            # the gradients, their moments, the running statistics: sums over the batch
            assert relative(want[k], got[k], "norm", floor=1e-5 * norm) <= grads, k
        elif k[5:] in sig.trainable:
            g, before = want[f"grad.{k[5:]}"], feeds[k[5:]]
            above_noise = np.abs(g) >= max(1e-3 * np.abs(g).max(), 1e-5 * scale["grad"][1])
            update = (want[k] - before)[above_noise], (got[k] - before)[above_noise]
            assert relative(*update, "norm") <= grads, k
        else:
            assert relative(want[k], got[k], floor=1e-5 * top) <= smooth, k


def kind(output: str, sig) -> str:
    """grad, momentum / adam_m / adam_v, running statistics, or the output itself."""
    if output.startswith("grad."):
        return "grad"
    if output[5:] in sig.state:
        return output.split(".")[1]
    if output.startswith("next.") and output[5:] not in sig.trainable:
        return "running statistics"  # one kind: a mean's rounding is the size of the values' spread
    return output


def op_model(example, i):
    """An op example (test_ops.CASES) as a one-op model in its portable form, with its inputs."""
    specs, attrs, *opts = example
    name = example_names[id(example)]
    symbolic = (opts[0] if opts else {}).get("symbolic_batch", True)
    g = single_op_graph(name, specs, attrs, batch="N" if symbolic else None)
    rng = np.random.default_rng(7)
    weights = {k: (rng.standard_normal(w.shape) * 0.5).astype(np.float32) for k, w in initialize(g, seed=1).items()}
    weights.update({k: np.abs(w) + 0.5 for k, w in weights.items() if k.endswith("running_var")})
    feeds = random_inputs(specs, seed=i)
    if (opts[0] if opts else {}).get("positive"):
        feeds = {k: np.abs(v) for k, v in feeds.items()}
    return lower(g, weights, target="portable"), feeds


example_names = {id(ex): name for name, _, ex in OP_CASES}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name,i,example", OP_CASES, ids=[f"{n}-{i}" for n, i, _ in OP_CASES])
def test_every_op_runs_everywhere(name, i, example, runtime):
    """Each op's portable form (tests/test_ops.py checks it against the numpy reference in
    onnxruntime) gives onnxruntime's numbers in the other runtimes."""
    model, feeds = op_model(example, i)
    want, got = run_onnxruntime(model, feeds), RUNTIMES[runtime](model, feeds)
    for k in want:
        assert relative(want[k], got[k]) <= 1e-5, k
