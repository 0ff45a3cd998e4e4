"""Weight-name schemes: the name PyTorch would give each almc parameter, derived from the graph
(its layers in order, the PyTorch module each op is, the block calls each node belongs to),
never listed per parameter; models/README.md states each rule:

- `almc`: almc's own names (`NODE.weight`); always accepted on import as well;
- `torchvision`: torchvision's state_dict names for AlexNet, VGG, ResNet, GoogLeNet, ViT and
  EfficientNet;
- `c3d`: the names of the common C3D port (conv1, conv2, conv3a, ..., fc6, fc7, fc8);
- `pytorch`: a plain PyTorch module with one attribute per layer (LeNet, MLP, RNNs, U-Net, ...).

What each op is in PyTorch comes from its Op record (`torch=TorchModule(...)`); weights.py reads
and writes the files.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import UsageError
from .graph import INPUT, Graph, param_specs
from .ops.registry import TorchModule, lookup

SCHEMES = ("auto", "almc", "torchvision", "c3d", "pytorch")
DESCRIBE = {"almc": "almc names", "torchvision": "torchvision names", "c3d": "C3D port names",
            "pytorch": "PyTorch module names"}
# zoo models by name -> the scheme `auto` picks; any other model gets almc's names
AUTO = [(re.compile(r"AlexNet|VGG\d+|ResNet\d+|GoogLeNet|ViT_\w+|EfficientNet_\w+"), "torchvision"), (re.compile(r"C3D"), "c3d"),
        (re.compile(r"LeNet5|MLP|RNNClassifier|LSTMClassifier|GRUClassifier|Perceptron|LogisticRegression"
                    r"|LinearSVM|Ridge|UNet"), "pytorch")]
RESIDUAL = ("basic_block", "bottleneck")  # std/resnet.alm's residual blocks
INCEPTION = ("inception",)  # std/inception.alm's module
ENCODER, ATTENTION = ("encoder_layer",), ("multi_head_attention",)  # std/transformer.alm's
MBCONV, SQUEEZE = ("mbconv",), ("squeeze_excitation",)  # std/efficientnet.alm's


def resolve_scheme(graph: Graph, scheme: str = "auto") -> str:
    if scheme not in SCHEMES:
        raise UsageError(f"unknown name scheme '{scheme}': use one of {', '.join(SCHEMES)}")
    if scheme != "auto":
        return scheme
    return next((s for pattern, s in AUTO if pattern.fullmatch(graph.name)), "almc")


@dataclass
class Layer:
    """A node that owns parameters, with its parameters' full almc names by local name."""

    node: object
    params: dict = field(default_factory=dict)  # local name (weight, running_mean, ...) -> full name

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def torch(self) -> TorchModule | None:
        return torch_of(self.node)

    @property
    def cls(self) -> str | None:
        return cls_of(self.node)


def torch_of(node) -> TorchModule | None:
    """The PyTorch module a node's op is (its Op record says), or None."""
    op = lookup(node.op)  # None for a graph input
    return op.torch if op is not None else None


def cls_of(node) -> str | None:
    t = torch_of(node)
    return t.cls if t else None


def call_of(node, blocks) -> str | None:
    """The id of the innermost call of one of `blocks` that `node` belongs to, or None: two calls
    of one block (two encoder layers in a loop) have different ids."""
    for name, call in zip(reversed(node.scope), reversed(node.calls)):
        if name in blocks:
            return call
    return None


