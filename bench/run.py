"""almc against PyTorch, in one run on one machine: compile time, inference, training step.

    python bench/run.py            # the full run (under ~15 minutes on 2 cores)
    python bench/run.py --quick    # fewer repetitions, no ResNet-50: a few minutes

Writes bench/RESULTS.md and bench/results.json. The contenders alternate
(every repetition runs each of them, in a rotating order), so drift in the
machine's speed affects all of them alike. bench/README.md says what is
measured and how; bench/gpu.sh runs the same harness on CUDA.

torch is a benchmark extra, never a dependency of almc. The dynamo exporter
needs onnxscript: if the interpreter lacks it, it is installed into a
throwaway virtual environment (bench/.venv-dynamo, git-ignored, with the
system's site packages) or, failing that, reported as unavailable.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKERS = BENCH / "workers.py"
DYNAMO_VENV = BENCH / ".venv-dynamo"
ONNXSCRIPT = "onnxscript==0.7.2"

ARCH_FILES = {"lenet": "models/lenet.alm", "resnet18": "models/resnet18.alm", "resnet50": "models/resnet50.alm"}

RESNET18_TRAIN = """
# appended by bench/run.py: CIFAR-sized training of ResNet-18
train ResNet18 {
    input label: i64[N]
    minimize mean(cross_entropy(logits, label))
    optimizer sgd(lr = 0.01, momentum = 0.9)
    batch 32
    epochs 10
}
"""

# model -> what the training section says, mirrored on the PyTorch side (checked by train-verify)
TRAIN_MODELS = {
    "lenet": {"source": "models/lenet.alm", "arch": "lenet", "batch": 64, "dims": [1, 32, 32], "classes_out": 10,
              "smoothing": 0.1, "l2": 5e-4, "what": "LeNet-5, 1x32x32, its own train section (CE smoothing 0.1 + 5e-4 l2, SGD m 0.9, cosine)"},
    "mlp": {"source": "models/mlp.alm", "arch": "mlp", "batch": 128, "dims": [784], "classes_out": 10,
            "smoothing": 0.0, "l2": 1e-4, "what": "MLP 784-256-256-10, its own train section (CE + 1e-4 l2, SGD m 0.9 Nesterov, cosine)"},
    "resnet18": {"source": "models/resnet18.alm", "append": RESNET18_TRAIN, "params": {"classes": 10, "size": 32},
                 "arch": "resnet18", "classes": 10, "batch": 32, "dims": [3, 32, 32], "classes_out": 10,
                 "smoothing": 0.0, "l2": 0.0, "what": "ResNet-18, 3x32x32, 10 classes (CE, SGD m 0.9, lr 0.01 constant)"},
}

FULL = {"archs": ["lenet", "resnet18", "resnet50"], "compile_proc_reps": 5, "compile_inproc_reps": 5,
        "reps_b1": 40, "reps_big": 8, "train_rounds": 3,
        "train_steps": {"lenet": 150, "mlp": 150, "resnet18": 20}, "train_warmup": {"lenet": 20, "mlp": 20, "resnet18": 3},
        "profile_steps": {"lenet": 20, "mlp": 20, "resnet18": 4}}
QUICK = {"archs": ["lenet", "resnet18"], "compile_proc_reps": 2, "compile_inproc_reps": 2,
         "reps_b1": 12, "reps_big": 3, "train_rounds": 2,
         "train_steps": {"lenet": 40, "mlp": 40, "resnet18": 6}, "train_warmup": {"lenet": 5, "mlp": 5, "resnet18": 2},
         "profile_steps": {"lenet": 10, "mlp": 10, "resnet18": 2}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load1() -> float:
    return os.getloadavg()[0]


def cpu_snapshot() -> dict:
    """Machine-wide busy and steal CPU seconds (/proc/stat) and this process tree's own CPU seconds
    (itself and its finished children): between two snapshots, busy minus own is what other
    processes used."""
    hz = os.sysconf("SC_CLK_TCK")
    snap = {"wall": time.monotonic()}
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        user, nice, system, idle, iowait, irq, softirq, steal = v + [0] * (8 - len(v))
        snap.update(busy=(user + nice + system + irq + softirq) / hz, steal=steal / hz)
    except (OSError, ValueError):
        pass
    t = os.times()
    snap["mine"] = t.user + t.system + t.children_user + t.children_system
    return snap


def others_share(a: dict, b: dict) -> dict | None:
    """Share of the machine's CPUs used by other processes (and stolen by the hypervisor) between a and b."""
    if "busy" not in a or "busy" not in b:
        return None
    cap = (b["wall"] - a["wall"]) * (os.cpu_count() or 1)
    if cap <= 0:
        return None
    return {"others": max(0.0, (b["busy"] - a["busy"]) - (b["mine"] - a["mine"])) / cap,
            "steal": (b["steal"] - a["steal"]) / cap, "mine": (b["mine"] - a["mine"]) / cap}


# -- environment -------------------------------------------------------------------

