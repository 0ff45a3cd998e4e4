"""Provider choice, quiet CPU fallback, and the check that onnxruntime implements every op."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import almc
from almc import runtime, support
from almc.errors import AlmError, UsageError
from almc.lower import OPSET

SRC = "model M {\n input x: f32[N, 1, 8, 8]\n y = conv(x, 2, 3) |> relu\n output z = global_avgpool(y) |> flatten\n}\n"


def test_cpu_is_chosen_without_a_cuda_driver(monkeypatch):
    monkeypatch.setattr(runtime, "cuda_driver_present", lambda: False)
    assert runtime.providers_for("auto") == ["CPUExecutionProvider"]
    with pytest.raises(UsageError, match="--device cuda was asked for"):
        runtime.providers_for("cuda")


def test_cuda_is_asked_for_only_when_it_can_load(monkeypatch):
    monkeypatch.setattr(runtime, "cuda_driver_present", lambda: True)
    expected = (["CUDAExecutionProvider", "CPUExecutionProvider"]
                if "CUDAExecutionProvider" in ort.get_available_providers() else ["CPUExecutionProvider"])
    assert runtime.providers_for("auto") == expected


def test_cuda_sessions_ask_for_strict_float32(monkeypatch):
    """TF32 off: on a GPU almc's numbers stay within float32 rounding of the CPU's."""
    seen = {}

    def fake_session(model, sess_options, providers):
        seen["providers"] = providers
        return "session"
    monkeypatch.setattr(runtime, "providers_for", lambda device: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    assert runtime.session(b"model", "cuda") == "session"
    assert seen["providers"] == [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]


def test_running_prints_no_provider_noise(tmp_path):
    (tmp_path / "m.alm").write_text(SRC)
    np.save(tmp_path / "x.npy", np.ones((2, 1, 8, 8), np.float32))
    env = {k: v for k, v in __import__("os").environ.items() if k != "ALMC_DEVICE"}
    r = subprocess.run([sys.executable, "-m", "almc.cli", "run", "m.alm", "--input", "x.npy"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.splitlines()[0] in ("ran on CPUExecutionProvider", "ran on CUDAExecutionProvider")


def test_supported_ops_are_remembered_per_onnxruntime_version(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    proto = almc.load(SRC).compile(check_runtime=False)
    support.ensure_supported(proto, OPSET)
    cache = support.cache_file(OPSET)
    assert cache.exists() and support.ort_version() in cache.name
    assert {"Conv", "Relu", "GlobalAveragePool", "Flatten"} <= support._known(OPSET)
    monkeypatch.setattr(runtime, "session", lambda *a, **k: 1 / 0)  # a cached model needs no session
    support.ensure_supported(proto, OPSET)


def test_an_op_onnxruntime_lacks_is_a_located_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    proto = almc.load(SRC).compile(check_runtime=False)

    def refuse(*a, **k):
        raise ort.capi.onnxruntime_pybind11_state.NotImplemented(
            "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
            "Relu(21) node with name 'y'")
    monkeypatch.setattr(runtime, "session", refuse)
    with pytest.raises(AlmError) as e:
        support.ensure_supported(proto, OPSET)
    d = e.value.diagnostics[0]
    assert d.message == f"onnxruntime {support.ort_version()} cannot run ONNX op Relu at opset 21"
    assert (d.span.file, d.span.line, d.span.col) == ("<string>", 3, 6)


def test_training_steps_run_without_the_memory_pattern(monkeypatch):
    """Inference sessions keep onnxruntime's memory pattern (faster small calls); the training
    step's session goes without it, which held every intermediate twice (runtime.session)."""
    proto = almc.load("model M { input x: f32[N, 3]\n output y = dense(x, 2) }").compile()
    assert runtime.session(proto, "cpu").get_session_options().enable_mem_pattern
    assert not runtime.session(proto, "cpu", memory_pattern=False).get_session_options().enable_mem_pattern
    made = []
    original = runtime.session

    def spy(model, device="auto", threads=None, memory_pattern=True):
        made.append(memory_pattern)
        return original(model, device, threads, memory_pattern)

    monkeypatch.setattr(runtime, "session", spy)
    almc.load(str(Path(__file__).resolve().parent.parent / "models" / "logistic.alm")).train(epochs=1)
    assert made[:2] == [False, True]  # the step, then the evaluation model


def test_an_op_onnxruntime_lacks_is_found_by_its_one_node_probe(tmp_path, monkeypatch):
    """No mock: onnxruntime has no float64 Col2Im kernel. The check loads one node per op type
    (support.one_node_per_op), not the whole model, and names the node's place in the source."""
    from onnx import TensorProto, helper

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="r", doc_string="m.alm:2:5"),
             helper.make_node("Col2Im", ["r", "size", "block"], ["y"], name="y", doc_string="m.alm:3:6")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 4, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
                              [helper.make_tensor("size", TensorProto.INT64, [2], [4, 4]),
                               helper.make_tensor("block", TensorProto.INT64, [2], [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)
    probe = support.one_node_per_op(model, {"Relu", "Col2Im"})
    assert [n.op_type for n in probe.graph.node] == ["Relu", "Col2Im"]
    with pytest.raises(AlmError) as e:
        support.ensure_supported(model, OPSET)
    d = e.value.diagnostics[0]
    assert d.message == f"onnxruntime {support.ort_version()} cannot run ONNX op Col2Im at opset 18"  # its version
    assert (d.span.file, d.span.line, d.span.col) == ("m.alm", 3, 6)


@pytest.mark.parametrize("name", ["lenet", "lstm", "resnet18", "efficientnet_b0", "googlenet"])
def test_the_one_node_probe_of_every_step_loads(name):
    """The probe is itself a valid model (no fall-back to a session of the whole step): every op
    of these steps, Scan with its carried weights included."""
    from test_models import RUN
    from test_portable import load

    proto = load(name).compile_training_step(gradients=False)
    ops = {n.op_type for n in proto.graph.node}
    probe = support.one_node_per_op(proto, ops)
    assert probe is not None and {n.op_type for n in probe.graph.node} == ops
    runtime.session(probe, "cpu")
    assert RUN[name]
