"""The numbers behind the report: standard errors found in eval.json, and the claims' verdicts from the numbers."""

import pytest

from vaelab.figures import RunView
from vaelab.report_data import NOISE_SES, claim_verdict, main_ae, main_vae, measure_verdict, standard_error


@pytest.mark.parametrize(
    "vae, ae, better, expected",
    [
        (0.9, 0.6, "higher", 1),
        (0.6, 0.9, "higher", -1),
        (30.0, 90.0, "lower", 1),
        (90.0, 30.0, "lower", -1),
        (5.0, 8.0, None, 0),
        (1.0, 1.0, "lower", 0),
    ],
)
def test_measure_verdict_follows_the_rows_direction(vae, ae, better, expected):
    assert measure_verdict(vae, ae, better, None, None) == expected


def test_a_difference_within_two_standard_errors_counts_for_neither_model():
    se_vae, se_ae = 0.03, 0.04  # the difference's standard error is their hypotenuse, 0.05
    assert measure_verdict(1.0 + NOISE_SES * 0.05 * 0.99, 1.0, "higher", se_vae, se_ae) == 0
    assert measure_verdict(1.0 + NOISE_SES * 0.05 * 1.01, 1.0, "higher", se_vae, se_ae) == 1
    assert measure_verdict(1.0 + NOISE_SES * 0.05 * 0.99, 1.0, "higher", se_vae, None) == 1  # one SE unknown


def test_claim_verdict_holds_only_when_no_measure_favours_the_ae():
    vae_wins, ae_wins, tie = (0.9, 0.6, "higher", None, None), (0.6, 0.9, "higher", None, None), (1, 1, "lower", 0, 0)
    assert claim_verdict([vae_wins, vae_wins, tie]) == ("held", "Held: the VAE is better on 2 of 3 measures")
    assert claim_verdict([ae_wins, tie]) == ("failed", "Did not hold: the AE is better on 1 of 2 measures")
    assert claim_verdict([vae_wins, ae_wins])[0] == "open"
    assert claim_verdict([tie])[0] == "open"


def test_standard_error_is_found_in_any_section():
    evaluation = {"run": "x", "generation": {"fd_prior": 3.0}, "latent": {"interp_evenness_se": 0.02}}
    assert standard_error(evaluation, "interp_evenness") == 0.02
    assert standard_error(evaluation, "fd_prior") is None and standard_error(None, "fd_prior") is None


def test_the_ae_set_against_the_main_vae_has_its_latent_size(ae_run, vae_run, vae2d_run, digits):
    views = [RunView(r.path.name, r, digits, digits.x_test) for r in (vae2d_run, ae_run, vae_run)]
    assert main_vae(views) is views[0]  # the first VAE with beta 1, whatever its latent size
    assert main_ae(views, views[2]) is views[1]  # the 8-D AE for the 8-D VAE
    assert main_ae(views, views[0]) is views[1]  # no 2-D AE: the first AE
    assert main_ae(views[:1], views[0]) is None and main_vae(views[1:2]) is None
