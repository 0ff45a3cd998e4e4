"""The almc command line. Exit status: 0 success, 1 model or data error, 2 usage
error, 3 internal error (a bug in almc; --debug shows the traceback)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .errors import AlmError, FileError, UsageError, elide
from .shapes import Limits

EXIT_OK, EXIT_MODEL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
MAX_GRADCHECK_PARAMS = 20_000_000  # almc check --grad: float64 copies and finite differences in numpy


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parse_value(text: str):
    """A -D value: integer, float, true/false, a tuple (comma-separated, or in brackets: `[8]` and
    `(8,)` are one-item lists, `[]` the empty one), or else a string."""
    t = text.strip()
    bracketed = len(t) >= 2 and (t[0], t[-1]) in (("(", ")"), ("[", "]"))
    if bracketed and not t[1:-1].strip():
        return ()
    if "," in t or bracketed:
        items = (t[1:-1] if bracketed else t).split(",")
        if items and not items[-1].strip():  # a trailing comma: (1, 2,)
            items = items[:-1]
        if any(not x.strip() for x in items):
            raise UsageError(f"-D: the list '{elide(t, 60)}' has an empty item")
        return tuple(parse_value(x) for x in items)
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    if t in ("true", "false"):
        return t == "true"
    return t.strip('"')


def positive_int(text: str) -> int:
    try:
        v = int(float(text)) if "e" in text.lower() else int(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expects a positive integer, got '{elide(text, 40)}'") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expects a positive integer, got {v}")
    return v


def model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the .alm model file")
    p.add_argument("--model", help="which model, when the file defines several")
    p.add_argument("-D", "--set", dest="params", action="append", default=[], metavar="NAME=VALUE",
                   help="set a model parameter, e.g. -D classes=100 (repeatable)")
    p.add_argument("--allow-outside-imports", action="store_true",
                   help="allow imports from outside the model file's directory")
    p.add_argument("--max-params", type=positive_int, default=2_000_000_000, metavar="N",
                   help="refuse a layer with more parameters than this (default 2e9)")
    p.add_argument("--max-activations", type=positive_int, default=2_000_000_000, metavar="N",
                   help="refuse a layer whose output has more elements per example (default 2e9)")
    p.add_argument("--max-eval-steps", type=positive_int, default=Limits.max_eval_steps, metavar="N",
                   help="stop building a model after this many evaluation steps: loop iterations, block calls, "
                        f"statements, list elements (default {Limits.max_eval_steps:,})")


MAX_THREADS = 1024


def thread_count(text: str) -> int:
    v = positive_int(text)
    if v > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expects at most {MAX_THREADS} threads, got {v:,}")
    return v


def threads_option(p) -> None:
    p.add_argument("--threads", type=thread_count, metavar="N",
                   help="onnxruntime's intra-op threads (default: the CPUs this process may use, less the "
                        "machine's current load)")


def runnable_options(p) -> None:
    """What `almc run` and `almc predict` take beside the model (see `runnable`)."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights for a .alm model")
    p.add_argument("--model", help="which model, when the file defines several")
    p.add_argument("-D", "--set", dest="params", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--allow-outside-imports", action="store_true")
    threads_option(p)


def build_parser() -> Parser:
    p = Parser(prog="almc", description="Compile declarative .alm neural networks to ONNX and run them.")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks of internal errors")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", parser_class=Parser)

    c = sub.add_parser("check", help="parse, validate and infer shapes; report every error")
    model_options(c)
    c.add_argument("--grad", action="store_true",
                   help="also compare every parameter's gradient with finite differences (needs a train section)")

    dm = sub.add_parser("diff-modes", help="list the layers that differ between inference and training")
    model_options(dm)

    s = sub.add_parser("summary", help="per-layer shapes, parameters, activations, mult-adds, receptive field")
    model_options(s)
    s.add_argument("--json", action="store_true", help="print the summary as JSON")

    co = sub.add_parser("compile", help="lower to an ONNX model")
    model_options(co)
    co.add_argument("-o", "--output", help="output path (default: FILE's name with .onnx, in the current folder)")
    co.add_argument("--seed", type=int, default=0, help="seed of the parameter initialisation (default 0)")
    co.add_argument("--train", action="store_true", help="write the training step (see docs/training.md)")
    co.add_argument("--target", choices=("portable", "cpu", "cuda"), default="portable",  # ops/emit.TARGETS
                    help="with --train: portable runs in every ONNX runtime (default); cpu and cuda are tuned "
                         "for onnxruntime's providers and run in onnxruntime only")
    co.add_argument("--weights", metavar="CKPT", help="export with the weights of an almc checkpoint")
    co.add_argument("--no-fold", action="store_true",
                    help="keep batch norm as its own node (by default it is folded into the conv before it)")
    co.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                    help="fp16: weights and compute in float16, float32 inputs and outputs (default fp32)")
    co.add_argument("--quantize", choices=("int8",), help="int8: static QDQ quantisation (int8 weights per channel, "
                                                          "uint8 activations), calibrated on the training split")
    co.add_argument("--calibrate", metavar="DATA", help="with --quantize: the data to calibrate on (default: the "
                                                        "training section's)")

    t = sub.add_parser("train", help="train with the model's training section, in onnxruntime")
    model_options(t)
    t.add_argument("--data", help='"digits" (default), a .npz file, or a folder of MNIST IDX files')
    t.add_argument("--epochs", type=int, help="override the section's epochs")
    t.add_argument("--batch", type=int, help="override the section's batch size")
    t.add_argument("--lr", type=float, help="override the optimiser's learning rate")
    t.add_argument("--seed", type=int, default=0, help="seed of the weights, the split and the shuffling")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    t.add_argument("--metrics", metavar="OUT.json", help="write the metrics as JSON")
    t.add_argument("--checkpoint", metavar="DIR", help="save a checkpoint here after every epoch")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint DIR")
    t.add_argument("--out", metavar="TRAINED.onnx", help="export the trained inference model")
    t.add_argument("--init", metavar="CKPT", help="start from the weights of a checkpoint (fine-tuning)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard event files here every epoch (needs "
                                                        "tensorboardX: pip install 'almc[tensorboard]')")
    t.add_argument("--plot", metavar="CURVES.png", help="plot the loss and accuracies per epoch (.png, .svg, .pdf; "
                                                        "needs matplotlib: pip install 'almc[plot]')")
    threads_option(t)

    e = sub.add_parser("evaluate", help="a trained model's loss, accuracy, per-class precision / recall / F1 and "
                                        "confusion matrix on a split of its data")
    model_options(e)
    e.add_argument("--weights", metavar="CKPT", help="the trained weights: an almc checkpoint (almc train "
                                                     "--checkpoint DIR writes DIR/last.npz)")
    e.add_argument("--data", help='"digits" (default: the training section\'s), a .npz file, or a folder of MNIST IDX files')
    e.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split (default test)")
    e.add_argument("--seed", type=int, default=0, help="the seed training used: it decides the split (default 0)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument("--confusion", metavar="OUT.png", help="draw the confusion matrix (.png, .svg, .pdf; needs "
                                                          "matplotlib)")
    threads_option(e)

    pl = sub.add_parser("plot", help="plot the training curves of almc train --metrics (needs matplotlib)")
    pl.add_argument("metrics", help="the JSON file almc train --metrics wrote")
    pl.add_argument("-o", "--output", required=True, metavar="CURVES.png", help=".png, .svg or .pdf")

    r = sub.add_parser("run", help="run a .alm or .onnx model on .npy inputs in onnxruntime")
    r.add_argument("file", help="a .alm or .onnx model")
    r.add_argument("--input", "-i", action="append", default=[], metavar="[NAME=]X.npy", required=True,
                   help="an input array; NAME= is needed when the model has several inputs")
    r.add_argument("--output", "-o", help="write the output to this .npy (.npz when there are several)")
    runnable_options(r)

    pr = sub.add_parser("predict", help="the most probable classes of each example, with their probabilities")
    pr.add_argument("file", help="a .alm (with --weights) or a trained .onnx")
    pr.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="examples: .npy files (one example, or a batch [n, ...]), image files (PNG, JPEG, ...: "
                         "prepared as almc train prepared its data; needs Pillow) or folders of them")
    pr.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                    help="images: swap dark and light (auto: when the background is the opposite of the "
                         "training images')")
    pr.add_argument("--weights", metavar="CKPT", help="for a .alm: the trained weights (an almc checkpoint)")
    pr.add_argument("--top", type=positive_int, default=3, metavar="K", help="how many classes (default 3)")
    pr.add_argument("-o", "--output", metavar="OUT.csv", help="also write the predictions as CSV")
    runnable_options(pr)

    sub.add_parser("ops", help="list every op with its arguments (Markdown)")

    sub.add_parser("lsp", help="a language server for editors, over stdin / stdout (needs pygls)")

    f = sub.add_parser("fmt", help="rewrite .alm files in the canonical layout, comments kept")
    f.add_argument("files", nargs="+", metavar="FILE", help=".alm files or folders of them; - reads stdin, "
                                                            "writes stdout")
    f.add_argument("--check", action="store_true", help="write nothing; list the files it would change, exit 1 "
                                                        "if there are any")
    f.add_argument("--diff", action="store_true", help="write nothing; print what it would change as a diff")

    g = sub.add_parser("graph", help="draw the graph with the shapes on its edges (.dot, .svg, .png)")
    model_options(g)
    g.add_argument("-o", "--output", required=True, help="out.dot, out.svg or out.png")
    g.add_argument("--depth", type=int, metavar="K", help="draw block calls nested deeper than K as one node each "
                                                          "(0: every top-level call; default: draw everything)")

    w = sub.add_parser("weights", help="import PyTorch / ONNX weights into an almc checkpoint, or export one")
    ws = w.add_subparsers(dest="weights_command", parser_class=Parser)
    names = ("auto", "almc", "torchvision", "c3d", "pytorch")  # almc/naming.py's SCHEMES; models/README.md
    wi = ws.add_parser("import", help="map a state_dict (.npz, .pt) or ONNX initializers onto the model")
    model_options(wi)
    wi.add_argument("weights", help="a state_dict as .npz or .pt / .pth (torch.load weights_only), or an .onnx")
    wi.add_argument("-o", "--output", required=True, metavar="CKPT", help="the almc checkpoint to write (.npz)")
    wi.add_argument("--names", choices=names, default="auto",
                    help="the file's parameter names (default: by model; almc's own names always match)")
    wi.add_argument("--seed", type=int, default=0, help="seed of the parameters the file does not have")
    wi.add_argument("--strict", action="store_true",
                    help="refuse unless every parameter loads and every array is used")
    we = ws.add_parser("export", help="write a checkpoint's parameters as .npz (almc or PyTorch names)")
    we.add_argument("checkpoint", help="an almc checkpoint")
    we.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    we.add_argument("--names", choices=names, default="almc", help="name scheme (default almc); others need --alm")
    we.add_argument("--alm", metavar="FILE.alm", help="the model the checkpoint belongs to")
    we.add_argument("--model", help="which model, when the file defines several")
    we.add_argument("-D", "--set", dest="params", action="append", default=[], metavar="NAME=VALUE")
    for command in [*sub.choices.values(), *ws.choices.values()]:  # `almc compile F --debug` as `almc --debug compile F`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def load_model(args):
    from .api import load

    params = {}
    for item in args.params:
        if "=" not in item:
            raise UsageError(f"-D expects NAME=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        params[k.strip()] = parse_value(v)
    if not Path(args.file).exists():
        raise UsageError(f"no such file: {args.file}")
    limits = Limits(getattr(args, "max_params", 2_000_000_000), getattr(args, "max_activations", 2_000_000_000),
                    getattr(args, "max_eval_steps", Limits.max_eval_steps))
    m = load(Path(args.file), model=args.model, allow_outside=args.allow_outside_imports, limits=limits,
             seed=getattr(args, "seed", 0), **params)
    for w in m.warnings:
        print(w.render(m.graph.sources), file=sys.stderr)
    return m


def cmd_check(args) -> int:
    m = load_model(args)
    s = m.summary()
    print(f"{args.file}: model {m.name} is well-formed: {len(m.inputs)} input{'s' * (len(m.inputs) != 1)}, "
          f"{len(m.outputs)} output{'s' * (len(m.outputs) != 1)}, {len(s.rows)} layers, "
          f"{s.total_params:,} parameters")
    for name, t in m.outputs.items():
        print(f"  output {name}: {t}")
    if args.grad:
        from .gradcheck import gradient_check

        if m.graph.train is None:
            raise UsageError(f"--grad needs a training section (train {m.name} {{ ... }}) to differentiate")
        if s.total_params > MAX_GRADCHECK_PARAMS:
            raise UsageError(f"--grad runs {m.name} in float64 numpy, several times per parameter tensor: its "
                             f"{s.total_params:,} parameters are more than the {MAX_GRADCHECK_PARAMS:,} it checks; "
                             "check a smaller configuration of it (fewer channels or a smaller input, with -D)")
        reports = gradient_check(m.graph)
        width = max(len(r.param) for r in reports)
        print("gradient check (float64, central differences, batch 2):")
        print(f"  {'parameter'.ljust(width)}  {'shape':<18} checked  worst relative error")
        bad = 0
        for r in reports:
            ok = r.worst_rel_error <= 1e-4
            bad += not ok
            shape = "[" + ", ".join(map(str, r.shape)) + "]"
            print(f"  {r.param.ljust(width)}  {shape:<18} {r.checked:>7}  {r.worst_rel_error:.2e}{'' if ok else '  MISMATCH'}")
        if bad:
            print(f"almc: error: {bad} parameter gradient{'s' * (bad > 1)} disagree with finite differences",
                  file=sys.stderr)
            return EXIT_MODEL
    return EXIT_OK


def cmd_diff_modes(args) -> int:
    from .step import to_training

    m = load_model(args)
    _, mode = to_training(m.graph)
    if not mode.forms:
        print(f"{m.name}: inference and training compute the same nodes")
        return EXIT_OK
    # by layer, as almc summary names them: a node's id depends on whether it ends its statement
    # (conv2 = conv_bn(...) names the batch norm conv2, conv1 = conv_bn(...) |> relu does not)
    print(f"{m.name}: layers that differ between inference and training (named as in almc summary)")
    for node, form in mode.forms.items():
        print(f"  {m.graph.node(node).layer or node}: {form.describe}")
    return EXIT_OK


def cmd_summary(args) -> int:
    m = load_model(args)
    s = m.summary()
    print(s.to_json() if args.json else s)
    return EXIT_OK


def cmd_compile(args) -> int:
    from .files import atomic_write, check_output

    t0 = time.perf_counter()
    m = load_model(args)
    default = Path(args.file).stem + (".train.onnx" if args.train else ".onnx")
    out = check_output(Path(args.output) if args.output else Path(default), [*m.graph.files, args.weights])
    if args.weights:
        m.load_weights(args.weights)
    deploy = args.precision == "fp16" or args.quantize
    if deploy and args.train:
        raise UsageError("--precision fp16 and --quantize are for the inference model, not --train")
    if args.precision == "fp16" and args.quantize:
        raise UsageError("give --precision fp16 or --quantize int8, not both")
    if args.calibrate and not args.quantize:
        raise UsageError("--calibrate goes with --quantize int8")
    if args.train:
        proto = m.compile_training_step(target=args.target)
        atomic_write(out, proto.SerializeToString())
    elif deploy:
        from . import deploy as d

        calibration, test = d.calibration_data(m, args.calibrate, args.seed) if args.quantize else (None, None)
        if test is None and m.graph.train is not None:
            try:
                _, test = d.calibration_data(m, None, args.seed)
            except (UsageError, AlmError):  # data that do not fit: the comparison goes without accuracy
                test = None
        fp32 = m.compile(args.seed, fold=not args.no_fold)
        name = m.graph.inputs[0]
        proto = d.quantize_int8(fp32, name, calibration) if args.quantize else d.to_fp16(fp32)
        atomic_write(out, proto.SerializeToString())
        kind = "int8" if args.quantize else "fp16"
        figures = d.compare({"fp32": fp32, kind: proto}, name, test)
        for k, f in figures.items():
            extra = (f", {f['latency_s'] * 1e3:.3f} ms at batch 1" if "latency_s" in f else "") + (
                f", test accuracy {f['accuracy']:.4f}" if "accuracy" in f else "")
            print(f"  {k}: {f['bytes']:,} bytes{extra}")
    else:
        _, proto = m._export(out, args.seed, not args.no_fold)
    s = m.summary()
    buffers = f" and {s.buffers:,} buffers" if s.buffers else ""
    print(f"wrote {out}: {len(proto.graph.node)} ONNX nodes, {s.total_params:,} parameters{buffers}, opset "
          f"{proto.opset_import[0].version}, in {time.perf_counter() - t0:.2f} s")
    return EXIT_OK


def _feeds(what: str, types: dict, arrays: dict, path_of: dict) -> dict:
    """The run's inputs by name, each checked against its type (None: a type .alm cannot name);
    an array given without a name goes to the model's only input."""
    from .api import check_input

    names = list(types)
    if None in arrays:
        if len(names) != 1:
            raise UsageError(f"{what} has inputs {', '.join(names)}: use --input NAME=X.npy")
        arrays = {names[0]: arrays.pop(None)}
        path_of = {names[0]: path_of.pop(None)}
    unknown = [n for n in arrays if n not in types]
    if unknown:
        raise UsageError(f"{what} has no input '{unknown[0]}' (its inputs: {', '.join(names)})")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UsageError(f"missing input '{missing[0]}'" + (f" ({types[missing[0]]})" if types[missing[0]] else ""))
    return {n: check_input(n, arrays[n], types[n], path_of[n]) if types[n] else arrays[n] for n in names}


def runnable(args):
    """(its name, its input types, feeds -> (outputs, provider), the Model or None, the ONNX
    file's metadata or {}) of `almc run`'s or `almc predict`'s model: an .onnx file, or a .alm
    compiled on the fly."""
    from .files import check_input_file
    from .runtime import session

    if args.file.endswith(".onnx"):
        import onnx

        from .onnxfile import input_types

        if not Path(args.file).exists():
            raise UsageError(f"no such file: {args.file}")
        check_input_file(args.file)
        try:
            proto = onnx.load(args.file)
            onnx.checker.check_model(proto)
        except Exception as e:  # onnx raises several types for damaged files
            raise FileError(args.file, f"not a valid ONNX model ({str(e).splitlines()[0][:200]})") from None

        sessions = []  # one, made at the first call (predict calls once per file)

        def execute(feeds):
            if not sessions:
                sessions.append(session(proto.SerializeToString(), args.device, threads=args.threads))
            sess = sessions[0]
            return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds))), sess.get_providers()[0]
        return args.file, input_types(proto), execute, None, {p.key: p.value for p in proto.metadata_props}
    args.max_params = args.max_activations = 2_000_000_000
    m = load_model(args)

    def execute(feeds):
        return m.run(feeds, device=args.device, threads=args.threads), m.provider
    return m.name, m.inputs, execute, m, {}


