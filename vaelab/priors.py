"""Priors p(z): small objects with ``log_prob`` and ``sample``, held by a model as ``model.prior``.

Bounds (vaelab.bounds) score samples with ``prior.log_prob``; ``vaelab.models.sample_prior`` decodes
``prior.sample``. A family with another prior (the VampPrior's mixture, VQ-VAE's autoregressive prior over codes)
gives its model an object with the same two methods.
"""

from __future__ import annotations

import torch
from torch import nn

from vaelab import objectives


class StandardNormal(nn.Module):
    """p(z) = N(0, I) in z_dim dimensions, the lecture's prior. A module (with no parameters) so that it moves
    with its model."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I), summed over the last axis.  # (...,)"""
        return objectives.standard_normal_log_density(z)

    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n draws on the generator's device (the host's, so every device decodes the same z).  # (n, Z)"""
        return torch.randn(n, self.z_dim, generator=generator, device=generator.device)
