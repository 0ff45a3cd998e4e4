"""Reading a program: the root file, its imports (transitively), and the standard library.

`import "x.alm"` resolves relative to the importing file; `import "std/x.alm"`
reads almc's standard library. An import that leaves the directory tree of the
root file is refused unless `allow_outside` is set, so compiling a file never
reads files the user did not put beside it. Every diagnostic in an imported file
names that file and carries the chain of imports that led to it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import syntax as s
from .errors import AlmError, Collector, Diagnostic, Span, elide, normalize_newlines
from .parse import parse, read_source

STDLIB_PREFIX = "std/"


@dataclass
class Program:
    root: s.Module
    blocks: dict[str, s.BlockDef] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # every file read, resolved (outputs must not be one)


def stdlib_dir() -> Path:
    return Path(str(resources.files("almc.stdlib")))


def load_program(c: Collector, path: str | os.PathLike | None = None, text: str | None = None,
                 name: str = "<string>", allow_outside: bool = False, base: Path | None = None) -> Program:
    """`base`: the folder imports of `text` resolve in (default: the current one)."""
    if path is not None:
        shown = str(path)
        text = read_source(path, shown)
        root_path = Path(path).resolve()
        base = root_path.parent
    else:
        shown, root_path, base = name, None, Path(base or Path.cwd()).resolve()
        text = normalize_newlines(text)
    c.sources[shown] = text
    root = parse(text, shown)
    prog = Program(root, sources=c.sources, files=[root_path] if root_path else [])
    seen: dict[Path, s.Module] = {}
    origin: dict[str, Span] = {}
    chain = [root_path] if root_path else []
    shown_of = {root_path: shown} if root_path else {}

    from .build import BUILTINS
    from .ops.registry import lookup

    def add_blocks(mod: s.Module, notes: tuple[str, ...]):
        for b in mod.blocks:
            if lookup(b.name) or b.name in BUILTINS:
                c.error(f"block '{b.name}' has the name of a built-in op", b.span, "rename the block", notes)
            elif b.name in prog.blocks:
                first = origin[b.name]
                c.error(f"block '{b.name}' is defined twice (first at {first})", b.span, None, notes)
            else:
                prog.blocks[b.name] = b
                origin[b.name] = b.span

    def visit(mod: s.Module, here: Path, notes: tuple[str, ...], here_shown: str):
        for imp in mod.imports:
            if not imp.path or any(ord(ch) < 32 for ch in imp.path) or not imp.path.endswith(".alm"):
                c.error(f'cannot import "{imp.path.encode("unicode_escape").decode()}": an import names a .alm file',
                        imp.span, 'for example: import "blocks.alm" or import "std/resnet.alm"', notes)
                continue
            try:
                target = _resolve(imp.path, here)
            except (RuntimeError, OSError) as e:  # a symbolic-link loop, a name too long, ...
                c.error(f'cannot import "{elide(imp.path, 200)}": {_reason(e)}', imp.span, None, notes)
                continue
            if imp.path.startswith(STDLIB_PREFIX):
                shown_t = imp.path
                if not _inside(target, stdlib_dir().resolve()):
                    c.error(f'import "{imp.path}" leaves the standard library', imp.span,
                            "std/ names a file of almc's standard library, e.g. std/resnet.alm", notes)
                    continue
            else:
                shown_t = os.path.normpath(os.path.join(os.path.dirname(here_shown), imp.path))
                if not allow_outside and not _inside(target, base):
                    c.error(f'import "{imp.path}" leaves the directory of {shown}', imp.span,
                            "move the file beside the model, or pass --allow-outside-imports", notes)
                    continue
            if target in chain:
                if target == chain[-1]:
                    c.error(f"{here_shown} imports itself", imp.span, None, notes)
                else:
                    loop = " → ".join(shown_of.get(p, str(p)) for p in chain[chain.index(target):] + [target])
                    loop = loop if len(loop) < 300 else loop[:300] + " ..."
                    c.error(f"circular import: {loop}", imp.span, None, notes)
                continue
            if target in seen:
                continue
            if target.exists() and not target.is_file():
                what = "a directory" if target.is_dir() else "not a regular file (a FIFO, device or socket)"
                c.error(f'cannot import "{imp.path}": it is {what}, not a .alm file', imp.span, None, notes)
                continue
            if not target.is_file():
                c.error(f'cannot find the imported file "{imp.path}"', imp.span,
                        f"looked for {shown_t}" if not imp.path.startswith(STDLIB_PREFIX)
                        else f"the standard library has: {', '.join(sorted(p.name for p in stdlib_dir().glob('*.alm')))}",
                        notes)
                continue
            try:
                t = read_source(target, shown_t)
                c.sources[shown_t] = t
                sub = parse(t, shown_t)
            except AlmError as e:
                for d in e.diagnostics:
                    c.diagnostics.append(Diagnostic(d.message, d.span, d.hint, d.severity,
                                                    d.notes + (f"imported from {imp.span}",) + notes))
                c.sources.update(e.sources)
                continue
            seen[target] = sub
            prog.files.append(target)
            shown_of[target] = shown_t
            sub_notes = (f"imported from {imp.span}",) + notes
            chain.append(target)
            visit(sub, target.parent, sub_notes, shown_t)
            chain.pop()
            add_blocks(sub, sub_notes)

    visit(root, base, (), shown)
    add_blocks(root, ())
    return prog


def _resolve(name: str, here: Path) -> Path:
    if name.startswith(STDLIB_PREFIX):
        return (stdlib_dir() / name[len(STDLIB_PREFIX):]).resolve()
    return (here / name).resolve()


def _reason(e: Exception) -> str:
    if isinstance(e, RuntimeError):
        return "its symbolic links form a loop"
    return e.strerror or str(e)


def _inside(target: Path, base: Path) -> bool:
    try:
        target.relative_to(base)
        return True
    except ValueError:
        return False