def cmd_run(args) -> int:
    import numpy as np

    from .files import atomic_write, check_output, read_array

    arrays, paths, path_of = {}, [args.file], {}
    for item in args.input:
        name, _, path = item.rpartition("=")
        arrays[name or None] = read_array(path)
        paths.append(path)
        path_of[name or None] = path
    if args.output:
        check_output(args.output, paths)
    what, types, execute, _, _ = runnable(args)
    feeds = _feeds(what, types, arrays, path_of)
    try:
        outs, provider = execute(feeds)
    except (AlmError, FileError, UsageError):
        raise
    except Exception as e:  # onnxruntime's own refusals (an embedding id past the table, ...): the data, not almc
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileError(args.file, f"onnxruntime could not run it on these inputs: {elide(first, 300)}") from None
    print(f"ran on {provider}")
    for name, y in outs.items():
        print(f"{name}: {y.dtype}[{', '.join(map(str, y.shape))}]")
        with np.printoptions(precision=4, suppress=True, threshold=20, edgeitems=3):
            print(y)
    if args.output:
        import io

        buf = io.BytesIO()
        if len(outs) == 1:
            np.save(buf, next(iter(outs.values())))
        else:
            np.savez(buf, **outs)
        atomic_write(args.output, buf.getvalue())
        print(f"wrote {args.output}")
    return EXIT_OK


