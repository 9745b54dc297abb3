"""The lecture's formulas against independent references."""

import math

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
