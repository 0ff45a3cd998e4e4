"""almc.data: the shipped digits, .npz and MNIST IDX loading, splits, resizing, batches."""
import gzip
import struct

import numpy as np
import pytest

from almc import data
from almc.errors import FileError

# ---------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    array = np.asarray(array, np.uint8)
    magic = 0x0800 | array.ndim if magic is None else magic
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def make_mnist(folder, n_train=50, n_test=20, side=6, gz=(), seed=1, classes=5, replace=None):
    """Write the four MNIST IDX files; `gz` names the keys to gzip; `replace` maps a key to raw bytes."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % classes,
        "test_images": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "test_labels": np.arange(n_test, dtype=np.uint8) % classes,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in data.MNIST_FILES.items():
        raw = (replace or {}).get(key, None)
        raw = idx_bytes(arrays[key]) if raw is None else raw
        if key in gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


def message(excinfo) -> str:
    return excinfo.value.message


def rows(x, y):
    """The multiset of examples (pixels and label) as sorted rows, to compare splits with the source."""
    table = np.concatenate([x.reshape(len(x), -1), y[:, None].astype(np.float32)], axis=1)
    return table[np.lexsort(table.T[::-1])]


# ---------------------------------------------------------------- the shipped digits


def shipped():
    from importlib import resources

    with resources.files("almc.datasets").joinpath("digits.npz").open("rb") as f:
        with np.load(f) as z:
            return z["images"], z["labels"]


def test_shipped_file_is_the_uci_digits():
    images, labels = shipped()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_shapes_scaling_and_split_sizes():
    for spec in (None, "digits"):
        ds = data.load(spec)
        assert ds.name == "digits" and ds.classes == 10
        assert ds.x_train.shape == (1258, 1, 8, 8)
        assert ds.x_val.shape == (180, 1, 8, 8)  # round(0.1 * 1797)
        assert ds.x_test.shape == (359, 1, 8, 8)  # round(0.2 * 1797)
        for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
            assert x.dtype == np.float32 and y.dtype == np.int64 and len(x) == len(y)
            assert x.min() == 0.0 and x.max() == 1.0
            assert np.allclose(x * 16, np.round(x * 16))  # pixels are k / 16
    assert ds.describe() == "digits: 1,258 train / 180 val / 359 test, 10 classes, examples [1, 8, 8]"


def test_digits_split_preserves_every_example_and_label():
    images, labels = shipped()
    ds = data.load("digits", seed=3)
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    assert np.bincount(y).tolist() == np.bincount(labels).tolist()
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert np.array_equal(rows(x * 16, y), rows(images.astype(np.float32), labels))


def test_digits_split_is_stratified():
    ds = data.load("digits", seed=5)
    _, labels = shipped()
    sizes = np.bincount(labels)
    for y, n in ((ds.y_test, 359), (ds.y_val, 180)):
        expected = sizes * n / len(labels)
        assert np.all(np.abs(np.bincount(y, minlength=10) - expected) <= 1)


def test_digits_split_is_deterministic():
    a, b, c = data.load("digits", seed=7), data.load("digits", seed=7), data.load("digits", seed=8)
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.x_test, c.x_test)
    assert not np.array_equal(a.x_val, c.x_val)


def test_test_split_does_not_depend_on_val_fraction():
    a = data.load("digits", seed=2, val_fraction=0.1)
    b = data.load("digits", seed=2, val_fraction=0.3)
    c = data.load("digits", seed=2, val_fraction=0.0)
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_test, b.y_test)
    assert np.array_equal(a.x_test, c.x_test)
    assert len(b.y_val) == 539 and len(b.y_train) == 899
    assert c.x_val.shape == (0, 1, 8, 8) and len(c.y_train) == 1438


def test_test_fraction_sets_the_test_size():
    ds = data.load("digits", test_fraction=0.5, val_fraction=0.25)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (449, 449, 899)


@pytest.mark.parametrize("val, test", [(-0.1, 0.2), (0.1, 1.0), (0.5, 0.5)])
def test_bad_fractions(val, test):
    with pytest.raises(ValueError, match="must each be in"):
        data.load("digits", val_fraction=val, test_fraction=test)


def test_stratified_order_prefixes():
    labels = np.random.default_rng(0).choice(4, size=1000, p=[0.1, 0.2, 0.3, 0.4])
    order = data.stratified_order(labels, seed=0)
    assert sorted(order.tolist()) == list(range(1000))
    sizes = np.bincount(labels)
    for m in (10, 37, 100, 333, 999):
        counts = np.bincount(labels[order[:m]], minlength=4)
        assert np.all(np.abs(counts - sizes * m / 1000) <= 1), m
    assert np.array_equal(order, data.stratified_order(labels, seed=0))
    assert not np.array_equal(order, data.stratified_order(labels, seed=1))


# ---------------------------------------------------------------- MNIST IDX


@pytest.mark.parametrize("gz", [(), tuple(data.MNIST_FILES), ("train_images", "test_labels")])
def test_mnist_folder(tmp_path, gz):
    arrays = make_mnist(tmp_path / "mnist", gz=gz)
    ds = data.load(tmp_path / "mnist", seed=0)
    assert ds.name == str(tmp_path / "mnist") and ds.classes == 5
    assert ds.x_train.shape == (45, 1, 6, 6) and ds.x_val.shape == (5, 1, 6, 6)
    assert ds.x_test.shape == (20, 1, 6, 6) and ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int64
    # the test set is the file's, in its order, scaled by 1/255
    assert np.array_equal(ds.x_test[:, 0], arrays["test_images"].astype(np.float32) / 255)
    assert np.array_equal(ds.y_test, arrays["test_labels"])
    x = np.concatenate([ds.x_train, ds.x_val])
    y = np.concatenate([ds.y_train, ds.y_val])
    assert np.array_equal(rows(np.round(x * 255), y), rows(arrays["train_images"].astype(np.float32),
                                                             arrays["train_labels"]))
    assert np.bincount(ds.y_val).tolist() == [1] * 5  # stratified: one of each class


def test_mnist_prefix_and_seed(tmp_path):
    make_mnist(tmp_path / "m")
    a = data.load(f"mnist:{tmp_path / 'm'}", seed=4)
    b = data.load(str(tmp_path / "m"), seed=4)
    c = data.load(str(tmp_path / "m"), seed=5)
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_val, c.x_val)
    assert np.array_equal(a.x_test, c.x_test)
    assert len(data.load(tmp_path / "m", val_fraction=0.2).y_val) == 10


def test_mnist_pixel_scaling(tmp_path):
    images = np.array([[[0, 51], [255, 102]]] * 4, np.uint8)
    replace = {"train_images": idx_bytes(images), "train_labels": idx_bytes(np.zeros(4)),
               "test_images": idx_bytes(images[:1]), "test_labels": idx_bytes(np.zeros(1))}
    make_mnist(tmp_path, replace=replace)
    ds = data.load(tmp_path, val_fraction=0)
    assert np.allclose(ds.x_test[0, 0], [[0, 0.2], [1, 0.4]]) and ds.x_test.max() == 1.0


def test_mnist_missing_file(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert e.value.path == str(tmp_path)
    assert message(e) == (f"missing MNIST file train-labels-idx1-ubyte (looked for "
                          f"{tmp_path}/train-labels-idx1-ubyte and {tmp_path}/train-labels-idx1-ubyte.gz)")
    assert str(e.value) == f"{tmp_path}: error: {message(e)}"


def test_mnist_empty_folder_names_the_first_file(tmp_path):
    with pytest.raises(FileError) as e:
        data.load(f"mnist:{tmp_path}")
    assert message(e).startswith("missing MNIST file train-images-idx3-ubyte (looked for")


def test_mnist_truncated(tmp_path):
    raw = idx_bytes(np.zeros((50, 6, 6)))
    make_mnist(tmp_path, replace={"train_images": raw[:-100]})
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert e.value.path == str(tmp_path / "train-images-idx3-ubyte")
    assert message(e) == "truncated IDX file: expected 1,816 bytes, found 1,716"


def test_mnist_truncated_header(tmp_path):
    make_mnist(tmp_path, replace={"test_labels": b"\x00\x00\x08\x01\x00"})
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert message(e) == "truncated IDX file: expected at least 8 bytes, found 5"
    make_mnist(tmp_path, replace={"test_labels": b"\x00\x00"})
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert message(e) == "truncated IDX file: expected at least 4 bytes, found 2"


def test_mnist_trailing_bytes(tmp_path):
    make_mnist(tmp_path, replace={"test_labels": idx_bytes(np.zeros(20)) + b"\x00"})
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert message(e) == "IDX file longer than its header says: expected 28 bytes, found 29"


def test_mnist_bad_magic(tmp_path):
    make_mnist(tmp_path, replace={"train_images": idx_bytes(np.zeros(50))})  # a labels file
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert e.value.path == str(tmp_path / "train-images-idx3-ubyte")
    assert message(e) == ("bad magic number 0x00000801: expected 0x00000803 "
                          "(an IDX file of unsigned bytes with 3 dimensions (images))")
    make_mnist(tmp_path, replace={"train_labels": idx_bytes(np.zeros((50, 1, 1)))})
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert message(e) == ("bad magic number 0x00000803: expected 0x00000801 "
                          "(an IDX file of unsigned bytes with 1 dimension (labels))")


def test_mnist_gzipped_without_gz_name(tmp_path):
    make_mnist(tmp_path, replace={"test_labels": gzip.compress(idx_bytes(np.zeros(20)))})
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert message(e).startswith("bad magic number 0x1f8b08")
    assert message(e).endswith("; it looks gzip-compressed: name it .gz")


def test_mnist_count_mismatch(tmp_path):
    make_mnist(tmp_path, replace={"train_labels": idx_bytes(np.zeros(49))})
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert e.value.path == str(tmp_path / "train-labels-idx1-ubyte")
    assert message(e) == "49 labels, but train-images-idx3-ubyte holds 50 images"


def test_mnist_gz_that_is_not_gzip(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(idx_bytes(np.zeros((20, 6, 6))))
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert e.value.path == str(tmp_path / "t10k-images-idx3-ubyte.gz")
    assert message(e) == "not a gzip file (named .gz, but it does not start with the gzip signature 1f 8b)"


def test_mnist_damaged_gzip(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(20)))[:-12])
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert message(e).startswith("damaged gzip data (")


def test_mnist_image_sizes_differ(tmp_path):
    make_mnist(tmp_path, replace={"test_images": idx_bytes(np.zeros((20, 5, 6)))})
    with pytest.raises(FileError) as e:
        data.load(tmp_path)
    assert message(e) == "images are 5x6, but the training images are 6x6"


def test_missing_paths(tmp_path):
    with pytest.raises(FileError) as e:
        data.load(tmp_path / "nope.npz")
    assert message(e) == ("no such file or folder (expected 'digits', a .npz file, "
                          "or a folder of MNIST IDX files)")
    with pytest.raises(FileError) as e:
        data.load(f"mnist:{tmp_path / 'nope'}")
    assert e.value.path == str(tmp_path / "nope")
    assert message(e) == "no such folder (mnist:DIR names a folder holding MNIST's IDX files)"


# ---------------------------------------------------------------- npz


def npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def small(n=40, shape=(5, 5), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape)).astype(dtype), (np.arange(n) % 4).astype(np.int32)


def test_npz_uint8_images_are_scaled(tmp_path):
    x, y = small()
    xt, yt = small(10, seed=1)
    ds = data.load(npz(tmp_path, x_train=x, y_train=y, x_test=xt, y_test=yt), seed=0)
    assert ds.x_train.shape == (36, 1, 5, 5) and ds.x_val.shape == (4, 1, 5, 5)
    assert ds.x_test.shape == (10, 1, 5, 5) and ds.classes == 4
    assert ds.x_test.dtype == np.float32 and ds.y_test.dtype == np.int64
    assert np.array_equal(ds.x_test[:, 0], xt.astype(np.float32) / 255)
    assert np.bincount(ds.y_val).tolist() == [1, 1, 1, 1]
    assert np.array_equal(rows(np.round(np.concatenate([ds.x_train, ds.x_val]) * 255),
                               np.concatenate([ds.y_train, ds.y_val])),
                          rows(x.astype(np.float32), y))


def test_npz_float_images_and_given_validation(tmp_path):
    x, y = small(20, (1, 4, 4), np.float32)
    x /= 255
    path = npz(tmp_path, x_train=x, y_train=y, x_val=x[:6], y_val=y[:6], x_test=x[:3], y_test=y[:3] + 5)
    ds = data.load(path, val_fraction=0.5)
    assert np.array_equal(ds.x_train, x) and np.array_equal(ds.x_val, x[:6])  # not rescaled, not re-split
    assert ds.classes == 8


def test_npz_flat_features(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 7))
    ds = data.load(npz(tmp_path, x_train=x, y_train=np.zeros(30, np.int64), x_test=x[:5],
                       y_test=np.ones(5, np.uint8)), val_fraction=0.2)
    assert ds.x_train.shape == (24, 7) and ds.x_val.shape == (6, 7) and ds.classes == 2
    assert data.fit_input(ds.x_test, (7,)).shape == (5, 7)


def test_npz_missing_key(tmp_path):
    x, y = small()
    path = npz(tmp_path, x_train=x, y_train=y, x_test=x)
    with pytest.raises(FileError) as e:
        data.load(path)
    assert e.value.path == str(path)
    assert message(e) == "missing array 'y_test' (the archive holds: x_train, y_train, x_test)"
    path = npz(tmp_path, x_train=x, y_train=y, x_test=x, y_test=y, x_val=x)
    with pytest.raises(FileError) as e:
        data.load(path)
    assert message(e) == "missing array 'y_val' (the archive holds: x_train, y_train, x_test, y_test, x_val)"


def test_npz_length_mismatch(tmp_path):
    x, y = small()
    with pytest.raises(FileError) as e:
        data.load(npz(tmp_path, x_train=x, y_train=y[:-1], x_test=x, y_test=y))
    assert message(e) == "x_train has 40 examples but y_train has 39 labels"


@pytest.mark.parametrize("shape", [(40,), (40, 3, 5, 5), (40, 1, 1, 5, 5)])
def test_npz_wrong_dimensions(tmp_path, shape):
    _, y = small()
    x = np.zeros(shape, np.float32)
    with pytest.raises(FileError) as e:
        data.load(npz(tmp_path, x_train=x, y_train=y, x_test=x, y_test=y))
    dims = ", ".join(map(str, shape))
    assert message(e) == (f"x_train has shape [{dims}]: expected grey images [n, h, w] "
                          "or [n, 1, h, w], or flat features [n, d]")


def test_npz_test_examples_differ_from_train(tmp_path):
    x, y = small()
    with pytest.raises(FileError) as e:
        data.load(npz(tmp_path, x_train=x, y_train=y, x_test=x[:, :4], y_test=y))
    assert message(e) == "x_test examples are [1, 4, 5] but x_train examples are [1, 5, 5]"


def test_npz_non_integer_labels(tmp_path):
    x, y = small()
    with pytest.raises(FileError) as e:
        data.load(npz(tmp_path, x_train=x, y_train=y.astype(np.float32), x_test=x, y_test=y))
    assert message(e) == "y_train has dtype float32: labels must be integers (class indices 0, 1, 2, ...)"


def test_npz_one_hot_labels(tmp_path):
    x, y = small()
    with pytest.raises(FileError) as e:
        data.load(npz(tmp_path, x_train=x, y_train=y, x_test=x, y_test=np.eye(4, dtype=np.int64)[y]))
    assert message(e) == "y_test has shape [40, 4]: expected one class index per example, shape [n]"


def test_npz_negative_labels(tmp_path):
    x, y = small()
    with pytest.raises(FileError) as e:
        data.load(npz(tmp_path, x_train=x, y_train=y - 1, x_test=x, y_test=y))
    assert message(e) == "y_train has a negative label (-1): labels must be class indices 0, 1, 2, ..."


def test_npz_pickled_object_array(tmp_path):
    x, y = small()
    objects = np.array([{"a": 1}] * 40, dtype=object)
    path = tmp_path / "p.npz"
    np.savez(path, x_train=x, y_train=objects, x_test=x, y_test=y)
    with pytest.raises(FileError) as e:
        data.load(path)
    assert message(e) == ("array 'y_train' holds Python objects (a pickled object array), "
                          "which almc does not load: save numeric arrays")


def test_npz_bad_values(tmp_path):
    x, y = small(dtype=np.float32)
    x[3, 2, 2] = np.nan
    with pytest.raises(FileError) as e:
        data.load(npz(tmp_path, x_train=x, y_train=y, x_test=x, y_test=y))
    assert message(e) == "x_train contains NaN or infinite values"
    with pytest.raises(FileError) as e:
        data.load(npz(tmp_path, x_train=np.array([["a"]] * 40), y_train=y, x_test=x, y_test=y))
    assert message(e) == "x_train has dtype <U1: expected numbers (uint8 pixels or floats)"


def test_npz_not_an_archive(tmp_path):
    x, y = small()
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(FileError) as e:
        data.load(tmp_path / "x.npy")
    assert message(e) == ("a single array (.npy), expected an .npz archive holding "
                          "x_train, y_train, x_test, y_test (numpy.savez)")
    (tmp_path / "t.npz").write_text("hello")
    with pytest.raises(FileError) as e:
        data.load(tmp_path / "t.npz")
    assert message(e) == ("not an .npz archive: expected a NumPy .npz file holding "
                          "x_train, y_train, x_test, y_test (numpy.savez)")
    whole = npz(tmp_path, "w.npz", x_train=x, y_train=y, x_test=x, y_test=y).read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(FileError) as e:
        data.load(tmp_path / "cut.npz")
    assert message(e).startswith("not a readable .npz archive (")


def test_npz_empty_train(tmp_path):
    x, y = small()
    with pytest.raises(FileError) as e:
        data.load(npz(tmp_path, x_train=x[:0], y_train=y[:0], x_test=x, y_test=y))
    assert message(e) == "x_train is empty"
    with pytest.raises(FileError) as e:
        data.load(npz(tmp_path, x_train=x[:1], y_train=y[:1], x_test=x, y_test=y), val_fraction=0.6)
    assert message(e) == "only 1 training example: too few to carve a validation set of 0.6 from them"


# ---------------------------------------------------------------- resize


def naive_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear, align_corners=False, one output pixel at a time (PyTorch's source-index rule)."""
    in_h, in_w = img.shape

    def source(i, n_in, n_out):
        s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(int(s), n_in - 1)
        return lo, min(lo + 1, n_in - 1), s - lo

    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        y0, y1, fy = source(i, in_h, out_h)
        for j in range(out_w):
            x0, x1, fx = source(j, in_w, out_w)
            top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
            bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return out


