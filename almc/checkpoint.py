"""The checkpoint file: an .npz of the parameters (`param:NAME`), the optimiser state
(`state:NAME`) and a JSON `meta` record (model, epoch, step, history, source hash), written
atomically and read without unpickling; and how a file's weights are matched onto a model.
`almc train` writes one per epoch; `almc weights import` writes one from foreign weights."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FileError
from .files import atomic_write, check_npz
from .graph import Graph

CHECKPOINT = "last.npz"  # the file name in a --checkpoint folder


def save_checkpoint(path: Path, graph: Graph, weights, state, epoch: int, step: int, history,
                    data: dict | None = None) -> None:
    """`data`: how the training images were prepared (data.Dataset.image_record), for predict."""
    from .lower import source_hash

    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"param:{k}": v for k, v in weights.items()}
    arrays.update({f"state:{k}": v for k, v in state.items()})
    meta = {"model": graph.name, "epoch": epoch, "step": step, "history": history, "source_sha256": source_hash(graph)}
    if data is not None:
        meta["data"] = data
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def write_checkpoint(path, graph: Graph, weights: dict) -> None:
    """A checkpoint of these weights alone (epoch 0, no optimiser state)."""
    save_checkpoint(Path(path), graph, weights, {}, 0, 0, [])


def read_checkpoint(path) -> tuple[dict, dict, dict]:
    """(weights, optimiser state, meta) from a checkpoint; never unpickles."""
    path = Path(path)
    if not path.exists():
        raise FileError(path, "no such checkpoint")
    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(bytes(data.pop("meta")).decode())
    except Exception as e:  # zip, npy and json errors all mean a damaged file
        raise FileError(path, f"not a readable almc checkpoint ({type(e).__name__}: {str(e)[:120]})") from None
    weights = {k[6:]: v for k, v in data.items() if k.startswith("param:")}
    state = {k[6:]: v for k, v in data.items() if k.startswith("state:")}
    return weights, state, meta


@dataclass
class WeightMatch:
    """How a weights file maps onto a model, by parameter name (fine-tuning, imports)."""

    loaded: list[str]
    fresh: list[str]  # in the model, not in the file: initialised from the seed
    mismatched: list[tuple[str, tuple, tuple]]  # (name, shape in the file, shape in the model)
    unused: list[str]  # in the file, not in the model

    def report(self) -> str:
        lines = [f"loaded {len(self.loaded)} parameters by name"]
        lines += [f"  shape mismatch, initialised fresh: {n} is {list(a)} in the file, {list(b)} in the model"
                  for n, a, b in self.mismatched]
        lines += [f"  not in the file, initialised fresh: {n}" for n in self.fresh]
        lines += [f"  in the file, not in the model (skipped): {n}" for n in self.unused]
        return "\n".join(lines)


def match_weights(model_weights: dict, file_weights: dict) -> tuple[dict, WeightMatch]:
    """Start from the model's own weights and take every file weight of the same name and shape."""
    out = dict(model_weights)
    loaded, mismatched = [], []
    for name, ref in model_weights.items():
        if name in file_weights:
            if tuple(file_weights[name].shape) == tuple(ref.shape):
                out[name] = file_weights[name].astype(np.float32)
                loaded.append(name)
            else:
                mismatched.append((name, tuple(file_weights[name].shape), tuple(ref.shape)))
    fresh = [n for n in model_weights if n not in file_weights]
    unused = [n for n in file_weights if n not in model_weights]
    return out, WeightMatch(loaded, fresh, mismatched, unused)


def check_weights(path, graph: Graph, weights: dict, expected: dict) -> None:
    """A checkpoint from a different model is refused, naming the first mismatching parameter."""
    for name, ref in expected.items():
        if name not in weights:
            raise FileError(path, f"the checkpoint has no parameter '{name}': it was saved from another model")
        if tuple(weights[name].shape) != tuple(ref.shape):
            raise FileError(path, f"parameter '{name}' is {list(weights[name].shape)} in the checkpoint but "
                                  f"{list(ref.shape)} in {graph.name}: it was saved from another model")
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise FileError(path, f"the checkpoint has a parameter '{extra[0]}' that {graph.name} does not: "
                              "it was saved from another model")


def load_checkpoint(path: Path, graph: Graph, weights: dict, state: dict):
    w, s, meta = read_checkpoint(path)
    check_weights(path, graph, w, weights)
    for k, v in state.items():
        if k in s and s[k].shape != v.shape:
            raise FileError(path, f"optimiser state '{k}' does not match this model")
    state = {k: s.get(k, v) for k, v in state.items()}
    return ({k: v.astype(np.float32) for k, v in w.items()}, state, int(meta["epoch"]), int(meta["step"]),
            list(meta.get("history", [])))
