"""Every family answers the same questions: the registry, LossTerms and the priors, whatever the model."""

import pytest
import torch
from torch.distributions import MultivariateNormal

from vaelab import RunConfig, build_model
from vaelab.compare import parse_spec
from vaelab.config import MODELS, SPEC_PARAMETERS
from vaelab.errors import VaelabError
from vaelab.families import FAMILIES
from vaelab.families.terms import LossTerms
from vaelab.models import sample_prior
from vaelab.noise import ImageNoise
from vaelab.priors import StandardNormal


def test_every_model_choice_is_a_registered_family():
    assert set(FAMILIES) == set(MODELS)
    assert all(FAMILIES[name].kind == name for name in FAMILIES)


def _model(name: str, shape=(1, 8, 8)):
    return build_model(RunConfig(model=name, z_dim=3, hidden=[16]), shape, classes=4)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_gives_per_image_loss_terms(name):
    model = _model(name)
    x = torch.rand(4, 1, 8, 8).round()
    labels = torch.tensor([0, 1, 2, 3]) if model.conditional else None
    noise = ImageNoise(0, 4, slice(0, 4), torch.device("cpu"))
    terms = model.loss_parts(x, noise=noise, labels=labels)
    assert isinstance(terms, LossTerms)
    assert terms.recon.shape == (4,)
    assert terms.kl_per_dim.shape == ((4, 3) if model.kl_per_dimension else (4, 1))
    assert all(value.shape == (4,) for value in terms.extra.values())
    loss = terms.per_image_loss(1.0)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.sum().backward()  # every family's loss is differentiable end to end
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_samples_images_from_its_prior(name):
    model = _model(name).eval()
    kwargs = {"label": 1} if model.conditional else {}
    images = sample_prior(model, 5, seed=3, **kwargs)
    assert images.shape == (5, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, sample_prior(model, 5, seed=3, **kwargs))  # the seed decides the draws


def test_loss_terms_add_up_to_the_training_loss():
    recon, kl = torch.tensor([1.0, 2.0]), torch.tensor([[0.5, 0.25], [1.0, 0.0]])
    plain = LossTerms(recon, kl)
    assert torch.equal(plain.kl(), torch.tensor([0.75, 1.0]))
    assert torch.equal(plain.per_image_loss(2.0), recon + 2.0 * torch.tensor([0.75, 1.0]))
    extra = LossTerms(recon, kl, {"commitment": torch.tensor([0.1, 0.2])})
    assert torch.allclose(extra.per_image_loss(1.0), torch.tensor([1.85, 3.2]))
    own = LossTerms(recon, kl, {"tc": torch.tensor([5.0, 5.0])}, objective=torch.tensor([7.0, 8.0]))
    assert torch.equal(own.per_image_loss(4.0), torch.tensor([7.0, 8.0]))  # the family's objective, as given


def test_standard_normal_prior_matches_torch_distributions():
    prior = StandardNormal(3)
    z = torch.randn(2, 5, 3, dtype=torch.float64)
    reference = MultivariateNormal(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    assert torch.allclose(prior.log_prob(z), reference.log_prob(z))
    draws = prior.sample(20000, torch.Generator().manual_seed(0))
    assert draws.shape == (20000, 3)
    assert draws.mean(0).abs().max() < 0.05 and (draws.var(0) - 1).abs().max() < 0.05


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("vae", ("vae", {"model": "vae"})),
        ("cvae", ("cvae", {"model": "cvae"})),
        ("beta-vae:4", ("beta-vae-4", {"model": "vae", "beta": 4.0})),
        ("iwae:5", ("iwae-5", {"model": "iwae", "k_train": 5})),
        ("vamp:500", ("vamp-500", {"model": "vamp", "pseudo_inputs": 500})),
        ("vqvae:64", ("vqvae-64", {"model": "vqvae", "codebook_size": 64})),
        ("beta-tcvae:6", ("beta-tcvae-6", {"model": "beta-tcvae", "beta": 6.0})),
    ],
)
def test_compare_specs_name_a_family_and_its_setting(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["iwae:2.5", "iwae:-1", "beta-tcvae:nan", "vae:3", "cvae:1", "beta-vae", "gan"])
def test_compare_refuses_malformed_specs(spec):
    with pytest.raises(VaelabError, match="model spec"):
        parse_spec(spec)


def test_a_family_setting_with_another_family_is_refused():
    for field, owner in (("k_train", "iwae"), ("pseudo_inputs", "vamp"), ("codebook_size", "vqvae")):
        with pytest.raises(VaelabError, match=f"{field} applies to --model {owner} only"):
            RunConfig(model="vae", **{field: 7}).validate()
        RunConfig(model=owner, **{field: 7}).validate()
    assert {owner for owner, _ in SPEC_PARAMETERS.values()} <= set(MODELS)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_evaluation_notes_name_each_familys_own_prior(name):
    from vaelab.evaluate import prior_note

    model = _model(name)
    note = prior_note(model)
    assert (note == "N(0, I)") == isinstance(model.prior, StandardNormal), note
    if model.has_bound:  # the -ELBO's note names the KL against this family's own prior
        assert ("N(0, I)" in model.kl_description) == isinstance(model.prior, StandardNormal), model.kl_description