def test_resize_by_hand():
    x = np.array([[0, 4], [8, 12]], np.float32)[None, None]
    expected = [[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]]
    assert np.array_equal(data.resize(x, 4, 4)[0, 0], expected)
    # 8 -> 16: output pixel 1 reads source 0.25, pixel 2 source 0.75, the ends clamp
    ramp = np.arange(8, dtype=np.float32)[None, None, None]
    assert np.allclose(data.resize(ramp, 1, 16)[0, 0, 0],
                       [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4.25, 4.75, 5.25, 5.75,
                        6.25, 6.75, 7])


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (5, 3), (8, 8), (28, 11), (1, 1)])
def test_resize_against_naive(size):
    img = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    got = data.resize(img[None, None], *size)
    assert got.shape == (1, 1, *size) and got.dtype == np.float32
    assert np.allclose(got[0, 0], naive_resize(img, *size), atol=1e-6)


@pytest.mark.parametrize("size", [(16, 16), (3, 40), (1, 1)])
def test_resize_constant_stays_constant(size):
    x = np.full((3, 1, 8, 8), 0.375, np.float32)
    assert np.allclose(data.resize(x, *size), 0.375, atol=1e-7)


def test_resize_linear_ramp_stays_linear():
    i, j = np.meshgrid(np.arange(32), np.arange(24), indexing="ij")
    ramp = (0.5 * i + 0.25 * j).astype(np.float32)[None, None]
    # downsampling never clamps: output pixel k reads source (k + 0.5) * scale - 0.5
    si = (np.arange(8) + 0.5) * 4 - 0.5
    sj = (np.arange(6) + 0.5) * 4 - 0.5
    assert np.allclose(data.resize(ramp, 8, 6)[0, 0], 0.5 * si[:, None] + 0.25 * sj[None, :], atol=1e-5)
    # upsampling: linear inside, clamped to the edge pixels outside
    up = data.resize(ramp[..., :8, :8], 16, 16)[0, 0]
    s = np.clip((np.arange(16) + 0.5) / 2 - 0.5, 0, 7)
    assert np.allclose(up, 0.5 * s[:, None] + 0.25 * s[None, :], atol=1e-6)


