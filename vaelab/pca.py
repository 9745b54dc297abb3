"""Principal components of latent codes, with one sign convention, for every 2-D view of a latent.

The figures' scatter (vaelab.figures.project_2d) and the live explorer's plane (vaelab.explorer.latent_plane)
both call `principal_plane`, so one run's two pictures show the same axes pointing the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PrincipalPlane:
    mean: np.ndarray  # (Z,) the codes' mean, the plane's origin
    axes: np.ndarray  # (2, Z) orthonormal rows: the first two principal directions
    variance_shares: np.ndarray  # (2,) share of the codes' total variance along each axis

    def project(self, codes: np.ndarray) -> np.ndarray:
        """Plane coordinates (u_k . (z - mean)) of codes (N, Z).  # (N, 2)"""
        return (np.asarray(codes, dtype=np.float64) - self.mean) @ self.axes.T


def principal_plane(codes: np.ndarray) -> PrincipalPlane:
    """The plane through the codes' mean spanned by their two principal directions (codes (N, Z), Z >= 2).

    PCA (Pearson 1901; Jolliffe 2002, ch. 1): the rows v_1, v_2 of V^T in the SVD X - mean = U S V^T are the
    eigenvectors of the covariance with the largest eigenvalues s_k^2 / (N - 1); axis k's share of the total
    variance is s_k^2 / sum_j s_j^2. An eigenvector is defined up to its sign, so each axis is signed such that
    its largest-magnitude component is positive (the first such component on a tie).
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[1] < 2:
        raise ValueError(f"principal_plane needs codes of shape (N, Z) with Z >= 2, got {codes.shape}")
    mean = codes.mean(0)  # (Z,)
    _, singular, vt = np.linalg.svd(codes - mean, full_matrices=False)  # vt (min(N, Z), Z)
    axes = vt[:2].copy()  # (2, Z)
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])[:, None]
    power = singular**2
    total = power.sum()
    shares = power[:2] / total if total > 0 else np.zeros(2)
    if len(axes) < 2:  # one code: no second direction to speak of
        axes = np.vstack([axes, np.zeros((2 - len(axes), codes.shape[1]))])
        shares = np.concatenate([shares, np.zeros(2 - len(shares))])
    return PrincipalPlane(mean, axes, shares)
