"""Measurements of a trained model, returned as plain dicts of floats (nats per image unless named otherwise).

`evaluate_run` measures the lecture's two axes and returns the dict written to a run's ``eval.json``:
- ``generation``: test loss, negative ELBO and the importance-weighted bound (VAE), squared reconstruction
  error, and sample quality of decoded random latent points in a classifier's feature space;
- ``latent``: k-NN and linear probes, silhouette, neighbourhood agreement, active units, interpolation;
- ``per_dimension``: lists over latent dimensions (KL, variance of the posterior mean);
- ``notes``: what exactly was computed (likelihood, targets, K, sample counts, seeds, seconds).
Every metric is a number or None (not applicable, skipped, or no labels); ``_se`` keys are standard errors
over test images.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from vaelab import latent, objectives, sample_quality
from vaelab.bounds import iwae_bound
from vaelab.data import TEST_SEED, ImageData, binarize, training_targets
from vaelab.models import AutoEncoder
from vaelab.runs import Run

KNN_K = 5
NEIGHBOURS = 10
PR_K = 3  # Kynkaanniemi et al. (2019)'s k
INTERP_PAIRS = 100
INTERP_POINTS = 16
MAX_SAMPLES = 10_000
# Sources of "random latent points": the prior N(0, I), and a full-covariance Gaussian fitted to the training
# codes mu(x), the sampler an AutoEncoder needs since it has no prior (Ghosh et al. 2020's ex-post density).
SAMPLERS = ("prior", "fitted")


@torch.no_grad()
def per_image_loss_parts(
    model: AutoEncoder, x: torch.Tensor, target: torch.Tensor, seed: int = 0, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """(recon (N,), kl (N,)) per image over a split, one posterior sample per image, seeded noise.

    For the VAE recon = -log p(x|z) and kl = KL(q(z|x) || N(0, I)) in nats, so recon + kl is the negative ELBO;
    for the AE recon is the squared error and kl is 0. The global RNG is restored afterwards.
    """
    was_training = model.training
    model.eval()
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    recons, kls = [], []
    for start in range(0, len(x), batch_size):
        recon, kl_per_dim = model.loss_parts(x[start:start + batch_size], target[start:start + batch_size])
        recons.append(recon.double())
        kls.append(kl_per_dim.double().sum(1))
    torch.set_rng_state(generator_state)
    model.train(was_training)
    return torch.cat(recons), torch.cat(kls)


@torch.no_grad()
def dataset_loss(
    model: AutoEncoder,
    x: torch.Tensor,
    target: torch.Tensor,
    beta: float = 1.0,
    seed: int = 0,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Mean loss, reconstruction and KL per image over a whole split, one posterior sample per image.

    For the VAE, recon + kl is the negative ELBO in nats (beta = 1); for the AE recon is the squared error.
    The noise is seeded so that repeated evaluations of one model agree exactly.
    """
    recon, kl = per_image_loss_parts(model, x, target, seed, batch_size)
    recon_mean, kl_mean = recon.mean().item(), kl.mean().item()
    return {"loss": recon_mean + beta * kl_mean, "recon": recon_mean, "kl": kl_mean}


