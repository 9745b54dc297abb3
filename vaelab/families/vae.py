"""Kingma & Welling's VAE (and the beta-VAE: the same model with beta != 1), on which most families build.

With the discretised logistic likelihoods the decoder returns, per pixel, the raw parameters of p(x|z) rather
than C logits: ``decode(z)`` is then (B, P, H, W) with P = likelihood_channels(...) (see there for the layout).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaelab import objectives
from vaelab.config import DISCRETISED_LIKELIHOODS, RunConfig
from vaelab.families.ae import AutoEncoder
from vaelab.families.terms import LossTerms

# log sigma² of q(z|x) (and of a learned pixel variance) is squashed into (-LOGVAR_BOUND, LOGVAR_BOUND), so
# exp(logvar) stays within [4.5e-5, 2.2e4]: an unbounded encoder output can reach exp(89) and overflow
# float32, the NaN every VAE codebase's issue tracker reports. soft_clamp keeps gradients non-zero everywhere.
LOGVAR_BOUND = 10.0
# The logistic's log scale is squashed the same way: s in [4.5e-5, 2.2e4] runs from a hundredth of a bin (1/255 =
# 3.9e-3) to far beyond the [0, 1] range, and the bin width in scales, 1/(255 s), stays a normal float32, so
# every log P(k) stays finite.
LOG_SCALE_BOUND = 10.0


def likelihood_channels(likelihood: str, channels: int, components: int) -> int:
    """Decoder outputs per pixel for p(x|z) of images with `channels` channels.

    bernoulli, gaussian*: C logits. logistic: 2C, the C means then the C log scales. logistic-mixture: K(1 + 2C),
    the K mixture logits, then the K*C means (component-major), then the K*C log scales.
    """
    if likelihood == "logistic":
        return 2 * channels
    if likelihood == "logistic-mixture":
        return components * (1 + 2 * channels)
    return channels


class VAE(AutoEncoder):
    """Kingma & Welling's VAE: q(z|x) = N(mu, diag sigma²), z = mu + sigma * eps, p(z) = N(0, I).

    The encoder's last layer gives 2*z_dim numbers, chunked into mu and log sigma², as in the lecture.
    """

    kind = "vae"
    encoder_outputs_per_dim = 2  # mu and log sigma²
    has_bound = True
    has_likelihood = True
    kl_description = "the analytic KL(q(z|x) || N(0, I))"

    def __init__(self, image_shape: tuple[int, int, int], config: RunConfig):
        super().__init__(image_shape, config)
        self.likelihood = config.likelihood
        self.components = config.mixture_components if config.likelihood == "logistic-mixture" else 1
        start = 2 * math.log(config.gaussian_std)
        if config.likelihood == "gaussian-learned":
            # One learned log-variance per pixel, soft-clamped like the encoder's; started at gaussian_std.
            raw_start = LOGVAR_BOUND * math.atanh(max(-0.99, min(0.99, start / LOGVAR_BOUND)))
            self.raw_pixel_logvar = nn.Parameter(torch.full(self.image_shape, raw_start))
        else:
            self.register_buffer("fixed_pixel_logvar", torch.tensor(start), persistent=False)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw_logvar = self.encoder(x).float().chunk(2, dim=-1)  # (B, Z) each
        return mu, objectives.soft_clamp(raw_logvar, LOGVAR_BOUND)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, noise=None) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): the sample is differentiable in mu and logvar. eps comes from
        `noise` (a vaelab.noise.ImageNoise: the same per image however a batch is split across processes) when
        given, else from torch's global generator."""
        eps = torch.randn_like(mu) if noise is None else noise.normal_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps

    def decoder_channels(self, config: RunConfig) -> int:
        """The parameters of p(x|z) per pixel: see likelihood_channels."""
        return likelihood_channels(config.likelihood, self.image_shape[0], config.mixture_components)

    def log_likelihood(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats per image, from the decoder's outputs.  # (B,) or (K, B)

        logits (B, P, H, W) score each image's own target (B, C, H, W); logits (K, B, P, H, W), K decoder outputs
        per image (importance samples), are scored against the image's one target by broadcasting. For the
        discretised logistics this is log P(x|z), a probability of the 8-bit image (targets k/255).
        """
        if self.likelihood == "bernoulli":
            return objectives.bernoulli_log_likelihood(logits, target)
        if self.likelihood in DISCRETISED_LIKELIHOODS:
            per_pixel = objectives.discretized_logistic_mixture_log_prob(target, *self.logistic_parameters(logits))
            return per_pixel.flatten(-2).sum(-1)  # (..., H, W) -> (...,)
        return objectives.gaussian_log_likelihood(torch.sigmoid(logits), self.pixel_logvar(), target)

    def logistic_parameters(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log weights (..., K, H, W), means (..., K, C, H, W), log scales (..., K, C, H, W)) of the pixels'
        discretised logistic mixture, from decoder outputs (..., P, H, W) laid out as in likelihood_channels.

        The single logistic is the mixture of K = 1 with weight log 1 = 0. Means are 0.5 + the output, so that
        an output of 0 is mid-grey; they are not bounded, since the end bins take any mass beyond [0, 1].
        """
        c, h, w = self.image_shape
        k = self.components
        expected = (likelihood_channels(self.likelihood, c, k), h, w)
        if logits.shape[-3:] != expected:
            raise ValueError(f"decoder outputs {tuple(logits.shape)} do not end with {expected}")
        n_weights = k if self.likelihood == "logistic-mixture" else 0
        log_weights = logits[..., :n_weights, :, :] if n_weights else logits.new_zeros((1, 1, 1))
        raw_means, raw_log_scales = logits[..., n_weights:, :, :].unflatten(-3, (2, k, c)).unbind(-5)
        return log_weights, 0.5 + raw_means, objectives.soft_clamp(raw_log_scales, LOG_SCALE_BOUND)

    def decode_mean(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """E[x|z] in [0, 1]: the Bernoulli's and Gaussian's sigmoid of the logits; for the discretised logistics
        the mixture's mean, sum_k pi_k E[clip(X_k, 0, 1)] (objectives.clipped_logistic_mean, within half a
        grey level of the discretised mean)."""
        logits = self.decode(z, labels)
        if self.likelihood not in DISCRETISED_LIKELIHOODS:
            return torch.sigmoid(logits)
        log_weights, means, log_scales = self.logistic_parameters(logits)
        weights = torch.softmax(log_weights, dim=-3).unsqueeze(-3)  # (B, K, 1, H, W)
        return (weights * objectives.clipped_logistic_mean(means, log_scales)).sum(-4)  # (B, C, H, W)

    def pixel_logvar(self) -> torch.Tensor:
        """log sigma² of the Gaussian likelihood: () when fixed, (C, H, W) when learned."""
        if hasattr(self, "raw_pixel_logvar"):
            return objectives.soft_clamp(self.raw_pixel_logvar, LOGVAR_BOUND)
        return self.fixed_pixel_logvar

    def loss_parts(
        self, x: torch.Tensor, *, noise=None, labels: torch.Tensor | None = None, beta: float = 1.0
    ) -> LossTerms:
        """-log p(x|z) with one sample z ~ q(z|x) (an estimate of -E_q[log p(x|z)]) (B,), and
        KL(q(z|x) || p(z)) per dimension in closed form (B, Z)."""
        mu, logvar = self.encode(x, labels)
        z = self.reparameterize(mu, logvar, noise)
        recon = -self.log_likelihood(self.decode(z, labels), x)
        return LossTerms(recon, self.prior_kl(mu, logvar, labels))

    def prior_kl(self, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """KL(N(mu, diag exp(logvar)) || N(0, I)) per dimension, the lecture's closed form.  # (B, Z)"""
        return objectives.gaussian_kl(mu, logvar)
