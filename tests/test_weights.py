"""almc weights import / export: reading state_dicts (.npz, .pt), ONNX initializers and
checkpoints, the name schemes, the report, the round trip, and damaged or hostile files
(nothing is ever unpickled beyond torch.load(weights_only=True))."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import almc
from almc.checkpoint import read_checkpoint
from almc.cli import main
from almc.errors import FileError, UsageError
from almc.naming import name_map
from almc.weights import export_weights, import_weights, read_weights

torch = pytest.importorskip("torch")
nn = torch.nn
MODELS = Path(__file__).resolve().parent.parent / "models"
LENET = str(MODELS / "lenet.alm")

BN_MODEL = """import "std/resnet.alm"
model Small {
    input image: f32[N, 3, 8, 8]
    x = conv_bn(image, 4, 3, pad = 1) |> relu
    output logits = global_avgpool(x) |> flatten |> dense(3)
}
"""


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)


class Small(nn.Module):  # BN_MODEL as a plain PyTorch module: conv, bn, fc
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.Linear(4, 3)


def lenet_state(seed=0):
    torch.manual_seed(seed)
    return {k: v.numpy() for k, v in LeNet5().state_dict().items()}


def save_npz(path, arrays):
    np.savez(path, **arrays)
    return path


# ---- reading ------------------------------------------------------------------------------------

def test_npz_pt_and_onnx_give_the_same_weights(tmp_path):
    sd = lenet_state()
    m = almc.load(LENET)
    from_npz, r1 = import_weights(m, save_npz(tmp_path / "w.npz", sd))
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "w.pt")
    from_pt, r2 = import_weights(m, tmp_path / "w.pt")
    # an ONNX model whose initializers carry the PyTorch names
    inits = [numpy_helper.from_array(v, k) for k, v in sd.items()]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])], initializer=inits)
    onnx.save(helper.make_model(graph), tmp_path / "w.onnx")
    from_onnx, r3 = import_weights(m, tmp_path / "w.onnx")
    assert r1.exact and r2.exact and r3.exact
    assert list(from_npz) == list(m.initial_weights())
    for k in from_npz:
        assert from_npz[k].dtype == np.float32
        np.testing.assert_array_equal(from_npz[k], from_pt[k])
        np.testing.assert_array_equal(from_npz[k], from_onnx[k])
    np.testing.assert_array_equal(from_npz["c3.conv.weight"], sd["conv2.weight"])
    np.testing.assert_array_equal(from_npz["logits.bias"], sd["fc3.bias"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_onnx_file_exported_by_pytorch_imports_and_runs_the_same(tmp_path):
    F = torch.nn.functional

    class Net(LeNet5):
        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    torch.manual_seed(5)
    net = Net().eval()
    torch.onnx.export(net, (torch.zeros(1, 1, 32, 32),), str(tmp_path / "net.onnx"), dynamo=False,
                      input_names=["image"], dynamic_axes={"image": {0: "N"}})
    m = almc.load(LENET)
    weights, report = import_weights(m, tmp_path / "net.onnx")
    assert report.exact, report.text()
    m.weights = weights
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    from almc.runtime import run

    theirs, _ = run(onnx.load(tmp_path / "net.onnx"), {"image": x}, device="cpu")
    np.testing.assert_allclose(m.run(x)["logits"], next(iter(theirs.values())), rtol=1e-5, atol=1e-6)


def test_almc_onnx_and_checkpoints_import_by_almc_names(tmp_path):
    m = almc.load(LENET)
    m.export(tmp_path / "lenet.onnx", seed=7)
    weights, report = import_weights(m, tmp_path / "lenet.onnx")
    assert report.exact and report.scheme == "almc"  # almc's own export: not "PyTorch module names"
    assert report.text().splitlines()[0] == f"read 10 arrays from {tmp_path / 'lenet.onnx'} (almc names for LeNet5)"
    for k, v in almc.load(LENET).initial_weights(7).items():
        np.testing.assert_array_equal(weights[k], v)
    assert main(["weights", "import", LENET, str(tmp_path / "lenet.onnx"), "-o", str(tmp_path / "ck.npz")]) == 0
    again, report = import_weights(m, tmp_path / "ck.npz")  # an almc checkpoint is a weights file too
    assert report.exact and report.count == 10
    for k in weights:
        np.testing.assert_array_equal(again[k], weights[k])


def test_an_almc_onnx_with_folded_batch_norm_is_refused(tmp_path, capsys):
    m = almc.load(BN_MODEL)
    m.export(tmp_path / "folded.onnx")  # batch norm folded into the conv (the default)
    m.export(tmp_path / "plain.onnx", fold=False)
    with pytest.raises(FileError) as e:
        import_weights(m, tmp_path / "folded.onnx")
    assert str(e.value) == (f"{tmp_path / 'folded.onnx'}: error: this almc ONNX model of Small was compiled with "
                            "batch norm folded into the layers before it (the default), so its weights are not the "
                            "model's parameters; compile it with --no-fold, or import the checkpoint it was "
                            "compiled from")
    weights, report = import_weights(m, tmp_path / "plain.onnx")
    assert report.exact
    for k, v in m.initial_weights().items():
        np.testing.assert_array_equal(weights[k], v)
    # without batch norm, folding changes nothing and the file imports
    almc.load(LENET).export(tmp_path / "lenet.onnx")
    assert import_weights(almc.load(LENET), tmp_path / "lenet.onnx")[1].exact


def test_pt_reading_is_weights_only(tmp_path, monkeypatch):
    torch.save({k: torch.from_numpy(v) for k, v in lenet_state().items()}, tmp_path / "w.pt")
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    read_weights(tmp_path / "w.pt")
    assert calls == [{"map_location": "cpu", "weights_only": True}]


class Hostile:
    def __reduce__(self):
        return (Path.touch, (Path(HOSTILE_MARK),))


HOSTILE_MARK = "/nonexistent"


def test_a_pickled_object_is_refused_and_never_runs(tmp_path, monkeypatch):
    global HOSTILE_MARK
    HOSTILE_MARK = str(tmp_path / "pwned")
    torch.save({"conv1.weight": Hostile()}, tmp_path / "evil.pt")
    torch.save(LeNet5(), tmp_path / "module.pt")  # a whole module, not a state_dict
    for name in ("evil.pt", "module.pt"):
        with pytest.raises(FileError, match=r"not loadable with torch.load\(weights_only=True\): save the "
                                            r"model's state_dict\(\) rather than the module"):
            read_weights(tmp_path / name)
    assert not (tmp_path / "pwned").exists()
    np.savez(tmp_path / "obj.npz", a=np.array([Hostile()], dtype=object))
    with pytest.raises(FileError, match=r"not a readable .npz archive \(ValueError: Object arrays cannot be "
                                        r"loaded when allow_pickle=False"):
        read_weights(tmp_path / "obj.npz")
    assert not (tmp_path / "pwned").exists()


def test_pt_without_torch_says_to_convert(tmp_path, monkeypatch):
    torch.save({"w": torch.zeros(2)}, tmp_path / "w.pt")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(FileError) as e:
        read_weights(tmp_path / "w.pt")
    assert str(e.value).startswith(f"{tmp_path / 'w.pt'}: error: reading a .pt file needs PyTorch, which is not "
                                   "installed here; convert it to .npz where torch is:")
    assert "weights_only=True" in str(e.value)


def test_wrapped_and_data_parallel_state_dicts(tmp_path):
    sd = {f"module.{k}": torch.from_numpy(v) for k, v in lenet_state().items()}
    torch.save({"epoch": 3, "state_dict": sd}, tmp_path / "ck.pt")
    weights, report = import_weights(almc.load(LENET), tmp_path / "ck.pt")
    assert report.exact
    np.testing.assert_array_equal(weights["c1.conv.weight"], sd["module.conv1.weight"].numpy())


@pytest.mark.parametrize("name,content,message", [
    ("bad.npz", b"PK\x03\x04 not really a zip", "not a readable .npz archive (BadZipFile: "),
    ("bad.npz", b"", "not a readable .npz archive ("),
    ("bad.pt", b"\x80\x02garbage", "not loadable with torch.load(weights_only=True)"),
    ("bad.onnx", b"\x08\x07\x12garbage\xff\xff", "not a readable ONNX model ("),
])
def test_corrupt_files_are_file_errors(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(FileError) as e:
        read_weights(tmp_path / name)
    assert str(e.value).startswith(f"{tmp_path / name}: error: {message}")


def test_a_single_npy_and_string_arrays_are_refused(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npz").write_bytes((tmp_path / "one.npy").read_bytes())
    with pytest.raises(FileError, match="not a readable .npz archive"):
        read_weights(tmp_path / "one.npz")
    np.savez(tmp_path / "s.npz", names=np.array(["a", "b"]))
    with pytest.raises(FileError, match="array 'names' has dtype <U1, not numbers"):
        read_weights(tmp_path / "s.npz")


# ---- the report ------------------------------------------------------------------------------------

def test_report_names_loaded_mismatched_missing_and_unexpected(tmp_path):
    sd = lenet_state()
    sd["fc3.weight"] = sd["fc3.weight"][:5]
    del sd["conv2.bias"]
    sd["head.weight"] = np.zeros((2, 2), np.float32)
    path = save_npz(tmp_path / "w.npz", sd)
    weights, report = import_weights(almc.load(LENET), path, seed=4)
    assert report.text() == "\n".join([
        f"read 10 arrays from {path} (PyTorch module names for LeNet5)",
        "loaded 8 parameters by name",
        "  shape mismatch, initialised fresh: fc3.weight (almc: logits.weight) is [5, 84] in the file, "
        "[10, 84] in the model",
        "  not in the file, initialised fresh: conv2.bias (almc: c3.conv.bias)",
        "  in the file, not in the model (skipped): head.weight",
    ])
    assert not report.exact
    fresh = almc.load(LENET).initial_weights(4)
    np.testing.assert_array_equal(weights["logits.weight"], fresh["logits.weight"])
    np.testing.assert_array_equal(weights["c3.conv.bias"], fresh["c3.conv.bias"])


def test_batch_norm_maps_and_num_batches_tracked_is_skipped(tmp_path):
    torch.manual_seed(0)
    module = Small()
    with torch.no_grad():
        module.bn.running_mean.uniform_(-1, 1)
        module.bn.running_var.uniform_(0.5, 2)
    path = save_npz(tmp_path / "small.npz", {k: v.numpy() for k, v in module.state_dict().items()})
    weights, report = import_weights(almc.load(BN_MODEL), path, names="pytorch")
    assert report.text() == "\n".join([
        f"read 8 arrays from {path} (PyTorch module names for Small)",
        "loaded 7 parameters by name",
        "  skipped 1 num_batches_tracked buffer (PyTorch's batch-norm step counters; almc keeps none)",
    ])
    assert report.exact
    np.testing.assert_array_equal(weights["x.conv_bn.batchnorm.running_var"], module.bn.running_var.numpy())
    np.testing.assert_array_equal(weights["x.conv_bn.batchnorm.weight"], module.bn.weight.detach().numpy())
    # a model almc has no scheme for by default takes almc's own names only
    _, report = import_weights(almc.load(BN_MODEL), path)
    assert report.scheme == "almc" and not report.match.loaded and len(report.match.fresh) == 7


def test_cli_import_prints_the_report_and_writes_a_checkpoint(tmp_path, capsys):
    path = save_npz(tmp_path / "w.npz", lenet_state())
    ck = tmp_path / "ck.npz"
    assert main(["weights", "import", LENET, str(path), "-o", str(ck)]) == 0
    assert capsys.readouterr().out == (f"read 10 arrays from {path} (PyTorch module names for LeNet5)\n"
                                       f"loaded 10 parameters by name\nwrote checkpoint: {ck}\n")
    weights, state, meta = read_checkpoint(ck)
    assert state == {} and meta["model"] == "LeNet5" and meta["epoch"] == 0
    assert set(weights) == set(almc.load(LENET).initial_weights())
    # the checkpoint is what compile --weights and train --init take
    assert main(["compile", LENET, "--weights", str(ck), "-o", str(tmp_path / "l.onnx")]) == 0
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / "l.onnx").graph.initializer}
    np.testing.assert_array_equal(inits["c5.dense.weight"], lenet_state()["fc1.weight"])


def test_cli_strict_and_nothing_matching(tmp_path, capsys):
    sd = lenet_state()
    del sd["fc3.bias"]
    path = save_npz(tmp_path / "w.npz", sd)
    ck = tmp_path / "ck.npz"
    assert main(["weights", "import", LENET, str(path), "-o", str(ck), "--strict"]) == 1
    out = capsys.readouterr()
    assert "  not in the file, initialised fresh: fc3.bias (almc: logits.bias)" in out.out
    assert out.err == f"{path}: error: does not match LeNet5 exactly (--strict); nothing written\n"
    assert not ck.exists()
    other = save_npz(tmp_path / "other.npz", {"a.weight": np.zeros((2, 2), np.float32)})
    assert main(["weights", "import", LENET, str(other), "-o", str(ck)]) == 1
    out = capsys.readouterr()
    assert out.out.endswith("  in the file, not in the model (skipped): a.weight\n")
    assert out.err == (f"{other}: error: no array matches a parameter of LeNet5 by name and shape "
                       "(PyTorch module names; see --names)\n")
    assert not ck.exists()


def test_cli_errors_and_exit_codes(tmp_path, capsys):
    ck = str(tmp_path / "ck.npz")
    assert main(["weights", "import", LENET, str(tmp_path / "none.npz"), "-o", ck]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'none.npz'}: error: no such file\n"
    (tmp_path / "w.h5").write_bytes(b"")
    assert main(["weights", "import", LENET, str(tmp_path / "w.h5"), "-o", ck]) == 2
    assert capsys.readouterr().err == (f"almc: error: cannot tell the format of {tmp_path / 'w.h5'}: "
                                       "use .npz, .pt / .pth or .onnx\n")
    assert main(["weights", "import", LENET, "w.npz", "-o", ck, "--names", "keras"]) == 2
    assert "invalid choice: 'keras'" in capsys.readouterr().err
    assert main(["weights", "import", LENET, "w.npz"]) == 2  # -o is required
    capsys.readouterr()
    assert main(["weights"]) == 2
    assert capsys.readouterr().err == "almc: error: weights needs a subcommand: import or export\n"
    assert main(["weights", "export", str(tmp_path / "none.npz"), "-o", str(tmp_path / "o.npz")]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'none.npz'}: error: no such checkpoint\n"
    assert main(["weights", "import", LENET, "w.npz", "-o", str(tmp_path / "no" / "ck.npz")]) == 2
    assert capsys.readouterr().err == f"almc: error: the folder {tmp_path / 'no'} does not exist\n"


# ---- export ------------------------------------------------------------------------------------

def test_export_round_trip_through_pytorch_names(tmp_path, capsys):
    sd = lenet_state(3)
    ck, out = tmp_path / "ck.npz", tmp_path / "out.npz"
    assert main(["weights", "import", LENET, str(save_npz(tmp_path / "w.npz", sd)), "-o", str(ck)]) == 0
    assert main(["weights", "export", str(ck), "-o", str(out), "--names", "pytorch", "--alm", LENET]) == 0
    assert capsys.readouterr().out.endswith(f"wrote {out}: 10 arrays under PyTorch module names\n")
    with np.load(out) as z:
        back = {k: z[k] for k in z.files}
    assert list(back) == list(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
    module = LeNet5()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    # almc names (the default): the checkpoint's parameters as they are
    assert main(["weights", "export", str(ck), "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: 10 arrays under almc names\n"
    with np.load(out) as z:
        assert list(z.files) == list(almc.load(LENET).initial_weights())


def test_export_torchvision_names_load_into_a_strict_torch_module(tmp_path, capsys):
    from test_parity import randomise, resnet18

    torch.manual_seed(0)
    module = randomise(resnet18(classes=10))
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    alm = str(MODELS / "resnet18.alm")
    ck, out = tmp_path / "ck.npz", tmp_path / "out.npz"
    assert main(["weights", "import", alm, "-D", "classes=10", str(save_npz(tmp_path / "w.npz", sd)),
                 "-o", str(ck)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "loaded 102 parameters by name",
        "  skipped 20 num_batches_tracked buffers (PyTorch's batch-norm step counters; almc keeps none)",
        f"wrote checkpoint: {ck}"]
    assert main(["weights", "export", str(ck), "-o", str(out), "--names", "torchvision", "--alm", alm,
                 "-D", "classes=10"]) == 0
    with np.load(out) as z:
        back = {k: z[k] for k in z.files}
    assert set(back) == {k for k in sd if not k.endswith("num_batches_tracked")}
    fresh = resnet18(classes=10)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    for k, v in fresh.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(v.numpy(), sd[k])


def test_export_needs_the_model_for_other_names_and_checks_it(tmp_path, capsys):
    ck, out = tmp_path / "ck.npz", str(tmp_path / "out.npz")
    assert main(["weights", "import", LENET, str(save_npz(tmp_path / "w.npz", lenet_state())), "-o", str(ck)]) == 0
    capsys.readouterr()
    assert main(["weights", "export", str(ck), "-o", out, "--names", "torchvision"]) == 2
    assert capsys.readouterr().err == ("almc: error: --names torchvision needs the model the checkpoint belongs "
                                       "to: --alm FILE.alm\n")
    assert main(["weights", "export", str(ck), "-o", out, "--names", "pytorch", "--alm",
                 str(MODELS / "mlp.alm")]) == 1
    assert capsys.readouterr().err == f"{ck}: error: saved from model LeNet5, not MLP\n"
    with pytest.raises(UsageError, match="--names torchvision needs the model"):
        export_weights({}, None, "torchvision")


# ---- the name schemes ------------------------------------------------------------------------------

def test_auto_scheme_per_model():
    expected = {"alexnet": "torchvision", "vgg16": "torchvision", "googlenet": "torchvision",
                "resnet18": "torchvision", "resnet50": "torchvision", "vit_b_16": "torchvision",
                "efficientnet_b0": "torchvision", "vit_digits": "torchvision", "c3d": "c3d", "unet": "pytorch",
                "lenet": "pytorch", "mlp": "pytorch", "rnn": "pytorch", "lstm": "pytorch", "gru": "pytorch",
                "perceptron": "pytorch", "logistic": "pytorch", "linear_svm": "pytorch", "ridge": "pytorch"}
    from almc.naming import resolve_scheme

    assert {p.stem for p in MODELS.glob("*.alm")} == set(expected)
    for name, scheme in expected.items():
        assert resolve_scheme(almc.load(MODELS / f"{name}.alm").graph) == scheme, name


def test_names_are_derived_from_the_graph():
    # a deeper MLP and stacked LSTMs get their names from the same rules
    mlp = almc.load(MODELS / "mlp.alm", hidden=(32, 16, 8))
    assert list(name_map(mlp.graph).values()) == [f"fc{i}.{p}" for i in range(1, 5) for p in ("weight", "bias")]
    lstm = almc.load(MODELS / "lstm.alm", layers=3, hidden=8)
    assert list(name_map(lstm.graph).values()) == [
        f"lstm.{p}_l{j}" for j in range(3) for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ] + ["fc.weight", "fc.bias"]
    assert list(name_map(almc.load(MODELS / "ridge.alm").graph).values()) == ["weight", "bias"]
    c3d = name_map(almc.load(MODELS / "c3d.alm").graph)
    assert [v for v in c3d.values() if v.endswith("weight")] == [
        "conv1.weight", "conv2.weight", "conv3a.weight", "conv3b.weight", "conv4a.weight", "conv4b.weight",
        "conv5a.weight", "conv5b.weight", "fc6.weight", "fc7.weight", "fc8.weight"]
    resnet = name_map(almc.load(MODELS / "resnet50.alm").graph)
    assert resnet["layer2/x/unit5/x/conv3.weight"] == "layer3.5.bn3.weight"
    assert resnet["layer1/x/unit0/x.shortcut.conv_bn.batchnorm.running_var"] == "layer2.0.downsample.1.running_var"
    assert name_map(almc.load(MODELS / "lenet.alm").graph, "almc")["c1.conv.weight"] == "c1.conv.weight"
    with pytest.raises(UsageError, match="unknown name scheme 'keras'"):
        name_map(mlp.graph, "keras")
