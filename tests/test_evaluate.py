"""evaluate_run and `vaelab evaluate`: what eval.json holds for a VAE and an AE, and what it says it computed."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest
import torch

from colour_images import train_unlabelled_colour_run
from vaelab.evaluate import dataset_loss, evaluate_run, fitted_gaussian, per_image_loss_parts, sample_metrics
from vaelab.measures import MEASURES, format_value


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "vaelab-cache"  # shared with test_classifier: digits trains once


def _with_cache(run, cache_dir):
    return dataclasses.replace(run, config=dataclasses.replace(run.config, data_cache=str(cache_dir)))


def test_vae_evaluation_reports_both_axes_with_its_settings(vae_run, digits, cache_dir):
    result = evaluate_run(_with_cache(vae_run, cache_dir), digits, k=20, n_samples=200)
    gen, lat = result["generation"], result["latent"]
    assert gen["nll_iwae_nats"] <= gen["neg_elbo_nats"] + 3 * gen["neg_elbo_nats_se"]
    assert gen["neg_elbo_nats"] == pytest.approx(dataset_loss(vae_run.model, digits.x_test)["loss"])
    assert result["notes"]["iwae_k"] == 20 and "NOT a normalised" in result["notes"]["likelihood"]
    assert 0 <= gen["precision_prior"] <= 1 and gen["fd_prior"] > 0 and gen["classifier_test_accuracy"] > 0.9
    assert 0 <= gen["class_entropy_nats_fitted"] <= result["notes"]["class_entropy_max_nats"] + 1e-9
    assert lat["knn_accuracy"] > 0.5 and lat["interp_evenness"] >= 1 and lat["interp_straightness"] >= 1
    assert result["notes"]["features"].startswith("classifier trained on the labels")
    assert "of different classes" in result["notes"]["interpolation"]
    assert len(result["per_dimension"]["kl_nats"]) == vae_run.model.z_dim
    # KL per dimension sums to the KL of the whole code.
    assert sum(result["per_dimension"]["kl_nats"]) == pytest.approx(gen["kl_nats"], rel=1e-6)
    json.dumps(result, allow_nan=False)


def test_ae_has_no_likelihood_but_the_same_latent_and_sample_measures(ae_run, digits, cache_dir):
    result = evaluate_run(_with_cache(ae_run, cache_dir), digits, k=20, n_samples=200)
    gen = result["generation"]
    assert gen["nll_iwae_nats"] is None and gen["neg_elbo_nats"] is None
    assert "not applicable" in result["notes"]["nll_iwae_nats"]
    assert gen["test_loss"] == pytest.approx(gen["recon_sq_error"])  # the AE's loss is its squared error
    assert gen["fd_prior"] is not None and gen["fd_fitted"] is not None
    assert result["per_dimension"]["kl_nats"] is None


def test_dataset_loss_is_the_mean_of_the_per_image_parts(vae_run, digits):
    x = digits.x_test[:100]
    recon, kl = per_image_loss_parts(vae_run.model, x, seed=3)[:2]
    kl = kl.sum(1)
    loss = dataset_loss(vae_run.model, x, beta=2.0, seed=3)
    assert loss["loss"] == pytest.approx((recon + 2.0 * kl).mean().item())


def test_fitted_gaussian_reproduces_the_codes_mean_and_covariance():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(5000, 3)) @ np.array([[2.0, 0, 0], [1.0, 0.5, 0], [0, 0, 0.1]]) + 4.0
    mean, chol = fitted_gaussian(codes)
    np.testing.assert_allclose(mean.numpy(), codes.mean(0), rtol=1e-5)
    np.testing.assert_allclose((chol @ chol.T).numpy(), np.cov(codes, rowvar=False), rtol=1e-4, atol=1e-6)


def test_evaluate_command_writes_eval_json(cli, vae_run):
    done = cli("evaluate", str(vae_run.path), "--k", "5", "--skip-samples", "--quiet")
    assert done.returncode == 0, done.stderr
    written = json.loads((vae_run.path / "eval.json").read_text())
    assert written["data"] == "digits" and written["notes"]["iwae_k"] == 5
    assert written["generation"]["fd_prior"] is None and written["notes"]["samples"] == "not computed"
    assert done.stderr == ""  # --quiet: no progress


def test_evaluate_command_prints_a_short_table_and_shows_progress_on_stderr(cli, vae_run, tmp_path):
    out = tmp_path / "eval.json"
    done = cli("evaluate", str(vae_run.path), "--k", "5", "--skip-samples", "-o", str(out))
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    lines = done.stdout.splitlines()
    assert len(lines) < 30 and not re.search(r"\d\.\d{7,}", done.stdout)  # no JSON dump, no 16-digit floats
    elbo = next(line for line in lines if line.startswith(MEASURES["neg_elbo_nats"].label))
    value, se = written["generation"]["neg_elbo_nats"], written["generation"]["neg_elbo_nats_se"]
    assert elbo.split()[-4:] == [*format_value(value, se).split(), "lower"]  # value ± se, direction
    assert any(line.startswith(MEASURES["active_units"].label) and line.split()[-1] == "-" for line in lines)
    assert "not measured (skipped with --skip-samples): the sample-quality measures" in done.stdout
    assert lines[-1] == f"-> {out} (every number, and how it was computed)"
    assert "IWAE bound, K=5" in done.stderr and "image/s" in done.stderr  # a bar with its rate and time left
    assert "latent probes" in done.stderr and "Traceback" not in done.stderr


def test_eval_json_keeps_the_keys_report_and_compare_read(ae_run, digits):
    result = evaluate_run(ae_run, digits, k=2, skip_samples=True)
    assert list(result) == ["run", "data", "model", "beta", "epoch", "generation", "latent", "per_dimension", "notes"]
    assert set(result["generation"]) == {
        "test_loss",
        "test_loss_se",
        "recon_sq_error",
        "recon_sq_error_se",
        "neg_elbo_nats",
        "neg_elbo_nats_se",
        "kl_nats",
        "nll_iwae_nats",
        "nll_iwae_nats_se",
        "bits_per_dim_iwae",
        "bits_per_dim_iwae_se",
        "bits_per_dim_elbo",
        "bits_per_dim_elbo_se",
        "classifier_test_accuracy",
        "sample_class_accuracy",
        "sample_class_accuracy_se",
        *(
            f"{m}_{s}"
            for s in ("prior", "fitted")
            for m in ("fd", "precision", "recall", "confidence", "class_entropy_nats")
        ),
    }
    assert set(result["latent"]) == {
        "active_units",
        "codebook_perplexity",
        "knn_accuracy",
        "linear_probe_accuracy",
        "silhouette",
        "neighbourhood_agreement",
        "interp_evenness",
        "interp_evenness_se",
        "interp_straightness",
        "interp_straightness_se",
        "mig",
        "dci_disentanglement",
        "dci_completeness",
        "dci_informativeness",
    }
    assert set(result["notes"]) == {
        "test_images",
        "likelihood",
        "binarize",
        "test_loss",
        "neg_elbo_nats",
        "nll_iwae_nats",
        "iwae_k",
        "bits_per_dim",
        "recon_sq_error",
        "samples",
        "features",
        "precision_recall_k",
        "class_entropy_max_nats",
        "latent",
        "active_units",
        "interpolation",
        "disentanglement",
        "seed",
        "seconds",
        "not_measured",
    }
    assert result["notes"]["latent"].startswith("codes are encoder means mu(x); k-NN k=5, neighbourhood k=10")
    assert result["notes"]["not_measured"]["nll_iwae_nats"] == "not applicable: the AE has no posterior"
    assert result["notes"]["not_measured"]["fd_prior"] == "skipped with --skip-samples"
    assert set(result["notes"]["not_measured"]) == {
        key
        for section in ("generation", "latent")
        for key, v in result[section].items()
        if v is None and not key.endswith("_se")
    }


def _few_test_images(digits, n: int, one_class: bool):
    """digits with a test split of n images, all of class 0 when one_class, else of n different classes."""
    labels = digits.y_test.numpy()
    if one_class:
        picks = np.flatnonzero(labels == 0)[:n]
    else:
        picks = np.array([np.flatnonzero(labels == c)[0] for c in range(n)])
    picks = torch.from_numpy(picks)
    return dataclasses.replace(digits, pixels_test=digits.pixels_test[picks], y_test=digits.y_test[picks])


@pytest.mark.parametrize("n,one_class", [(3, False), (3, True), (1, True)])
def test_a_test_split_too_small_for_the_probes_gives_none_with_the_reason(vae_run, digits, n, one_class):
    result = evaluate_run(vae_run, _few_test_images(digits, n, one_class), k=2, skip_samples=True)
    latent, why = result["latent"], result["notes"]["not_measured"]
    assert latent["neighbourhood_agreement"] is None
    assert why["neighbourhood_agreement"] == f"needs more than 10 test images, got {n}"
    assert latent["silhouette"] is None and f"among {n} test images" in why["silhouette"]
    assert latent["knn_accuracy"] is not None and latent["linear_probe_accuracy"] is not None  # the train split fits
    assert (latent["interp_evenness"] is None) == one_class
    if one_class:
        assert why["interp_evenness"] == "needs test images of at least 2 classes, got 1"
    assert (result["generation"]["neg_elbo_nats_se"] is None) == (n == 1)  # no standard error of one image
    json.dumps(result, allow_nan=False)


def test_sample_measures_of_sets_too_small_for_k_nearest_neighbours_are_none(digits, cache_dir):
    from vaelab.classifier import get_classifier

    classifier = get_classifier(digits, cache_dir)
    real = classifier.features_and_probs(digits.x_test[:3])[0].numpy()
    values, why = sample_metrics(classifier, real, digits.x_test[3:6], "prior")
    assert values["fd_prior"] >= 0 and 0 <= values["confidence_prior"] <= 1
    assert "precision_prior" not in values and "recall_prior" not in values
    assert why["precision_prior"] == "the k-NN manifold (k=3) needs more than 3 test images, got 3"
    values, why = sample_metrics(classifier, real[:1], digits.x_test[:1], "fitted")
    assert why["fd_fitted"] == "a covariance needs at least 2 test images, got 1"


def test_evaluate_command_on_a_three_image_test_split_reports_what_it_could_not_measure(cli, vae_run, digits, tmp_path):
    tiny = _few_test_images(digits, 3, one_class=True)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x=(tiny.x_train.numpy() * 255).round().astype(np.uint8),
        y=tiny.y_train.numpy(),
        x_test=(tiny.x_test.numpy() * 255).round().astype(np.uint8),
        y_test=tiny.y_test.numpy(),
    )
    done = cli(
        "evaluate",
        str(vae_run.path),
        "--data",
        str(path),
        "--k",
        "2",
        "--skip-samples",
        "--quiet",
        "-o",
        str(tmp_path / "eval.json"),
    )
    assert done.returncode == 0, done.stderr
    assert "not measured (needs more than 10 test images, got 3): neighbourhood agreement" in done.stdout
    assert json.loads((tmp_path / "eval.json").read_text())["latent"]["silhouette"] is None


def test_evaluate_command_refuses_a_non_positive_k(cli, vae_run):
    done = cli("evaluate", str(vae_run.path), "--k", "0")
    assert done.returncode == 2 and done.stderr.strip() == "vaelab: error: --k must be a positive integer, got 0"


def test_binarised_run_is_evaluated_on_the_inputs_it_was_trained_on(tmp_path, digits):
    run = _train_on(digits, tmp_path, data="digits", epochs=1, batch_size=128, binarize="dynamic")
    result = evaluate_run(run, digits, k=2, skip_samples=True, skip_latent=True)
    # The same binarised test images, encoded and scored as the training loop's test evaluation does.
    assert result["generation"]["neg_elbo_nats"] == pytest.approx(run.history[-1]["test_loss"], rel=1e-9)


# ----- bits per dimension: which number is a likelihood bound, and of what -----


@pytest.fixture(scope="module")
def eight_bit(tmp_path_factory):
    """Smooth random 3x4x4 colour images as uint8 in an npz, loaded the way users' 8-bit data is."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, (400, 3, 1, 1)) + rng.normal(0, 12, (400, 3, 4, 4))
    path = tmp_path_factory.mktemp("eight_bit") / "colour.npz"
    np.savez(path, x=np.clip(base, 0, 255).round().astype(np.uint8), y=np.arange(400) % 4)
    from vaelab import load_data

    return load_data(str(path))


