"""almc lsp: a language server over stdio, through pygls (an optional extra).

Every change of a document runs the checker on its text, as `almc check` would (each model of
the file, every error at once), and publishes the diagnostics with their exact ranges. The last
analysis that built answers hover (a value's type, parameters and receptive field; an op's or
block's signature), go to definition (names, blocks, the standard library included) and
completion (ops, blocks, names in scope, and the keyword arguments of the call being written).
Formatting is `almc fmt`'s.

The analysis is plain functions of (text, path), tested without a client; `serve` wires them
to the protocol.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from . import syntax as s
from .errors import AlmError, Collector, Diagnostic, Span

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KEYWORDS = ("input", "output", "for", "in", "return", "if", "else", "and", "or", "not", "true", "false", "assert",
            "import", "model", "block", "train")


@dataclass
class Value:
    """What a statement bound to a name in one evaluation: a type or a plain value, shown on hover."""
    name: str
    span: Span  # the statement
    text: str


@dataclass
class Analysis:
    path: str
    text: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    module: s.Module | None = None
    blocks: dict[str, s.BlockDef] = field(default_factory=dict)  # every block the file can call
    values: list[Value] = field(default_factory=list)  # from the models that built
    base: Path = field(default_factory=Path.cwd)


def analyse(text: str, path: str) -> Analysis:
    """Check every model in `text` (the unsaved contents of `path`); imports resolve beside it."""
    from .compiler import check
    from .source import load_program

    base = Path(path).resolve().parent
    a = Analysis(path, text, base=base)
    c = Collector()
    try:
        prog = load_program(c, text=text, name=path, base=base)
    except AlmError as e:  # a syntax error: nothing further can be said
        a.diagnostics = e.diagnostics
        return a
    a.module, a.blocks = prog.root, dict(prog.blocks)
    seen = set()

    def add(diags):
        for d in diags:
            key = (d.message, d.span, d.severity)
            if key not in seen:
                seen.add(key)
                a.diagnostics.append(d)

    add(c.diagnostics)
    if c.errors:
        return a
    for m in prog.root.models:
        try:
            graph, warnings = check(text=text, name=path, model=m.name, base=base)
        except AlmError as e:
            add(e.diagnostics)
            continue
        add(warnings)
        a.values += _values(graph)
    for t in prog.root.trains:
        if t.model not in {m.name for m in prog.root.models}:
            add([Diagnostic(f"train {t.model}: there is no model {t.model} in this file", t.span)])
    return a


def _values(graph) -> list[Value]:
    from .summary import summarize

    rows = {r.name: r for r in summarize(graph).rows}
    out = []
    for span, name, value in graph.bindings:
        nid = getattr(value, "id", None)
        if nid is None:
            out.append(Value(name, span, f"{name} = {_plain(value)}"))
        elif nid in graph:
            node = graph.node(nid)
            text = f"{name}: {node.type}"
            row = rows.get(nid)
            if row is not None:
                if row.params:
                    text += f", {row.params:,} parameters"
                if row.macs:
                    text += f", {row.macs:,} multiply-adds"
                if row.receptive_field:
                    text += f", receptive field {'x'.join(map(str, row.receptive_field))}"
            out.append(Value(name, span, text))
    return out


def _plain(v) -> str:
    from .build import describe

    if isinstance(v, (bool, int, float, str)) or v is None:
        return repr(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    if isinstance(v, (tuple, list)) and len(v) <= 16 and all(isinstance(x, (int, float)) for x in v):
        return "[" + ", ".join(map(str, v)) + "]"
    return describe(v)


# -- positions: (line, col) are 1-based and count characters, as Span does ------------------


def word_at(text: str, line: int, col: int) -> tuple[str, int] | None:
    """The name under (line, col) and the column it starts at."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return None
    for m in WORD.finditer(lines[line - 1]):
        if m.start() + 1 <= col <= m.end() + 1 and not _in_comment(lines[line - 1], m.start()):
            return m.group(), m.start() + 1
    return None


def _in_comment(line: str, col0: int) -> bool:
    in_string = False
    for i, ch in enumerate(line[:col0]):
        if ch == '"':
            in_string = not in_string
        elif ch == "#" and not in_string:
            return True
    return in_string


