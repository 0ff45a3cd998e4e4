from __future__ import annotations

import numpy as np
import pytest

import almc
from almc.errors import AlmError
from almc.init import initialize
from almc.lower import lower
from almc.reference import execute
from almc.runtime import run


def errors_of(text: str, **kw) -> list[tuple[int, int, str]]:
    """(line, col, message) of every error almc reports for `text`."""
    with pytest.raises(AlmError) as e:
        almc.load(text, **kw)
    return [(d.span.line, d.span.col, d.message) for d in e.value.diagnostics if d.severity == "error"]


def the_error(text: str, **kw):
    """The single error diagnostic for `text`."""
    with pytest.raises(AlmError) as e:
        almc.load(text, **kw)
    errs = [d for d in e.value.diagnostics if d.severity == "error"]
    assert len(errs) == 1, [str(d.message) for d in errs]
    return errs[0]


def onnx_matches_reference(model, seed=0, batch=2, rtol=1e-5):
    """Run the compiled model in onnxruntime and the numpy reference executor on the same inputs."""
    g = model.graph
    weights = initialize(g, seed)
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in g.inputs:
        t = g.node(name).type
        dims = [batch if isinstance(d, str) else d for d in t.dims]
        feeds[name] = (rng.integers(0, 5, dims) if t.dtype.startswith("i") else rng.standard_normal(dims)).astype(t.numpy_dtype)
    expected = execute(g, weights, feeds)
    actual, _ = run(lower(g, weights), feeds, device="cpu")
    for k in expected:
        scale = max(1.0, float(np.abs(expected[k]).max()))
        np.testing.assert_allclose(actual[k], expected[k], rtol=rtol, atol=rtol * scale)
    return actual


# a training section that freezes a layer (1,040 parameters) and scales another's learning rate
FROZEN = """
model M {
    input x: f32[N, 64]
    a = dense(x, 16) |> relu
    b = dense(a, 16) |> relu
    output logits = dense(b, 10)
}
train M {
    input label: i64[N]
    minimize mean(cross_entropy(logits, label)) + 1e-3 * l2(weights)
    optimizer sgd(lr = 0.1, momentum = 0.9)
    freeze a
    lr_scale b = 0.5
    epochs 2
}
"""


def random_feeds(proto, rng, classes: int, batch: int, skip=(), scale: float = 1.0) -> dict:
    """Random values for a model's inputs (those not in `skip`): integer labels below `classes`,
    dropout masks that keep 3 in 4 (scaled by 4/3), normal float data times `scale`."""
    import onnx

    feeds = {}
    for i in proto.graph.input:
        if i.name in skip:
            continue
        dims = [d.dim_value or batch for d in i.type.tensor_type.shape.dim]
        if i.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            feeds[i.name] = rng.integers(0, classes, dims)
        elif i.name.startswith("dropout_mask."):
            feeds[i.name] = ((rng.random(dims) >= 0.25) / 0.75).astype(np.float32)
        else:
            feeds[i.name] = (rng.standard_normal(dims) * scale).astype(np.float32)
    return feeds


def trained_folder(tmp_path_factory, name: str, model: str, *options: str):
    """A fresh folder holding `model` as net.alm, trained by `almc train` into its checkpoint ck
    with `options` (for a module-scoped fixture: one training for a test file)."""
    from almc.cli import main

    d = tmp_path_factory.mktemp(name)
    (d / "net.alm").write_text(model)
    argv = ["train", str(d / "net.alm"), "--no-progress", "--checkpoint", str(d / "ck")]
    assert main(argv + [o.format(d=d) for o in options]) == 0
    return d
