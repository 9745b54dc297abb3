"""Pictures: arrays in, PNG files or matplotlib Figures out. Nothing here trains or loads a model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from vaelab.runs import atomic_write_bytes


def image_grid(images: torch.Tensor, ncol: int, pad: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images in [0, 1] into one (rows*(H+pad)+pad, ncol*(W+pad)+pad[, C]) array, padding white."""
    images = images.detach().cpu().clamp(0, 1).numpy()
    n, c, h, w = images.shape
    nrow = -(-n // ncol)
    grid = np.ones((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_image_grid(path: str | Path, images: torch.Tensor, ncol: int, scale: int = 1) -> None:
    """Write an image grid as PNG (grey-level colormap for one channel), atomically; `scale` repeats pixels."""
    import matplotlib.pyplot as plt

    grid = image_grid(images, ncol)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    plt.imsave(buffer, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    atomic_write_bytes(Path(path), buffer.getvalue())
