"""The conditional VAE (Sohn et al. 2015): the label reaches both networks, in training, sampling, evaluation and
checkpoints, and a missing or foreign label is a clear error."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Normal

from vaelab import RunConfig, build_model, load_run, train
from vaelab.bounds import iwae_bound
from vaelab.data import ImageData
from vaelab.errors import VaelabError
from vaelab.evaluate import per_image_loss_parts, sample_class_accuracy, sample_measures
from vaelab.families.cvae import CVAE
from vaelab.latent import encode_means
from vaelab.measures import SAMPLERS
from vaelab.models import sample_prior

SIDE = 8


def _patterns() -> torch.Tensor:
    """The two 8x8 images the class decides: class 0 the left half lit, class 1 the right half.  # (2, 1, 8, 8)"""
    left = torch.zeros(1, SIDE, SIDE)
    left[..., : SIDE // 2] = 1.0
    return torch.stack([left, left.flip(-1)])


def _toy(n_train: int = 160) -> ImageData:
    """n_train train and 40 test images, each its class's pattern: the label decides the image."""
    y_train, y_test = torch.arange(n_train) % 2, torch.arange(40) % 2
    return ImageData("toy", _patterns()[y_train], y_train, _patterns()[y_test], y_test)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A CVAE trained 64 steps on the toy: one epoch of 2048 images (one checkpoint, few test passes)."""
    config = RunConfig(data="toy", model="cvae", z_dim=1, hidden=[32], epochs=1, batch_size=32, lr=1e-2, seed=0)
    return train(config, tmp_path_factory.mktemp("cvae_toy"), data=_toy(2048), progress=False)


def _model(arch: str = "mlp", classes: int = 3) -> CVAE:
    torch.manual_seed(0)
    config = RunConfig(model="cvae", arch=arch, z_dim=2, hidden=[16], conv_channels=[4])
    return build_model(config, (1, SIDE, SIDE), classes).eval()


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_the_label_changes_the_encoder_and_decoder_outputs(arch):
    model = _model(arch)
    z, x = torch.randn(4, 2), torch.rand(4, 1, SIDE, SIDE)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(model.decode(z, zeros), model.decode(z, ones))
    assert not torch.allclose(model.encode(x, zeros)[0], model.encode(x, ones)[0])
    # a one-hot per image: each row depends on its own label only
    mixed = torch.tensor([0, 1, 0, 1])
    torch.testing.assert_close(model.decode(z, mixed)[::2], model.decode(z, zeros)[::2])


def test_missing_or_malformed_labels_and_unlabelled_data_are_clear_errors(tmp_path):
    model = _model()
    with pytest.raises(VaelabError, match="conditional: it needs the class label"):
        model.decode(torch.zeros(2, 2))
    with pytest.raises(VaelabError, match="expected 2 labels"):
        model.encode(torch.zeros(2, 1, SIDE, SIDE), torch.zeros(3, dtype=torch.long))
    with pytest.raises(VaelabError, match="cvae needs labelled data"):
        build_model(RunConfig(model="cvae"), (1, SIDE, SIDE))
    toy = _toy()
    unlabelled = ImageData("toy", toy.pixels_train, None, toy.pixels_test, None)
    with pytest.raises(VaelabError, match="cvae needs labelled data"):
        train(RunConfig(data="toy", model="cvae", epochs=1), tmp_path / "run", data=unlabelled, progress=False)
    assert not (tmp_path / "run").exists()


def test_sample_prior_needs_a_label_in_range_for_a_conditional_model_and_refuses_one_otherwise(vae_run):
    model = _model(classes=3)
    assert sample_prior(model, 5, seed=1, label=2).shape == (5, 1, SIDE, SIDE)
    for label, message in ((None, "say which class"), (3, "class 0..2"), (-1, "class 0..2")):
        with pytest.raises(VaelabError, match=message):
            sample_prior(model, 5, label=label)
    with pytest.raises(VaelabError, match="not conditional"):
        sample_prior(vae_run.model, 5, label=0)


def test_labels_reach_the_model_with_their_images_in_training(monkeypatch, tmp_path):
    seen = []
    loss_parts = CVAE.loss_parts

    def spy(self, x, **kwargs):
        seen.append((x.detach().clone(), kwargs["labels"].clone()))
        return loss_parts(self, x, **kwargs)

    monkeypatch.setattr(CVAE, "loss_parts", spy)
    config = RunConfig(data="toy", model="cvae", z_dim=2, hidden=[8], epochs=1, batch_size=32)
    train(config, tmp_path / "run", data=_toy(), progress=False)
    assert len(seen) == 5 + 1  # five training batches of 32, then the test split in one chunk
    for x, labels in seen:
        torch.testing.assert_close(x, _patterns()[labels])  # each image arrived with its own class


def test_a_trained_cvae_samples_the_class_it_is_asked_for(toy_run):
    patterns = _patterns().flatten(1)  # (2, D)
    for label in (0, 1):
        samples = sample_prior(toy_run.model, 40, seed=3, label=label).flatten(1)  # (40, D)
        distance = torch.cdist(samples, patterns)  # (40, 2)
        assert (distance.argmin(1) == label).float().mean() >= 0.75  # 0.85 and 0.875 when written
        assert distance[:, label].mean() < 0.5 * distance[:, 1 - label].mean()  # 1.4 against 6.6


class NearestPattern:
    """A stand-in for the sample-quality classifier: the class of the nearest pattern, as one-hot probabilities."""

    task = "labels"
    test_accuracy = 1.0

    def __init__(self, flip: bool = False):
        self.flip = flip

    def features_and_probs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        predicted = torch.cdist(images.flatten(1), _patterns().flatten(1)).argmin(1)
        if self.flip:
            predicted = 1 - predicted
        return images.flatten(1), torch.nn.functional.one_hot(predicted, 2).float()


def _class_draws(model, eps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z ~ p(z|y) = N(mu_y, diag sigma_y²) from standard normal eps, read off the prior's raw parameters (the
    log-variance soft-clamped to (-10, 10) by 10 tanh(raw / 10))."""
    with torch.no_grad():
        logvar = 10 * torch.tanh(model.prior.raw_logvar[labels] / 10)
        return model.prior.mu[labels] + torch.exp(0.5 * logvar) * eps


def _recognised(model, n: int, seed: int) -> torch.Tensor:
    """Independently: n draws z ~ p(z|y) from the seed, decoded as classes 0, 1, 0, ..., nearest pattern == class."""
    labels = torch.arange(n) % 2
    z = _class_draws(model, torch.randn(n, model.z_dim, generator=torch.Generator().manual_seed(seed)), labels)
    with torch.no_grad():
        images = model.decode_mean(z, labels)
    return (torch.cdist(images.flatten(1), _patterns().flatten(1)).argmin(1) == labels).double()


def test_sample_class_accuracy_is_the_share_recognised_as_the_requested_class(toy_run):
    expected = _recognised(toy_run.model, 30, seed=0)
    assert 0.5 < expected.mean() <= 1.0  # the toy model mostly draws the class it is asked for
    torch.testing.assert_close(sample_class_accuracy(toy_run.model, NearestPattern(), 30, seed=0), expected)
    torch.testing.assert_close(
        sample_class_accuracy(toy_run.model, NearestPattern(flip=True), 30, seed=0), 1 - expected
    )
    toy = _toy()
    codes, _ = encode_means(toy_run.model, toy.x_train, labels=toy.y_train)
    values, missing = sample_measures(toy_run.model, NearestPattern(), toy.x_test, codes, 0, toy.y_test)
    hits = _recognised(toy_run.model, 40, seed=len(SAMPLERS))  # the seed after those of the samplers
    assert values["sample_class_accuracy"] == pytest.approx(hits.mean().item())
    assert values["sample_class_accuracy_se"] == pytest.approx(hits.std().item() / math.sqrt(40))
    assert "sample_class_accuracy" not in missing


def test_sample_class_accuracy_is_not_applicable_to_an_unconditional_model(vae_run, digits):
    class Digits(NearestPattern):
        def features_and_probs(self, images):
            return images.flatten(1), torch.full((len(images), 10), 0.1)

    codes, _ = encode_means(vae_run.model, digits.x_train)
    _, missing = sample_measures(vae_run.model, Digits(), digits.x_test[:20], codes, 0)
    assert missing["sample_class_accuracy"] == "not applicable: the model is not conditional"


def test_the_iwae_bound_conditions_every_term_on_the_label():
    model = _model(classes=3)
    x, labels, k = torch.rand(4, 1, SIDE, SIDE).round(), torch.tensor([0, 2, 1, 2]), 16  # binary: Bernoulli targets
    ours = iwae_bound(model, x, k, generator=torch.Generator().manual_seed(4), chunk_rows=1000, labels=labels)
    eps = torch.randn((k, 4, 2), generator=torch.Generator().manual_seed(4))
    expected = []
    with torch.no_grad():
        for i in range(4):  # one image at a time: log (1/K) sum_k p(x|z_k, y) p(z_k) / q(z_k|x, y)
            y = labels[i].expand(1)
            mu, logvar = (t[0] for t in model.encode(x[i : i + 1], y))
            z = mu + torch.exp(0.5 * logvar) * eps[:, i]  # (K, Z)
            logits = model.decode(z, y.expand(k))
            log_px = torch.distributions.Bernoulli(logits=logits).log_prob(x[i].expand(k, 1, SIDE, SIDE)).sum((1, 2, 3))
            log_w = log_px + Normal(0, 1).log_prob(z).sum(1) - Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(1)
            expected.append(torch.logsumexp(log_w.double(), 0) - math.log(k))
    torch.testing.assert_close(ours, torch.stack(expected), rtol=1e-5, atol=1e-4)
    # and the ELBO of the evaluation takes the labels too: it differs with other labels
    elbo = per_image_loss_parts(model, x, labels=labels)
    other = per_image_loss_parts(model, x, labels=(labels + 1) % 3)
    assert not torch.allclose(elbo.recon + elbo.kl(), other.recon + other.kl())


def test_the_checkpoint_keeps_the_classes_and_refuses_a_pointer_without_them(toy_run):
    pointer_path = toy_run.path / "checkpoint.json"
    pointer = json.loads(pointer_path.read_text())
    assert pointer["classes"] == 2
    loaded = load_run(toy_run.path)
    z, labels = torch.randn(6, 1), torch.tensor([0, 1, 1, 0, 1, 0])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.decode(z, labels), toy_run.model.decode(z, labels))
    del pointer["classes"]
    pointer_path.write_text(json.dumps(pointer))
    try:
        with pytest.raises(VaelabError, match="classes must be the number of classes"):
            load_run(toy_run.path)
    finally:
        pointer["classes"] = 2
        pointer_path.write_text(json.dumps(pointer))


