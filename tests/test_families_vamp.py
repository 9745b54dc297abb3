"""The VampPrior family (Tomczak & Welling 2018): its prior's density and sampler against torch.distributions,
its KL estimate against quadrature, its bounds, pictures and commands."""

import json
import math

import numpy as np
import pytest
import torch
from torch import distributions as D

from vaelab import RunConfig, bounds, figures, train
from vaelab.evaluate import per_image_loss_parts
from vaelab.explorer import explorer_payload
from vaelab.families.vamp import Vamp, VampPrior
from vaelab.figures import FigureOptions, RunView, make_figure, why_not
from vaelab.models import build_model


def small_vamp(z_dim: int = 3, pseudo_inputs: int = 7, seed: int = 0) -> Vamp:
    torch.manual_seed(seed)
    config = RunConfig(model="vamp", data="digits", z_dim=z_dim, hidden=[32], pseudo_inputs=pseudo_inputs)
    model = build_model(config, (1, 8, 8))
    with torch.no_grad():  # pseudo-inputs spread over and beyond [0, 1], so the clamp and distinct components count
        model.prior.raw_pseudo_inputs.uniform_(-0.5, 1.5)
    return model


def torch_mixture(model: Vamp) -> D.MixtureSameFamily:
    """The VampPrior built independently: the encoder at the clamped pseudo-inputs, mixed by torch.distributions."""
    mu, logvar = model.encode(model.prior.raw_pseudo_inputs.clamp(0, 1))  # (K, Z) each
    components = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1)
    return D.MixtureSameFamily(D.Categorical(logits=torch.zeros(len(mu))), components)


@pytest.fixture(scope="module")
def vamp2d_run(tmp_path_factory, digits):
    """A VampPrior VAE with a 2-D latent and 20 pseudo-inputs, trained 2 epochs on digits."""
    config = RunConfig(
        model="vamp", data="digits", z_dim=2, pseudo_inputs=20, epochs=2, hidden=[64], batch_size=64, seed=0
    )
    return train(config, tmp_path_factory.mktemp("vamp_z2"), data=digits, progress=False)


@pytest.mark.parametrize("shape", [(3,), (5, 3), (4, 6, 3)])
def test_vamp_prior_log_prob_matches_torch_mixture(shape):
    model = small_vamp()
    z = 2 * torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = torch_mixture(model).log_prob(z).numpy()
        assert model.prior.log_prob(z).numpy() == pytest.approx(reference, abs=1e-5)
        assert model.prior.frozen()(z).numpy() == pytest.approx(reference, abs=1e-5)  # what the IWAE bound scores


def test_vamp_prior_log_prob_stays_finite_far_from_every_component():
    model = small_vamp()
    z = torch.full((2, 3), 1e3)
    with torch.no_grad():
        log_p = model.prior.log_prob(z)
        assert torch.isfinite(log_p).all()
        assert log_p == pytest.approx(torch_mixture(model).log_prob(z), rel=1e-5)


def two_component_prior() -> VampPrior:
    """Two pseudo-inputs (all zeros, all ones) that a fixed encoder maps to N((-10, 0), 0.5²) and N((10, 0), 2²)."""

    def encode(u):
        level = u.flatten(1).mean(1, keepdim=True)  # (K, 1): 0 or 1
        mu = torch.cat([20 * level - 10, torch.zeros_like(level)], 1)
        logvar = (2 * torch.log(0.5 + 1.5 * level)).expand(-1, 2)
        return mu, logvar

    prior = VampPrior(encode, 2, (1, 2, 2), z_dim=2)
    with torch.no_grad():
        prior.raw_pseudo_inputs.copy_(torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)]))
    return prior


def test_vamp_prior_samples_follow_the_mixture():
    n = 20000
    prior = two_component_prior()
    global_state = torch.get_rng_state()
    z = prior.sample(n, torch.Generator().manual_seed(0))  # (n, 2)
    assert torch.equal(torch.get_rng_state(), global_state)  # every draw came from the generator
    assert torch.equal(z, prior.sample(n, torch.Generator().manual_seed(0)))
    left = z[:, 0] < 0
    share = left.double().mean().item()
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / n)
    for part, centre, std in ((z[left], -10.0, 0.5), (z[~left], 10.0, 2.0)):
        m = len(part)
        assert part.mean(0).numpy() == pytest.approx([centre, 0.0], abs=4 * std / math.sqrt(m))
        # the sample variance's standard error is about var * sqrt(2 / m)
        assert part.var(0).numpy() == pytest.approx([std**2] * 2, abs=4 * std**2 * math.sqrt(2 / m))


def test_vamp_marginal_quantiles_invert_the_mixtures_cdf():
    model = small_vamp()
    levels = torch.tensor([0.01, 0.05, 0.3, 0.5, 0.9, 0.99])
    quantiles = model.prior.marginal_quantiles(levels)  # (L, Z)
    mixture = torch_mixture(model)
    with torch.no_grad():
        for d in range(model.z_dim):
            component = mixture.component_distribution.base_dist
            marginal = D.MixtureSameFamily(
                mixture.mixture_distribution, D.Normal(component.loc[:, d].double(), component.scale[:, d].double())
            )
            assert marginal.cdf(quantiles[:, d].double()).numpy() == pytest.approx(levels.numpy(), abs=1e-5)


