"""Image folders and CIFAR binary batches written from numpy for the data tests (no committed binary fixtures)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_image(path: Path, pixels: np.ndarray, **save_options) -> np.ndarray:
    """Save uint8 (H, W) or (H, W, 3) pixels with Pillow, the format chosen by the suffix; returns them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_options)
    return pixels


def write_class_folders(
    root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 10), colour: bool = True, seed: int = 0
) -> dict[str, list[np.ndarray]]:
    """PNGs of random pixels, counts[class] of them in each class sub-folder; returns each class's pixels (H, W[, 3])
    in file-name order."""
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if colour else size
    return {
        name: [write_image(root / name / f"{i:03d}.png", rng.integers(0, 256, shape, np.uint8)) for i in range(n)]
        for name, n in counts.items()
    }


def cifar_records(images: np.ndarray, labels: np.ndarray, coarse: np.ndarray | None = None) -> bytes:
    """CIFAR's binary layout: per record the (coarse and) label byte(s), then the R, G and B 32x32 planes."""
    columns = [labels[:, None]] if coarse is None else [coarse[:, None], labels[:, None]]
    return np.concatenate([*columns, images.reshape(len(images), -1)], axis=1).astype(np.uint8).tobytes()


def write_cifar10(folder: Path, per_batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """A small cifar-10-batches-bin folder: five training batches and a test batch of `per_batch` records each,
    with batches.meta.txt; returns x_train (N, 3, 32, 32), y_train, x_test, y_test in file order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = []
    for name in CIFAR10_BATCHES:
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), np.uint8)
        labels = rng.integers(0, 10, per_batch).astype(np.uint8)
        (folder / name).write_bytes(cifar_records(images, labels))
        batches.append((images, labels))
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    return {
        "x_train": np.concatenate([b[0] for b in batches[:5]]),
        "y_train": np.concatenate([b[1] for b in batches[:5]]),
        "x_test": batches[5][0],
        "y_test": batches[5][1],
    }


def write_cifar100(folder: Path, n_train: int = 6, n_test: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """A small cifar-100-binary folder (train.bin, test.bin, fine_label_names.txt); returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), np.uint8)
        fine, coarse = rng.integers(0, 100, n).astype(np.uint8), rng.integers(0, 20, n).astype(np.uint8)
        (folder / f"{split}.bin").write_bytes(cifar_records(images, fine, coarse))
        arrays[f"x_{split}"], arrays[f"y_{split}"] = images, fine
    (folder / "fine_label_names.txt").write_text("\n".join(f"class{i}" for i in range(100)) + "\n")
    return arrays


def tar_gz(path: Path, folder: Path) -> Path:
    """`folder` packed as <its name>/<file> members of a .tar.gz at `path`, as CIFAR's archives are."""
    with tarfile.open(path, "w:gz") as archive:
        for file in sorted(folder.iterdir()):
            payload = file.read_bytes()
            info = tarfile.TarInfo(f"{folder.name}/{file.name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path