def test_vaelab_sample_label_through_the_cli(cli, tmp_path, digits):
    run = tmp_path / "cvae"
    config = RunConfig(data="digits", model="cvae", z_dim=2, hidden=[16], epochs=1, batch_size=128)
    train(config, run, data=digits, progress=False)
    done = cli("sample", str(run), "--label", "3", "-n", "4", "-o", str(tmp_path / "three.png"))
    assert done.returncode == 0, done.stderr
    assert "4 prior samples of class 3" in done.stdout and (tmp_path / "three.png").is_file()
    for flags, message in ((["--label", "10"], "class 0..9"), ([], "say which class")):
        failed = cli("sample", str(run), *flags, "-o", str(tmp_path / "bad.png"))
        assert failed.returncode == 2 and message in failed.stderr


def test_the_classes_figure_has_one_row_per_class_and_only_for_conditional_runs(toy_run, vae_run, digits):
    from vaelab.figures import RunView, class_rows, make_figure, why_not

    rows = class_rows(toy_run.model, 3, seed=0)  # (2*3, C, H, W): class 0's row, then class 1's
    ones = torch.ones(3, dtype=torch.long)
    z = _class_draws(toy_run.model, torch.randn(3, 1, generator=torch.Generator().manual_seed(0)), ones)
    with torch.no_grad():
        torch.testing.assert_close(rows[3:], toy_run.model.decode_mean(z, ones))
    toy = _toy()
    view = RunView("toy", toy_run, toy, toy.x_test)
    for kind in ("classes", "samples", "recon", "interp", "kl"):  # (its latent is 1-D: no scatter)
        make_figure(kind, [view])  # every figure a conditional run can have takes its labels
    assert "not conditional" in why_not("classes", RunView("vae", vae_run, digits, digits.x_test))


