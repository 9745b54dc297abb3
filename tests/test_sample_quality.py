"""Frechet distance, k-NN precision and recall, and class statistics on point sets with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vaelab.sample_quality import class_statistics, frechet_distance, precision_recall


def test_fd_of_a_feature_set_with_itself_is_zero_and_a_shift_adds_its_squared_length():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 8))
    assert abs(frechet_distance(features, features)) < 1e-6
    shift = np.full(8, 0.5)
    # Equal covariances: the trace term vanishes and FD = ||shift||² exactly.
    assert frechet_distance(features, features + shift) == pytest.approx(shift @ shift, rel=1e-6)


def test_fd_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    a, b, m = np.array([1.0, 2.0, 0.5]), np.array([0.5, 2.0, 1.5]), np.array([1.0, -1.0, 0.0])
    real = rng.normal(size=(200_000, 3)) * a
    fake = rng.normal(size=(200_000, 3)) * b + m
    expected = m @ m + ((a - b) ** 2).sum()  # ||m1 - m2||² + sum (sigma1 - sigma2)² for commuting covariances
    assert frechet_distance(real, fake) == pytest.approx(expected, abs=0.05)


def test_precision_and_recall_measure_the_overlap_of_two_point_sets():
    rng = np.random.default_rng(0)
    real = rng.uniform(size=(2000, 2))
    half_shifted = rng.uniform(size=(2000, 2)) + [0.5, 0.0]  # half its mass over the real square
    same = rng.uniform(size=(2000, 2))
    far = rng.uniform(size=(2000, 2)) + [5.0, 0.0]
    precision, recall = precision_recall(real, half_shifted, k=3)
    assert precision == pytest.approx(0.5, abs=0.05) and recall == pytest.approx(0.5, abs=0.05)
    assert min(precision_recall(real, same, k=3)) > 0.9
    assert precision_recall(real, far, k=3) == (0.0, 0.0)


def test_precision_drops_for_collapsed_samples_while_recall_reveals_missing_modes():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) + 10])
    one_mode = rng.normal(size=(1000, 2))
    precision, recall = precision_recall(real, one_mode, k=3)
    assert precision > 0.9
    assert recall == pytest.approx(0.5, abs=0.06)


def test_class_statistics_of_uniform_and_collapsed_predictions():
    uniform = np.eye(4)[np.arange(400) % 4]  # every class equally often, fully confident
    confidence, entropy = class_statistics(uniform)
    assert confidence == 1.0 and entropy == pytest.approx(math.log(4))
    collapsed = np.tile([0.7, 0.1, 0.1, 0.1], (50, 1))
    assert class_statistics(collapsed) == (pytest.approx(0.7), 0.0)


def _brute_force_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """The same definition with numpy's exact pairwise differences, an independent reference for small sets."""

    def distances(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def inside(queries, support):
        radii = np.sort(distances(support, support), axis=1)[:, k]  # column 0 is the point itself
        return float((distances(queries, support) <= radii[None, :]).any(1).mean())

    return inside(fake, real), inside(real, fake)


def test_precision_recall_agree_with_brute_force_and_ignore_a_shared_offset():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(300, 6))
    fake = rng.normal(size=(250, 6)) * 1.3 + 0.4
    expected = _brute_force_precision_recall(real, fake, k=3)
    assert 0.1 < min(expected) and max(expected) < 0.99  # a case where the answer is not trivially 0 or 1
    assert precision_recall(real, fake, k=3) == pytest.approx(expected, abs=1e-12)
    # Features sharing a large offset: the matrix-product distance ||a||² + ||b||² - 2ab cancels; ours must not.
    assert precision_recall(real + 1e4, fake + 1e4, k=3) == pytest.approx(expected, abs=1e-12)