def cmd_predict(args) -> int:
    import json

    from .data import IMAGE_SUFFIXES, fit_input, read_image
    from .evaluate import top_classes
    from .files import atomic_write, check_output, read_array

    paths = []
    for given in args.inputs:  # a folder: its .npy and image files, in name order
        if Path(given).is_dir():
            found = sorted(str(p) for p in Path(given).iterdir()
                           if p.is_file() and p.suffix.lower() in (".npy", *IMAGE_SUFFIXES))
            if not found:
                raise UsageError(f"{given} holds no .npy or image files ({', '.join(IMAGE_SUFFIXES)})")
            paths += found
        else:
            paths.append(given)
    if args.output:  # the files a folder holds are inputs too
        check_output(args.output, [args.file, args.weights, *paths])
    what, types, execute, m, props = runnable(args)
    if len(types) != 1:
        raise UsageError(f"{what} has inputs {', '.join(types)}: almc predict feeds one (use almc run)")
    (name, t), = types.items()
    spec = m.graph.train if m is not None else None
    if spec is not None and not m.graph.node(spec.labels[0]).type.dtype.startswith("i"):
        raise UsageError(f"{what} is trained on float targets (a regression): it has no classes to predict; "
                         "use almc run")
    is_image = [Path(p).suffix.lower() in IMAGE_SUFFIXES for p in paths]
    arrays = {i: (p, read_array(p)) for i, p in enumerate(paths) if not is_image[i]}  # checked before any work
    images = [(i, p) for i, p in enumerate(paths) if is_image[i]]
    if m is not None and args.weights:
        m.load_weights(args.weights)
    elif args.weights:
        raise UsageError("--weights is for a .alm model: an .onnx file holds its weights")
    elif m is not None:
        print(f"almc: warning: no --weights: predicting with {m.name}'s initial weights (seed {args.seed})",
              file=sys.stderr)
    if images:
        try:
            record = m.data_record if m is not None else json.loads(props["almc.data"])
        except (KeyError, json.JSONDecodeError):
            record = None
        if not isinstance(record, dict) or t is None:
            source = f"{args.weights} does" if m is not None and args.weights else f"{what} does"
            raise UsageError(f"{images[0][1]} is an image, but {source} not record how the training images were "
                             "prepared (a checkpoint of almc train, or a file from almc train --out or almc "
                             "compile --weights, does); give .npy inputs")
        for i, path in images:
            x, flipped = read_image(path, record, args.invert)
            if flipped and args.invert == "auto":
                print(f"almc: note: {path}: inverted: its background is "
                      f"{'light' if record['background'] == 'dark' else 'dark'}, the training images' "
                      f"({record['dataset']}) {record['background']} (--invert no keeps it)", file=sys.stderr)
            try:
                arrays[i] = (path, fit_input(x[None], t.dims[1:]))
            except ValueError as e:
                raise UsageError(f"{path}: {e}") from None
    labels = list(spec.classes) if spec is not None and spec.classes else None
    rows = []
    for path, x in (arrays[i] for i in sorted(arrays)):  # in the order given
        if t is not None and x.ndim == t.rank - 1:  # one example: add the batch axis
            x = x[None]
        outs, provider = execute(_feeds(what, types, {None: x}, {None: path}))
        scores = next(iter(outs.values()))
        for i, top in enumerate(top_classes(scores, args.top, labels)):
            rows.append((path, i, top))
            shown = ", ".join(f"{c} ({p:.4f})" for c, p in top)
            print(f"{path}[{i}]: {shown}")
    if args.output:
        k = max(len(top) for *_, top in rows)
        lines = ["file,index," + ",".join(f"class_{j + 1},p_{j + 1}" for j in range(k))]
        for path, i, top in rows:
            quoted = '"' + path.replace('"', '""') + '"' if any(ch in path for ch in ',"\n') else path
            lines.append(f"{quoted},{i}," + ",".join(f"{c},{p:.6g}" for c, p in top))
        atomic_write(args.output, ("\n".join(lines) + "\n").encode())
        print(f"wrote {args.output}")
    return EXIT_OK


