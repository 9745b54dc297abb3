"""VQ-VAE (vaelab.families.vqvae) and its code prior (vaelab.families.code_prior), each against an independent
computation: brute-force nearest codes, autograd, hand-computed losses and EMA steps, exact enumeration of a tiny
prior's grids."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from vaelab import RunConfig, load_run, objectives, train
from vaelab.distributed import Processes
from vaelab.families.code_prior import CodePrior
from vaelab.families.vqvae import EMA_DECAY, EMA_EPSILON, Codebook
from vaelab.models import build_model
from vaelab.noise import ImageNoise


def tiny_model(**fields):
    torch.manual_seed(0)
    config = RunConfig(model="vqvae", z_dim=3, code_dim=2, codebook_size=5, hidden=[16], **fields).validate()
    return build_model(config, (1, 4, 4))


def test_nearest_code_is_the_brute_force_argmin():
    generator = torch.Generator().manual_seed(0)
    z_e, codebook = torch.randn(40, 3, generator=generator), torch.randn(7, 3, generator=generator)
    expected = [
        min(range(7), key=lambda j: sum((a - b) ** 2 for a, b in zip(z, codebook[j].tolist()))) for z in z_e.tolist()
    ]
    assert objectives.nearest_code(z_e, codebook).tolist() == expected


def test_straight_through_passes_the_gradient_wrt_z_q_to_z_e():
    z_e = torch.randn(4, 6, requires_grad=True)
    z_q = torch.randn(4, 6)
    weights = torch.randn(4, 6)

    def decoder_loss(z):
        return (weights * z).sum() + z.pow(3).sum()

    out = objectives.straight_through(z_e, z_q)
    torch.testing.assert_close(out, z_q)  # up to rounding: z_e + (z_q - z_e)
    decoder_loss(out).backward()
    at_z_q = z_q.clone().requires_grad_(True)
    decoder_loss(at_z_q).backward()
    torch.testing.assert_close(z_e.grad, at_z_q.grad)


def test_codebook_and_commitment_losses_match_hand_computation_and_reach_only_their_targets():
    model = tiny_model(commitment=0.25).eval()
    x = torch.rand(3, 1, 4, 4)
    terms = model.loss_parts(x)
    z_e = model.encoder(x).detach().reshape(3, 3, 2).tolist()
    vectors = model.codebook.vectors.detach().tolist()
    squared = [
        sum(min(sum((a - b) ** 2 for a, b in zip(position, e)) for e in vectors) for position in image) for image in z_e
    ]
    torch.testing.assert_close(terms.extra["codebook"], torch.tensor(squared))
    torch.testing.assert_close(terms.extra["commitment"], 0.25 * torch.tensor(squared))
    # the codebook loss moves only the codes, the commitment loss only the encoder
    terms.extra["codebook"].sum().backward(retain_graph=True)
    assert model.codebook.vectors.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder.parameters())
    model.codebook.vectors.grad = None
    terms.extra["commitment"].sum().backward()
    assert model.codebook.vectors.grad is None
    assert any(p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_kl_is_log_k_per_position_under_the_uniform_prior_and_recon_is_the_likelihood_of_z_q():
    model = tiny_model().eval()
    x = torch.rand(2, 1, 4, 4)
    terms = model.loss_parts(x)
    torch.testing.assert_close(terms.kl(), torch.full((2,), 3 * math.log(5)))
    z_q, _ = model.encode(x)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(model.decode(z_q), x, reduction="none")
    torch.testing.assert_close(terms.recon, bce.flatten(1).sum(1))


def test_ema_update_matches_a_hand_computation():
    book = Codebook(2, 1, ema=True)
    book.vectors.copy_(torch.tensor([[0.0], [5.0]]))
    book.ema_sums.copy_(book.vectors)
    book.idle_steps.zero_()
    z_e = torch.tensor([[1.0], [2.0], [6.0]])
    book.record(z_e, torch.tensor([0, 0, 1]), Processes())
    g, eps = EMA_DECAY, EMA_EPSILON
    counts = [g * 1 + (1 - g) * 2, g * 1 + (1 - g) * 1]
    sums = [g * 0.0 + (1 - g) * 3.0, g * 5.0 + (1 - g) * 6.0]
    n = sum(counts)
    vectors = [s / ((c + eps) / (n + 2 * eps) * n) for s, c in zip(sums, counts)]
    torch.testing.assert_close(book.ema_counts, torch.tensor(counts))
    torch.testing.assert_close(book.vectors.squeeze(1), torch.tensor(vectors))
    assert book.idle_steps.tolist() == [0, 0]


def test_idle_codes_restart_on_encoder_outputs():
    book = Codebook(3, 2, ema=False)  # every code starts idle
    z_e = torch.tensor([[[10.0, 10.0]], [[20.0, 20.0]]])  # 2 images, 1 position
    book.restart_idle(z_e, None, Processes())
    assert all(row in z_e.flatten(0, 1).tolist() for row in book.vectors.tolist())
    assert book.idle_steps.tolist() == [0, 0, 0]


def test_restarts_of_two_shares_equal_those_of_the_whole_batch():
    z_e = torch.randn(4, 3, 2)

    class Summed:  # two processes in one: a share's sum is completed by the other's
        is_main = True

        def __init__(self, other):
            self.other = other

        def sum(self, values):
            return values + self.other

    whole, halves = Codebook(5, 2, ema=True), [Codebook(5, 2, ema=True) for _ in range(2)]
    whole.restart_idle(z_e, ImageNoise(7, 4, slice(0, 4), torch.device("cpu")), Processes())
    shares = []
    for rows in (slice(0, 2), slice(2, 4)):  # what each share contributes, before the sum
        book = Codebook(5, 2, ema=True)
        book.restart_idle(z_e[rows], ImageNoise(7, 4, rows, torch.device("cpu")), Processes())
        shares.append(book.vectors.clone())
    for book, rows, other in zip(halves, (slice(0, 2), slice(2, 4)), reversed(shares)):
        book.restart_idle(z_e[rows], ImageNoise(7, 4, rows, torch.device("cpu")), Summed(other))
        torch.testing.assert_close(book.vectors, whole.vectors)


@pytest.mark.parametrize(("counts", "expected"), [([7, 7, 7, 7], 4.0), ([0, 9, 0, 0], 1.0)])
def test_perplexity_is_k_for_uniform_use_and_1_for_one_code(counts, expected):
    assert objectives.codebook_perplexity(torch.tensor(counts)) == pytest.approx(expected)


def tiny_prior(learned: bool, positions: int = 3) -> CodePrior:
    torch.manual_seed(1)
    prior = CodePrior(positions, 3, to_latent=lambda codes: codes.float(), to_codes=lambda z: z.long())
    for p in prior.parameters():
        torch.nn.init.normal_(p, std=0.5)  # far from uniform
    prior.learned.fill_(float(learned))
    return prior.eval()


@pytest.mark.parametrize("learned", [False, True])
def test_code_prior_sums_to_one_over_all_grids(learned):
    grids = torch.tensor(list(itertools.product(range(3), repeat=3)))
    with torch.no_grad():
        total = tiny_prior(learned).log_prob_codes(grids).exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-5)


def test_code_prior_samples_follow_its_probabilities():
    prior = tiny_prior(True, positions=2)
    grids = list(itertools.product(range(3), repeat=2))
    with torch.no_grad():
        probs = prior.log_prob_codes(torch.tensor(grids)).exp()
    samples = prior.sample_codes(4000, torch.Generator().manual_seed(0))
    counts = torch.bincount(samples[:, 0] * 3 + samples[:, 1], minlength=9)
    total_variation = 0.5 * (counts / 4000 - probs).abs().sum().item()
    assert total_variation < 0.05  # about 0.02 from sampling noise alone over 9 cells
    assert torch.equal(samples, prior.sample_codes(4000, torch.Generator().manual_seed(0)))


def test_training_runs_both_phases_and_resumes_the_prior(tmp_path, digits):
    config = RunConfig(
        model="vqvae", data="digits", epochs=1, prior_epochs=1, z_dim=4, codebook_size=16, hidden=[32], batch_size=512
    )
    run = train(config, tmp_path / "run", data=digits, progress=False)
    assert [row.get("phase") for row in run.history] == [None, "code prior"]
    assert run.model.prior.is_learned()
    more = RunConfig(**{**config.to_dict(), "prior_epochs": 2})
    resumed = train(more, tmp_path / "run", resume=True, data=digits, progress=False)
    assert len(resumed.history) == 3 and resumed.history[0] == run.history[0]
    assert load_run(tmp_path / "run").model.prior.is_learned()


def test_cli_trains_evaluates_and_samples_a_vqvae(tmp_path, cli):
    out = tmp_path / "vq"
    common = ("--z-dim", "4", "--codebook-size", "16", "--hidden", "32")
    trained = cli(
        "train",
        "--model",
        "vqvae",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--prior-epochs",
        "1",
        *common,
        "--out",
        str(out),
    )
    assert trained.returncode == 0, trained.stderr
    evaluated = cli("evaluate", str(out), "--skip-samples", "--skip-latent")
    assert evaluated.returncode == 0, evaluated.stderr
    evaluation = json.loads((out / "eval.json").read_text())
    assert 1 <= evaluation["latent"]["codebook_perplexity"] <= 16
    generation = evaluation["generation"]
    assert generation["nll_iwae_nats"] is None
    assert "Gaussian posterior" in evaluation["notes"]["not_measured"]["nll_iwae_nats"]
    assert generation["neg_elbo_nats"] > generation["kl_nats"] > 0
    assert "code prior" in evaluation["notes"]["neg_elbo_nats"]
    sampled = cli("sample", str(out), "-n", "8", "-o", str(tmp_path / "samples.png"))
    assert sampled.returncode == 0, sampled.stderr
    assert (tmp_path / "samples.png").stat().st_size > 0
