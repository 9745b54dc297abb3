"""A small flat colour image set without labels, written as an npz for the evaluate and figure tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import run_cli


def write_unlabelled_colour_npz(path: Path, n: int = 160, size: int = 32, seed: int = 0) -> Path:
    """n uint8 RGB images (N, H, W, 3), channels last, and no ``y``: a tinted ramp from light (top) to dark
    (bottom), a way up that a rotation predictor learns in a few steps, under a rectangle of a random colour at a
    random place. 128 training images make one batch of the feature net: 20 steps of training."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(1.0, 0.2, size)[:, None, None]  # (H, 1, 1)
    x = np.empty((n, size, size, 3), dtype=np.float64)
    for i in range(n):
        x[i] = ramp * rng.uniform(0.5, 1.0, size=3)
        top, left = rng.integers(0, size // 2, size=2)
        height, width = rng.integers(size // 4, size // 2, size=2)
        x[i, top : top + height, left : left + width] = rng.uniform(0.0, 1.0, size=3)
    np.savez(path, x=(255 * x).round().astype(np.uint8))
    return path


def train_unlabelled_colour_run(folder: Path) -> Path:
    """A one-epoch VAE with a 2-D latent on write_unlabelled_colour_npz's images, trained by the real command;
    its classifier cache lies in folder/cache."""
    data = write_unlabelled_colour_npz(folder / "colour.npz")
    run = folder / "run"
    done = run_cli(
        "train", "--data", str(data), "--data-cache", str(folder / "cache"), "--model", "vae", "--z-dim", "2",
        "--hidden", "64", "--epochs", "1", "--out", str(run), "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return run
