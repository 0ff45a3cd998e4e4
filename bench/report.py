"""bench/run.py's report: results.json -> RESULTS.md (the tables, the machine, the versions) and
the headline ratios. A pure function of the results, so that a committed results file renders to
the committed tables (tests/test_bench_report.py)."""
from __future__ import annotations

import json
import statistics

from config import TRAIN_MODELS


def stats(xs: list[float]) -> dict | None:
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


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


# -- bench/zoo.py's section (results-zoo.json), after run.py's ---------------------------------------

def median_ms(v: list[float]) -> float:
    return statistics.median(v) * 1e3


def top_ops(stats: dict, n: int = 8) -> str:
    ops = stats["after_ort"]["ops"]
    return ", ".join(f"{k} {v}" for k, v in list(ops.items())[:n])


def render_zoo(res: dict) -> str:
    lines = ["## 5. bench/zoo.py: ViT-B/16, EfficientNet-B0 and a ViT training step against PyTorch (CPU)", "",
             f"`{res['command']}` on {res['machine']} ({res['wall_s']:.0f} s, load average "
             f"{res['load'][0]:.2f} before, {res['load_after'][0]:.2f} after); {res['versions']}.", "",
             "Medians in ms; ratio: almc / reference (above 1: almc is slower).", "",
             "| model | batch | almc ONNX | torch.onnx.export | PyTorch eager | almc / export | almc / eager |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, e in res["inference"].items():
        for batch, t in e["times"].items():  # batch: a string key once through JSON
            a, o, g = (median_ms(t["times"][k]) for k in ("onnx:almc", "onnx:torchscript", "eager"))
            lines.append(f"| {name} | {batch} | {a:.1f} | {o:.1f} | {g:.1f} | {a / o:.3f} | {a / g:.3f} |")
    lines += ["", "Outputs against PyTorch in float64 (max difference relative to the largest output): "
              + "; ".join(f"{name}: almc {e['check']['onnx:almc']:.1e}, export {e['check']['onnx:torchscript']:.1e}, "
                          f"eager {e['check']['eager']:.1e}"
        for name, e in res["inference"].items()) + ".", "",
        "Nodes before and after onnxruntime's optimisations, and the commonest ops it runs:", ""]
    for name, e in res["inference"].items():
        for k, s in e["graphs"].items():
            lines.append(f"- {name}, {k}: {s['nodes']} -> {s['after_ort']['nodes']} nodes: {top_ops(s)}")
    tr = res["training"]
    a, g = median_ms(tr["times"]["almc"]), median_ms(tr["times"]["eager"])
    lines += ["", "| training step | almc (ONNX step, StepRunner) | PyTorch eager | almc / eager |",
              "|---|---:|---:|---:|",
              f"| vit_digits, batch 32, AdamW | {a:.2f} | {g:.2f} | {a / g:.3f} |", "",
              f"First {len(tr['losses'])} losses (almc, PyTorch): "
              + ", ".join(f"({x:.6f}, {y:.6f})" for x, y in tr["losses"])
              + "; the weights after them differ by at most (absolute; lr 2e-3 bounds each step) "
              + ", ".join(f"{d:.1e} in {k}" for d, k in tr["weight_diffs"]) + ". "
              f"The step has {tr['nodes']} ONNX nodes.", ""]
    return "\n".join(lines)


def render_compile_train(res: dict) -> str:
    lines = ["## 6. bench/compile_train.py: `almc compile --train`, cold and warm cache", "",
             f"`{res['command']}` on {res['machine']}; {res['versions']}. Each a fresh process, median of "
             f"{res['runs']} runs; cold: an empty `~/.cache/almc`, as on a fresh machine or in CI. 224 x 224 inputs.", "",
             "| model | target | step nodes | cold s | warm s |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['target']} | {r['nodes']} | {r['cold_s']:.2f} | {r['warm_s']:.2f} |" for r in res["rows"]]
    return "\n".join(lines + [""])


def document(res: dict, zoo: dict | None, compile_train: dict | None = None) -> str:
    """RESULTS.md: run.py's report, then bench/zoo.py's and bench/compile_train.py's sections where
    they have run."""
    return (render(res) + ("\n" + render_zoo(zoo) if zoo else "")
            + ("\n" + render_compile_train(compile_train) if compile_train else ""))


def sections(out) -> tuple[dict | None, dict | None]:
    """The results of bench/zoo.py and bench/compile_train.py in folder `out`, where they have run."""
    from pathlib import Path

    def read(name):
        f = Path(out) / name
        return json.loads(f.read_text()) if f.exists() else None
    return read("results-zoo.json"), read("results-compile-train.json")
