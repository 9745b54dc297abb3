"""Sample quality in a classifier's feature space: Frechet distance, k-NN precision and recall, class statistics.

Letters in shape comments: N real points, M generated points, F feature dimensions, C classes.
"""

from __future__ import annotations

import numpy as np
import torch

from vaelab.measures import PR_K


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """||m_r - m_f||² + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) between Gaussians fitted to two feature sets (N, F), (M, F).

    Heusel et al. (2017)'s FID formula, here in the features of vaelab's own classifier, hence "FD". The trace
    of the matrix square root is computed as sum_i sqrt(lambda_i) over the eigenvalues of the symmetric PSD
    matrix S_r^(1/2) S_f S_r^(1/2), which has the same eigenvalues as S_r S_f and avoids a non-symmetric sqrtm.
    """
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    mean_gap = real.mean(0) - fake.mean(0)
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)  # (F, F)
    sqrt_r = _psd_sqrt(cov_r)
    eigenvalues = np.linalg.eigvalsh(sqrt_r @ cov_f @ sqrt_r)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    return float(mean_gap @ mean_gap + np.trace(cov_r) + np.trace(cov_f) - 2.0 * trace_sqrt)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped to 0)."""
    eigenvalues, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T


def kth_neighbour_radii(points: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point in the same set.  # (N,)"""
    radii = []
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start : start + chunk], points)  # (chunk, N)
        # The smallest distance is the point itself (0), so the k-th neighbour is the (k+1)-th smallest.
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def fraction_inside_manifold(
    queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int = 1024
) -> float:
    """Share of queries lying within radius_j of some support point j: the k-NN manifold test.  # ()"""
    inside = []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start : start + chunk], support)  # (chunk, N)
        inside.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(inside).double().mean().item()


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019), by default with their k = 3.

    The manifold of a set is the union of balls around its points, each of radius the distance to its k-th
    nearest neighbour in the set. Precision: the share of generated points inside the real manifold (are
    samples realistic?). Recall: the share of real points inside the generated manifold (is the data covered?).

    torch.cdist computes ||a||² + ||b||² - 2 a.b, which cancels catastrophically when the points share a large
    offset (features near 1e4 give P = R = 1 in float32). Both sets are therefore centred on the real set's
    mean, in float64, before any distance is taken: distances do not change and the cancellation is gone.
    """
    real64, fake64 = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    centre = real64.mean(0)
    real_t, fake_t = torch.from_numpy(real64 - centre), torch.from_numpy(fake64 - centre)
    precision = fraction_inside_manifold(fake_t, real_t, kth_neighbour_radii(real_t, k))
    recall = fraction_inside_manifold(real_t, fake_t, kth_neighbour_radii(fake_t, k))
    return precision, recall


def class_statistics(probs: np.ndarray) -> tuple[float, float]:
    """(mean max-class probability, entropy in nats of the predicted-class histogram) of class probabilities (M, C).

    The first is high when each sample looks clearly like one class; the second is log C when every class is
    generated equally often and 0 when all samples fall in one class.
    """
    probs = np.asarray(probs, dtype=np.float64)
    confidence = float(probs.max(1).mean())
    counts = np.bincount(probs.argmax(1), minlength=probs.shape[1]).astype(np.float64)
    share = counts[counts > 0] / counts.sum()
    return confidence, float((share * np.log(1.0 / share)).sum())  # written so one class gives +0.0, not -0.0
