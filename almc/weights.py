"""Weights that move between almc and PyTorch: `almc weights import` and `almc weights export`.

Import reads a state_dict (`.npz`, or `.pt` / `.pth` through `torch.load(weights_only=True)`
when torch is installed), an ONNX model's initializers, or another almc checkpoint,
maps its names onto the model's parameters and writes an almc checkpoint (the format
of almc/checkpoint.py). Export writes a checkpoint's parameters as a
`.npz` under almc's names or under one of the name schemes below.

A name scheme gives every almc parameter the name PyTorch would give it. The names
are derived from the almc graph (its ops in order, the block calls each node belongs
to), never listed per parameter; models/README.md states each rule:

- `almc`: almc's own names (`NODE.weight`); always accepted on import as well;
- `torchvision`: torchvision's state_dict names for AlexNet, VGG, ResNet and GoogLeNet;
- `c3d`: the names of the common C3D port (conv1, conv2, conv3a, ..., fc6, fc7, fc8);
- `pytorch`: a plain PyTorch module with one attribute per layer (LeNet, MLP, RNNs, U-Net, ...).

Files are never unpickled: `.npz` is read with `allow_pickle=False` and `.pt` only
with `weights_only=True`.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import WeightMatch, match_weights
from .errors import FileError, UsageError
from .graph import INPUT, Graph, param_specs

SCHEMES = ("auto", "almc", "torchvision", "c3d", "pytorch")
DESCRIBE = {"almc": "almc names", "torchvision": "torchvision names", "c3d": "C3D port names",
            "pytorch": "PyTorch module names"}
# zoo models by name -> the scheme `auto` picks; any other model gets almc's names
AUTO = [(re.compile(r"AlexNet|VGG\d+|ResNet\d+|GoogLeNet"), "torchvision"), (re.compile(r"C3D"), "c3d"),
        (re.compile(r"LeNet5|MLP|RNNClassifier|LSTMClassifier|GRUClassifier|Perceptron|LogisticRegression"
                    r"|LinearSVM|Ridge|UNet"), "pytorch")]
RECURRENT = ("rnn", "lstm", "gru")
RESIDUAL = ("basic_block", "bottleneck")  # std/resnet.alm's residual blocks
COUNTER = "num_batches_tracked"  # PyTorch's batch-norm step counter: almc has no such buffer
PT_SUFFIXES = (".pt", ".pth")


def resolve_scheme(graph: Graph, scheme: str = "auto") -> str:
    if scheme not in SCHEMES:
        raise UsageError(f"unknown name scheme '{scheme}': use one of {', '.join(SCHEMES)}")
    if scheme != "auto":
        return scheme
    return next((s for pattern, s in AUTO if pattern.fullmatch(graph.name)), "almc")


# -- the name schemes -------------------------------------------------------------------------

@dataclass
class Layer:
    """A node that owns parameters, with its parameters' full almc names by local name."""

    node: object
    params: dict = field(default_factory=dict)  # local name (weight, running_mean, ...) -> full name

    @property
    def op(self) -> str:
        return self.node.op


def layers(graph: Graph) -> list[Layer]:
    """The parameterised nodes in graph order."""
    out: dict[str, Layer] = {}
    for nid, full, _ in param_specs(graph):
        out.setdefault(nid, Layer(graph.node(nid))).params[full[len(nid) + 1:]] = full
    return list(out.values())


def _module(prefix: str, layer: Layer, suffix=lambda local: local) -> dict[str, str]:
    """almc name -> PyTorch name for one layer that is the PyTorch module `prefix`."""
    dot = f"{prefix}." if prefix else ""
    return {full: dot + suffix(local) for local, full in layer.params.items()}


def _unnamed(scheme: str, layer: Layer) -> UsageError:
    return UsageError(f"{scheme} names: cannot name the parameters of {layer.node.id} ({layer.op}); "
                      "use --names almc")


