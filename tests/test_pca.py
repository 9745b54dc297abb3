"""One PCA for every 2-D view of a latent: the figures' scatter and the explorer's plane agree axis for axis."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from vaelab.explorer import latent_plane
from vaelab.figures import project_2d
from vaelab.pca import principal_plane


def _code_sets(count: int = 40):
    """Random code sets of varied size, dimension, offset and anisotropy, seeded."""
    rng = np.random.default_rng(0)
    for _ in range(count):
        n, z_dim = int(rng.integers(5, 200)), int(rng.integers(3, 12))
        yield rng.normal(size=(n, z_dim)) * rng.uniform(0.1, 5.0, size=z_dim) + rng.normal(scale=3.0, size=z_dim)


def test_principal_plane_matches_scikit_learn_up_to_sign():
    for codes in _code_sets():
        plane = principal_plane(codes)
        reference = PCA(n_components=2).fit(codes)
        np.testing.assert_allclose(plane.mean, reference.mean_, atol=1e-9)
        np.testing.assert_allclose(np.abs(plane.axes @ reference.components_.T), np.eye(2), atol=1e-6)
        np.testing.assert_allclose(plane.variance_shares, reference.explained_variance_ratio_, rtol=1e-6)


def test_each_axis_has_its_largest_magnitude_component_positive():
    for codes in _code_sets():
        axes = principal_plane(codes).axes
        assert (axes[np.arange(2), np.abs(axes).argmax(1)] > 0).all()
        # The convention does not depend on the sign the SVD happens to return: negated codes give the same axes.
        np.testing.assert_allclose(principal_plane(-codes).axes, axes, atol=1e-9)


def test_figures_and_explorer_show_the_same_plane_with_the_same_signs():
    for codes in _code_sets():
        points, labels = project_2d(codes, "pca")
        mean, basis, shares = latent_plane(torch.from_numpy(codes))
        explorer_points = (torch.from_numpy(codes) - mean) @ basis.T  # (N, 2), as explorer_payload places them
        np.testing.assert_allclose(points, explorer_points.numpy(), atol=1e-9)
        assert labels == tuple(
            f"principal component {i + 1} ({100 * s:.0f}% of variance)" for i, s in enumerate(shares)
        )


def test_principal_plane_refuses_a_one_dimensional_latent():
    with pytest.raises(ValueError, match="Z >= 2"):
        principal_plane(np.zeros((5, 1)))
