"""Source positions and diagnostics.

Every error almc reports about a model is a `Diagnostic`: a severity, a message,
a `Span` (file, line, column, end) and an optional hint. Passes collect them and
raise one `AlmError` holding all of them, so a user sees every independent
mistake in one run. `render` formats a diagnostic the way compilers do:

    models/lenet.alm:5:10: error: conv: the kernel (7) is larger than the padded input (5)
        c5 = conv(s4, 120, 7)
             ^^^^^^^^^^^^^^^^
      hint: pad = 3 keeps the size 5
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    col: int
    end_line: int
    end_col: int  # exclusive

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file  # line 0: the file as a whole


UNKNOWN = Span("<unknown>", 0, 0, 0, 0)
MAX_SHOWN = 50  # diagnostics printed per run; the rest are counted


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Span = UNKNOWN
    hint: str | None = None
    severity: str = "error"  # or "warning"
    notes: tuple[str, ...] = ()  # extra lines, e.g. the import chain

    def render(self, sources: dict[str, str] | None = None) -> str:
        return render(self, sources or {})


class AlmError(Exception):
    """One or more diagnostics about the user's model (exit status 1)."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic, sources: dict[str, str] | None = None):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        self.sources = dict(sources or {})
        super().__init__("\n".join(f"{d.span}: {d.severity}: {d.message}" for d in self.diagnostics))

    def render(self, limit: int = MAX_SHOWN) -> str:
        """The first `limit` diagnostics, then how many more there are."""
        shown = "\n".join(render(d, self.sources) for d in self.diagnostics[:limit])
        rest = len(self.diagnostics) - limit
        return shown + (f"\n... and {rest:,} more diagnostic{'s' * (rest != 1)} not shown" if rest > 0 else "")


class UsageError(Exception):
    """A bad command line or API call (exit status 2)."""


class ShapeError(Exception):
    """Raised by an op's shape rule; build attaches the call's span."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass
class Collector:
    """Accumulates diagnostics across a pass; `check()` raises them together."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    n_errors: int = 0
    _seen: set = field(default_factory=set)

    def error(self, message: str, span: Span = UNKNOWN, hint: str | None = None, notes=()) -> None:
        if (message, span) in self._seen:
            return  # the same mistake reached again (a block called in a loop): report it once
        self._seen.add((message, span))
        self.n_errors += 1
        self.diagnostics.append(Diagnostic(message, span, hint, "error", tuple(notes)))

    @property
    def hints_wanted(self) -> bool:
        """Hints cost a search over the names in scope: made only for the errors that are shown."""
        return self.n_errors < MAX_SHOWN

    def warning(self, message: str, span: Span = UNKNOWN, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(message, span, hint, "warning"))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    def check(self) -> None:
        if self.errors:
            ordered = sorted(self.diagnostics, key=lambda d: (d.severity != "error", d.span.file, d.span.line, d.span.col))
            raise AlmError(ordered, self.sources)


def did_you_mean(name: str, candidates, otherwise: str | None = None, cutoff: float = 0.6) -> str | None:
    """The hint for a misspelt name: the closest of `candidates`, else `otherwise`."""
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=cutoff)
    return f"did you mean '{close[0]}'?" if close else otherwise


def elide(text: str, limit: int = 80) -> str:
    """`text`, or its head and tail around an ellipsis when it is longer than `limit`."""
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-(limit // 2 - 3):]}"


def normalize_newlines(text: str) -> str:
    """A lone CR (old Mac files) ends a line as LF does; CRLF stays as it is."""
    return re.sub("\r(?!\n)", "\n", text) if "\r" in text else text


@lru_cache(maxsize=16)
def source_lines(text: str) -> tuple[str, ...]:
    """The lines positions count: split at LF only, as the parser counts them (CRLF's CR dropped).
    Unicode line separators (U+2028, ...) are characters inside a line, not line ends."""
    return tuple(line[:-1] if line.endswith("\r") else line for line in text.split("\n"))


def render(d: Diagnostic, sources: dict[str, str]) -> str:
    out = [f"{elide(str(d.span), 300)}: {d.severity}: {elide(d.message, 1000)}"]  # a 2 MB name prints 1 KB
    text = sources.get(d.span.file)
    if text is not None and d.span.line >= 1:
        lines = source_lines(text)
        if d.span.line <= len(lines):
            line = lines[d.span.line - 1].expandtabs(1)
            shown = line if len(line) <= 200 else line[: 200] + " ..."
            out.append("    " + shown)
            start = max(d.span.col - 1, 0)
            end = d.span.end_col - 1 if d.span.end_line == d.span.line else len(line)
            end = min(max(end, start + 1), len(shown))
            if start < len(shown):
                out.append("    " + " " * start + "^" * max(end - start, 1))
    out.extend(f"  {n}" for n in d.notes)
    if d.hint:
        out.append(f"  hint: {elide(d.hint, 1000)}")
    return "\n".join(out)


class FileError(Exception):
    """A data, weights or ONNX file that cannot be read (exit status 1): 'path: error: message'."""

    def __init__(self, path, message: str):
        super().__init__(f"{path}: error: {message}")
        self.path = str(path)
        self.message = message