def pytorch_names(graph: Graph) -> dict[str, str]:
    """A plain PyTorch module with one attribute per layer, in graph order: conv -> convK,
    conv_transpose -> upconvK, dense -> fcK, batchnorm -> bnK, embedding -> embeddingK, numbered
    from 1 when a kind occurs more than once and bare (`fc`) when it occurs once. A run of
    recurrent layers of one kind is one stacked module (nn.LSTM(num_layers = L)): its j-th
    layer's weight_ih is `lstm.weight_ih_l{j}`. A model of a single non-recurrent layer is that
    module itself (nn.Linear: `weight`, `bias`)."""
    kinds = {"conv": "conv", "conv_transpose": "upconv", "dense": "fc", "batchnorm": "bn",
             "embedding": "embedding", **{r: r for r in RECURRENT}}
    groups: list[tuple[str, list[Layer]]] = []  # (kind, layers): one PyTorch module each
    for layer in layers(graph):
        if layer.op not in kinds:
            raise _unnamed("pytorch", layer)
        if layer.op in RECURRENT and groups and groups[-1][0] == layer.op:
            groups[-1][1].append(layer)
        else:
            groups.append((layer.op, [layer]))
    if len(groups) == 1 and groups[0][0] not in RECURRENT:
        return _module("", groups[0][1][0])
    totals: dict[str, int] = {}
    for kind, _ in groups:
        totals[kind] = totals.get(kind, 0) + 1
    seen: dict[str, int] = {}
    out = {}
    for kind, group in groups:
        seen[kind] = seen.get(kind, 0) + 1
        prefix = kinds[kind] + (str(seen[kind]) if totals[kind] > 1 else "")
        for j, layer in enumerate(group):
            out.update(_module(prefix, layer, (lambda local, j=j: f"{local}_l{j}") if kind in RECURRENT
                               else (lambda local: local)))
    return out


def c3d_names(graph: Graph) -> dict[str, str]:
    """The C3D port's names (Tran et al. 2015; the Caffe model and its PyTorch ports): the
    convolutions of stage s (stages end at a max pool, counted from 1) are `conv{s}` when the
    stage has one and `conv{s}a`, `conv{s}b`, ... when it has several; the fully connected
    layers continue the numbering after the last stage (fc6, fc7, fc8 after 5 stages)."""
    stages: list[list[Layer]] = [[]]
    dense: list[Layer] = []
    by_id = {layer.node.id: layer for layer in layers(graph)}
    for node in graph.nodes():
        if node.op == "maxpool" and stages[-1]:
            stages.append([])
        elif node.id in by_id:
            layer = by_id[node.id]
            if layer.op == "conv" and not dense:
                stages[-1].append(layer)
            elif layer.op == "dense":
                dense.append(layer)
            else:
                raise _unnamed("c3d", layer)
    stages = [s for s in stages if s]
    out = {}
    for s, stage in enumerate(stages, 1):
        for i, layer in enumerate(stage):
            out.update(_module(f"conv{s}" + ("abcdefgh"[i] if len(stage) > 1 else ""), layer))
    for k, layer in enumerate(dense):
        out.update(_module(f"fc{len(stages) + 1 + k}", layer))
    return out


def torchvision_names(graph: Graph) -> dict[str, str]:
    """torchvision's state_dict names; the rule follows the model's structure:
    GoogLeNet-like when it calls std/inception.alm's `inception`, ResNet-like when it calls
    std/resnet.alm's residual blocks, and else AlexNet / VGG's two nn.Sequential."""
    nodes = [n for n in graph.nodes() if n.op != INPUT]
    if any("inception" in n.scope for n in nodes):
        return _googlenet(graph, nodes)
    if any(s in RESIDUAL for n in nodes for s in n.scope):
        return _resnet(graph, nodes)
    return _sequential(graph, nodes)


def _sequential(graph: Graph, nodes) -> dict[str, str]:
    """AlexNet, VGG: the nodes before the flatten are `features`, those after it `classifier`;
    each node is one module of its nn.Sequential (conv, relu, maxpool, dropout, dense), so a
    layer's index is its position among them: features.0, features.3, ..., classifier.6."""
    by_id = {layer.node.id: layer for layer in layers(graph)}
    out, part, index = {}, "features", 0
    for node in nodes:
        if node.op == "flatten":
            part, index = "classifier", 0
            continue
        if node.id in by_id:
            if by_id[node.id].op in RECURRENT:
                raise _unnamed("torchvision", by_id[node.id])
            out.update(_module(f"{part}.{index}", by_id[node.id]))
        index += 1
    return out


