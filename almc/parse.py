"""Parsing: .alm text -> syntax.Module, with a Span on every node.

Lark (LALR) parses with positions; a non-recursive transformer turns the tree
into frozen dataclasses, so very long expressions do not exhaust the stack.
Syntax errors become located diagnostics that say what was expected.
"""
from __future__ import annotations

import math
import os
import stat
from dataclasses import fields, is_dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import syntax as s
from .errors import AlmError, Diagnostic, Span, elide, normalize_newlines, source_lines

MAX_NESTING = 200  # brackets deeper than this are refused before parsing
MAX_INT_DIGITS = 4000  # Python refuses to convert more than 4300
MAX_EXPR_DEPTH = 100_000  # expressions deeper than this are refused after parsing (cli.py sizes the stack)


def grammar_text() -> str:
    return resources.files("almc.grammar").joinpath("alm.lark").read_text()


@lru_cache(maxsize=1)
def parser() -> Lark:
    text = grammar_text()
    options = dict(parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=True)
    try:  # building the LALR tables is slow (docs/performance.md); Lark caches them by grammar hash in the temp folder
        return Lark(text, cache=True, **options)
    except OSError:
        return Lark(text, **options)


MAX_SOURCE_BYTES = 16 << 20  # a .alm file; the largest model in models/ is under 5 KB


