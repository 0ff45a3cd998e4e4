"""almc predict on image files: read as almc train read its data (grey, the data's size and range,
the data's polarity), recorded in checkpoints and in the exported model's metadata."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import onnx
import pytest
from helpers import trained_folder
from test_evaluate import MODEL, softmax

import almc
from almc.cli import main
from almc.train import TrainOptions, prepare_data

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_folder(tmp_path_factory, "images", MODEL, "--out", "{d}/net.onnx")


def digits(trained, n=10):
    m = almc.load(trained / "net.alm")
    m.load_weights(trained / "ck" / "last.npz")
    _, xs, ys = prepare_data(m.graph, m.graph.train, TrainOptions())
    return m, xs[2][:n], ys[2][:n]


def printed(out: str) -> list[tuple[str, list[tuple[int, float]]]]:
    rows = []
    for line in out.splitlines():
        if line.startswith("wrote"):
            continue
        path, _, top = line.partition("[0]: ")
        rows.append((path, [(int(c.split()[0]), float(c.split()[1].strip("()"))) for c in top.split(", ")]))
    return rows


def test_the_record_is_in_the_checkpoint_and_the_onnx_file(trained):
    want = {"dataset": "digits", "size": [8, 8], "range": [0.0, 1.0], "background": "dark"}
    meta = {p.key: p.value for p in onnx.load(str(trained / "net.onnx")).metadata_props}
    assert json.loads(meta["almc.data"]) == want
    m = almc.load(trained / "net.alm")
    m.load_weights(trained / "ck" / "last.npz")
    assert m.data_record == want


@pytest.mark.parametrize("source", ["alm", "onnx"])
def test_an_image_of_the_datas_size_gives_the_probabilities_of_its_pixels(trained, capsys, source):
    m, x, _ = digits(trained, 4)
    paths = []
    for i, img in enumerate(x):
        pixels = np.round(img[0] * 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(trained / f"d{i}.png")  # as MNIST: light ink on dark
        Image.fromarray(255 - pixels, "L").save(trained / f"paper{i}.png")  # dark ink on light paper
        paths += [trained / f"d{i}.png", trained / f"paper{i}.png"]
    argv = [trained / "net.onnx"] if source == "onnx" else [trained / "net.alm", "--weights", trained / "ck" / "last.npz"]
    capsys.readouterr()
    assert main(["predict", *map(str, argv), *map(str, paths), "--top", "3"]) == 0
    out = capsys.readouterr()
    got = printed(out.out)
    quantised = np.round(x * 255) / 255  # what the PNG holds
    probs = softmax(m.run(quantised)["logits"].astype(np.float64))
    for i, p in enumerate(probs):
        top = [(int(c), round(float(p[c]), 4)) for c in np.argsort(-p)[:3]]
        assert got[2 * i] == (str(trained / f"d{i}.png"), top)
        assert got[2 * i + 1] == (str(trained / f"paper{i}.png"), top)  # inverted back
        assert (f"almc: note: {trained / f'paper{i}.png'}: inverted: its background is light, the training "
                "images' (digits) dark (--invert no keeps it)") in out.err
    assert "d0.png: inverted" not in out.err
    assert main(["predict", *map(str, argv), str(trained / "paper0.png"), "--invert", "no"]) == 0
    p = softmax(m.run(1 - quantised[:1])["logits"].astype(np.float64))[0]
    assert printed(capsys.readouterr().out)[0][1][0] == (int(np.argmax(p)), round(float(p.max()), 4))


def test_larger_rgb_and_transparent_drawings_are_read_as_the_small_grey_ones(trained, capsys):
    m, x, y = digits(trained, 20)
    folder = trained / "drawn"
    folder.mkdir()
    for i, img in enumerate(x):
        ink = np.round(img[0] * 255).astype(np.uint8)
        big = np.kron(ink, np.ones((6, 6), np.uint8))  # a 48x48 drawing of the 8x8 digit
        if i % 2:  # black ink on a transparent background
            rgba = np.zeros((48, 48, 4), np.uint8)
            rgba[..., 3] = big
            Image.fromarray(rgba, "RGBA").save(folder / f"{i:02d}.png")
        else:  # red-ish ink on white, as JPEG
            rgb = np.stack([255 - big // 2, 255 - big, 255 - big], axis=-1).astype(np.uint8)
            Image.fromarray(rgb, "RGB").save(folder / f"{i:02d}.jpg", quality=95)
    capsys.readouterr()
    assert main(["predict", str(trained / "net.onnx"), str(folder), "--top", "1", "-o", str(trained / "p.csv")]) == 0
    got = printed(capsys.readouterr().out)
    assert [p for p, _ in got] == sorted(str(p) for p in folder.iterdir())
    small = m.run(x)["logits"].argmax(axis=1)
    agree = sum(top[0][0] == s for (_, top), s in zip(got, small))
    assert agree >= 18, (agree, [t[0][0] for _, t in got], small.tolist())
    rows = (trained / "p.csv").read_text().splitlines()
    assert rows[0] == "file,index,class_1,p_1" and len(rows) == 21
    first = folder / "00.jpg"
    before = first.read_bytes()
    assert main(["predict", str(trained / "net.onnx"), str(folder), "-o", str(first)]) == 2  # an input, in a folder
    assert "00.jpg" in capsys.readouterr().err and first.read_bytes() == before


def bomb(path, width, height):
    """A PNG whose header claims width x height pixels, its data a few bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_images_that_cannot_be_read_as_the_data_were(trained, tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    bomb(tmp_path / "bomb.png", 9000, 9000)
    ck = str(trained / "ck" / "last.npz")
    net = str(trained / "net.alm")
    assert main(["predict", str(trained / "net.onnx"), str(tmp_path / "broken.png")]) == 1
    assert f"{tmp_path / 'broken.png'}: error: not a readable image" in capsys.readouterr().err
    assert main(["predict", str(trained / "net.onnx"), str(tmp_path / "bomb.png")]) == 1
    assert (f"{tmp_path / 'bomb.png'}: error: is 9000x9000 pixels: more than the 67,108,864 an input image "
            "may have") in capsys.readouterr().err
    assert main(["predict", net, str(tmp_path / "ok.png")]) == 2  # initial weights: no record
    assert (f"{tmp_path / 'ok.png'} is an image, but Net does not record how the training images were prepared"
            in capsys.readouterr().err)
    plain = tmp_path / "plain.onnx"
    assert main(["compile", net, "-o", str(plain)]) == 0
    assert main(["predict", str(plain), str(tmp_path / "ok.png")]) == 2
    assert f"but {plain} does not record how the training images were prepared" in capsys.readouterr().err
    assert main(["compile", net, "--weights", ck, "-o", str(tmp_path / "w.onnx")]) == 0  # compile keeps it
    assert main(["predict", str(tmp_path / "w.onnx"), str(tmp_path / "ok.png")]) == 0
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(trained / "net.onnx"), str(tmp_path / "empty")]) == 2
    assert "holds no .npy or image files" in capsys.readouterr().err
