"""IDX files (LeCun's format: MNIST, Fashion-MNIST, KMNIST): a directory of the four standard files."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from vaelab.data.images import QUANTISED_NOTE, ImageData, check_labels, images_uint8
from vaelab.errors import VaelabError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
KNOWN_IDX_SETS = ("mnist", "fashion-mnist")
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


def find_idx_set(name: str, download: bool, cache_dir: str) -> Path:
    """The directory holding a known IDX set: Debian's Fashion-MNIST, the cache, or a fresh download."""
    from vaelab import download as dl

    cached = Path(cache_dir).expanduser() / name
    if name == "fashion-mnist" and has_idx_files(DEBIAN_FASHION_MNIST):
        return DEBIAN_FASHION_MNIST
    if has_idx_files(cached):
        return cached
    if download:
        return dl.fetch(name, cached)
    hint = ""
    if name == "fashion-mnist":
        hint = " or install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
    raise VaelabError(f"data set {name!r} is not on this machine: pass --download to fetch it into {cached}{hint}")


def has_idx_files(directory: Path) -> bool:
    return all(_idx_path(directory, stem) is not None for stem in IDX_FILES.values())


def has_any_idx_file(directory: Path) -> bool:
    """Whether a directory is meant as an IDX set (then a missing file is named, not read as an image folder)."""
    return any(_idx_path(directory, stem) is not None for stem in IDX_FILES.values())


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
    """The four standard IDX files of a directory (MNIST, Fashion-MNIST, KMNIST layout), with their own split."""
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
    x_train, rounded_train = images_uint8(arrays["x_train"], str(directory))
    x_test, rounded_test = images_uint8(arrays["x_test"], str(directory))
    return ImageData(
        name=name or directory.name,
        pixels_train=torch.from_numpy(x_train),
        y_train=check_labels(arrays["y_train"], len(x_train), str(directory)),
        pixels_test=torch.from_numpy(x_test),
        y_test=check_labels(arrays["y_test"], len(x_test), str(directory)),
        notes=[f"IDX files in {directory}"] + ([QUANTISED_NOTE] if rounded_train or rounded_test else []),
    )
