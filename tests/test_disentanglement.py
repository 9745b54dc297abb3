"""MIG and DCI on synthetic codes whose answer is known: copies of the factors score about 1, codes that mix every
factor into every code score low, the order of the codes does not matter; the mutual information against sklearn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.linalg import hadamard
from sklearn.metrics import mutual_info_score

from vaelab.data import ImageData
from vaelab.disentanglement import dci_scores, discretise, importance_matrix, mig, mutual_information
from vaelab.evaluate import _factors_note, disentanglement_part

N_FIT, N_SCORE = 2000, 5000


def _factors(n: int, seed: int) -> np.ndarray:
    """Four independent factors (N, 4): a class of 4 values and three uniform ones on [0, 1)."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(0, 4, n) / 3, rng.random(n), rng.random(n), rng.random(n)])


def _scores(codes_of) -> dict[str, float]:
    """MIG on the scoring set, and D, C, I of forests fitted on the fitting set, for codes = codes_of(factors)."""
    fit, score = _factors(N_FIT, seed=0), _factors(N_SCORE, seed=1)
    binned_fit, binned_score = (np.column_stack([discretise(f) for f in v.T]) for v in (fit, score))
    importance, accuracy = importance_matrix(codes_of(fit), binned_fit, codes_of(score), binned_score)
    d, c = dci_scores(importance)
    return {"mig": mig(codes_of(score), binned_score), "d": d, "c": c, "i": float(accuracy.mean())}


def _mixed(factors: np.ndarray) -> np.ndarray:
    """A rotation that puts every factor into every code with equal weight (a normalised Hadamard matrix)."""
    return (factors - 0.5) @ (hadamard(4) / 2)


@pytest.fixture(scope="module")
def copied():
    return _scores(lambda f: f)


def test_codes_that_copy_the_factors_score_about_one(copied):
    # MIG stays a little under 1: the plug-in information of a code and a factor it does not carry is biased up by
    # about (20 - 1)² / (2N) nats with 20 bins a side, 0.036 nats at N = 5000 against entropies of log 20 = 3 nats.
    assert copied["mig"] > 0.95 and copied["d"] > 0.95 and copied["c"] > 0.95 and copied["i"] > 0.9


def test_codes_mixing_every_factor_into_every_code_score_low(copied):
    mixed = _scores(_mixed)
    assert mixed["mig"] < 0.15 and mixed["d"] < 0.3 and mixed["c"] < 0.3


def test_reordering_the_codes_leaves_the_scores_unchanged(copied):
    order = [2, 0, 3, 1]
    permuted = _scores(lambda f: f[:, order])
    assert permuted["mig"] == pytest.approx(copied["mig"], abs=1e-12)
    assert permuted == pytest.approx(copied, abs=0.02)  # the forests' random draws meet the codes in another order


def test_mutual_information_matches_sklearn_and_its_self_information_is_the_entropy():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 300)
    b = (a + rng.integers(0, 3, 300)) % 7  # dependent on a
    assert mutual_information(a, b) == pytest.approx(mutual_info_score(a, b), rel=1e-12)
    p = np.bincount(a) / len(a)
    assert mutual_information(a, a) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-12)


def test_discretise_keeps_classes_and_cuts_continuous_values_into_equal_width_bins():
    assert discretise(np.array([3.0, 7.0, 3.0, 9.0])).tolist() == [0, 1, 0, 2]
    values = np.linspace(0, 1, 1000)
    bins = discretise(values, bins=10)
    assert bins.min() == 0 and bins.max() == 9 and np.bincount(bins).tolist() == [100] * 10


def test_dci_of_a_diagonal_importance_matrix_is_one_and_of_a_uniform_one_zero():
    assert dci_scores(np.eye(3)) == pytest.approx((1.0, 1.0))
    assert dci_scores(np.ones((3, 3))) == pytest.approx((0.0, 0.0))
    assert dci_scores(np.ones((3, 1))) == (None, pytest.approx(0.0))  # one factor: D undefined


def _image_data(n_train: int, n_test: int, labels: bool, factors: bool) -> ImageData:
    """Blank 2x2 images with labels of 3 classes and/or two factors (the first is the code's copy in the test)."""
    rng = np.random.default_rng(0)
    y = torch.from_numpy(rng.integers(0, 3, n_train + n_test))
    values = {"a": rng.random(n_train + n_test), "b": rng.random(n_train + n_test)}
    return ImageData(
        "tiny",
        torch.zeros(n_train, 1, 2, 2),
        y[:n_train] if labels else None,
        torch.zeros(n_test, 1, 2, 2),
        y[n_train:] if labels else None,
        factors_train={k: v[:n_train] for k, v in values.items()} if factors else None,
        factors_test={k: v[n_train:] for k, v in values.items()} if factors else None,
    )


def test_evaluate_measures_the_factors_else_the_label_else_nothing():
    data = _image_data(500, 2000, labels=True, factors=True)
    codes = lambda f: np.column_stack([f["a"], np.zeros_like(f["a"])])  # noqa: E731 - copies factor a only
    train, test = codes(data.factors_train), codes(data.factors_test)
    values, missing = disentanglement_part(data, train, test, seed=0)
    assert set(values) == {"mig", "dci_disentanglement", "dci_completeness", "dci_informativeness"} and not missing
    assert 0.45 < values["mig"] < 0.6  # factor a: 1; factor b: 0, plus the plug-in bias of 20x20 bins
    labelled = dataclasses.replace(data, factors_train=None, factors_test=None)
    values, missing = disentanglement_part(labelled, train, test, seed=0)
    assert missing == {"dci_disentanglement": "needs at least 2 factors that vary"} and values["mig"] < 0.1
    assert "the class label as the one factor" in _factors_note(labelled)
    unlabelled = dataclasses.replace(labelled, y_train=None, y_test=None)
    values, missing = disentanglement_part(unlabelled, train, test, seed=0)
    assert not values and set(missing.values()) == {"the data has no known factors or labels"} and len(missing) == 4
