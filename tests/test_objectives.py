"""The lecture's formulas against independent references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal, kl_divergence

from vaelab import objectives


def _random_gaussians(seed, shape=(64, 5)):
    g = torch.Generator().manual_seed(seed)
    mu_q = torch.randn(shape, generator=g, dtype=torch.float64)
    mu_p = torch.randn(shape, generator=g, dtype=torch.float64)
    logvar_q = torch.randn(shape, generator=g, dtype=torch.float64)
    logvar_p = torch.randn(shape, generator=g, dtype=torch.float64)
    return mu_q, logvar_q, mu_p, logvar_p


def test_kl_matches_torch_distributions_for_general_prior():
    mu_q, logvar_q, mu_p, logvar_p = _random_gaussians(0)
    ours = objectives.gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)
    reference = kl_divergence(Normal(mu_q, (0.5 * logvar_q).exp()), Normal(mu_p, (0.5 * logvar_p).exp()))
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)


def test_kl_for_standard_prior_is_the_lecture_line():
    mu, logvar, _, _ = _random_gaussians(1)
    lecture = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=-1)
    torch.testing.assert_close(objectives.gaussian_kl(mu, logvar).sum(-1), lecture, rtol=1e-12, atol=1e-12)


def test_kl_standard_prior_shortcut_equals_general_form_and_torch():
    mu, logvar, _, _ = _random_gaussians(6)
    shortcut = objectives.gaussian_kl(mu, logvar)  # float prior: the lecture's line
    general = objectives.gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar))
    reference = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    torch.testing.assert_close(shortcut, general, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shortcut, reference, rtol=1e-10, atol=1e-10)
    shifted = objectives.gaussian_kl(mu, logvar, 0.5, 0.0)  # a float prior that is not standard takes the general form
    torch.testing.assert_close(
        shifted, kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.5, 1.0)), rtol=1e-10, atol=1e-10
    )


def test_kl_matches_monte_carlo():
    mu_q, logvar_q, mu_p, logvar_p = (t[:4] for t in _random_gaussians(2, shape=(4, 3)))
    g = torch.Generator().manual_seed(3)
    n = 400_000
    z = mu_q + (0.5 * logvar_q).exp() * torch.randn((n, *mu_q.shape), generator=g, dtype=torch.float64)
    log_q = objectives.diagonal_normal_log_density(z, mu_q, logvar_q)
    log_p = objectives.diagonal_normal_log_density(z, mu_p, logvar_p)
    mc = (log_q - log_p).mean(0)  # (4,)
    se = (log_q - log_p).std(0) / math.sqrt(n)
    closed = objectives.gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).sum(-1)
    assert torch.all((mc - closed).abs() < 5 * se), (mc, closed, se)


def test_kl_is_zero_only_when_q_equals_p():
    mu_q, logvar_q, _, _ = _random_gaussians(4)
    assert torch.allclose(objectives.gaussian_kl(mu_q, logvar_q, mu_q, logvar_q), torch.zeros_like(mu_q))
    assert (objectives.gaussian_kl(mu_q, logvar_q) > 0).all()


def test_bernoulli_log_likelihood_matches_distribution_and_lecture_bce():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(8, 1, 4, 4, generator=g) * 3
    x = torch.bernoulli(torch.full((8, 1, 4, 4), 0.4), generator=g)
    reference = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(objectives.bernoulli_log_likelihood(logits, x), reference)
    grey = torch.rand(8, 1, 4, 4, generator=g)
    lecture_bce = F.binary_cross_entropy(torch.sigmoid(logits), grey, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(-objectives.bernoulli_log_likelihood(logits, grey), lecture_bce, rtol=1e-5, atol=1e-4)


def test_bernoulli_log_likelihood_stays_finite_where_sigmoid_saturates():
    logits = torch.tensor([[200.0, -200.0]])
    x = torch.tensor([[0.0, 1.0]])
    assert torch.allclose(objectives.bernoulli_log_likelihood(logits, x), torch.tensor([-400.0]))


def test_gaussian_log_likelihood_matches_distribution():
    g = torch.Generator().manual_seed(6)
    mean, x = torch.rand(5, 3, 2, 2, generator=g), torch.rand(5, 3, 2, 2, generator=g)
    logvar = torch.randn(3, 2, 2, generator=g)
    reference = Normal(mean, (0.5 * logvar).exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(objectives.gaussian_log_likelihood(mean, logvar, x), reference)


def test_squared_error_is_summed_over_pixels():
    a, b = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    b[1] *= 2
    assert objectives.squared_error(a, b).tolist() == [4.0, 16.0]


def test_free_bits_floor_each_dimension_of_the_batch_mean():
    kl = torch.tensor([[0.1, 2.0], [0.3, 4.0]])  # batch means: 0.2, 3.0
    assert objectives.kl_with_free_bits(kl, 0.0).item() == kl.sum(1).mean().item()
    assert math.isclose(objectives.kl_with_free_bits(kl, 0.5).item(), 0.5 + 3.0, rel_tol=1e-6)


def test_soft_clamp_is_bounded_identity_near_zero_and_has_gradient():
    x = torch.tensor([-1e4, -0.01, 0.0, 0.01, 1e4], requires_grad=True)
    y = objectives.soft_clamp(x, 10.0)
    assert y.abs().max() <= 10.0 and torch.allclose(y[1:4], x[1:4], atol=1e-6)
    y.sum().backward()
    assert (x.grad[1:4] > 0.99).all()


def test_kl_of_equal_gaussians_with_huge_variances_is_zero_as_torch_says():
    # exp(89) overflows float32 and exp(-110) underflows it: the ratio sigma_q²/sigma_p² must be formed as one exp.
    for logvar in (89.0, 110.0, -89.0):
        mu = torch.tensor([0.0, 3.0, -2.0])
        logvar_t = torch.full((3,), logvar)
        ours = objectives.gaussian_kl(mu, logvar_t, mu, logvar_t)
        scale = (0.5 * logvar_t).exp()
        reference = kl_divergence(Normal(mu, scale), Normal(mu, scale))
        torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
        assert torch.equal(ours, torch.zeros(3))
    # Different large variances and means still match torch.distributions.
    mu_q, mu_p = torch.tensor([1.0, -4.0]), torch.tensor([0.5, 2.0])
    logvar_q, logvar_p = torch.tensor([95.0, 60.0]), torch.tensor([94.0, 61.0])
    reference = kl_divergence(Normal(mu_q, (0.5 * logvar_q).exp()), Normal(mu_p, (0.5 * logvar_p).exp()))
    torch.testing.assert_close(objectives.gaussian_kl(mu_q, logvar_q, mu_p, logvar_p), reference)


def test_likelihoods_score_k_outputs_per_image_against_the_image_by_broadcasting():
    g = torch.Generator().manual_seed(8)
    k, b, shape = 4, 3, (2, 3, 3)
    logits, target = torch.randn(k, b, *shape, generator=g) * 3, torch.rand(b, *shape, generator=g)
    logvar = torch.randn(shape, generator=g)
    expanded = target.expand(k, *target.shape).reshape(k * b, *shape)
    bernoulli = objectives.bernoulli_log_likelihood(logits, target)  # (K, B)
    reference = Bernoulli(logits=logits.reshape(k * b, *shape)).log_prob(expanded.round()).flatten(1).sum(1)
    torch.testing.assert_close(objectives.bernoulli_log_likelihood(logits, target.round()), reference.view(k, b))
    assert bernoulli.shape == (k, b)
    mean = torch.sigmoid(logits)
    gaussian = objectives.gaussian_log_likelihood(mean, logvar, target)
    reference = Normal(mean.reshape(k * b, *shape), (0.5 * logvar).exp()).log_prob(expanded).flatten(1).sum(1)
    torch.testing.assert_close(gaussian, reference.view(k, b))
    for wrong in (torch.rand(b + 1, *shape), torch.rand(b, 2, 3, 4)):  # other images, or another image shape
        with pytest.raises(ValueError, match="do not end with the target's"):
            objectives.bernoulli_log_likelihood(logits, wrong)
        with pytest.raises(ValueError, match="do not end with the target's"):
            objectives.gaussian_log_likelihood(mean, 0.0, wrong)


# ----- the discretised logistic likelihood of 8-bit pixels (Salimans et al. 2017) and bits per dimension -----

LEVELS = torch.arange(256, dtype=torch.float64) / 255  # every 8-bit value, as the data holds it


def _logistic_parameters(seed, n=40):
    """Means around [0, 1] and log scales from far below a bin (1/255) to far above the whole range."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.rand(n, 1, generator=g, dtype=torch.float64) * 1.6 - 0.3
    log_scale = torch.rand(n, 1, generator=g, dtype=torch.float64) * 16 - 10
    return mean, log_scale


