"""Formatting: .alm text -> the same program in one canonical layout, every comment kept.

The printer walks the parse tree's tokens (a second Lark parser keeps the anonymous ones:
brackets, commas, `=`) and decides the space between each pair from the tokens and the rule
they belong to, as gofmt does; it does not re-derive precedence, so the parentheses the user
wrote stay. Layout:

- one statement per line, four spaces per brace level, `}` on its own line;
- spaces around binary operators, `=`, `|>` and keywords, one after a comma, none inside
  brackets, before a call's `(` or after a unary sign;
- the user's line breaks are kept where a statement may continue (after a comma, after an
  opening bracket, before `|>`, a binary operator, `and`, `or`, `if` and `else`) and joined
  elsewhere; a continuation lines up after its open
  bracket, or four spaces in (a bracket the line broke after, or a pipe);
- at most one blank line, none after `{` or before `}`, exactly one after a top-level item;
- trailing comments two spaces after the longest line of their run of commented lines.

Long lines are not wrapped. The result parses to the same tree, so it compiles to the same
ONNX (node doc strings, which hold source positions, and the source's hash aside): tests/test_fmt.py holds every
model, the standard library and the documentation's examples to that, and to idempotence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from lark import Lark, Token, Tree

from .parse import grammar_text, parse

INDENT = "    "
STATEMENTS = {"import_stmt", "model_def", "block_def", "train_def", "input_stmt", "output_stmt", "assign",
              "for_stmt", "return_stmt", "assert_stmt", "setting"}
BREAKS_BEFORE = {"binop", "and_", "or_", "ifelse"}  # a line may break before their operator
TIGHT_BEFORE = {",", ")", "]", ".", ":"}
TIGHT_AFTER = {"(", "[", "."}
LINE_ENDS = re.compile(r"[ \t\r]*[\n#]")  # what follows a bracket the source broke the line after
_comments: list[Token] = []  # filled by the lexer callback during one parse


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=False,
                keep_all_tokens=True, lexer_callbacks={"COMMENT": _comments.append})


def _tokens(tree: Tree) -> list[tuple[Token, str, bool]]:
    """(token, the rule it belongs to, whether it starts a statement), in source order.
    Iterative: an expression may nest 100,000 deep (parse.MAX_EXPR_DEPTH)."""
    out = []
    stack = [(tree, "start", False)]
    while stack:
        node, parent, starts = stack.pop()
        if isinstance(node, Token):
            out.append((node, parent, starts))
            continue
        rule = node.data if isinstance(node.data, str) else node.data.value
        kids = node.children
        first = rule in STATEMENTS or starts
        stack.extend((k, rule, first and i == 0) for i, k in reversed(list(enumerate(kids))))
    return out


def _operator(tok: Token) -> bool:
    return tok.type in ("ADD_OP", "MUL_OP") or str(tok) in ("and", "or", "if", "else")


def _space(prev: Token, prev_rule: str, tok: Token, rule: str) -> str:
    v, w = str(prev), str(tok)
    if v == "," and w not in (")", "]"):
        return " "  # `x[..., :k]`
    if w in TIGHT_BEFORE or v in TIGHT_AFTER:
        return ""
    if v == ":":
        return " " if prev_rule == "input_stmt" else ""  # `x: f32[...]`, but `x[1:3]`
    if prev.type == "ADD_OP" and prev_rule == "unary":
        return ""
    if w == "(" and rule in ("call", "pipe_call", "params"):
        return ""
    if w == "[" and rule in ("index", "input_stmt"):
        return ""
    return " "


@dataclass
class _Line:
    indent: str
    code: str = ""
    comment: str | None = None  # a trailing comment
    standalone: bool = False  # the line is a comment
    item_end: str = ""  # "import" or "}" on the line that ends a top-level item


@dataclass
class _Printer:
    lines: list[_Line] = field(default_factory=list)
    depth: int = 0  # brace level
    brackets: list[tuple[int, bool, str]] = field(default_factory=list)  # (column after it, broken after, indent)
    last_line: int = 0  # the source line of what was emitted last

    @property
    def line(self) -> _Line:
        return self.lines[-1]

    def new_line(self, indent: str, source_line: int, blank_allowed: bool = True, is_import: bool = False) -> None:
        prev = self.lines[-1] if self.lines else None
        opened = prev is not None and prev.code.endswith("{") and not prev.standalone
        forced = prev is not None and prev.item_end and not (prev.item_end == "import" and is_import)
        blank = prev is not None and blank_allowed and not opened and (forced or source_line - self.last_line > 1)
        if blank:
            self.lines.append(_Line(""))
        self.lines.append(_Line(indent))

    def continuation(self, closing: bool = False) -> str:
        statement = INDENT * self.depth
        if not self.brackets:
            return statement + INDENT
        col, broken, indent = self.brackets[-1]
        if broken:
            return indent if closing else indent + INDENT
        return " " * col

    def standalone(self, comment: Token, indent: str) -> None:
        self.new_line(indent, comment.line)
        self.line.code = _comment_text(comment)
        self.line.standalone = True
        self.last_line = comment.line

    def trailing(self, comment: Token, prev: tuple[Token, str] | None) -> bool:
        """Ends the current line with `comment` when it follows `prev` on its source line."""
        if prev is not None and prev[0].end_line == comment.line and self.line.comment is None:
            self.line.comment = _comment_text(comment)
            return True
        return False


def _comment_text(c: Token) -> str:
    return str(c).rstrip()


def format_source(text: str, file: str = "<string>") -> str:
    """`text` in canonical layout; raises AlmError for a syntax error, as every command does."""
    if text.startswith("\ufeff"):
        text = text[1:]
    parse(text, file)  # syntax errors and the nesting limits, reported as for every command
    _comments.clear()
    tree = _parser().parse(text)
    comments = sorted(_comments, key=lambda c: c.start_pos)
    _comments.clear()
    p = _Printer()
    ci = 0
    prev: tuple[Token, str] | None = None
    for tok, rule, starts in _tokens(tree):
        w = str(tok)
        # comments before this token: trailing ones end the line of the token before them
        while ci < len(comments) and comments[ci].start_pos < tok.start_pos:
            c = comments[ci]
            ci += 1
            if p.trailing(c, prev):
                continue
            if starts or w == "}" or prev is None:
                p.standalone(c, INDENT * p.depth)
            else:
                p.standalone(c, p.continuation(closing=w in ")]"))
        if starts or w == "}":
            if w == "}":
                p.depth -= 1
            p.new_line(INDENT * p.depth, tok.line, blank_allowed=w != "}", is_import=rule == "import_stmt")
            p.line.code = w
        else:
            assert prev is not None
            broke = tok.line > prev[0].end_line
            keep = broke and (str(prev[0]) in (",", "(", "[") or w == "|>" or rule in BREAKS_BEFORE and _operator(tok)
                              or w in ")]" and p.brackets and p.brackets[-1][1])
            after_comment = p.lines[-1].comment is not None or p.last_line > prev[0].end_line
            if keep or after_comment:
                p.lines.append(_Line(p.continuation(closing=w in ")]")))
                p.line.code = w
            else:
                p.line.code += _space(prev[0], prev[1], tok, rule) + w
        if w in ("(", "["):  # broken after in the source: its contents hang four in
            col = len(p.line.indent) + len(p.line.code)
            p.brackets.append((col, LINE_ENDS.match(text, tok.end_pos) is not None, p.line.indent))
        elif w in (")", "]"):
            p.brackets.pop()
        elif w == "{":
            p.depth += 1
        if w == "}" and p.depth == 0:
            p.line.item_end = "}"
        elif rule == "import_stmt" and tok.type == "STRING":
            p.line.item_end = "import"
        p.last_line = tok.end_line
        prev = (tok, rule)
    for c in comments[ci:]:
        if not p.trailing(c, prev):
            p.standalone(c, "")
    newline = "\r\n" if "\r\n" in text else "\n"
    return newline.join(_aligned(p.lines)) + newline if p.lines else ""


def _aligned(lines: list[_Line]) -> list[str]:
    """Each line as text; a run of consecutive lines with trailing comments aligns them."""
    out = []
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and lines[j].comment is not None:
            j += 1
        if j == i:
            line = lines[i]
            out.append((line.indent + line.code).rstrip())
            i += 1
            continue
        col = max(len(line.indent) + len(line.code) for line in lines[i:j]) + 2
        for line in lines[i:j]:
            code = line.indent + line.code
            out.append(code + " " * (col - len(code)) + line.comment)
        i = j
    return out