def _class_prior_model() -> CVAE:
    """A CVAE for 3 classes whose prior has moved off N(0, I): distinct means and variances per class."""
    model = build_model(RunConfig(model="cvae", z_dim=2, hidden=[8]), (1, 8, 8), classes=3)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        model.prior.mu.copy_(3 * torch.randn(3, 2, generator=generator))
        model.prior.raw_logvar.copy_(torch.randn(3, 2, generator=generator))
    return model


def test_class_prior_log_prob_and_kl_match_torch_distributions():
    model = _class_prior_model()
    labels = torch.tensor([0, 2, 1, 2])
    std = torch.exp(0.5 * 10 * torch.tanh(model.prior.raw_logvar / 10)).detach()  # the soft-clamped log-variance
    per_class = Normal(model.prior.mu.detach(), std)  # batch (3, 2)
    z = torch.randn(5, 4, 2, generator=torch.Generator().manual_seed(1))  # K samples per image
    with torch.no_grad():
        expected = Normal(per_class.loc[labels], per_class.scale[labels]).log_prob(z).sum(-1)
        torch.testing.assert_close(model.prior.log_prob(z, labels), expected)
        marginal = torch.logsumexp(per_class.log_prob(z.unsqueeze(-2)).sum(-1), -1) - math.log(3)  # no labels
        torch.testing.assert_close(model.prior.log_prob(z), marginal)
        mu, logvar = torch.randn(4, 2), torch.randn(4, 2)
        kl = torch.distributions.kl_divergence(
            Normal(mu, torch.exp(0.5 * logvar)), Normal(per_class.loc[labels], per_class.scale[labels])
        )
        torch.testing.assert_close(model.prior_kl(mu, logvar, labels), kl, rtol=1e-5, atol=1e-5)


def test_class_prior_samples_follow_the_requested_class():
    model = _class_prior_model()
    draws = model.prior.sample(40_000, torch.Generator().manual_seed(0), torch.full((40_000,), 2))
    std = torch.exp(0.5 * 10 * torch.tanh(model.prior.raw_logvar[2] / 10)).detach()
    assert (draws.mean(0) - model.prior.mu[2].detach()).abs().max() < 4 * std.max() / 200  # 4 SE of the mean
    torch.testing.assert_close(draws.std(0), std, rtol=0.02, atol=0)
    same_noise = model.prior.sample(3, torch.Generator().manual_seed(5), torch.tensor([0, 0, 0]))
    other_class = model.prior.sample(3, torch.Generator().manual_seed(5), torch.tensor([1, 1, 1]))
    eps_0 = (same_noise - model.prior.mu[0]) / torch.exp(0.5 * 10 * torch.tanh(model.prior.raw_logvar[0] / 10))
    eps_1 = (other_class - model.prior.mu[1]) / torch.exp(0.5 * 10 * torch.tanh(model.prior.raw_logvar[1] / 10))
    torch.testing.assert_close(eps_0.detach(), eps_1.detach())  # one seed, one noise: the class moves it
