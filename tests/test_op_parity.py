"""The ops that PyTorch also defines, against PyTorch: almc's ONNX (forward, and the gradient
graph lowered to ONNX) run in onnxruntime, PyTorch's functional form and autograd the oracle.
loss = sum(op(x) * r); compared are y and the gradient of every input and parameter."""
from __future__ import annotations

import numpy as np
import pytest
from opcheck import single_op_graph
from test_grads import with_loss

from almc.autodiff import differentiate
from almc.graph import trainable_params
from almc.init import initialize
from almc.lower import lower
from almc.reference import execute
from almc.runtime import run

torch = pytest.importorskip("torch")
F = torch.nn.functional
RTOL = 1e-4


def _w(op):
    return lambda xs, w: op(xs[0], w["y.weight"], w.get("y.bias"))


# (op, input shapes, attributes, the PyTorch form of (inputs, weights), [inputs "positive" or "wide" (x 4,
# across the kinks at +-3 and 6)])
CASES = [
    ("gelu", [(4, 6)], {}, lambda xs, w: F.gelu(xs[0])),
    ("gelu", [(4, 6)], dict(approximate="tanh"), lambda xs, w: F.gelu(xs[0], approximate="tanh")),
    ("silu", [(4, 6)], {}, lambda xs, w: F.silu(xs[0])),
    ("elu", [(4, 6)], dict(alpha=0.7), lambda xs, w: F.elu(xs[0], 0.7)),
    ("softplus", [(4, 6)], dict(beta=2.0), lambda xs, w: F.softplus(xs[0], beta=2.0)),
    ("hardswish", [(4, 6, 3)], {}, lambda xs, w: F.hardswish(xs[0]), "wide"),
    ("hardsigmoid", [(4, 6, 3)], {}, lambda xs, w: F.hardsigmoid(xs[0]), "wide"),
    ("mish", [(4, 6)], {}, lambda xs, w: F.mish(xs[0])),
    ("relu6", [(4, 6, 3)], {}, lambda xs, w: F.relu6(xs[0]), "wide"),
    ("hardtanh", [(4, 6)], dict(min_val=-0.5, max_val=1.5), lambda xs, w: F.hardtanh(xs[0], -0.5, 1.5)),
    ("clip", [(4, 6)], dict(lo=-0.3, hi=0.6), lambda xs, w: torch.clamp(xs[0], -0.3, 0.6)),
    ("exp", [(4, 6)], {}, lambda xs, w: torch.exp(xs[0])),
    ("log", [(4, 6)], {}, lambda xs, w: torch.log(xs[0]), "positive"),
    ("sqrt", [(4, 6)], {}, lambda xs, w: torch.sqrt(xs[0]), "positive"),
    ("pow", [(4, 6)], dict(exponent=2.5), lambda xs, w: torch.pow(xs[0], 2.5), "positive"),
    ("abs", [(4, 6)], {}, lambda xs, w: torch.abs(xs[0])),
    ("neg", [(4, 6)], {}, lambda xs, w: torch.neg(xs[0])),
    ("cos", [(4, 6)], {}, lambda xs, w: torch.cos(xs[0])),
    ("sin", [(4, 6)], {}, lambda xs, w: torch.sin(xs[0])),
    ("erf", [(4, 6)], {}, lambda xs, w: torch.erf(xs[0])),
    ("maximum", [(4, 6, 5), (6, 1)], {}, lambda xs, w: torch.maximum(xs[0], xs[1])),
    ("minimum", [(4, 6), (4, 6)], {}, lambda xs, w: torch.minimum(xs[0], xs[1])),
    ("max", [(4, 6, 5)], dict(axis=1, keepdims=True), lambda xs, w: torch.amax(xs[0], 1, keepdim=True)),
    ("min", [(4, 6, 5)], dict(axis=(1, 2)), lambda xs, w: torch.amin(xs[0], (1, 2))),
    ("mean", [(4, 6, 5)], dict(axis=-1, keepdims=True), lambda xs, w: torch.mean(xs[0], -1, keepdim=True)),
    ("sum", [(4, 6, 5)], dict(axis=(0, 2), keepdims=True), lambda xs, w: torch.sum(xs[0], (0, 2), keepdim=True)),
    ("matmul", [(4, 2, 3, 5), (4, 2, 5, 6)], {}, lambda xs, w: torch.matmul(xs[0], xs[1])),
    ("matmul", [(4, 3, 5), (5, 2)], {}, lambda xs, w: torch.matmul(xs[0], xs[1])),
    ("matmul", [(4, 1, 3, 5), (4, 2, 5, 2)], {}, lambda xs, w: torch.matmul(xs[0], xs[1])),
    ("transpose", [(4, 3, 5, 2)], dict(a=1, b=3), lambda xs, w: torch.transpose(xs[0], 1, 3)),
    ("permute", [(4, 3, 5, 2)], dict(dims=(0, 2, 3, 1)), lambda xs, w: xs[0].permute(0, 2, 3, 1)),
    ("squeeze", [(4, 1, 5)], dict(axis=1), lambda xs, w: torch.squeeze(xs[0], 1)),
    ("unsqueeze", [(4, 5)], dict(axis=-1), lambda xs, w: torch.unsqueeze(xs[0], -1)),
    ("dense", [(4, 3, 7)], dict(units=5), _w(F.linear)),
    ("dense", [(4, 2, 3, 7)], dict(units=5, bias=False), lambda xs, w: F.linear(xs[0], w["y.weight"])),
    ("layer_norm", [(4, 5, 6)], {}, lambda xs, w: F.layer_norm(xs[0], (6,), w["y.weight"], w["y.bias"])),
    ("layer_norm", [(4, 3, 4, 5)], dict(dims=2, eps=1e-3),
     lambda xs, w: F.layer_norm(xs[0], (4, 5), w["y.weight"], w["y.bias"], eps=1e-3)),
    ("group_norm", [(4, 6, 3, 3)], dict(groups=3),
     lambda xs, w: F.group_norm(xs[0], 3, w["y.weight"], w["y.bias"])),
    ("group_norm", [(4, 4, 5)], dict(groups=2, affine=False), lambda xs, w: F.group_norm(xs[0], 2)),
    ("instance_norm", [(4, 3, 4, 4)], {}, lambda xs, w: F.instance_norm(xs[0])),
    ("adaptive_avgpool", [(4, 3, 13, 10)], dict(size=(6, 4)), lambda xs, w: F.adaptive_avg_pool2d(xs[0], (6, 4))),
    ("adaptive_avgpool", [(4, 2, 3, 3)], dict(size=6), lambda xs, w: F.adaptive_avg_pool2d(xs[0], 6)),
    ("adaptive_avgpool", [(4, 2, 12, 8)], dict(size=(6, 4)), lambda xs, w: F.adaptive_avg_pool2d(xs[0], (6, 4))),
    ("adaptive_avgpool", [(4, 2, 11)], dict(size=4), lambda xs, w: F.adaptive_avg_pool1d(xs[0], 4)),
    ("global_maxpool", [(4, 3, 5, 6)], {}, lambda xs, w: torch.amax(xs[0], (2, 3), keepdim=True)),
    ("adaptive_maxpool", [(4, 3, 8, 8)], dict(size=(4, 2)), lambda xs, w: F.adaptive_max_pool2d(xs[0], (4, 2))),
    ("adaptive_maxpool", [(4, 3, 5, 7)], dict(size=3), lambda xs, w: F.adaptive_max_pool2d(xs[0], 3)),
    ("adaptive_maxpool", [(4, 2, 2, 2)], dict(size=3), lambda xs, w: F.adaptive_max_pool2d(xs[0], 3)),
    ("adaptive_maxpool", [(4, 2, 13, 4)], dict(size=(6, 4)), lambda xs, w: F.adaptive_max_pool2d(xs[0], (6, 4))),
    ("adaptive_maxpool", [(4, 2, 11)], dict(size=4), lambda xs, w: F.adaptive_max_pool1d(xs[0], 4)),
    ("adaptive_maxpool", [(4, 2, 12)], dict(size=3), lambda xs, w: F.adaptive_max_pool1d(xs[0], 3)),
    ("adaptive_maxpool", [(2, 2, 4, 5, 3)], dict(size=(2, 3, 4)),
     lambda xs, w: F.adaptive_max_pool3d(xs[0], (2, 3, 4))),
    ("adaptive_maxpool", [(2, 2, 4, 6, 2)], dict(size=(2, 3, 1)),
     lambda xs, w: F.adaptive_max_pool3d(xs[0], (2, 3, 1))),
    ("adaptive_maxpool", [(4, 3, 4, 4)], dict(size=4), lambda xs, w: F.adaptive_max_pool2d(xs[0], 4)),
    ("stack", [(4, 3), (4, 3), (4, 3)], {}, lambda xs, w: torch.stack(xs, 1)),
    ("stack", [(4, 3, 2), (4, 3, 2)], dict(axis=-1), lambda xs, w: torch.stack(xs, -1)),
    ("pad", [(4, 2, 5, 4)], dict(pads=((1, 2), (3, 0)), value=0.5),
     lambda xs, w: F.pad(xs[0], (3, 0, 1, 2), value=0.5)),
    ("pad", [(4, 2, 5, 4)], dict(pads=((1, 2), (3, 0)), mode="reflect"),
     lambda xs, w: F.pad(xs[0], (3, 0, 1, 2), mode="reflect")),
    ("pad", [(4, 2, 5, 4)], dict(pads=2, mode="replicate"), lambda xs, w: F.pad(xs[0], (2, 2, 2, 2), mode="replicate")),
    ("pad", [(4, 2, 6)], dict(pads=((4, 1),), mode="reflect"), lambda xs, w: F.pad(xs[0], (4, 1), mode="reflect")),
    ("prelu", [(4, 3, 5)], {}, lambda xs, w: F.prelu(xs[0], w["y.weight"])),
    ("prelu", [(4, 3, 4, 4)], dict(per_channel=True), lambda xs, w: F.prelu(xs[0], w["y.weight"])),
    ("instance_norm", [(4, 3, 5)], dict(affine=True, eps=1e-3),
     lambda xs, w: F.instance_norm(xs[0], weight=w["y.weight"], bias=w["y.bias"], eps=1e-3)),
]