def _train_on(images, tmp_path, **fields):
    """A small VAE trained in-process on `data`; `fields` override the RunConfig defaults below."""
    from vaelab import RunConfig, train

    config = RunConfig(**{"data": "colour.npz", "epochs": 3, "hidden": [32], "z_dim": 4, "batch_size": 64, **fields})
    return train(config, tmp_path, data=images, progress=False)


def test_discretised_likelihood_reports_its_bounds_in_bits_per_dim(tmp_path, eight_bit):
    run = _train_on(eight_bit, tmp_path, likelihood="logistic-mixture", mixture_components=3)
    result = evaluate_run(run, eight_bit, k=10, skip_samples=True, skip_latent=True)
    gen, d_ln2 = result["generation"], 48 * math.log(2)  # D = 3*4*4
    for bits, nats in (("bits_per_dim_iwae", "nll_iwae_nats"), ("bits_per_dim_elbo", "neg_elbo_nats")):
        assert gen[bits] == pytest.approx(gen[nats] / d_ln2, rel=1e-12)
        assert gen[f"{bits}_se"] == pytest.approx(gen[f"{nats}_se"] / d_ln2, rel=1e-12)
    assert gen["bits_per_dim_iwae"] > 0  # -log2 of a probability: never negative, unlike a density's
    assert "true likelihood bound" in result["notes"]["bits_per_dim"]
    assert "probability of the 8-bit image" in result["notes"]["likelihood"]


