"""Build: syntax tree -> Graph.

Evaluates hyper-parameter expressions, expands blocks and loops, checks every
call's arguments against the op registry, and adds a typed node per operation.

Scoping rules (docs/language.md has the user-facing version):
- A body (model, block, loop iteration) is evaluated in order, but a name
  defined exactly once in a body may be used before its definition: it is
  evaluated on demand. A dependency that comes back to itself is a cycle.
- A name is defined once per body. It may be *updated* by a definition that
  reads its current value (`x = maxpool(x, 2)`); inside a loop such an update
  of an outer name carries over to the next iteration and out of the loop.
- Every error is recorded and evaluation goes on with a poison value, which
  silences the errors that would only follow from the first one.

Shape rules run as each node is created (in `shapes.infer_node`), because
hyper-parameters may depend on shapes (`x.channels`) and a shape error is best
reported at the call that caused it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import syntax as s
from .errors import Collector, ShapeError, Span, did_you_mean, elide, source_lines
from .graph import INPUT, Graph, Node
from .ops.attrs import INIT_CALLS, describe_value, parse_init
from .ops.elementwise import OPERATORS
from .ops.reduce import TENSOR_FORMS
from .ops.registry import Attrs, all_ops, lookup, resolve_attrs, signature, user_callable
from .ops.tensor import END as SLICE_END
from .ops.tensor import pieces
from .shapes import DEFAULT_LIMITS, infer_node
from .types import DTYPES, TensorType

MAX_BLOCK_DEPTH = 64


@dataclass(frozen=True)
class Tensor:
    id: str


class _Poison:
    def __repr__(self):
        return "<poison>"


POISON = _Poison()


FLOAT32_MAX = 3.4028234663852886e38  # a number beside a tensor becomes a float32 constant


class BudgetExceeded(Exception):
    """Building ran past Limits.max_eval_steps; the error is in the collector."""


def _poisoned(*vals) -> bool:
    for v in vals:
        if v is POISON:
            return True
        if isinstance(v, tuple) and _poisoned(*v):
            return True
    return False


def describe(v) -> str:
    """A value as an error message names it: "the integer 3", "a tensor"."""
    if isinstance(v, Tensor):
        return "a tensor"
    if isinstance(v, tuple):
        return "a list"
    return describe_value(v)


@dataclass
class Frame:
    """The names of one body being evaluated."""

    prefix: str  # node id prefix, e.g. "layer1/b0/"
    parent: "Frame | None" = None  # the enclosing body, for loop iterations
    vars: dict = field(default_factory=dict)
    defined_at: dict = field(default_factory=dict)
    pending: dict = field(default_factory=dict)  # name -> statement, for use before definition
    later: dict = field(default_factory=dict)  # every name defined in the body -> span
    done: set = field(default_factory=set)
    in_model: bool = False


class Builder:
    def __init__(self, blocks: dict[str, s.BlockDef], collector: Collector, limits=None):
        self.blocks = blocks
        self.c = collector
        self.graph = Graph()
        self.used_ids: set[str] = set()
        self.next_suffix: dict[str, int] = {}  # base name -> where fresh() resumes its search
        self._reads: dict[int, set[str]] = {}  # id(statement) -> the names its value reads
        self.active: list[tuple[int, str, Span]] = []  # statements being evaluated (cycle detection)
        self.calls: list[tuple[str, Span, str]] = []  # block call stack: name, call site, id prefix
        self.layer = ""
        self.limits = limits
        self.steps = 0  # work done so far, against limits.max_eval_steps

    def spend(self, n: int, span: Span) -> None:
        """Count `n` steps of evaluation (before the work is done); past the budget, building stops
        at once with a located error, so that a runaway model costs no more than the budget."""
        self.steps += n
        budget = (self.limits or DEFAULT_LIMITS).max_eval_steps
        if self.steps > budget:
            self.err(f"building the model takes more than {budget:,} evaluation steps (loop iterations, block "
                     "calls, statements and list elements)", span,
                     "check the loops and the recursion; a larger model may raise the budget with --max-eval-steps")
            raise BudgetExceeded()

    # -- errors -----------------------------------------------------------
    def err(self, message, span, hint=None, notes=()):
        # inside a block, say which call led here (innermost first)
        chain = tuple(f"in block {name}, called at {where}" for name, where, _ in reversed(self.calls))
        self.c.error(message, span, hint, tuple(notes) + chain)
        return POISON

    def source_text(self, span: Span) -> str:
        text = self.c.sources.get(span.file)
        if text is None or span.line < 1 or span.end_line != span.line:
            return "..."
        lines = source_lines(text)
        return lines[span.line - 1][span.col - 1: span.end_col - 1] if span.line <= len(lines) else "..."

    # -- names ------------------------------------------------------------
    def fresh(self, base: str) -> str:
        if base not in self.used_ids:
            self.used_ids.add(base)
            return base
        # the smallest unused suffix from 2; ids are never freed, so it only grows: start where the
        # last search for this base ended (a 50,000-node chain was quadratic here)
        k = self.next_suffix.get(base, 2)
        while f"{base}_{k}" in self.used_ids:
            k += 1
        self.next_suffix[base] = k + 1
        self.used_ids.add(f"{base}_{k}")
        return f"{base}_{k}"

    def visible_names(self, frame: Frame) -> set[str]:
        out = set()
        f = frame
        while f:
            out |= set(f.vars) | set(f.pending)
            f = f.parent
        return out

    def lookup(self, name: str, span: Span, frame: Frame):
        f = frame
        while f:
            if name in f.vars:
                v = f.vars[name]
                if callable(v):  # a value made on first use (e.g. the parameter sets `weights`, `params`)
                    v = f.vars[name] = v()
                return v
            if name in f.pending:
                return self.force(f, name, span)
            f = f.parent
        f = frame
        while f:
            if name in f.later:
                ls = f.later[name]
                return self.err(f"'{name}' is used before it is defined (at {ls.line}:{ls.col})", span,
                                f"'{name}' is defined more than once, so it cannot be used before its first definition")
            f = f.parent
        hint = did_you_mean(name, sorted(self.visible_names(frame))) if self.c.hints_wanted else None
        if name in self.blocks or lookup(name):
            hint = f"'{name}' is an op or block: call it, {name}(...)"
        return self.err(f"undefined name '{name}'", span, hint)

    def force(self, frame: Frame, name: str, span: Span):
        """Evaluate the pending definition of `name` now (a use before the definition)."""
        key = (id(frame), name)
        for i, (fid, n, _) in enumerate(self.active):
            if (fid, n) == key:
                path = self.active[i:]
                chain = " → ".join(f"{n} ({sp.line}:{sp.col})" for _, n, sp in path) + f" → {name}"
                self.err(f"cycle: {chain}", path[0][2], "a value cannot depend on itself; break the loop")
                for _, n, _ in path:  # every name on the cycle is poisoned: one error, no cascade
                    frame.vars.setdefault(n, POISON)
                    frame.defined_at.setdefault(n, span)
                return POISON
        self.exec_stmt(frame.pending[name], frame)
        return frame.vars.get(name, POISON)

    def names_read(self, stmt: s.Assign) -> set[str]:
        """The names a statement's value reads, walked once per statement: a block called many
        times binds the same statements each time (2^n calls spent most of their time here)."""
        hit = self._reads.get(id(stmt))
        if hit is None:  # the syntax tree outlives the builder, so its ids stay unique
            hit = self._reads[id(stmt)] = s.names_read(stmt.value)
        return hit

    def bind(self, frame: Frame, name: str, value, span: Span, stmt) -> None:
        self.graph.bindings.append((span, name, value))
        reads = name in self.names_read(stmt) if isinstance(stmt, s.Assign) else False
        if name in frame.defined_at and frame.vars.get(name) is POISON and value is POISON:
            return
        if name in frame.defined_at:
            if not reads:
                first = frame.defined_at.get(name, span)
                self.err(f"'{name}' is defined twice (first at {first.line}:{first.col})", span,
                         f"give the new value another name, or use '{name}' in its new definition to update it")
                return
            frame.vars[name] = value
            return
        f = frame.parent
        while f:  # a loop body assigning an outer name updates it: the new value carries on
            if name in f.vars:
                f.vars[name] = value
                return
            f = f.parent
        frame.vars[name] = value
        frame.defined_at[name] = span

    # -- bodies -----------------------------------------------------------
    def exec_body(self, stmts, frame: Frame) -> None:
        counts: dict[str, int] = {}
        for st in stmts:
            for n in _defines(st):
                counts[n] = counts.get(n, 0) + 1
                frame.later.setdefault(n, st.span)
        outer = self.visible_names(frame.parent) if frame.parent else set()
        for st in stmts:
            names = _defines(st)
            if names and all(counts[n] == 1 and n not in outer and n not in frame.vars for n in names):
                for n in names:
                    frame.pending[n] = st
        for st in stmts:
            if id(st) not in frame.done and not isinstance(st, s.Return):
                self.exec_stmt(st, frame)

    def exec_stmt(self, st, frame: Frame) -> None:
        self.spend(1, st.span)
        frame.done.add(id(st))
        names = _defines(st)
        saved_layer = self.layer
        for n in names:
            self.active.append((id(frame), n, st.span))
        try:
            if isinstance(st, s.Assign):
                self.layer = self.fresh(frame.prefix + st.targets[0])
                top = self.layer if len(st.targets) == 1 else None
                v = self.eval(st.value, frame, top)
                if len(st.targets) == 1:
                    self.bind(frame, st.targets[0], v, st.span, st)
                else:
                    if v is POISON:
                        vals = (POISON,) * len(st.targets)
                    elif not isinstance(v, tuple) or len(v) != len(st.targets):
                        n = len(v) if isinstance(v, tuple) else 1
                        self.err(f"cannot unpack {n} value{'s' * (n != 1)} into {len(st.targets)} names", st.span)
                        vals = (POISON,) * len(st.targets)
                    else:
                        vals = v
                    for n, val in zip(st.targets, vals):
                        self.bind(frame, n, val, st.span, st)
            elif isinstance(st, s.Input):
                self.exec_input(st, frame)
            elif isinstance(st, s.Output):
                self.exec_output(st, frame)
            elif isinstance(st, s.For):
                self.exec_for(st, frame)
            elif isinstance(st, s.Assert):
                self.exec_assert(st, frame)
        finally:
            del self.active[len(self.active) - len(names):]
            self.layer = saved_layer
            for n in names:
                frame.pending.pop(n, None)

    def exec_input(self, st: s.Input, frame: Frame) -> None:
        if not frame.in_model:
            self.err("inputs are declared in a model, not in a block or loop", st.span,
                     "pass tensors to a block as its parameters")
            frame.vars[st.name] = POISON
            return
        if st.dtype not in DTYPES:
            self.err(f"unknown dtype '{st.dtype}'", st.dtype_span,
                     did_you_mean(st.dtype, DTYPES, f"use one of {', '.join(DTYPES)}"))
            frame.vars[st.name] = POISON
            return
        dims = []
        for d in st.dims:
            if isinstance(d, s.Name) and d.id not in self.visible_names(frame):
                dims.append(d.id)  # a symbolic dimension such as the batch N
                continue
            v = self.eval(d, frame)
            if v is POISON:
                frame.vars[st.name] = POISON
                return
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                self.err(f"a dimension must be a positive integer or a symbol such as N, got {describe(v)}", d.span)
                frame.vars[st.name] = POISON
                return
            dims.append(v)
        nid = self.fresh(frame.prefix + st.name)
        self.graph.add(Node(nid, INPUT, (), Attrs(), st.span, (), nid, TensorType(st.dtype, tuple(dims))))
        self.bind(frame, st.name, Tensor(nid), st.span, st)

    def exec_output(self, st: s.Output, frame: Frame) -> None:
        if not frame.in_model:
            self.err("outputs are declared in a model, not in a block or loop", st.span,
                     "return the value from the block instead")
            return
        if st.name in self.graph.outputs:
            self.err(f"output '{st.name}' is declared twice", st.span)
            return
        if st.value is None:
            v = self.lookup(st.name, st.span, frame)
        else:
            self.layer = self.fresh(frame.prefix + st.name)
            v = self.eval(st.value, frame, self.layer)
            self.bind(frame, st.name, v, st.span, st)
        if v is POISON:
            self.graph.outputs[st.name] = None
            return
        if not isinstance(v, Tensor):
            self.err(f"an output must be a tensor, got {describe(v)}", st.value.span if st.value else st.span)
            return
        self.graph.outputs[st.name] = v.id

    def exec_assert(self, st: s.Assert, frame: Frame) -> None:
        v = self.eval(st.cond, frame)
        if v is POISON:
            return
        if not isinstance(v, bool):
            self.err(f"assert needs a condition that is true or false, got {describe(v)}", st.cond.span)
        elif not v:
            self.err(st.message or f"assertion failed: {self.source_text(st.cond.span)}", st.cond.span,
                     None if st.message else "the model's parameters do not satisfy this condition")

    def exec_for(self, st: s.For, frame: Frame) -> None:
        it = self.eval(st.iter, frame)
        if it is POISON:
            return
        if not isinstance(it, tuple):
            self.err(f"a for loop runs over a list or range(...), got {describe(it)}", st.iter.span)
            return
        for inner in st.body:
            if isinstance(inner, (s.Input, s.Output, s.Return)):
                kind = type(inner).__name__.lower()
                self.err(f"'{kind}' cannot appear inside a for loop", inner.span,
                         "declare inputs and outputs in the model body; loops update names instead")
                return
        for k, item in enumerate(it):  # iterations are named by their index: c0/, c1/, ...
            self.spend(1, st.span)
            body = Frame(prefix=self.fresh(f"{frame.prefix}{st.var}{k}") + "/", parent=frame)
            body.vars[st.var] = item
            body.defined_at[st.var] = st.span
            self.exec_body(st.body, body)

    # -- expressions ------------------------------------------------------
    def eval(self, e, frame: Frame, top: str | None = None):
        return EVAL[type(e)](self, e, frame, top)  # one dict lookup: eval runs millions of times in a large model

    def eval_literal(self, e, frame, top):
        return e.value

    def eval_name(self, e: s.Name, frame, top):
        return self.lookup(e.id, e.span, frame)

    def eval_items(self, e, frame, top):
        return tuple(self.eval(i, frame) for i in e.items)

    def eval_boolop(self, e: s.BoolOp, frame, top):
        a = self.eval(e.left, frame)
        if a is POISON:
            return POISON
        if not isinstance(a, bool):
            return self.err(f"'{e.op}' needs true or false on its left, got {describe(a)}", e.left.span)
        if (e.op == "and" and not a) or (e.op == "or" and a):
            return a
        b = self.eval(e.right, frame)
        if b is POISON:
            return POISON
        if not isinstance(b, bool):
            return self.err(f"'{e.op}' needs true or false on its right, got {describe(b)}", e.right.span)
        return b

    def eval_ifelse(self, e: s.IfElse, frame, top):
        c = self.eval(e.cond, frame)
        if c is POISON:
            return POISON
        if not isinstance(c, bool):
            return self.err(f"a condition must be true or false, got {describe(c)}", e.cond.span,
                            "conditions choose between layers at compile time; compare hyper-parameters or shapes")
        return self.eval(e.then if c else e.other, frame, top)

    def eval_subscript_part(self, e, frame, top):
        return self.err("':' and '...' belong inside a subscript, x[...]", e.span)

    def eval_index(self, e: s.Index, frame: Frame, top=None):
        v = self.eval(e.value, frame)
        if isinstance(v, Tensor):
            return self.index_tensor(v, e, frame, top)
        if isinstance(e.index, (tuple, s.Slice, s.Rest)):
            return POISON if v is POISON else self.err(
                f"only tensors take slices and several subscripts; a list takes one integer, got {describe(v)}",
                e.span)
        i = self.eval(e.index, frame)
        if _poisoned(v) or i is POISON:
            return POISON
        if not isinstance(v, tuple):
            return self.err(f"only lists and tensors can be indexed, got {describe(v)}", e.value.span)
        if isinstance(i, bool) or not isinstance(i, int):
            return self.err(f"a list index must be an integer, got {describe(i)}", e.index.span)
        if not -len(v) <= i < len(v):
            return self.err(f"index {i} is out of range for a list of {len(v)}", e.index.span)
        return v[i]

    def subscript_int(self, part, frame, what):
        """The integer value of one part of a subscript, or POISON after an error."""
        val = self.eval(part, frame)
        if val is POISON:
            return POISON
        if isinstance(val, bool) or not isinstance(val, int):
            return self.err(f"{what} must be an integer, got {describe(val)}", part.span)
        return val

    def index_tensor(self, v: Tensor, e: s.Index, frame: Frame, top):
        """x[:, 1:], x[..., :k], x[:, ::2], x[:, 0]: one slice node over the sliced axes, then a
        squeeze per integer index. Bounds are normalised here against the known sizes."""
        t = self.graph.node(v.id).type
        items = e.index if isinstance(e.index, tuple) else (e.index,)
        rests = [k for k, it in enumerate(items) if isinstance(it, s.Rest)]
        if len(rests) > 1:
            return self.err("a subscript takes at most one '...'", items[rests[1]].span)
        named = len(items) - len(rests)
        if named > t.rank:
            return self.err(f"{named} subscripts for a tensor of rank {t.rank} ({t})", e.span)
        if rests:
            items = items[:rests[0]] + (None,) * (t.rank - named) + items[rests[0] + 1:]
        axes, starts, ends, steps, drop = [], [], [], [], []
        for axis, it in enumerate(items):
            if it is None or (isinstance(it, s.Slice) and it.start is it.stop is it.step is None):
                continue
            d = t.dims[axis]
            if isinstance(it, s.Slice):
                start, stop, step = (None if part is None else self.subscript_int(part, frame, "a slice bound")
                                     for part in (it.start, it.stop, it.step))
                if POISON in (start, stop, step):
                    return POISON
                step = 1 if step is None else step
                if step <= 0:
                    return self.err(f"a slice step must be positive, got {step}", it.step.span)
            else:
                i = self.subscript_int(it, frame, "a tensor index")
                if i is POISON:
                    return POISON
                if isinstance(d, int) and not -d <= i < d:
                    return self.err(f"index {i} is out of range for axis {axis} of {t}", it.span)
                start, stop, step = i, (None if i == -1 else i + 1), 1
                drop.append(axis)
            if axis == 0 and isinstance(d, str):
                return self.err(f"the batch axis {d} cannot be indexed or sliced", it.span, "keep ':' for axis 0")
            if isinstance(d, int):
                start, stop, step = slice(start, stop, step).indices(d)
                if not range(start, stop, step):
                    return self.err(f"the slice of axis {axis} of {t} is empty", it.span)
            else:
                if step != 1:
                    return self.err(f"a slice step needs the size of axis {axis} known, got {t}", it.span)
                start = 0 if start is None else start
                stop = SLICE_END if stop is None else stop
                if stop != SLICE_END and ((start < 0) != (stop < 0) or stop <= start):
                    return self.err(f"axis {axis} of {t} has no known size: a slice of it counts both bounds from "
                                    "the front or both from the back (negative), start before end", it.span)
            axes.append(axis), starts.append(start), ends.append(stop), steps.append(step)
        out = v
        if axes:
            out = self.add_node("slice", [v.id], Attrs(axes=tuple(axes), starts=tuple(starts), ends=tuple(ends),
                                                       steps=tuple(steps)),
                                e.span, None if drop else top, "")
        for k, axis in enumerate(reversed(drop)):
            if out is POISON:
                return POISON
            out = self.add_node("squeeze", [out.id], Attrs(axis=axis), e.span, top if k == len(drop) - 1 else None, "")
        return out

    def eval_attribute(self, e: s.Attribute, frame: Frame, top=None):
        v = self.eval(e.value, frame)
        if v is POISON:
            return POISON
        if not isinstance(v, Tensor):
            return self.err(f"'.{e.name}' is a property of tensors, got {describe(v)}", e.span)
        t = self.graph.node(v.id).type
        props = {"shape": t.dims, "rank": t.rank, "dtype": t.dtype,
                 "channels": t.dims[1] if t.rank > 1 else None}
        if e.name not in props:
            return self.err(f"tensors have no property '{e.name}'", e.span,
                            did_you_mean(e.name, props, f"use one of {', '.join(props)}"))
        if props[e.name] is None:
            return self.err(f"a tensor of rank {t.rank} has no channel axis", e.span)
        return props[e.name]

    def eval_compare(self, e: s.Compare, frame: Frame, top=None):
        a, b = self.eval(e.left, frame), self.eval(e.right, frame)
        if _poisoned(a, b):
            return POISON
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            return self.err("tensors cannot be compared at compile time", e.span,
                            "compare shapes instead, e.g. x.channels == 64")
        ops = {"==": lambda: a == b, "!=": lambda: a != b, "<": lambda: a < b, ">": lambda: a > b,
               "<=": lambda: a <= b, ">=": lambda: a >= b}
        try:
            return bool(ops[e.op]())
        except TypeError:
            return self.err(f"cannot compare {describe(a)} with {describe(b)} using {e.op}", e.span)

    def eval_unary(self, e: s.Unary, frame: Frame, top):
        v = self.eval(e.operand, frame)
        if v is POISON:
            return POISON
        if e.op == "not":
            if not isinstance(v, bool):
                return self.err(f"'not' needs true or false, got {describe(v)}", e.operand.span)
            return not v
        if isinstance(v, Tensor):
            if e.op == "+":
                return v
            return self.tensor_op("mul", [v, -1.0], e.span, top)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return self.err(f"unary '{e.op}' needs a number, got {describe(v)}", e.span)
        return -v if e.op == "-" else v

    def eval_binop(self, e: s.BinOp, frame: Frame, top):
        a, b = self.eval(e.left, frame), self.eval(e.right, frame)
        if _poisoned(a, b):
            return POISON
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            names = OPERATORS
            if e.op == "**":
                if not isinstance(a, Tensor) or isinstance(b, (Tensor, bool)) or not isinstance(b, (int, float)):
                    return self.err("'**' on tensors needs a tensor base and a number exponent, as in x ** 2",
                                    e.span, "for e^x write exp(x)")
                return self.add_node("pow", [a.id], resolve_attrs(lookup("pow"), {"exponent": b}), e.span, top, "")
            if e.op not in names:
                return self.err(f"'{e.op}' is not defined on tensors", e.span, "tensors support + - * / and ** a number")
            for v, sub in ((a, e.left), (b, e.right)):
                if not isinstance(v, Tensor) and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    return self.err(f"cannot apply '{e.op}' to a tensor and {describe(v)}", sub.span)
            return self.tensor_op(names[e.op], [a, b], e.span, top)
        if isinstance(a, tuple) or isinstance(b, tuple) or isinstance(a, str) or isinstance(b, str):
            if e.op == "+" and type(a) is type(b):
                self.spend(len(a) + len(b), e.span)  # before the list is made
                return a + b
            if e.op == "*" and isinstance(a, tuple) and isinstance(b, int) and not isinstance(b, bool):
                self.spend(len(a) * max(b, 0), e.span)
                return a * b
            return self.err(f"cannot apply '{e.op}' to {describe(a)} and {describe(b)}", e.span)
        if isinstance(a, bool) or isinstance(b, bool):
            return self.err(f"cannot apply '{e.op}' to {describe(a)} and {describe(b)}", e.span)
        try:
            if e.op == "+":
                r = a + b
            elif e.op == "-":
                r = a - b
            elif e.op == "*":
                r = a * b
            elif e.op == "/":
                r = a / b
            elif e.op == "//":
                r = a // b
            elif e.op == "%":
                r = a % b
            else:
                if isinstance(b, int) and abs(b) > 64 or isinstance(a, (int, float)) and abs(a) > 1e6 and b > 8:
                    return self.err("exponent too large", e.span)
                r = a ** b
        except ZeroDivisionError:
            return self.err("division by zero", e.right.span)
        except OverflowError:
            return self.err("number too large", e.span)
        if isinstance(r, float) and not math.isfinite(r):
            return self.err("the result is not a finite number", e.span)
        if isinstance(r, complex):
            return self.err("the result is not a real number", e.span)
        return r

    # -- calls ------------------------------------------------------------
    def eval_call(self, e: s.Call, frame: Frame, top):
        if e.func in BUILTINS:
            args = [self.eval(a, frame) for a in e.args]
            kwargs = {kw.name: (kw, self.eval(kw.value, frame)) for kw in e.kwargs}
            if _poisoned(*args, *(v for _, v in kwargs.values())):
                return POISON
            if e.func in TENSOR_FORMS and (any(isinstance(a, Tensor) for a in args) or kwargs):
                return self.call_tensor_form(e, args, kwargs, top)
            if e.kwargs:
                return self.err(f"{e.func}() takes no keyword arguments", e.kwargs[0].span)
            try:
                v = BUILTINS[e.func](*args)
            except (TypeError, ValueError, OverflowError) as x:
                return self.err(f"{e.func}(): {x}", e.span)
            if isinstance(v, tuple):
                self.spend(len(v), e.span)
            return v
        if e.func in self.blocks:
            return self.call_block(self.blocks[e.func], e, frame, top)
        if e.func in ("chunk", "split"):
            return self.call_split(e, frame)
        op = lookup(e.func)
        if op is not None and not user_callable(op):
            return self.err(f"'{e.func}' is made by the compiler (for gradients, updates or constants) and cannot "
                            "be called from a model", e.func_span, "see docs/language.md for the ops a model may call")
        if op is None:
            names = sorted({n for n, o in all_ops().items() if user_callable(o)} | set(self.blocks) | set(BUILTINS))
            return self.err(f"unknown op or block '{e.func}'", e.func_span,
                            did_you_mean(e.func, names, "see docs/language.md for the list of ops"))
        return self.call_op(op, e, frame, top)

    def call_split(self, e: s.Call, frame: Frame):
        """chunk(x, n, axis = -1) and split(x, sizes, axis = -1): a list of slices of x."""
        usage = f"{e.func}(x, {'chunks' if e.func == 'chunk' else 'sizes'}, axis = -1)"
        args = [self.eval(a, frame) for a in e.args]
        kwargs = {kw.name: (kw, self.eval(kw.value, frame)) for kw in e.kwargs}
        if _poisoned(*args, *(v for _, v in kwargs.values())):
            return POISON
        for name, (kw, _) in kwargs.items():
            if name != "axis":
                return self.err(f"{e.func} has no argument '{name}'", kw.span, usage)
        if len(args) != 2 or not isinstance(args[0], Tensor):
            return self.err(f"{e.func} takes a tensor and {'a number of chunks' if e.func == 'chunk' else 'sizes'}",
                            e.span, usage)
        axis_v = kwargs["axis"][1] if "axis" in kwargs else -1
        t = self.graph.node(args[0].id).type
        if isinstance(axis_v, bool) or not isinstance(axis_v, int) or not -t.rank <= axis_v < t.rank:
            return self.err(f"{e.func}'s axis must be an axis of {t}, got {describe(axis_v)}",
                            kwargs["axis"][0].span if "axis" in kwargs else e.span)
        axis = axis_v % t.rank
        if axis == 0 and isinstance(t.dims[0], str):
            return self.err(f"{e.func} cannot split the batch axis {t.dims[0]}", e.span, usage)
        if isinstance(t.dims[axis], str):
            return self.err(f"{e.func} needs the size of the axis known, got axis {axis} of {t}", e.span)
        try:
            spans = pieces(e.func, t.dims[axis], args[1])
        except ShapeError as x:
            return self.err(x.message, e.args[1].span)
        out = []
        for start, end in spans:
            piece = self.add_node("slice", [args[0].id], Attrs(axes=(axis,), starts=(start,), ends=(end,), steps=(1,)),
                                  e.span, None, "")
            if piece is POISON:
                return POISON
            out.append(piece)
        self.spend(len(out), e.span)
        return tuple(out)

    def call_tensor_form(self, e: s.Call, args, kwargs, top):
        """min, max and abs of tensors: max(x) and max(x, axis = 1) reduce, max(a, b, ...) is the
        elementwise maximum (numbers among the operands broadcast), abs(x) is the op abs."""
        elementwise, reduction = TENSOR_FORMS[e.func]
        if len(args) >= 2 and elementwise:
            if kwargs:
                return self.err(f"{e.func}() of two or more operands is elementwise and takes no keyword arguments",
                                next(iter(kwargs.values()))[0].span,
                                f"to reduce one tensor over axes, write {e.func}(x, axis = 1)")
            for a, v in zip(e.args, args):
                if not isinstance(v, Tensor) and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    return self.err(f"{e.func}() takes tensors and numbers, got {describe(v)}", a.span)
            out = args[0]
            for k, v in enumerate(args[1:]):
                out = self.tensor_op(elementwise, [out, v], e.span, top if k == len(args) - 2 else None)
                if out is POISON:
                    return POISON
            return out
        op = lookup(reduction)
        if len(args) != 1 or not isinstance(args[0], Tensor):
            return self.err(f"{e.func}() of a tensor takes one tensor" + (" and keyword arguments" if op.attrs else ""),
                            e.span, f"{e.func}({signature(op)})")
        return self.bind_call(op, e, list(zip(e.args, args)), kwargs, top)

    def call_op(self, op, e: s.Call, frame: Frame, top):
        pos = [(a, self.eval(a, frame)) for a in e.args]
        kws = {}
        for kw in e.kwargs:
            if kw.name in kws:
                return self.err(f"argument '{kw.name}' is given twice", kw.span)
            kws[kw.name] = (kw, self.eval(kw.value, frame))
        return self.bind_call(op, e, pos, kws, top)

    def bind_call(self, op, e: s.Call, pos: list, kws: dict, top):
        """The node of a call of `op` whose arguments are evaluated: pos [(expr, value)] and
        kws {name: (kwarg, value)}, checked against the op's signature."""
        tensors: list = []
        attrs: dict = {}
        if op.variadic:
            while pos and (isinstance(pos[0][1], Tensor) or pos[0][1] is POISON
                           or (isinstance(pos[0][1], tuple) and not tensors)):
                a, v = pos.pop(0)
                if isinstance(v, tuple):
                    if not all(isinstance(x, Tensor) or x is POISON for x in v):
                        return self.err(f"{op.name} takes tensors, got a list containing "
                                        f"{describe(next(x for x in v if not isinstance(x, Tensor)))}", a.span)
                    tensors.extend((a, x) for x in v)
                    break
                tensors.append((a, v))
            if not tensors:
                return self.err(f"{op.name} needs at least one tensor", e.span)
        else:
            for name in op.inputs:
                if pos:
                    tensors.append(pos.pop(0))
                elif name in kws:
                    kw, v = kws.pop(name)
                    tensors.append((kw.value, v))
                else:
                    return self.err(f"{op.name} needs the tensor input '{name}'", e.span)
        attr_list = [a for a in op.attrs]
        if len(pos) > len(attr_list):
            a, _ = pos[len(attr_list)]
            n = len(op.inputs) + len(attr_list)
            return self.err(f"{op.name} takes at most {n} positional argument{'s' * (n != 1)}, got {len(e.args)}",
                            a.span, f"{op.name}({signature(op)})")
        for (a, v), attr in zip(pos, attr_list):
            attrs[attr.name] = (a, v)
        for name, (kw, v) in kws.items():
            if op.attr(name) is None:
                names = [x.name for x in op.attrs] + list(op.inputs)
                return self.err(f"{op.name} has no argument '{name}'", kw.span,
                                did_you_mean(name, names, f"{op.name}({signature(op)})"))
            if name in attrs:
                return self.err(f"{op.name}'s argument '{name}' is given twice", kw.span)
            attrs[name] = (kw.value, v)
        if _poisoned(*(v for _, v in tensors), *(v for _, v in attrs.values())):
            return POISON
        for a, v in tensors:
            if not isinstance(v, Tensor):
                which = op.inputs[0] if op.variadic else op.inputs[[t[0] for t in tensors].index(a)]
                return self.err(f"{op.name}'s input '{which}' must be a tensor, got {describe(v)}", a.span)
        for name, (a, v) in attrs.items():
            if isinstance(v, Tensor):
                return self.err(f"{op.name}'s argument '{name}' must be a value, got a tensor", a.span,
                                f"{op.name}({signature(op)})")
        try:
            resolved = resolve_attrs(op, {k: v for k, (_, v) in attrs.items()})
        except KeyError as x:
            return self.err(x.args[0], e.span, f"{op.name}({signature(op)})")
        except TypeError as x:
            name = x.args[1] if len(x.args) > 1 else None
            where = attrs[name][0].span if name in attrs else e.span
            return self.err(x.args[0], where)
        first = self.source_text(tensors[0][0].span) if tensors else ""
        return self.add_node(op.name, [v.id for _, v in tensors], resolved, e.span, top, first)

    def tensor_op(self, opname, operands, span, top):
        ids = []
        for v in operands:
            if isinstance(v, Tensor):
                ids.append(v.id)
            else:
                try:
                    value = float(v)
                except OverflowError:
                    value = math.inf
                if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
                    return self.err(f"the number {elide(str(v), 40)} does not fit in a float32 tensor", span)
                c = self.add_node("constant", [], Attrs(value=value), span, None, "")
                if c is POISON:
                    return POISON
                ids.append(c.id)
        return self.add_node(opname, ids, Attrs(), span, top, "")

    def add_node(self, opname, inputs, attrs, span, top, first_arg_text):
        types = [self.graph.node(i).type for i in inputs]
        try:
            t = infer_node(opname, types, attrs, self.limits)
        except ShapeError as x:
            hint = x.hint.replace("{input}", first_arg_text) if x.hint else None
            msg = x.message if x.message.startswith(opname) else f"{opname}: {x.message}"
            return self.err(msg, span, hint or self.keep_size_hint(inputs))
        # the statement's own name was reserved when it started; other nodes are NAME.op
        nid = top if top and top not in self.graph else self.fresh(f"{self.layer or 'value'}.{opname}")
        scope = tuple(n for n, _, _ in self.calls)
        calls = tuple(prefix for _, _, prefix in self.calls)
        self.graph.add(Node(nid, opname, tuple(inputs), attrs, span, scope, self.layer or nid, t, calls=calls))
        return Tensor(nid)

    def keep_size_hint(self, inputs) -> str | None:
        """Where operands disagree in size, point at an unpadded conv that shrank one of them."""
        for i in inputs:
            node = self.graph.node(i)
            for _ in range(4):  # look back through pointwise ops (relu, batchnorm, ...)
                op = lookup(node.op)
                if (op is not None and op.size_hint) or len(node.inputs) != 1:
                    break
                node = self.graph.node(node.inputs[0])
            op = lookup(node.op)
            hint = op.size_hint(self.graph, node) if op is not None and op.size_hint else None
            if hint:
                return hint
        return None

    def call_block(self, b: s.BlockDef, e: s.Call, frame: Frame, top):
        self.spend(1, e.span)
        if len(self.calls) >= MAX_BLOCK_DEPTH:
            chain = [n for n, _, _ in self.calls]
            rec = next((n for n in chain if chain.count(n) > 1), chain[0])
            first = next(sp for n, sp, _ in self.calls if n == rec)
            if not getattr(self, "_reported_recursion", False):
                self._reported_recursion = True
                self.err(f"block '{rec}' recurses without end", first,
                         "make the recursive call depend on a parameter that reaches a base case",
                         [f"call chain: {' → '.join(chain[:6])} → ..."])
            return POISON
        pos = [self.eval(a, frame) for a in e.args]
        kws = {}
        for kw in e.kwargs:
            if kw.name in kws:
                return self.err(f"argument '{kw.name}' is given twice", kw.span)
            kws[kw.name] = (kw, self.eval(kw.value, frame))
        names = [p.name for p in b.params]
        if len(pos) > len(names):
            return self.err(f"block {b.name} takes {len(names)} argument{'s' * (len(names) != 1)}, got {len(pos)}",
                            e.args[len(names)].span, f"{b.name}({', '.join(names)})")
        for name, (kw, _) in kws.items():
            if name not in names:
                return self.err(f"block {b.name} has no parameter '{name}'", kw.span,
                                did_you_mean(name, names, f"{b.name}({', '.join(names)})"))
            if names.index(name) < len(pos):
                return self.err(f"block {b.name}'s parameter '{name}' is given twice", kw.span)
        prefix = (top or self.fresh(f"{self.layer or 'value'}.{b.name}")) + "/"
        inner = Frame(prefix=prefix)
        saved_layer = self.layer
        self.calls.append((b.name, e.span, prefix))
        try:
            for i, p in enumerate(b.params):
                if i < len(pos):
                    v = pos[i]
                elif p.name in kws:
                    v = kws[p.name][1]
                elif p.default is not None:
                    v = self.eval(p.default, inner)
                else:
                    return self.err(f"block {b.name} needs the argument '{p.name}'", e.span,
                                    f"{b.name}({', '.join(names)})")
                inner.vars[p.name] = v
                inner.defined_at[p.name] = p.span
                self.graph.bindings.append((p.span, p.name, v))
            self.exec_body(b.body, inner)
            rets = [st for st in b.body if isinstance(st, s.Return)]
            if not rets:
                return self.err(f"block {b.name} has no return statement", b.span)
            if len(rets) > 1:
                return self.err(f"block {b.name} has more than one return", rets[1].span)
            ret = rets[0]
            self.layer = top or prefix[:-1]
            vals = [self.eval(v, inner, top if len(ret.values) == 1 else None) for v in ret.values]
            return vals[0] if len(vals) == 1 else tuple(vals)
        finally:
            self.calls.pop()
            self.layer = saved_layer


