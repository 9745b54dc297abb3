"""What a run trains on: grey levels, or binarised images (Salakhutdinov & Murray 2008), from the stored pixels."""

from __future__ import annotations

import torch

from vaelab.config import RunConfig
from vaelab.data.images import ImageData, Pixels

TEST_SEED = 0  # the test set's static binarisation and evaluation noise never depend on the run's seed
BINARIZE_CHUNK = 4096  # images converted to float at a time while binarising a whole split


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per pixel with p = grey level (Salakhutdinov & Murray 2008's binarised MNIST)."""
    return torch.bernoulli(x, generator=generator)


def binarized(pixels: Pixels, seed: int) -> Pixels:
    """A fixed binarisation of a split, stored as uint8 0/1 (max_value 1), drawn from one seeded generator a chunk
    at a time, so the split is never whole as float."""
    generator = torch.Generator().manual_seed(seed)
    bits = torch.empty(pixels.shape, dtype=torch.uint8, device=pixels.values.device)
    for start in range(0, len(pixels), BINARIZE_CHUNK):
        bits[start : start + BINARIZE_CHUNK] = binarize(pixels[start : start + BINARIZE_CHUNK], generator)
    return Pixels(bits, 1)


def training_pixels(config: RunConfig, data: ImageData) -> tuple[Pixels, Pixels]:
    """The train and test inputs of a run as stored pixels: grey levels, or a static binarisation.

    With dynamic binarisation the train images are re-drawn every batch (see vaelab.train); the test split is then
    binarised once with TEST_SEED, the usual practice when reporting likelihoods on binarised data.
    """
    test = data.test if config.binarize == "none" else binarized(data.test, TEST_SEED)
    train = binarized(data.train, config.seed) if config.binarize == "static" else data.train
    return train, test


def training_targets(config: RunConfig, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """training_pixels as float tensors in [0, 1], for evaluation and figures (the training loop never asks)."""
    if config.binarize == "none":
        return data.x_train, data.x_test
    train, test = training_pixels(config, data)
    return train.floats(), test.floats()
