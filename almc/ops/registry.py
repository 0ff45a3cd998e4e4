"""The op registry: everything the compiler knows about an op, in one record.

An `Op` holds its signature (tensor inputs, typed attributes with defaults), its
shape rule, its parameters, its ONNX lowering, an independent numpy reference
kernel, and its cost (multiply-adds, receptive-field window). Passes look ops up
here by name and never switch on op names. Each op family lives in its own
module under `almc/ops/` and registers its ops at import time.

Rule signatures (attributes arrive as an `Attrs` object, `a.kernel` etc.):

    shape(types: list[TensorType], a) -> TensorType
    params(types, a) -> list[Param]
    lower(g: Emitter, ins: list[str], p: dict[str, str], a, types, out: TensorType) -> str
    reference(xs: list[ndarray], p: dict[str, ndarray], a) -> ndarray
    macs(types, out, a) -> int            # per example
    window(types, a) -> list[Window] | "global" | None   # None: pointwise
    grad(d: autodiff.Diff, node, gy: str) -> (input grads: list[str | None], param grads: dict[str, str])

A gradient rule builds graph nodes (d.op(...)) that compute the gradients of an
op's inputs and parameters from the gradient of its output; backward-only ops
(conv_grad_input, ...) are registered beside their forward op, with their own
shape rule, lowering and numpy reference, and are tested like every other op.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .attrs import Attr, Attrs, coerce, format_value


@dataclass(frozen=True)
class Param:
    """A parameter (trainable) or buffer (not trainable) an op owns."""

    name: str  # local name: weight, bias, running_mean, ...
    shape: tuple[int, ...]
    init: str  # "auto" (He or Glorot by activation), "he", "glorot", "zeros", "ones", "uniform_fan_in", ...
    trainable: bool = True
    fan_in: int = 1
    fan_out: int = 1


@dataclass(frozen=True)
class Window:
    """One spatial axis of a sliding window, for receptive-field arithmetic."""

    kernel: int
    stride: int = 1
    dilation: int = 1
    transposed: bool = False  # transposed conv / upsampling: stride divides the jump


@dataclass(frozen=True)
class TrainingForm:
    """An op's training form, as its `training` rule returns it after adding the nodes to the graph."""

    node: str  # the node that replaces the inference node in the training graph
    describe: str  # what differs, for `almc diff-modes`
    random_input: str | None = None  # a graph input fed a fresh random draw with every batch (dropout's mask)
    draw: Callable | None = None  # (rng, shape) -> float64 array: that draw


@dataclass(frozen=True)
class TorchModule:
    """The PyTorch module an op is, for the weight-name schemes (almc/naming.py)."""

    cls: str  # its class family: "ConvNd", "Linear", "BatchNormNd", "MaxPoolNd", "Flatten", "LSTM", ...
    attr: str = ""  # what a plain PyTorch model calls such a layer (self.conv1, self.fc, self.bn2)
    stacked: bool = False  # consecutive layers of this op are one module (nn.LSTM(num_layers = L))


@dataclass(frozen=True)
class Op:
    name: str
    inputs: tuple[str, ...]
    shape: Callable
    lower: Callable
    reference: Callable
    attrs: tuple[Attr, ...] = ()
    params: Callable | None = None
    macs: Callable | None = None
    window: Callable | None = None
    variadic: bool = False  # the last input repeats (concat)
    init_before: str | None = None  # an activation: what "auto" init is in a layer feeding it ("he" or "glorot")
    transparent: bool = False  # init looks through it for the activation (batchnorm, dropout)
    doc: str = ""
    category: str = "layer"
    examples: tuple = field(default=())  # argument tuples for the registry test (see tests/test_ops.py)
    grad: Callable | None = None  # reverse-mode rule; None: not differentiable
    grad_inputs: tuple[int, ...] | None = None  # inputs with a gradient (None: all); e.g. not labels
    # Modes beyond inference, which the passes look up here instead of naming ops:
    training: Callable | None = None  # (g, node) -> TrainingForm | None: adds the node's training form to g
    state_update: Callable | None = None  # (d: Diff, node) -> {buffer: next value} in the training step
    fold: Callable | None = None  # (g, node, weights, overwrite) -> None: folds it into the layer before, at export
    out_channel_axis: Callable | None = None  # rank -> the output axis whose channel c is weight[c] x + bias[c]
    size_hint: Callable | None = None  # (graph, node) -> str | None: how this layer would keep its input's size
    torch: TorchModule | None = None  # the PyTorch module it is (weight-name schemes)
    leaf: bool = False  # a value the compiler makes (constant, parameter): not drawn, not a summary op, never unused

    def attr(self, name: str) -> Attr | None:
        return next((x for x in self.attrs if x.name == name), None)


