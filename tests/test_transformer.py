"""std/transformer.alm against torch.nn: multi-head self-attention and the encoder layer
(post-norm and pre-norm, relu and gelu, causal or not), PyTorch's weights copied in by the names its modules
give them; outputs and the gradients of sum(y * r) (the gradient graph lowered to ONNX and run
in onnxruntime) to 1e-4 relative."""
from __future__ import annotations

import numpy as np
import pytest

import almc
from almc.autodiff import differentiate
from almc.graph import INPUT, Node, trainable_params
from almc.lower import lower
from almc.ops.registry import Attrs
from almc.runtime import run
from almc.types import TensorType

torch = pytest.importorskip("torch")
DIM, HEADS, FF, L = 16, 4, 32, 6


def source(call):
    return f'import "std/transformer.alm"\nmodel M {{\n    input x: f32[N, {L}, {DIM}]\n    output y = {call}\n}}\n'


def torch_order(norm_first):
    attn = ["self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
            "self_attn.out_proj.bias"]
    norm1, norm2 = ["norm1.weight", "norm1.bias"], ["norm2.weight", "norm2.bias"]
    ff = ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]
    return norm1 + attn + norm2 + ff if norm_first else attn + norm1 + ff + norm2


CASES = [
    ("multi_head_attention(x, 4)", None, lambda: torch.nn.MultiheadAttention(DIM, HEADS, batch_first=True),
     ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]),
    *[(f'encoder_layer(x, 4, 32, activation = "{act}", norm_first = {str(nf).lower()})', None,
       (lambda act=act, nf=nf: torch.nn.TransformerEncoderLayer(DIM, HEADS, FF, activation=act, batch_first=True,
                                                               norm_first=nf)), torch_order(nf))
      for act in ("relu", "gelu") for nf in (False, True)],
    ("multi_head_attention(x, 4, causal = true)", "causal",
     lambda: torch.nn.MultiheadAttention(DIM, HEADS, batch_first=True),
     ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]),
    ('encoder_layer(x, 4, 32, norm_first = true, causal = true)', "causal",
     lambda: torch.nn.TransformerEncoderLayer(DIM, HEADS, FF, batch_first=True, norm_first=True), torch_order(True)),
]


@pytest.mark.parametrize("call,mask,module,names", CASES, ids=[c[0].split("(")[0] + f"-{i}" for i, c in enumerate(CASES)])
def test_matches_torch(call, mask, module, names, tmp_path):
    torch.manual_seed(0)
    mod = module().double().eval()
    with torch.no_grad():  # non-trivial norms and biases
        for p in mod.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    m = almc.load(source(call))
    ours = list(m.initial_weights())
    assert len(ours) == len(names)
    state = mod.state_dict()
    weights = {o: state[t].numpy().astype(np.float32) for o, t in zip(ours, names)}
    assert sum(w.size for w in weights.values()) == sum(p.numel() for p in mod.parameters())

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, L, DIM)).astype(np.float32)
    r = rng.standard_normal((3, L, DIM)).astype(np.float32)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    future = torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64) if mask else None
    if isinstance(mod, torch.nn.MultiheadAttention):
        yt = mod(xt, xt, xt, attn_mask=future, need_weights=False)[0]
    else:
        yt = mod(xt, src_mask=future, is_causal=mask is not None)
    (yt * torch.from_numpy(r).double()).sum().backward()

    g = m.graph.copy()
    out = g.outputs["y"]
    g.add(Node("r", INPUT, type=TensorType("f32", g.node(out).type.dims)))
    g.add(Node("yr", "mul", (out, "r"), Attrs(), type=g.node(out).type))
    g.add(Node("loss", "sum", ("yr",), Attrs(axis=None, keepdims=False), type=TensorType("f32", ())))
    params = trainable_params(g)
    dg, grads = differentiate(g, "loss", params, inputs=["x"])
    dg.outputs = {"y": out, "dx": grads["x"], **{f"d_{k}": grads[k] for k in params}}
    got, _ = run(lower(dg, weights), {"x": x, "r": r}, device="cpu")

    def close(a, b, what):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=what)

    close(got["y"], yt.detach().numpy(), "y")
    close(got["dx"], xt.grad.numpy(), "dx")
    grads_t = {n: p.grad for n, p in mod.named_parameters()}
    for o, t in zip(ours, names):
        close(got[f"d_{o}"], grads_t[t].numpy(), f"gradient of {o} ({t})")
