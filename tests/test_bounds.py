"""The importance-weighted bound: ordering in K on a trained VAE, and exactness on probabilistic PCA."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from vaelab.bounds import iwae_bound
from vaelab.evaluate import per_image_loss_parts
from vaelab.priors import StandardNormal


def _mean_bound(model, x, k, seed=0, chunk_rows=16384):
    return iwae_bound(model, x, k, generator=torch.Generator().manual_seed(seed), chunk_rows=chunk_rows).mean().item()


def test_iwae_bound_is_at_least_the_elbo_and_grows_with_k(vae_run, digits):
    # All 1,797 images: the K=10 -> K=100 gain (~0.04 nats) is then >10x its spread over seeds (~1x on 360 images).
    x = torch.cat([digits.x_train, digits.x_test])
    recon, kl = per_image_loss_parts(vae_run.model, x)[:2]
    kl = kl.sum(1)
    elbo = -(recon + kl).mean().item()  # analytic KL: an estimate independent of iwae_bound
    bounds = [_mean_bound(vae_run.model, x, k) for k in (1, 10, 100)]
    assert abs(bounds[0] - elbo) < 0.5  # K = 1 is the ELBO, up to Monte Carlo noise in the KL term
    assert elbo < bounds[1] < bounds[2]


def test_iwae_bound_chunking_keeps_the_value(vae_run, digits):
    x = digits.x_test[:40]
    whole = _mean_bound(vae_run.model, x, 300)
    chunked = _mean_bound(vae_run.model, x, 300, chunk_rows=64)  # 1 image and 64 samples per chunk
    assert abs(whole - chunked) < 0.1  # different draws, same bound


class ProbabilisticPCA:
    """p(z) = N(0, I), p(x|z) = N(W z + b, s² I), so p(x) = N(b, W Wᵀ + s² I) exactly.

    q(z|x) is the exact posterior mean shifted by 0.3 with its diagonal variances doubled: a wrong proposal,
    so the ELBO is strictly below log p(x) and only growing K closes the gap.
    """

    z_dim = 2

    def __init__(self, d: int = 5, noise_std: float = 0.5, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(d, self.z_dim, generator=g, dtype=torch.float64)
        self.b = torch.randn(d, generator=g, dtype=torch.float64)
        self.s = noise_std
        self.prior = StandardNormal(self.z_dim)

    def encode(self, x, labels=None):  # the family interface: unconditional, labels are ignored
        m = self.w.T @ self.w + self.s**2 * torch.eye(self.z_dim, dtype=torch.float64)
        mu = torch.linalg.solve(m, self.w.T @ (x - self.b).T).T + 0.3  # (B, Z)
        var = self.s**2 * torch.linalg.inv(m).diagonal() * 2.0  # (Z,)
        return mu, var.log().expand_as(mu)

    def decode(self, z, labels=None):
        return z @ self.w.T + self.b  # (B, D) the Gaussian's mean

    def log_likelihood(self, mean, target):
        return torch.distributions.Normal(mean, self.s).log_prob(target).sum(-1)

    def exact_log_px(self, x):
        cov = self.w @ self.w.T + self.s**2 * torch.eye(len(self.b), dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)


def test_iwae_converges_to_the_exact_log_likelihood_of_probabilistic_pca():
    model = ProbabilisticPCA()
    cov = model.w @ model.w.T + model.s**2 * torch.eye(5, dtype=torch.float64)
    torch.manual_seed(1)
    x = torch.distributions.MultivariateNormal(model.b, cov).sample((200,))  # (B, D)
    exact = model.exact_log_px(x).mean().item()
    # chunk_rows=2000 forces the running logsumexp across chunks of samples at K = 5000.
    gaps = [exact - _mean_bound(model, x, k, chunk_rows=2000) for k in (1, 10, 1000, 5000)]
    assert gaps[0] > 1.0  # the proposal is wrong enough for the ELBO to miss by nats
    assert gaps[0] > gaps[1] > gaps[2]
    assert abs(gaps[2]) < 0.05 and abs(gaps[3]) < 0.02


def test_shared_target_bernoulli_likelihood_matches_the_expanded_one():
    from vaelab.objectives import bernoulli_log_likelihood

    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(7, 3, 1, 4, 4, generator=g) * 5, torch.rand(3, 1, 4, 4, generator=g)
    expected = bernoulli_log_likelihood(logits.reshape(21, 1, 4, 4), target.expand(7, 3, 1, 4, 4).reshape(21, 1, 4, 4))
    torch.testing.assert_close(bernoulli_log_likelihood(logits, target), expected.view(7, 3))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-learned", "logistic-mixture"])
def test_iwae_bound_equals_a_per_image_computation_with_the_same_noise(likelihood):
    from vaelab import RunConfig, build_model

    torch.manual_seed(0)
    model = build_model(RunConfig(likelihood=likelihood, z_dim=3, hidden=[16]), (1, 4, 4)).eval()
    x, k = torch.randint(0, 256, (5, 1, 4, 4)) / 255, 20  # 8-bit levels: a target every likelihood scores
    # chunk_rows = 100: all 5 images and their 20 samples in one chunk, eps drawn as one (K, B, Z) block.
    ours = iwae_bound(model, x, k, generator=torch.Generator().manual_seed(4), chunk_rows=100)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        eps = torch.randn((k, 5, 3), generator=torch.Generator().manual_seed(4))
        expected = []
        for i in range(5):  # one image at a time, its K outputs scored against K copies of it
            z = mu[i] + torch.exp(0.5 * logvar[i]) * eps[:, i]  # (K, Z)
            log_px = model.log_likelihood(model.decode(z), x[i].expand(k, 1, 4, 4))  # (K,)
            log_w = log_px + Normal(0, 1).log_prob(z).sum(1) - Normal(mu[i], (0.5 * logvar[i]).exp()).log_prob(z).sum(1)
            expected.append(torch.logsumexp(log_w.double(), 0) - math.log(k))
    torch.testing.assert_close(ours, torch.stack(expected), rtol=1e-5, atol=1e-4)