def close(actual, expected, what):
    scale = np.abs(expected).max() if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale, err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_forward_and_gradients_match_pytorch(case):
    name, shapes, attrs, reference, *domain = case
    g = with_loss(single_op_graph(name, [("f32", s) for s in shapes], attrs))
    rng = np.random.default_rng(3)
    feeds = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    if domain == ["positive"]:
        feeds = {k: np.abs(v) + 0.2 for k, v in feeds.items()}
    if domain == ["wide"]:
        feeds = {k: v * 4 for k, v in feeds.items()}
    weights = {k: (rng.standard_normal(v.shape) * 0.5 + (1 if k.endswith("weight") else 0)).astype(np.float32)
               for k, v in initialize(g, 0).items()}
    y_shape = reference([torch.from_numpy(v) for v in feeds.values()],
                        {k: torch.from_numpy(v) for k, v in weights.items()}).shape
    feeds["r"] = rng.standard_normal(tuple(y_shape)).astype(np.float32)

    params = trainable_params(g)
    inputs = list(feeds)[:-1]
    dg, grads = differentiate(g, "loss", params, inputs=inputs)
    dg.outputs = {"y": "y", **{f"d_{k}": v for k, v in grads.items()}}
    got, _ = run(lower(dg, weights), feeds, device="cpu")

    xs = [torch.tensor(feeds[k], dtype=torch.float64, requires_grad=True) for k in inputs]
    ws = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in weights.items()}
    y = reference(xs, ws)
    (y * torch.from_numpy(feeds["r"]).double()).sum().backward()
    close(got["y"], y.detach().numpy(), f"{name}: y")
    for k, t in [*zip(inputs, xs), *ws.items()]:
        close(got[f"d_{k}"], t.grad.numpy(), f"{name}: gradient of {k}")


