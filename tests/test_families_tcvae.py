"""beta-TCVAE (Chen et al. 2018): the minibatch-weighted estimates of log q(z) and log prod_d q(z_d) against the
aggregate posterior as a torch.distributions mixture, the KL decomposition against quadrature on a grid, the
objective's terms, and a real train + evaluate."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from vaelab.config import RunConfig
from vaelab.models import build_model
from vaelab.noise import ImageNoise
from vaelab.objectives import tc_decomposition
from vaelab.runs import load_run


def _posteriors(m: int, z_dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """M diagonal Gaussians N(mu, diag exp(logvar)), float64, with sigma in [0.4, 1]."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(m, z_dim, generator=g, dtype=torch.float64) * 3 - 1.5
    logvar = 2 * torch.log(0.4 + 0.6 * torch.rand(m, z_dim, generator=g, dtype=torch.float64))
    return mu, logvar


def _aggregate(mu: torch.Tensor, logvar: torch.Tensor) -> tuple[MixtureSameFamily, MixtureSameFamily]:
    """The batch's aggregate posterior (1/M) sum_j q(z|x_j), and its M-component marginals, batched over dims."""
    weights = Categorical(torch.ones(len(mu), dtype=mu.dtype))
    std = torch.exp(0.5 * logvar)
    joint = MixtureSameFamily(weights, Independent(Normal(mu, std), 1))
    per_dim = MixtureSameFamily(Categorical(torch.ones(mu.shape[1], len(mu), dtype=mu.dtype)), Normal(mu.T, std.T))
    return joint, per_dim  # per_dim.log_prob takes (..., Z): dimension d's mixture scores z_d


@pytest.mark.parametrize("n_images", [5, 1000])
def test_mws_estimates_are_the_aggregate_posterior_over_n(n_images):
    # With the batch's mixture (1/M) sum_j q(z|x_j): MWS's log q(z) = log mixture - log N, each dimension alike.
    m, z_dim = 5, 3
    mu, logvar = _posteriors(m, z_dim)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(m, z_dim, generator=torch.Generator().manual_seed(1), dtype=mu.dtype)
    joint, per_dim = _aggregate(mu, logvar)
    log_qz = joint.log_prob(z) - math.log(n_images)
    log_prod = (per_dim.log_prob(z) - math.log(n_images)).sum(-1)
    log_qz_given_x = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z)
    log_pz = Independent(Normal(torch.zeros_like(z), 1.0), 1).log_prob(z)
    mi, tc, dim_kl = tc_decomposition(z, mu, logvar, n_images)
    torch.testing.assert_close(mi, log_qz_given_x - log_qz)
    torch.testing.assert_close(tc, log_qz - log_prod)
    torch.testing.assert_close(dim_kl, log_prod - log_pz)


def _grid_decomposition(mu: torch.Tensor, logvar: torch.Tensor, half_width: float = 7.0, points: int = 701):
    """(MI, TC, dimension-wise KL) of the aggregate posterior of 2-D posteriors, by quadrature on a grid."""
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    cell = (axis[1] - axis[0]).item()
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1)  # (P, P, 2)
    std = torch.exp(0.5 * logvar)
    log_q_given = Independent(Normal(mu, std), 1).log_prob(grid.unsqueeze(-2))  # (P, P, M)
    log_q = torch.logsumexp(log_q_given, -1) - math.log(len(mu))  # (P, P)
    log_marginal = torch.logsumexp(Normal(mu, std).log_prob(axis[:, None, None]), 1) - math.log(len(mu))  # (P, 2)
    mi = (log_q_given.exp() * (log_q_given - log_q.unsqueeze(-1))).sum((0, 1)).mean() * cell**2
    tc = (log_q.exp() * (log_q - log_marginal[:, None, 0] - log_marginal[None, :, 1])).sum() * cell**2
    log_normal = Normal(0.0, 1.0).log_prob(axis)[:, None]
    dim_kl = (log_marginal.exp() * (log_marginal - log_normal)).sum() * cell
    return mi.item(), tc.item(), dim_kl.item()


