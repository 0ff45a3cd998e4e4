"""almc/lexer.py (Pygments) and editors/alm.tmLanguage.json (TextMate) against the grammar: the
same keywords, settings and dtypes as the parser's, every model, stdlib file and docs example
lexed without an error token and back to its exact text."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("pygments")

from pygments.token import Error, Keyword, Name  # noqa: E402

from almc import lexer  # noqa: E402
from almc.objective import SETTINGS  # noqa: E402
from almc.types import DTYPES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("models/*.alm"), *ROOT.glob("almc/stdlib/*.alm")])
GRAMMAR_WORDS = set(re.findall(r'"([a-z_]+)"', (ROOT / "grammar" / "alm.lark").read_text()))
TEXTMATE = json.loads((ROOT / "editors" / "alm.tmLanguage.json").read_text())


def doc_examples():
    for doc in ("docs/language.md", "docs/training.md", "README.md"):
        for k, block in enumerate(re.findall(r"```alm\n(.*?)```", (ROOT / doc).read_text(), re.S)):
            yield pytest.param(block, id=f"{doc}:{k}")


def test_the_keywords_are_the_grammars():
    assert set(lexer.DECLARATIONS + lexer.KEYWORDS + lexer.WORD_OPERATORS + lexer.CONSTANTS) == GRAMMAR_WORDS
    assert lexer.SETTINGS == SETTINGS and set(lexer.DTYPES) == set(DTYPES)


@pytest.mark.parametrize("text", [*(pytest.param(p.read_text(), id=p.name) for p in SOURCES), *doc_examples()])
def test_every_source_lexes_without_an_error_and_back_to_its_text(text):
    tokens = list(lexer.AlmLexer(stripnl=False, ensurenl=False).get_tokens(text))
    assert "".join(v for _, v in tokens) == text
    assert not [v for t, v in tokens if t in Error]


def test_what_the_tokens_say():
    tokens = [(t, v) for t, v in lexer.AlmLexer().get_tokens((ROOT / "models" / "lenet.alm").read_text())
              if v.strip()]
    kinds = {v: t for t, v in tokens}
    assert kinds["LeNet5"] is Name.Class and kinds["model"] is Keyword.Declaration
    assert kinds["conv"] is Name.Function and kinds["f32"] is Keyword.Type
    assert kinds["minimize"] is Keyword.Pseudo and kinds["optimizer"] is Keyword.Pseudo
    assert kinds["lr"] is Name  # a keyword argument, not the setting


def test_pygments_finds_the_lexer_by_name():
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        found = get_lexer_by_name("alm")
    except ClassNotFound:
        pytest.skip("almc is not installed with its entry points here (pip install -e .)")
    assert isinstance(found, lexer.AlmLexer)


def test_the_textmate_grammar_says_what_the_lexer_says():
    assert TEXTMATE["scopeName"] == "source.alm" and TEXTMATE["fileTypes"] == ["alm"]
    patterns = {p.get("name") or next(iter(p["captures"].values()))["name"]: re.compile(p["match"], re.M)
                for p in TEXTMATE["patterns"]}
    words = lambda key: set(re.search(r"\(([a-z_|0-9]+)\)", patterns[key].pattern).group(1).split("|"))  # noqa: E731
    assert words("keyword.control.alm") == set(lexer.KEYWORDS)
    assert words("keyword.operator.word.alm") == set(lexer.WORD_OPERATORS)
    assert words("constant.language.alm") == set(lexer.CONSTANTS)
    assert words("storage.type.dtype.alm") == set(lexer.DTYPES)
    assert words("keyword.other.setting.alm") == set(lexer.SETTINGS)
    assert words("storage.type.alm") == set(lexer.DECLARATIONS)
    lenet = (ROOT / "models" / "lenet.alm").read_text()
    settings = [m.group(1) for m in patterns["keyword.other.setting.alm"].finditer(lenet)]
    assert settings == ["minimize", "optimizer", "schedule", "batch", "epochs"]