def test_resize_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).random((4, 1, 8, 8)).astype(np.float32)
    for size in ((16, 16), (32, 32), (5, 7), (28, 28)):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                                              align_corners=False).numpy()
        assert np.allclose(data.resize(x, *size), ref, atol=1e-6)


# ---------------------------------------------------------------- fit_input


def images(n=6, h=8, w=8):
    return np.random.default_rng(0).random((n, 1, h, w)).astype(np.float32)


def test_fit_input_images():
    x = images()
    assert np.array_equal(data.fit_input(x, (1, 8, 8)), x)
    out = data.fit_input(x, (1, 32, 32))
    assert out.shape == (6, 1, 32, 32) and out.dtype == np.float32
    assert np.allclose(out[2, 0], naive_resize(x[2, 0], 32, 32), atol=1e-6)
    rgb = data.fit_input(x, (3, 16, 16))
    assert rgb.shape == (6, 3, 16, 16)
    assert np.array_equal(rgb[:, 0], rgb[:, 2]) and np.array_equal(rgb[:, :1], data.fit_input(x, (1, 16, 16)))


def test_fit_input_flat():
    x = images()
    assert np.array_equal(data.fit_input(x, (64,)), x.reshape(6, 64))
    mnist = data.fit_input(x, (784,))
    assert mnist.shape == (6, 784)
    assert np.array_equal(mnist, data.resize(x, 28, 28).reshape(6, 784))
    wide = images(h=4, w=8)
    assert np.array_equal(data.fit_input(wide, (32,)), wide.reshape(6, 32))  # h * w: no resizing


