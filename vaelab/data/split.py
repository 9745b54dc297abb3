"""The train/test split of sources that have none of their own: seeded, stratified by label, stored shuffled."""

from __future__ import annotations

import numpy as np
import torch

from vaelab.data.images import ImageData
from vaelab.errors import VaelabError

SPLIT_SEED = 0  # the split never depends on a run's seed: every run on one source sees the same test images


def split_indices(name: str, n: int, labels: np.ndarray | None, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of n images: a deterministic split (seed SPLIT_SEED), stratified by label when
    there are two or more classes, each split in a seeded shuffled order, since sources ordered by label (mnist5k,
    class folders) would otherwise give a test split of 0s first and "the first N images" would be one class."""
    from sklearn.model_selection import train_test_split

    stratify = labels if labels is not None and len(np.unique(labels)) > 1 else None
    try:
        train, test = train_test_split(
            np.arange(n), test_size=test_fraction, random_state=SPLIT_SEED, stratify=stratify
        )
    except ValueError as exc:
        raise VaelabError(f"{name}: cannot split {n} images into train and test ({exc})") from None
    # Sorted first, so the stored order depends only on which images each split holds, not on sklearn's internals.
    order = np.random.default_rng(SPLIT_SEED)
    return order.permutation(np.sort(train)), order.permutation(np.sort(test))


def split_in_memory(
    name: str,
    x: np.ndarray,
    y: torch.Tensor | None,
    test_fraction: float,
    max_value: float = 255,
    notes: list[str] | None = None,
) -> ImageData:
    """ImageData of uint8 images (N, C, H, W) held in memory and their checked labels, split by split_indices."""
    train, test = split_indices(name, len(x), None if y is None else y.numpy(), test_fraction)
    return ImageData(
        name,
        torch.from_numpy(x[train]),
        None if y is None else y[torch.from_numpy(train)],
        torch.from_numpy(x[test]),
        None if y is None else y[torch.from_numpy(test)],
        max_value=max_value,
        notes=notes or [],
    )
