"""The IWAE family: its training objective is -L_K (Burda et al. 2016, eq. 8) with the gradient of eq. 14."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from vaelab import RunConfig
from vaelab.bounds import iwae_bound
from vaelab.errors import VaelabError
from vaelab.families.iwae import IWAE
from vaelab.families.vae import VAE
from vaelab.noise import ImageNoise

SHAPE = (1, 8, 8)
Z_DIM = 3
CPU = torch.device("cpu")


def _model(family=IWAE, k_train=4, seed=0):
    torch.manual_seed(seed)
    fields = dict(k_train=k_train) if family is IWAE else {}
    return family(SHAPE, RunConfig(model=family.kind, hidden=[16], z_dim=Z_DIM, **fields))


def _images(n=6, seed=1):
    return (torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed)) < 0.4).float()


def _noise(seed, global_size, rows=None):
    return ImageNoise(seed, global_size, rows or slice(0, global_size), CPU)


def _eps(seed, n, k):
    """The eps ImageNoise(seed, n) gives the IWAE: drawn (B, K, Z), one row per image, used as (K, B, Z)."""
    return torch.randn((n, k, Z_DIM), generator=torch.Generator().manual_seed(seed)).transpose(0, 1)


def _reference_log_weights(model, x, eps):
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) with torch.distributions, z_k = mu + sigma eps_k.  # (K, B)"""
    mu, logvar = model.encode(x)
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = mu + q.scale * eps  # (K, B, Z)
    logits = model.decoder(z.reshape(-1, Z_DIM)).reshape(*z.shape[:2], *SHAPE)
    log_px = Bernoulli(logits=logits).log_prob(x).flatten(2).sum(-1)
    return log_px + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)


def _grads(model, loss):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])


def test_iwae_gradient_is_autograd_of_a_logsumexp_bound_and_burdas_eq14():
    model, x = _model(k_train=5), _images()
    trained = _grads(model, model.loss_parts(x, noise=_noise(3, len(x))).objective.sum())

    log_w = _reference_log_weights(model, x, _eps(3, len(x), 5))
    bound = torch.logsumexp(log_w, 0) - math.log(5)
    assert torch.allclose(trained, _grads(model, -bound.sum()), rtol=1e-4, atol=1e-5)

    # eq. 14: sum_k w~_k grad log w_k, the normalised weights held constant in the sum.
    log_w = _reference_log_weights(model, x, _eps(3, len(x), 5))
    normalised = torch.softmax(log_w, 0).detach()
    assert torch.allclose(trained, _grads(model, -(normalised * log_w).sum()), rtol=1e-4, atol=1e-5)

    # PyTorch-VAE's IWAE (#34, PR #53): sum_k w~_k log w_k with w~ left in the graph adds sum_k log w_k grad w~_k.
    log_w = _reference_log_weights(model, x, _eps(3, len(x), 5))
    wrong = _grads(model, -(torch.softmax(log_w, 0) * log_w).sum())
    assert (wrong - trained).norm() > 0.1 * trained.norm()


def test_iwae_with_one_sample_is_the_vae_with_a_sampled_kl():
    iwae, x = _model(k_train=1), _images()
    vae = _model(VAE)
    vae.load_state_dict(iwae.state_dict())
    ours, theirs = iwae.loss_parts(x, noise=_noise(5, len(x))), vae.loss_parts(x, noise=_noise(5, len(x)))
    # The same z for the same noise: the same reconstruction term, and the same closed-form KL.
    assert torch.allclose(ours.recon, theirs.recon, rtol=1e-6)
    assert torch.equal(ours.kl_per_dim, theirs.kl_per_dim)
    # L_1 = log p(x|z) + log p(z) - log q(z|x): the KL sampled at z_1 instead of the VAE's closed form ...
    mu, logvar = iwae.encode(x)
    z = mu + torch.exp(0.5 * logvar) * _eps(5, len(x), 1)[0]
    sampled_kl = (Normal(mu, torch.exp(0.5 * logvar)).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)
    assert torch.allclose(ours.objective, ours.recon + sampled_kl, rtol=1e-5)
    # ... whose mean over draws is the VAE's loss: 400 draws per image of objective - (recon + KL), mean zero.
    many = x.repeat(400, 1, 1, 1)
    with torch.no_grad():
        terms = iwae.loss_parts(many, noise=_noise(6, len(many)))
    gap = terms.objective - terms.recon - terms.kl()
    assert gap.mean().abs() < 4 * gap.std() / math.sqrt(len(gap))


@torch.no_grad()
def test_iwae_objective_is_minus_the_iwae_bound_for_the_same_draws():
    model, x = _model(k_train=7), _images(4)
    for i in range(len(x)):  # one image a call: iwae_bound's (K, 1, Z) draw is then ImageNoise's (1, K, Z)
        objective = model.loss_parts(x[i : i + 1], noise=_noise(11 + i, 1)).objective
        bound = iwae_bound(model, x[i : i + 1], 7, generator=torch.Generator().manual_seed(11 + i))
        assert torch.allclose(-objective.double(), bound, atol=1e-4)


@torch.no_grad()
def test_iwae_objective_per_image_does_not_depend_on_how_the_batch_is_split():
    model, x = _model(k_train=3), _images(7)
    whole = model.loss_parts(x, noise=_noise(2, 7)).objective
    first = model.loss_parts(x[:3], noise=_noise(2, 7, slice(0, 3))).objective
    second = model.loss_parts(x[3:], noise=_noise(2, 7, slice(3, 7))).objective
    assert torch.allclose(torch.cat([first, second]), whole, rtol=1e-6)


@pytest.mark.parametrize("setting", [dict(beta=2.0), dict(free_bits=0.5), dict(kl_warmup=2)])
def test_config_refuses_kl_settings_for_iwae(setting):
    with pytest.raises(VaelabError, match="do not apply"):
        RunConfig(model="iwae", **setting).validate()


def test_cli_trains_and_evaluates_an_iwae_and_refuses_beta(cli, tmp_path):
    run = tmp_path / "iwae"
    small = ("--data", "digits", "--hidden", "32", "--z-dim", "4", "--batch-size", "64")
    trained = cli("train", "--model", "iwae", "--k-train", "3", "--epochs", "1", *small, "--out", str(run))
    assert trained.returncode == 0, trained.stderr
    assert json.loads((run / "config.json").read_text())["k_train"] == 3
    evaluated = cli("evaluate", str(run), "--k", "20", "--skip-samples", "--skip-latent", "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    values = json.loads((run / "eval.json").read_text())["generation"]
    # L_20 >= the ELBO in expectation; the test loss is -L_3, also at most the negative ELBO up to noise.
    assert values["nll_iwae_nats"] <= values["neg_elbo_nats"] + 1.0
    refused = cli("train", "--model", "iwae", "--beta", "2", *small, "--out", str(tmp_path / "refused"))
    assert refused.returncode == 2 and "beta" in refused.stderr and "Traceback" not in refused.stderr
