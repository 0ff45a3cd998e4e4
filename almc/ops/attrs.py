"""Attributes: an op's declared attributes (`Attr`), a call's resolved ones (`Attrs`), and the
kinds: how a value written in .alm is checked and normalised.

`coerce(attr, value)` returns the normalised value or raises `TypeError` with a
message that says what was expected; build turns it into a located error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REQUIRED = object()


class Attrs(dict):
    """Resolved attributes of one call; read them as `a.kernel`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    __setattr__ = None  # frozen once resolved


@dataclass(frozen=True)
class Attr:
    name: str
    kind: str  # a key of COERCE below
    default: Any = REQUIRED
    choices: tuple = ()
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def describe_value(v) -> str:
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, int):
        return f"the integer {v}"
    if isinstance(v, float):
        return f"the number {v!r}"
    if isinstance(v, str):
        return f'the string "{v}"'
    if isinstance(v, tuple):
        return f"the tuple {format_value(v)}"
    return type(v).__name__


def format_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        return "(" + ", ".join(format_value(x) for x in v) + ")"
    return str(v)


def _int(v, what):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what} expects an integer, got {describe_value(v)}")
    return v


def _ints(v, what):
    """An int, or a tuple of ints (one per spatial axis)."""
    if isinstance(v, tuple):
        if not v:
            raise TypeError(f"{what} expects an integer or a tuple of integers, got ()")
        return tuple(_int(x, what) for x in v)
    return _int(v, what)


def _float(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{what} expects a number, got {describe_value(v)}")
    return float(v)


def _bool(v, what):
    if not isinstance(v, bool):
        raise TypeError(f"{what} expects true or false, got {describe_value(v)}")
    return v


def _str(v, what):
    if not isinstance(v, str):
        raise TypeError(f"{what} expects a string, got {describe_value(v)}")
    return v


def _pad(v, what):
    """int | (p, p, ...) per axis | ((begin, end), ...) per side | "same" | "valid"."""
    if isinstance(v, str):
        if v not in ("same", "valid"):
            raise TypeError(f'{what} expects an integer, a tuple, "same" or "valid", got {describe_value(v)}')
        return v
    if isinstance(v, tuple):
        if v and all(isinstance(x, tuple) for x in v):
            for x in v:
                if len(x) != 2:
                    raise TypeError(f"{what} expects (begin, end) pairs per axis, got {format_value(x)}")
            return tuple((_int(b, what), _int(e, what)) for b, e in v)
        return _ints(v, what)
    return _int(v, what)


def _shape(v, what):
    if not isinstance(v, tuple):
        v = (v,)
    return tuple(_int(x, what) for x in v)


def _dims(v, what):
    """A shape whose sizes may be symbolic (a name such as "T", from x.shape) or -1."""
    if not isinstance(v, tuple):
        v = (v,)
    for x in v:
        if not isinstance(x, str):
            _int(x, what)
    return v


def _any(v, what):
    return v


# Initialisers: a preset name, or a call with numbers written as the canonical text "normal(0.02)"
# (the builtins normal(...), uniform(...), ... of .alm make that text).
INIT_PRESETS = ("auto", "he", "he_uniform", "glorot", "glorot_normal", "normal", "uniform_fan_in", "zeros", "ones")
INIT_CONSTANT = "constant"  # also the name of the op of scalar constants: init.py names it through this
INIT_CALLS = {"normal": ("std",), "uniform": ("low", "high"), "trunc_normal": ("std",), INIT_CONSTANT: ("value",)}


def parse_init(text: str) -> tuple[str, tuple[float, ...]]:
    """(kind, arguments) of an initialiser; ValueError with a user message when it is none."""
    if text in INIT_PRESETS:
        return text, ()
    kind, _, rest = text.partition("(")
    if kind in INIT_CALLS and rest.endswith(")"):
        try:
            args = tuple(float(x) for x in rest[:-1].split(",")) if rest[:-1].strip() else ()
        except ValueError:
            args = None
        names = INIT_CALLS[kind]
        if args is not None and len(args) == len(names) and all(abs(x) < 1e30 for x in args):
            if kind in ("normal", "trunc_normal") and not args[0] > 0:
                raise ValueError(f"the std must be positive, got {format_value(args[0])}")
            if kind == "uniform" and not args[0] < args[1]:
                raise ValueError(f"needs low < high, got uniform({args[0]:g}, {args[1]:g})")
            return kind, args
        raise ValueError(f"{kind} takes {len(names)} number{'s' * (len(names) > 1)}: {kind}({', '.join(names)})")
    calls = ", ".join(f"{k}({', '.join(v)})" for k, v in INIT_CALLS.items())
    raise ValueError(f"an initialiser is one of {', '.join(map(format_value, INIT_PRESETS))} or a call "
                     f"{calls}; got {format_value(text)}")


def weight_inits() -> tuple:
    """The `init` and `bias_init` arguments of a layer with a weight and a bias."""
    return (Attr("init", "init", "auto", doc='the weight\'s initialiser: "auto" (He before a ReLU, else Glorot), '
                                              'a preset or a call such as normal(0.02)'),
            Attr("bias_init", "init", "zeros", doc="the bias's initialiser"))


def _init(v, what):
    if not isinstance(v, str):
        raise TypeError(f"{what} expects an initialiser such as \"he\" or normal(0.02), got {describe_value(v)}")
    try:
        parse_init(v)
    except ValueError as e:
        raise TypeError(f"{what}: {e}") from None
    return v


COERCE = {"int": _int, "ints": _ints, "float": _float, "bool": _bool, "str": _str, "pad": _pad, "shape": _shape, "dims": _dims, "any": _any,
          "init": _init}


def coerce(attr: Attr, value, opname: str):
    """Raises TypeError(message, attribute name)."""
    what = f"{opname}'s argument '{attr.name}'"
    if value is None and attr.default is None:
        return None
    try:
        out = COERCE[attr.kind](value, what)
    except TypeError as e:
        raise TypeError(e.args[0], attr.name) from None
    if attr.choices and out not in attr.choices:
        opts = ", ".join(format_value(c) for c in attr.choices)
        raise TypeError(f"{what} must be one of {opts}, got {format_value(out)}", attr.name)
    return out