OPS: dict[str, Op] = {}
# Rewrites of a lowered model's node list that an op family needs across nodes (ops/pool.py:
# a pool and its gradient's recomputation of it, made mergeable); lower() runs each in turn.
REWRITES: list[Callable[[list], None]] = []


def register(op: Op) -> Op:
    assert op.name not in OPS, f"op {op.name} registered twice"
    OPS[op.name] = op
    return op


def rewrites() -> list[Callable[[list], None]]:
    _load_all()
    return REWRITES


def lookup(name: str) -> Op | None:
    _load_all()
    return OPS.get(name)


def all_ops() -> dict[str, Op]:
    _load_all()
    return OPS


_loaded = False


def _load_all() -> None:
    """Import every op family module once (they register themselves)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil

    import almc.ops as pkg

    for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if m.name not in ("registry", "attrs", "emit", "common"):
            importlib.import_module(f"almc.ops.{m.name}")


def resolve_attrs(op: Op, given: dict) -> Attrs:
    """Fill defaults and coerce each attribute; raises TypeError / KeyError with a user message."""
    out = {}
    for attr in op.attrs:
        if attr.name in given:
            out[attr.name] = coerce(attr, given[attr.name], op.name)
        elif attr.required:
            raise KeyError(f"{op.name} needs the argument '{attr.name}'")
        else:
            out[attr.name] = attr.default
    unknown = set(given) - {a.name for a in op.attrs}
    if unknown:
        raise KeyError(f"{op.name} has no argument '{sorted(unknown)[0]}'")
    return Attrs(out)


def signature(op: Op) -> str:
    """How a call reads: `conv(x, channels, kernel, stride = 1, ...)` without the name."""
    parts = list(op.inputs) if not op.variadic else [f"{op.inputs[0]}..."]
    for a in op.attrs:
        parts.append(a.name if a.required else f"{a.name} = {format_value(a.default) if a.default is not None else 'none'}")
    return ", ".join(parts)


CATEGORIES = ("layer", "pooling", "normalization", "activation", "arithmetic", "math", "shape", "resample", "reduction",
              "loss")
INTERNAL = ("gradient",)  # made by the compiler (gradients, updates), not written by users


def user_callable(op: Op) -> bool:
    """Whether .alm may call it: not a value the compiler makes, not a gradient or update op."""
    return not op.leaf and op.category not in INTERNAL


def ops_markdown() -> str:
    """The op reference of docs/language.md (and `almc ops`), grouped by category."""
    out = []
    ops = [o for o in all_ops().values() if user_callable(o)]
    for cat in CATEGORIES + tuple(sorted({o.category for o in ops} - set(CATEGORIES))):
        group = sorted((o for o in ops if o.category == cat), key=lambda o: o.name)
        if not group:
            continue
        out += [f"### {cat}", "", "| call | what it does |", "|---|---|"]
        for o in group:
            doc = o.doc.replace("|", "\\|")
            out.append(f"| `{o.name}({signature(o)})` | {doc} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # python -m almc.ops.registry docs/language.md: refresh the op reference
    import re
    import sys
    from pathlib import Path

    from almc.ops import registry  # this file runs as __main__; the ops register in the package's module

    doc = Path(sys.argv[1])
    text = re.sub(r"<!-- ops:begin -->.*<!-- ops:end -->",
                  lambda m: "<!-- ops:begin -->\n" + registry.ops_markdown() + "<!-- ops:end -->", doc.read_text(),
                  flags=re.S)
    doc.write_text(text)