def _conv_bn(layer: Layer, numbers: dict[str, int], conv: str, bn: str) -> dict[str, str]:
    """A conv is numbered in order (conv1, conv2, ...); its batch norm takes the conv's number (bn1)."""
    if layer.op == "conv":
        numbers[layer.node.id] = len(numbers) + 1
        return _module(f"{conv}{numbers[layer.node.id]}", layer)
    if layer.op == "batchnorm" and layer.node.inputs and layer.node.inputs[0] in numbers:
        return _module(f"{bn}{numbers[layer.node.inputs[0]]}", layer)
    raise _unnamed("torchvision", layer)


def _resnet(graph: Graph, nodes) -> dict[str, str]:
    """ResNet: the stem's conv and batch norm are conv1 / bn1 and the classifier fc. Each call of
    basic_block / bottleneck (ended by its add) is one torchvision block; a new stage (layer1,
    layer2, ...) begins at the first block and at every block with a downsample, as in every
    torchvision ResNet, and blocks are numbered from 0 within it. Inside a block the convs of
    the main path are conv1, conv2 (, conv3) in order with bn1, bn2 (, bn3); the shortcut's conv
    and batch norm are downsample.0 and downsample.1."""
    by_id = {layer.node.id: layer for layer in layers(graph)}
    blocks: list[list[Layer]] = []
    outside, open_block = [], False
    for node in nodes:
        residual = any(s in RESIDUAL for s in node.scope)
        if node.id in by_id:
            if residual:
                if not open_block:
                    blocks.append([])
                    open_block = True
                blocks[-1].append(by_id[node.id])
            else:
                outside.append(by_id[node.id])
        if node.op == "add" and node.scope and node.scope[-1] in RESIDUAL:
            open_block = False
    out: dict[str, str] = {}
    numbers: dict[str, int] = {}
    dense = 0
    for layer in outside:
        if layer.op == "dense":
            dense += 1
            out.update(_module("fc" if dense == 1 else f"fc{dense}", layer))
        else:
            out.update(_conv_bn(layer, numbers, "conv", "bn"))
    stage, index = 0, 0
    for b, block in enumerate(blocks):
        downsample = any("shortcut" in layer.node.scope for layer in block)
        if b == 0 or downsample:
            stage, index = stage + 1, 0
        else:
            index += 1
        prefix = f"layer{stage}.{index}"
        numbers = {}
        for layer in block:
            if "shortcut" in layer.node.scope:
                out.update(_module(f"{prefix}.downsample.{0 if layer.op == 'conv' else 1}", layer))
            else:
                out.update(_conv_bn(layer, numbers, f"{prefix}.conv", f"{prefix}.bn"))
    return out


def _googlenet(graph: Graph, nodes) -> dict[str, str]:
    """GoogLeNet: the BasicConv2d layers outside the inception modules are conv1, conv2, ... in
    order (`conv1.conv`, `conv1.bn`) and the classifier fc. Each inception call (ended by its
    concat) is inception{S}{m}: S starts at 3 (the paper's stage numbering) and grows at each
    max pool between modules, m = a, b, c, ... within a stage. Its branches are branch1..branch4
    in order, each beginning at a node that reads the module's input; within a branch the max
    pool and the BasicConv2d layers are numbered as torchvision's nn.Sequential (branch2.0,
    branch2.1, branch4.1) unless the branch is a single BasicConv2d (branch1)."""
    by_id = {layer.node.id: layer for layer in layers(graph)}
    out: dict[str, str] = {}
    stem: dict[str, int] = {}
    dense = 0
    stage, letter, seen_module, pool_since = 3, -1, False, False
    module: list = []  # the nodes of the open inception call

    def close(module):
        name = f"inception{stage}{'abcdefghij'[letter]}"
        source = module[0].inputs[0]
        branches: list[list] = []
        for node in module:
            if node.op == "concat":
                continue
            if source in node.inputs or not branches:
                branches.append([])
            branches[-1].append(node)
        for b, branch in enumerate(branches, 1):
            units = [n for n in branch if n.op in ("conv", "maxpool")]
            single = len(units) == 1
            for n in branch:
                if n.id not in by_id:
                    continue
                layer = by_id[n.id]
                conv = n if n.op == "conv" else graph.node(n.inputs[0])
                if layer.op not in ("conv", "batchnorm") or conv.op != "conv":
                    raise _unnamed("torchvision", layer)
                part = "conv" if n.op == "conv" else "bn"
                pos = "" if single else f".{units.index(conv)}"
                out.update(_module(f"{name}.branch{b}{pos}.{part}", layer))

    for node in nodes:
        if "inception" in node.scope:
            if not module:
                if seen_module and pool_since:
                    stage, letter = stage + 1, -1
                letter += 1
                seen_module, pool_since = True, False
            module.append(node)
            if node.op == "concat" and node.scope[-1] == "inception":
                close(module)
                module = []
            continue
        if node.op == "maxpool":
            pool_since = True
        if node.id in by_id:
            layer = by_id[node.id]
            if layer.op == "dense":
                dense += 1
                out.update(_module("fc" if dense == 1 else f"fc{dense}", layer))
            elif layer.op == "conv":  # BasicConv2d k: conv{k}.conv, conv{k}.bn
                stem[layer.node.id] = len(stem) + 1
                out.update(_module(f"conv{stem[layer.node.id]}.conv", layer))
            elif layer.op == "batchnorm" and layer.node.inputs[0] in stem:
                out.update(_module(f"conv{stem[layer.node.inputs[0]]}.bn", layer))
            else:
                raise _unnamed("torchvision", layer)
    return out