def cmd_graph(args) -> int:
    from .draw import render
    from .files import atomic_write, check_output

    fmt = Path(args.output).suffix.lstrip(".").lower()
    if fmt not in ("dot", "svg", "png", "pdf"):
        raise UsageError(f"cannot tell the format of {args.output}: use .dot, .svg or .png")
    m = load_model(args)
    check_output(args.output, m.graph.files)
    if args.depth is not None and args.depth < 0:
        raise UsageError(f"--depth must be 0 or more, got {args.depth}")
    atomic_write(args.output, render(m.graph, fmt, args.depth))
    print(f"wrote {args.output}")
    return EXIT_OK


def cmd_train(args) -> int:
    from .train import TrainingStopped, TrainOptions, train

    m = load_model(args)
    opts = TrainOptions(data=args.data, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                        device=args.device, metrics=args.metrics, checkpoint=args.checkpoint, resume=args.resume,
                        out=args.out, progress=not args.no_progress, threads=args.threads, plot=args.plot,
                        tensorboard=args.tensorboard)
    if args.init:
        from .checkpoint import match_weights, read_checkpoint

        opts.init, _, _ = read_checkpoint(args.init)
        _, match = match_weights(m.initial_weights(args.seed), opts.init)
        print(f"starting from {args.init}: {match.report()}")
        if not match.loaded:
            raise UsageError(f"no parameter of {args.init} matches {m.name} by name and shape")
    try:
        metrics = train(m, opts)
    except TrainingStopped as e:
        print(f"almc: error: {e}", file=sys.stderr)
        return EXIT_MODEL
    last = metrics["epochs"][-1] if metrics["epochs"] else {}
    print(f"{metrics['data']}; {metrics['provider']}")
    from .checkpoint import CHECKPOINT

    done, total = metrics["resumed_after_epoch"], len(metrics["epochs"])
    if done is not None:
        print(f"resumed from {Path(args.checkpoint) / CHECKPOINT} after epoch {done} of {total}")
    ran = (f"{total} epochs" if not done else f"epoch {total}" if done + 1 == total
           else f"epochs {done + 1} to {total}" if done < total else f"no epoch (the checkpoint had all {total})")
    print(f"trained {m.name} for {ran} in {metrics['wall_time']:.1f} s "
          f"({metrics['examples_per_second']:,.0f} examples/s): final train loss {last.get('train_loss', float('nan')):.4f}"
          + (f", validation accuracy {last['val_accuracy']:.4f}" if last.get("val_accuracy") is not None else "")
          + (f", test accuracy {metrics['test_accuracy']:.4f}" if metrics["test_accuracy"] is not None else ""))
    for what, path in (("metrics", args.metrics), ("checkpoint", args.checkpoint), ("trained model", args.out),
                       ("curves", args.plot), ("TensorBoard events", args.tensorboard)):
        if path:
            print(f"wrote {what}: {path}")
    return EXIT_OK


