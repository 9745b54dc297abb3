"""Measurements of a trained model, returned as plain dicts of floats (nats per image unless named otherwise).

`evaluate_run` measures the lecture's two axes and returns the dict written to a run's ``eval.json``:
- ``generation``: test loss, negative ELBO and the importance-weighted bound (VAE), squared reconstruction
  error, and sample quality of decoded random latent points in the feature space of the data set's own net (a
  classifier of its labels; without labels a rotation predictor, see vaelab.classifier);
- ``latent``: k-NN and linear probes, silhouette, neighbourhood agreement, active units, interpolation, and the
  disentanglement measures MIG and DCI against the data's known factors (vaelab.disentanglement);
- ``per_dimension``: lists over latent dimensions (KL, variance of the posterior mean);
- ``notes``: what exactly was computed (likelihood, targets, K, sample counts, seeds, seconds).
Every metric is a number or None (not applicable, skipped, no labels, or a split too small for it, each
said in ``notes.not_measured``); ``_se`` keys are standard errors over test images. The measures' names,
directions, descriptions and constants live in vaelab.measures.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch

from vaelab import disentanglement, latent, objectives, sample_quality
from vaelab.bounds import iwae_bound
from vaelab.classifier import Classifier, get_classifier
from vaelab.config import DISCRETISED_LIKELIHOODS, RunConfig
from vaelab.data import TEST_SEED, ImageData, binarize, training_targets
from vaelab.devices import model_device
from vaelab.families.terms import LossTerms
from vaelab.measures import (
    ACTIVE_UNIT_THRESHOLD,
    DCI_DEPTH,
    DCI_FIT_IMAGES,
    DCI_SCORE_IMAGES,
    DCI_TREES,
    DISENTANGLEMENT_BINS,
    INTERP_PAIRS,
    INTERP_POINTS,
    KNN_K,
    MAX_SAMPLES,
    MEASURES,
    MIG_IMAGES,
    NEIGHBOURS,
    PR_K,
    SAMPLERS,
    SECTIONS,
    section_keys,
)
from vaelab.models import AutoEncoder, balanced_labels, check_labels, check_likelihood_data, not_8bit_reason
from vaelab.noise import ImageNoise, stream_seed
from vaelab.priors import StandardNormal
from vaelab.runs import Run

if TYPE_CHECKING:
    from vaelab.distributed import Processes

Missing = dict[str, str]  # measure key -> why it is None
NO_LABELS = "the data has no labels"


def _chunk_loss_parts(
    model: AutoEncoder,
    x: torch.Tensor,
    seed: int,
    batch_size: int,
    chunks: Iterable[int],
    beta: float = 1.0,
    labels: torch.Tensor | None = None,
) -> Iterator[tuple[int, LossTerms]]:
    """(chunk index, the chunk's LossTerms in float64 on the host) for the chunks named of `batch_size` images each.

    Chunk i draws its posterior samples from its own stream (seed, i): its values do not depend on the chunks
    before it, nor on which process measures it (vaelab.distributed deals chunks to processes). `labels` (N,) are
    the images' classes, which a conditional model takes.
    """
    device = model_device(model)
    for index in chunks:
        rows = slice(index * batch_size, (index + 1) * batch_size)
        xb = x[rows].to(device)  # (b, C, H, W)
        yb = None if labels is None else labels[rows].to(device)  # (b,)
        size = len(xb)
        noise = ImageNoise(stream_seed(seed, index), size, slice(0, size), device)
        terms = model.loss_parts(xb, noise=noise, labels=yb, beta=beta)
        # float64 on the host (MPS has no float64)
        yield index, LossTerms(*(_to_host(value) for value in terms))


def _to_host(value):
    """A LossTerms field in float64 on the host: a tensor, a dict of tensors, or None."""
    if isinstance(value, dict):
        return {name: _to_host(tensor) for name, tensor in value.items()}
    return None if value is None else value.detach().cpu().double()


@torch.no_grad()
def per_image_loss_parts(
    model: AutoEncoder,
    x: torch.Tensor,
    *,
    seed: int = 0,
    batch_size: int = 1000,
    beta: float = 1.0,
    labels: torch.Tensor | None = None,
) -> LossTerms:
    """The LossTerms of every image of a split (recon (N,), kl_per_dim (N, Z), ...), one posterior sample per image,
    seeded noise.

    For a VAE recon = -log p(x|z) and kl = KL(q(z|x) || p(z)) in nats, so recon + kl is the negative ELBO;
    for the AE recon is the squared error and kl is 0. Float64, on the host. A conditional model takes the
    images' `labels` (N,).
    """
    was_training = model.training
    model.eval()
    every_chunk = range(math.ceil(len(x) / batch_size))
    chunks = [terms for _, terms in _chunk_loss_parts(model, x, seed, batch_size, every_chunk, beta, labels)]
    model.train(was_training)
    return LossTerms(
        torch.cat([t.recon for t in chunks]),
        torch.cat([t.kl_per_dim for t in chunks]),
        {name: torch.cat([t.extra[name] for t in chunks]) for name in chunks[0].extra},
        None if chunks[0].objective is None else torch.cat([t.objective for t in chunks]),
    )


@torch.no_grad()
def dataset_loss(
    model: AutoEncoder,
    x: torch.Tensor,
    *,
    beta: float = 1.0,
    seed: int = 0,
    batch_size: int = 1000,
    processes: Processes | None = None,
    labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean loss, reconstruction and KL per image over a whole split, one posterior sample per image, and the
    mean KL of each latent dimension (``kl_per_dim``, the collapse check's input; None for a family whose KL does
    not split by dimension).

    For the VAE, recon + kl is the negative ELBO in nats (beta = 1); for the AE recon is the squared error.
    The noise is seeded so that repeated evaluations of one model agree exactly. With several `processes`, each
    measures its chunks (processes.chunks) and the per-chunk sums are added over processes: every chunk's row
    comes from one process and is zero on the others, so the result equals one process's to the last bit.
    A conditional model takes the images' `labels` (N,).
    """
    was_training = model.training
    model.eval()
    n = math.ceil(len(x) / batch_size)
    chunks = processes.chunks(n) if processes is not None else range(n)
    # per chunk: images, loss, recon, KL per dim (a KL that does not split fills the first column)
    sums = torch.zeros(n, 3 + model.z_dim, dtype=torch.float64, device="cpu")
    for index, terms in _chunk_loss_parts(model, x, seed, batch_size, chunks, beta, labels):
        kl_sums = terms.kl_per_dim.sum(0)
        sums[index, 0] = len(terms.recon)
        sums[index, 1], sums[index, 2] = terms.per_image_loss(beta).sum(), terms.recon.sum()
        sums[index, 3 : 3 + len(kl_sums)] = kl_sums
    model.train(was_training)
    if processes is not None:
        sums = processes.sum(sums)
    count, loss_sum, recon_sum, kl_sums = sums[:, 0].sum(), sums[:, 1].sum(), sums[:, 2].sum(), sums[:, 3:].sum(0)
    return {
        "loss": (loss_sum / count).item(),
        "recon": (recon_sum / count).item(),
        "kl": (kl_sums.sum() / count).item(),
        "kl_per_dim": (kl_sums / count).tolist() if model.kl_per_dimension else None,
    }


def mean_and_se(values: torch.Tensor | np.ndarray) -> tuple[float, float | None]:
    """The mean and its standard error std / sqrt(n) over the first axis (None for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
    return float(values.mean()), se


def _with_se(name: str, values) -> dict[str, float | None]:
    mean, se = mean_and_se(values)
    return {name: mean, f"{name}_se": se}


@torch.no_grad()
def reconstruction_squared_error(
    model: AutoEncoder, x: torch.Tensor, batch_size: int = 2000, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """||x - d(mu(x))||² per image, decoded mean in [0, 1]: one reconstruction measure for every model (a
    conditional one encodes and decodes with the images' labels (N,)).  # (N,)"""
    errors = []
    device = model_device(model)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = None if labels is None else labels[start : start + batch_size].to(device)
        mu, _ = model.encode(xb, yb)
        errors.append(objectives.squared_error(model.decode_mean(mu, yb), xb).cpu().double())
    return torch.cat(errors)


def fitted_gaussian(codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (Z,), Cholesky factor (Z, Z)) of a full-covariance Gaussian fitted to codes (N, Z).

    A jitter of 1e-6 times the mean variance keeps the factorisation defined when a dimension is constant.
    """
    codes = np.asarray(codes, dtype=np.float64)
    cov = np.atleast_2d(np.cov(codes, rowvar=False))
    cov += np.eye(len(cov)) * (1e-6 * max(np.trace(cov) / len(cov), 1e-12))
    chol = np.linalg.cholesky(cov)
    return torch.from_numpy(codes.mean(0)).float(), torch.from_numpy(chol).float()


@torch.no_grad()
def decode_random_points(
    model: AutoEncoder,
    n: int,
    sampler: str,
    train_codes: np.ndarray,
    seed: int,
    batch_size: int = 2000,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decoded means of n latent points from `sampler` ("prior": model.prior, N(0, I) or the family's own; "fitted":
    see fitted_gaussian), on the host; a conditional model decodes point i as class labels[i] (labels (n,)).

    The points are drawn on the host, so every device decodes the same ones."""
    generator = torch.Generator().manual_seed(seed)
    if sampler == "fitted":
        mean, chol = fitted_gaussian(train_codes)
        z = mean + torch.randn(n, len(mean), generator=generator, device="cpu") @ chol.T  # (n, Z)
    else:
        z = model.prior.sample(n, generator, labels)  # (n, Z); for N(0, I) the same draws as torch.randn(n, Z)
    device = model_device(model)
    parts = []
    for s in range(0, n, batch_size):
        ys = None if labels is None else labels[s : s + batch_size].to(device)
        parts.append(model.decode_mean(z[s : s + batch_size].to(device), ys).cpu())
    return torch.cat(parts)


def sample_metrics(
    classifier: Classifier, real_features: np.ndarray, images: torch.Tensor, suffix: str
) -> tuple[dict[str, float], Missing]:
    """FD, precision, recall, and (when the feature net classifies labels) classifier confidence and class entropy
    of generated images against real features.

    FD needs two points per set for a covariance, precision and recall more than PR_K for a k-th neighbour; the
    measures a set too small for, or without the labels they need, are returned in the second dict with the reason.
    """
    features, probs = classifier.features_and_probs(images)
    features = features.numpy()
    values: dict[str, float] = {}
    missing: Missing = {}
    if classifier.task == "labels":
        confidence, entropy = sample_quality.class_statistics(probs.numpy())
        values = {f"confidence_{suffix}": confidence, f"class_entropy_nats_{suffix}": entropy}
    else:  # the probabilities of a rotation predictor say nothing about classes
        missing = dict.fromkeys((f"confidence_{suffix}", f"class_entropy_nats_{suffix}"), NO_LABELS)
    n = min(len(real_features), len(features))
    if n >= 2:
        values[f"fd_{suffix}"] = sample_quality.frechet_distance(real_features, features)
    else:
        missing[f"fd_{suffix}"] = f"a covariance needs at least 2 test images, got {n}"
    if n > PR_K:
        values[f"precision_{suffix}"], values[f"recall_{suffix}"] = sample_quality.precision_recall(
            real_features, features, k=PR_K
        )
    else:
        missing[f"precision_{suffix}"] = missing[f"recall_{suffix}"] = (
            f"the k-NN manifold (k={PR_K}) needs more than {PR_K} test images, got {n}"
        )
    return values, missing


def _targets_note(config: RunConfig) -> str:
    if config.likelihood in DISCRETISED_LIKELIHOODS:
        components = f"a mixture of {config.mixture_components}; " if config.likelihood == "logistic-mixture" else ""
        return (
            f"discretised logistic likelihood ({components}Salimans et al. 2017) on the 8-bit levels k/255: "
            "log P(x|z) is a probability of the 8-bit image, so the negative ELBO and -L_K are upper bounds on "
            "-log P(x), in nats"
        )
    if config.likelihood != "bernoulli":
        return (
            f"{config.likelihood} likelihood on grey levels in [0, 1]: a density, in nats, NOT a probability of "
            "the pixel values (it can be negative; not comparable with Bernoulli figures); see bits_per_dim"
        )
    if config.binarize == "none":
        return (
            "Bernoulli likelihood scored on grey-level targets (the lecture's BCE): a cross-entropy, NOT a "
            "normalised log-likelihood; only binarised targets give log p(x)"
        )
    return "Bernoulli likelihood on the test split binarised once (seed 0): log p(x) of binary images, in nats"


def evaluation_inputs(config: RunConfig, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """(training images, test images) as the encoder saw them in training; the test images are also the targets.

    Binarised images when the run binarises, else grey levels. Dynamic binarisation draws fresh training inputs
    per batch; one fixed draw stands for them here.
    """

    train_inputs, test_inputs = training_targets(config, data)
    if config.binarize == "dynamic":
        train_inputs = binarize(data.x_train, torch.Generator().manual_seed(TEST_SEED))
    return train_inputs, test_inputs


def has_likelihood(model: AutoEncoder) -> bool:
    """Whether the model offers log p(x|z) (model.log_likelihood), and so a negative ELBO and bits/dim; the
    importance-weighted bound needs model.has_bound besides. Asked of the model, never read off its family's name."""
    return model.has_likelihood


def why_no_iwae(model: AutoEncoder) -> str | None:
    """Why the importance-weighted bound is not defined for this model (None when it is)."""
    if not has_likelihood(model):
        return "not applicable: the AE has no posterior"
    if not model.has_bound:
        return f"not applicable: the {model.kind} model has no Gaussian posterior q(z|x) to importance-sample"
    return None


def likelihood_measures(
    model: AutoEncoder,
    x: torch.Tensor,
    beta: float,
    k: int | None,
    seed: int,
    progress: bool = False,
    labels: torch.Tensor | None = None,
) -> tuple[dict[str, float | None], Missing]:
    """test_loss and recon_sq_error for every model; neg_elbo_nats, kl_nats and (k given) nll_iwae_nats where
    the model has a likelihood. Per test image, with standard errors. A conditional model takes the images'
    `labels` (N,) (its bounds are then of log p(x|y))."""
    terms = per_image_loss_parts(model, x, seed=TEST_SEED, beta=beta, labels=labels)
    recon, kl = terms.recon, terms.kl()
    values = {
        **_with_se("test_loss", terms.per_image_loss(beta)),
        **_with_se("recon_sq_error", reconstruction_squared_error(model, x, labels=labels)),
    }
    if not has_likelihood(model):
        return values, dict.fromkeys(
            ("neg_elbo_nats", "kl_nats", "nll_iwae_nats"), "not applicable: the AE has no posterior"
        )
    values.update(_with_se("neg_elbo_nats", recon + kl))
    values["kl_nats"] = kl.mean().item()
    if why_no_iwae(model) is not None:
        return values, {"nll_iwae_nats": why_no_iwae(model)}
    if k is None:
        return values, {"nll_iwae_nats": "skipped with --skip-iwae"}
    bound = iwae_bound(model, x, k, generator=torch.Generator().manual_seed(seed), progress=progress, labels=labels)
    return {**values, **_with_se("nll_iwae_nats", -bound)}, {}


BITS_KEYS = ("bits_per_dim_elbo", "bits_per_dim_iwae")


def bits_per_dim_method(
    config: RunConfig, model: AutoEncoder, max_value: int, x: torch.Tensor
) -> tuple[str | None, str]:
    """(how bits per dimension are computed, the sentence saying exactly what they are): "direct" converts the
    nats of a probability, "dequantised" bounds a density's discrete probability, None gives the reason."""
    if not has_likelihood(model):
        return None, "not applicable: the AE has no likelihood"
    if config.likelihood in DISCRETISED_LIKELIHOODS:
        return "direct", (
            "-ELBO / (D ln 2) and -L_K / (D ln 2), D = C*H*W: upper bounds (in expectation over z) on -log2 P(x) / D "
            "of the 8-bit test images, P the discretised logistic's probability: a true likelihood bound"
        )
    if config.likelihood == "bernoulli" and config.binarize == "none":
        return None, (
            "not reported for grey-level Bernoulli targets: their BCE is a cross-entropy, not a log-probability "
            "of the images"
        )
    if config.likelihood == "bernoulli":
        return "direct", (
            "bits per binary pixel, -ELBO / (D ln 2) and -L_K / (D ln 2), D = C*H*W: upper bounds on -log2 p(x) / D "
            "of the binarised test images (binarised once, seed 0), a true likelihood bound of binary data, not "
            "of the grey-level images"
        )
    why = not_8bit_reason(max_value, x)
    if why is not None:
        return None, f"not reported: the Gaussian's dequantised bound is for 8-bit data, and {why}"
    return "dequantised", (
        "(-ELBO(x + u) + D ln 256) / (D ln 2) and (-L_K(x + u) + D ln 256) / (D ln 2), D = C*H*W, x = k/255 the "
        "test image and u ~ U(-1/512, 1/512)^D drawn once per image (seed 0): -log P(k) <= E_u[-log p(x + u)] "
        "+ D ln 256 with P(k) the Gaussian's mass on the cell of side 1/256 around x (Theis et al. 2016), so "
        "these are upper bounds on the bits/dim of the 8-bit images; neg_elbo_nats and nll_iwae_nats are of the "
        "density at x itself and bound nothing discrete"
    )


def bits_per_dim_measures(
    model: AutoEncoder,
    config: RunConfig,
    max_value: int,
    x: torch.Tensor,
    nats: dict[str, float | None],
    k: int | None,
    seed: int,
    progress: bool = False,
    labels: torch.Tensor | None = None,
) -> tuple[dict[str, float | None], Missing]:
    """bits_per_dim_elbo and bits_per_dim_iwae of the test images x (see bits_per_dim_method), with standard errors.

    "direct" rescales the likelihood measures in `nats`; "dequantised" evaluates the negative ELBO and (k given)
    the IWAE bound again on x plus seeded uniform noise and adds D ln 256 (objectives.dequantised_bits_per_dim).
    """
    method, why = bits_per_dim_method(config, model, max_value, x)
    if method is None:
        return {}, dict.fromkeys(BITS_KEYS, why)
    dims = x[0].numel()
    missing = {} if k is not None else {"bits_per_dim_iwae": why_no_iwae(model) or "skipped with --skip-iwae"}
    if method == "direct":
        values = {}
        for bits, source in zip(BITS_KEYS, ("neg_elbo_nats", "nll_iwae_nats")):
            if nats.get(source) is not None:
                se = nats.get(f"{source}_se")
                values[bits] = objectives.bits_per_dim(nats[source], dims)
                values[f"{bits}_se"] = None if se is None else objectives.bits_per_dim(se, dims)
        return values, missing
    y = objectives.uniform_dequantise(x, torch.Generator().manual_seed(TEST_SEED))
    terms = per_image_loss_parts(model, y, seed=TEST_SEED, labels=labels)
    values = _with_se("bits_per_dim_elbo", objectives.dequantised_bits_per_dim(terms.recon + terms.kl(), dims))
    if k is not None:
        generator = torch.Generator().manual_seed(seed)
        bound = iwae_bound(model, y, k, generator=generator, progress=progress, labels=labels)
        values.update(_with_se("bits_per_dim_iwae", objectives.dequantised_bits_per_dim(-bound, dims)))
    return values, missing


def sample_measures(
    model: AutoEncoder,
    classifier: Classifier,
    real: torch.Tensor,
    train_codes: np.ndarray,
    seed: int,
    real_labels: torch.Tensor | None = None,
) -> tuple[dict[str, float], Missing]:
    """The classifier's test accuracy (labelled data), sample_metrics of len(real) decoded points of every
    sampler against the real test images `real`, and a conditional model's sample class accuracy.

    A conditional model decodes its points with the real images' labels `real_labels` (N,), so that both sets
    hold the same classes."""
    values, missing = {}, {}
    if classifier.task == "labels":
        values["classifier_test_accuracy"] = classifier.test_accuracy
    else:
        missing["classifier_test_accuracy"] = NO_LABELS
    real_features = classifier.features_and_probs(real)[0].numpy()
    for i, sampler in enumerate(SAMPLERS):
        images = decode_random_points(model, len(real), sampler, train_codes, seed=seed + i, labels=real_labels)
        _merge(values, missing, sample_metrics(classifier, real_features, images, sampler))
    if not model.conditional:
        missing["sample_class_accuracy"] = "not applicable: the model is not conditional"
    elif classifier.task != "labels":
        missing["sample_class_accuracy"] = NO_LABELS
    else:
        hits = sample_class_accuracy(model, classifier, len(real), seed + len(SAMPLERS))
        values.update(_with_se("sample_class_accuracy", hits))
    return values, missing


def sample_class_accuracy(model: AutoEncoder, classifier: Classifier, n: int, seed: int) -> torch.Tensor:
    """Whether the classifier recognises the requested class y in each of n decoded prior samples of a conditional
    model, z ~ p(z|y) decoded as y = 0, 1, ..., K-1, 0, 1, ... (every class equally often): 1.0 or 0.0.  # (n,)

    Its mean is the share of samples recognised as their class (Sohn et al. 2015's question: does the label
    control what is generated?), its standard error the binomial one."""
    requested = balanced_labels(model, n)  # (n,)
    images = decode_random_points(model, n, "prior", np.empty((0, model.z_dim)), seed=seed, labels=requested)
    _, probs = classifier.features_and_probs(images)  # (n, K)
    return (probs.argmax(1) == requested).double()


LABEL_PROBES = ("knn_accuracy", "linear_probe_accuracy", "silhouette", "neighbourhood_agreement")
INTERPOLATION = ("interp_evenness", "interp_straightness")


def why_not_latent(y_train: np.ndarray | None, y_test: np.ndarray | None, n_test: int) -> Missing:
    """Why each latent probe cannot be computed on splits with these labels (None: no labels; absent: it can)."""
    if y_train is None or y_test is None:
        few = {} if n_test >= 2 else dict.fromkeys(INTERPOLATION, f"needs at least 2 test images, got {n_test}")
        return {**dict.fromkeys(LABEL_PROBES, NO_LABELS), **few}
    n_train = len(y_train)
    classes_train, classes_test = len(np.unique(y_train)), len(np.unique(y_test))
    why: Missing = {}
    if n_train < KNN_K:
        why["knn_accuracy"] = f"the {KNN_K}-NN vote needs at least {KNN_K} training images, got {n_train}"
    if classes_train < 2:
        why["linear_probe_accuracy"] = f"needs at least 2 classes among the training images, got {classes_train}"
    if not 2 <= classes_test < n_test:
        why["silhouette"] = f"needs 2 to {max(n_test - 1, 2)} classes among {n_test} test images, got {classes_test}"
    if n_test <= NEIGHBOURS:
        why["neighbourhood_agreement"] = f"needs more than {NEIGHBOURS} test images, got {n_test}"
    if classes_test < 2:
        why.update(dict.fromkeys(INTERPOLATION, "needs test images of at least 2 classes, got 1"))
    return why


def latent_measures(
    model: AutoEncoder,
    train_codes: np.ndarray,
    test_codes: np.ndarray,
    y_train: np.ndarray | None,
    y_test: np.ndarray | None,
    seed: int,
) -> tuple[dict[str, float | None], Missing]:
    """k-NN and linear probes, silhouette, neighbourhood agreement (labelled data) and interpolation smoothness of
    the codes (between different classes, or without labels between random pairs of different test images)."""
    missing = why_not_latent(y_train, y_test, len(test_codes))
    probes: dict[str, Callable[[], float]] = {
        "knn_accuracy": lambda: latent.knn_accuracy(train_codes, y_train, test_codes, y_test, k=KNN_K),
        "linear_probe_accuracy": lambda: latent.linear_probe_accuracy(train_codes, y_train, test_codes, y_test),
        "silhouette": lambda: latent.silhouette(test_codes, y_test, seed=seed),
        "neighbourhood_agreement": lambda: latent.neighbourhood_agreement(test_codes, y_test, k=NEIGHBOURS),
    }
    values = {key: probe() for key, probe in probes.items() if key not in missing}
    if "interp_evenness" not in missing:
        pairs = torch.from_numpy(latent.interpolation_pairs(len(test_codes), INTERP_PAIRS, y_test, seed=seed))
        codes = torch.from_numpy(test_codes)  # pairs: (P, 2)
        # A conditional model decodes each line with its first image's class.
        line_labels = torch.from_numpy(y_test)[pairs[:, 0]] if model.conditional else None
        evenness, straightness = latent.interpolation_smoothness(
            model, codes[pairs[:, 0]], codes[pairs[:, 1]], INTERP_POINTS, line_labels
        )
        values.update({**_with_se("interp_evenness", evenness), **_with_se("interp_straightness", straightness)})
    return values, missing


def known_factors(data: ImageData) -> tuple[tuple[str, ...], np.ndarray, np.ndarray] | None:
    """(factor names, train factors (N, K), test factors (N, K)) of data with known factors (shapes); labelled
    data without them has its class label as the one factor; None for data with neither."""
    if data.factors_train is not None and data.factors_test is not None:
        names = data.factor_names
        return names, *(np.column_stack([f[name] for name in names]) for f in (data.factors_train, data.factors_test))
    if data.y_train is not None and data.y_test is not None:
        return ("label",), data.y_train.numpy()[:, None], data.y_test.numpy()[:, None]
    return None


def disentanglement_part(
    data: ImageData, train_codes: np.ndarray, test_codes: np.ndarray, seed: int
) -> tuple[dict[str, float], Missing]:
    """MIG and DCI of the codes against the data's known factors (vaelab.disentanglement.disentanglement_measures)."""
    factors = known_factors(data)
    if factors is None:
        return {}, _not_computed("disentanglement", "the data has no known factors or labels")
    _, factors_train, factors_test = factors
    return disentanglement.disentanglement_measures(train_codes, test_codes, factors_train, factors_test, seed)


def _factors_note(data: ImageData) -> str:
    factors = known_factors(data)
    if factors is None:
        return "not computed: the data has no known factors or labels"
    source = "the class label as the one factor (no known factors)" if factors[0] == ("label",) else "factors"
    return (
        f"{source}: {', '.join(factors[0])}; each cut into {DISENTANGLEMENT_BINS} equal-width bins unless it has "
        f"at most that many values; codes mu(x). MIG on at most {MIG_IMAGES} test codes (codes in "
        f"{DISENTANGLEMENT_BINS} bins); DCI: a random forest of {DCI_TREES} trees of depth {DCI_DEPTH} per factor, "
        f"fitted on at most "
        f"{DCI_FIT_IMAGES} training codes, importances = mean impurity decrease, informativeness = accuracy on at "
        f"most {DCI_SCORE_IMAGES} test codes (seeded subsamples)"
    )


def _likelihood_part(
    run: Run,
    data: ImageData,
    x: torch.Tensor,
    k: int | None,
    seed: int,
    say: Callable[[str], None],
    progress: bool,
    labels: torch.Tensor | None = None,
) -> tuple[dict[str, float | None], Missing]:
    """likelihood_measures, then bits_per_dim_measures, of the test images x (with their labels, which a
    conditional model takes)."""
    model, config = run.model, run.config
    k = k if model.has_bound else None
    values, missing = likelihood_measures(model, x, config.beta, k, seed, progress, labels)
    if bits_per_dim_method(config, model, data.max_value, x)[0] == "dequantised":
        say("bits/dim: the ELBO" + ("" if k is None else " and the bound") + " again, on dequantised test images")
    measured = bits_per_dim_measures(model, config, data.max_value, x, values, k, seed, progress, labels)
    _merge(values, missing, measured)
    return values, missing


def _not_computed(part: str, why: str) -> Missing:
    """Every measure of one part of the evaluation (see vaelab.measures.Measure.part), with the reason it is None."""
    return {m.key: why for m in MEASURES.values() if m.part == part}


def _merge(values: dict, missing: Missing, measured: tuple[dict, Missing]) -> None:
    values.update(measured[0])
    missing.update(measured[1])


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - started


def _reporter(name: str, progress: bool) -> Callable[[str], None]:
    """say(message): one line on stderr while `progress`, so stdout keeps only the command's result."""

    def say(message: str) -> None:
        if progress:
            print(f"[evaluate {name}] {message}", file=sys.stderr, flush=True)

    return say


def code_usage(model: AutoEncoder, x_test: torch.Tensor, test_codes: np.ndarray) -> tuple[dict[str, float], Missing]:
    """Active units of the test codes, and for a model with a codebook its perplexity (codes in use)."""
    values = {"active_units": latent.active_units(test_codes, ACTIVE_UNIT_THRESHOLD)}
    if not model.discrete_codes:
        return values, {"codebook_perplexity": f"not applicable: the {model.kind} model has no codebook"}
    values["codebook_perplexity"] = objectives.codebook_perplexity(latent.code_counts(model, x_test))
    return values, {}


def evaluate_run(
    run: Run,
    data: ImageData,
    k: int = 1000,
    skip_iwae: bool = False,
    skip_samples: bool = False,
    skip_latent: bool = False,
    n_samples: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Everything the lecture judges a model on, for one run on `data`'s test split (see the module docstring).

    `progress` says on stderr what is being measured, with a bar and the time left for the slow parts.
    """
    model, config = run.model, run.config
    check_likelihood_data(config, data.max_value, data.x_test)
    model.eval()
    train_inputs, x_test = evaluation_inputs(config, data)
    labelled = data.y_train is not None and data.y_test is not None
    # What the model takes besides the images: the labels for a conditional one, nothing for the others.
    check_labels(model, data.y_train, f"{data.name}'s training split")
    check_labels(model, data.y_test, f"{data.name}'s test split")
    y_train_in, y_test_in = (data.y_train, data.y_test) if model.conditional else (None, None)
    n = min(n_samples or MAX_SAMPLES, len(x_test))
    say = _reporter(run.path.name, progress)
    values, missing, seconds = {}, {}, {}
    with _timed(seconds, "likelihood"):
        say("test loss and ELBO" + ("" if skip_iwae else f", then the importance-weighted bound with K={k}"))
        bound_k = None if skip_iwae else k
        _merge(values, missing, _likelihood_part(run, data, x_test, bound_k, seed, say, progress, y_test_in))
    train_codes, _ = latent.encode_means(model, train_inputs, labels=y_train_in)
    classifier = None
    if skip_samples:
        missing.update(_not_computed("samples", "skipped with --skip-samples"))
    else:
        with _timed(seconds, "samples"):
            say("sample quality (training the data set's feature net first if it is not cached)")
            classifier = get_classifier(data, config.data_cache, progress=progress)
            real_labels = None if y_test_in is None else y_test_in[:n]
            measured = sample_measures(model, classifier, data.x_test[:n], train_codes, seed, real_labels)
            _merge(values, missing, measured)
    with _timed(seconds, "latent"):
        test_codes, test_logvar = latent.encode_means(model, x_test, labels=y_test_in)
        _merge(values, missing, code_usage(model, x_test, test_codes))
        if skip_latent:
            missing.update(_not_computed("probes", "skipped with --skip-latent"))
        else:
            say("latent probes and interpolation")
            y_train, y_test = (data.y_train.numpy(), data.y_test.numpy()) if labelled else (None, None)
            _merge(values, missing, latent_measures(model, train_codes, test_codes, y_train, y_test, seed))
    with _timed(seconds, "disentanglement"):
        if skip_latent:
            missing.update(_not_computed("disentanglement", "skipped with --skip-latent"))
        else:
            say("disentanglement: MIG and DCI")
            _merge(values, missing, disentanglement_part(data, train_codes, test_codes, seed))
    iwae_k = k if why_no_iwae(model) is None and not skip_iwae else None
    notes = evaluation_notes(run, data, len(x_test), iwae_k, None if skip_samples else n, seed, classifier)
    notes["seconds"] = {name: round(value, 2) for name, value in seconds.items()}
    notes["not_measured"] = missing
    return {
        "run": str(run.path),
        "data": data.name,
        "model": model.kind,
        "beta": config.beta,
        "epoch": run.epoch,
        **{section: {key: values.get(key) for key in section_keys(section)} for section in SECTIONS},
        "per_dimension": per_dimension(test_codes, test_logvar if isinstance(model.prior, StandardNormal) else None),
        "notes": notes,
    }


def per_dimension(mu: np.ndarray, logvar: np.ndarray | None) -> dict[str, list[float] | None]:
    """Lists over latent dimensions: the mean KL(q(z_d|x) || N(0, 1)) (None without a posterior variance, and for a
    prior that is no product of N(0, 1), whose KL does not split by dimension) and the variance of the posterior
    mean over the test images."""
    kl = None
    if logvar is not None:
        kl = objectives.gaussian_kl(torch.from_numpy(mu), torch.from_numpy(logvar)).double().mean(0).tolist()
    return {"kl_nats": kl, "mean_variance": latent.mean_variances(mu).tolist()}


def prior_note(model: AutoEncoder) -> str:
    """Where the prior sampler's points come from."""
    if model.trains_prior:
        learned = "its trained autoregressive code prior" if model.prior.is_learned() else "uniform codes"
        return f"code grids drawn from {learned}, decoded from their codebook vectors"
    return model.prior.description


def evaluation_notes(
    run: Run,
    data: ImageData,
    n_test: int,
    iwae_k: int | None,
    n_samples: int | None,
    seed: int,
    feature_net: Classifier | None = None,
) -> dict:
    """What exactly was computed, written from the constants in vaelab.measures (iwae_k, n_samples and the
    feature net of the sample measures are None where the bound or the sample measures were not computed)."""
    config = run.config
    if iwae_k is not None:
        iwae = f"-L_K, Burda et al. (2016) eq. 8, K={iwae_k} samples per image: an upper bound on -log p(x)"
    else:
        iwae = why_no_iwae(run.model) or "not computed"
    labelled = data.y_train is not None and data.y_test is not None
    if n_samples is not None and feature_net is not None:
        samples = (
            f"{n_samples} decoded means d(z) per sampler, against the first {n_samples} test images in [0, 1] "
            f"(never binarised), in the penultimate features of a {feature_net.name} (see features; FD is not "
            f"Inception's FID); prior: z ~ {prior_note(run.model)}; fitted: z ~ a full-covariance Gaussian fitted "
            "to the training codes mu(x)"
        )
    else:
        samples = "not computed"
    pairs = "of different classes" if labelled else "of two different images drawn at random (no labels)"
    return {
        "test_images": n_test,
        "likelihood": _targets_note(config),
        "binarize": config.binarize,
        "test_loss": "recon + beta*kl per image, one posterior sample (the training objective); AE: squared error; "
        "IWAE: -L_K with its k_train samples",
        "neg_elbo_nats": f"-ELBO = -log p(x|z) (one sample z ~ q) + {run.model.kl_description}, beta = 1",
        "nll_iwae_nats": iwae,
        "iwae_k": iwae_k,
        "bits_per_dim": bits_per_dim_method(config, run.model, data.max_value, data.x_test)[1],
        "recon_sq_error": "||x - d(mu(x))||^2 summed over pixels, decoded mean in [0, 1], grey-level x",
        "samples": samples,
        "features": None if feature_net is None else feature_net.description,
        "precision_recall_k": PR_K,
        "class_entropy_max_nats": math.log(int(data.y_test.max()) + 1) if labelled else None,
        "latent": f"codes are encoder means mu(x); k-NN k={KNN_K}, neighbourhood k={NEIGHBOURS}, "
        "logistic regression on standardised codes; fitted on train, scored on test",
        "active_units": (
            f"dimensions with Cov_x(mu_d(x)) > {ACTIVE_UNIT_THRESHOLD} on the test split (Burda et al. 2016)"
        ),
        "interpolation": f"{INTERP_PAIRS} test pairs {pairs}, {INTERP_POINTS} decoded points each; "
        "evenness = max step / mean step, straightness = path length / endpoint distance (1 is best)",
        "disentanglement": _factors_note(data),
        "seed": seed,
    }