def read_source(path: str | Path, shown: str | None = None) -> str:
    """Read a source file as UTF-8 text. Only a regular file is read (a FIFO would block forever,
    a device never end), at most MAX_SOURCE_BYTES; binary or undecodable files are model errors."""
    shown = shown or str(path)
    where = Span(shown, 0, 0, 0, 0)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise AlmError(Diagnostic(f"{shown} is a directory, not a .alm file", where))
        if not stat.S_ISREG(st.st_mode):
            raise AlmError(Diagnostic(f"{shown} is not a regular file (a FIFO, device or socket), not a .alm file",
                                      where))
        if st.st_size > MAX_SOURCE_BYTES:
            raise AlmError(Diagnostic(f"{shown} is {st.st_size:,} bytes: more than a model file's "
                                      f"{MAX_SOURCE_BYTES:,}", where))
        with open(path, "rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:  # it grew while we read it
            raise AlmError(Diagnostic(f"{shown} is more than a model file's {MAX_SOURCE_BYTES:,} bytes", where))
    except FileNotFoundError:
        raise AlmError(Diagnostic(f"no such file: {shown}", where)) from None
    except OSError as e:
        raise AlmError(Diagnostic(f"cannot read {shown}: {e.strerror}", where)) from None
    return source_text(data, shown)


def source_text(data: bytes, shown: str) -> str:
    """A source file's bytes as text: UTF-8 without NUL bytes, or a located error."""
    if b"\0" in data:
        line, col = _position(data, data.index(b"\0"))
        raise AlmError(Diagnostic("this is a binary file, not .alm text (it contains a NUL byte)",
                                  Span(shown, line, col, line, col + 1)))
    try:
        return normalize_newlines(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        line, col = _position(data, e.start)
        raise AlmError(Diagnostic(f"the file is not valid UTF-8 (byte 0x{data[e.start]:02x})",
                                  Span(shown, line, col, line, col + 1), "save the file as UTF-8"))


def _position(data: bytes, offset: int) -> tuple[int, int]:
    before = data[:offset]
    return before.count(b"\n") + 1, offset - (before.rfind(b"\n") + 1) + 1


def parse(text: str, file: str = "<string>") -> s.Module:
    if text.startswith("\ufeff"):
        text = text[1:]
    _check_nesting(text, file)
    try:
        tree = parser().parse(text)
    except UnexpectedInput as e:
        raise AlmError(_syntax_error(e, text, file), {file: text}) from None
    try:
        module = ToAst(file).transform(tree)
    except VisitError as e:  # an error raised inside the transformer
        if isinstance(e.orig_exc, AlmError):
            e.orig_exc.sources.setdefault(file, text)
            raise e.orig_exc from None
        raise e.orig_exc from None
    _check_depth(module, file, text)
    return module


def _check_depth(module: s.Module, file: str, text: str) -> None:
    """Refuse an expression nested deeper than MAX_EXPR_DEPTH (50,000 unary minuses, a chain of
    100,000 `**`): build evaluates expressions recursively, and its stack is bounded. Iterative,
    so that the check itself cannot run out of stack."""
    depth = {}
    stack = [(module, False)]
    while stack:
        node, done = stack.pop()
        kids = [v for f in fields(node) for v in _children(getattr(node, f.name))]
        if not done:
            stack.append((node, True))
            stack.extend((k, False) for k in kids)
            continue
        d = 1 + max((depth[id(k)] for k in kids), default=0) if isinstance(node, s.Expr) else 0
        if d > MAX_EXPR_DEPTH:
            raise AlmError(Diagnostic(f"an expression nested more than {MAX_EXPR_DEPTH:,} levels deep", node.span,
                                      "split it into named steps"), {file: text})
        depth[id(node)] = d


def _children(v):
    if isinstance(v, tuple):
        return [x for x in v if is_dataclass(x) and not isinstance(x, Span)]
    return [v] if is_dataclass(v) and not isinstance(v, Span) else []


def _check_nesting(text: str, file: str) -> None:
    depth = 0
    line, col = 1, 0
    in_comment = in_string = False
    for ch in text:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
            in_comment = in_string = False
            continue
        if in_comment:
            continue
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch == "#":
            in_comment = True
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise AlmError(Diagnostic(f"brackets are nested more than {MAX_NESTING} levels deep",
                                          Span(file, line, col, line, col + 1),
                                          "name intermediate values instead of nesting"), {file: text})
        elif ch in ")]}":
            depth = max(depth - 1, 0)


KEYWORDS = {"import", "model", "block", "train", "input", "output", "for", "in", "return", "if", "else", "and",
            "or", "not", "true", "false", "assert"}
TOKEN_NAMES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string", "$END": "end of file",
}
OPERATORS = {"ADD_OP", "MUL_OP", "POW", "COMPARE", "DOT", "LSQB", "IF", "AND", "OR", "__ANON_0"}
EXPRESSION_STARTS = {"NAME", "INT", "FLOAT", "STRING", "LPAR", "LSQB", "TRUE", "FALSE", "NOT", "ADD_OP"}


def _describe_expected(expected: set[str]) -> str:
    """A short, readable list: operators and expression starts are summarised."""
    p = parser()
    by_name = {t.name: t for t in p.terminals}
    expected = set(expected)
    words = []
    if "NAME" in expected and len(expected & EXPRESSION_STARTS) > 3:
        words.append("an expression")
        expected -= EXPRESSION_STARTS
    ops = {e for e in expected if e in OPERATORS or (e in by_name and by_name[e].pattern.value == "|>")}
    if len(ops) > 2:
        words.append("an operator")
        expected -= ops
    for e in sorted(expected):
        if e in TOKEN_NAMES:
            words.append(TOKEN_NAMES[e])
        elif e in by_name and by_name[e].pattern.type == "str":
            words.append(f"'{by_name[e].pattern.value}'")
        else:
            words.append(e.lower())
    words = sorted(set(words), key=lambda n: (not n.startswith("'"), n))
    if len(words) > 6:
        words = words[:6] + ["..."]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _token_text(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    return f"'{tok}'" if len(tok) <= 30 else f"'{tok[:30]}...'"


def _syntax_error(e: UnexpectedInput, text: str, file: str) -> Diagnostic:
    if isinstance(e, UnexpectedCharacters):
        line, col = e.line, e.column
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        what = f"unexpected character '{ch}'" if ch.isprintable() else f"unexpected character U+{ord(ch):04X}"
        hint = "strings use double quotes" if ch == "'" else None
        if ch == '"':
            what, hint = "this string is not closed on its line", 'end it with "'
        return Diagnostic(what, Span(file, line, col, line, col + 1), hint)
    if isinstance(e, UnexpectedToken) and e.token.type != "$END":
        tok = e.token
        span = Span(file, tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + 1)
        hint = None
        if str(tok) in ")]}":
            opener = _unclosed(text[: tok.start_pos])
            pairs = {"(": ")", "[": "]", "{": "}"}
            if opener and pairs[opener[2]] != str(tok):
                ol, oc, ch = opener
                return Diagnostic(f"unexpected '{tok}': the '{ch}' at {ol}:{oc} is not closed", span,
                                  f"close it with '{pairs[ch]}' first")
        if tok.type == "NAME" and "EQUAL" in e.expected:
            hint = "keyword arguments are written name = value"
        elif str(tok) in KEYWORDS and "NAME" in (getattr(e, "accepts", None) or e.expected):
            hint = f"'{tok}' is a reserved word; choose another name"
        expected = getattr(e, "accepts", None) or e.expected
        return Diagnostic(f"unexpected {_token_text(tok)}, expected {_describe_expected(expected)}", span, hint)
    # end of input
    lines = _lines(text) or [""]
    line, col = len(lines), len(lines[-1]) + 1
    expected = e.expected if isinstance(e, (UnexpectedToken, UnexpectedEOF)) else set()
    opener = _unclosed(text)
    if opener:
        ol, oc, ch = opener
        closing = {"(": ")", "[": "]", "{": "}"}[ch]
        return Diagnostic(f"'{ch}' is never closed", Span(file, ol, oc, ol, oc + 1),
                          f"add the matching '{closing}' (the file ends at line {line})")
    return Diagnostic(f"unexpected end of file, expected {_describe_expected(set(expected))}",
                      Span(file, line, max(col - 1, 1), line, col))


def _lines(text: str) -> list[str]:
    """The lines as positions count them (errors.source_lines), without the empty one after a
    final newline."""
    lines = list(source_lines(text))
    return lines[:-1] if len(lines) > 1 and lines[-1] == "" else lines


def _unclosed(text: str):
    """The innermost bracket still open at the end of the text (line, col, char)."""
    stack = []
    for ln, line in enumerate(_lines(text), 1):
        in_string = False
        for cn, ch in enumerate(line, 1):
            if ch == '"':
                in_string = not in_string
            elif in_string:
                continue
            elif ch == "#":
                break
            elif ch in "([{":
                stack.append((ln, cn, ch))
            elif ch in ")]}" and stack:
                stack.pop()
    return stack[-1] if stack else None


def _span(file: str, meta) -> Span:
    if getattr(meta, "empty", True):
        return Span(file, 0, 0, 0, 0)
    return Span(file, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(file: str, t: Token) -> Span:
    return Span(file, t.line, t.column, t.end_line, t.end_column)


@v_args(inline=True, meta=True)
class ToAst(Transformer_NonRecursive):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def sp(self, meta):
        return _span(self.file, meta)

    # top level
    def start(self, meta, *items):
        return s.Module(self.file, tuple(i for i in items if isinstance(i, s.Import)),
                        tuple(i for i in items if isinstance(i, s.ModelDef)),
                        tuple(i for i in items if isinstance(i, s.BlockDef)),
                        tuple(i for i in items if isinstance(i, s.TrainDef)))

    def import_stmt(self, meta, path):
        return s.Import(path[1:-1], self.sp(meta))

    def model_def(self, meta, name, params, *body):
        return s.ModelDef(str(name), params or (), tuple(body), _tok_span(self.file, name))

    def block_def(self, meta, name, params, *body):
        return s.BlockDef(str(name), params, tuple(body), _tok_span(self.file, name))

    def train_def(self, meta, name, *body):
        return s.TrainDef(str(name), tuple(body), _tok_span(self.file, name))

    def setting(self, meta, name, *parts):
        *values, value = parts
        return s.Setting(self.sp(meta), str(name), _tok_span(self.file, name), tuple(v for v in values if v is not None),
                         value)

    def params(self, meta, *ps):
        return tuple(p for p in ps if p is not None)

    def param(self, meta, name, default):
        return s.ParamDecl(str(name), default, _tok_span(self.file, name))

    # statements
    def input_stmt(self, meta, name, dtype, *dims):
        return s.Input(self.sp(meta), str(name), str(dtype), _tok_span(self.file, dtype),
                       tuple(d for d in dims if d is not None))

    def output_stmt(self, meta, name, value):
        return s.Output(self.sp(meta), str(name), value)

    def assign(self, meta, *parts):
        return s.Assign(self.sp(meta), tuple(str(p) for p in parts[:-1]), parts[-1])

    def for_stmt(self, meta, var, it, *body):
        return s.For(self.sp(meta), str(var), it, tuple(body))

    def assert_stmt(self, meta, cond, message):
        return s.Assert(self.sp(meta), cond, str(message)[1:-1] if message is not None else None)

    def return_stmt(self, meta, *values):
        return s.Return(self.sp(meta), tuple(values))

    # expressions
    def ifelse(self, meta, then, cond, other):
        return s.IfElse(self.sp(meta), cond, then, other)

    def or_(self, meta, a, b):
        return s.BoolOp(self.sp(meta), "or", a, b)

    def and_(self, meta, a, b):
        return s.BoolOp(self.sp(meta), "and", a, b)

    def not_(self, meta, a):
        return s.Unary(self.sp(meta), "not", a)

    def compare(self, meta, a, op, b):
        return s.Compare(self.sp(meta), str(op), a, b)

    def pipe_name(self, meta, value, name):
        return s.Call(self.sp(meta), str(name), _tok_span(self.file, name), (value,), ())

    def pipe_call(self, meta, value, name, args):
        pos, kw = args or ((), ())
        return s.Call(self.sp(meta), str(name), _tok_span(self.file, name), (value, *pos), kw)

    def call(self, meta, name, args):
        pos, kw = args or ((), ())
        return s.Call(self.sp(meta), str(name), _tok_span(self.file, name), pos, kw)

    def args(self, meta, *items):
        pos, kw = [], []
        for it in items:
            if it is None:
                continue
            if isinstance(it, s.Kwarg):
                kw.append(it)
            else:
                if kw:
                    raise AlmError(Diagnostic("a positional argument cannot follow a keyword argument",
                                              it.span, "move it before the keyword arguments"))
                pos.append(it)
        return tuple(pos), tuple(kw)

    def kwarg(self, meta, name, value):
        return s.Kwarg(str(name), value, _tok_span(self.file, name))

    def binop(self, meta, a, op, b):
        return s.BinOp(self.sp(meta), str(op), a, b)

    def unary(self, meta, op, a):
        return s.Unary(self.sp(meta), str(op), a)

    def power(self, meta, a, _op, b):
        return s.BinOp(self.sp(meta), "**", a, b)

    def index(self, meta, value, *subscripts):
        return s.Index(self.sp(meta), value, subscripts[0] if len(subscripts) == 1 else tuple(subscripts))

    def slice_(self, meta, start, stop, step):
        return s.Slice(self.sp(meta), start, stop, step)

    def rest(self, meta):
        return s.Rest(self.sp(meta))

    def attribute(self, meta, value, name):
        return s.Attribute(self.sp(meta), value, str(name))

    def int_(self, meta, tok):
        digits = str(tok).replace("_", "")
        if len(digits) > MAX_INT_DIGITS:
            raise AlmError(Diagnostic(f"an integer of {len(digits):,} digits is more than the {MAX_INT_DIGITS} "
                                      "almc reads", self.sp(meta)))
        return s.Num(self.sp(meta), int(digits))

    def float_(self, meta, tok):
        v = float(tok)
        if not math.isfinite(v):
            raise AlmError(Diagnostic(f"the number {elide(str(tok), 40)} is too large: it is infinite as a float",
                                      self.sp(meta)))
        return s.Num(self.sp(meta), v)

    def string(self, meta, tok):
        return s.Str(self.sp(meta), str(tok)[1:-1])

    def true(self, meta):
        return s.Bool(self.sp(meta), True)

    def false(self, meta):
        return s.Bool(self.sp(meta), False)

    def name(self, meta, tok):
        return s.Name(self.sp(meta), str(tok))

    def tuple_(self, meta, *items):
        return s.TupleExpr(self.sp(meta), tuple(i for i in items if i is not None))

    def list_(self, meta, *items):
        return s.ListExpr(self.sp(meta), tuple(i for i in items if i is not None))