def test_mws_terms_average_to_the_kl_decomposition_when_the_batch_is_the_data_set():
    # N = M: the batch is the data set, so MWS is exact up to its constants (objectives.tc_decomposition):
    # MI + log M, TC + (D - 1) log M, dim-KL - D log M. Monte Carlo means against quadrature; their sum against the
    # closed-form mean KL (Chen et al. 2018, eq. 2).
    m, z_dim, k = 3, 2, 20_000
    mu, logvar = _posteriors(m, z_dim, seed=2)
    eps = torch.randn(k, m, z_dim, generator=torch.Generator().manual_seed(3), dtype=mu.dtype)
    z = mu + torch.exp(0.5 * logvar) * eps  # (K, M, Z): K draws per image
    mi, tc, dim_kl = (term.mean().item() for term in tc_decomposition(z, mu, logvar, m))
    log_m = math.log(m)
    exact = _grid_decomposition(mu, logvar)
    estimated = (mi - log_m, tc - (z_dim - 1) * log_m, dim_kl + z_dim * log_m)
    assert estimated == pytest.approx(exact, abs=0.03)
    mean_kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1).mean().item()
    assert sum(exact) == pytest.approx(mean_kl, abs=1e-3)
    assert mi + tc + dim_kl == pytest.approx(mean_kl, abs=0.03)


def test_loss_is_recon_plus_mi_plus_beta_tc_plus_dim_kl_and_the_terms_add_up_to_log_q_over_p():
    config = RunConfig(model="beta-tcvae", data="digits", z_dim=3, hidden=[16])
    torch.manual_seed(0)
    model = build_model(config, (1, 8, 8))
    model.set_training_size(1000)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = lambda: ImageNoise(7, len(x), slice(0, len(x)), torch.device("cpu"))  # noqa: E731 - the same draws
    with torch.no_grad():
        one, six = (model.loss_parts(x, noise=noise(), beta=beta) for beta in (1.0, 6.0))
        mu, logvar = model.encode(x)
    mi, tc, dim_kl = one.extra["mi"], one.extra["tc"], one.extra["dim_kl"]
    torch.testing.assert_close(one.per_image_loss(1.0), one.recon + mi + tc + dim_kl)
    torch.testing.assert_close(six.per_image_loss(6.0), six.recon + mi + 6 * tc + dim_kl)
    z = mu + torch.exp(0.5 * logvar) * noise().normal_like(mu)
    log_ratio = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z) - Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(mi + tc + dim_kl, log_ratio, rtol=1e-4, atol=1e-4)
    # reported without MWS's constants at N = M (log M, (D - 1) log M, -D log M): what the grid test checks exact
    raw_mi, raw_tc, raw_dim_kl = tc_decomposition(z, mu, logvar, 1000)
    log_m = math.log(len(x))
    torch.testing.assert_close((mi, tc, dim_kl), (raw_mi - log_m, raw_tc - 2 * log_m, raw_dim_kl + 3 * log_m))
    torch.testing.assert_close(one.kl(), kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(1))


def test_train_records_the_training_set_size_and_evaluate_reports_the_elbo(tmp_path, cli, digits):
    run = tmp_path / "tc"
    flags = ("--data", "digits", "--epochs", "1", "--z-dim", "4", "--hidden", "32", "--beta", "6", "--quiet")
    done = cli("train", "--model", "beta-tcvae", *flags, "--out", str(run))
    assert done.returncode == 0, done.stderr
    done = cli("evaluate", str(run), "--skip-iwae", "--skip-samples", "--skip-latent")
    assert done.returncode == 0, done.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["model"] == "beta-tcvae" and math.isfinite(result["generation"]["neg_elbo_nats"])
    assert int(load_run(run).model.dataset_size) == len(digits.pixels_train)  # N saved with the checkpoint
