"""Byte-identity of what almc writes: the SHA-256 of every model in models/ compiled for
inference (folded and not), and of its training step (portable, CPU and CUDA forms) where it has a
train section. A refactoring that claims to change no behaviour must leave every digest as
it was:

    python bench/onnx_digests.py            # compare with bench/onnx_digests.txt (exit 1 on a change)
    python bench/onnx_digests.py --write    # record the current digests
    python bench/onnx_digests.py lenet mlp  # only these models

Each file is written by `almc compile` in a fresh process, as a user writes it, with the
model's path spelled models/NAME.alm from the repository root.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "bench" / "onnx_digests.txt"
MODES = {"infer": [], "nofold": ["--no-fold"], "train": ["--train"], "train-cpu": ["--train", "--target", "cpu"],
         "train-cuda": ["--train", "--target", "cuda"]}


def has_train_section(path: Path) -> bool:
    return any(line.lstrip().startswith("train ") for line in path.read_text().splitlines())


def digests(names: list[str]) -> dict[str, str]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            src = Path("models") / f"{name}.alm"
            for mode, flags in MODES.items():
                if mode.startswith("train") and not has_train_section(ROOT / src):
                    continue
                dst = Path(tmp) / f"{name}.{mode}.onnx"
                subprocess.run([sys.executable, "-m", "almc.cli", "compile", str(src), "-o", str(dst), *flags],
                               cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
                out[f"{name} {mode}"] = hashlib.sha256(dst.read_bytes()).hexdigest()
                dst.unlink()
    return out


def main(argv: list[str]) -> int:
    write = "--write" in argv
    names = [a for a in argv if not a.startswith("--")] or sorted(p.stem for p in (ROOT / "models").glob("*.alm"))
    now = digests(names)
    if write:
        RECORD.write_text("".join(f"{k} {v}\n" for k, v in sorted(now.items())))
        print(f"wrote {len(now)} digests to {RECORD.relative_to(ROOT)}")
        return 0
    recorded = dict(line.rsplit(" ", 1) for line in RECORD.read_text().splitlines() if line)
    changed = [k for k in sorted(now) if recorded.get(k) != now[k]]
    for k in changed:
        print(f"changed: {k}")
    print(f"{len(now) - len(changed)} of {len(now)} files byte-identical to {RECORD.relative_to(ROOT)}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
