"""The measuring processes of bench/run.py, one mode each:

    python bench/workers.py MODE --workdir DIR [options]

compile-inproc  almc.load(path).compile() + serialisation vs torch.onnx.export
                (TorchScript and dynamo), alternating, after one warm-up each;
                writes the inference files with the benchmark's weights
infer           onnxruntime on almc's and torch's ONNX, and PyTorch eager, with the
                same weights: outputs checked, then batch-1 latency and batch-B
                throughput, alternating; node counts and op histograms
train-almc      almc's ONNX training step run by almc.runner.StepRunner, as almc train runs it
train-torch     the same step in PyTorch eager (imports torch and numpy only)
train-verify    one step of each from the same weights and batch, compared
lenet-accuracy  bench/lenet_torch.py's almc-vs-PyTorch LeNet run on the digits

Each mode writes DIR/<name>.json. Only the standard library is imported at the
top, so each training process holds only what its contender needs, and its
peak resident memory (VmHWM) is its own. Not ru_maxrss: Linux carries it across
fork and exec, so a worker's ru_maxrss starts at the harness's own resident size.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))


# -- memory ------------------------------------------------------------------------

def mem() -> dict:
    """VmRSS and VmHWM (this process's peak since exec or the last reset) in MiB."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0]) / 1024
    except OSError:
        pass
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is the steps' own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def write(workdir: Path, name: str, data: dict) -> None:
    tmp = workdir / f"{name}.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(workdir / f"{name}.json")


def rotated(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"


# -- ONNX Runtime ------------------------------------------------------------------

def ort_session(model, device: str, threads: int = 2, profile: str | None = None, memory_pattern: bool = True,
                optimized: str | None = None):
    """The benchmark's sessions: ORT_ENABLE_ALL, 2 intra-op threads on the CPU, for every contender;
    a training step without the memory pattern, as almc/train.py runs it (almc/runtime.py: session).
    `profile`: a file prefix for onnxruntime's profiler; `optimized`: where to save the optimised
    graph the session runs."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    if optimized:
        opts.optimized_model_filepath = optimized
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:  # the CPU memory arena almc's own sessions use (almc/runtime.py), for every contender
        from almc.runtime import lean_memory

        lean_memory(opts)
    except ImportError:
        pass
    opts.enable_mem_pattern = memory_pattern
    if device == "cuda":
        if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from the nvidia-* wheels, if that is where they are
            try:
                ort.preload_dlls()
            except Exception:
                pass
        # strict float32 on both sides (no TF32), cuDNN's algorithm search as torch's cudnn.benchmark
        try:
            sess = ort.InferenceSession(model, sess_options=opts, providers=[
                ("CUDAExecutionProvider", {"use_tf32": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"}),
                "CPUExecutionProvider"])
        except Exception:
            sess = ort.InferenceSession(model, sess_options=opts, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    else:
        sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    if device == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"the CUDA provider did not load (providers: {sess.get_providers()})")
    return sess


def optimized_ops(path: str, workdir: Path, tag: str) -> dict:
    """The op histogram of the graph ONNX Runtime actually runs on the CPU, after ORT_ENABLE_ALL."""
    import onnx
    import onnxruntime as ort

    out = workdir / f"ortopt_{tag}.onnx"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(out)
    ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    return graph_stats(onnx.load(str(out), load_external_data=False))


def torch_cuda_setup() -> None:
    """PyTorch on CUDA as the ORT sessions run: float32 without TF32, cuDNN autotuning on."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True


def graph_stats(proto) -> dict:
    from collections import Counter

    ops = Counter(n.op_type for n in proto.graph.node)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"nodes": len(proto.graph.node), "ops": dict(ops.most_common()), "opset": opset,
            "initializers": len(proto.graph.initializer)}


# -- compile-inproc ----------------------------------------------------------------

def compile_inproc(args) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    import numpy as np
    from export_torch import export
    from torch_models import ARCHS, build, load_almc_weights

    import almc

    wd = Path(args.workdir)
    result = {"archs": {}, "dynamo": bool(args.dynamo), "load_before": os.getloadavg()}
    for arch in args.archs.split(","):
        path = str(ROOT / ARCHS[arch][1])
        weights = dict(np.load(wd / f"weights_{arch}.npz"))
        module = build(arch).eval()
        load_almc_weights(module, weights)

        def run_almc(out):
            almc.load(path).export(out)

        contenders = {"almc": run_almc,
                      "torchscript": lambda out: export(module, arch, out, "torchscript")}
        if args.dynamo:
            contenders["dynamo"] = lambda out: export(module, arch, out, "dynamo")
        times = {k: [] for k in contenders}
        errors = {}
        names = list(contenders)
        for rep in range(-1, args.reps):  # rep -1: the warm-up, not recorded
            for name in rotated(names, rep):
                if name in errors:
                    continue
                out = wd / f"{name}_{arch}.onnx"
                t0 = time.perf_counter()
                try:
                    contenders[name](out)
                except Exception as e:  # an exporter that fails is reported, not fatal
                    errors[name] = error_text(e)
                    continue
                if rep >= 0:
                    times[name].append(time.perf_counter() - t0)
        # context: building the torch module (random initialisation), not part of the export call
        build_times = []
        for _ in range(max(1, min(3, args.reps))):
            t0 = time.perf_counter()
            build(arch)
            build_times.append(time.perf_counter() - t0)
        entry = {"times": times, "errors": errors, "torch_module_build": build_times,
                 "phases": almc_phases(path, max(1, min(3, args.reps)), wd)}
        # the inference files: almc's with the benchmark weights set through Model.weights;
        # torch's were written by the last export above, from the module holding the same weights
        m = almc.load(path)
        m.weights = weights
        (wd / f"infer_almc_{arch}.onnx").write_bytes(m.compile().SerializeToString())
        for name in ("torchscript", "dynamo"):
            src = wd / f"{name}_{arch}.onnx"
            if name in contenders and name not in errors and src.exists():
                src.replace(wd / f"infer_{name}_{arch}.onnx")
        result["archs"][arch] = entry
        print(f"compile-inproc {arch}: " + ", ".join(f"{k} {np.median(v):.3f}s" for k, v in times.items() if v),
              flush=True)
    result["load_after"] = os.getloadavg()
    write(wd, "compile_inproc", result)


def almc_phases(path: str, reps: int, wd: Path) -> dict:
    """Where almc's compile time goes, phase by phase as Model.export runs them: parse+build+shapes,
    weight initialisation, batch-norm folding, lowering, the ONNX checker, the runtime-support
    check, writing the file. Uses almc internals; absent if they moved."""
    try:
        import onnx

        import almc
        from almc.files import atomic_write
        from almc.fold import fold_layers
        from almc.lower import OPSET, lower_split
        from almc.onnxfile import checkable, chunks
        from almc.support import ensure_supported
    except Exception as e:
        return {"error": error_text(e)}
    keys = ["load (parse, build, shapes)", "weight initialisation", "batch-norm folding", "lowering",
            "onnx checker (full_check)", "runtime-support check", "write the file"]
    phases = {k: [] for k in keys}
    try:
        for _ in range(reps):
            t = [time.perf_counter()]
            m = almc.load(path)
            t.append(time.perf_counter())
            weights = m.initial_weights(0)
            t.append(time.perf_counter())
            graph, weights = fold_layers(m.graph, weights)
            t.append(time.perf_counter())
            skeleton, params = lower_split(graph, weights, 0)
            t.append(time.perf_counter())
            check = checkable(skeleton, params)
            onnx.checker.check_model(check, full_check=True)
            t.append(time.perf_counter())
            ensure_supported(check, OPSET)
            t.append(time.perf_counter())
            atomic_write(wd / "phases.onnx", chunks(skeleton, params))
            t.append(time.perf_counter())
            for k, a, b in zip(keys, t, t[1:]):
                phases[k].append(b - a)
    except Exception as e:
        return {"error": error_text(e)}
    return phases


# -- infer -------------------------------------------------------------------------

def infer(args) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import onnx
    import torch
    from torch_models import ARCHS, build, load_almc_weights

    wd = Path(args.workdir)
    dev = args.device
    torch.set_num_threads(args.threads)
    result = {"archs": {}, "device": dev, "threads": args.threads, "load_before": os.getloadavg()}
    rng = np.random.default_rng(0)
    for arch in args.archs.split(","):
        big = args.batch_big if arch != "resnet50" else args.batch_big_r50
        entry = {"batch_big": big, "graphs": {}, "check": {}, "b1": {}, "big": {}, "errors": {}}
        weights = dict(np.load(wd / f"weights_{arch}.npz"))
        module = build(arch).eval()
        load_almc_weights(module, weights)
        cpu_module = module
        if dev == "cuda":
            try:
                torch_cuda_setup()
                module = build(arch).eval()
                load_almc_weights(module, weights)
                module = module.cuda()
            except Exception as e:
                module = None
                entry["errors"]["eager"] = error_text(e)
        dims = ARCHS[arch][2]
        runners = {}
        for name in ("almc", "torchscript", "dynamo"):
            path = wd / f"infer_{name}_{arch}.onnx"
            if not path.exists():
                entry["errors"][f"onnx:{name}"] = "not exported (see the compile section)"
                continue
            proto = onnx.load(str(path))
            stats = graph_stats(proto)
            stats["bytes"] = path.stat().st_size
            try:
                stats["after_ort"] = optimized_ops(str(path), wd, f"{name}_{arch}")
            except Exception as e:
                stats["after_ort"] = {"error": error_text(e)}
            entry["graphs"][name] = stats
            try:
                runners[f"onnx:{name}"] = onnx_runner(str(path), dev, args.threads)
            except Exception as e:
                entry["errors"][f"onnx:{name}"] = error_text(e)
        if module is not None:
            runners["eager"] = eager_runner(module, dev)

        # the same weights: every contender against PyTorch eager on the CPU, before any timing
        x = rng.standard_normal((2, *dims)).astype(np.float32)
        ref = eager_runner(cpu_module, "cpu")(x, True)
        scale = max(1.0, float(np.abs(ref).max()))
        for name in list(runners):
            if name == "eager" and dev == "cpu":
                continue
            try:
                y = runners[name](x, True)
                diff = float(np.abs(y - ref).max())
                ok = diff <= 1e-4 * scale
            except Exception as e:
                diff, ok = None, False
                entry["errors"][name] = error_text(e)
            entry["check"][name] = {"max_abs_diff": diff, "ref_max_abs": float(np.abs(ref).max()), "ok": ok}
            if not ok:
                entry["errors"].setdefault(name, f"outputs differ from eager by {diff} (> 1e-4 x {scale:.3g}): not timed")
                del runners[name]

        for key, batch, reps in (("b1", 1, args.reps_b1), ("big", big, args.reps_big)):
            xb = rng.standard_normal((batch, *dims)).astype(np.float32)
            once = {}
            for k, r in runners.items():
                try:
                    f = r(xb, False, prepare=True)
                    f(), f(), f()  # warm-up: three calls each
                    once[k] = f
                except Exception as e:
                    entry["errors"][k] = error_text(e)
            if not once:
                continue
            times, block, rounds, untimed = alternate(once, "onnx:almc" if "onnx:almc" in once else "eager", reps)
            entry[key] = {"batch": batch, "block": block, "rounds": rounds, "untimed_first": untimed, "times": times}
            print(f"infer {arch} batch {batch}: " + ", ".join(f"{k} {np.median(v) * 1e3:.2f}ms" for k, v in times.items()),
                  flush=True)
        result["archs"][arch] = entry
    result["load_after"] = os.getloadavg()
    write(wd, "infer" if dev == "cpu" else "infer_cuda", result)


def alternate(once: dict, probe_key: str, reps: int) -> tuple[dict, int, int, bool]:
    """Time the prepared calls `once` (name -> f) in rotating rounds: (times by name, block, rounds,
    untimed_first). A block: a pause of 50 ms (onnxruntime's idle worker threads spin for 20-30 ms
    after a run and would halve the next contender's speed on 2 cores), one untimed call for short
    calls (waking the threads, caches), then back-to-back timed calls of one contender, ~0.1 s of
    them, at most 20 (200 for calls under 1 ms); at least 6 rounds of alternation."""
    probe = once[probe_key]
    one = []
    for _ in range(5):
        t0 = time.perf_counter()
        probe()
        one.append(time.perf_counter() - t0)
    block = max(1, min(200 if min(one) < 1e-3 else 20, int(0.1 / max(min(one), 1e-6))))  # µs calls: more, less noise
    untimed = min(one) < 0.05  # the switch matters for short calls only
    times = {k: [] for k in once}
    names = list(once)
    rounds = max(min(6, reps), -(-reps // block))
    for r in range(rounds):
        for name in rotated(names, r):
            time.sleep(0.05)  # let the other runtime's spinning worker threads go idle
            f = once[name]
            if untimed:
                f()
            for _ in range(block):
                t = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t)
    return times, block, rounds, untimed


def onnx_runner(path: str, dev: str, threads: int):
    import numpy as np
    import onnxruntime as ort

    sess = ort_session(path, dev, threads)
    in_name = sess.get_inputs()[0].name
    out_name = sess.get_outputs()[0].name

    def run(x, fetch, prepare=False):
        if dev == "cpu":
            feeds = {in_name: np.ascontiguousarray(x)}
            if prepare:
                return lambda: sess.run([out_name], feeds)
            return sess.run([out_name], feeds)[0]
        # CUDA: the input already on the device, the output left there (IOBinding)
        binding = sess.io_binding()
        xv = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), "cuda", 0)
        binding.bind_ortvalue_input(in_name, xv)
        binding.bind_output(out_name, "cuda")

        def call():
            sess.run_with_iobinding(binding)
            return xv  # keeps the input alive
        if prepare:
            return call
        call()
        return binding.get_outputs()[0].numpy()
    return run