def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    info = {"cpu": None, "logical_cpus": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next((l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name")), None)
        flags = next((l.split(":", 1)[1].split() for l in text.splitlines() if l.startswith("flags")), [])
        info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags)
        cores = {(l.split(":")[1].strip()) for l in text.splitlines() if l.startswith("core id")}
        info["physical_cores_seen"] = len(cores) or None
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            info["gpu"] = r.stdout.strip().replace("\n", "; ")
    try:
        mem = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
        info["memory_gib"] = round(int(mem.split()[1]) / 2 ** 20, 1)
    except (OSError, StopIteration):
        pass
    return info


def versions(dynamo_py: str | None) -> dict:
    v = {"python": platform.python_version(), "almc": version("almc"), "onnx": version("onnx"),
         "torch": version("torch"), "numpy": version("numpy")}
    try:  # what this interpreter imports (two distributions may be installed; the path decides)
        import onnxruntime
        from onnxruntime.capi import build_and_package_info as info

        v["onnxruntime"] = onnxruntime.__version__
        v["onnxruntime_dist"] = getattr(info, "package_name", "onnxruntime")
        if getattr(info, "cuda_version", None):
            v["onnxruntime_cuda"] = info.cuda_version
    except ImportError:
        v["onnxruntime"], v["onnxruntime_dist"] = None, None
    if dynamo_py:
        r = subprocess.run([dynamo_py, "-c", "import onnxscript, onnx_ir; print(onnxscript.__version__, onnx_ir.__version__)"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            v["onnxscript"], v["onnx_ir"] = r.stdout.split()
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), "diff", "--stat", "HEAD", "--", "almc", "grammar"],
                               capture_output=True, text=True)
        v["git_head"] = head.stdout.strip() + (" (almc/ has uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return v


def dynamo_python(allow_install: bool) -> tuple[str | None, str | None]:
    """An interpreter with torch and onnxscript: this one, the throwaway venv, or a new venv."""
    probe = "import onnxscript, torch"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
        return sys.executable, None
    py = DYNAMO_VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0:
        return str(py), None
    missing = "onnxscript is not installed (torch.onnx.export(dynamo=True) needs it)"
    if not allow_install:
        return None, missing
    log(f"installing {ONNXSCRIPT} into {DYNAMO_VENV.relative_to(ROOT)} (a throwaway venv with the system's packages)")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(DYNAMO_VENV)], check=True,
                       capture_output=True, text=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", ONNXSCRIPT], capture_output=True, text=True)
        if r.returncode != 0:
            return None, f"{missing}; pip install {ONNXSCRIPT} failed: {r.stderr.strip().splitlines()[-1][:200]}"
    except (OSError, subprocess.CalledProcessError) as e:
        return None, f"{missing}; making the venv failed: {e}"
    if subprocess.run([str(py), "-c", probe], capture_output=True).returncode != 0:
        return None, f"{missing}; installed, but it does not import"
    return str(py), None


# -- helpers -----------------------------------------------------------------------

def stats(xs: list[float]) -> dict | None:
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def rotated(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def worker(mode: str, wd: Path, *extra: str, python: str | None = None, timeout: float = 900) -> None:
    cmd = [python or sys.executable, str(WORKERS), mode, "--workdir", str(wd), *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
        log(f"  {' '.join(cmd[2:3] + cmd[5:])} failed ({r.returncode}):\n" + "\n".join(lines[-15:]))
        raise RuntimeError(f"{cmd[2]} exited {r.returncode}: {(lines or ['(no output)'])[-1][:300]}")
    for line in r.stdout.splitlines():
        log("  " + line)


def read(wd: Path, name: str) -> dict:
    return json.loads((wd / f"{name}.json").read_text())


# -- preparation -------------------------------------------------------------------

def prepare(wd: Path, archs: list[str], train_models: list[str]) -> dict:
    """The benchmark's weights: almc's initial weights (seed 0) for each architecture, with every
    1-D tensor (biases, batch-norm scale and shift, running mean) shifted by N(0, 0.1) noise and the
    running variances drawn from U(0.5, 1.5), so that the output check also covers the biases and
    the batch-norm parameters; and, for training, almc's initial weights unchanged plus a few
    random batches."""
    import numpy as np

    import almc

    rng = np.random.default_rng(1234)
    info = {}
    for arch in archs:
        w = almc.load(str(ROOT / ARCH_FILES[arch])).initial_weights(0)
        for k, v in w.items():
            if v.ndim == 1:
                w[k] = (rng.uniform(0.5, 1.5, v.shape) if k.endswith("running_var")
                        else v + rng.normal(0, 0.1, v.shape)).astype(np.float32)
        np.savez(wd / f"weights_{arch}.npz", **w)
        (wd / f"shapes_{arch}.json").write_text(json.dumps({k: list(v.shape) for k, v in w.items()}))
        info[arch] = {"tensors": len(w), "parameters": int(sum(v.size for v in w.values()))}
    for name in train_models:
        cfg = dict(TRAIN_MODELS[name])
        if cfg.get("append"):
            m = almc.load((ROOT / cfg["source"]).read_text() + cfg["append"], **cfg.get("params", {}))
        else:
            m = almc.load(str(ROOT / cfg["source"]))
        spec = m.graph.train
        cfg["optimizer"] = {k: spec.opt.get(k, 0.0) for k in ("lr", "momentum", "nesterov", "weight_decay")}
        if spec.optimizer != "sgd":
            raise SystemExit(f"{name}: the benchmark mirrors SGD only, the section says {spec.optimizer}")
        cfg["schedule"] = {"kind": spec.schedule, "lr": spec.opt["lr"], "epochs": float(spec.epochs), **spec.sched}
        (wd / f"train_{name}.json").write_text(json.dumps(cfg))
        np.savez(wd / f"train_{name}_weights.npz", **m.initial_weights(0))
        b = cfg["batch"]
        x = rng.standard_normal((4, b, *cfg["dims"])).astype(np.float32)
        y = rng.integers(0, cfg["classes_out"], (4, b)).astype(np.int64)
        np.savez(wd / f"train_{name}_data.npz", x=x, y=y)
        info[f"train:{name}"] = {"parameters": int(sum(v.size for v in m.initial_weights(0).values()))}
    return info


# -- sections ----------------------------------------------------------------------

# A user's Python caches compiled bytecode; a sandbox may set PYTHONDONTWRITEBYTECODE, which
# would make every run recompile almc's sources (70 ms) while torch's installed .pyc files load.
WRITE_BYTECODE = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_process(wd: Path, archs: list[str], reps: int, dynamo_py: str | None, dynamo_err: str | None) -> dict:
    # the console script beside this interpreter (a venv's bin/almc), not a PATH lookup, which may
    # find a version manager's shim (pyenv's costs 0.1 s of bash before Python starts)
    almc_exe = Path(sys.executable).parent / "almc"
    almc_cmd = [str(almc_exe)] if almc_exe.exists() else [sys.executable, "-c",
                                                          "import sys; from almc.cli import main; sys.exit(main())"]
    exporter = str(BENCH / "export_torch.py")
    out = {"archs": {}, "commands": {}, "load_before": os.getloadavg()}
    base = {"python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"]}
    for arch in archs:
        path = ARCH_FILES[arch]
        cmds = {"almc": almc_cmd + ["compile", path, "-o", str(wd / f"proc_almc_{arch}.onnx")],
                "torchscript": [sys.executable, exporter, arch, "--exporter", "torchscript", "-o", str(wd / f"proc_ts_{arch}.onnx")],
                "floor": [sys.executable, str(BENCH / "floor.py"), str(wd / f"shapes_{arch}.json"), "-o", str(wd / f"proc_floor_{arch}.bin")]}
        if dynamo_py:
            cmds["dynamo"] = [dynamo_py, exporter, arch, "--exporter", "dynamo", "-o", str(wd / f"proc_dyn_{arch}.onnx")]
        if arch == archs[0]:
            cmds.update(base)
        times = {k: [] for k in cmds}
        errors = {} if dynamo_py else {"dynamo": dynamo_err}
        for rep in range(-1, reps):  # -1: a warm-up (page cache, .pyc files), not recorded
            for name in rotated(list(cmds), rep):
                if name in errors:
                    continue
                t0 = time.perf_counter()
                r = subprocess.run(cmds[name], cwd=ROOT, capture_output=True, text=True, env=WRITE_BYTECODE)
                dt = time.perf_counter() - t0
                if r.returncode != 0:
                    errors[name] = (r.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
                elif rep >= 0:
                    times[name].append(dt)
        out["archs"][arch] = {"times": times, "errors": errors}
        out["commands"][arch] = {k: pretty(v, wd) for k, v in cmds.items()}
        log("  compile (process) " + arch + ": " + ", ".join(f"{k} {statistics.median(v):.2f}s" for k, v in times.items() if v))
    out["load_after"] = os.getloadavg()
    return out


def pretty(cmd: list[str], wd: Path) -> str:
    """A command as a user would type it from the repository root."""
    words = []
    for c in cmd:
        c = str(c)
        if c == sys.executable:
            c = "python"
        elif c in (shutil.which("almc"), str(Path(sys.executable).parent / "almc")):
            c = "almc"
        elif c.startswith(str(wd)):
            c = "$TMP" + c[len(str(wd)):]
        elif c.startswith(str(ROOT) + "/"):
            c = c[len(str(ROOT)) + 1:]
        words.append(c if c.startswith("$TMP") else shlex.quote(c))
    return " ".join(words)


def training(wd: Path, models: list[str], cfg: dict, device: str) -> dict:
    out = {}
    for model in models:
        try:
            worker("train-verify", wd, "--model", model, "--device", device)
            verify = read(wd, f"train_{model}_verify")
        except Exception as e:
            verify = {"ok": False, "error": str(e)[-500:]}
        runs = {"almc": [], "torch": []}
        errors = {}
        load_before = os.getloadavg()
        for r in range(cfg["train_rounds"]):
            for contender in rotated(["almc", "torch"], r):
                if contender in errors:
                    continue
                try:
                    worker(f"train-{contender}", wd, "--model", model, "--tag", str(r), "--device", device,
                           "--warmup", str(cfg["train_warmup"][model]), "--steps", str(cfg["train_steps"][model]))
                    runs[contender].append(read(wd, f"train_{model}_{contender}_{r}"))
                except Exception as e:
                    errors[contender] = str(e)[-600:]
        load_after = os.getloadavg()
        profile = None
        if device == "cpu":
            try:
                worker("train-profile", wd, "--model", model, "--steps", str(cfg["profile_steps"][model]))
                profile = read(wd, f"train_{model}_profile")
            except Exception as e:
                profile = {"error": str(e)[-500:]}
        out[model] = {"verify": verify, "runs": runs, "errors": errors, "load_before": load_before,
                      "load_after": load_after, "profile": profile}
        med = {k: statistics.median([t for run in v for t in run["times"]]) for k, v in runs.items() if v}
        log(f"  train {model}: " + ", ".join(f"{k} {v * 1e3:.2f} ms/step" for k, v in med.items())
            + f"; verify ok={verify.get('ok')}")
    return out


# -- report ------------------------------------------------------------------------

def fmt_t(s: float | None, unit: str) -> str:
    if s is None:
        return "–"
    return f"{s:.2f} s" if unit == "s" else f"{s * 1e3:.2f} ms" if s * 1e3 >= 0.1 else f"{s * 1e6:.1f} µs"


def ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b:
        return "–"
    return f"{a['median'] / b['median']:.2f}"


def row_times(name: str, st: dict | None, unit: str, ref: dict | None, extra: str = "", err: str | None = None) -> str:
    if st is None:
        return f"| {name} | unavailable: {err or 'no result'} | | | | {extra}"
    return (f"| {name} | {fmt_t(st['median'], unit)} | {fmt_t(st['min'], unit)} | {fmt_t(st['max'], unit)} | "
            f"{ratio(ref, st) if name != 'almc' and not name.startswith('almc') else '1.00'} |{extra}")


LABELS = {"almc": "almc", "torchscript": "torch.onnx.export(dynamo=False) (TorchScript)",
          "dynamo": "torch.onnx.export(dynamo=True)",
          "floor": "floor: import numpy, networkx, onnx, lark; draw and write the weights (context)", "onnx:almc": "ORT on almc's ONNX",
          "onnx:torchscript": "ORT on torch's ONNX (TorchScript exporter)",
          "onnx:dynamo": "ORT on torch's ONNX (dynamo exporter)", "eager": "PyTorch eager (inference_mode)"}


def render(res: dict) -> str:
    L = []
    w = L.append
    env, ver, mach = res["env"], res["versions"], res["machine"]
    w("# almc vs PyTorch: benchmark results\n")
    w(f"Produced by `{res['command']}` on {res['date']} in {res['wall_s'] / 60:.1f} min "
      f"({'quick' if res['quick'] else 'full'} run, device {res['device']}). Regenerate with the same command; "
      "bench/README.md says what each number is.\n")
    if res.get("partial"):
        w("**Partial results: the run stopped before it finished; the sections below are those it completed.**\n")
    w("| | |\n|---|---|")
    w(f"| CPU | {mach.get('cpu')} ({mach.get('simd', '')}) |")
    w(f"| cores | {mach.get('logical_cpus')} logical, {mach.get('affinity_cpus')} usable by this process; "
      f"{mach.get('memory_gib')} GiB memory |")
    w(f"| platform | {mach.get('platform')} |")
    w(f"| versions | python {ver.get('python')}, almc {ver.get('almc')} (git {ver.get('git_head')}), onnx {ver.get('onnx')}, "
      f"onnxruntime {ver.get('onnxruntime')} ({ver.get('onnxruntime_dist')} wheel"
      f"{', CUDA ' + ver['onnxruntime_cuda'] if ver.get('onnxruntime_cuda') else ''}), torch {ver.get('torch')}, "
      f"numpy {ver.get('numpy')}, onnxscript {ver.get('onnxscript', 'not installed')}"
      f"{', onnx-ir ' + ver['onnx_ir'] if ver.get('onnx_ir') else ''} |")
    if res["device"] == "cpu":
        w(f"| threads | onnxruntime: intra-op {res['threads']}, inter-op 1, ORT_ENABLE_ALL, CPU provider; "
          f"PyTorch: torch.set_num_threads({res['threads']}) |")
    else:
        w("| device | onnxruntime: CUDA provider (no TF32, exhaustive cuDNN search), ORT_ENABLE_ALL, weights and "
          "input on the GPU (IOBinding); PyTorch: CUDA, no TF32, cudnn.benchmark |")
        if mach.get("gpu"):
            w(f"| GPU | {mach['gpu']} |")
    loads = env["loads"]
    w(f"| load average (1 min) | before the run {env['load_start'][0]:.2f}; per section: "
      + ", ".join(f"{k} {v[0]:.2f}→{v[1]:.2f}" for k, v in loads.items()) + (f"; after {env['load_end'][0]:.2f} |" if "load_end" in env else " |"))
    if env.get("cpu"):
        w("| CPU used by other processes | " + ", ".join(
            f"{k} {100 * v['others']:.1f}%" + (f" (+{100 * v['steal']:.1f}% steal)" if v["steal"] >= 0.001 else "")
            for k, v in env["cpu"].items() if v) + " of the machine's CPUs (/proc/stat busy time minus this "
          "run's own processes; the load averages above include this run itself) |")
    if env.get("waited_s"):
        w(f"| waited for a quiet machine | {env['waited_s']:.0f} s (asked load < {env['wait_load']}) |")
    w("")
    w("Ratios are **almc / reference** of the median: above 1 almc is slower (or uses more memory), below 1 faster. "
      "Each table's repetitions interleave the contenders in a rotating order.\n")

    # headline
    if res.get("headline"):
        w("## Headline\n")
        w("| what | almc / reference |\n|---|---|")
        for k, v in res["headline"]:
            w(f"| {k} | {v} |")
        w("")
        losses = [k for k, v in res["headline"] if _num(v) and _num(v) > 1.05]
        if losses:
            w("almc is slower or larger (ratio > 1.05) in: " + "; ".join(losses) + ".\n")

    if "compile_process" in res:
        cp = res["compile_process"]
        w("## 1. Compile time\n")
        w("### (a) Whole process: a fresh interpreter per repetition, imports included\n")
        w("One warm-up run of each (page cache, bytecode: the runs may write .pyc files, as a user's Python does, "
          "even where the environment sets PYTHONDONTWRITEBYTECODE), then the timed runs. The torch script builds the module "
          "(random initialisation) and exports it, as a user's script would; `almc compile` initialises its weights "
          "too. The floor (`bench/floor.py`) imports the four libraries almc compiles with, draws a value for every "
          "weight with almc's sampler and writes them with almc's atomic write, and does nothing else: almc / floor is "
          "what almc's passes cost, and floor / exporter the best ratio any compile on these libraries could reach here. "
          "Commands (run from the repository root):\n")
        for arch, cmds in cp["commands"].items():
            for k, c in cmds.items():
                if not k.startswith("python -c"):
                    w(f"- {arch}, {k}: `{c}`")
        w("")
        for arch, e in cp["archs"].items():
            st = {k: stats(v) for k, v in e["times"].items()}
            w(f"**{arch}**\n")
            w("| contender | median | min | max | almc / this |\n|---|---:|---:|---:|---:|")
            for k in ("almc", "torchscript", "dynamo", "floor", "python -c pass", "python -c 'import torch'"):
                if k in st or k in e["errors"]:
                    w(row_times(LABELS.get(k, f"`{k}` (context)"), st.get(k), "s", st.get("almc"),
                                err=e["errors"].get(k)) if k in ("almc", "torchscript", "dynamo", "floor") else
                      f"| `{k}` (context) | {fmt_t(st[k]['median'], 's')} | {fmt_t(st[k]['min'], 's')} | {fmt_t(st[k]['max'], 's')} | |")
            w("")
    if "compile_inproc" in res:
        ci = res["compile_inproc"]
        w("### (b) In-process: the compile or export call, after one warm-up\n")
        w("almc: `almc.load(path).export(file)` (parse, build, shape inference, weight initialisation, batch-norm "
          "folding, lowering, `onnx.checker` full check, runtime-support check, writing the file). "
          "torch: the `torch.onnx.export(...)` call on a module already built (see `bench/export_torch.py`), "
          "file written; building the module is shown apart.\n")
        for arch, e in ci["archs"].items():
            st = {k: stats(v) for k, v in e["times"].items()}
            w(f"**{arch}**\n")
            w("| contender | median | min | max | almc / this |\n|---|---:|---:|---:|---:|")
            for k in ("almc", "torchscript", "dynamo"):
                if k in st or k in e["errors"] or (k == "dynamo" and ci.get("dynamo_error")):
                    w(row_times(LABELS[k], st.get(k), "s", st.get("almc"), err=e["errors"].get(k) or ci.get("dynamo_error")))
            b = stats(e["torch_module_build"])
            w(f"| (building the torch module, not in the export) | {fmt_t(b['median'], 's')} | {fmt_t(b['min'], 's')} | {fmt_t(b['max'], 's')} | |")
            w("")
            ph = e.get("phases", {})
            if ph and "error" not in ph:
                total = sum(statistics.median(v) for v in ph.values())
                w(f"almc's compile of {arch} by phase (median of {len(next(iter(ph.values())))}): " + ", ".join(
                    f"{k} {statistics.median(v):.3f} s ({100 * statistics.median(v) / total:.0f}%)" for k, v in ph.items()) + "\n")
    if "infer" in res:
        inf = res["infer"]
        w(f"## 2. Inference: onnxruntime {inf['device'].upper()}"
          f"{', ' + str(inf['threads']) + ' intra-op threads' if inf['device'] == 'cpu' else ''}, ORT_ENABLE_ALL\n")
        w("The same weights in every contender: almc's initial weights (seed 0) with biases and batch-norm parameters "
          "and statistics randomised, set into almc through `Model.weights` and copied into the PyTorch module by "
          "parameter order (shapes checked). Every output is checked against PyTorch eager on a random batch of 2 "
          "before timing (tolerance 1e-4 x max(1, max |output|)). Latency: one call at batch 1; throughput: one call "
          "at batch B. Inputs are random normal. In each round every contender, in a rotating order, runs a block of "
          "calls after a 50 ms pause (onnxruntime's idle worker threads spin for 20-30 ms after a run; without the "
          "pause the next contender ran at half speed on 2 cores) and, for calls under 50 ms, one untimed call.\n")
        for arch, e in inf["archs"].items():
            w(f"### {arch}\n")
            w("| ONNX file | nodes | opset | initialisers | size | nodes after ORT_ENABLE_ALL | op histogram (Counter of op_type) |")
            w("|---|---:|---:|---:|---:|---:|---|")
            for k, g in e["graphs"].items():
                after = g.get("after_ort", {})
                w(f"| {k} | {g['nodes']} | {g['opset']} | {g['initializers']} | {g['bytes'] / 2 ** 20:.1f} MiB | "
                  f"{after.get('nodes', after.get('error', '–'))} | {', '.join(f'{o} {n}' for o, n in g['ops'].items())} |")
            w("")
            if any("after_ort" in g and "ops" in g["after_ort"] for g in e["graphs"].values()):
                w("After ORT's optimisations: " + "; ".join(
                    f"{k}: " + ", ".join(f"{o} {n}" for o, n in g["after_ort"]["ops"].items())
                    for k, g in e["graphs"].items() if "ops" in g.get("after_ort", {})) + "\n")
            w("Output check: " + "; ".join(
                f"{k} max |Δ| {c['max_abs_diff']:.2e} (outputs up to {c['ref_max_abs']:.3g}) {'ok' if c['ok'] else 'FAILED'}"
                if c["max_abs_diff"] is not None else f"{k} FAILED" for k, c in e["check"].items()) + "\n")
            if e.get("errors"):
                w("Not timed: " + "; ".join(f"{LABELS.get(k, k)}: {v}" for k, v in e["errors"].items()) + "\n")
            for key, title in (("b1", "latency, batch 1"), ("big", f"throughput, batch {e['batch_big']}")):
                if key not in e or not isinstance(e[key], dict) or "times" not in e[key]:
                    continue
                st = {k: stats(v) for k, v in e[key]["times"].items()}
                batch = e[key]["batch"]
                w(f"**{title}** ({e[key].get('rounds', '?')} rounds of {e[key]['block']} timed call(s)"
                  f"{', after one untimed call' if e[key].get('untimed_first') else ''})\n")
                w("| contender | median | min | max | examples/s | almc / this |\n|---|---:|---:|---:|---:|---:|")
                ref = st.get("onnx:almc")
                for k in ("onnx:almc", "onnx:torchscript", "onnx:dynamo", "eager"):
                    if k in st:
                        s = st[k]
                        w(f"| {LABELS[k]} | {fmt_t(s['median'], 'ms')} | {fmt_t(s['min'], 'ms')} | {fmt_t(s['max'], 'ms')} | "
                          f"{batch / s['median']:,.0f} | {'1.00' if k == 'onnx:almc' else ratio(ref, s)} |")
                    elif k in e["errors"]:
                        w(f"| {LABELS[k]} | unavailable: {e['errors'][k]} | | | | |")
                w("")
    if "train" in res:
        tr = res["train"]
        w(f"## 3. Training step ({res['device']})\n")
        w("Each contender runs in its own process (almc: almc + onnxruntime imported; PyTorch: torch + numpy only), "
          "rounds alternating the two. A step is timed whole: almc binds the batch, the parameters and optimiser state "
          "(OrtValues, IOBinding, each step writing its `next.*` into the same OrtValues, as almc/train.py does) and runs the ONNX training step "
          "(forward, loss, backward, SGD update; without its `grad.*` outputs, as `almc train` runs it); PyTorch does zero_grad, forward, "
          "loss, backward, `torch.optim.SGD.step`; both read the loss back. Same initial weights (almc's, seed 0), "
          "same batches (random, 4 batches cycled), same objective, optimiser and learning-rate schedule. "
          "Memory: peak resident set (VmHWM) of the whole process, and of the timed steps alone (VmHWM reset "
          "through /proc/self/clear_refs after the warm-up steps); RSS after the imports for scale.\n")
        w("| model | contender | median step | min | max | examples/s | almc / torch (time) | peak RSS process | peak RSS steps | RSS after imports | almc / torch (peak) | setup |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for model, e in tr.items():
            cfg = TRAIN_MODELS[model]
            st = {k: stats([t for run in v for t in run["times"]]) for k, v in e["runs"].items() if v}
            peak = {k: statistics.median([run["peak_process_mib"] for run in v]) for k, v in e["runs"].items() if v}
            for k in ("almc", "torch"):
                if k not in st:
                    w(f"| {model} (batch {cfg['batch']}) | {k} | unavailable: {e['errors'].get(k, '?')[-200:]} | | | | | | | | | |")
                    continue
                runs = e["runs"][k]
                s = st[k]
                psteps = [r["peak_steps_mib"] for r in runs if r.get("peak_steps_mib")]
                setup = (f"step compile {statistics.median([r['step_compile_s'] for r in runs]):.2f} s + session "
                         f"{statistics.median([r['session_s'] for r in runs]):.2f} s, {runs[0]['step_nodes']} ONNX nodes"
                         if k == "almc" else f"module + optimiser {statistics.median([r['setup_s'] for r in runs]):.2f} s")
                peak_ratio = "1.00" if k == "almc" else (f"{peak['almc'] / peak[k]:.2f}" if "almc" in peak else "–")
                w(f"| {model} (batch {cfg['batch']}) | {'almc (onnxruntime)' if k == 'almc' else 'PyTorch ' + str(res['versions'].get('torch')) + ' eager'} | "
                  f"{fmt_t(s['median'], 'ms')} | {fmt_t(s['min'], 'ms')} | {fmt_t(s['max'], 'ms')} | {cfg['batch'] / s['median']:,.0f} | "
                  f"{'1.00' if k == 'almc' else ratio(st.get('almc'), s)} | {peak[k]:.0f} MiB | "
                  f"{(str(round(statistics.median(psteps))) + ' MiB') if psteps else '–'} | "
                  f"{statistics.median([r['rss_after_imports_mib'] for r in runs]):.0f} MiB | "
                  f"{peak_ratio} | {setup} |")
        w("")
        for model, e in tr.items():
            v = e["verify"]
            cfg = TRAIN_MODELS[model]
            runs = e["runs"].get("almc", [])
            ro = [t for r in runs for t in r.get("run_only", [])]
            extra = (f" almc's `run_with_iobinding` alone (what `almc train` reports as its step): "
                     f"{statistics.median(ro) * 1e3:.2f} ms median." if ro else "")
            if "ok" in v and "loss_rel_diff" in v:
                torch_err = (f"; PyTorch's float32 step against it: {v['torch_loss_rel_diff']:.1e} and "
                             f"{v['torch_max_param_rel_diff']:.1e}" if "torch_loss_rel_diff" in v else "")
                w(f"- {model}: {cfg['what']}. Same step checked: two steps (two batches) from the same weights, "
                  f"against the same two steps of PyTorch in float64{' on the CPU (almc and PyTorch float32 on ' + v['device'] + ')' if v.get('device', 'cpu') != 'cpu' else ''}: almc's loss relative difference "
                  f"{v['loss_rel_diff']:.1e}, worst updated parameter/statistic relative difference "
                  f"{v['max_param_rel_diff']:.1e} ({'ok' if v['ok'] else 'ABOVE'} against "
                  f"{v.get('param_bound', 1e-4):.1e}: 1e-4, or {str(v['slack']) + 'x ' if 'slack' in v else ''}PyTorch's "
                  f"float32 step's own difference where that is larger){torch_err}.{extra}")
            else:
                w(f"- {model}: {cfg['what']}. Step check: {v.get('error', v.get('note', 'not run'))[-300:]}.{extra}")
        w("")
    if "train" in res and any((e.get("profile") or {}).get("almc") for e in res["train"].values()):
        w("### Where the step time goes (profilers, a separate process)\n")
        w("almc: onnxruntime's profiler, kernel time per step by ONNX op (after ORT's graph optimisations; count = "
          "kernels per step). PyTorch: torch.profiler, self CPU time per step by aten op. Profiling adds overhead "
          "to both; the shares matter, not the totals.\n")
        for model, e in res["train"].items():
            p = e.get("profile") or {}
            if "almc" not in p:
                continue
            w(f"**{model}**: almc kernels {p['almc']['kernel_s_per_step'] * 1e3:.1f} ms/step, PyTorch ops "
              f"{p['torch']['self_cpu_s_per_step'] * 1e3:.1f} ms/step. ONNX ops in almc's step file: "
              + ", ".join(f"{k} {v}" for k, v in list(p["almc"]["ops_in_file"].items())[:12]) + " …\n")
            w("| almc (ORT) op | ms/step | kernels | PyTorch op | ms/step | calls |\n|---|---:|---:|---|---:|---:|")
            for (ak, av, ac), (tk, tv, tc) in zip(p["almc"]["top"][:8], p["torch"]["top"][:8]):
                w(f"| {ak} | {av * 1e3:.2f} | {ac} | {tk} | {tv * 1e3:.2f} | {tc} |")
            w("")
    if "accuracy" in res:
        a = res["accuracy"]
        w("## 4. Accuracy: LeNet-5 on the UCI digits (bench/lenet_torch.py)\n")
        w("`almc train models/lenet.alm` (20 epochs, batch 32, the model's own train section) against the same run in "
          "PyTorch: same initial weights, data split, batches, objective, optimiser and schedule.\n")
        if "error" in a:
            w(f"unavailable: {a['error']}\n")
        else:
            w("| run | test accuracy | median step | wall time |\n|---|---:|---:|---:|")
            w(f"| almc (onnxruntime, {a['almc']['provider']}) | {a['almc']['test_accuracy']:.4f} | "
              f"{a['almc']['median_step_s'] * 1e3:.2f} ms | {a['almc']['wall_s']:.2f} s |")
            w(f"| PyTorch {res['versions'].get('torch')} eager, {a['torch']['threads']} threads | {a['torch']['test_accuracy']:.4f} | "
              f"{a['torch']['median_step_s'] * 1e3:.2f} ms | {a['torch']['wall_s']:.2f} s |")
            w("")
    if res.get("errors"):
        w("## Sections that failed\n")
        for k, v in res["errors"].items():
            w(f"- {k}: `{v[-500:]}`")
        w("")
    return "\n".join(L) + "\n"


def _num(v):
    try:
        return float(str(v).split()[0])
    except ValueError:
        return None


def headline(res: dict) -> list[tuple[str, str]]:
    out = []

    def med(xs):
        return statistics.median(xs) if xs else None

    def add(label, a, b):
        if a and b:
            out.append((label, f"{a / b:.2f}"))

    for key, title in (("compile_process", "compile, whole process"), ("compile_inproc", "compile, in-process")):
        for arch, e in res.get(key, {}).get("archs", {}).items():
            for ref in ("torchscript", "dynamo"):
                add(f"{title}, {arch}: almc vs {ref} exporter", med(e["times"].get("almc")), med(e["times"].get(ref)))
                add(f"{title}, {arch}: its floor (bench/floor.py) vs {ref} exporter", med(e["times"].get("floor")),
                    med(e["times"].get(ref)))
    for arch, e in res.get("infer", {}).get("archs", {}).items():
        for key in ("b1", "big"):
            if key not in e or "times" not in e[key]:
                continue
            t = e[key]["times"]
            b = e[key]["batch"]
            for ref, name in (("onnx:torchscript", "ORT on torch's ONNX"), ("onnx:dynamo", "ORT on dynamo's ONNX"),
                              ("eager", "PyTorch eager")):
                add(f"inference {arch} batch {b}: almc ONNX vs {name}", med(t.get("onnx:almc")), med(t.get(ref)))
    for model, e in res.get("train", {}).items():
        r = e["runs"]
        if r.get("almc") and r.get("torch"):
            add(f"training step {model} (batch {TRAIN_MODELS[model]['batch']}): time", med([t for x in r["almc"] for t in x["times"]]),
                med([t for x in r["torch"] for t in x["times"]]))
            add(f"training {model}: peak RSS of the process", med([x["peak_process_mib"] for x in r["almc"]]),
                med([x["peak_process_mib"] for x in r["torch"]]))
    return out


# -- main --------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, no ResNet-50 (a few minutes)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: onnxruntime's CUDA provider vs PyTorch CUDA (bench/gpu.sh); compile time is skipped")
    ap.add_argument("--sections", default="compile,infer,train,accuracy",
                    help="comma-separated subset of compile,infer,train,accuracy")
    ap.add_argument("--no-dynamo-install", action="store_true", help="do not make bench/.venv-dynamo for onnxscript")
    ap.add_argument("--wait-load", type=float, default=None,
                    help="first wait (up to --wait-max seconds) until the 1-minute load average is below this")
    ap.add_argument("--wait-max", type=float, default=600)
    ap.add_argument("--out", default=str(BENCH), help="where RESULTS.md and results.json go (default bench/)")
    ap.add_argument("--keep-workdir", action="store_true")
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL
    sections = set(args.sections.split(","))
    dev = args.device
    suffix = "" if dev == "cpu" else "-" + dev
    t_start = time.perf_counter()

    env = {"load_start": os.getloadavg(), "loads": {}, "wait_load": args.wait_load}
    if args.wait_load is not None:
        t0 = time.time()
        while load1() >= args.wait_load and time.time() - t0 < args.wait_max:
            log(f"load {load1():.2f} >= {args.wait_load}: waiting")
            time.sleep(15)
        env["waited_s"] = time.time() - t0
        env["load_start"] = os.getloadavg()
    log(f"load average {env['load_start']}")
    dyn_py, dyn_err = dynamo_python(not args.no_dynamo_install)
    log(f"dynamo exporter: {dyn_py or dyn_err}")
    wd = Path(tempfile.mkdtemp(prefix="almc-bench-"))
    archs = cfg["archs"]
    train_models = ["lenet", "mlp", "resnet18"]
    res = {"command": "python bench/run.py" + "".join(f" {a}" for a in sys.argv[1:]),
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick, "device": dev,
           "threads": 2, "machine": machine(), "versions": versions(dyn_py), "config": cfg, "env": env, "errors": {}}
    try:
        log("preparing weights and data")
        res["prepared"] = prepare(wd, archs, train_models)

        def section(name, fn):
            save(res, args.out, suffix, t_start, final=False)  # what is done so far survives a killed run
            before, snap = os.getloadavg(), cpu_snapshot()
            log(f"section: {name}")
            try:
                res[name] = fn()
            except Exception as e:
                res["errors"][name] = str(e)
                log(f"  {name} failed: {str(e)[-800:]}")
            env["loads"][name] = (before[0], os.getloadavg()[0])
            env.setdefault("cpu", {})[name] = others_share(snap, cpu_snapshot())
            if env["cpu"][name]:
                log(f"  other processes used {100 * env['cpu'][name]['others']:.1f}% of the CPUs during {name}")

        if "compile" in sections and dev == "cpu":
            section("compile_process", lambda: compile_process(wd, archs, cfg["compile_proc_reps"], dyn_py, dyn_err))
        if "compile" in sections or "infer" in sections:
            # the in-process compile also writes the files that the inference section runs
            reps = cfg["compile_inproc_reps"] if ("compile" in sections and dev == "cpu") else 0

            def inproc():
                worker("compile-inproc", wd, "--archs", ",".join(archs), "--reps", str(reps), "--dynamo", "1" if dyn_py else "0",
                       python=dyn_py or sys.executable, timeout=1800)
                r = read(wd, "compile_inproc")
                r["dynamo_error"] = dyn_err
                return r
            section("compile_inproc", inproc)
            if reps == 0:
                res.pop("compile_inproc", None)
        if "infer" in sections:
            def infer():
                worker("infer", wd, "--archs", ",".join(archs), "--device", dev, "--reps-b1", str(cfg["reps_b1"]),
                       "--reps-big", str(cfg["reps_big"]), timeout=1800)
                return read(wd, "infer" if dev == "cpu" else "infer_cuda")
            section("infer", infer)
        if "train" in sections:
            section("train", lambda: training(wd, train_models, cfg, dev))
        if "accuracy" in sections and dev == "cpu":
            def accuracy():
                worker("lenet-accuracy", wd)
                return read(wd, "lenet_accuracy")
            section("accuracy", accuracy)
    finally:
        if not args.keep_workdir:
            shutil.rmtree(wd, ignore_errors=True)
        else:
            log(f"work files kept in {wd}")
    env["load_end"] = os.getloadavg()
    save(res, args.out, suffix, t_start, final=True)
    for k, v in res["headline"]:
        print(f"  {v:>6}  {k}")


def save(res: dict, out_dir: str, suffix: str, t_start: float, final: bool) -> None:
    """Write results.json and RESULTS.md; before the run ends (final=False) quietly, as `"partial": true`."""
    res["wall_s"] = time.perf_counter() - t_start
    res["headline"] = headline(res)
    res["partial"] = not final
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results{suffix}.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    (out / f"RESULTS{suffix.upper()}.md").write_text(render(res))
    if final:
        log(f"wrote {out / f'RESULTS{suffix.upper()}.md'} and {out / f'results{suffix}.json'} in {res['wall_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
