"""almc lsp, driven as an editor drives it: JSON-RPC messages over the server's stdin / stdout."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import almc
from almc.cli import main
from almc.errors import AlmError

pytest.importorskip("pygls")
ROOT = Path(__file__).resolve().parent.parent

MODEL = """model Net(classes = 10) {
    input image: f32[N, 1, 32, 32]
    c1 = conv(image, 6, kernel = 5) |> relu
    s2 = maxpool(c1, 2)
    output logits = flatten(s2) |> dense(classes)
}
"""
BROKEN = """model Net {
    input image: f32[N, 1, 8, 8]
    c1 = conv(image, 6, kernel = 9)
    output logits = dense(flatten(c2), 10)
}
"""


class Client:
    """A language client: frames messages with Content-Length, reads the server on a thread so
    that a silent server fails the test instead of hanging it."""

    def __init__(self, cwd: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "almc", "lsp"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
        self.inbox: queue.Queue = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                key, _, value = line.decode().partition(":")
                if key.lower() == "content-length":
                    length = int(value)
            self.inbox.put(json.loads(out.read(length)))

    def send(self, method: str, params, id=None):
        msg = {"jsonrpc": "2.0", "method": method, "params": params}
        if id is not None:
            msg["id"] = id
        body = json.dumps(msg).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def request(self, method: str, params):
        self.next_id += 1
        self.send(method, params, self.next_id)
        while True:
            msg = self.inbox.get(timeout=60)
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]

    def notification(self, method: str):
        while True:
            msg = self.inbox.get(timeout=60)
            if msg.get("method") == method:
                return msg["params"]


@pytest.fixture
def client(tmp_path):
    c = Client(tmp_path)
    c.request("initialize", {"processId": None, "rootUri": tmp_path.as_uri(), "capabilities": {}})
    c.send("initialized", {})
    yield c
    if c.proc.poll() is None:
        c.proc.kill()
    c.proc.wait(timeout=10)


def open_doc(c: Client, path: Path, text: str):
    c.send("textDocument/didOpen", {"textDocument": {"uri": path.as_uri(), "languageId": "alm", "version": 1,
                                                     "text": text}})
    return c.notification("textDocument/publishDiagnostics")


def at(path: Path, line: int, character: int):
    return {"textDocument": {"uri": path.as_uri()}, "position": {"line": line, "character": character}}


def test_diagnostics_as_the_user_types(client, tmp_path):
    doc = tmp_path / "net.alm"
    published = open_doc(client, doc, BROKEN)
    assert published["uri"] == doc.as_uri()
    got = [(d["range"], d["severity"], d["message"]) for d in published["diagnostics"]]
    assert got == [
        ({"start": {"line": 2, "character": 9}, "end": {"line": 2, "character": 35}}, 1,
         "conv: the kernel (9) is larger than the padded input (8)\nhint: pad = 4 keeps the size 8"),
        ({"start": {"line": 3, "character": 34}, "end": {"line": 3, "character": 36}}, 1,
         "undefined name 'c2'"),
    ]
    with pytest.raises(AlmError) as e:  # the same errors as almc check, at the same places
        almc.load(BROKEN)
    assert [(d.span.line - 1, d.span.col - 1, d.span.end_col - 1) for d in e.value.diagnostics] == [
        (r["start"]["line"], r["start"]["character"], r["end"]["character"]) for r, _, _ in got]
    client.send("textDocument/didChange", {"textDocument": {"uri": doc.as_uri(), "version": 2},
                                           "contentChanges": [{"text": MODEL}]})
    assert client.notification("textDocument/publishDiagnostics")["diagnostics"] == []


def test_hover_definition_completion_and_formatting(client, tmp_path):
    doc = tmp_path / "net.alm"
    assert open_doc(client, doc, MODEL)["diagnostics"] == []
    value = client.request("textDocument/hover", at(doc, 2, 5))  # c1
    assert value["contents"]["value"] == "`c1: f32[N, 6, 28, 28], 156 parameters, 117,600 multiply-adds, " \
                                         "receptive field 5x5`"
    used = client.request("textDocument/hover", at(doc, 3, 17))  # c1 read by maxpool
    assert used["contents"]["value"] == value["contents"]["value"]
    op = client.request("textDocument/hover", at(doc, 3, 10))  # maxpool
    assert op["contents"]["value"].startswith("```alm\nmaxpool(x, kernel, stride = none, pad = 0")
    param = client.request("textDocument/hover", at(doc, 4, 42))  # classes
    assert param["contents"]["value"] == "`classes = 10`"
    assert client.request("textDocument/definition", at(doc, 3, 17)) == {
        "uri": doc.as_uri(), "range": {"start": {"line": 2, "character": 4}, "end": {"line": 2, "character": 6}}}
    assert client.request("textDocument/definition", at(doc, 4, 42))["range"]["start"] == {"line": 0, "character": 10}
    items = client.request("textDocument/completion", at(doc, 2, 24))["items"]  # inside conv( ... )
    labels = [i["label"] for i in items]
    assert labels[:3] == ["channels = ", "kernel = ", "stride = "] and "image" in labels and "maxpool" in labels
    edits = client.request("textDocument/formatting", {"textDocument": {"uri": doc.as_uri()},
                                                       "options": {"tabSize": 4, "insertSpaces": True}})
    assert edits == []  # already canonical
    messy = tmp_path / "messy.alm"
    open_doc(client, messy, MODEL.replace("    ", "  "))
    edits = client.request("textDocument/formatting", {"textDocument": {"uri": messy.as_uri()},
                                                       "options": {"tabSize": 4, "insertSpaces": True}})
    assert [e["newText"] for e in edits] == [MODEL]


def test_definition_reaches_the_standard_library(client, tmp_path):
    doc = tmp_path / "r.alm"
    text = (ROOT / "models" / "resnet18.alm").read_text()
    assert open_doc(client, doc, text)["diagnostics"] == []
    line = next(i for i, s in enumerate(text.splitlines()) if "resnet_stem(image)" in s)
    col = text.splitlines()[line].index("resnet_stem")
    got = client.request("textDocument/definition", at(doc, line, col))
    assert got["uri"] == (ROOT / "almc" / "stdlib" / "resnet.alm").resolve().as_uri()
    stdlib = (ROOT / "almc" / "stdlib" / "resnet.alm").read_text().splitlines()
    assert stdlib[got["range"]["start"]["line"]].startswith("block resnet_stem(")
    loop = next(i for i, s in enumerate(text.splitlines()) if "x = resnet_stage(" in s)
    hover = client.request("textDocument/hover", at(doc, loop, text.splitlines()[loop].index("x =")))
    assert [h.split("]")[0] + "]" for h in hover["contents"]["value"].split("\n\n")] == [
        "`x: f32[N, 64, 56, 56]", "`x: f32[N, 128, 28, 28]", "`x: f32[N, 256, 14, 14]", "`x: f32[N, 512, 7, 7]"]


def test_a_syntax_error_keeps_the_last_good_answers(client, tmp_path):
    doc = tmp_path / "net.alm"
    open_doc(client, doc, MODEL)
    client.send("textDocument/didChange", {"textDocument": {"uri": doc.as_uri(), "version": 2},
                                           "contentChanges": [{"text": MODEL.replace("s2 = maxpool(c1, 2)", "s2 = (")}]})
    diags = client.notification("textDocument/publishDiagnostics")["diagnostics"]
    assert len(diags) == 1 and diags[0]["range"]["start"]["line"] == 4
    hover = client.request("textDocument/hover", at(doc, 2, 5))
    assert hover["contents"]["value"].startswith("`c1: f32[N, 6, 28, 28]")


def test_the_server_exits_when_asked(client):
    assert client.request("shutdown", None) is None
    client.send("exit", None)
    assert client.proc.wait(timeout=30) == 0


def test_without_pygls_it_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pygls", None)
    monkeypatch.setitem(sys.modules, "pygls.lsp.server", None)
    assert main(["lsp"]) == 2
    assert "almc lsp needs pygls: pip install 'almc[lsp]'" in capsys.readouterr().err