EVAL = {s.Num: Builder.eval_literal, s.Str: Builder.eval_literal, s.Bool: Builder.eval_literal,
        s.Name: Builder.eval_name, s.TupleExpr: Builder.eval_items, s.ListExpr: Builder.eval_items,
        s.Call: Builder.eval_call, s.BinOp: Builder.eval_binop, s.Unary: Builder.eval_unary,
        s.Compare: Builder.eval_compare, s.BoolOp: Builder.eval_boolop, s.IfElse: Builder.eval_ifelse,
        s.Index: Builder.eval_index, s.Attribute: Builder.eval_attribute, s.Slice: Builder.eval_subscript_part,
        s.Rest: Builder.eval_subscript_part}


def _defines(st) -> tuple[str, ...]:
    if isinstance(st, s.Assign):
        return st.targets
    if isinstance(st, s.Input):
        return (st.name,)
    if isinstance(st, s.Output) and st.value is not None:
        return (st.name,)
    return ()


def _range(*args):
    if not 1 <= len(args) <= 3 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise TypeError("expects one to three integers")
    r = range(*args)
    if len(r) > 100_000:
        raise ValueError(f"{len(r)} iterations is more than the 100000 allowed")
    return tuple(r)


def _num(fn):
    def f(*args):
        if not args or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise TypeError("expects numbers")
        return fn(*args)
    return f


