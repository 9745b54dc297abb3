"""The maths of the lecture as pure functions: one value per example, the caller reduces.

Letters in shape comments: B batch, D pixels (C*H*W), Z latent dimensions, K importance samples.
All log-densities are natural logarithms, so every value is in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)
# 8-bit pixels: the level k in 0..255 is held as x = k / 255 in [0, 1]; its bin is [x - 1/510, x + 1/510].
PIXEL_LEVELS = 256
HALF_BIN = 0.5 / (PIXEL_LEVELS - 1)


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


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0, accurate at both ends (Maechler 2012: log1p(-exp(-d)) above log 2, else
    log(-expm1(-d)))."""
    # Each branch sees only its own range: torch.where differentiates both, and log1p(-exp(-d)) at a d that
    # rounds exp(-d) to 1 would turn the unused branch's zero gradient into 0 * inf = NaN.
    cut = math.log(2)
    large = torch.log1p(-torch.exp(-d.clamp(min=cut)))
    small = torch.log(-torch.expm1(-d.clamp(max=cut)))
    return torch.where(d > cut, large, small)


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit values under a logistic(mean, s = exp(log_scale)) discretised to 256 bins.  # broadcast

    Salimans et al. (2017, PixelCNN++), eq. 2, on the [0, 1] scale: x = k/255, bins of width 1/255 centred on
    the levels, and the two end bins stretched to infinity so the 256 probabilities sum to 1:

        P(k) = sigma((x + 1/510 - mean) / s) - sigma((x - 1/510 - mean) / s)     0 < k < 255
        P(0) = sigma((1/510 - mean) / s)                                           the CDF at the bin's top
        P(255) = 1 - sigma((1 - 1/510 - mean) / s)                                 1 - the CDF at its bottom

    In log space without subtracting probabilities: with a > b the scaled bin edges,
    sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - exp(-(a - b))), so

        log P(k) = log sigma(a) + log sigma(-b) + log(1 - exp(-1 / (255 s)))

    each term finite for every scale (a - b = 1/(255 s)); an end bin keeps only the term of its finite edge.
    This needs no fallback to the density at the bin centre, which PixelCNN++ uses where its CDF difference
    underflows. `x` must hold exact levels k/255; x, mean and log_scale broadcast against each other.
    """
    level = torch.round(x * (PIXEL_LEVELS - 1))
    inv_scale = torch.exp(-log_scale)
    upper = (x + HALF_BIN - mean) * inv_scale  # a
    lower = (x - HALF_BIN - mean) * inv_scale  # b
    zero = upper.new_zeros(())
    log_below_top = torch.where(level < PIXEL_LEVELS - 1, F.logsigmoid(upper), zero)  # log sigma(a), or 0
    log_above_bottom = torch.where(level > 0, F.logsigmoid(-lower), zero)  # log sigma(-b), or 0
    interior = (level > 0) & (level < PIXEL_LEVELS - 1)
    log_width = torch.where(interior, _log1mexp(2 * HALF_BIN * inv_scale), zero)
    return log_below_top + log_above_bottom + log_width


def discretized_logistic_mixture_log_prob(
    x: torch.Tensor, log_weights: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """log p(x) of each pixel's C channels under a mixture of K discretised logistics.  # (..., H, W)

    p(x) = sum_k pi_k prod_c P(x_c; mean_kc, s_kc): each component is a product over the channels of
    discretized_logistic_log_prob, and the K weights pi = softmax(log_weights) are shared by the channels of a
    pixel, so the mixture models colours jointly (Salimans et al. 2017, sec. 2.2, without the linear
    dependence of a channel on the previous ones). Computed in log space:
    logsumexp_k [log_softmax(log_weights)_k + sum_c log P(x_c; mean_kc, s_kc)].

    x (..., C, H, W) levels k/255; log_weights (..., K, H, W); means and log_scales (..., K, C, H, W). The
    leading axes broadcast, so K importance samples (K', B, ...) score one target (B, ...).
    """
    per_channel = discretized_logistic_log_prob(x.unsqueeze(-4), means, log_scales)  # (..., K, C, H, W)
    log_joint = F.log_softmax(log_weights, dim=-3) + per_channel.sum(-3)  # (..., K, H, W)
    return torch.logsumexp(log_joint, dim=-3)  # (..., H, W)


def clipped_logistic_mean(mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """E[clip(X, 0, 1)], X ~ logistic(mean, s = exp(log_scale)): the discretised logistic's mean.  # broadcast

    E[clip(X, 0, 1)] = int_0^1 P(X > t) dt = int_0^1 sigma((mean - t) / s) dt
                     = s [softplus(mean / s) - softplus((mean - 1) / s)].
    The discretised value (X rounded to the nearest level k/255, ends included) differs from clip(X, 0, 1) by
    at most half a bin, so this is the mean of discretized_logistic_log_prob's distribution to within 1/510,
    half a grey level, at the cost of one softplus pair instead of a sum over 255 levels.
    """
    scale = torch.exp(log_scale)
    value = scale * (F.softplus(mean / scale) - F.softplus((mean - 1) / scale))
    return value.clamp(0.0, 1.0)  # float rounding only: the exact value lies in [0, 1]


def bits_per_dim(nll_nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """-log p(x) in nats per image as bits per dimension: -log p(x) / (D ln 2), D = C*H*W."""
    return nll_nats / (dims * math.log(2))


def dequantised_bits_per_dim(nll_density_nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """A bound on the bits per dimension of 8-bit images from a density p on [0, 1]: (nll + D ln 256) / (D ln 2).

    `nll_density_nats` is -log p(x + u) per image, x = k/255 the image and u ~ U(-1/512, 1/512)^D (see
    uniform_dequantise). Define the discrete model P(k) = int p(x + u) du over the cell of side 1/256 centred
    on x; the cells of different images are disjoint (1/256 < 1/255), so P sums to at most 1. Jensen's
    inequality (Theis et al. 2016, eq. 11) gives

        -log P(k) = -log E_u[p(x + u)] - D log(1/256) <= E_u[-log p(x + u)] + D log 256,

    so the mean of this over test images estimates an upper bound on -log2 P(x) / D, and any upper bound on
    -log p(x + u) (the negative ELBO, -L_K) keeps it one.
    """
    return bits_per_dim(nll_density_nats + dims * math.log(PIXEL_LEVELS), dims)


def uniform_dequantise(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + u, u ~ U(-1/512, 1/512) per pixel: each 8-bit level k/255 spread over a cell of side 1/256 centred on
    it (the cells do not overlap). See dequantised_bits_per_dim."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype) - 0.5  # drawn on the CPU: the same on any device
    return x + u.to(x.device) / PIXEL_LEVELS


def squared_error(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The lecture's AutoEncoder loss ||x - d(e(x))||², summed over pixels.  # (B,)"""
    return (reconstruction - target).pow(2).flatten(1).sum(1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last axis.  # (...,)"""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def diagonal_normal_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last axis.  # (...,)"""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def diagonal_normal_mixture_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k N(z; mu_k, diag(exp(logvar_k))), K equally weighted components.  # (...,)

    The VampPrior (Tomczak & Welling 2018, eq. 9) is this mixture with mu_k, logvar_k = q(z|u_k), the encoder's
    posterior at the K pseudo-inputs. In log space, logsumexp_k log N(z; mu_k, ...) - log K, so a z far from every
    component keeps a finite log-density. z (..., Z) against components mu, logvar (K, Z).
    """
    per_component = diagonal_normal_log_density(z.unsqueeze(-2), mu, logvar)  # (..., K)
    return torch.logsumexp(per_component, dim=-1) - math.log(mu.shape[-2])


def normal_mixture_quantiles(levels: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per latent dimension, the z with F(z) = level, F(z) = (1/K) sum_k Phi((z - mu_k) / std_k) the marginal CDF
    of an equally weighted mixture of K normals.  # (L, Z)

    levels (L,) in (0, 1); mu, std (K, Z). F is increasing, so bisection between bounds that hold every level
    (beyond all components by 40 standard deviations, where F is 0 or 1 in float64) finds each quantile; 100
    halvings shrink the bracket far below float64's resolution.
    """
    mu, std = mu.double(), std.double()
    low = (mu - 40 * std).min(0).values.expand(len(levels), -1).clone()  # (L, Z)
    high = (mu + 40 * std).max(0).values.expand(len(levels), -1).clone()
    target = levels.double().to(mu.device).unsqueeze(-1)  # (L, 1)
    for _ in range(100):
        middle = (low + high) / 2
        cdf = torch.special.ndtr((middle.unsqueeze(-2) - mu) / std).mean(-2)  # (L, K, Z) -> (L, Z)
        below = cdf < target
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    return (low + high) / 2


def single_sample_kl(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """log q(z|x) - log p(z) at one z ~ q(z|x) = N(mu, diag(exp(logvar))): an unbiased estimate of
    KL(q(z|x) || p(z)) where it has no closed form, as against a mixture prior.  # (...,)

    Kingma & Welling (2014), eq. 6 (estimator A) uses it inside log p(x, z) - log q(z|x); Tomczak & Welling (2018)
    train the VampPrior with it. `log_prior` is log p(z) with z's leading shape.
    """
    return diagonal_normal_log_density(z, mu, logvar) - log_prior


def log_importance_weights(
    log_px_given_z: torch.Tensor, log_pz: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x), q = N(mu, diag exp(logvar)).  # (...,)

    Burda et al. (2016), eq. 8: w_k = p(x, z_k) / q(z_k | x), with z_k ~ q(z|x). `z` is (..., Z) and
    broadcasts against mu and logvar; log_px_given_z and log_pz (the prior's log-density of z) have z's leading
    shape.
    """
    return log_px_given_z + log_pz - diagonal_normal_log_density(z, mu, logvar)


def importance_weighted_bound(log_w: torch.Tensor) -> torch.Tensor:
    """L_K = log (1/K) sum_k w_k = logsumexp_k log w_k - log K, over the first axis of log_w (K, ...).  # (...,)

    Burda et al. (2016), eq. 8, from the K log weights of log_importance_weights. Differentiated as it stands,
    its gradient is sum_k w~_k grad log w_k with the normalised weights w~_k = w_k / sum_j w_j (eq. 14): the
    gradient flows through the weights' normalisation, and no surrogate sum_k w~_k log w_k (whose w~ must then
    be held constant) is needed. K = 1 gives the one-sample ELBO log p(x, z) - log q(z|x).
    """
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


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


def pairwise_gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z_id | x_j) for every sample i and posterior j of a batch, per dimension.  # (..., B, B, Z)

    z (..., B, Z) are the samples (leading axes broadcast: K samples per image as (K, B, Z)); mu and logvar
    (B, Z) the posteriors N(mu_j, diag exp(logvar_j)). Entry [..., i, j, d] scores z_id under posterior j's dimension d.
    """
    z = z.unsqueeze(-2)  # (..., B, 1, Z) against (B, Z): sample i's row meets every posterior j
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def tc_decomposition(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(index-code MI, total correlation, dimension-wise KL) per image, one sample each.  # 3 x (...B,)

    Chen et al. (2018), eq. 2, split E_x KL(q(z|x) || p(z)) into

        I_q(x; z) = E[log q(z|x) - log q(z)]                   index-code mutual information
        TC        = E[log q(z) - sum_d log q(z_d)]             total correlation, KL(q(z) || prod_d q(z_d))
        dim-KL    = E[sum_d log q(z_d) - log p(z_d)]            dimension-wise KL, p = N(0, I)

    with the aggregate posterior q(z) = (1/N) sum_n q(z|x_n) estimated by their minibatch-weighted sampling (MWS,
    sec. 3.1, derived in their appendix; as in their reference code): for the sample z_i of a batch of M images,

        log q(z_i)   ~ logsumexp_j log q(z_i | x_j) - log(N M)
        log q(z_id)  ~ logsumexp_j log q(z_id | x_j) - log(N M)      (each dimension d)

    N the training-set size (`dataset_size`), M the batch size. MWS is biased: with the batch the whole data set
    (N = M) the exact log q(z_i) is logsumexp_j log q(z_i|x_j) - log N, so MWS's log q(z) is log M too low and
    its log prod_d q(z_d) D log M too low (MI + log M, TC + (D - 1) log M, dim-KL - D log M); constants, which
    leave the gradients alone. Whatever the estimator, the three terms add up to log q(z|x) - log p(z), a
    one-sample estimate of KL(q(z|x) || p(z)).

    z (..., B, Z) samples of q(z|x) (K per image as (K, B, Z)), mu and logvar (B, Z) the batch's posteriors.
    """
    # A tensor N stays on the device: reading it back would wait for the device at every training step.
    log_norm = torch.log(torch.as_tensor(dataset_size, dtype=mu.dtype, device=mu.device) * mu.shape[0])
    pairwise = pairwise_gaussian_log_density(z, mu, logvar)  # (..., B, B, Z)
    log_qz_given_x = pairwise.diagonal(dim1=-3, dim2=-2).sum(-2)  # (..., B): sample i under its own posterior
    log_qz = torch.logsumexp(pairwise.sum(-1), dim=-1) - log_norm  # (..., B)
    log_prod_marginals = (torch.logsumexp(pairwise, dim=-2) - log_norm).sum(-1)  # (..., B)
    log_pz = standard_normal_log_density(z)  # (..., B)
    return log_qz_given_x - log_qz, log_qz - log_prod_marginals, log_prod_marginals - log_pz


# VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017). Shapes: N encoder outputs z_e of D numbers each, a codebook of
# K vectors (K, D); per image, L positions.
def nearest_code(z_e: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """k(x) = argmin_j ||z_e(x) - e_j||² (van den Oord et al. 2017, eq. 1), for each row of z_e (..., D).  # (...,)

    ||z||² - 2 z.e + ||e||² in one matrix product; ties go to the lowest index (torch.argmin's rule).
    """
    flat = z_e.reshape(-1, z_e.shape[-1])
    distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(1)  # (N, K)
    return distances.argmin(1).reshape(z_e.shape[:-1])


def straight_through(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """z_e + sg[z_q - z_e]: equals z_q forward, and passes the decoder's gradient w.r.t. z_q unchanged to z_e
    (the straight-through estimator of van den Oord et al. 2017, section 3.2; Bengio et al. 2013)."""
    return z_e + (z_q - z_e).detach()


def codebook_loss(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """||sg[z_e(x)] - e||², summed over positions and code dimensions (van den Oord et al. 2017, eq. 3, second
    term): moves the chosen codes toward the encoder outputs.  # (B,) for z_e, z_q (B, L, D)"""
    return (z_e.detach() - z_q).pow(2).flatten(1).sum(1)


def commitment_loss(z_e: torch.Tensor, z_q: torch.Tensor, weight: float) -> torch.Tensor:
    """beta ||z_e(x) - sg[e]||² (van den Oord et al. 2017, eq. 3, third term; beta = 0.25 in the paper): keeps the
    encoder committed to its codes.  # (B,) for z_e, z_q (B, L, D)"""
    return weight * (z_e - z_q.detach()).pow(2).flatten(1).sum(1)


def ema_codebook_update(
    counts: torch.Tensor,
    sums: torch.Tensor,
    batch_counts: torch.Tensor,
    batch_sums: torch.Tensor,
    decay: float,
    epsilon: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One exponential-moving-average codebook step (van den Oord et al. 2017, appendix A.1, eqs. 6-8; Laplace
    smoothing as in Razavi et al. 2019's sonnet implementation).

    N_j <- gamma N_j + (1 - gamma) n_j and m_j <- gamma m_j + (1 - gamma) sum_{i: k_i = j} z_e,i, where n_j counts
    the batch's outputs assigned to code j; then e_j = m_j / N~_j with the smoothed count
    N~_j = (N_j + eps) / (n + K eps) * n, n = sum_j N_j, which keeps an unused code's division finite.
    counts (K,), sums (K, D), batch_counts (K,), batch_sums (K, D). Returns (counts, sums, codebook).
    """
    counts = decay * counts + (1 - decay) * batch_counts
    sums = decay * sums + (1 - decay) * batch_sums
    total = counts.sum()
    smoothed = (counts + epsilon) / (total + len(counts) * epsilon) * total
    return counts, sums, sums / smoothed.unsqueeze(1)


def codebook_perplexity(code_counts: torch.Tensor) -> float:
    """exp(H(p)), p_j = the share of encoder outputs assigned to code j: the effective number of codes in use,
    K when all K are used equally, 1 when one is (as reported by Razavi et al. 2019's sonnet VQ-VAE)."""
    p = code_counts.double() / code_counts.sum()
    return math.exp(-torch.special.xlogy(p, p).sum().item())
