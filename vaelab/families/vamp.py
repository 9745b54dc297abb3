"""Tomczak & Welling's VampPrior (2018): the VAE whose prior is a mixture of its own posteriors at learned
pseudo-inputs, p(z) = (1/K) sum_k q(z | u_k) (their eq. 9).

The KL against a mixture has no closed form: loss_parts estimates it with the sampled z, log q(z|x) - log p(z),
one value per image (B, 1). The IWAE bound (vaelab.bounds) scores its samples with the same prior.log_prob.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vaelab import objectives
from vaelab.config import RunConfig
from vaelab.families.terms import LossTerms
from vaelab.families.vae import VAE

# Tomczak & Welling's code starts the pseudo-inputs at N(0.05, 0.01²) per pixel (their MNIST setting): dark,
# nearly equal images, whose posteriors start close together and spread as training moves them.
PSEUDO_INPUT_MEAN = 0.05
PSEUDO_INPUT_STD = 0.01

Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k N(z; mu(u_k), diag sigma²(u_k)), (mu, log sigma²) = the encoder at pseudo-input u_k.

    The K pseudo-inputs are parameters shaped as images, kept in [0, 1] by a hardtanh as in the paper's code. The
    encoder is evaluated on them at every call, so gradients of log p(z) reach both the pseudo-inputs and the
    encoder. `encode` is the model's own encode (a bound method, not a submodule: the encoder's weights stay the
    model's alone in the state dict).
    """

    description = "the VampPrior: a pseudo-input drawn uniformly, then z ~ q(z|u_k)"

    def __init__(self, encode: Encode, pseudo_inputs: int, image_shape: tuple[int, int, int], z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self._encode = encode
        start = torch.empty(pseudo_inputs, *image_shape).normal_(PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD)
        self.raw_pseudo_inputs = nn.Parameter(start)  # (K, C, H, W)

    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs u_k in [0, 1].  # (K, C, H, W)"""
        return F.hardtanh(self.raw_pseudo_inputs, 0.0, 1.0)

    def components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma²) of the K mixture components, q(z|u_k).  # (K, Z) each"""
        return self._encode(self.pseudo_inputs())

    def log_prob(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(z) = logsumexp_k log q(z|u_k) - log K, over the last axis of z (..., Z).  # (...,)"""
        mu, logvar = self.components()
        return objectives.diagonal_normal_mixture_log_density(z, mu, logvar)

    def frozen(self) -> Callable[..., torch.Tensor]:
        """log_prob with the K components encoded once, for scoring many z under fixed weights (the IWAE bound:
        once per call instead of once per chunk of samples, a third of its time at K = 500)."""
        mu, logvar = self.components()
        return lambda z, labels=None: objectives.diagonal_normal_mixture_log_density(z, mu, logvar)

    @torch.no_grad()  # draws to decode, not a differentiable function of the pseudo-inputs
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n draws: a component k uniformly, then z ~ q(z|u_k); on the generator's device, all randomness from
        the generator.  # (n, Z)"""
        device = generator.device
        mu, logvar = (t.to(device) for t in self.components())  # (K, Z) each
        k = torch.randint(len(mu), (n,), generator=generator, device=device)  # (n,)
        eps = torch.randn(n, self.z_dim, generator=generator, device=device, dtype=mu.dtype)
        return mu[k] + torch.exp(0.5 * logvar[k]) * eps

    def marginal_quantiles(self, levels: torch.Tensor) -> torch.Tensor:
        """Per dimension, the quantiles of p(z)'s marginal at `levels` (L,), on the host.  # (L, Z)"""
        mu, logvar = (t.detach().cpu() for t in self.components())
        return objectives.normal_mixture_quantiles(levels, mu, torch.exp(0.5 * logvar)).float()


class Vamp(VAE):
    """The VAE with the VampPrior: the same networks and likelihood, p(z) a mixture of K = config.pseudo_inputs
    posteriors."""

    kind = "vamp"
    kl_per_dimension = False  # the mixture is no product over dimensions: one KL estimate per image
    kl_description = "the one-sample estimate log q(z|x) - log p(z) against the VampPrior (no closed form)"

    def __init__(self, image_shape: tuple[int, int, int], config: RunConfig):
        super().__init__(image_shape, config)
        self.prior = VampPrior(self.encode, config.pseudo_inputs, self.image_shape, config.z_dim)

    def loss_parts(
        self, x: torch.Tensor, *, noise=None, labels: torch.Tensor | None = None, beta: float = 1.0
    ) -> LossTerms:
        """-log p(x|z) with one z ~ q(z|x) (B,), and the one-sample KL estimate log q(z|x) - log p(z) at the
        same z (B, 1)."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, noise)  # (B, Z)
        recon = -self.log_likelihood(self.decode(z), x)
        kl = objectives.single_sample_kl(z, mu, logvar, self.prior.log_prob(z))  # (B,)
        return LossTerms(recon, kl.unsqueeze(1))