def test_fit_input_sequence():
    x = images()
    out = data.fit_input(x, (28, 28))
    assert out.shape == (6, 28, 28)
    assert np.array_equal(out, data.resize(x, 28, 28)[:, 0])
    assert np.array_equal(data.fit_input(x, (8, 8)), x[:, 0])


def test_fit_input_symbolic_dims():
    x = images()
    assert data.fit_input(x, ("T", 16)).shape == (6, 8, 16)
    assert data.fit_input(x, (1, "H", "W")).shape == (6, 1, 8, 8)
    assert data.fit_input(x, ("F",)).shape == (6, 64)
    assert data.fit_input(x, (np.int64(1), np.int64(4), np.int64(4))).shape == (6, 1, 4, 4)


def test_fit_input_flat_data():
    flat = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    assert np.array_equal(data.fit_input(flat, (64,)), flat)
    assert np.array_equal(data.fit_input(flat, (1, 8, 8)), flat.reshape(5, 1, 8, 8))  # a square image
    assert data.fit_input(flat, (1, 16, 16)).shape == (5, 1, 16, 16)


def test_fit_input_no_mapping():
    x = images()
    with pytest.raises(ValueError) as e:
        data.fit_input(x, (50,))
    assert str(e.value) == ("the model input takes 50 features per example, which is neither 8x8 = 64 "
                            "(the images flattened) nor a square number of pixels to resize them to")
    with pytest.raises(ValueError) as e:
        data.fit_input(x, (4, 32, 32))
    assert str(e.value) == ("the model input has 4 channels per example ([4, 32, 32]); "
                            "grey image data fits 1 or 3 channels")
    with pytest.raises(ValueError) as e:
        data.fit_input(x, (1, 1, 8, 8))
    assert str(e.value) == ("the model input has 4 dimensions per example ([1, 1, 8, 8]); "
                            "images fit [C, H, W], [T, F] (rows as a sequence) or [F] (flattened)")
    with pytest.raises(ValueError) as e:
        data.fit_input(x, (1, 0, 8))
    assert str(e.value) == "the model input has an empty dimension per example ([1, 0, 8])"
    with pytest.raises(ValueError) as e:
        data.fit_input(np.zeros((5, 7), np.float32), (1, 8, 8))
    assert str(e.value) == ("the data are flat feature vectors of 7, which do not fit a model input "
                            "of [1, 8, 8] per example")


