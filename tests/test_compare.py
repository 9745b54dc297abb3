"""comparison_rows on hand-made evaluations, and `vaelab compare` end to end on digits with tiny budgets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vaelab.compare import compare, comparison_rows, parse_spec
from vaelab.errors import VaelabError
from vaelab.measures import MEASURES


def _row(rows, metric):
    return next(r for r in rows if r["metric"] == metric)


def test_rows_mark_the_better_value_by_the_metric_direction():
    evals = {
        "a": {
            "generation": {"fd_prior": 10.0, "precision_prior": 0.5, "kl_nats": 3.0},
            "latent": {"knn_accuracy": 0.7},
        },
        "b": {
            "generation": {"fd_prior": 20.0, "precision_prior": 0.5, "kl_nats": 9.0},
            "latent": {"knn_accuracy": 0.9},
        },
        "c": {
            "generation": {"fd_prior": None, "precision_prior": 0.4, "kl_nats": None},
            "latent": {"knn_accuracy": None},
        },
    }
    rows = comparison_rows(evals)
    assert _row(rows, "fd_prior")["best"] == "a"  # lower is better; None is not a value
    assert _row(rows, "knn_accuracy")["best"] == "b"
    assert _row(rows, "precision_prior")["best"] is None  # a tie marks nothing
    assert _row(rows, "kl_nats")["better"] is None and _row(rows, "kl_nats")["best"] is None
    assert _row(rows, "nll_iwae_nats")["values"] == {"a": None, "b": None, "c": None}
    assert all(r["description"] and r["better"] in ("higher", "lower", None) for r in rows)


def test_model_specs():
    assert parse_spec("beta-vae:4") == ("beta-vae-4", {"model": "vae", "beta": 4.0})
    assert parse_spec("ae") == ("ae", {"model": "ae"})
    with pytest.raises(VaelabError, match="model spec"):
        parse_spec("gan")
    for bad in ("beta-vae:nan", "beta-vae:inf", "beta-vae:-1", "beta-vae:x", "beta-vae:"):
        with pytest.raises(VaelabError, match="beta must be a finite number >= 0"):
            parse_spec(bad)


def test_rows_follow_the_measures_registry_with_readable_names():
    rows = comparison_rows({"a": {"generation": {"fd_prior": 1.0}, "latent": {}}})
    assert [r["metric"] for r in rows] == list(MEASURES)
    assert all(r["label"] == MEASURES[r["metric"]].label for r in rows)
    assert "k=3" in _row(rows, "precision_prior")["description"] and "5-NN" in _row(rows, "knn_accuracy")["description"]


@pytest.mark.parametrize(
    "evaluation",
    [
        {"generation": [1, 2]},
        {"generation": {"fd_prior": "12"}},
        {"latent": {"knn_accuracy": True}},
        {"generation": {"test_loss": 1.0, "test_loss_se": [0.1]}},
        [],
    ],
)
def test_a_malformed_evaluation_is_one_clear_error(evaluation):
    with pytest.raises(VaelabError, match="eval.json of b: .*run vaelab evaluate again"):
        comparison_rows({"a": {"generation": {}, "latent": {}}, "b": evaluation})


@pytest.mark.parametrize(
    "specs", [["vae", "beta-vae:nan"], ["gan"], ["vae", "vae"], [], ["beta-vae:-2"], ["vae", "missing-run-folder"]]
)
def test_bad_specs_are_refused_before_any_folder_is_created(tmp_path, specs):
    with pytest.raises(VaelabError):
        compare(specs, tmp_path / "out", data="digits", epochs=1)
    assert not (tmp_path / "out").exists()


def test_compare_command_refuses_beta_nan_with_one_line_and_no_folder(cli, tmp_path):
    done = cli(
        "compare", "--data", "digits", "--models", "ae,beta-vae:nan", "--epochs", "1", "--out", str(tmp_path / "o")
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("vaelab: error: model spec 'beta-vae:nan': beta must be a finite number >= 0")
    assert not (tmp_path / "o").exists()


def test_compare_end_to_end_on_digits(cli, tmp_path, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "vaelab-cache"  # shared with test_classifier
    out = tmp_path / "cmp"
    done = cli(
        "compare",
        "--data",
        "digits",
        "--models",
        "ae,vae,beta-vae:4",
        "--epochs",
        "1",
        "--k",
        "10",
        "--n-samples",
        "200",
        "--data-cache",
        str(cache),
        "--out",
        str(out),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["models"] == {name: str(out / name) for name in ("ae", "vae", "beta-vae-4")}
    assert comparison["settings"]["epochs"] == 1 and comparison["settings"]["data"] == "digits"
    for name in ("ae", "vae", "beta-vae-4"):
        evaluation = json.loads((out / name / "eval.json").read_text())
        assert evaluation["epoch"] == 1 and evaluation["data"] == "digits"
    assert json.loads((out / "beta-vae-4" / "config.json").read_text())["beta"] == 4.0
    iwae = _row(comparison["rows"], "nll_iwae_nats")
    assert iwae["values"]["ae"] is None and iwae["best"] in ("vae", "beta-vae-4")
    markdown = (out / "comparison.md").read_text()
    assert "| metric | better | ae | vae | beta-vae-4 |" in markdown and "lower is better" in markdown
    assert "| NLL bound (IWAE), nats | lower | n/a |" in markdown  # readable names; the AE has no bound
    assert "bits/dim: not reported for grey-level Bernoulli targets" in markdown  # and why there are no bits/dim

    # Existing run folders are taken as they are; a folder holding another configuration is refused.
    again = cli(
        "compare",
        "--data",
        "digits",
        "--models",
        f"{out / 'vae'},{out / 'ae'}",
        "--skip-iwae",
        "--skip-samples",
        "--out",
        str(tmp_path / "again"),
        "--quiet",
    )
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / "comparison.json").read_text())["models"]["vae"] == str(out / "vae")
    clash = cli("compare", "--data", "digits", "--models", "vae", "--epochs", "1", "--seed", "5", "--out", str(out))
    assert clash.returncode == 2 and "another configuration" in clash.stderr


def test_compare_shows_bits_per_dim_of_8bit_colour_images_beside_the_nats(tmp_path):
    rng = np.random.default_rng(0)
    images = np.clip(rng.uniform(0, 255, (300, 3, 1, 1)) + rng.normal(0, 10, (300, 3, 4, 4)), 0, 255)
    np.savez(tmp_path / "colour.npz", x=images.round().astype(np.uint8), y=np.arange(300) % 3)
    base = {"likelihood": "logistic-mixture", "mixture_components": 2, "hidden": [16], "z_dim": 2}
    out = tmp_path / "cmp"
    result = compare(["ae", "vae"], out, data=str(tmp_path / "colour.npz"), epochs=1, base=base, k=5, skip_samples=True)
    bits, nats = _row(result["rows"], "bits_per_dim_iwae"), _row(result["rows"], "nll_iwae_nats")
    assert bits["values"]["ae"] is None and bits["label"] == "bits/dim bound (IWAE)" and bits["better"] == "lower"
    assert bits["values"]["vae"] == pytest.approx(nats["values"]["vae"] / (48 * math.log(2)))
    markdown = (out / "comparison.md").read_text()
    assert "| bits/dim bound (IWAE) | lower | n/a |" in markdown
    assert "bits/dim: -ELBO / (D ln 2) and -L_K / (D ln 2)" in markdown and "a true likelihood bound" in markdown


def test_compare_refuses_a_discretised_likelihood_on_data_that_is_not_8bit_before_writing(tmp_path):
    with pytest.raises(VaelabError, match="--likelihood logistic is a probability of 8-bit pixel values"):
        compare(["vae"], tmp_path / "cmp", data="digits", epochs=1, base={"likelihood": "logistic"})
    assert not (tmp_path / "cmp").exists()
