"""Data sets for `almc train`: loading, splitting, fitting to a model's input, batching.

    >>> from almc import data
    >>> ds = data.load("digits", seed=0)        # or None: the digits shipped with almc
    >>> ds.x_train.shape, ds.x_val.shape, ds.x_test.shape
    ((1258, 1, 8, 8), (180, 1, 8, 8), (359, 1, 8, 8))
    >>> data.fit_input(ds.x_test, (1, 32, 32)).shape   # LeNet-5 reads 32x32 images
    (359, 1, 32, 32)

`load` understands three kinds of data:

- ``None`` or ``"digits"``: the UCI handwritten digits (1,797 8x8 images, 10
  classes) shipped in `almc/datasets/digits.npz`; no download needed.
- a ``.npz`` file with arrays ``x_train, y_train, x_test, y_test`` (and
  optionally ``x_val, y_val``), as written by `numpy.savez`.
- a folder holding MNIST's four IDX files (or ``mnist:DIR``), plain or
  ``.gz``; Fashion-MNIST and the other MNIST look-alikes use the same format.

Images come back as float32 in [0, 1], shaped [n, 1, h, w]; flat feature data
[n, d] keeps its shape. Labels come back as int64 class indices 0, 1, 2, ...

**Splits.** Examples are put in one seeded, stratified order (every prefix of
it holds each class in proportion, within one example), and the splits are
consecutive runs of that order: test first, then validation, then training.
The test set therefore depends only on the seed and `test_fraction`, never on
`val_fraction`, so test accuracies stay comparable. Data that comes with its
own test set (npz, MNIST) keeps it; validation, unless given, is carved from
the training set the same way (`val_fraction` of the training examples).

Every problem with a data file raises `FileError(path, message)`.
"""
from __future__ import annotations

import gzip
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import FileError, UsageError, elide
from .files import check_input_file, check_npz


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int

    def image_record(self) -> dict | None:
        """How an image file becomes an example as this data's were, for the exported model's
        metadata (`almc.data`): the images' size, the range their pixels span and whether their
        background is dark (MNIST, the digits) or light. None for feature vectors."""
        x = self.x_train
        if x.ndim != 4 or x.shape[1] != 1 or not len(x):
            return None
        lo, hi = float(x.min()), float(x.max())
        return {"dataset": self.name, "size": [int(x.shape[2]), int(x.shape[3])], "range": [lo, hi],
                "background": "dark" if border_mean(x) < (lo + hi) / 2 else "light"}

    def describe(self) -> str:
        """One line, e.g. 'digits: 1,258 train / 180 val / 359 test, 10 classes, examples [1, 8, 8]'."""
        shape = ", ".join(str(d) for d in self.x_train.shape[1:])
        return (f"{self.name}: {len(self.y_train):,} train / {len(self.y_val):,} val / "
                f"{len(self.y_test):,} test, {self.classes} classes, examples [{shape}]")


def load(spec: str | os.PathLike | None = None, seed: int = 0,
         val_fraction: float = 0.1, test_fraction: float = 0.2) -> Dataset:
    """Load 'digits' (the default), a .npz file, or a folder of MNIST IDX files ('mnist:DIR' too).

    `test_fraction` applies only to data without its own test set (the digits).
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction ({val_fraction:g}) and test_fraction ({test_fraction:g}) "
                         "must each be in [0, 1) and add up to less than 1")
    if spec is None or str(spec) == "digits":
        return _digits(seed, val_fraction, test_fraction)
    text = os.fspath(spec)
    if text.startswith("mnist:"):
        folder = Path(text[len("mnist:"):])
        if not folder.is_dir():
            raise FileError(folder, "no such folder (mnist:DIR names a folder holding MNIST's IDX files)")
        return _mnist(folder, seed, val_fraction)
    path = Path(text)
    if path.is_dir():
        return _mnist(path, seed, val_fraction)
    if not path.exists():
        raise FileError(path, "no such file or folder (expected 'digits', a .npz file, "
                              "or a folder of MNIST IDX files)")
    return _npz(path, seed, val_fraction)


# ---------------------------------------------------------------- splitting

def _count(n: int, fraction: float) -> int:
    return math.floor(n * fraction + 0.5)


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of range(len(labels)) in which every prefix is stratified.

    Shuffle, then give the k-th example (in shuffled order) of a class of size c
    the key (k + 0.5) / c and sort by key: each class is spread evenly along
    the order, so the first m examples hold about m * c / n of every class.
    """
    n = len(labels)
    shuffled = np.random.default_rng(seed).permutation(n)
    _, lab = np.unique(labels[shuffled], return_inverse=True)  # classes numbered 0, 1, ... here
    by_class = np.argsort(lab, kind="stable")
    sizes = np.bincount(lab)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(n, np.int64)
    rank[by_class] = np.arange(n) - starts[lab[by_class]]
    key = (rank + 0.5) / sizes[lab]
    return shuffled[np.argsort(key, kind="stable")]


