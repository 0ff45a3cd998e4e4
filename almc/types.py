"""Tensor types with symbolic dimensions.

A dimension is an `int` (known) or a `str` (symbolic, such as the batch `N` or a
sequence length `T`). Shape rules pass symbolic dimensions through and ask for
concrete ones with `known()` where arithmetic needs a number.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .errors import ShapeError

Dim = int | str

# .alm dtype name -> (numpy dtype name, onnx TensorProto enum name)
DTYPES = {
    "f32": ("float32", "FLOAT"),
    "f64": ("float64", "DOUBLE"),
    "f16": ("float16", "FLOAT16"),
    "i64": ("int64", "INT64"),
    "i32": ("int32", "INT32"),
    "bool": ("bool", "BOOL"),
}


def onnx_elem_type(dtype: str) -> int:
    """The ONNX TensorProto element type of an .alm dtype (onnx is imported only when a model is
    lowered, not when it is only checked or summarised)."""
    from onnx import TensorProto

    return getattr(TensorProto, DTYPES[dtype][1])


@dataclass(frozen=True)
class TensorType:
    dtype: str
    dims: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.dims)

    @property
    def numpy_dtype(self) -> str:
        return DTYPES[self.dtype][0]

    def per_example(self) -> int:
        """Elements per example: the product of every dimension after the batch."""
        return prod(d if isinstance(d, int) else 1 for d in self.dims[1:])

    def with_dims(self, dims) -> "TensorType":
        return TensorType(self.dtype, tuple(dims))

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.dims)}]"


def known(d: Dim, what: str) -> int:
    if isinstance(d, str):
        raise ShapeError(f"{what} must be a known size, got the symbolic dimension {d}")
    return d


def broadcast(a: TensorType, b: TensorType) -> TensorType:
    """numpy/ONNX multidirectional broadcasting of two types."""
    ra, rb = a.dims[::-1], b.dims[::-1]
    out = []
    for i in range(max(len(ra), len(rb))):
        x = ra[i] if i < len(ra) else 1
        y = rb[i] if i < len(rb) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ShapeError(f"cannot broadcast {a} with {b}: dimension {x} against {y}")
    if a.dtype != b.dtype:
        raise ShapeError(f"operands have different dtypes: {a} and {b}")
    return TensorType(a.dtype, tuple(out[::-1]))
