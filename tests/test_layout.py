"""The layout's promises, checked on the source: the passes outside almc/ops/ never name an op.

What an op does in each mode (training form, state updates, folding, its PyTorch module, its
hints) is in its Op record; a pass that wrote `node.op == "batchnorm"` would be a second place
to edit when the op changes. A pass may still *build* a node of an op it needs (the optimiser's
`d.op("mul", ...)`, build's constants): naming the op it constructs is using the op, not
switching on it, so the first argument of a node-building call is allowed and nothing else is.
"""
from __future__ import annotations

import ast
from pathlib import Path

from almc.ops.registry import all_ops

ALMC = Path(__file__).resolve().parent.parent / "almc"
BUILDERS = {"op", "tensor_op", "add_node", "lookup"}  # calls whose first argument is the op they build or read


def _named(call: ast.Call) -> str | None:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def op_name_literals(path: Path, names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    allowed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _named(node) in BUILDERS and node.args:
            allowed.add(id(node.args[0]))
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                allowed.add(id(first.value))  # a docstring may mention ops
        if isinstance(node, ast.JoinedStr):  # f-strings are text for people, not op names
            allowed.update(id(v) for v in ast.walk(node) if isinstance(v, ast.Constant))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
            and id(node) not in allowed]


def test_no_module_outside_almc_ops_names_a_registered_op():
    names = set(all_ops())
    found = [f"almc/{path.name}:{line}: {value!r}" for path in sorted(ALMC.glob("*.py"))
             for line, value in op_name_literals(path, names)]
    assert not found, "op names outside almc/ops/ (give the op a rule instead):\n" + "\n".join(found)


def test_the_check_finds_a_comparison_with_an_op_name(tmp_path):
    bad = tmp_path / "a_pass.py"
    bad.write_text('"""Mentions conv in a docstring."""\n'
                   'def f(node, d):\n    d.op("mul", [])\n    return node.op == "batchnorm" or f"conv{1}"\n')
    assert op_name_literals(bad, {"batchnorm", "mul", "conv"}) == [(4, "batchnorm")]
