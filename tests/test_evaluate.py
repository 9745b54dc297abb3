"""evaluate_run and `vaelab evaluate`: what eval.json holds for a VAE and an AE, and what it says it computed."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from vaelab.evaluate import dataset_loss, evaluate_run, fitted_gaussian, per_image_loss_parts


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "vaelab-cache"  # shared with test_classifier: digits trains once


def _with_cache(run, cache_dir):
    return dataclasses.replace(run, config=dataclasses.replace(run.config, data_cache=str(cache_dir)))


def test_vae_evaluation_reports_both_axes_with_its_settings(vae_run, digits, cache_dir):
    result = evaluate_run(_with_cache(vae_run, cache_dir), digits, k=20, n_samples=200)
    gen, lat = result["generation"], result["latent"]
    assert gen["nll_iwae_nats"] <= gen["neg_elbo_nats"] + 3 * gen["neg_elbo_nats_se"]
    assert gen["neg_elbo_nats"] == pytest.approx(dataset_loss(vae_run.model, digits.x_test, digits.x_test)["loss"])
    assert result["notes"]["iwae_k"] == 20 and "NOT a normalised" in result["notes"]["likelihood"]
    assert 0 <= gen["precision_prior"] <= 1 and gen["fd_prior"] > 0 and gen["classifier_test_accuracy"] > 0.9
    assert 0 <= gen["class_entropy_nats_fitted"] <= result["notes"]["class_entropy_max_nats"] + 1e-9
    assert lat["knn_accuracy"] > 0.5 and lat["interp_evenness"] >= 1 and lat["interp_straightness"] >= 1
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
    recon, kl = per_image_loss_parts(vae_run.model, x, x, seed=3)
    loss = dataset_loss(vae_run.model, x, x, beta=2.0, seed=3)
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


def test_evaluate_command_refuses_a_non_positive_k(cli, vae_run):
    done = cli("evaluate", str(vae_run.path), "--k", "0")
    assert done.returncode == 2 and done.stderr.strip() == "vaelab: error: --k must be a positive integer, got 0"


def test_binarised_run_is_evaluated_on_the_inputs_it_was_trained_on(tmp_path, digits):
    from vaelab import RunConfig, train

    run = train(RunConfig(data="digits", epochs=1, hidden=[32], z_dim=4, binarize="dynamic"), tmp_path,
                data=digits, progress=False)
    result = evaluate_run(run, digits, k=2, skip_samples=True, skip_latent=True)
    # The same binarised test images, encoded and scored as the training loop's test evaluation does.
    assert result["generation"]["neg_elbo_nats"] == pytest.approx(run.history[-1]["test_loss"], rel=1e-9)