def ends_block(node, blocks) -> bool:
    """Does `node` join two or more values directly in one of `blocks`' bodies (a residual add,
    an inception concat)? That node ends the block call."""
    return len(node.inputs) >= 2 and bool(node.scope) and node.scope[-1] in blocks


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
    groups: list[tuple[str, list[Layer]]] = []  # (op, layers): one PyTorch module each
    for layer in layers(graph):
        if layer.torch is None or not layer.torch.attr:
            raise _unnamed("pytorch", layer)
        if layer.torch.stacked and groups and groups[-1][0] == layer.op:
            groups[-1][1].append(layer)
        else:
            groups.append((layer.op, [layer]))
    if len(groups) == 1 and not groups[0][1][0].torch.stacked:
        return _module("", groups[0][1][0])
    totals: dict[str, int] = {}
    for kind, _ in groups:
        totals[kind] = totals.get(kind, 0) + 1
    seen: dict[str, int] = {}
    out = {}
    for kind, group in groups:
        seen[kind] = seen.get(kind, 0) + 1
        prefix = group[0].torch.attr + (str(seen[kind]) if totals[kind] > 1 else "")
        for j, layer in enumerate(group):
            out.update(_module(prefix, layer, (lambda local, j=j: f"{local}_l{j}") if layer.torch.stacked
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
        if cls_of(node) == "MaxPoolNd" and stages[-1]:
            stages.append([])
        elif node.id in by_id:
            layer = by_id[node.id]
            if layer.cls == "ConvNd" and not dense:
                stages[-1].append(layer)
            elif layer.cls == "Linear":
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
    ViT-like when it calls std/transformer.alm's `encoder_layer`, EfficientNet-like when it calls
    std/efficientnet.alm's `mbconv`, GoogLeNet-like when it calls std/inception.alm's
    `inception`, ResNet-like when it calls std/resnet.alm's residual blocks, and else AlexNet /
    VGG's two nn.Sequential."""
    nodes = [n for n in graph.nodes() if n.op != INPUT]
    if any(s in ENCODER for n in nodes for s in n.scope):
        return _vit(graph)
    if any(s in MBCONV for n in nodes for s in n.scope):
        return _efficientnet(graph, nodes)
    if any(s in INCEPTION for n in nodes for s in n.scope):
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
        if cls_of(node) == "Flatten":
            part, index = "classifier", 0
            continue
        if node.id in by_id:
            if by_id[node.id].torch is not None and by_id[node.id].torch.stacked:
                raise _unnamed("torchvision", by_id[node.id])
            out.update(_module(f"{part}.{index}", by_id[node.id]))
        index += 1
    return out


def _conv_bn(layer: Layer, numbers: dict[str, int], prefix: str = "") -> dict[str, str]:
    """A conv is numbered in order (conv1, conv2, ...); its batch norm takes the conv's number (bn1)."""
    if layer.cls == "ConvNd":
        numbers[layer.node.id] = len(numbers) + 1
        return _module(f"{prefix}conv{numbers[layer.node.id]}", layer)
    if layer.cls == "BatchNormNd" and layer.node.inputs and layer.node.inputs[0] in numbers:
        return _module(f"{prefix}bn{numbers[layer.node.inputs[0]]}", layer)
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
        if ends_block(node, RESIDUAL):
            open_block = False
    out: dict[str, str] = {}
    numbers: dict[str, int] = {}
    dense = 0
    for layer in outside:
        if layer.cls == "Linear":
            dense += 1
            out.update(_module("fc" if dense == 1 else f"fc{dense}", layer))
        else:
            out.update(_conv_bn(layer, numbers))
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
                out.update(_module(f"{prefix}.downsample.{0 if layer.cls == 'ConvNd' else 1}", layer))
            else:
                out.update(_conv_bn(layer, numbers, f"{prefix}."))
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
            if ends_block(node, INCEPTION):
                continue
            if source in node.inputs or not branches:
                branches.append([])
            branches[-1].append(node)
        for b, branch in enumerate(branches, 1):
            units = [n for n in branch if cls_of(n) in ("ConvNd", "MaxPoolNd")]
            single = len(units) == 1
            for n in branch:
                if n.id not in by_id:
                    continue
                layer = by_id[n.id]
                conv = n if cls_of(n) == "ConvNd" else graph.node(n.inputs[0])
                if layer.cls not in ("ConvNd", "BatchNormNd") or cls_of(conv) != "ConvNd":
                    raise _unnamed("torchvision", layer)
                part = layer.torch.attr  # BasicConv2d's .conv and .bn
                pos = "" if single else f".{units.index(conv)}"
                out.update(_module(f"{name}.branch{b}{pos}.{part}", layer))

    for node in nodes:
        if any(s in INCEPTION for s in node.scope):
            if not module:
                if seen_module and pool_since:
                    stage, letter = stage + 1, -1
                letter += 1
                seen_module, pool_since = True, False
            module.append(node)
            if ends_block(node, INCEPTION):
                close(module)
                module = []
            continue
        if cls_of(node) == "MaxPoolNd":
            pool_since = True
        if node.id in by_id:
            layer = by_id[node.id]
            if layer.cls == "Linear":
                dense += 1
                out.update(_module("fc" if dense == 1 else f"fc{dense}", layer))
            elif layer.cls == "ConvNd":  # BasicConv2d k: conv{k}.conv, conv{k}.bn
                stem[layer.node.id] = len(stem) + 1
                out.update(_module(f"conv{stem[layer.node.id]}.conv", layer))
            elif layer.cls == "BatchNormNd" and layer.node.inputs[0] in stem:
                out.update(_module(f"conv{stem[layer.node.inputs[0]]}.bn", layer))
            else:
                raise _unnamed("torchvision", layer)
    return out


def _vit(graph: Graph) -> dict[str, str]:
    """VisionTransformer: the patch conv is conv_proj; free tensors keep their names (class_token),
    except the positional embedding, which torchvision keeps in its encoder
    (encoder.pos_embedding). Each encoder_layer call is encoder.layers.encoder_layer_{i} (i from
    0): its layer norms are ln_1, ln_2, its attention self_attention (in_proj_weight and
    in_proj_bias, out_proj), its other dense layers mlp.0 and mlp.3. The layer norm after the
    encoder layers is encoder.ln, the classifier heads.head."""
    out: dict[str, str] = {}
    calls: list[str] = []
    seen: dict[str, int] = {}  # per encoder layer: how many layer norms, attention and mlp layers so far
    for layer in layers(graph):
        node, call = layer.node, call_of(layer.node, ENCODER)
        if call is not None:
            if not calls or calls[-1] != call:
                calls.append(call)
                seen = {"norm": 0, "attention": 0, "mlp": 0}
            prefix = f"encoder.layers.encoder_layer_{len(calls) - 1}"
            if layer.cls == "LayerNorm" and seen["norm"] < 2:
                seen["norm"] += 1
                out.update(_module(f"{prefix}.ln_{seen['norm']}", layer))
            elif layer.cls == "Linear" and call_of(node, ATTENTION) is not None and seen["attention"] < 2:
                seen["attention"] += 1
                out.update({full: f"{prefix}.self_attention.in_proj_{local}" for local, full in layer.params.items()}
                           if seen["attention"] == 1 else _module(f"{prefix}.self_attention.out_proj", layer))
            elif layer.cls == "Linear" and seen["mlp"] < 2:
                seen["mlp"] += 1
                out.update(_module(f"{prefix}.mlp.{3 * (seen['mlp'] - 1)}", layer))
            else:
                raise _unnamed("torchvision", layer)
        elif layer.cls == "Parameter":  # an nn.Parameter of the module itself
            out.update({full: "encoder.pos_embedding" if node.id == "pos_embedding" else node.id
                        for full in layer.params.values()})
        elif layer.cls == "ConvNd" and not calls and "conv_proj" not in out.values():
            out.update({full: f"conv_proj.{local}" for local, full in layer.params.items()})
        elif layer.cls == "LayerNorm" and calls and not any(v.startswith("encoder.ln.") for v in out.values()):
            out.update(_module("encoder.ln", layer))
        elif layer.cls == "Linear" and calls and not any(v.startswith("heads.") for v in out.values()):
            out.update(_module("heads.head", layer))
        else:
            raise _unnamed("torchvision", layer)
    return out


def _efficientnet(graph: Graph, nodes) -> dict[str, str]:
    """EfficientNet: `features` is an nn.Sequential of the stem's conv-bn (features.0), one
    nn.Sequential per stage of MBConv blocks, and the last conv-bn; a conv-bn outside the
    blocks is features.{k}.0 and .1. A new stage begins at the first mbconv call and at every
    call without the residual add (the channels or the stride change), as in every torchvision
    EfficientNet, and blocks are numbered from 0 within it. Inside block b of stage s the
    conv-bn pairs and the squeeze-and-excitation are features.{s}.{b}.block.{j} in order: a pair
    as .0 (conv) and .1 (batch norm), the squeeze-and-excitation's two convs as .fc1 and .fc2.
    After the flatten come the classifier's modules (dropout, dense: classifier.1)."""
    by_id = {layer.node.id: layer for layer in layers(graph)}
    residual = {call_of(n, MBCONV) for n in nodes if ends_block(n, MBCONV)}
    out: dict[str, str] = {}
    conv_of: dict[str, str] = {}  # conv node -> the prefix its batch norm shares
    feature, block, unit = -1, -1, -1
    current = excite = None  # the open mbconv call and squeeze-and-excitation call
    fcs = 0
    classifier = None  # the index in the classifier once past the flatten
    for node in nodes:
        if cls_of(node) == "Flatten":
            classifier = 0
            continue
        if classifier is not None:
            if node.id in by_id:
                out.update(_module(f"classifier.{classifier}", by_id[node.id]))
            classifier += 1
            continue
        call = call_of(node, MBCONV)
        if call is not None and call != current:
            feature, block = (feature + 1, 0) if block < 0 or call not in residual else (feature, block + 1)
            unit = -1
        current = call
        if node.id not in by_id:
            continue
        layer = by_id[node.id]
        se = call_of(node, SQUEEZE)
        if layer.cls == "ConvNd" and call is not None and se is not None:
            if se != excite:
                excite, fcs, unit = se, 0, unit + 1
            fcs += 1
            out.update(_module(f"features.{feature}.{block}.block.{unit}.fc{fcs}", layer))
        elif layer.cls == "ConvNd":
            if call is None:
                feature += 1
                conv_of[node.id] = f"features.{feature}"
            else:
                unit += 1
                conv_of[node.id] = f"features.{feature}.{block}.block.{unit}"
            out.update(_module(f"{conv_of[node.id]}.0", layer))
        elif layer.cls == "BatchNormNd" and node.inputs and node.inputs[0] in conv_of:
            out.update(_module(f"{conv_of[node.inputs[0]]}.1", layer))
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
