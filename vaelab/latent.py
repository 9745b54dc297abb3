"""Quality of the latent representation: probes, cluster structure, active units, interpolation smoothness.

Letters in shape comments: N images, Z latent dimensions, P interpolation pairs, T points on a path, D pixels.
Codes are the encoder means mu(x) (the AutoEncoder's z), as numpy arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from vaelab.devices import model_device
from vaelab.measures import ACTIVE_UNIT_THRESHOLD, INTERP_POINTS, KNN_K, NEIGHBOURS
from vaelab.models import AutoEncoder


@torch.no_grad()
def encode_means(
    model: AutoEncoder, x: torch.Tensor, batch_size: int = 2000, labels: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(mu (N, Z), logvar (N, Z) or None for the AutoEncoder) of q(z|x) (q(z|x, y) given the labels (N,) of a
    conditional model) over a whole split."""
    mus, logvars = [], []
    device = model_device(model)
    for start in range(0, len(x), batch_size):
        part = None if labels is None else labels[start : start + batch_size].to(device)
        mu, logvar = model.encode(x[start : start + batch_size].to(device), part)
        mus.append(mu.cpu())
        logvars.append(None if logvar is None else logvar.cpu())
    logvar = None if logvars[0] is None else torch.cat(logvars).numpy()
    return torch.cat(mus).numpy(), logvar


def knn_accuracy(
    z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, k: int = KNN_K
) -> float:
    """Test accuracy of a k-nearest-neighbour vote (Euclidean) among training codes: do similar images lie close?"""
    from sklearn.neighbors import KNeighborsClassifier

    return float(KNeighborsClassifier(n_neighbors=k).fit(z_train, y_train).score(z_test, y_test))


def linear_probe_accuracy(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of a multinomial logistic regression on standardised codes: are classes linearly separable?"""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return float(probe.fit(z_train, y_train).score(z_test, y_test))


def silhouette(z: np.ndarray, y: np.ndarray, max_points: int = 5000, seed: int = 0) -> float:
    """Mean silhouette (b - a) / max(a, b) of codes grouped by label, in [-1, 1], on at most max_points codes.

    a is the mean distance to the own class, b to the nearest other class: near 1 for tight, separate classes,
    near 0 for overlapping ones. The cost is quadratic in the number of codes, hence the (seeded) subsample.
    """
    from sklearn.metrics import silhouette_score

    sample = min(max_points, len(z))
    return float(silhouette_score(z, y, sample_size=sample, random_state=seed))


def neighbourhood_agreement(z: np.ndarray, y: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean share of each code's k nearest other codes that carry its label."""
    from sklearn.neighbors import NearestNeighbors

    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)  # (N, k+1), the point itself first
    return float((y[idx[:, 1:]] == y[:, None]).mean())


def mean_variances(mu: np.ndarray) -> np.ndarray:
    """Cov_x(E_q[z_d | x]) per dimension: how much the posterior mean moves across images.  # (Z,)"""
    return mu.astype(np.float64).var(0)


def active_units(mu: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Burda et al. (2016), section 5.2: dimension d is active when Cov_x(E_q[z_d | x]) > threshold (their 0.01)."""
    return int((mean_variances(mu) > threshold).sum())


def interpolation_pairs(n_images: int, n_pairs: int, labels: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """n_pairs (i, j) index pairs of two different images, of different labels when there are labels, drawn with
    a seeded generator.  # (P, 2)

    Without labels the pairs are two different images drawn at random, so the measures of the path between
    them stay defined on unlabelled data (a different population of pairs: compare like with like).
    """
    if labels is not None and len(np.unique(labels)) < 2:
        raise ValueError("interpolation pairs need at least two classes")
    if n_images < 2:
        raise ValueError("interpolation pairs need at least two images")
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n_pairs:
        i, j = rng.integers(n_images, size=2)
        different = (i != j) if labels is None else (labels[i] != labels[j])
        if different:
            pairs.append((i, j))
    return np.array(pairs, dtype=np.int64)


@torch.no_grad()
def decode_line(
    model: AutoEncoder, z_a: torch.Tensor, z_b: torch.Tensor, steps: int, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """decode_mean((1-t) z_a + t z_b) for `steps` values of t evenly spaced in [0, 1], per pair (a conditional
    model decodes pair p's whole line with labels[p], labels (P,)).  # (P, S, C, H, W)"""
    t = torch.linspace(0, 1, steps, device=z_a.device).view(1, steps, 1)  # (1, S, 1)
    z = (1 - t) * z_a[:, None] + t * z_b[:, None]  # (P, S, Z)
    device = model_device(model)
    line_labels = None if labels is None else labels.repeat_interleave(steps).to(device)  # (P*S,)
    images = model.decode_mean(z.flatten(0, 1).to(device), line_labels).cpu()  # (P*S, C, H, W), on the host
    return images.view(len(z_a), steps, *images.shape[1:])


@torch.no_grad()
def interpolation_smoothness(
    model: AutoEncoder,
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    points: int = INTERP_POINTS,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode `points` codes on each straight line z_a -> z_b; per pair (max step / mean step, path / endpoint gap).

    Steps are Euclidean distances between consecutive decoded images (pixels in [0, 1]). The first ratio is 1
    when the image changes evenly along the line and large when it jumps; the second is 1 when the decoded path
    is itself a straight line in pixel space and grows as it detours (e.g. through blurry or foreign images).
    A conditional model decodes pair p's line with labels[p] (labels (P,)).
    """
    images = decode_line(model, z_a, z_b, points, labels).flatten(2).transpose(0, 1)  # (T, P, D)
    steps = (images[1:] - images[:-1]).norm(dim=-1)  # (T-1, P)
    gap = (images[-1] - images[0]).norm(dim=-1)  # (P,)
    tiny = torch.finfo(steps.dtype).tiny  # a path that never moves has ratio 0/0: report it as 1, not NaN
    evenness = steps.max(0).values / steps.mean(0).clamp(min=tiny)
    evenness = torch.where(steps.mean(0) > 0, evenness, torch.ones_like(evenness))
    straightness = torch.where(gap > 0, steps.sum(0) / gap.clamp(min=tiny), torch.ones_like(gap))
    return evenness, straightness


@torch.no_grad()
def code_counts(model: AutoEncoder, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """How often each codebook vector is chosen over every grid position of the images x (a model with
    discrete_codes).  # (K,)"""
    device = model_device(model)
    size = model.prior.codes
    counts = torch.zeros(size, dtype=torch.long)
    for start in range(0, len(x), batch_size):
        codes = model.code_indices(x[start : start + batch_size].to(device)).cpu()
        counts += torch.bincount(codes.flatten(), minlength=size)
    return counts