def _before(span: Span, line: int, col: int) -> bool:
    return (span.line, span.col) <= (line, col)


def _contains(span: Span, line: int, col: int) -> bool:
    return (span.line, span.col) <= (line, col) <= (span.end_line, span.end_col)


def _enclosing(module: s.Module, line: int, col: int):
    """The model, block or training section the position is in (items do not nest)."""
    items = sorted([*module.models, *module.blocks, *module.trains], key=lambda d: (d.span.line, d.span.col))
    found = None
    for d in items:
        if _before(d.span, line, col):
            found = d
    return found


def _statements(body):
    for st in body:
        yield st
        if isinstance(st, s.For):
            yield from _statements(st.body)


def definitions(a: Analysis, item) -> list[tuple[str, Span, Span | None]]:
    """(name, the span of its defining name, the assignment's span or None) for every name `item`
    defines, in source order; a training section sees its model's names too."""
    out = []
    if isinstance(item, s.TrainDef) and a.module is not None:
        model = next((m for m in a.module.models if m.name == item.model), None)
        if model is not None:
            out += definitions(a, model)
    for p in getattr(item, "params", ()):
        out.append((p.name, p.span, None))
    for st in _statements(item.body):
        if isinstance(st, s.Assign):
            out += [(n, _name_span(a.text, st.span, n), st.span) for n in st.targets]
        elif isinstance(st, (s.Input, s.Output)):
            out.append((st.name, _name_span(a.text, st.span, st.name, skip=1), None))
        elif isinstance(st, s.For):
            out.append((st.var, _name_span(a.text, st.span, st.var, skip=1), None))
    return out


def _name_span(text: str, stmt: Span, name: str, skip: int = 0) -> Span:
    """Where `name` is written in the statement's first line (after `skip` leading words)."""
    line = text.split("\n")[stmt.line - 1] if stmt.line else ""
    words = [m for m in WORD.finditer(line, max(stmt.col - 1, 0))]
    for m in words[skip:]:
        if m.group() == name:
            return Span(stmt.file, stmt.line, m.start() + 1, stmt.line, m.end() + 1)
    return Span(stmt.file, stmt.line, stmt.col, stmt.line, stmt.col + len(name))


def definition(a: Analysis, line: int, col: int) -> Span | None:
    """Where the name at (line, col) is defined: the last definition before it in its scope (its
    own statement's, on a definition), or the block it calls."""
    hit = word_at(a.text, line, col)
    if hit is None or a.module is None:
        return None
    name, start = hit
    item = _enclosing(a.module, line, col)
    if item is not None:
        defs = [(n, span, stmt) for n, span, stmt in definitions(a, item) if n == name]
        on = [span for _, span, _ in defs if (span.line, span.col) == (line, start)]
        if on:
            return on[0]
        # a use reads the definition before it, not its own statement's (x = f(x))
        found = [span for _, span, stmt in defs if _before(span, line, start)
                 and not (stmt is not None and _contains(stmt, line, col))]
        if found:
            return found[-1]
        if defs:  # defined further down (a use before the definition is an error, but go there)
            return defs[0][1]
    block = a.blocks.get(name)
    if block is not None:
        return block.span
    if isinstance(item, s.TrainDef) or name in {m.name for m in a.module.models}:
        model = next((m for m in a.module.models if m.name == name), None)
        return model.span if model is not None else None
    return None


