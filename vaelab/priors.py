"""Priors p(z): small objects with ``log_prob``, ``sample`` and ``marginal_quantiles``, held by a model as
``model.prior``.

Bounds (vaelab.bounds) score samples with ``prior.frozen()`` (log_prob with whatever depends on the weights
computed once); ``vaelab.models.sample_prior`` decodes
``prior.sample``; the figures and the explorer place their grids and sliders at ``prior.marginal_quantiles``, so
no picture assumes N(0, I). A family with another prior (the VampPrior's mixture, VQ-VAE's autoregressive prior
over codes) gives its model an object with the same methods.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vaelab import objectives


class StandardNormal(nn.Module):
    """p(z) = N(0, I) in z_dim dimensions, the lecture's prior. A module (with no parameters) so that it moves
    with its model."""

    description = "N(0, I)"  # how evaluation notes name where prior samples come from

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim

    def log_prob(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log N(z; 0, I), summed over the last axis.  # (...,)"""
        return objectives.standard_normal_log_density(z)

    def frozen(self) -> Callable[..., torch.Tensor]:
        """log_prob as a function of (z, labels) under the current weights (N(0, I) has none to precompute)."""
        return self.log_prob

    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n draws on the generator's device (the host's, so every device decodes the same z).  # (n, Z)"""
        return torch.randn(n, self.z_dim, generator=generator, device=generator.device)

    def marginal_quantiles(self, levels: torch.Tensor) -> torch.Tensor:
        """Per dimension, the quantiles of p(z)'s marginal N(0, 1) at `levels` (L,): the inverse normal CDF, on
        the host.  # (L, Z)"""
        values = torch.special.ndtri(levels.to("cpu", torch.float64)).float()  # (L,)
        return values.unsqueeze(1).expand(-1, self.z_dim)
