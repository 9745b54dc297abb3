"""The models' shapes, the lecture's architecture, and the reparameterisation."""

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from vaelab import RunConfig, build_model
from vaelab.errors import VaelabError
from vaelab.models import LOGVAR_BOUND


def test_default_vae_is_the_lecture_network():
    model = build_model(RunConfig(), (1, 28, 28))
    enc = [m for m in model.encoder if not isinstance(m, nn.Flatten)]
    assert [type(m) for m in enc] == [nn.Linear, nn.LeakyReLU, nn.Linear]
    assert (enc[0].in_features, enc[0].out_features, enc[1].negative_slope, enc[2].out_features) == (784, 400, 0.2, 40)
    dec = [m for m in model.decoder if not isinstance(m, nn.Unflatten)]
    assert [type(m) for m in dec] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (dec[0].in_features, dec[0].out_features, dec[2].out_features) == (20, 400, 784)


@pytest.mark.parametrize("model_kind", ["ae", "vae"])
@pytest.mark.parametrize(
    "arch,shape",
    [
        ("mlp", (1, 8, 8)),
        ("mlp", (3, 32, 32)),
        ("conv", (1, 28, 28)),
        ("conv", (3, 32, 32)),
        ("conv", (3, 50, 70)),
        ("resnet", (3, 48, 48)),
        ("resnet", (1, 30, 30)),
    ],
)
def test_models_share_one_interface_for_any_shape(model_kind, arch, shape):
    model = build_model(RunConfig(model=model_kind, arch=arch, z_dim=3, hidden=[32, 16]), shape)
    x = torch.rand(5, *shape)
    mu, logvar = model.encode(x)
    assert mu.shape == (5, 3) and (logvar is None) == (model_kind == "ae")
    assert model.decode(mu).shape == (5, *shape)
    out = model.decode_mean(mu)
    assert out.min() >= 0 and out.max() <= 1
    recon, kl = model.loss_parts(x)
    assert recon.shape == (5,) and kl.shape == (5, 3)


@pytest.mark.parametrize("arch", ["conv", "resnet"])
def test_conv_refuses_images_smaller_than_8_px(arch):
    with pytest.raises(VaelabError, match="at least 8x8"):
        build_model(RunConfig(arch=arch), (1, 6, 30))


def test_conv_channels_set_the_widths_of_the_stages():
    model = build_model(RunConfig(arch="conv", conv_channels=[8, 12]), (3, 32, 32))
    assert [m.out_channels for m in model.encoder if isinstance(m, nn.Conv2d)] == [8, 12, 12]  # 32 -> 16 -> 8 -> 4


@pytest.mark.parametrize("arch", ["conv", "resnet"])
def test_model_builds_on_the_meta_device_as_checkpoint_checks_do(arch):
    with torch.device("meta"):  # vaelab.runs checks a checkpoint's tensors against a skeleton built this way
        model = build_model(RunConfig(arch=arch), (3, 64, 64))
    reference = build_model(RunConfig(arch=arch), (3, 64, 64))
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


def test_gradients_reach_mu_and_logvar_through_the_sample():
    model = build_model(RunConfig(z_dim=4, hidden=[16]), (1, 8, 8))
    mu = torch.zeros(3, 4, requires_grad=True)
    logvar = torch.zeros(3, 4, requires_grad=True)
    model.decode(model.reparameterize(mu, logvar)).sum().backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0


def test_reparameterised_samples_have_the_posterior_moments():
    mu, logvar = torch.tensor([[1.5, -2.0]]).expand(200_000, 2), torch.tensor([[0.0, -2.0]]).expand(200_000, 2)
    z = build_model(RunConfig(z_dim=2), (1, 8, 8)).reparameterize(mu, logvar)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.5, -2.0]), atol=0.01, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, torch.e**-1]), atol=0.01, rtol=0)


def test_vae_loss_parts_equal_an_independent_computation():
    model = build_model(RunConfig(z_dim=3, hidden=[16]), (1, 8, 8))
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(7)
    recon, kl = model.loss_parts(x)
    # Independently: the lecture's loss_fn per image, with the same noise.
    h = model.encoder(x)
    mu, raw = h.chunk(2, dim=-1)
    logvar = LOGVAR_BOUND * torch.tanh(raw / LOGVAR_BOUND)
    torch.manual_seed(7)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    p = torch.sigmoid(model.decoder(z))
    bce = nn.functional.binary_cross_entropy(p, x, reduction="none").flatten(1).sum(1)
    kld = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1)
    torch.testing.assert_close(recon, bce, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(kl.sum(1), kld, rtol=1e-5, atol=1e-5)


def test_ae_loss_is_the_lecture_squared_error():
    model = build_model(RunConfig(model="ae", z_dim=3, hidden=[16]), (1, 8, 8))
    x = torch.rand(6, 1, 8, 8)
    recon, kl = model.loss_parts(x)
    expected = ((x - torch.sigmoid(model.decoder(model.encoder(x)))) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(recon, expected)
    assert kl.abs().sum() == 0


def test_encoder_logvar_stays_finite_for_extreme_inputs():
    model = build_model(RunConfig(z_dim=3, hidden=[16]), (1, 8, 8))
    with torch.no_grad():
        model.encoder[-1].bias.fill_(1e6)
    _, logvar = model.encode(torch.rand(2, 1, 8, 8))
    assert torch.isfinite(logvar.exp()).all() and logvar.max() <= LOGVAR_BOUND


def test_learned_gaussian_variance_is_a_parameter_and_fixed_is_not():
    learned = build_model(RunConfig(likelihood="gaussian-learned", z_dim=2, hidden=[8]), (3, 4, 4))
    fixed = build_model(RunConfig(likelihood="gaussian", z_dim=2, hidden=[8]), (3, 4, 4))
    assert "raw_pixel_logvar" in dict(learned.named_parameters())
    assert not any("pixel_logvar" in name for name, _ in fixed.named_parameters())
    x = torch.rand(4, 3, 4, 4)
    expected = Normal(torch.full_like(x, 0.5), 0.1).log_prob(x).flatten(1).sum(1)  # sigmoid(0) = 0.5
    for model in (fixed, learned):  # the learned variance starts at gaussian_std
        torch.testing.assert_close(model.log_likelihood(torch.zeros_like(x), x), expected)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-learned"])
def test_vae_scores_k_decoder_outputs_per_image_like_k_separate_calls(likelihood):
    model = build_model(RunConfig(likelihood=likelihood, z_dim=2, hidden=[8]), (1, 4, 4))
    x = torch.rand(3, 1, 4, 4)
    logits = model.decode(torch.randn(5, 3, 2).flatten(0, 1)).view(5, 3, 1, 4, 4)  # (K, B, C, H, W)
    with torch.no_grad():
        together = model.log_likelihood(logits, x)  # (K, B)
        separately = torch.stack([model.log_likelihood(logits[i], x) for i in range(5)])
    torch.testing.assert_close(together, separately)


def test_loss_parts_score_the_images_themselves():
    model = build_model(RunConfig(z_dim=3, hidden=[16]), (1, 8, 8))
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(2)
    recon, _ = model.loss_parts(x)
    torch.manual_seed(2)
    mu, logvar = model.encode(x)
    expected = -model.log_likelihood(model.decode(model.reparameterize(mu, logvar)), x)
    torch.testing.assert_close(recon, expected)
    with pytest.raises(TypeError):
        model.loss_parts(x, x)  # no second argument: the target is always x
