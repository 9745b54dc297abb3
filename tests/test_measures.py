"""The measures registry: one home per measure, read by evaluate's notes, compare's table, the CLI and figures."""

from __future__ import annotations

import inspect

import pytest

from vaelab import figures, latent, measures, sample_quality
from vaelab.errors import VaelabError
from vaelab.measures import MEASURES, format_value, section_keys, summary_table


def test_every_measure_names_a_real_function_a_direction_and_a_section():
    for m in MEASURES.values():
        assert callable(m.computed_by()), m.function
        assert m.better in ("higher", "lower", None) and m.section in measures.SECTIONS
        assert m.part in ("likelihood", "samples", "probes", "codes", "disentanglement") and m.label and m.description


def test_the_functions_default_to_the_registry_constants():
    def default(function, name):
        return inspect.signature(function).parameters[name].default

    assert default(latent.knn_accuracy, "k") == measures.KNN_K
    assert default(latent.neighbourhood_agreement, "k") == measures.NEIGHBOURS
    assert default(latent.active_units, "threshold") == measures.ACTIVE_UNIT_THRESHOLD
    assert default(latent.interpolation_smoothness, "points") == measures.INTERP_POINTS
    assert default(sample_quality.precision_recall, "k") == measures.PR_K
    assert figures.ACTIVE_UNIT_THRESHOLD is measures.ACTIVE_UNIT_THRESHOLD


def test_descriptions_quote_the_constants_they_are_computed_with():
    assert f"{measures.KNN_K}-NN" in MEASURES["knn_accuracy"].description
    assert f"> {measures.ACTIVE_UNIT_THRESHOLD}" in MEASURES["active_units"].description
    assert f"between {measures.INTERP_POINTS} decoded points" in MEASURES["interp_evenness"].description
    assert f"{measures.NEIGHBOURS} nearest" in MEASURES["neighbourhood_agreement"].description


def test_section_keys_put_each_standard_error_after_its_measure():
    keys = section_keys("latent")
    assert keys.index("interp_evenness_se") == keys.index("interp_evenness") + 1
    assert "active_units_se" not in keys and "kl_nats_se" not in section_keys("generation")


@pytest.mark.parametrize(
    "value,se,text",
    [
        (93.1234, 0.4521, "93.12 ± 0.45"),
        (0.123456, 0.00123, "0.1235 ± 0.0012"),
        (1234.7, 12.0, "1235 ± 12"),
        (0.9133333, None, "0.9133"),
        (7, None, "7"),
        (None, None, "n/a"),
        (2.5, float("nan"), "2.5"),
    ],
)
def test_values_are_rounded_to_their_standard_error(value, se, text):
    assert format_value(value, se) == text


def test_summary_table_shows_measured_rows_and_says_why_the_rest_are_missing():
    evaluation = {
        "generation": {"neg_elbo_nats": 95.0, "neg_elbo_nats_se": 0.5},
        "latent": {"active_units": 3},
        "notes": {"not_measured": {"nll_iwae_nats": "skipped with --skip-iwae"}},
    }
    lines = summary_table(evaluation).splitlines()
    assert lines[0].split() == ["measure", "value", "better"] and set(lines[1]) == {"-"}
    assert lines[2].split()[-4:] == ["95.00", "±", "0.50", "lower"]
    assert lines[3].startswith("active units") and lines[3].split()[-2:] == ["3", "-"]
    assert lines[4] == "not measured (skipped with --skip-iwae): NLL bound (IWAE), nats"
    assert all(len(line) <= 120 for line in lines)
    with pytest.raises(VaelabError, match="latent.active_units is 'three'"):
        summary_table({"latent": {"active_units": "three"}})


def test_summary_table_names_a_whole_skipped_part_once():
    skipped = {m.key: "skipped with --skip-samples" for m in MEASURES.values() if m.part == "samples"}
    skipped["fd_prior"] = "a covariance needs at least 2 test images, got 1"  # one measure of the part, alone
    table = summary_table({"generation": {}, "latent": {}, "notes": {"not_measured": skipped}})
    assert "not measured (a covariance needs at least 2 test images, got 1): Fréchet distance, prior samples" in table
    assert "(skipped with --skip-samples): classifier's test accuracy; precision, prior samples;" in table  # not whole
    skipped["fd_prior"] = "skipped with --skip-samples"
    table = summary_table({"generation": {}, "latent": {}, "notes": {"not_measured": skipped}})
    assert "not measured (skipped with --skip-samples): the sample-quality measures" in table


def test_bits_per_dim_follow_the_nats_they_rescale_and_say_what_they_bound():
    keys = list(MEASURES)
    assert keys.index("nll_iwae_nats") < keys.index("bits_per_dim_iwae") < keys.index("kl_nats")
    for key in ("bits_per_dim_iwae", "bits_per_dim_elbo"):
        m = MEASURES[key]
        assert (m.part, m.better, m.has_se, m.section) == ("likelihood", "lower", True, "generation")
    description = MEASURES["bits_per_dim_iwae"].description
    assert "upper bound on -log2 P(x)" in description and "dequantised" in description
    assert "bits per binary pixel" in description and "none for grey-level Bernoulli" in description
