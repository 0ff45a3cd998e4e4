"""Summary: per layer, output shape, parameters, activations, multiply-adds,
receptive field and jump; then totals.

A *layer* is a value named in the source (`c1 = conv(...) |> relu` is one
layer, conv and relu together): the rows read like the model file. Inside
blocks, layers carry the call path (`layer1/b0/y`).

The receptive field is tracked per spatial axis as (size, jump) relative to the
input: a window of kernel k, stride s, dilation d maps (r, j) to
(r + (k - 1) d j, j s); where branches meet (add, concat) the largest field
along any path is kept; dense and global pooling see the whole input ("all").
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from math import ceil, prod

import numpy as np

from .graph import INPUT, Graph, is_frozen, is_leaf, live_nodes, param_specs
from .ops.registry import lookup

GLOBAL = None  # a receptive field covering the whole input


@dataclass
class Row:
    name: str
    ops: str
    shape: str
    params: int  # trainable
    frozen: int  # parameters the training section freezes
    buffers: int
    activations: int
    macs: int
    receptive_field: list | None
    jump: list | None


@dataclass
class Summary:
    model: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    trainable_params: int = 0
    frozen_params: int = 0
    buffers: int = 0
    macs: int = 0
    activations: int = 0
    activation_bytes: int = 0

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.frozen_params

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_params"] = self.total_params
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        return format_table(self)

    def _repr_html_(self) -> str:  # Jupyter
        return to_html(self)


def receptive_fields(graph: Graph) -> dict[str, tuple[list, list] | None]:
    """(sizes, jumps) per spatial axis for every node; None where it covers the whole input."""
    rf: dict[str, tuple[list, list] | None] = {}
    for node in graph.nodes():
        if node.op == INPUT:
            n = max(node.type.rank - 2, 0)
            rf[node.id] = ([1] * n, [1] * n)
            continue
        ins = [rf[i] for i in node.inputs]
        op = lookup(node.op)
        types = [graph.node(i).type for i in node.inputs]
        win = op.window(types, node.attrs) if op.window else None
        if win == "global" or any(x is GLOBAL for x in ins):
            rf[node.id] = GLOBAL
            continue
        if not ins:
            rf[node.id] = ([], [])
            continue
        # where branches meet, keep the largest field (per axis) along any path
        n = max(len(x[0]) for x in ins)
        r = [max((x[0][a] for x in ins if a < len(x[0])), default=1) for a in range(n)]
        j = [max((x[1][a] for x in ins if a < len(x[1])), default=1) for a in range(n)]
        if win:
            for a, w in enumerate(win[:n]):
                if w.transposed:  # an output reads ceil(span / stride) inputs, each j apart
                    r[a] = r[a] + (ceil(((w.kernel - 1) * w.dilation + 1) / w.stride) - 1) * j[a]
                    j[a] = j[a] / w.stride
                else:
                    r[a] = r[a] + (w.kernel - 1) * w.dilation * j[a]
                    j[a] = j[a] * w.stride
        rf[node.id] = ([_num(x) for x in r], [_num(x) for x in j])
    return rf


def _num(x):
    return int(x) if float(x).is_integer() else round(float(x), 3)


def summarize(graph: Graph) -> Summary:
    live = live_nodes(graph)
    params_of: dict[str, list] = {}
    for nid, _, p in param_specs(graph):
        params_of.setdefault(nid, []).append(p)
    rfs = receptive_fields(graph)
    s = Summary(graph.name,
                {i: str(graph.node(i).type) for i in graph.inputs},
                {o: str(graph.node(n).type) for o, n in graph.outputs.items()})
    groups: dict[str, list] = {}
    for node in graph.nodes():
        if node.op != INPUT and node.id in live:
            groups.setdefault(node.layer, []).append(node)
    for layer, nodes in groups.items():
        last = next((n for n in nodes if n.id == layer), nodes[-1])
        params = frozen = buffers = macs = 0
        for n in nodes:
            op = lookup(n.op)
            for p in params_of.get(n.id, []):
                if not p.trainable:
                    buffers += prod(p.shape)
                elif is_frozen(graph, n.id):
                    frozen += prod(p.shape)
                else:
                    params += prod(p.shape)
            if op.macs:
                macs += op.macs([graph.node(i).type for i in n.inputs], n.type, n.attrs)
        ops = "→".join(n.op for n in nodes if not is_leaf(n)) or nodes[-1].op
        acts = last.type.per_example()
        field_ = rfs[last.id]
        s.rows.append(Row(layer, ops, str(last.type), params, frozen, buffers, acts, macs,
                          None if field_ is GLOBAL else field_[0], None if field_ is GLOBAL else field_[1]))
        s.trainable_params += params
        s.frozen_params += frozen
        s.buffers += buffers
        s.macs += macs
        s.activations += acts
        s.activation_bytes += acts * np.dtype(last.type.numpy_dtype).itemsize
    return s


def _axes(v) -> str:
    if v is None:
        return "all"
    if not v:
        return "-"
    return str(v[0]) if len(set(v)) == 1 else "x".join(str(x) for x in v)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"


HEAD = ["layer", "op", "output", "params", "activations", "mult-adds", "rf", "jump"]


def table_cells(s: Summary) -> list[list[str]]:
    """The table's rows as text cells, under HEAD: the terminal's table and the notebook's."""
    return [[r.name, r.ops, r.shape, f"{r.params:,}" if not r.frozen else f"{r.params + r.frozen:,} frozen",
             f"{r.activations:,}", f"{r.macs:,}", _axes(r.receptive_field), _axes(r.jump)] for r in s.rows]


def totals(s: Summary) -> list[str]:
    return [f"parameters:  {s.total_params:,} ({s.trainable_params:,} trainable, {s.frozen_params:,} frozen)"
            + (f"; buffers: {s.buffers:,}" if s.buffers else ""),
            f"mult-adds:   {s.macs:,} per example",
            f"activations: {s.activations:,} per example ({_human_bytes(s.activation_bytes)} as float32)"]


def to_html(s: Summary) -> str:
    """The summary as an HTML table, for notebooks (Summary._repr_html_)."""
    from html import escape

    right = ' style="text-align:right"'
    head = "".join(f"<th{right if i >= 3 else ''}>{escape(h)}</th>" for i, h in enumerate(HEAD))
    rows = "".join("<tr>" + "".join(f"<td{right if i >= 3 else ''}>{escape(c)}</td>" for i, c in enumerate(row))
                   + "</tr>" for row in table_cells(s))
    io = "<br>".join([*(f"input {escape(k)}: {escape(v)}" for k, v in s.inputs.items()),
                      *(f"output {escape(k)}: {escape(v)}" for k, v in s.outputs.items())])
    return (f"<p><b>model {escape(s.model)}</b><br>{io}</p><table><thead><tr>{head}</tr></thead><tbody>{rows}"
            f"</tbody></table><p>{'<br>'.join(escape(t) for t in totals(s))}</p>")


def format_table(s: Summary) -> str:
    head = HEAD
    body = table_cells(s)
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    right = {3, 4, 5, 6, 7}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [f"model {s.model}", *(f"  input  {k}: {v}" for k, v in s.inputs.items()),
           *(f"  output {k}: {v}" for k, v in s.outputs.items()), "", line(head),
           "  ".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    out += ["", *totals(s)]
    return "\n".join(out)