def name_map(graph: Graph, scheme: str = "auto") -> dict[str, str]:
    """almc parameter name -> its name under the scheme, for every parameter and buffer."""
    scheme = resolve_scheme(graph, scheme)
    if scheme == "almc":
        return {full: full for _, full, _ in param_specs(graph)}
    names = {"torchvision": torchvision_names, "c3d": c3d_names, "pytorch": pytorch_names}[scheme](graph)
    missing = [full for _, full, _ in param_specs(graph) if full not in names]
    if missing:
        raise UsageError(f"{scheme} names: no name for {missing[0]}; use --names almc")
    twice = {}
    for a, b in names.items():
        if b in twice:
            raise UsageError(f"{scheme} names: {twice[b]} and {a} would both be '{b}'; use --names almc")
        twice[b] = a
    return names


# -- reading weight files ---------------------------------------------------------------------

class Arrays(dict):
    """Named arrays read from a file; `folded`: an almc ONNX export without batch-norm nodes."""

    def __init__(self, items=(), folded: bool = False):
        super().__init__(items)
        self.folded = folded


def _as_array(path, name, value) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind not in "fiub":
        raise FileError(path, f"array '{name}' has dtype {a.dtype}, not numbers")
    return a


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("a single array, not an archive of named arrays")
            data = {k: z[k] for k in z.files}
    except FileError:
        raise
    except Exception as e:  # zip, npy header and pickle refusals all mean an unusable file
        raise FileError(path, f"not a readable .npz archive ({type(e).__name__}: {str(e)[:160]})") from None
    if "meta" in data and any(k.startswith("param:") for k in data):  # an almc checkpoint
        return {k[6:]: v for k, v in data.items() if k.startswith("param:")}
    return {k: _as_array(path, k, v) for k, v in data.items()}


