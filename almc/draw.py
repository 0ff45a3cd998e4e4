"""Drawing the graph: DOT text always; SVG / PNG through Graphviz's `dot` when it is installed."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np

from .errors import UsageError
from .graph import INPUT, Graph, is_leaf, live_nodes, param_specs


def _q(s: str) -> str:
    """A DOT string: backslashes and quotes escaped, then each newline as DOT's own `\\n` (escaping
    a label's `\\n` as text showed a literal backslash-n in every drawn node)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph, depth: int | None = None) -> str:
    """The graph as DOT: a node per computation (its parameter count beside its op), the shapes on
    the edges, each block call a cluster (nested as the calls are). `depth`: draw block calls
    deeper than this as one node each (depth 0: every top-level call collapsed)."""
    live = live_nodes(graph)
    params: dict[str, int] = {}
    for nid, _, p in param_specs(graph):  # trainable ones, as almc summary counts them (not buffers)
        if p.trainable:
            params[nid] = params.get(nid, 0) + int(np.prod(p.shape, dtype=np.int64))
    shown = [n for n in graph.nodes() if n.id in live and not is_leaf(n)]

    def drawn_as(node) -> str:  # the node, or the collapsed block call that holds it
        return node.calls[depth] if depth is not None and len(node.calls) > depth else node.id

    # the clusters: call prefix -> (its block's name, the enclosing call), in first-seen order
    clusters: dict[str, tuple[str, str | None]] = {}
    members: dict[str | None, dict[str, None]] = {}  # cluster -> what is drawn in it (an ordered set)
    collapsed: dict[str, int] = {}  # a collapsed call's parameter count
    for node in shown:
        keep = node.calls if depth is None else node.calls[:depth + 1]
        for k, prefix in enumerate(keep):
            clusters.setdefault(prefix, (node.scope[k], keep[k - 1] if k else None))
        where = drawn_as(node)
        if where != node.id:
            collapsed[where] = collapsed.get(where, 0) + params.get(node.id, 0)
            home = clusters[where][1]
        else:
            home = node.calls[-1] if node.calls else None
        members.setdefault(home, {})[where] = None

    def node_line(nid: str) -> str:
        if nid in collapsed:
            count = collapsed[nid]
            label = f"{clusters[nid][0]}\n{nid.rstrip('/')}" + (f"\n{count:,} parameters" if count else "")
            return f"{_q(nid)} [label={_q(label)}, shape=box3d, fillcolor=\"#fdf3dc\"];"
        node = graph.node(nid)
        if node.op == INPUT:
            label = f"{nid}\ninput {node.type}"
            return f"{_q(nid)} [label={_q(label)}, shape=oval, fillcolor=\"#e3f4e1\"];"
        attrs = ", ".join(f"{k}={v}" for k, v in node.attrs.items() if v is not None and k != "init")
        label = f"{nid}\n{node.op}" + (f"({attrs})" if attrs else "")
        if params.get(nid):
            label += f"\n{params[nid]:,} parameters"
        return f"{_q(nid)} [label={_q(label)}];"

    lines = [f"digraph {_q(graph.name)} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']

    def emit(home: str | None, indent: str) -> None:
        for nid in members.get(home, {}):
            lines.append(indent + node_line(nid))
        for prefix, (block, parent) in clusters.items():
            if parent == home and prefix not in collapsed:
                lines.append(f"{indent}subgraph {_q('cluster_' + prefix)} {{")
                title = f"{block} ({prefix.rstrip('/')})"
                lines.append(f"{indent}  label={_q(title)}; style=\"rounded,dashed\"; color=\"#8899aa\"; "
                             "fontname=\"Helvetica\"; fontsize=10;")
                emit(prefix, indent + "  ")
                lines.append(f"{indent}}}")
    emit(None, "  ")
    edges = []
    for node in shown:
        for i in node.inputs:
            src = graph.node(i)
            if is_leaf(src):
                continue
            edge = (drawn_as(src), drawn_as(node), str(src.type))
            if edge[0] != edge[1] and edge not in edges:
                edges.append(edge)
    lines += [f"  {_q(a)} -> {_q(b)} [label={_q(t)}];" for a, b, t in edges]
    for name, nid in graph.outputs.items():
        out = f"output:{name}"
        label = f"{name}\noutput {graph.node(nid).type}"
        lines.append(f"  {_q(out)} [label={_q(label)}, shape=oval, fillcolor=\"#fbe9e7\"];")
        lines.append(f"  {_q(drawn_as(graph.node(nid)))} -> {_q(out)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(graph: Graph, fmt: str, depth: int | None = None) -> bytes:
    dot = to_dot(graph, depth)
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
