"""A Pygments lexer for .alm, registered as `alm` (pyproject's pygments.lexers entry point): the
docs' ```alm blocks, Sphinx, MkDocs and `pygmentize -l alm` colour with it. Needs Pygments,
which almc itself does not; editors/alm.tmLanguage.json is the same for TextMate-grammar editors
(VS Code, Sublime Text). tests/test_lexer.py holds both to the grammar's keywords."""
from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

DECLARATIONS = ("model", "block", "train")
KEYWORDS = ("import", "input", "output", "return", "for", "assert")
WORD_OPERATORS = ("and", "or", "not", "in", "if", "else")
CONSTANTS = ("true", "false")
SETTINGS = ("minimize", "optimizer", "schedule", "batch", "epochs", "freeze", "lr_scale", "data", "seed", "classes")
DTYPES = ("f32", "f64", "f16", "i64", "i32", "bool")


class AlmLexer(RegexLexer):
    name = "alm"
    aliases = ["alm"]
    filenames = ["*.alm"]
    mimetypes = ["text/x-alm"]
    flags = re.MULTILINE

    tokens = {
        "root": [
            (r"\n", Whitespace),  # alone: a setting is known by starting its line, indentation included
            (r"^([ \t]*)(" + "|".join(SETTINGS) + r")\b(?![ \t]*=)", bygroups(Whitespace, Keyword.Pseudo)),
            (r"[ \t\r]+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r'"[^"\n]*"', String),
            (r"(\b(?:model|block|train)\b)([ \t]+)([A-Za-z_][A-Za-z0-9_]*)", bygroups(Keyword.Declaration, Whitespace,
                                                                                    Name.Class)),
            (words(CONSTANTS, prefix=r"\b", suffix=r"\b"), Keyword.Constant),
            (words(WORD_OPERATORS, prefix=r"\b", suffix=r"\b"), Operator.Word),
            (words(KEYWORDS, prefix=r"\b", suffix=r"\b"), Keyword),
            (words(DTYPES, prefix=r"\b", suffix=r"(?=\[)"), Keyword.Type),
            (r"([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+", Number.Float),
            (r"[0-9][0-9_]*", Number.Integer),
            (r"[A-Za-z_][A-Za-z0-9_]*(?=[ \t]*\()", Name.Function),
            (r"[A-Za-z_][A-Za-z0-9_]*", Name),
            (r"\|>|\*\*|//|==|!=|<=|>=|[-+*/%=<>]", Operator),
            (r"[\[\](){},.:]", Punctuation),
        ],
    }