def test_gaussian_bits_per_dim_bound_the_exact_discrete_probability_of_a_one_pixel_model(tmp_path):
    # One 8-bit pixel and a 1-D latent, so the model's discrete probability of each level, P(k) = the mass of
    # p(y) = int N(z; 0, 1) N(y; m(z), sigma²) dz on the cell of side 1/256 around k/255, is a 1-D integral.
    from vaelab import RunConfig, build_model, load_data
    from vaelab.evaluate import bits_per_dim_measures

    rng = np.random.default_rng(1)
    levels = np.clip(rng.normal(120, 40, 3000), 0, 255).round().astype(np.uint8).reshape(-1, 1, 1, 1)
    np.savez(tmp_path / "pixel.npz", x=levels[:1000], x_test=levels[1000:])
    data = load_data(str(tmp_path / "pixel.npz"))
    config = RunConfig(data="pixel.npz", likelihood="gaussian", gaussian_std=0.1, z_dim=1, hidden=[8])
    torch.manual_seed(0)
    model = build_model(config, (1, 1, 1)).eval()
    values, missing = bits_per_dim_measures(model, config, 255, data.x_test, {}, 1000, seed=0)
    assert not missing
    z = torch.linspace(-8, 8, 8001)
    with torch.no_grad():
        weights = (torch.distributions.Normal(0.0, 1.0).log_prob(z).exp() * (z[1] - z[0])).double()  # (Nz,)
        pixel = torch.distributions.Normal(model.decode_mean(z[:, None]).flatten().double(), 0.1)
    x = data.x_test.flatten().double()[:, None]  # (N, 1)
    cell = pixel.cdf(x + 0.5 / 256) - pixel.cdf(x - 0.5 / 256)  # (N, Nz)
    exact_bits = -torch.log((cell * weights).sum(1)) / math.log(2)  # -log2 P(k) per test pixel
    # An upper bound in expectation (over the noise u and the K samples), and a tight one for this model.
    gap = values["bits_per_dim_iwae"] - exact_bits.mean().item()
    assert -0.002 < gap < 0.02
    assert values["bits_per_dim_elbo"] > values["bits_per_dim_iwae"]


