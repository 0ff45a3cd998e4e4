"""Tensor subscripts (x[:, 0], x[..., 1:4], x[:, ::2], x[:, -1] on an axis of unknown size):
the compiled model against numpy's indexing, and the gradient graph lowered to ONNX against
PyTorch's autograd of the same indexing, at two sizes of the symbolic axis T."""
from __future__ import annotations

import numpy as np
import pytest

import almc
from almc.autodiff import differentiate
from almc.errors import AlmError
from almc.graph import INPUT, Node
from almc.lower import lower
from almc.ops.registry import Attrs
from almc.runtime import run
from almc.types import TensorType

SOURCE = """
model M {
    input x: f32[N, 5, 6]
    input s: f32[N, T, 4]
    output a = x[:, 0]
    output b = x[..., 1:4]
    output c = x[:, ::2, -1]
    output d = x[:, 1:, 1:5:3][:, -2:]
    output e = s[:, -1]
    output f = s[:, 1:]
    output g = s[:, -3:-1, 2:]
    output h = s[:, 0:2, ::3]
    output i = s[:, 1]
}
"""
NUMPY = {
    "a": lambda x, s: x[:, 0], "b": lambda x, s: x[..., 1:4], "c": lambda x, s: x[:, ::2, -1],
    "d": lambda x, s: x[:, 1:, 1:5:3][:, -2:], "e": lambda x, s: s[:, -1], "f": lambda x, s: s[:, 1:],
    "g": lambda x, s: s[:, -3:-1, 2:], "h": lambda x, s: s[:, 0:2, ::3], "i": lambda x, s: s[:, 1],
}


def test_shapes_are_inferred():
    m = almc.load(SOURCE)
    got = {k: str(v) for k, v in m.outputs.items()}
    assert got == {"a": "f32[N, 6]", "b": "f32[N, 5, 3]", "c": "f32[N, 3]", "d": "f32[N, 2, 2]",
                   "e": "f32[N, 4]", "f": "f32[N, T-1, 4]", "g": "f32[N, 2, 2]", "h": "f32[N, 2, 2]",
                   "i": "f32[N, 4]"}


