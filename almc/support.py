"""Does the installed onnxruntime implement every op a model uses?

Loading a whole model into onnxruntime answers it but costs an import and a
session. So we remember, per onnxruntime version and opset, the op types that
have loaded before (in ~/.cache/almc), and only open a session when a model
uses an op type not yet seen. The tests load every registered op's lowering.
"""
from __future__ import annotations

import json
import os
import re
from importlib import metadata
from pathlib import Path

from .errors import AlmError, Diagnostic, Span


def ort_version() -> str:
    for dist in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def cache_file(opset: int) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "almc" / f"onnxruntime-{ort_version()}-opset{opset}.json"


def _known(opset: int) -> set[str]:
    try:
        return set(json.loads(cache_file(opset).read_text())["loaded"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _remember(opset: int, ops: set[str]) -> None:
    f = cache_file(opset)
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        from .files import atomic_write

        atomic_write(f, json.dumps({"loaded": sorted(_known(opset) | ops)}).encode())
    except OSError:
        pass  # a read-only home only costs speed


def ensure_supported(model, opset: int) -> None:
    """Raise a located AlmError if onnxruntime cannot load an op of `model`."""
    used = {n.op_type for n in model.graph.node}
    if used <= _known(opset):
        return
    import onnxruntime as ort

    from .runtime import session

    try:
        session(model.SerializeToString(), device="cpu")
    except (ort.capi.onnxruntime_pybind11_state.NotImplemented, ort.capi.onnxruntime_pybind11_state.Fail) as e:
        m = re.search(r"implementation for (\w+)\((\d+)\) node with name '([^']*)'", str(e))
        if not m:
            raise
        op_type, version, node_name = m.groups()
        node = next((n for n in model.graph.node if n.name == node_name), None)
        span = _span_of(node.doc_string) if node is not None else Span("<model>", 0, 0, 0, 0)
        raise AlmError(Diagnostic(f"onnxruntime {ort_version()} cannot run ONNX op {op_type} at opset {version}",
                                  span, "upgrade onnxruntime, or use another op")) from None
    _remember(opset, used)


def _span_of(doc: str) -> Span:
    m = re.match(r"(.*):(\d+):(\d+)", doc.split(" in ")[0])
    if not m:
        return Span("<model>", 0, 0, 0, 0)
    return Span(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(2)), int(m.group(3)) + 1)
