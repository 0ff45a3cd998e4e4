#!/usr/bin/env bash
# The benchmark on CUDA: onnxruntime-gpu's CUDA provider against PyTorch CUDA,
# parameters resident on the GPU (ORT: initialisers / OrtValues on the device,
# IOBinding; PyTorch: the module on the device). Inference (batch-1 latency,
# batch-32/8 throughput) and the training steps; compile time does not depend
# on the device and is left to the CPU run.
#
#     bash bench/gpu.sh [--quick]          # from anywhere; runs in the repository root
#
# Writes bench/RESULTS-CUDA.md and bench/results-cuda.json, then checks almc's own CUDA paths
# against the CPU (bench/cuda_check.py -> bench/cuda-check.json), and copies them to $OUT when
# that is set. Without an NVIDIA GPU (no working nvidia-smi), or when
# onnxruntime's CUDA provider cannot run, it says so and exits 0.
#
# It needs a python3 (or $PYTHON) with torch (a CUDA build), onnx, numpy,
# onnxruntime-gpu and almc's other dependencies (lark, networkx, tqdm). Wheels
# for what is missing can be put in .whl/ (or $ALMC_WHEELS): they are installed
# with --no-index into /tmp/almc-gpu-site first, so no network is needed. almc
# itself is installed from this checkout the same way when it does not import.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "bench/gpu.sh: no NVIDIA GPU here (nvidia-smi is missing or fails): nothing to run."
    exit 0
fi
nvidia-smi -L

SITE=/tmp/almc-gpu-site
WHEELS=${ALMC_WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "installing the wheels in $WHEELS into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl || exit 1
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
# almc itself, installed from this checkout (bench/workers.py runs from bench/, and almc's grammar is package data)
ROOT=$PWD
if ! (cd /tmp && "$PY" -c "import almc; almc.load('$ROOT/models/lenet.alm')" >/dev/null 2>&1); then
    echo "installing almc from this checkout into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" . || exit 1
    (cd /tmp && "$PY" -c "import almc; almc.load('$ROOT/models/lenet.alm')") || {
        echo "bench/gpu.sh: almc does not import (its dependencies: lark, networkx, onnx, numpy, tqdm)"; exit 1; }
fi

# onnxruntime-gpu dlopens CUDA, cuBLAS and cuDNN by name: put the nvidia-* wheels' libraries (those a
# CUDA build of PyTorch brings) on the loader's path, for processes that do not import torch first
NVLIBS=$("$PY" - <<'EOF'
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
print(":".join(sorted({os.path.dirname(p) for base in nvidia.__path__
                       for p in glob.glob(os.path.join(base, "**", "lib*.so*"), recursive=True)})))
EOF
)
if [ -n "$NVLIBS" ]; then
    export LD_LIBRARY_PATH="$NVLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "CUDA libraries (nvidia-* wheels): $NVLIBS"
fi

# Can onnxruntime run on the GPU here? (a one-node model on the CUDA provider)
"$PY" - <<'EOF'
import sys
try:
    import onnxruntime as ort
    from onnx import TensorProto, helper
except Exception as e:
    print(f"bench/gpu.sh: onnxruntime or onnx does not import ({e}): nothing to run.")
    sys.exit(3)
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from the nvidia-* wheels, as bench/workers.py does
    try:
        ort.preload_dlls()
    except Exception:
        pass
try:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    used = s.get_providers()[0]
except Exception as e:
    used = f"error: {e}"
if used != "CUDAExecutionProvider":
    print(f"bench/gpu.sh: onnxruntime {ort.__version__} cannot use the CUDA provider here "
          f"(available: {ort.get_available_providers()}; got {used}): nothing to run.")
    sys.exit(3)
try:
    import torch
    cuda = torch.cuda.is_available()
    print(f"onnxruntime {ort.__version__}: CUDA provider works; torch {torch.__version__}: CUDA "
          f"{'available, ' + torch.cuda.get_device_name(0) if cuda else 'NOT available (the PyTorch rows will say so)'}")
except Exception as e:
    print(f"torch does not import ({e}): the PyTorch rows will say so")
EOF
case $? in
    0) ;;
    3) exit 0 ;;
    *) exit 1 ;;
esac

PYTHONUNBUFFERED=1 "$PY" bench/run.py --device cuda --sections infer,train --no-dynamo-install "$@"
status=$?
# almc's own CUDA paths (almc.runtime, a training step, almc train) against the CPU
PYTHONUNBUFFERED=1 "$PY" bench/cuda_check.py || status=1
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    cp bench/RESULTS-CUDA.md bench/results-cuda.json bench/cuda-check.json "$OUT"/ 2>/dev/null || true
fi
exit $status
