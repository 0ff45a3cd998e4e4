"""Weights that move between almc and PyTorch: `almc weights import` and `almc weights export`.

Import reads a state_dict (`.npz`, or `.pt` / `.pth` through `torch.load(weights_only=True)`
when torch is installed), an ONNX model's initializers, or another almc checkpoint,
maps its names onto the model's parameters and writes an almc checkpoint (the format
of almc/checkpoint.py). Export writes a checkpoint's parameters as a
`.npz` under almc's names or under one of the name schemes.

The name schemes (almc's, torchvision's, the C3D port's, a plain PyTorch module's) are in
almc/naming.py.

Files are never unpickled: `.npz` is read with `allow_pickle=False` and `.pt` only
with `weights_only=True`.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import WeightMatch, match_weights
from .errors import FileError, UsageError
from .files import check_npz
from .graph import Graph, param_specs
from .naming import DESCRIBE, name_map, resolve_scheme
from .ops.registry import lookup

COUNTER = "num_batches_tracked"  # PyTorch's batch-norm step counter: almc has no such buffer
PT_SUFFIXES = (".pt", ".pth")


# -- reading weight files ---------------------------------------------------------------------

class Arrays(dict):
    """Named arrays read from a file; `folded`: an almc ONNX export without batch-norm nodes;
    `by_almc`: the file is almc's own export, so its names are almc's."""

    def __init__(self, items=(), folded: bool = False, by_almc: bool = False):
        super().__init__(items)
        self.folded = folded
        self.by_almc = by_almc


def _as_array(path, name, value) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind not in "fiub":
        raise FileError(path, f"array '{name}' has dtype {a.dtype}, not numbers")
    return a


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    check_npz(path)
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
    return Arrays(weights, folded=folded, by_almc="almc.model" in props)


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
    folded, by_almc = getattr(weights, "folded", False), getattr(weights, "by_almc", False)
    if weights and all(k.startswith("module.") for k in weights):  # saved from nn.DataParallel
        weights = {k[7:]: v for k, v in weights.items()}
    return Arrays(weights, folded=folded, by_almc=by_almc)


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
    # the parameters of layers that fold into the one before them at export (batch norm's)
    folds = [full for nid, full, _ in param_specs(graph) if lookup(graph.node(nid).op).fold]
    if file_weights.folded and folds and not any(n in mapped for n in folds):
        raise FileError(path, f"this almc ONNX model of {graph.name} was compiled with batch norm folded into the "
                              "layers before it (the default), so its weights are not the model's parameters; "
                              "compile it with --no-fold, or import the checkpoint it was compiled from")
    for target, array in mapped.items():
        if array.dtype.kind not in "f":
            raise FileError(path, f"array '{shown[target]}' is {array.dtype}, but {target} is a float parameter: "
                                  "save the weights as floats")
        if not np.isfinite(array).all():
            raise FileError(path, f"array '{shown[target]}' holds NaN or infinite values; nothing was written")
    weights, m = match_weights(own, mapped)
    if m.fresh or m.mismatched:
        initial = model.initial_weights(seed)
        for name in m.fresh + [n for n, _, _ in m.mismatched]:
            weights[name] = initial[name]

    def label(almc_name: str) -> str:
        ext = shown.get(almc_name, external.get(almc_name, almc_name))
        return ext if ext == almc_name else f"{ext} (almc: {almc_name})"

    shown_scheme = "almc" if file_weights.by_almc else scheme  # almc's export names its own parameters
    report = ImportReport(str(path), graph.name, shown_scheme, len(file_weights),
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