@pytest.mark.parametrize("t", [3, 7])
def test_values_and_gradients_match_numpy_and_pytorch(t):
    torch = pytest.importorskip("torch")
    m = almc.load(SOURCE)
    rng = np.random.default_rng(t)
    feeds = {"x": rng.standard_normal((2, 5, 6)).astype(np.float32),
             "s": rng.standard_normal((2, t, 4)).astype(np.float32)}
    got = m.run(feeds, device="cpu")
    for k, f in NUMPY.items():
        np.testing.assert_array_equal(got[k], f(feeds["x"], feeds["s"]), err_msg=k)

    # loss = sum_k sum(out_k * r_k): its gradient through every subscript, lowered to ONNX
    g = m.graph.copy()
    total = None
    for k, out in m.graph.outputs.items():
        shape = NUMPY[k](feeds["x"], feeds["s"]).shape
        r = f"r_{k}"
        g.add(Node(r, INPUT, type=TensorType("f32", g.node(out).type.dims)))
        feeds[r] = rng.standard_normal(shape).astype(np.float32)
        prod = g.add(Node(f"{k}_r", "mul", (out, r), Attrs(), type=g.node(out).type)).id
        part = g.add(Node(f"{k}_sum", "sum", (prod,), Attrs(axis=None, keepdims=False),
                          type=TensorType("f32", ()))).id
        total = part if total is None else g.add(Node(f"{k}_total", "add", (total, part), Attrs(),
                                                      type=TensorType("f32", ()))).id
    dg, grads = differentiate(g, total, [], inputs=["x", "s"])
    dg.outputs = {"dx": grads["x"], "ds": grads["s"]}
    ours, _ = run(lower(dg), feeds, device="cpu")

    x = torch.tensor(feeds["x"], requires_grad=True)
    s = torch.tensor(feeds["s"], requires_grad=True)
    loss = sum((NUMPY[k](x, s) * torch.from_numpy(feeds[f"r_{k}"])).sum() for k in NUMPY)
    loss.backward()
    np.testing.assert_allclose(ours["dx"], x.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours["ds"], s.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("expr,message", [
    ("x[0]", "1:3: the batch axis N cannot be indexed or sliced"),
    ("x[:, 5]", "1:6: index 5 is out of range for axis 1 of f32[N, 5, T]"),
    ("x[:, 3:3]", "1:6: the slice of axis 1 of f32[N, 5, T] is empty"),
    ("x[:, ::0]", "1:8: a slice step must be positive, got 0"),
    ("x[:, :, ::2]", "1:9: a slice step needs the size of axis 2 known, got f32[N, 5, T]"),
    ("x[:, :, -2:3]", "1:9: axis 2 of f32[N, 5, T] has no known size: a slice of it counts both bounds from "
                      "the front or both from the back (negative), start before end"),
    ("x[..., 0, ...]", "1:11: a subscript takes at most one '...'"),
    ("x[:, :, :, 0]", "1:1: 4 subscripts for a tensor of rank 3 (f32[N, 5, T])"),
    ("x[:, 1.5]", "1:6: a tensor index must be an integer, got the number 1.5"),
    ("x[:, \"a\":]", "1:6: a slice bound must be an integer, got the string \"a\""),
])
def test_bad_subscripts_are_located(expr, message):
    src = f"model M {{\n input x: f32[N, 5, T]\n output y =\n{expr}\n}}\n"
    with pytest.raises(AlmError) as e:
        almc.load(src)
    d = e.value.diagnostics[0]
    assert f"{d.span.line - 3}:{d.span.col}: {d.message}" == message


def test_chunk_and_split_give_torch_s_pieces():
    torch = pytest.importorskip("torch")
    m = almc.load("""
model M {
    input x: f32[N, 5, 14]
    q, k, v = chunk(x, 3)
    a, b = split(x, (2, 3), axis = 1)
    pieces = split(x, 4)
    output y = concat(q, k, v, axis = -1)
    output vv = v
    output bb = b
    output last = pieces[3]
    output n = stack(pieces[0], pieces[1], pieces[2], axis = -1)
}""")
    x = np.random.default_rng(0).standard_normal((2, 5, 14)).astype(np.float32)
    got = m.run({"x": x}, device="cpu")
    t = torch.from_numpy(x)
    q, k, v = torch.chunk(t, 3, dim=-1)  # 5, 5, 4
    assert v.shape[-1] == 4
    np.testing.assert_array_equal(got["y"], x)
    np.testing.assert_array_equal(got["vv"], v.numpy())
    np.testing.assert_array_equal(got["bb"], torch.split(t, (2, 3), dim=1)[1].numpy())
    parts = torch.split(t, 4, dim=-1)
    np.testing.assert_array_equal(got["last"], parts[3].numpy())
    np.testing.assert_array_equal(got["n"], torch.stack(parts[:3], -1).numpy())


@pytest.mark.parametrize("expr,message", [
    ("chunk(x, 0, axis = 1)", "1:10: chunk needs a positive number of chunks, got 0"),
    ("split(x, (2, 2), axis = 1)", "1:10: split sizes [2, 2] add up to 4, not to the axis size 5"),
    ("split(x, 2, axis = 0)", "1:1: split cannot split the batch axis N"),
    ("chunk(x, 2, axis = 2)", "1:1: chunk needs the size of the axis known, got axis 2 of f32[N, 5, T]"),
    ("chunk(x, 2, dim = 1)", "1:13: chunk has no argument 'dim'"),
])
def test_bad_chunks_are_located(expr, message):
    test_bad_subscripts_are_located(expr, message)


def test_reshape_keeps_one_symbolic_size():
    m = almc.load("""
model M {
    input x: f32[N, T, 12]
    h = reshape(x, (x.shape[1], 3, 4))     # [N, T, 3, 4]
    output y = reshape(permute(h, (0, 2, 1, 3)), (3, -1))   # [N, 3, T*4]
    output z = reshape(h, (-1, 2))          # [N, T*6, 2]
}""")
    assert {k: str(v) for k, v in m.outputs.items()} == {"y": "f32[N, 3, T*4]", "z": "f32[N, T*6, 2]"}
    for t in (2, 5):
        x = np.random.default_rng(t).standard_normal((2, t, 12)).astype(np.float32)
        got = m.run({"x": x}, device="cpu")
        h = x.reshape(2, t, 3, 4)
        np.testing.assert_array_equal(got["y"], h.transpose(0, 2, 1, 3).reshape(2, 3, -1))
        np.testing.assert_array_equal(got["z"], h.reshape(2, -1, 2))
        # d/dx sum(y * r) through both reshapes and the permute: r taken back to x's layout
        r = np.random.default_rng(9).standard_normal(got["y"].shape).astype(np.float32)
        g = m.graph.copy()
        g.add(Node("r", INPUT, type=TensorType("f32", g.node("y").type.dims)))
        g.add(Node("yr", "mul", ("y", "r"), Attrs(), type=g.node("y").type))
        g.add(Node("loss", "sum", ("yr",), Attrs(axis=None, keepdims=False), type=TensorType("f32", ())))
        dg, grads = differentiate(g, "loss", [], inputs=["x"])
        dg.outputs = {"dx": grads["x"]}
        ours, _ = run(lower(dg), {"x": x, "r": r}, device="cpu")
        np.testing.assert_array_equal(ours["dx"], r.reshape(2, 3, t, 4).transpose(0, 2, 1, 3).reshape(2, t, 12))


@pytest.mark.parametrize("expr,message", [
    ("reshape(x, (x.shape[2], -1))", "1:1: reshape keeps at most one size unknown at compile time (a name or -1), "
                                     "got ('T', -1)"),
    ("reshape(x, (7, 4))", "1:1: reshape: cannot reshape f32[N, 5, T] into [N, 7, 4]"),
    ("reshape(x, (\"S\", 5))", "1:1: reshape: the size S is not an axis of f32[N, 5, T]"),
])
def test_bad_symbolic_reshapes_are_located(expr, message):
    test_bad_subscripts_are_located(expr, message)