def test_gaussian_on_8bit_data_reports_a_dequantised_bound_and_says_so(tmp_path, eight_bit):
    run = _train_on(eight_bit, tmp_path, likelihood="gaussian-learned")
    result = evaluate_run(run, eight_bit, k=10, skip_samples=True, skip_latent=True)
    gen, note = result["generation"], result["notes"]["bits_per_dim"]
    assert gen["bits_per_dim_elbo"] > gen["bits_per_dim_iwae"] > 0
    # Not a rescaling of the nats: those are of the density at the grey levels themselves.
    assert gen["bits_per_dim_iwae"] != pytest.approx(gen["nll_iwae_nats"] / (48 * math.log(2)), rel=1e-3)
    assert "U(-1/512, 1/512)" in note and "D ln 256" in note and "bound nothing discrete" in note
    assert "NOT a probability" in result["notes"]["likelihood"]


def test_bits_per_dim_are_absent_with_the_reason_for_grey_bernoulli_targets_and_the_ae(vae_run, ae_run, digits):
    for run, reason in ((vae_run, "cross-entropy, not a log-probability"), (ae_run, "the AE has no likelihood")):
        result = evaluate_run(run, digits, k=2, skip_samples=True, skip_latent=True)
        assert result["generation"]["bits_per_dim_iwae"] is None and result["generation"]["bits_per_dim_elbo"] is None
        assert reason in result["notes"]["not_measured"]["bits_per_dim_iwae"]
        assert reason in result["notes"]["bits_per_dim"]