def _len(v):
    if not isinstance(v, tuple):
        raise TypeError(f"expects a list, got {describe(v)}")
    return len(v)


def _int(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"expects a number, got {describe(v)}")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"cannot make an integer of {v}")
    return int(v)


def _initialiser(kind):
    """normal(0.02) in .alm: the initialiser as its canonical text, checked as an argument is."""
    def f(*args):
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise TypeError("expects numbers")
        text = f"{kind}({', '.join(repr(float(a)) for a in args)})"
        parse_init(text)  # ValueError: wrong count or range
        return text
    return f


BUILTINS = dict(range=_range, len=_len, min=_num(min), max=_num(max), int=_int, float=_num(float),
                round=_num(lambda x: int(round(x))), abs=_num(abs),
                **{kind: _initialiser(kind) for kind in INIT_CALLS})


def build_model(blocks: dict[str, s.BlockDef], model: s.ModelDef, collector: Collector,
                overrides: dict | None = None, limits=None) -> tuple[Graph, "Builder", Frame]:
    """The model's graph, and the builder and frame it was evaluated in (a training section continues there)."""
    b = Builder(blocks, collector, limits)
    b.graph.name = model.name
    frame = Frame(prefix="", in_model=True)
    overrides = dict(overrides or {})
    for p in model.params:
        if p.name in overrides:
            v = overrides.pop(p.name)
        elif p.default is not None:
            v = b.eval(p.default, frame)
        else:
            b.err(f"model {model.name}'s parameter '{p.name}' has no default and was not given", p.span,
                  f"give it a default, or set it: -D {p.name}=VALUE")
            v = POISON
        frame.vars[p.name] = v
        frame.defined_at[p.name] = p.span
        b.graph.bindings.append((p.span, p.name, v))
    for name in overrides:
        known = [p.name for p in model.params]
        b.err(f"model {model.name} has no parameter '{name}'", model.span,
              f"its parameters are: {', '.join(known)}" if known else "it takes no parameters")
    b.layer = ""
    try:
        b.exec_body(model.body, frame)
    except BudgetExceeded:
        collector.check()
    for st in model.body:
        if isinstance(st, s.Return):
            b.err("a model declares outputs, not a return", st.span, "write: output NAME = ...")
    b.graph.outputs = {k: v for k, v in b.graph.outputs.items() if v is not None}
    if not b.graph.outputs and not any(d.severity == "error" for d in collector.diagnostics):
        b.err(f"model {model.name} has no outputs", model.span, "declare one: output logits = ...")
    b.graph.span = model.span
    return b.graph, b, frame
