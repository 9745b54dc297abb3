"""Small IDX data sets written from numpy for the data, download and CLI tests (no committed binary fixtures)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    """LeCun's IDX layout of a uint8 array: 0, 0, type 0x08, ndim, the sizes as big-endian uint32, the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape) + array.tobytes()


def write_idx_set(directory: Path, n_train: int = 64, n_test: int = 32, size: int = 28, gz: bool = True,
                  seed: int = 0) -> dict[str, np.ndarray]:
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
