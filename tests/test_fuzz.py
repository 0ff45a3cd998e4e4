"""Fuzzing: whatever the input, almc either builds the model or reports located
errors. Never an uncaught exception, never a hang. A fixed budget keeps CI fast
(derandomized: the same examples every run)."""
from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark

from almc.compiler import check
from almc.errors import AlmError
from almc.parse import grammar_text

MODELS = sorted((Path(__file__).resolve().parent.parent / "models").glob("*.alm"))
# each example must finish within 5 s: a hang fails the test instead of stalling CI
FUZZ = settings(max_examples=150, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def compiles_or_reports(text: str) -> None:
    try:
        check(text=text)  # always as source text (almc.load reads a lone "x.alm" as a path)
    except AlmError as e:
        assert e.diagnostics
        for d in e.diagnostics:
            assert d.message
            assert d.span.line >= 1 and d.span.col >= 1, d
        e.render()  # rendering never fails either


@FUZZ
@given(st.text(max_size=300))
def test_random_text(text):
    compiles_or_reports(text)


@FUZZ
@given(st.text(alphabet="model block input output for in if else return import{}()[],=:|>+-*/%#.0123456789 \nxNf32abc",
               max_size=200))
def test_random_text_from_the_language_alphabet(text):
    compiles_or_reports(text)


@FUZZ
@given(from_lark(Lark(grammar_text(), parser="lalr", lexer="basic"), start="start"))  # uncached: keeps .grammar
def test_programs_derived_from_the_grammar(text):
    compiles_or_reports(text)


TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+\.?\d*(?:e-?\d+)?|\|>|//|\*\*|==|!=|<=|>=|\S")
EXTREMES = ["0", "-1", "1", "99999999", "1e308", "2147483648", "0.5", "-0.0", "1_000_000_000_000"]


@st.composite
def mutated_model(draw):
    text = draw(st.sampled_from(MODELS)).read_text()
    tokens = [(m.start(), m.end()) for m in TOKEN.finditer(text)]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(tokens) - 1))
        a, b = tokens[i]
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "extreme"]))
        if kind == "delete":
            text = text[:a] + text[b:]
        elif kind == "duplicate":
            text = text[:b] + " " + text[a:b] + text[b:]
        elif kind == "swap" and i + 1 < len(tokens):
            c, d = tokens[i + 1]
            text = text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
        elif kind == "extreme" and text[a:b][0].isdigit():
            text = text[:a] + draw(st.sampled_from(EXTREMES)) + text[b:]
        tokens = [(m.start(), m.end()) for m in TOKEN.finditer(text)]
    return text


@settings(max_examples=200, deadline=5000, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_model())
def test_mutated_course_models(text):
    if 'import "std/' in text or "import" not in text:
        compiles_or_reports(text)