def eager_runner(module, dev: str):
    import torch

    def run(x, fetch, prepare=False):
        xt = torch.from_numpy(x)
        if dev == "cuda":
            xt = xt.cuda()

        def call():
            with torch.inference_mode():
                y = module(xt)
            if dev == "cuda":
                torch.cuda.synchronize()
            return y
        if prepare:
            return call
        return call().cpu().numpy()
    return run


# -- training ----------------------------------------------------------------------

def load_train_config(wd: Path, model: str) -> dict:
    return json.loads((wd / f"train_{model}.json").read_text())


def almc_model(cfg):
    import almc

    if cfg.get("append"):
        text = (ROOT / cfg["source"]).read_text() + cfg["append"]
        return almc.load(text, **cfg.get("params", {}))
    return almc.load(str(ROOT / cfg["source"]), **cfg.get("params", {}))


class AlmcStep:
    """almc's training step as almc train runs it: compiled by almc.compiler.compile_step and run
    by almc.runner.StepRunner (parameters and optimiser state bound in place, the batch bound from
    the host, the loss read back every step), in the benchmark's session."""

    def __init__(self, cfg, weights, device: str, threads: int, profile: str | None = None,
                 optimized: str | None = None):
        import numpy as np

        from almc.compiler import compile_step
        from almc.runner import StepRunner

        self.np = np
        m = almc_model(cfg)
        t0 = time.perf_counter()
        compiled = compile_step(m.graph, gradients=False, target=device)
        self.compile_s = time.perf_counter() - t0
        proto = compiled.proto
        t0 = time.perf_counter()
        sess = ort_session(proto.SerializeToString(), device, threads, profile, memory_pattern=False,
                           optimized=optimized)
        self.session_s = time.perf_counter() - t0
        self.sess = sess
        self.x_name, self.y_name = m.graph.inputs[0], m.graph.train.labels[0]
        state = {name: np.zeros(shape, np.float32) for name, shape in compiled.signature.state.items()}
        self.runner = StepRunner(sess, compiled, weights, state, device)
        self.values = self.runner.values
        self.run_s = 0.0
        self.nodes = len(proto.graph.node)
        from collections import Counter

        self.ops = dict(Counter(n.op_type for n in proto.graph.node).most_common())

    def step(self, xb, yb, epoch: float, k: int) -> float:
        outs = self.runner.run({self.x_name: xb, self.y_name: yb}, epoch, k)
        self.run_s = self.runner.run_s
        self.last = outs
        return float(outs["loss"].numpy())


