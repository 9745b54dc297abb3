"""Sohn, Lee & Yan's conditional VAE (2015), with a learned prior p(z|y) for each class.

The encoder q(z|x, y) and the decoder p(x|z, y) both take the class label y as a one-hot vector: the MLP encoder
reads it appended to the flattened image, the convolutional encoders as K constant extra channels, and every
decoder appended to z. The prior is Sohn et al.'s prior network p(z|x) with the label as the condition:
p(z|y) = N(mu_y, diag sigma_y²), one learned Gaussian per class, started at N(0, I). Its loss is the VAE's with y
given to every part (Sohn et al. 2015, eq. 4): -log p(x|z, y) with one z ~ q(z|x, y), plus
KL(q(z|x, y) || p(z|y)) in closed form (the lecture's KL for a general Gaussian prior).

Why learned: with p(z|y) = N(0, I) and a 20-D latent the encoder keeps the class in z, the decoder hardly reads
the label, and samples z ~ N(0, I) decoded as class y showed y a quarter of the time on mnist5k; a prior per
class follows where the encoder puts each class (README, "The papers' claims").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from vaelab import objectives
from vaelab.config import RunConfig
from vaelab.errors import VaelabError
from vaelab.families.vae import LOGVAR_BOUND, VAE


class ClassPrior(nn.Module):
    """p(z|y) = N(mu_y, diag exp(logvar_y)) for each of K classes, learned (started at N(0, I)). Without labels it
    is the marginal p(z) = (1/K) sum_y p(z|y), the classes equally likely."""

    description = "p(z|y) = N(mu_y, diag sigma_y²), learned per class, y the class each sample is decoded as"

    def __init__(self, classes: int, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.mu = nn.Parameter(torch.zeros(classes, z_dim))  # (K, Z)
        self.raw_logvar = nn.Parameter(torch.zeros(classes, z_dim))  # soft-clamped like the encoder's

    def gaussians(self, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of the classes `labels` (B,) as (B, Z) each, or of every class (K, Z) when None."""
        logvar = objectives.soft_clamp(self.raw_logvar, LOGVAR_BOUND)
        if labels is None:
            return self.mu, logvar
        labels = labels.to(self.mu.device, torch.long)
        return self.mu[labels], logvar[labels]

    def log_prob(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(z|y) for z (..., B, Z) and labels (B,); without labels log p(z), the mixture over classes.  # (...,)"""
        if labels is None:
            return objectives.diagonal_normal_mixture_log_density(z, *self.gaussians())
        return objectives.diagonal_normal_log_density(z, *self.gaussians(labels))

    def frozen(self):
        """log_prob itself: nothing to compute once (a lookup per label)."""
        return self.log_prob

    @torch.no_grad()  # draws to decode, not a differentiable function of the prior
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z = mu_y + sigma_y * eps for each label (n,) (a uniform class each when None); on the generator's device,
        all randomness from the generator: one seed gives the same eps whatever the labels.  # (n, Z)"""
        device = generator.device
        eps = torch.randn(n, self.z_dim, generator=generator, device=device)
        if labels is None:
            labels = torch.randint(len(self.mu), (n,), generator=generator, device=device)
        mu, logvar = (t.to(device) for t in self.gaussians(labels))
        return mu + torch.exp(0.5 * logvar) * eps

    def marginal_quantiles(self, levels: torch.Tensor) -> torch.Tensor:
        """Per dimension, the quantiles of the marginal p(z) at `levels` (L,), on the host.  # (L, Z)"""
        mu, logvar = (t.detach().cpu() for t in self.gaussians())
        return objectives.normal_mixture_quantiles(levels, mu, torch.exp(0.5 * logvar)).float()


class CVAE(VAE):
    """A VAE whose encoder and decoder take the class label: every method needs `labels` (B,) in 0..classes-1."""

    kind = "cvae"
    conditional = True
    kl_description = "the analytic KL(q(z|x, y) || p(z|y)), p(z|y) the class's learned Gaussian"

    def __init__(self, image_shape: tuple[int, int, int], config: RunConfig, classes: int | None = None):
        if not classes or classes < 1:
            raise VaelabError(f"{self.kind} needs labelled data: it is trained on (image, class) pairs")
        self.classes = int(classes)  # a plain int, set before the networks that it sizes are built
        self.flat_input = config.arch == "mlp"  # the MLP reads the label beside the flat image, not as channels
        super().__init__(image_shape, config)
        self.prior = ClassPrior(self.classes, config.z_dim)

    def prior_kl(self, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """KL(q(z|x, y) || p(z|y)) per dimension, closed form for the class's Gaussian.  # (B, Z)"""
        if labels is None:
            raise VaelabError(f"the {self.kind} model is conditional: it needs the class label of each image")
        return objectives.gaussian_kl(mu, logvar, *self.prior.gaussians(labels))

    def encoder_input_shape(self, config: RunConfig) -> tuple[int, int, int]:
        """(1, 1, C*H*W + K) for the MLP (the flat image, then the one-hot); (C + K, H, W) for conv and resnet."""
        c, h, w = self.image_shape
        return (1, 1, c * h * w + self.classes) if self.flat_input else (c + self.classes, h, w)

    def decoder_input_dim(self, config: RunConfig) -> int:
        """z and the one-hot label, side by side."""
        return config.z_dim + self.classes

    def one_hot(self, labels: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
        """The labels (n,) as one-hot rows (n, K) in like's dtype and device; a clear error when they are missing.

        Their range is checked where they enter (vaelab.models.check_labels), not here: a check per batch would
        wait for the device at every step.
        """
        if labels is None:
            raise VaelabError(f"the {self.kind} model is conditional: it needs the class label of each image")
        if labels.shape != (n,):
            raise VaelabError(f"{self.kind}: expected {n} labels (one per image), got shape {tuple(labels.shape)}")
        return functional.one_hot(labels.to(like.device, torch.long), self.classes).to(like.dtype)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x, y): (mu, logvar) (B, Z) each, the label given to the encoder with the image."""
        y = self.one_hot(labels, len(x), x)  # (B, K)
        if self.flat_input:
            inputs = torch.cat([x.flatten(1), y], 1).view(len(x), 1, 1, -1)  # (B, 1, 1, D + K)
        else:
            inputs = torch.cat([x, y[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)  # (B, C + K, H, W)
        return super().encode(inputs)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """p(x|z, y)'s parameters (B, P, H, W), from z and the one-hot label side by side."""
        return super().decode(torch.cat([z, self.one_hot(labels, len(z), z)], 1))