def hover(a: Analysis, line: int, col: int) -> str | None:
    """Markdown for the name at (line, col): an op's or block's signature and doc, or what the
    value the name denotes there is (its type, parameters, multiply-adds, receptive field), once
    per evaluation (a block called three times shows three)."""
    from .build import BUILTINS
    from .ops.registry import lookup, signature, user_callable

    hit = word_at(a.text, line, col)
    if hit is None:
        return None
    name, start = hit
    rest = a.text.split("\n")[line - 1][start - 1 + len(name):].lstrip()
    called = rest.startswith("(") or a.text.split("\n")[line - 1][:start - 1].rstrip().endswith("|>")
    if called or name not in {d[0] for d in definitions_at(a, line, col)}:
        op = lookup(name)
        if op is not None and user_callable(op):
            return f"```alm\n{name}({signature(op)})\n```\n{op.doc}".rstrip()
        block = a.blocks.get(name)
        if block is not None:
            params = ", ".join(p.name for p in block.params)
            return f"```alm\nblock {name}({params})\n```\ndefined at {block.span}"
        if name in BUILTINS:
            return f"`{name}`: a built-in function of hyper-parameters"
    where = definition(a, line, col)
    if where is None:
        return None
    shown = []
    for v in a.values:
        if v.name == name and v.span.file == where.file and _contains(v.span, where.line, where.col):
            if v.text not in shown:
                shown.append(v.text)
    if not shown:
        return f"`{name}`, defined at {where.line}:{where.col}"
    more = len(shown) - 8
    return "\n\n".join(f"`{t}`" for t in shown[:8]) + (f"\n\nand {more} more" if more > 0 else "")


def definitions_at(a: Analysis, line: int, col: int) -> list[tuple[str, Span, Span | None]]:
    if a.module is None:
        return []
    item = _enclosing(a.module, line, col)
    return definitions(a, item) if item is not None else []


def completions(a: Analysis, line: int, col: int) -> list[tuple[str, str, str]]:
    """(label, kind, detail) for what may be written at (line, col): inside a call's brackets its
    keyword arguments first, then names in scope, blocks, ops, built-ins and keywords."""
    from .build import BUILTINS
    from .ops.registry import all_ops, signature, user_callable

    out: list[tuple[str, str, str]] = []
    call = _open_call(a.text, line, col)
    if call is not None:
        op = all_ops().get(call)
        block = a.blocks.get(call)
        names = [x.name for x in op.attrs] if op is not None else [p.name for p in block.params] if block else []
        out += [(f"{n} = ", "keyword", f"{call}(..., {n} = ...)") for n in names]
    seen = set()
    for n, span, _ in definitions_at(a, line, col):
        if n not in seen:
            seen.add(n)
            out.append((n, "variable", f"defined at {span.line}:{span.col}"))
    out += [(b, "block", f"block {b}({', '.join(p.name for p in blk.params)})") for b, blk in sorted(a.blocks.items())]
    out += [(n, "op", f"{n}({signature(op)})") for n, op in sorted(all_ops().items()) if user_callable(op)]
    out += [(n, "function", "built-in") for n in sorted(BUILTINS)]
    out += [(k, "keyword", "") for k in KEYWORDS]
    return out


