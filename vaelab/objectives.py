"""The maths of the lecture as pure functions: one value per example, the caller reduces.

Letters in shape comments: B batch, D pixels (C*H*W), Z latent dimensions, K importance samples.
All log-densities are natural logarithms, so every value is in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(
    mu_q: torch.Tensor,
    logvar_q: torch.Tensor,
    mu_p: torch.Tensor | float = 0.0,
    logvar_p: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """KL(N(mu_q, sigma_q²) || N(mu_p, sigma_p²)) per latent dimension, in closed form.  # (..., Z)

    The lecture's derivation (and Kingma & Welling 2014, Appendix B), per dimension:

        KL = log(sigma_p / sigma_q) + (sigma_q² + (mu_q - mu_p)²) / (2 sigma_p²) - 1/2

    With the standard normal prior (mu_p = 0, sigma_p = 1) this is the lecture's code line
    -0.5 * (1 + logvar - mu² - exp(logvar)). Sum over the last axis for the KL of a diagonal Gaussian.
    """
    if isinstance(mu_p, (int, float)) and isinstance(logvar_p, (int, float)) and mu_p == 0 and logvar_p == 0:
        # The standard prior of every training step: the lecture's line, half the ops of the general form.
        return -0.5 * (1 + logvar_q - mu_q.pow(2) - logvar_q.exp())
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)
    logvar_p = torch.as_tensor(logvar_p, dtype=mu_q.dtype, device=mu_q.device)
    # log(sigma_p/sigma_q) = (logvar_p - logvar_q)/2, and dividing by sigma_p² is multiplying by exp(-logvar_p).
    return 0.5 * (logvar_p - logvar_q) + (logvar_q.exp() + (mu_q - mu_p) ** 2) * (0.5 * torch.exp(-logvar_p)) - 0.5


def bernoulli_log_likelihood(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log p(x|z) = sum_d [x_d log p_d + (1 - x_d) log(1 - p_d)], p = sigmoid(logits).  # (B,)

    This is minus the lecture's summed binary cross-entropy. It is computed from logits, which is exact where
    sigmoid-then-log underflows. Grey-level targets in [0, 1] are allowed (the lecture's choice); then the
    value is a cross-entropy rather than a normalised likelihood, and only binary targets give log-probabilities.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return -bce.flatten(1).sum(1)


def gaussian_log_likelihood(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(logvar)) summed over pixels: -1/2 sum_d [log 2pi + logvar_d + (x_d - mean_d)² / var_d].  # (B,)"""
    logvar = torch.as_tensor(logvar, dtype=mean.dtype, device=mean.device).expand_as(mean)
    nll = 0.5 * (LOG_2PI + logvar + (target - mean) ** 2 * torch.exp(-logvar))
    return -nll.flatten(1).sum(1)


def squared_error(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The lecture's AutoEncoder loss ||x - d(e(x))||², summed over pixels.  # (B,)"""
    return (reconstruction - target).pow(2).flatten(1).sum(1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last axis.  # (...,)"""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def diagonal_normal_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last axis.  # (...,)"""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def kl_with_free_bits(kl_per_dim: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL as the training loss sees it: sum_z max(lambda, mean_batch KL_z) (Kingma et al. 2016, eq. 15).  # ()

    The batch mean is taken before the floor, as in the paper, so a dimension is free only while the whole
    batch uses less than `free_bits` nats of it. With free_bits = 0 this is the plain mean KL.
    """
    per_dim = kl_per_dim.mean(0)  # (Z,)
    if free_bits > 0:
        per_dim = per_dim.clamp(min=free_bits)
    return per_dim.sum()


def soft_clamp(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Squash x smoothly into (-bound, bound): bound * tanh(x / bound), the identity near 0 and never flat."""
    return bound * torch.tanh(x / bound)


def bernoulli_log_likelihood_shared_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """bernoulli_log_likelihood for K decoder outputs per image scored against the image's one target.  # (K, B)

    logits (K, B, C, H, W), target (B, C, H, W). Uses -BCE(l, x) = x l - softplus(l) summed over pixels, with the
    target broadcast over K rather than expanded: 10-20% faster on a CPU than binary_cross_entropy_with_logits on
    an expanded target, and than an einsum for the x l term, which copies the logits once B > 1.
    """
    k, b = logits.shape[:2]
    flat = logits.reshape(k, b, -1)  # (K, B, D)
    return (flat * target.reshape(b, -1)).sum(-1) - F.softplus(flat).sum(-1)