def lr_at(cfg, epoch: float) -> float:
    """almc's schedule at a fractional epoch: its Python reference, almc/ops/schedule.py."""
    from almc.ops.schedule import learning_rate

    return learning_rate(epoch, **cfg["schedule"])


class TorchStep:
    """The same step in PyTorch eager: forward, the same objective, backward, torch.optim.SGD."""

    def __init__(self, cfg, weights, device: str, float64: bool = False):
        import torch
        import torch.nn.functional as F
        from torch_models import build, load_almc_weights

        self.torch, self.F, self.cfg, self.dev, self.float64 = torch, F, cfg, device, float64
        self.module = build(cfg["arch"], cfg.get("classes"))
        self.pairs = load_almc_weights(self.module, weights)
        self.module.train()
        if float64:
            self.module = self.module.double()
        if device == "cuda":
            torch_cuda_setup()
            self.module = self.module.cuda()
        o = cfg["optimizer"]
        self.opt = torch.optim.SGD(self.module.parameters(), lr=o["lr"], momentum=o["momentum"],
                                   nesterov=o["nesterov"], weight_decay=o["weight_decay"])
        self.l2 = [p for p in self.module.parameters() if p.ndim > 1]  # almc's `weights`: not biases, not norms

    def step(self, xb, yb, epoch: float, k: int) -> float:
        torch, F, cfg = self.torch, self.F, self.cfg
        x, y = torch.from_numpy(xb), torch.from_numpy(yb)
        if self.float64:
            x = x.double()
        if self.dev == "cuda":
            x, y = x.cuda(non_blocking=False), y.cuda(non_blocking=False)
        lr = lr_at(cfg, epoch)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        logits = self.module(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg["smoothing"])
        if cfg["l2"]:
            loss = loss + cfg["l2"] * sum((p * p).sum() for p in self.l2)
        loss.backward()
        self.opt.step()
        return float(loss.item())  # as almc train reads the loss every step (and a CUDA sync)


