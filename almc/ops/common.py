"""Arithmetic shared by the sliding-window ops (conv, pooling, transposed conv), and a MatMul
along one axis by a constant matrix (adaptive pooling, padding's gradient)."""
from __future__ import annotations

from math import ceil, floor

from ..errors import ShapeError


def per_axis(v, n: int, what: str) -> tuple[int, ...]:
    """Expand an int to n axes, or check a tuple has n entries."""
    if isinstance(v, tuple):
        if len(v) != n:
            raise ShapeError(f"{what} has {len(v)} entries but the input has {n} spatial axes")
        return v
    return (v,) * n


def positive(vals, what: str) -> None:
    for v in vals:
        if v <= 0:
            raise ShapeError(f"{what} must be positive, got {v}")


def resolve_pads(pad, n: int, size, kernel, stride, dilation) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis, with "same" (output = ceil(in / stride)) and "valid"."""
    if pad == "valid":
        return [(0, 0)] * n
    if pad == "same":
        out = []
        for i in range(n):
            if isinstance(size[i], str):
                raise ShapeError(f'pad = "same" needs a known spatial size, got {size[i]}')
            eff = (kernel[i] - 1) * dilation[i] + 1
            total = max((ceil(size[i] / stride[i]) - 1) * stride[i] + eff - size[i], 0)
            out.append((total // 2, total - total // 2))
        return out
    if isinstance(pad, tuple) and pad and isinstance(pad[0], tuple):
        if len(pad) != n:
            raise ShapeError(f"pad has {len(pad)} (begin, end) pairs but the input has {n} spatial axes")
        pads = list(pad)
    else:
        pads = [(p, p) for p in per_axis(pad, n, "pad")]
    for b, e in pads:
        if b < 0 or e < 0:
            raise ShapeError(f"pad must not be negative, got {b if b < 0 else e}")
    return pads


def window_out(size, kernel, stride, dilation, pads, ceil_mode=False, what="window"):
    """Output length of a sliding window along one axis (size may be symbolic)."""
    if isinstance(size, str):
        raise ShapeError(f"the spatial size must be known, got the symbolic dimension {size}")
    eff = (kernel - 1) * dilation + 1
    span = size + pads[0] + pads[1] - eff
    if span < 0:
        size_text = f"{eff} after dilation" if dilation > 1 else str(eff)
        raise ShapeError(f"the {what} ({size_text}) is larger than the padded input ({size + pads[0] + pads[1]})",
                         f"pad = {(eff - 1) // 2} keeps the size {size}" if what == "kernel" else None)
    out = (ceil if ceil_mode else floor)(span / stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pads[0]:
        out -= 1  # the last window must start inside the input (PyTorch / ONNX rule)
    return out


def count_elements(g, shape: str, axes: str) -> str:
    """ONNX: how many elements lie along `axes` (an int64 tensor) of a tensor whose Shape is
    `shape`, as a float32 scalar counted at run time (the batch is symbolic)."""
    return g.node("Cast", [g.node("ReduceProd", [g.node("Gather", [shape, axes])], keepdims=0)], to=1)


def onnx_pads(pads) -> list[int]:
    """[(b0, e0), (b1, e1)] -> [b0, b1, e0, e1], ONNX's order."""
    return [b for b, _ in pads] + [e for _, e in pads]


def np_pad(x, pads, value=0.0):
    import numpy as np

    return np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads], constant_values=value)


def matmul_along(g, t, m, axis, rank, out):
    """m [out, in] applied along axis `axis` of t (y = m x there): one MatMul, on the last axis."""
    matrix = g.const(f"matrix{axis}", m.T)
    if axis == rank - 1:
        return g.node("MatMul", [t, matrix], out=out)
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    moved = g.node("MatMul", [g.node("Transpose", [t], perm=perm), matrix])
    return g.node("Transpose", [moved], perm=perm, out=out)


def matmul_along_axes(g, t, matrices: dict, rank: int) -> str:
    """matmul_along for each {axis: m} in turn, the last result named g.out (Identity for none)."""
    if not matrices:
        return g.node("Identity", [t], out=g.out)
    for k, (axis, m) in enumerate(matrices.items()):
        t = matmul_along(g, t, m, axis, rank, g.out if k == len(matrices) - 1 else None)
    return t


def np_along_axes(x, matrices: dict):
    """numpy: each {axis: m [out, in]} applied along its axis (y = m x there)."""
    import numpy as np

    for axis, m in matrices.items():
        x = np.moveaxis(np.tensordot(m, np.moveaxis(x, axis, 0), axes=1), 0, axis)
    return x