def test_discretised_logistic_sums_to_one_over_the_256_levels():
    mean, log_scale = _logistic_parameters(0)
    probs = objectives.discretized_logistic_log_prob(LEVELS, mean, log_scale).exp()  # (n, 256)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(mean), dtype=torch.float64), rtol=0, atol=1e-12)


def test_discretised_logistic_matches_differences_of_the_logistic_cdf():
    from scipy.stats import logistic

    mean, log_scale = _logistic_parameters(1)
    x, m, s = LEVELS.numpy(), mean.numpy(), np.exp(log_scale.numpy())
    # P(k) = F(x + 1/510) - F(x - 1/510), with F(-inf) = 0 below level 0 and F(+inf) = 1 above level 255.
    top = np.where(x < 1, logistic.cdf(x + 0.5 / 255, m, s), 1.0)
    bottom = np.where(x > 0, logistic.cdf(x - 0.5 / 255, m, s), 0.0)
    ours = objectives.discretized_logistic_log_prob(LEVELS, mean, log_scale).exp().numpy()
    np.testing.assert_allclose(ours, top - bottom, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("level,mean,log_scale", [(10, 0.9, -7.0), (128, 0.5, 9.0), (0, 1.2, -9.0), (255, 0.0, -6.0)])
def test_discretised_logistic_stays_exact_where_cdf_differences_underflow(level, mean, log_scale):
    import mpmath

    mpmath.mp.dps = 1000  # enough digits that 1 - F(t) keeps e^-400
    x, s = mpmath.mpf(level) / 255, mpmath.exp(log_scale)
    cdf = lambda t: 1 / (1 + mpmath.exp(-(t - mean) / s))  # noqa: E731
    top = cdf(x + mpmath.mpf(1) / 510) if level < 255 else 1
    bottom = cdf(x - mpmath.mpf(1) / 510) if level > 0 else 0
    expected = float(mpmath.log(top - bottom))
    for dtype in (torch.float64, torch.float32):
        ours = objectives.discretized_logistic_log_prob(
            torch.tensor(level / 255, dtype=dtype),
            torch.tensor(mean, dtype=dtype),
            torch.tensor(log_scale, dtype=dtype),
        )
        assert math.isfinite(ours.item())
        assert ours.item() == pytest.approx(expected, rel=1e-5 if dtype == torch.float32 else 1e-10, abs=1e-6)


def test_discretised_logistic_has_finite_gradients_for_any_scale_in_float32():
    # Scales from 1e-9 to 7e10 (log scale -20..25): torch.where's unused branch must not leak 0 * inf = NaN.
    x = LEVELS.float().repeat(10)
    log_scale = torch.linspace(-20, 25, 10).repeat_interleave(256).requires_grad_()
    mean = torch.full_like(x, 0.4, requires_grad=True)
    log_p = objectives.discretized_logistic_log_prob(x, mean, log_scale)
    log_p.sum().backward()
    assert torch.isfinite(log_p).all() and torch.isfinite(log_scale.grad).all() and torch.isfinite(mean.grad).all()


def test_logistic_mixture_sums_to_one_over_every_colour_of_a_pixel():
    # Two channels: all 256 x 256 colours of each of 3 pixels, K = 4 components with shared weights.
    g = torch.Generator().manual_seed(2)
    k, c = 4, 2
    log_weights = torch.randn(3, k, 1, 1, generator=g, dtype=torch.float64) * 2  # (P, K, H, W)
    means = torch.rand(3, k, c, 1, 1, generator=g, dtype=torch.float64)
    log_scales = torch.rand(3, k, c, 1, 1, generator=g, dtype=torch.float64) * 6 - 7
    red, green = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    colours = torch.stack([red.flatten(), green.flatten()], 1)[:, None, :, None, None]  # (65536, 1, C, 1, 1)
    log_p = objectives.discretized_logistic_mixture_log_prob(
        colours, log_weights, means, log_scales
    )  # (65536, P, 1, 1)
    torch.testing.assert_close(log_p.exp().sum(0).flatten(), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-10)


def test_logistic_mixture_is_the_weighted_sum_of_products_of_channel_probabilities():
    from scipy.stats import logistic

    g = torch.Generator().manual_seed(3)
    k, c, h, w = 3, 3, 2, 2
    x = torch.randint(0, 256, (c, h, w), generator=g).double() / 255
    log_weights = torch.randn(k, h, w, generator=g, dtype=torch.float64)
    means = torch.rand(k, c, h, w, generator=g, dtype=torch.float64)
    log_scales = torch.rand(k, c, h, w, generator=g, dtype=torch.float64) * 3 - 4
    ours = objectives.discretized_logistic_mixture_log_prob(x, log_weights, means, log_scales).exp().numpy()
    xs, m, s = x.numpy()[None], means.numpy(), np.exp(log_scales.numpy())
    top = np.where(xs < 1, logistic.cdf(xs + 0.5 / 255, m, s), 1.0)
    bottom = np.where(xs > 0, logistic.cdf(xs - 0.5 / 255, m, s), 0.0)
    pi = torch.softmax(log_weights, 0).numpy()
    np.testing.assert_allclose(ours, (pi * (top - bottom).prod(1)).sum(0), rtol=1e-10)


def test_clipped_logistic_mean_is_within_half_a_level_of_the_discretised_mean():
    mean, log_scale = _logistic_parameters(4, n=200)
    exact = (objectives.discretized_logistic_log_prob(LEVELS, mean, log_scale).exp() * LEVELS).sum(1)  # (n,)
    ours = objectives.clipped_logistic_mean(mean, log_scale).squeeze(1)
    assert (ours - exact).abs().max() <= 0.5 / 255
    assert ours.min() >= 0 and ours.max() <= 1


def test_bits_per_dim_by_hand():
    # 3x32x32 images at 3000 nats each: 3000 / (3072 ln 2) = 3000 / 2129.34814 bits per dimension.
    assert objectives.bits_per_dim(3000.0, 3072) == pytest.approx(3000 / 2129.34814, rel=1e-8)
    # A density of 1 on [0, 1] for one pixel: -log p = 0 nats, so exactly the 8 bits of a uniform byte.
    assert objectives.dequantised_bits_per_dim(0.0, 1) == pytest.approx(8.0, rel=1e-12)
    # Two pixels at -5 nats of density: (-5 + 2 ln 256) / (2 ln 2) = 8 - 5 / (2 ln 2).
    assert objectives.dequantised_bits_per_dim(-5.0, 2) == pytest.approx(8 - 5 / (2 * math.log(2)), rel=1e-12)


def test_uniform_dequantisation_spreads_each_level_over_its_own_cell_of_side_one_256th():
    x = LEVELS.repeat(200)
    y = objectives.uniform_dequantise(x, torch.Generator().manual_seed(0))
    offset = (y - x) * 256
    assert offset.min() >= -0.5 and offset.max() < 0.5 and abs(offset.mean().item()) < 0.02
    # Each noisy value still rounds to its own level: the cells of neighbouring levels do not overlap.
    torch.testing.assert_close(torch.round(y * 255), torch.round(x * 255))


def test_gaussian_dequantised_bound_is_above_the_exact_discrete_probability_of_a_one_pixel_model():
    # A one-pixel model with a discrete latent j: p(y) = sum_j pi_j N(y; m_j, sigma_j²), components from a tenth of
    # a bin wide to far wider, so its density and the mass P(k) it puts on the cell of side 1/256 around each level
    # (where uniform_dequantise spreads the level) are exact: P(k) = sum_j pi_j [Phi_j(x + 1/512) - Phi_j(x - 1/512)].
    pi = torch.tensor([0.3, 0.2, 0.2, 0.2, 0.1], dtype=torch.float64)
    component = Normal(
        torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0], dtype=torch.float64),
        torch.tensor([0.0004, 0.003, 0.01, 0.05, 0.2], dtype=torch.float64),
    )
    x = LEVELS[:, None]  # (256, 1)
    cell = component.cdf(x + 0.5 / 256) - component.cdf(x - 0.5 / 256)  # (256, J)
    exact_bits = -torch.log((pi * cell).sum(1)) / math.log(2)  # -log2 P(k), D = 1
    u = (torch.arange(20_000, dtype=torch.float64) + 0.5) / 20_000 - 0.5  # midpoints across the cell, in 1/256ths
    y = x[:, :, None] + u[None, :, None] / 256  # (256, U, 1)
    nll_density = -torch.logsumexp(torch.log(pi) + component.log_prob(y), -1).mean(1)  # E_u[-log p(x + u)], (256,)
    bound = objectives.dequantised_bits_per_dim(nll_density, 1)
    assert (bound >= exact_bits - 1e-9).all()
    # Tight where the density is smooth across the cell, loose where a component is narrower than the cell.
    assert (bound - exact_bits).min() < 1e-4 and (bound - exact_bits).max() > 0.1