def train_worker(args, contender: str) -> None:
    t_start = time.perf_counter()
    import numpy as np

    if contender == "almc":
        import onnxruntime  # noqa: F401

        import almc  # noqa: F401  (what an almc training process imports)
    else:
        import torch

        torch.set_num_threads(args.threads)
    mem_imports = mem()
    imports_s = time.perf_counter() - t_start
    wd = Path(args.workdir)
    cfg = load_train_config(wd, args.model)
    data = np.load(wd / f"train_{args.model}_data.npz")
    weights = dict(np.load(wd / f"train_{args.model}_weights.npz"))
    xs, ys = data["x"], data["y"]  # a few distinct batches, cycled
    t0 = time.perf_counter()
    stepper = AlmcStep(cfg, weights, args.device, args.threads) if contender == "almc" else TorchStep(cfg, weights, args.device)
    setup_s = time.perf_counter() - t0
    del weights
    batches = [(np.ascontiguousarray(xs[i]), np.ascontiguousarray(ys[i])) for i in range(len(xs))]
    spe = 40  # steps per epoch, for the schedule's input
    for k in range(args.warmup):
        xb, yb = batches[k % len(batches)]
        stepper.step(xb, yb, (k + 1) / spe, k)
    mem_setup = mem()
    reset = reset_peak()
    times, run_only, losses = [], [], []
    for k in range(args.warmup, args.warmup + args.steps):
        xb, yb = batches[k % len(batches)]
        t = time.perf_counter()
        losses.append(stepper.step(xb, yb, (k + 1) / spe, k))
        times.append(time.perf_counter() - t)
        if contender == "almc":
            run_only.append(stepper.run_s)
    mem_steps = mem()
    out = {"contender": contender, "model": args.model, "device": args.device, "threads": args.threads,
           "times": times, "imports_s": imports_s, "setup_s": setup_s, "losses_finite": bool(np.isfinite(losses).all()),
           "rss_after_imports_mib": mem_imports.get("VmRSS"),
           "peak_setup_mib": mem_setup.get("VmHWM"),
           "peak_steps_mib": mem_steps.get("VmHWM") if reset else None,
           "rss_end_mib": mem_steps.get("VmRSS")}
    out["peak_process_mib"] = max(out["peak_setup_mib"] or 0, out["peak_steps_mib"] or 0)
    if contender == "almc":
        out.update(run_only=run_only, step_compile_s=stepper.compile_s, session_s=stepper.session_s,
                   step_nodes=stepper.nodes)
    else:
        import torch

        if args.device == "cuda":
            out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    write(wd, f"train_{args.model}_{contender}_{args.tag}", out)


