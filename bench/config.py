"""What the benchmark runs: the architectures it compiles and the models it trains, shared by
bench/run.py (which runs them), bench/report.py (which describes them) and bench/step_memory.py."""
from __future__ import annotations

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
