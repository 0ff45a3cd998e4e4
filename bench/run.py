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

from config import ARCH_FILES, TRAIN_MODELS
from report import document, headline, sections

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKERS = BENCH / "workers.py"
DYNAMO_VENV = BENCH / ".venv-dynamo"
ONNXSCRIPT = "onnxscript==0.7.2"

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
    extra = sections(out) if not suffix else (None, None)  # bench/zoo.py's and compile_train.py's, kept (CPU only)
    (out / f"RESULTS{suffix.upper()}.md").write_text(document(res, *extra))
    if final:
        log(f"wrote {out / f'RESULTS{suffix.upper()}.md'} and {out / f'results{suffix}.json'} in {res['wall_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