def train_verify(args) -> None:
    """Two steps of each contender (on --device) from the same weights and batches: the losses and
    every updated parameter and running statistic, compared with the same two steps of PyTorch in
    float64 on the CPU (the
    exact step: PyTorch's float32 step is measured against it too, since on some random batches
    its float32 kernels are the ones that drift, up to 10% in a ResNet-18 gradient)."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    wd = Path(args.workdir)
    cfg = load_train_config(wd, args.model)
    data = np.load(wd / f"train_{args.model}_data.npz")
    weights = dict(np.load(wd / f"train_{args.model}_weights.npz"))
    b0 = np.ascontiguousarray(data["x"][0]), np.ascontiguousarray(data["y"][0])
    b1 = np.ascontiguousarray(data["x"][1]), np.ascontiguousarray(data["y"][1])
    a = AlmcStep(cfg, weights, args.device, args.threads)
    t = TorchStep(cfg, weights, args.device)
    exact = TorchStep(cfg, weights, "cpu", float64=True)  # the reference: on the CPU, in float64
    out = {"model": args.model, "device": args.device}
    try:
        # two steps on two batches: the second uses the momentum buffers
        losses = {k: [s.step(*b0, 1 / 40, 0), s.step(*b1, 2 / 40, 1)] for k, s in (("almc", a), ("torch", t), ("exact", exact))}
        sd, sd64 = t.module.state_dict(), exact.module.state_dict()
        worst = {"almc": (0.0, None), "torch": (0.0, None)}
        for name, tname in t.pairs:
            if name not in a.values:
                continue
            ref = sd64[tname].detach().cpu().numpy()
            scale = max(1.0, np.abs(ref).max())
            for k, got in (("almc", a.values[name].numpy()), ("torch", sd[tname].detach().cpu().numpy())):
                d = float(np.abs(got - ref).max() / scale)
                if d > worst[k][0]:
                    worst[k] = (d, name)
        rel = {k: max(abs(x - e) for x, e in zip(losses[k], losses["exact"])) / max(1.0, abs(losses["exact"][0]))
               for k in ("almc", "torch")}
        out.update(loss_almc=losses["almc"], loss_torch=losses["torch"], loss_exact=losses["exact"],
                   loss_rel_diff=rel["almc"], torch_loss_rel_diff=rel["torch"],
                   max_param_rel_diff=worst["almc"][0], worst_param=worst["almc"][1],
                   torch_max_param_rel_diff=worst["torch"][0], torch_worst_param=worst["torch"][1])
        # float32 bounds what either step can reach: where PyTorch's own float32 step is further
        # than 1e-4 from the exact one (batch norm over channels of near-zero variance divides
        # float32 rounding by sqrt(eps)), almc's must be no further than PyTorch's, give or take
        # 1% (on CUDA both have come out at 1.2704e-3, almc's 2e-9 above)
        slack = 1.01
        bound = max(1e-4, slack * out["torch_max_param_rel_diff"])
        out["param_bound"], out["slack"] = bound, slack
        out["ok"] = out["loss_rel_diff"] <= max(1e-4, slack * out["torch_loss_rel_diff"]) and out["max_param_rel_diff"] <= bound
    except Exception as e:
        out.update(ok=False, error=error_text(e), traceback=traceback.format_exc())
    write(wd, f"train_{args.model}_verify", out)


def train_profile(args) -> None:
    """Where each contender's step spends its time, by op: onnxruntime's profiler on almc's step,
    torch.profiler on the eager step (self CPU time). A separate process: profiling slows both."""
    import json as _json
    from collections import Counter

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    wd = Path(args.workdir)
    cfg = load_train_config(wd, args.model)
    data = np.load(wd / f"train_{args.model}_data.npz")
    weights = dict(np.load(wd / f"train_{args.model}_weights.npz"))
    batches = [(np.ascontiguousarray(data["x"][i]), np.ascontiguousarray(data["y"][i])) for i in range(len(data["x"]))]
    n = args.steps
    out = {"model": args.model, "steps": n}
    a = AlmcStep(cfg, weights, "cpu", args.threads, profile=str(wd / f"ortprof_{args.model}"))
    for k in range(n + 2):
        a.step(*batches[k % 4], (k + 1) / 40, k)
    prof = _json.loads(Path(a.sess.end_profiling()).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in prof if e.get("name") == "model_run")[2:]  # not the first two
    per_op, count = Counter(), Counter()
    for e in prof:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and \
                any(lo <= e["ts"] <= hi for lo, hi in runs):
            per_op[e["args"]["op_name"]] += e["dur"] / 1e6
            count[e["args"]["op_name"]] += 1
    total = sum(per_op.values())
    k_runs = max(1, len(runs))
    out["almc"] = {"ops_in_file": a.ops, "kernel_s_per_step": total / k_runs, "runs": len(runs),
                   "top": [(k, v / k_runs, count[k] // k_runs) for k, v in per_op.most_common(10)]}
    t = TorchStep(cfg, weights, "cpu")
    for k in range(2):
        t.step(*batches[k % 4], (k + 1) / 40, k)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as p:
        for k in range(n):
            t.step(*batches[k % 4], (k + 1) / 40, k)
    rows = sorted(p.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_t = sum(e.self_cpu_time_total for e in rows) / 1e6
    out["torch"] = {"self_cpu_s_per_step": total_t / n,
                    "top": [(e.key, e.self_cpu_time_total / 1e6 / n, e.count // n) for e in rows[:10]]}
    write(wd, f"train_{args.model}_profile", out)


def lenet_accuracy(args) -> None:
    import torch
    from lenet_torch import ROOT as LROOT
    from lenet_torch import torch_run

    import almc

    torch.set_num_threads(args.threads)
    m = almc.load(LROOT / "models" / "lenet.alm")
    metrics = m.train(device="cpu")
    acc, step, wall = torch_run()
    write(Path(args.workdir), "lenet_accuracy", {
        "almc": {"test_accuracy": metrics["test_accuracy"], "median_step_s": metrics["median_step_seconds"],
                 "wall_s": metrics["wall_time"], "provider": metrics["provider"]},
        "torch": {"test_accuracy": acc, "median_step_s": step, "wall_s": wall, "threads": args.threads},
    })


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["compile-inproc", "infer", "train-almc", "train-torch", "train-verify",
                                     "train-profile", "lenet-accuracy"])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--archs", default="lenet,resnet18,resnet50")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dynamo", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps-b1", type=int, default=40)
    ap.add_argument("--reps-big", type=int, default=8)
    ap.add_argument("--batch-big", type=int, default=32)
    ap.add_argument("--batch-big-r50", type=int, default=8)
    ap.add_argument("--model")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--tag", default="0")
    args = ap.parse_args()
    if args.mode == "compile-inproc":
        compile_inproc(args)
    elif args.mode == "infer":
        infer(args)
    elif args.mode == "train-almc":
        train_worker(args, "almc")
    elif args.mode == "train-torch":
        train_worker(args, "torch")
    elif args.mode == "train-verify":
        train_verify(args)
    elif args.mode == "train-profile":
        train_profile(args)
    elif args.mode == "lenet-accuracy":
        lenet_accuracy(args)


if __name__ == "__main__":
    main()
