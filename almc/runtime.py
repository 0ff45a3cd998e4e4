"""Running ONNX models in onnxruntime, on CUDA when it can really load, else on CPU.

onnxruntime-gpu lists CUDAExecutionProvider even on machines without a GPU and
then logs loading errors when asked for it. We ask for CUDA only when a CUDA
driver library is present, silence onnxruntime's own logging below errors, and
report the provider that actually ran.
"""
from __future__ import annotations

import ctypes
import os
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def cuda_driver_present() -> bool:
    if os.environ.get("ALMC_DEVICE", "").lower() == "cpu":
        return False
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(lib)
            return True
        except OSError:
            continue
    return False


def providers_for(device: str = "auto") -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available or not cuda_driver_present():
            from .errors import UsageError

            raise UsageError("--device cuda was asked for, but no CUDA driver or CUDA-enabled onnxruntime is "
                             "present here; use --device auto or cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and cuda_driver_present():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@lru_cache(maxsize=1)
def _register_cpu_arena() -> bool:
    """One CPU memory arena for the process, shared by its sessions, that grows by what is asked
    instead of doubling its chunks: a ResNet-18 training step's peak resident memory 428 -> 371
    MiB, at the same speed. False where this onnxruntime cannot (sessions then keep their own)."""
    import onnxruntime as ort

    try:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        # max_mem 0 (no limit), extend strategy 1 (kSameAsRequested), default chunk sizes
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
        return True
    except Exception:
        return False


def lean_memory(opts) -> None:
    """Session options that use the shared CPU arena (see _register_cpu_arena)."""
    if _register_cpu_arena():
        opts.add_session_config_entry("session.use_env_allocators", "1")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which a container or taskset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads() -> int:
    """onnxruntime's intra-op threads for inference when none are asked for: the usable CPUs, less
    those other processes keep busy now (the runnable tasks of /proc/loadavg, which the 1-minute
    load average trails by a minute). onnxruntime's own default takes every core, and on a
    loaded machine its spinning workers wait for each other (figures: docs/performance.md).
    Training does not use it: its float sums depend on the thread count, and a seed must give
    the same weights however busy the machine is (train.py)."""
    try:
        with open("/proc/loadavg") as f:
            others = int(f.read().split()[3].split("/")[0]) - 1  # less this process, which is running
    except (OSError, ValueError, IndexError):
        others = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, usable_cpus() - max(0, others))


def session(model, device: str = "auto", threads: int | None = None, memory_pattern: bool = True):
    """An InferenceSession for a ModelProto, bytes or path; `.get_providers()[0]` says what runs.

    `memory_pattern=False` for a training step: after its first run onnxruntime lays every
    intermediate out in one block of its own while the arena keeps the first run's chunks, so the
    intermediates are held twice. Without it a ResNet-18 step's peak resident memory is
    markedly lower, at the same speed. Inference keeps it: a small call (LeNet at batch 1) is
    slightly faster with it (figures: docs/performance.md)."""
    import onnxruntime as ort

    providers = providers_for(device)
    # A CUDA provider that fails to load (missing cuDNN, say) falls back to the CPU; its loading
    # errors are noise to the user, who is told which provider ran instead.
    # Nor are its run-time error logs: the same error reaches the caller as the exception, which
    # almc turns into a message naming the file (an embedding id past the table, say).
    ort.set_default_logger_severity(4)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or default_threads()
    lean_memory(opts)
    opts.enable_mem_pattern = memory_pattern
    if not isinstance(model, (bytes, str, os.PathLike)):
        model = model.SerializeToString()
    if isinstance(model, os.PathLike):
        model = str(model)
    # Strict float32 on CUDA, as on the CPU: onnxruntime's CUDA provider would otherwise let cuBLAS
    # and cuDNN round matmul and conv inputs to TF32 (10 mantissa bits), and the numbers would drift
    # from every float32 reference by ~1e-3.
    providers = [(p, {"use_tf32": "0"}) if p == "CUDAExecutionProvider" else p for p in providers]
    return ort.InferenceSession(model, sess_options=opts, providers=providers)


def run(model, inputs: dict[str, np.ndarray], device: str = "auto") -> tuple[dict[str, np.ndarray], str]:
    """Run once; returns (outputs by name, the provider that ran)."""
    s = session(model, device)
    names = [o.name for o in s.get_outputs()]
    outs = s.run(names, inputs)
    return dict(zip(names, outs)), s.get_providers()[0]