def test_vamp_kl_is_log_q_minus_log_p_at_the_sampled_z():
    model = small_vamp()
    x = torch.rand(5, 1, 8, 8)
    torch.manual_seed(3)
    with torch.no_grad():
        terms = model.loss_parts(x)
        mu, logvar = model.encode(x)
        torch.manual_seed(3)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # the z loss_parts drew
        log_q = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z)
        expected = log_q - torch_mixture(model).log_prob(z)
    assert terms.kl_per_dim.shape == (5, 1)
    assert terms.kl_per_dim[:, 0] == pytest.approx(expected, abs=1e-4)


def test_vamp_kl_estimate_averages_to_the_kl_by_quadrature():
    """E_q[log q(z|x) - log p(z)] over many samples against KL(q || p) integrated on a fine 2-D grid."""
    model = small_vamp(z_dim=2, pseudo_inputs=5)
    n = 20000
    x = torch.rand(1, 1, 8, 8).expand(n, -1, -1, -1)
    torch.manual_seed(0)
    with torch.no_grad():
        estimates = model.loss_parts(x).kl().double()  # (n,)
        mu, logvar = (t[0].double() for t in model.encode(x[:1]))
        std = torch.exp(0.5 * logvar)
        axes = [torch.linspace(m - 9 * s, m + 9 * s, 801, dtype=torch.float64) for m, s in zip(mu, std)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)  # (801, 801, 2)
        log_q = D.Independent(D.Normal(mu, std), 1).log_prob(grid)
        mixture = torch_mixture(model)
        component = mixture.component_distribution.base_dist
        mixture = D.MixtureSameFamily(
            mixture.mixture_distribution,
            D.Independent(D.Normal(component.loc.double(), component.scale.double()), 1),
        )
        cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
        kl = (log_q.exp() * (log_q - mixture.log_prob(grid))).sum() * cell
    se = estimates.std() / math.sqrt(n)
    assert estimates.mean().item() == pytest.approx(kl.item(), abs=4 * se.item())


def test_vamp_gradients_reach_the_pseudo_inputs_and_the_encoder_through_the_prior():
    model = small_vamp()
    with torch.no_grad():  # inside [0, 1], where the hardtanh passes gradients
        model.prior.raw_pseudo_inputs.uniform_(0.1, 0.9)
    z = torch.randn(4, 3)
    model.prior.log_prob(z).sum().backward()  # z fixed: only the prior's path
    assert model.prior.raw_pseudo_inputs.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())


def test_vamp_iwae_bound_is_above_its_elbo_and_equals_it_at_k_1(vamp2d_run, digits):
    model, x = vamp2d_run.model, digits.x_test[:200]
    neg_elbo = per_image_loss_parts(model, x).recon + per_image_loss_parts(model, x).kl()
    l_1 = bounds.iwae_bound(model, x, 1, generator=torch.Generator().manual_seed(1))
    l_20 = bounds.iwae_bound(model, x, 20, generator=torch.Generator().manual_seed(2))
    # L_1 is an ELBO estimate with other noise: the same mean only when the bound scores z with the mixture
    gap = l_1 + neg_elbo
    assert abs(gap.mean().item()) < 4 * gap.std().item() / math.sqrt(len(x))
    assert l_20.mean() > -neg_elbo.mean()


def test_vamp_pictures_use_its_prior(vamp2d_run, digits):
    view = RunView("vamp", vamp2d_run, digits, digits.x_test)
    assert "not a product" in why_not("kl", view)
    z1, z2 = figures.prior_quantiles(vamp2d_run.model, 5)
    expected = vamp2d_run.model.prior.marginal_quantiles(torch.linspace(0.05, 0.95, 5, dtype=torch.float64))
    assert torch.equal(z1, expected[:, 0]) and torch.equal(z2, expected[:, 1])
    for kind in ("manifold", "posterior", "samples", "latent", "recon"):
        make_figure(kind, [view], FigureOptions(n=4))
    payload = explorer_payload(vamp2d_run, digits)
    assert payload["prior_centre"] is None  # no N(0, I) circles around a mixture


def test_vamp_prior_samples_decode_the_mixtures_draws(vamp2d_run):
    model = vamp2d_run.model
    from vaelab.evaluate import decode_random_points

    images = decode_random_points(model, 6, "prior", np.zeros((2, 2)), seed=4)
    with torch.no_grad():
        expected = model.decode_mean(model.prior.sample(6, torch.Generator().manual_seed(4)))
    assert images == pytest.approx(expected, abs=1e-6)


def test_vamp_trains_and_evaluates_from_the_command_line(tmp_path, cli):
    run = tmp_path / "vamp"
    common = ["--data", "digits", "--quiet"]
    done = cli(
        "train",
        "--model",
        "vamp",
        "--pseudo-inputs",
        "20",
        "--epochs",
        "1",
        "--hidden",
        "32",
        "--out",
        str(run),
        *common,
    )
    assert done.returncode == 0, done.stderr
    done = cli(
        "evaluate", str(run), "--k", "10", "--skip-samples", "--skip-latent", "-o", str(tmp_path / "eval.json"), *common
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "eval.json").read_text())
    generation = result["generation"]
    assert generation["nll_iwae_nats"] <= generation["neg_elbo_nats"] + 3 * generation["neg_elbo_nats_se"]
    assert result["per_dimension"]["kl_nats"] is None
