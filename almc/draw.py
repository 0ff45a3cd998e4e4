"""Drawing the graph: DOT text always; SVG / PNG through Graphviz's `dot` when it is installed."""
from __future__ import annotations

import shutil
import subprocess

from .errors import UsageError
from .graph import INPUT, Graph, is_leaf, live_nodes


def _q(s: str) -> str:
    """A DOT string: backslashes and quotes escaped, then each newline as DOT's own `\\n` (escaping
    a label's `\\n` as text showed a literal backslash-n in every drawn node)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph) -> str:
    live = live_nodes(graph)
    lines = [f"digraph {_q(graph.name)} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']
    for node in graph.nodes():
        if node.id not in live or is_leaf(node):
            continue
        if node.op == INPUT:
            label = f"{node.id}\ninput {node.type}"
            lines.append(f"  {_q(node.id)} [label={_q(label)}, shape=oval, fillcolor=\"#e3f4e1\"];")
            continue
        attrs = ", ".join(f"{k}={v}" for k, v in node.attrs.items() if v is not None and k != "init")
        label = f"{node.id}\n{node.op}" + (f"({attrs})" if attrs else "")
        lines.append(f"  {_q(node.id)} [label={_q(label)}];")
    for node in graph.nodes():
        if node.id not in live or is_leaf(node):
            continue
        for i in node.inputs:
            src = graph.node(i)
            if is_leaf(src):
                continue
            lines.append(f"  {_q(i)} -> {_q(node.id)} [label={_q(str(src.type))}];")
    for name, nid in graph.outputs.items():
        out = f"output:{name}"
        label = f"{name}\noutput {graph.node(nid).type}"
        lines.append(f"  {_q(out)} [label={_q(label)}, shape=oval, fillcolor=\"#fbe9e7\"];")
        lines.append(f"  {_q(nid)} -> {_q(out)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(graph: Graph, fmt: str) -> bytes:
    dot = to_dot(graph)
    if fmt == "dot":
        return dot.encode()
    exe = shutil.which("dot")
    if exe is None:
        raise UsageError(f"drawing {fmt.upper()} needs Graphviz's 'dot' program: install the graphviz package "
                         "(apt install graphviz, brew install graphviz), or write a .dot file")
    r = subprocess.run([exe, f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=120)
    if r.returncode != 0:
        raise UsageError(f"dot failed: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout
