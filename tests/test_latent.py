"""Latent-quality measures on planted structure, and the k-NN probe on a trained VAE's codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaelab import latent


def _clusters(n=200, gap=20.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return rng.normal(size=(n, 3)) + gap * y[:, None], y


def test_knn_probe_beats_chance_by_far_on_digits(vae_run, digits):
    z_train, _ = latent.encode_means(vae_run.model, digits.x_train)
    z_test, _ = latent.encode_means(vae_run.model, digits.x_test)
    y_train, y_test = digits.y_train.numpy(), digits.y_test.numpy()
    assert latent.knn_accuracy(z_train, y_train, z_test, y_test, k=5) > 0.5  # chance is 0.1
    assert latent.linear_probe_accuracy(z_train, y_train, z_test, y_test) > 0.5


def test_active_units_count_the_planted_dimensions():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(1000, 8)) * np.array([1, 1, 1, 0.3, 0.01, 0.01, 0.001, 0])
    # Variances 1, 1, 1, 0.09 are above 0.01; 1e-4, 1e-4, 1e-6 and 0 are not.
    assert latent.active_units(mu) == 4
    np.testing.assert_allclose(latent.mean_variances(mu)[:3], 1.0, atol=0.15)


def test_cluster_measures_separate_planted_classes_from_shuffled_labels():
    z, y = _clusters()
    shuffled = np.random.default_rng(1).permutation(y)
    assert latent.neighbourhood_agreement(z, y) == 1.0
    assert latent.neighbourhood_agreement(z, shuffled) == pytest.approx(0.5, abs=0.1)
    assert latent.silhouette(z, y) > 0.8
    assert abs(latent.silhouette(z, shuffled)) < 0.1


def test_interpolation_pairs_pair_different_labels():
    y = np.array([0, 0, 0, 1, 2, 2])
    pairs = latent.interpolation_pairs(len(y), 50, y, seed=3)
    assert pairs.shape == (50, 2) and (y[pairs[:, 0]] != y[pairs[:, 1]]).all()


def test_interpolation_pairs_without_labels_pair_two_different_images_from_all_over_the_set():
    pairs = latent.interpolation_pairs(5, 200, seed=3)
    assert pairs.shape == (200, 2) and (pairs[:, 0] != pairs[:, 1]).all()
    assert set(pairs.ravel()) == set(range(5))
    np.testing.assert_array_equal(pairs, latent.interpolation_pairs(5, 200, seed=3))  # seeded


def test_interpolation_pairs_refuse_a_single_image_or_class():
    with pytest.raises(ValueError, match="two images"):
        latent.interpolation_pairs(1, 3)
    with pytest.raises(ValueError, match="two classes"):
        latent.interpolation_pairs(4, 3, np.zeros(4, dtype=np.int64))


class _Decoder:
    """An unconditional model's decode_mean(z, labels=None) around a function of z."""

    def __init__(self, f):
        self.f = f

    def decode_mean(self, z, labels=None):
        return self.f(z)


def test_interpolation_of_a_linear_decoder_is_even_and_straight():
    a = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    model = _Decoder(lambda z: z @ a)
    z_a, z_b = torch.zeros(3, 4), torch.randn(3, 4)
    evenness, straightness = latent.interpolation_smoothness(model, z_a, z_b, points=16)
    torch.testing.assert_close(evenness, torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(straightness, torch.ones(3), atol=1e-4, rtol=0)


def test_interpolation_flags_a_decoder_that_jumps_and_detours():
    # A steep sigmoid jumps once along the line (uneven steps); a path around a circle detours.
    jump = _Decoder(lambda z: torch.sigmoid(200 * (z - 0.5)))
    evenness, _ = latent.interpolation_smoothness(jump, torch.zeros(1, 1), torch.ones(1, 1), points=16)
    assert evenness.item() > 5
    circle = _Decoder(lambda z: torch.cat([torch.cos(z), torch.sin(z)], dim=1))
    _, straightness = latent.interpolation_smoothness(circle, torch.zeros(1, 1), torch.full((1, 1), 3.0), points=16)
    # Arc of 3 radians against its chord 2 sin(1.5): a ratio of about 1.50.
    assert straightness.item() == pytest.approx(3.0 / (2 * np.sin(1.5)), rel=0.01)