def _take(x, y, idx):
    idx = np.sort(idx)  # keep the file's order inside each split
    return x[idx], y[idx]


def _carve_val(name, x, y, x_test, y_test, seed, val_fraction) -> Dataset:
    order = stratified_order(y, seed)
    n_val = _count(len(y), val_fraction)
    if n_val >= len(y):
        plural = "s" * (len(y) != 1)
        raise FileError(name, f"only {len(y):,} training example{plural}: too few to carve "
                              f"a validation set of {val_fraction:g} from them")
    x_val, y_val = _take(x, y, order[:n_val])
    x_train, y_train = _take(x, y, order[n_val:])
    classes = int(max(y.max(), y_test.max(initial=0))) + 1
    return Dataset(str(name), x_train, y_train, x_val, y_val, x_test, y_test, classes)


# ---------------------------------------------------------------- digits

def _digits(seed, val_fraction, test_fraction) -> Dataset:
    with resources.files("almc.datasets").joinpath("digits.npz").open("rb") as f:
        with np.load(f, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    x = (images.astype(np.float32) / 16.0)[:, None]  # [1797, 1, 8, 8]
    y = labels.astype(np.int64)
    order = stratified_order(y, seed)
    n_test, n_val = _count(len(y), test_fraction), _count(len(y), val_fraction)
    x_test, y_test = _take(x, y, order[:n_test])
    x_val, y_val = _take(x, y, order[n_test:n_test + n_val])
    x_train, y_train = _take(x, y, order[n_test + n_val:])
    return Dataset("digits", x_train, y_train, x_val, y_val, x_test, y_test, int(y.max()) + 1)


# ---------------------------------------------------------------- npz

_NPZ_KEYS = "x_train, y_train, x_test, y_test"


def _npz(path: Path, seed, val_fraction) -> Dataset:
    check_input_file(path)
    head = _read(path, 6)
    if head.startswith(b"\x93NUMPY"):
        raise FileError(path, f"a single array (.npy), expected an .npz archive holding {_NPZ_KEYS} "
                              "(numpy.savez)")
    if not head.startswith(b"PK"):
        raise FileError(path, f"not an .npz archive: expected a NumPy .npz file holding {_NPZ_KEYS} "
                              "(numpy.savez)")
    arrays = _npz_arrays(path)
    splits = {}
    for part in ("train", "val", "test"):
        if f"x_{part}" in arrays:
            splits[part] = (_npz_images(path, f"x_{part}", arrays[f"x_{part}"]),
                            _npz_labels(path, f"y_{part}", arrays[f"y_{part}"]))
            n, m = len(splits[part][0]), len(splits[part][1])
            if n != m:
                raise FileError(path, f"x_{part} has {n:,} examples but y_{part} has {m:,} labels")
    example = splits["train"][0].shape[1:]
    for part, (x, _) in splits.items():
        if x.shape[1:] != example:
            raise FileError(path, f"x_{part} examples are {_dims(x.shape[1:])} but x_train examples "
                                  f"are {_dims(example)}")
    if len(splits["train"][0]) == 0:
        raise FileError(path, "x_train is empty")
    x_test, y_test = splits["test"]
    if "val" not in splits:
        return _carve_val(path, *splits["train"], x_test, y_test, seed, val_fraction)
    classes = int(max(y.max(initial=0) for _, y in splits.values())) + 1
    return Dataset(str(path), *splits["train"], *splits["val"], x_test, y_test, classes)


_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The archive's x_train, y_train, x_test, y_test (and x_val, y_val when either is there)."""
    check_npz(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except _UNREADABLE as e:
        raise FileError(path, f"not a readable .npz archive ({e})") from None
    with archive:
        present = list(archive.files)
        needed = ["x_train", "y_train", "x_test", "y_test"]
        if "x_val" in present or "y_val" in present:
            needed += ["x_val", "y_val"]
        arrays = {}
        for key in needed:
            if key not in present:
                raise FileError(path, f"missing array '{key}' (the archive holds: "
                                      f"{', '.join(present) or 'nothing'})")
            try:
                arrays[key] = archive[key]
            except _UNREADABLE as e:
                if "allow_pickle" in str(e):
                    raise FileError(path, f"array '{key}' holds Python objects (a pickled object array), "
                                          "which almc does not load: save numeric arrays") from None
                raise FileError(path, f"not a readable .npz archive ({e})") from None
    return arrays


def _dims(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _npz_images(path, key, x: np.ndarray) -> np.ndarray:
    if x.ndim not in (2, 3, 4) or (x.ndim == 4 and x.shape[1] != 1):
        raise FileError(path, f"{key} has shape {_dims(x.shape)}: expected grey images [n, h, w] "
                              "or [n, 1, h, w], or flat features [n, d]")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype.kind in "biuf":
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise FileError(path, f"{key} contains NaN or infinite values")
    else:
        raise FileError(path, f"{key} has dtype {x.dtype}: expected numbers (uint8 pixels or floats)")
    return x[:, None] if x.ndim == 3 else x


def _npz_labels(path, key, y: np.ndarray) -> np.ndarray:
    if y.ndim != 1:
        raise FileError(path, f"{key} has shape {_dims(y.shape)}: expected one class index per "
                              "example, shape [n]")
    if y.dtype.kind not in "iu":
        raise FileError(path, f"{key} has dtype {y.dtype}: labels must be integers "
                              "(class indices 0, 1, 2, ...)")
    if y.size and y.min() < 0:
        raise FileError(path, f"{key} has a negative label ({y.min()}): labels must be class "
                              "indices 0, 1, 2, ...")
    return y.astype(np.int64)


# ---------------------------------------------------------------- MNIST (IDX)

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _mnist(folder: Path, seed, val_fraction) -> Dataset:
    def find(name):
        for candidate in (folder / name, folder / (name + ".gz")):
            if candidate.is_file():
                return candidate
        raise FileError(folder, f"missing MNIST file {name} (looked for {folder / name} "
                                f"and {folder / name}.gz)")

    paths = {key: find(name) for key, name in MNIST_FILES.items()}  # all present before reading any
    parts = {}
    for part in ("train", "test"):
        images = read_idx(paths[f"{part}_images"], ndim=3)
        labels = read_idx(paths[f"{part}_labels"], ndim=1)
        if len(images) != len(labels):
            raise FileError(paths[f"{part}_labels"], f"{len(labels):,} labels, but "
                            f"{paths[f'{part}_images'].name} holds {len(images):,} images")
        parts[part] = (images, labels)
    (x, y), (x_test, y_test) = parts["train"], parts["test"]
    if x.shape[1:] != x_test.shape[1:]:
        raise FileError(paths["test_images"], f"images are {x_test.shape[1]}x{x_test.shape[2]}, but "
                                              f"the training images are {x.shape[1]}x{x.shape[2]}")
    if len(x) == 0:
        raise FileError(paths["train_images"], "holds no images")

    def scale(images):
        return (images.astype(np.float32) / 255.0)[:, None]

    return _carve_val(folder, scale(x), y.astype(np.int64), scale(x_test), y_test.astype(np.int64),
                      seed, val_fraction)


def _read(path: Path, size: int = -1) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as e:
        raise FileError(path, f"cannot read ({e.strerror or e})") from None


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with `ndim` dimensions (gzipped if named .gz)."""
    path = Path(path)
    data = _read(path)
    if path.suffix == ".gz":
        if not data.startswith(b"\x1f\x8b"):
            raise FileError(path, "not a gzip file (named .gz, but it does not start with the "
                                  "gzip signature 1f 8b)")
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise FileError(path, f"damaged gzip data ({e})") from None
    expected_magic = 0x0800 | ndim
    if len(data) < 4:
        raise FileError(path, f"truncated IDX file: expected at least 4 bytes, found {len(data):,}")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        what = {3: "3 dimensions (images)", 1: "1 dimension (labels)"}.get(ndim, f"{ndim} dimensions")
        hint = "; it looks gzip-compressed: name it .gz" if data.startswith(b"\x1f\x8b") else ""
        raise FileError(path, f"bad magic number 0x{magic:08x}: expected 0x{expected_magic:08x} "
                              f"(an IDX file of unsigned bytes with {what}){hint}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FileError(path, f"truncated IDX file: expected at least {header:,} bytes, "
                              f"found {len(data):,}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)
    if len(data) < expected:
        raise FileError(path, f"truncated IDX file: expected {expected:,} bytes, found {len(data):,}")
    if len(data) > expected:
        raise FileError(path, f"IDX file longer than its header says: expected {expected:,} bytes, "
                              f"found {len(data):,}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


# ---------------------------------------------------------------- fitting to a model input

def resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of [..., h, w] to [..., height, width] (align_corners=False, no antialiasing).

    The same numbers as torch.nn.functional.interpolate(mode='bilinear',
    align_corners=False) and ONNX Resize (linear, half_pixel). Bilinear
    interpolation is separable, so it is two small matrix products.
    """
    from .ops.resample import lerp_matrix

    h, w = x.shape[-2:]
    out = x.astype(np.float32, copy=False)
    if height != h:
        out = lerp_matrix(height, h).astype(np.float32) @ out
    if width != w:
        out = out @ lerp_matrix(width, w).astype(np.float32).T
    return np.ascontiguousarray(out)


def fit_input(x: np.ndarray, dims: tuple) -> np.ndarray:
    """Adapt examples x ([n, 1, h, w] images or [n, d] features) to a model input's per-example `dims`.

    `dims` is the input type's shape without the batch; an entry that is not an
    int (a symbolic size) accepts the data's own size.

    - [1, H, W]: resize to H x W;  [3, H, W]: resize and repeat the grey channel.
    - [F]: flatten when F == h * w; else resize to sqrt(F) x sqrt(F) when F is a
      perfect square (64 -> 8x8, 784 -> 28x28), then flatten.
    - [T, F]: a sequence model reading the image row by row: resize to T x F.

    Flat data [n, d] fits [d] as is; when d is a perfect square it is first read
    as a square image. Raises ValueError when there is no sensible mapping.
    """
    shown = _dims(dims)
    dims = tuple(int(d) if isinstance(d, (int, np.integer)) else None for d in dims)
    if any(d is not None and d < 1 for d in dims):
        raise ValueError(f"the model input has an empty dimension per example ({shown})")
    if x.ndim == 2:
        d = x.shape[1]
        if len(dims) == 1 and dims[0] in (d, None):
            return x.astype(np.float32, copy=False)
        side = math.isqrt(d)
        if side * side != d:
            raise ValueError(f"the data are flat feature vectors of {d}, which do not fit a model "
                             f"input of {shown} per example")
        x = x.reshape(len(x), 1, side, side)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected grey images [n, 1, h, w] or features [n, d], got data of "
                         f"shape {_dims(x.shape)}")
    h, w = x.shape[2:]

    def size(d, own):
        return own if d is None else d

    if len(dims) == 3:
        c, hh, ww = size(dims[0], 1), size(dims[1], h), size(dims[2], w)
        if c not in (1, 3):
            raise ValueError(f"the model input has {c} channels per example ({shown}); "
                             "grey image data fits 1 or 3 channels")
        out = resize(x, hh, ww)
        return np.ascontiguousarray(np.repeat(out, 3, axis=1)) if c == 3 else out
    if len(dims) == 2:
        t, f = size(dims[0], h), size(dims[1], w)
        return resize(x, t, f)[:, 0]
    if len(dims) == 1:
        f = dims[0]
        if f is None or f == h * w:
            return np.ascontiguousarray(x.reshape(len(x), h * w), np.float32)
        side = math.isqrt(f)
        if side * side == f:
            return resize(x, side, side).reshape(len(x), f)
        raise ValueError(f"the model input takes {f} features per example, which is neither "
                         f"{h}x{w} = {h * w} (the images flattened) nor a square number "
                         "of pixels to resize them to")
    raise ValueError(f"the model input has {len(dims)} dimensions per example ({shown}); "
                     "images fit [C, H, W], [T, F] (rows as a sequence) or [F] (flattened)")


def border_mean(x: np.ndarray) -> float:
    """The mean of the outermost rows and columns of images [..., h, w]: their background."""
    return float(np.concatenate([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], axis=-1).mean())


# ---------------------------------------------------------------- image files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_IMAGE_PIXELS = 1 << 26  # 64 megapixels: a larger file is refused before it is decoded


def read_image(path: str | os.PathLike, record: dict, invert: str = "auto") -> tuple[np.ndarray, bool]:
    """An image file as one example [1, h, w] prepared as the training data were (`record`, from
    Dataset.image_record): grey (transparency on white), resized to the data's size, pixels mapped
    onto the data's range; inverted when `invert` is "yes", or "auto" and its background is the
    opposite of the data's. Returns (the example, whether it was inverted)."""
    try:
        from PIL import Image
    except ImportError:
        raise UsageError("reading images needs Pillow: pip install 'almc[images]'") from None
    check_input_file(path)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise FileError(path, f"is {im.width}x{im.height} pixels: more than the {MAX_IMAGE_PIXELS:,} "
                                      "an input image may have")
            im.seek(0)  # the first frame of a GIF or TIFF
            if "A" in im.getbands() or "transparency" in im.info:
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            h, w = record["size"]
            grey = im.convert("L").resize((w, h), Image.Resampling.BILINEAR)  # antialiased when shrinking
            x = np.asarray(grey, dtype=np.float32) / 255.0
    except FileError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise FileError(path, f"not a readable image ({elide(str(e), 160)})") from None
    light = border_mean(x) > 0.5
    flip = invert == "yes" or (invert == "auto" and light != (record["background"] == "light"))
    if flip:
        x = 1.0 - x
    lo, hi = record["range"]
    return (lo + x * (hi - lo)).astype(np.float32)[None], flip


# ---------------------------------------------------------------- batches

def batches(x: np.ndarray, y: np.ndarray, batch: int, rng: np.random.Generator | None = None,
            drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (xb, yb) of `batch` examples, shuffled by rng when given (in order otherwise)."""
    if batch < 1:
        raise ValueError(f"batch size must be at least 1, got {batch}")
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)}")
    order = rng.permutation(n) if rng is not None else None
    return _batches(x, y, batch, order, n - n % batch if drop_last else n)


def _batches(x, y, batch, order, stop):
    for start in range(0, stop, batch):
        if order is None:
            yield x[start:start + batch], y[start:start + batch]
        else:
            idx = order[start:start + batch]
            yield x[idx], y[idx]