def mean_and_se(values: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """The mean and its standard error std / sqrt(n) over the first axis."""
    values = np.asarray(values, dtype=np.float64)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def _with_se(name: str, values) -> dict[str, float]:
    mean, se = mean_and_se(values)
    return {name: mean, f"{name}_se": se}


@torch.no_grad()
def reconstruction_squared_error(model: AutoEncoder, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """||x - d(mu(x))||² per image, decoded mean in [0, 1]: one reconstruction measure for every model.  # (N,)"""
    errors = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        mu, _ = model.encode(xb)
        errors.append(objectives.squared_error(model.decode_mean(mu), xb).double())
    return torch.cat(errors)


def fitted_gaussian(codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (Z,), Cholesky factor (Z, Z)) of a full-covariance Gaussian fitted to codes (N, Z).

    A jitter of 1e-6 times the mean variance keeps the factorisation defined when a dimension is constant.
    """
    codes = np.asarray(codes, dtype=np.float64)
    cov = np.atleast_2d(np.cov(codes, rowvar=False))
    cov += np.eye(len(cov)) * (1e-6 * max(np.trace(cov) / len(cov), 1e-12))
    return torch.as_tensor(codes.mean(0), dtype=torch.float32), torch.as_tensor(np.linalg.cholesky(cov), dtype=torch.float32)


@torch.no_grad()
def decode_random_points(
    model: AutoEncoder, n: int, sampler: str, train_codes: np.ndarray, seed: int, batch_size: int = 2000
) -> torch.Tensor:
    """Decoded means of n latent points from `sampler` ("prior": N(0, I); "fitted": see fitted_gaussian)."""
    eps = torch.randn(n, model.z_dim, generator=torch.Generator().manual_seed(seed))  # (n, Z)
    if sampler == "fitted":
        mean, chol = fitted_gaussian(train_codes)
        z = mean + eps @ chol.T
    else:
        z = eps
    return torch.cat([model.decode_mean(z[s:s + batch_size]) for s in range(0, n, batch_size)])


def sample_metrics(classifier, real_features: np.ndarray, images: torch.Tensor, suffix: str) -> dict[str, float]:
    """FD, precision, recall, classifier confidence and class entropy of generated images against real features."""
    features, probs = classifier.features_and_probs(images)
    features = features.numpy()
    precision, recall = sample_quality.precision_recall(real_features, features, k=PR_K)
    confidence, entropy = sample_quality.class_statistics(probs.numpy())
    return {
        f"fd_{suffix}": sample_quality.frechet_distance(real_features, features),
        f"precision_{suffix}": precision,
        f"recall_{suffix}": recall,
        f"confidence_{suffix}": confidence,
        f"class_entropy_nats_{suffix}": entropy,
    }


def _targets_note(run: Run) -> str:
    config = run.config
    if config.likelihood != "bernoulli":
        return f"{config.likelihood} likelihood on grey levels in [0, 1]: a density, in nats (not comparable with Bernoulli figures)"
    if config.binarize == "none":
        return ("Bernoulli likelihood scored on grey-level targets (the lecture's BCE): a cross-entropy, NOT a normalised "
                "log-likelihood; only binarised targets give log p(x)")
    return "Bernoulli likelihood on the test split binarised once (seed 0): log p(x) of binary images, in nats"


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
    """Everything the lecture judges a model on, for one run on `data`'s test split (see the module docstring)."""
    model, config = run.model, run.config
    model.eval()
    # The encoder sees what it saw in training: binarised images when the run binarises, else grey levels.
    # Dynamic binarisation draws fresh training inputs per batch; one fixed draw stands for them here.
    train_inputs, target = training_targets(config, data)
    if config.binarize == "dynamic":
        train_inputs = binarize(data.x_train, torch.Generator().manual_seed(TEST_SEED))
    x_test = target
    is_vae = model.kind == "vae"
    labelled = data.y_train is not None and data.y_test is not None
    seconds: dict[str, float] = {}

    def log(message: str) -> None:
        if progress:
            print(f"[evaluate {run.path.name}] {message}", flush=True)

    started = time.perf_counter()
    recon, kl = per_image_loss_parts(model, x_test, target, seed=TEST_SEED)
    generation: dict[str, float | None] = {
        **_with_se("test_loss", recon + config.beta * kl),
        **_with_se("recon_sq_error", reconstruction_squared_error(model, x_test)),
        "neg_elbo_nats": None, "neg_elbo_nats_se": None, "kl_nats": None,
        "nll_iwae_nats": None, "nll_iwae_nats_se": None,
    }
    if is_vae:
        generation.update(_with_se("neg_elbo_nats", recon + kl))
        generation["kl_nats"] = kl.mean().item()
        if not skip_iwae:
            log(f"importance-weighted bound, K={k}")
            bound = iwae_bound(model, x_test, target, k, generator=torch.Generator().manual_seed(seed))
            generation.update(_with_se("nll_iwae_nats", -bound))
    seconds["likelihood"] = time.perf_counter() - started

    train_codes, _ = latent.encode_means(model, train_inputs)
    n = min(n_samples or MAX_SAMPLES, len(x_test))
    generation["classifier_test_accuracy"] = None
    for sampler in SAMPLERS:
        generation.update({f"{m}_{sampler}": None for m in ("fd", "precision", "recall", "confidence", "class_entropy_nats")})
    if not skip_samples and labelled:
        from vaelab.classifier import get_classifier

        started = time.perf_counter()
        log("sample quality (training the data set's classifier if it is not cached)")
        classifier = get_classifier(data, config.data_cache, progress=progress)
        generation["classifier_test_accuracy"] = classifier.test_accuracy
        real_features = classifier.features_and_probs(data.x_test[:n])[0].numpy()  # grey-level images
        for i, sampler in enumerate(SAMPLERS):
            images = decode_random_points(model, n, sampler, train_codes, seed=seed + i)
            generation.update(sample_metrics(classifier, real_features, images, sampler))
        seconds["samples"] = time.perf_counter() - started

    started = time.perf_counter()
    test_codes, test_logvar = latent.encode_means(model, x_test)
    latent_metrics: dict[str, float | None] = {
        "active_units": latent.active_units(test_codes),
        "knn_accuracy": None, "linear_probe_accuracy": None, "silhouette": None, "neighbourhood_agreement": None,
        "interp_evenness": None, "interp_evenness_se": None, "interp_straightness": None, "interp_straightness_se": None,
    }
    if not skip_latent and labelled:
        log("latent probes and interpolation")
        y_train, y_test = data.y_train.numpy(), data.y_test.numpy()
        latent_metrics.update({
            "knn_accuracy": latent.knn_accuracy(train_codes, y_train, test_codes, y_test, k=KNN_K),
            "linear_probe_accuracy": latent.linear_probe_accuracy(train_codes, y_train, test_codes, y_test),
            "silhouette": latent.silhouette(test_codes, y_test, seed=seed),
            "neighbourhood_agreement": latent.neighbourhood_agreement(test_codes, y_test, k=NEIGHBOURS),
        })
        pairs = torch.from_numpy(latent.different_class_pairs(y_test, INTERP_PAIRS, seed=seed))
        codes = torch.from_numpy(test_codes)
        evenness, straightness = latent.interpolation_smoothness(model, codes[pairs[:, 0]], codes[pairs[:, 1]], INTERP_POINTS)
        latent_metrics.update(_with_se("interp_evenness", evenness))
        latent_metrics.update(_with_se("interp_straightness", straightness))
    seconds["latent"] = time.perf_counter() - started

    kl_per_dim = None
    if is_vae:
        kl_per_dim = objectives.gaussian_kl(torch.from_numpy(test_codes), torch.from_numpy(test_logvar)).double().mean(0).tolist()
    n_classes = int(data.y_test.max()) + 1 if labelled else None
    return {
        "run": str(run.path),
        "data": data.name,
        "model": model.kind,
        "beta": config.beta,
        "epoch": run.epoch,
        "generation": generation,
        "latent": latent_metrics,
        "per_dimension": {"kl_nats": kl_per_dim, "mean_variance": latent.mean_variances(test_codes).tolist()},
        "notes": {
            "test_images": len(x_test),
            "likelihood": _targets_note(run),
            "binarize": config.binarize,
            "test_loss": "recon + beta*kl per image, one posterior sample (the training objective); AE: squared error",
            "neg_elbo_nats": "-ELBO = -log p(x|z) (one sample z ~ q) + analytic KL(q(z|x) || N(0,I)), beta = 1",
            "nll_iwae_nats": (f"-L_K, Burda et al. (2016) eq. 8, K={k} samples per image: an upper bound on -log p(x)"
                              if is_vae and not skip_iwae else "not computed" if is_vae else "not applicable: the AE has no posterior"),
            "iwae_k": k if is_vae and not skip_iwae else None,
            "recon_sq_error": "||x - d(mu(x))||^2 summed over pixels, decoded mean in [0, 1], grey-level x",
            "samples": (f"{n} decoded means d(z) per sampler, against the first {n} grey-level test images, in the "
                        "penultimate features of vaelab's classifier (FD is not Inception's FID); "
                        "prior: z ~ N(0, I); fitted: z ~ a full-covariance Gaussian fitted to the training codes mu(x)"
                        if not skip_samples and labelled else "not computed" if labelled else "not computed: no labels"),
            "precision_recall_k": PR_K,
            "class_entropy_max_nats": math.log(n_classes) if n_classes else None,
            "latent": f"codes are encoder means mu(x); k-NN k={KNN_K}, neighbourhood k={NEIGHBOURS}, "
                      "logistic regression on standardised codes; fitted on train, scored on test",
            "active_units": "dimensions with Cov_x(mu_d(x)) > 0.01 on the test split (Burda et al. 2016)",
            "interpolation": f"{INTERP_PAIRS} test pairs of different classes, {INTERP_POINTS} decoded points each; "
                             "evenness = max step / mean step, straightness = path length / endpoint distance (1 is best)",
            "seed": seed,
            "seconds": {name: round(value, 2) for name, value in seconds.items()},
        },
    }
