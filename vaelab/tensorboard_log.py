"""TensorBoard event files for a run (`vaelab train --tensorboard DIR`, the optional extra `vaelab[tensorboard]`).

Per epoch: every number of the history row as a scalar (train_loss -> ``train/loss``, test_kl -> ``test/kl``,
beta -> ``run/beta``) and two image grids, samples from the prior and test images above their reconstructions.
The epoch is TensorBoard's step, so vaelab's runs line up with the user's other runs by epoch.

Event files are the one thing vaelab writes without vaelab.atomic: TensorBoard reads them while they grow, so they
are appended to. torch.utils.tensorboard names each one uniquely (time, host, pid), so no file is ever replaced.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vaelab.errors import VaelabError
from vaelab.plots import image_grid, tile_scale

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

COLUMNS = 8  # images per row of a grid
SPLITS = ("train", "test")  # row keys "train_x" and "test_x" become tags "train/x" and "test/x"


def open_writer(log_dir: str | Path, first_epoch: int = 1) -> SummaryWriter:
    """A SummaryWriter on `log_dir`. A resumed run passes its first new epoch: events that an interrupted run had
    logged from that epoch on are then dropped by TensorBoard (purge_step), so each epoch shows once."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VaelabError(
            "--tensorboard needs the tensorboard package: pip install 'vaelab[tensorboard]' or pip install tensorboard"
        ) from None
    return SummaryWriter(str(log_dir), purge_step=first_epoch if first_epoch > 1 else None)


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a history row's key: ``train_loss`` -> ``train/loss``, ``beta`` -> ``run/beta``."""
    split, _, metric = key.partition("_")
    return f"{split}/{metric}" if split in SPLITS and metric else f"run/{key}"


def log_epoch(
    writer: SummaryWriter,
    epoch: int,
    row: dict,
    samples: torch.Tensor,
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
) -> None:
    """Log one epoch at step `epoch`: each finite number in `row` (but the epoch itself) as a scalar, and the image
    grids ``images/samples`` and ``images/reconstructions`` (rows of originals, each above its reconstructions).

    Images are (N, C, H, W) probabilities in [0, 1]: decoded samples (draw them from one seed every epoch, so the
    grids show the same codes learning) and test images with their reconstructions, in the same order.
    """
    for key, value in row.items():
        if key != "epoch" and _is_number(value):
            writer.add_scalar(scalar_tag(key), value, epoch)
    writer.add_image("images/samples", _grid(samples, min(COLUMNS, len(samples))), epoch, dataformats="HWC")
    columns = min(COLUMNS, len(originals))
    pairs = _rows_in_pairs(originals, reconstructions, columns)
    writer.add_image("images/reconstructions", _grid(pairs, columns), epoch, dataformats="HWC")
    writer.flush()  # TensorBoard shows the epoch now, and a killed run keeps it


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _rows_in_pairs(originals: torch.Tensor, reconstructions: torch.Tensor, columns: int) -> torch.Tensor:
    """Interleave whole rows: `columns` originals, their reconstructions, the next `columns` originals, ...
    A last incomplete row is left out, so every original sits right above its reconstruction."""
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals {tuple(originals.shape)} and reconstructions {tuple(reconstructions.shape)}")
    n = len(originals) - len(originals) % columns
    pairs = torch.stack((originals[:n].unflatten(0, (-1, columns)), reconstructions[:n].unflatten(0, (-1, columns))), 1)
    return pairs.flatten(0, 2)  # (rows, 2, columns, C, H, W) -> (2 * n, C, H, W)


def _grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> one (H', W', 3) grid of `columns` tiles a row, each enlarged by whole pixels as
    the saved image grids are (plots.tile_scale)."""
    scale = tile_scale(*images.shape[-2:])
    grid = torch.from_numpy(image_grid(images.float(), columns))  # (H', W') or (H', W', C)
    if grid.dim() == 2:
        grid = grid.unsqueeze(-1).expand(-1, -1, 3)
    return grid[:, :, :3].repeat_interleave(scale, 0).repeat_interleave(scale, 1)