@pytest.mark.parametrize("shape,size", [((2, 3, 8, 8), (4, 2)), ((2, 3, 5, 7), (3, 3)), ((2, 2, 2, 3), (3, 4)),
                                        ((2, 2, 11), (4,)), ((2, 2, 4, 5, 3), (2, 3, 2))])
def test_adaptive_maxpool_ties_go_to_the_first_maximum_as_pytorch(shape, size):
    """Inputs of three values tie in nearly every window: the ONNX and the numpy reference send
    each window's g to its first maximum in row-major order, as PyTorch's kernel does."""
    g = with_loss(single_op_graph("adaptive_maxpool", [("f32", shape)], dict(size=size)))
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, shape).astype(np.float32)
    r = rng.standard_normal((*shape[:2], *size)).astype(np.float32)
    dg, grads = differentiate(g, "loss", [], inputs=["x0"])
    dg.outputs = {"y": "y", "d_x0": grads["x0"]}
    got, _ = run(lower(dg, {}), {"x0": x, "r": r}, device="cpu")
    numpy_got = execute(dg, {}, {"x0": x.astype(np.float64), "r": r.astype(np.float64)})

    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = getattr(F, f"adaptive_max_pool{len(size)}d")(xt, size)
    (y * torch.from_numpy(r).double()).sum().backward()
    for ours in (got, numpy_got):
        close(ours["y"], y.detach().numpy(), "adaptive_maxpool: y")
        close(ours["d_x0"], xt.grad.numpy(), "adaptive_maxpool: gradient of x0")