# ---------------------------------------------------------------- batches


def test_batches_in_order():
    x, y = np.arange(10)[:, None] * 1.0, np.arange(10)
    got = list(data.batches(x, y, 4, None))
    assert [len(b) for _, b in got] == [4, 4, 2]
    assert np.array_equal(np.concatenate([b for _, b in got]), y)
    assert [len(b) for _, b in data.batches(x, y, 4, None, drop_last=True)] == [4, 4]
    assert [len(b) for _, b in data.batches(x, y, 5, None, drop_last=True)] == [5, 5]


def test_batches_shuffled_and_deterministic():
    x, y = np.arange(100)[:, None] * 2.0, np.arange(100)

    def order(seed):
        return np.concatenate([yb for _, yb in data.batches(x, y, 32, np.random.default_rng(seed))])

    a = order(0)
    assert sorted(a.tolist()) == list(range(100)) and not np.array_equal(a, y)
    assert np.array_equal(a, order(0)) and not np.array_equal(a, order(1))
    for xb, yb in data.batches(x, y, 32, np.random.default_rng(0)):
        assert np.array_equal(xb[:, 0], 2.0 * yb)  # pairs stay together
    rng = np.random.default_rng(0)
    first, second = order_from(rng, x, y), order_from(rng, x, y)
    assert not np.array_equal(first, second)  # the generator advances: a new order each epoch


def order_from(rng, x, y):
    return np.concatenate([yb for _, yb in data.batches(x, y, 10, rng)])


def test_batches_bad_arguments():
    with pytest.raises(ValueError, match="batch size must be at least 1, got 0"):
        data.batches(np.zeros(3), np.zeros(3), 0, None)
    with pytest.raises(ValueError, match="x has 3 examples but y has 2"):
        data.batches(np.zeros(3), np.zeros(2), 1, None)