def _read_pt(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise FileError(path, "reading a .pt file needs PyTorch, which is not installed here; convert it "
                              "to .npz where torch is: np.savez('weights.npz', **{k: v.numpy() for k, v in "
                              "torch.load('weights.pt', weights_only=True).items()})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # never a full unpickle
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise FileError(path, "not loadable with torch.load(weights_only=True): save the model's "
                              f"state_dict() rather than the module ({type(e).__name__}: {first})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise FileError(path, f"expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            out[str(k)] = (v.float() if v.is_floating_point() and v.dtype != torch.float64 else v).numpy()
    if not out:
        raise FileError(path, "the file holds no tensors")
    return out


def _read_onnx(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
        weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    except Exception as e:  # protobuf and external-data errors
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise FileError(path, f"not a readable ONNX model ({type(e).__name__}: {first})") from None
    props = {p.key: p.value for p in model.metadata_props}
    # almc's export folds batch norm into the layer before it unless --no-fold: those weights are
    # then not the model's parameters
    folded = "almc.model" in props and not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    return Arrays(weights, folded=folded)


def read_weights(path) -> Arrays:
    """Named arrays from a .npz (a state_dict or an almc checkpoint), a .pt / .pth state_dict or
    an ONNX model's initializers, in the file's order; never unpickles."""
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".npz": _read_npz, ".onnx": _read_onnx, **{s: _read_pt for s in PT_SUFFIXES}}
    if suffix not in readers:
        raise UsageError(f"cannot tell the format of {path}: use .npz, .pt / .pth or .onnx")
    if not path.is_file():
        raise FileError(path, "no such file")
    weights = readers[suffix](path)
    folded = getattr(weights, "folded", False)
    if weights and all(k.startswith("module.") for k in weights):  # saved from nn.DataParallel
        weights = {k[7:]: v for k, v in weights.items()}
    return Arrays(weights, folded=folded)


# -- import -------------------------------------------------------------------------------------

@dataclass
class ImportReport:
    source: str
    model: str
    scheme: str
    count: int  # arrays in the file
    match: object  # train.WeightMatch, its names as the file has them (almc's name beside when different)
    skipped: list[str]  # PyTorch's num_batches_tracked buffers

    @property
    def exact(self) -> bool:
        return not (self.match.fresh or self.match.mismatched or self.match.unused)

    def text(self) -> str:
        lines = [f"read {self.count} arrays from {self.source} ({DESCRIBE[self.scheme]} for {self.model})",
                 self.match.report()]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} {COUNTER} buffer{'s' * (len(self.skipped) != 1)} "
                         "(PyTorch's batch-norm step counters; almc keeps none)")
        return "\n".join(lines)


def import_weights(model, path, names: str = "auto", seed: int | None = None):
    """(weights for every parameter of `model`, ImportReport). Parameters the file lacks, or has
    in another shape, keep the model's initial values (from `seed`)."""
    graph = model.graph
    scheme = resolve_scheme(graph, names)
    external = name_map(graph, scheme)  # almc -> file name
    to_almc = {v: k for k, v in external.items()}
    file_weights = read_weights(path)
    # shapes only (no memory, no random draws): the initial values are drawn below for the
    # parameters the file does not provide (each parameter has its own seeded generator)
    own = {full: np.broadcast_to(np.float32(0), p.shape) for _, full, p in param_specs(graph)}
    mapped, shown, skipped, unexpected = {}, {}, [], []
    for key, array in file_weights.items():
        target = key if key in own else to_almc.get(key)
        if target is not None and target not in mapped:
            mapped[target] = array
            shown[target] = key
        elif key.rsplit(".", 1)[-1] == COUNTER:
            skipped.append(key)
        else:
            unexpected.append(key)
    norms = [full for full in own if full.endswith(".running_mean")]
    if file_weights.folded and norms and not any(n in mapped for n in norms):
        raise FileError(path, f"this almc ONNX model of {graph.name} was compiled with batch norm folded into the "
                              "layers before it (the default), so its weights are not the model's parameters; "
                              "compile it with --no-fold, or import the checkpoint it was compiled from")
    weights, m = match_weights(own, mapped)
    if m.fresh or m.mismatched:
        initial = model.initial_weights(seed)
        for name in m.fresh + [n for n, _, _ in m.mismatched]:
            weights[name] = initial[name]

    def label(almc_name: str) -> str:
        ext = shown.get(almc_name, external.get(almc_name, almc_name))
        return ext if ext == almc_name else f"{ext} (almc: {almc_name})"

    report = ImportReport(str(path), graph.name, scheme, len(file_weights),
                          WeightMatch([label(n) for n in m.loaded], [label(n) for n in m.fresh],
                                      [(label(n), a, b) for n, a, b in m.mismatched], unexpected + m.unused),
                          skipped)
    return weights, report


# -- export -------------------------------------------------------------------------------------

def export_weights(weights: dict, graph: Graph | None = None, names: str = "almc") -> dict[str, np.ndarray]:
    """A checkpoint's parameters under almc's names, or under a scheme's (which needs the model's graph)."""
    if names == "almc":
        return dict(weights)
    if graph is None:
        raise UsageError(f"--names {names} needs the model the checkpoint belongs to: --alm FILE.alm")
    external = name_map(graph, names)
    return {external.get(k, k): v for k, v in weights.items()}


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