def test_binarised_data_reports_bits_per_binary_pixel(tmp_path, digits):
    run = _train_on(digits, tmp_path, data="digits", epochs=1, batch_size=128, binarize="static")
    result = evaluate_run(run, digits, k=5, skip_samples=True, skip_latent=True)
    gen = result["generation"]
    assert gen["bits_per_dim_iwae"] == pytest.approx(gen["nll_iwae_nats"] / (64 * math.log(2)), rel=1e-12)
    assert result["notes"]["bits_per_dim"].startswith("bits per binary pixel")


def test_gaussian_bits_per_dim_are_not_reported_for_data_that_is_not_8bit(tmp_path, digits):
    run = _train_on(digits, tmp_path, likelihood="gaussian")
    result = evaluate_run(run, digits, k=2, skip_samples=True, skip_latent=True)
    assert result["generation"]["bits_per_dim_iwae"] is None
    assert "dequantised bound is for 8-bit data" in result["notes"]["not_measured"]["bits_per_dim_iwae"]


LABEL_MEASURES = (
    "classifier_test_accuracy",
    "confidence_prior",
    "confidence_fitted",
    "class_entropy_nats_prior",
    "class_entropy_nats_fitted",
    "knn_accuracy",
    "linear_probe_accuracy",
    "silhouette",
    "neighbourhood_agreement",
)


def test_unlabelled_colour_data_gets_fd_and_precision_recall_in_a_rotation_nets_features(cli, tmp_path):
    run = train_unlabelled_colour_run(tmp_path)
    done = cli("evaluate", str(run), "--k", "5", "--quiet")
    assert done.returncode == 0, done.stderr
    result = json.loads((run / "eval.json").read_text())
    gen, lat, notes = result["generation"], result["latent"], result["notes"]
    for sampler in ("prior", "fitted"):
        assert gen[f"fd_{sampler}"] > 0 and 0 <= gen[f"precision_{sampler}"] <= 1 and 0 <= gen[f"recall_{sampler}"] <= 1
    for key in LABEL_MEASURES:
        section = gen if key in gen else lat
        assert section[key] is None and "no labels" in notes["not_measured"][key], key
    assert lat["interp_evenness"] >= 1 and "drawn at random (no labels)" in notes["interpolation"]
    assert notes["features"].startswith("rotation-prediction net trained on the data (no labels)")
    (meta_path,) = (tmp_path / "cache" / "classifiers").glob("*.json")
    meta = json.loads(meta_path.read_text())
    assert meta["task"] == "rotation" and meta["image_shape"] == [3, 32, 32]
    assert meta["test_accuracy"] > 0.5 and f"test accuracy {meta['test_accuracy']:.3f}" in notes["features"]
    assert "rotation-prediction net" in notes["samples"] and notes["class_entropy_max_nats"] is None
    assert "features: rotation-prediction net trained on the data (no labels)" in done.stdout
    assert "not measured (the data has no labels)" in done.stdout and "Traceback" not in done.stderr
    json.dumps(result, allow_nan=False)