def cmd_evaluate(args) -> int:
    import json

    from .evaluate import EvalOptions, evaluate, report

    m = load_model(args)
    if args.confusion:
        from .files import check_output
        from .plot import require

        require(args.confusion)
        check_output(args.confusion, [*m.graph.files, args.weights, args.data], "--confusion")
    if args.weights:
        m.load_weights(args.weights)
    metrics = evaluate(m, EvalOptions(data=args.data, split=args.split, seed=args.seed, device=args.device,
                                      threads=args.threads))
    if not args.weights:  # after the data are read: a bad file's error comes first
        print(f"almc: warning: no --weights: evaluating {m.name}'s initial weights (seed {args.seed})", file=sys.stderr)
    print(json.dumps(metrics, indent=2) if args.json else report(metrics))
    if args.confusion:
        from .plot import confusion, save

        if "confusion" not in metrics:
            raise UsageError(f"{m.name} is trained on float targets: it has no confusion matrix to draw")
        save(confusion(metrics), args.confusion)
        print(f"wrote {args.confusion}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


def cmd_plot(args) -> int:
    import json

    from .files import check_input_file, check_output
    from .plot import curves, require, save

    require(args.output)
    if not Path(args.metrics).exists():
        raise UsageError(f"no such file: {args.metrics}")
    check_input_file(args.metrics)
    check_output(args.output, [args.metrics])
    if Path(args.metrics).stat().st_size > 64 << 20:
        raise FileError(args.metrics, "is larger than the 64 MiB a metrics file may be")
    try:
        metrics = json.loads(Path(args.metrics).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileError(args.metrics, f"not JSON ({elide(str(e), 120)})") from None
    save(curves(metrics, args.metrics), args.output)
    print(f"wrote {args.output}")
    return EXIT_OK


def cmd_weights(args) -> int:
    from .checkpoint import check_weights, read_checkpoint, write_checkpoint
    from .files import atomic_write, check_output
    from .naming import DESCRIBE, resolve_scheme
    from .weights import export_weights, import_weights, npz_bytes

    if args.weights_command is None:
        raise UsageError("weights needs a subcommand: import or export")
    read = [args.weights] if args.weights_command == "import" else [args.checkpoint, args.alm]
    out = check_output(args.output, [getattr(args, "file", None), *read])
    if args.weights_command == "import":
        m = load_model(args)
        weights, report = import_weights(m, args.weights, args.names, args.seed)
        print(report.text())
        if not report.match.loaded:
            raise FileError(args.weights, f"no array matches a parameter of {m.name} by name and shape "
                                          f"({DESCRIBE[report.scheme]}; see --names)")
        if args.strict and not report.exact:
            raise FileError(args.weights, f"does not match {m.name} exactly (--strict); nothing written")
        write_checkpoint(out, m.graph, weights)
        print(f"wrote checkpoint: {out}")
        return EXIT_OK
    weights, _, meta = read_checkpoint(args.checkpoint)
    graph = None
    if args.alm:
        args.file, args.allow_outside_imports = args.alm, False
        m = load_model(args)
        if meta.get("model") != m.name:
            raise FileError(args.checkpoint, f"saved from model {meta.get('model')}, not {m.name}")
        check_weights(args.checkpoint, m.graph, weights, m.initial_weights())
        graph = m.graph
    elif args.names not in ("almc", "auto"):
        raise UsageError(f"--names {args.names} needs the model the checkpoint belongs to: --alm FILE.alm")
    scheme = resolve_scheme(graph, args.names) if graph is not None else "almc"
    arrays = export_weights(weights, graph, scheme)
    atomic_write(out, npz_bytes(arrays))
    print(f"wrote {out}: {len(arrays)} arrays under {DESCRIBE[scheme]}")
    return EXIT_OK


def cmd_fmt(args) -> int:
    import difflib

    from .files import atomic_write
    from .fmt import format_source
    from .parse import MAX_SOURCE_BYTES, read_source, source_text

    if args.files == ["-"]:
        data = sys.stdin.buffer.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            raise UsageError(f"stdin holds more than a model file's {MAX_SOURCE_BYTES:,} bytes")
        sys.stdout.write(format_source(source_text(data, "<stdin>"), "<stdin>"))
        return EXIT_OK
    if "-" in args.files:
        raise UsageError("- (stdin) cannot be given with other files")
    paths = []
    for name in args.files:
        path = Path(name)
        if path.is_dir():  # its .alm files, outside hidden folders (.git, .venv)
            paths += sorted(p for p in path.rglob("*.alm")
                            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif not path.exists():
            raise UsageError(f"no such file: {name}")
        else:
            paths.append(path)
    changed, failed = [], 0
    for path in paths:
        try:
            text = read_source(path)
            formatted = format_source(text, str(path))
        except AlmError as e:
            print(e.render(), file=sys.stderr)
            failed += 1
            continue
        if formatted == text:
            continue
        changed.append(path)
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), formatted.splitlines(True),
                                                       f"{path} (before)", f"{path} (formatted)"))
        elif args.check:
            print(f"{path}: would be reformatted")
        else:  # the file a link points to, keeping its permissions
            target = path.resolve()
            try:
                mode = target.stat().st_mode & 0o7777
                if not os.access(target, os.W_OK) or not mode & 0o222:  # root too
                    raise FileError(path, "is read-only; it was left as it is")
                atomic_write(target, formatted.encode("utf-8"), mode=mode)
            except FileError as e:
                print(str(e), file=sys.stderr)
                changed.pop()
                failed += 1
                continue
            print(f"reformatted {path}")
    kept = len(paths) - len(changed) - failed
    verb = "would be reformatted" if args.check or args.diff else "reformatted"
    print(f"{len(changed)} file{'s' * (len(changed) != 1)} {verb}, {kept} already formatted"
          + (f", {failed} with errors" if failed else ""), file=sys.stderr)
    return EXIT_MODEL if failed or (args.check and changed) else EXIT_OK


