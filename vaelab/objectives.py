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
    # sigma_q² / sigma_p² as one exp of the difference: exp(logvar_q) and exp(-logvar_p) apart overflow and
    # underflow in float32 near |logvar| = 89 (inf * 0 = NaN) where the ratio itself is an ordinary number.
    # The mean term is squared after scaling by 1/sigma_p for the same reason.
    var_ratio = torch.exp(logvar_q - logvar_p)
    scaled_gap = (mu_q - mu_p) * torch.exp(-0.5 * logvar_p)
    return 0.5 * (logvar_p - logvar_q + var_ratio + scaled_gap.pow(2) - 1)


def _event_start(prediction: torch.Tensor, target: torch.Tensor) -> int:
    """The first pixel axis of `prediction`, whose leading axes are (..., B) and target's are (B,).

    A target (B, C, H, W) is scored against predictions (B, C, H, W) or (K, B, C, H, W): the K decoder outputs
    of each image (importance samples) broadcast against the image's one target, never copied K times.
    """
    start = prediction.dim() - target.dim() + 1
    if start < 1 or prediction.shape[start - 1 :] != target.shape:
        raise ValueError(f"predictions {tuple(prediction.shape)} do not end with the target's {tuple(target.shape)}")
    return start


def bernoulli_log_likelihood(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log p(x|z) = sum_d [x_d log p_d + (1 - x_d) log(1 - p_d)], p = sigmoid(logits).  # (B,) or (K, B)

    This is minus the lecture's summed binary cross-entropy. It is computed from logits, which is exact where
    sigmoid-then-log underflows. Grey-level targets in [0, 1] are allowed (the lecture's choice); then the
    value is a cross-entropy rather than a normalised likelihood, and only binary targets give log-probabilities.
    logits (B, C, H, W) or (K, B, C, H, W) against target (B, C, H, W): see _event_start.
    """
    start = _event_start(logits, target)
    if logits.shape == target.shape:  # the training step: one fused kernel, forward and backward
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return -bce.flatten(start).sum(-1)
    # K outputs per image: -BCE(l, x) = x l - softplus(l) summed over pixels, the target broadcast over K rather
    # than expanded: 10-20% faster on a CPU than binary_cross_entropy_with_logits on an expanded target, and than
    # an einsum for the x l term, which copies the logits once B > 1 (benchmarks/iwae_speed.py).
    flat = logits.flatten(start)  # (K, B, D)
    return (flat * target.flatten(1)).sum(-1) - F.softplus(flat).sum(-1)


def gaussian_log_likelihood(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(logvar)) summed over pixels: -1/2 sum_d [log 2pi + logvar_d + (x_d - mean_d)² / var_d].

    mean (B, C, H, W) or (K, B, C, H, W) against target (B, C, H, W) (see _event_start); logvar () or
    (C, H, W) broadcasts against both.  # (B,) or (K, B)
    """
    start = _event_start(mean, target)
    logvar = torch.as_tensor(logvar, dtype=mean.dtype, device=mean.device)
    nll = 0.5 * (LOG_2PI + logvar + (target - mean) ** 2 * torch.exp(-logvar))  # (..., C, H, W)
    return -nll.flatten(start).sum(-1)


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
