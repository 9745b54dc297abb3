"""Random draws per image that do not depend on how a batch is split across processes.

One process and N processes must see the same binarisation and the same reparameterisation noise for every
image, or their gradients differ. A step's noise is therefore drawn for the whole global batch, identically on
every process, from a generator seeded by (seed, epoch, step); each process keeps the rows of its own images.
Drawing the global batch on each process costs a few random numbers per image and is exact by construction.
"""

from __future__ import annotations

import hashlib

import torch


def stream_seed(*parts: int) -> int:
    """A 64-bit seed that is a function of `parts` alone (e.g. seed, epoch, step): distinct parts give unrelated
    streams, unlike sums or products of them, which collide."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class ImageNoise:
    """The noise of one global batch of `global_size` images, of which this process holds the rows `rows`.

    Every call draws for the whole global batch from one generator on `device`, seeded once, so the k-th call
    gives the same numbers on every process; the draws of image i are its row i. Row 0 of `like` (the tensor
    whose shape a call takes) is this process's first image.
    """

    def __init__(self, seed: int, global_size: int, rows: slice, device: torch.device):
        self.global_size = global_size
        self.rows = rows
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def _global(self, like: torch.Tensor, draw) -> torch.Tensor:
        if len(like) != self.rows.stop - self.rows.start:
            raise ValueError(f"{len(like)} images, but this process holds rows {self.rows} of the global batch")
        shape = (self.global_size, *like.shape[1:])
        return draw(shape, generator=self.generator, device=like.device, dtype=like.dtype)[self.rows]

    def normal_like(self, like: torch.Tensor) -> torch.Tensor:
        """N(0, 1) draws shaped as `like`, one row per image (the eps of z = mu + sigma * eps)."""
        return self._global(like, torch.randn)

    def uniform_like(self, like: torch.Tensor) -> torch.Tensor:
        """U[0, 1) draws shaped as `like`, one row per image (a dynamic binarisation's thresholds)."""
        return self._global(like, torch.rand)


def binarize_per_image(x: torch.Tensor, noise: ImageNoise) -> torch.Tensor:
    """One Bernoulli draw per pixel with p = grey level (Salakhutdinov & Murray 2008): pixel = 1 where u < p."""
    return (noise.uniform_like(x) < x).to(x.dtype)