def cmd_lsp(args) -> int:
    from .lsp import serve

    serve()
    return EXIT_OK


def cmd_ops(args) -> int:
    from .ops.registry import ops_markdown

    print(ops_markdown())
    return EXIT_OK


COMMANDS = {"ops": cmd_ops, "fmt": cmd_fmt, "lsp": cmd_lsp, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "plot": cmd_plot, "diff-modes": cmd_diff_modes, "check": cmd_check, "summary": cmd_summary, "compile": cmd_compile, "run": cmd_run, "graph": cmd_graph, "weights": cmd_weights}


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: temporary files are removed, nothing half-written


def main(argv=None) -> int:
    if argv is None:  # the console script: a SIGTERM should clean up like Ctrl-C does
        import signal

        signal.signal(signal.SIGTERM, _terminate)
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    try:
        args = build_parser().parse_args(argv)
        if args.version:
            from . import __version__

            print(f"almc {__version__}")
            return EXIT_OK
        if not args.command:
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        return COMMANDS[args.command](args)
    except AlmError as e:
        print(e.render(), file=sys.stderr)
        n = sum(d.severity == "error" for d in e.diagnostics)
        if n > 1:
            print(f"{n} errors", file=sys.stderr)
        return EXIT_MODEL
    except FileError as e:
        print(str(e), file=sys.stderr)
        return EXIT_MODEL
    except UsageError as e:
        print(f"almc: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `almc summary ... | head`: the reader left; that is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("almc: interrupted; nothing was written", file=sys.stderr)
        return 130
    except MemoryError as e:
        if debug:
            raise
        detail = f" ({e})" if str(e).startswith("the parameters take") else ""  # init.draw_all's figures
        print(f"almc: error: out of memory: the model or the data need more memory than this machine has{detail}; "
              "make them smaller (or lower --max-params, which bounds every layer)", file=sys.stderr)
        return EXIT_MODEL
    except OSError as e:  # the machine's, not almc's: a full disk, a file that vanished, a read-only folder
        if debug:
            raise
        where = f"{elide(str(e.filename), 200)}: " if e.filename else ""
        print(f"almc: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_MODEL
    except RecursionError:
        if debug:
            raise
        print("almc: error: the model is nested too deeply to compile", file=sys.stderr)
        return EXIT_MODEL
    except Exception as e:  # a bug in almc, not in the user's model
        if debug:
            raise
        print(f"almc: internal error: {type(e).__name__}: {e}\n"
              "This is a bug in almc. Please report it with the command and the model file; "
              "--debug shows the traceback.", file=sys.stderr)
        return EXIT_INTERNAL


def entry() -> None:
    """The `almc` console script: main(), then the process ends without the interpreter's
    teardown, which would unload the 600 modules of numpy, onnx, networkx and lark after every
    command, a large share of a short command's time (figures: docs/performance.md). Every file
    almc writes is closed by then (files.atomic_write); the output streams are flushed here."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader left (`almc summary | head`), or it is closed
            pass
        except OSError as e:  # stdout on a full device: the output is lost, and the exit status says so
            try:
                os.write(2, f"almc: error: cannot write the output: {e.strerror or e}\n".encode())
            except OSError:
                pass
            code = code or EXIT_MODEL
    os._exit(code)


if __name__ == "__main__":
    entry()
