"""The abstract syntax tree: frozen dataclasses, each with the Span it came from."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import Span


@dataclass(frozen=True)
class Expr:
    span: Span


@dataclass(frozen=True)
class Num(Expr):
    value: int | float


@dataclass(frozen=True)
class Str(Expr):
    value: str


@dataclass(frozen=True)
class Bool(Expr):
    value: bool


@dataclass(frozen=True)
class Name(Expr):
    id: str


@dataclass(frozen=True)
class TupleExpr(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class ListExpr(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Kwarg:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Call(Expr):
    func: str
    func_span: Span
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]


@dataclass(frozen=True)
class BinOp(Expr):
    op: str  # + - * / // % **
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Unary(Expr):
    op: str  # - + not
    operand: Expr


@dataclass(frozen=True)
class Compare(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class BoolOp(Expr):
    op: str  # and / or
    left: Expr
    right: Expr


@dataclass(frozen=True)
class IfElse(Expr):
    cond: Expr
    then: Expr
    other: Expr


@dataclass(frozen=True)
class Slice(Expr):
    """start:stop:step in a subscript; each part may be absent (None)."""
    start: Expr | None
    stop: Expr | None
    step: Expr | None


@dataclass(frozen=True)
class Rest(Expr):
    """`...` in a subscript: every axis not named."""


@dataclass(frozen=True)
class Index(Expr):
    value: Expr
    index: Expr  # one subscript, or a tuple of them (x[:, 0])


@dataclass(frozen=True)
class Attribute(Expr):
    value: Expr
    name: str


# statements


@dataclass(frozen=True)
class Stmt:
    span: Span


@dataclass(frozen=True)
class Input(Stmt):
    name: str
    dtype: str
    dtype_span: Span
    dims: tuple[Expr, ...]


@dataclass(frozen=True)
class Output(Stmt):
    name: str
    value: Expr | None


@dataclass(frozen=True)
class Assign(Stmt):
    targets: tuple[str, ...]
    value: Expr


@dataclass(frozen=True)
class For(Stmt):
    var: str
    iter: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Return(Stmt):
    values: tuple[Expr, ...]


@dataclass(frozen=True)
class Assert(Stmt):
    cond: Expr
    message: str | None


@dataclass(frozen=True)
class ParamDecl:
    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class ModelDef:
    name: str
    params: tuple[ParamDecl, ...]
    body: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[ParamDecl, ...]
    body: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True)
class Setting(Stmt):
    name: str
    name_span: Span
    values: tuple[Expr, ...]
    value: Expr | None  # after "=", as in lr_scale c5 = 0.1


@dataclass(frozen=True)
class TrainDef:
    model: str
    body: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True)
class Import:
    path: str
    span: Span


@dataclass(frozen=True)
class Module:
    file: str
    imports: tuple[Import, ...]
    models: tuple[ModelDef, ...]
    blocks: tuple[BlockDef, ...]
    trains: tuple[TrainDef, ...] = ()


def names_read(e) -> set[str]:
    """Every bare name an expression reads (for the rebinding rule)."""
    out: set[str] = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Name):
            out.add(x.id)
        elif isinstance(x, Kwarg):
            stack.append(x.value)
        elif isinstance(x, Expr):
            for v in vars(x).values():
                if isinstance(v, (Expr, Kwarg)):
                    stack.append(v)
                elif isinstance(v, tuple):
                    stack.extend(i for i in v if isinstance(i, (Expr, Kwarg)))
    return out