def _open_call(text: str, line: int, col: int) -> str | None:
    """The name of the innermost call whose `(` is open at (line, col)."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return None
    before = "\n".join(lines[:line - 1] + [lines[line - 1][:col - 1]])
    before = re.sub(r'"[^"\n]*"|#[^\n]*', lambda m: " " * len(m.group()), before)
    depth = 0
    for i in range(len(before) - 1, -1, -1):
        ch = before[i]
        if ch in ")]":
            depth += 1
        elif ch in "([":
            if depth == 0:
                if ch == "[":
                    return None
                m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", before[:i])
                return m.group(1) if m else None
            depth -= 1
        elif ch == "{" or ch == "}":
            return None
    return None


def file_of(a: Analysis, span: Span) -> Path:
    """The file a span names: the document, the standard library, or a file beside it."""
    from .source import STDLIB_PREFIX, stdlib_dir

    if span.file == a.path:
        return Path(a.path)
    if span.file.startswith(STDLIB_PREFIX):
        return stdlib_dir() / span.file[len(STDLIB_PREFIX):]
    p = Path(span.file)
    return p if p.is_absolute() else a.base / p


# -- the protocol -----------------------------------------------------------------------------


def _utf16(line: str, col0: int) -> int:
    return len(line[:col0].encode("utf-16-le")) // 2


def _from_utf16(line: str, units: int) -> int:
    n = 0
    for i, ch in enumerate(line):
        if n >= units:
            return i
        n += 2 if ord(ch) > 0xFFFF else 1
    return len(line)


def serve() -> None:
    """Run the server on stdin / stdout until the client exits."""
    try:
        from lsprotocol import types as lsp
        from pygls.lsp.server import LanguageServer
        from pygls.uris import to_fs_path
    except ImportError:
        from .errors import UsageError

        raise UsageError("almc lsp needs pygls: pip install 'almc[lsp]'") from None
    from . import __version__
    from .fmt import format_source

    server = LanguageServer("almc", __version__)
    analyses: dict[str, Analysis] = {}

    def lsp_range(text: str, span: Span):
        lines = text.split("\n")

        def pos(line, col):
            line0 = min(max(line - 1, 0), max(len(lines) - 1, 0))
            return lsp.Position(line0, _utf16(lines[line0] if lines else "", max(col - 1, 0)))
        if span.line < 1:
            return lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
        end = (span.end_line, span.end_col) if span.end_line >= span.line else (span.line, span.col + 1)
        return lsp.Range(pos(span.line, span.col), pos(*end))

    def position(text: str, p) -> tuple[int, int]:
        lines = text.split("\n")
        line = lines[p.line] if p.line < len(lines) else ""
        return p.line + 1, _from_utf16(line, p.character) + 1

    def refresh(uri: str) -> None:
        doc = server.workspace.get_text_document(uri)
        path = to_fs_path(uri) or uri
        a = analyse(doc.source, path)
        previous = analyses.get(uri)
        if previous is not None and a.module is None:  # mid-edit syntax error: keep answering from the last parse
            a = Analysis(path, doc.source, a.diagnostics, previous.module, previous.blocks, previous.values,
                         previous.base)
        analyses[uri] = a
        diags = []
        for d in a.diagnostics:
            here = d.span.file == path
            message = d.message if here else f"{d.span}: {d.message}"
            if d.hint:
                message += f"\nhint: {d.hint}"
            severity = lsp.DiagnosticSeverity.Error if d.severity == "error" else lsp.DiagnosticSeverity.Warning
            span = d.span if here else Span(path, 0, 0, 0, 0)
            diags.append(lsp.Diagnostic(range=lsp_range(doc.source, span), message=message, severity=severity,
                                        source="almc"))
        server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=diags,
                                                                              version=doc.version))

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls, params):
        refresh(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls, params):
        refresh(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls, params):
        analyses.pop(params.text_document.uri, None)
        server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=params.text_document.uri,
                                                                              diagnostics=[]))

    def at(params):
        """(the document's analysis, line, column) of a request's position; None before its first analysis."""
        a = analyses.get(params.text_document.uri)
        return None if a is None else (a, *position(a.text, params.position))

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    def on_hover(ls, params):
        where = at(params)
        if where is None:
            return None
        text = hover(*where)
        return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text)) if text else None

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def on_definition(ls, params):
        where = at(params)
        span = None if where is None else definition(*where)
        if span is None:
            return None
        a = where[0]
        target = file_of(a, span)
        if target == Path(a.path):
            return lsp.Location(uri=params.text_document.uri, range=lsp_range(a.text, span))
        try:
            text = target.read_text(encoding="utf-8")
        except OSError:
            return None
        return lsp.Location(uri=target.resolve().as_uri(), range=lsp_range(text, span))

    kinds = {"keyword": lsp.CompletionItemKind.Keyword, "variable": lsp.CompletionItemKind.Variable,
             "block": lsp.CompletionItemKind.Module, "op": lsp.CompletionItemKind.Function,
             "function": lsp.CompletionItemKind.Function}

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["(", ",", ">"]))
    def on_completion(ls, params):
        where = at(params)
        if where is None:
            return None
        items = [lsp.CompletionItem(label=label, kind=kinds[kind], detail=detail or None)
                 for label, kind, detail in completions(*where)]
        return lsp.CompletionList(is_incomplete=False, items=items)

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    def on_formatting(ls, params):
        doc = server.workspace.get_text_document(params.text_document.uri)
        try:
            new = format_source(doc.source, to_fs_path(params.text_document.uri) or "<document>")
        except AlmError:
            return None  # the diagnostics already say why
        if new == doc.source:
            return []
        lines = doc.source.split("\n")
        end = lsp.Position(len(lines) - 1, _utf16(lines[-1], len(lines[-1])))
        return [lsp.TextEdit(range=lsp.Range(lsp.Position(0, 0), end), new_text=new)]

    server.start_io()
