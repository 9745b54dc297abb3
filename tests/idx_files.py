"""Small IDX data sets written from numpy for the data, download and CLI tests (no committed binary fixtures)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

# IDX type codes of the dtypes the tests write (LeCun's format description).
IDX_TYPE_CODES = {">u1": 0x08, ">i4": 0x0C}
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray, dtype: str = ">u1") -> bytes:
    """LeCun's IDX layout: 0, 0, the type code, ndim, the sizes as big-endian uint32, the big-endian items."""
    array = np.ascontiguousarray(array, dtype=dtype)
    return idx_header(IDX_TYPE_CODES[dtype], array.shape) + array.tobytes()


def idx_header(type_code: int, shape: tuple[int, ...]) -> bytes:
    """An IDX header alone, for forged headers whose sizes need not match any data."""
    return struct.pack(f">BBBB{len(shape)}I", 0, 0, type_code, len(shape), *shape)


def write_idx_set(
    directory: Path, n_train: int = 64, n_test: int = 32, size: int = 28, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the four standard files (random uint8 images, labels cycling 0..9) and return the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(IDX_STEMS, arrays.values()):
        payload = idx_bytes(array)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(payload, mtime=0))
        else:
            (directory / stem).write_bytes(payload)
    return arrays
