"""Every measure `vaelab evaluate` reports, in one place: its key in eval.json, a readable name, which direction
is better, what it measures, the function that computes it and the constants it is computed with.

vaelab.evaluate computes with these constants and writes its notes from them; compare's table, the command's
summary and the figures read names, directions, descriptions and constants from here, so none of them can drift
from what was computed. Importing this module imports no torch: tables and help stay fast.
"""

from __future__ import annotations

import importlib
import math
import textwrap
from dataclasses import dataclass

from vaelab.errors import VaelabError

# The constants of the measures, each quoted by the descriptions below and by eval.json's notes.
KNN_K = 5  # neighbours voting in the k-NN probe
NEIGHBOURS = 10  # neighbours whose labels the neighbourhood agreement counts
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016), section 5.2: unit d is active when Cov_x(E_q[z_d | x]) > it
PR_K = 3  # Kynkaanniemi et al. (2019)'s k of improved precision and recall
INTERP_PAIRS = 100  # test pairs of different classes whose latent line is decoded
INTERP_POINTS = 16  # decoded points per latent line
MAX_SAMPLES = 10_000  # decoded samples per sampler at most (and as many test images)
DISENTANGLEMENT_BINS = 20  # equal-width bins per code (MIG) and per continuous factor, as disentanglement_lib's
MIG_IMAGES = 10_000  # test codes MIG is computed on at most (a seeded subsample beyond)
DCI_FIT_IMAGES = 2000  # training codes DCI's forests are fitted on at most (a seeded subsample beyond)
DCI_SCORE_IMAGES = 2000  # test codes they are scored on (informativeness) at most
DCI_TREES = 10  # trees per factor's random forest
DCI_DEPTH = 8  # their depth at most: 256 leaves hold 20 bins, at a quarter of the cost of fully grown trees
# Sources of "random latent points": the model's prior p(z) (N(0, I), or the family's own), and a full-covariance
# Gaussian fitted to the training codes mu(x), the sampler an AutoEncoder needs since it has no prior (Ghosh et
# al. 2020's ex-post density).
SAMPLERS = {  # name: (how tables name its samples, where its points come from)
    "prior": ("prior samples", "z ~ p(z), the model's prior (N(0, I); VampPrior: its mixture; VQ-VAE: its code prior)"),
    "fitted": ("fitted-Gaussian samples", "z ~ a Gaussian fitted to the training codes"),
}
SECTIONS = ("generation", "latent")
PARTS = {  # the parts of an evaluation (Measure.part), as the command's summary names them
    "likelihood": "the likelihood measures",
    "samples": "the sample-quality measures",
    "probes": "the latent probes and interpolation",
    "codes": "active units",
    "disentanglement": "the disentanglement measures",
}


@dataclass(frozen=True)
class Measure:
    """One number of eval.json: ``evaluation[section][key]``, with ``key + '_se'`` beside it when has_se."""

    key: str
    section: str  # "generation" or "latent"
    label: str  # the readable name tables show
    better: str | None  # "higher", "lower", or None: a property (a rate, a count), not a quality
    description: str
    function: str  # the qualified name of the function that computes it (see `computed_by`)
    part: str  # the part of the evaluation computing it: likelihood, samples, probes (labelled codes) or codes
    has_se: bool = False  # a mean over test images, reported with its standard error

    def computed_by(self):
        """The function named by `function`, imported now (this module itself stays free of torch)."""
        module, _, name = self.function.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def read(self, evaluation: dict, source: str = "the evaluation") -> tuple[float | int | None, float | None]:
        """(value, standard error or None) of this measure in an eval.json dict; VaelabError when malformed."""
        section = evaluation.get(self.section, {}) if isinstance(evaluation, dict) else None
        if not isinstance(section, dict):
            raise VaelabError(
                f"{source}: '{self.section}' is not an object as vaelab evaluate writes it; run vaelab evaluate again"
            )
        value, se = section.get(self.key), section.get(f"{self.key}_se") if self.has_se else None
        for name, number in ((self.key, value), (f"{self.key}_se", se)):
            if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
                raise VaelabError(
                    f"{source}: {self.section}.{name} is {number!r}, not a number; run vaelab evaluate again"
                )
        return value, se


def _likelihood_measures() -> list[Measure]:
    return [
        Measure(
            "nll_iwae_nats",
            "generation",
            "NLL bound (IWAE), nats",
            "lower",
            "-L_K, Burda et al.'s importance-weighted bound with K samples (see notes): an upper bound on "
            "-log p(x), nats per test image (VAE only)",
            "vaelab.bounds.iwae_bound",
            "likelihood",
            has_se=True,
        ),
        Measure(
            "neg_elbo_nats",
            "generation",
            "negative ELBO, nats",
            "lower",
            "negative ELBO, -log p(x|z) with one z ~ q(z|x) + KL(q(z|x) || N(0, I)), beta = 1, nats per test "
            "image (VAE only; VQ-VAE: -log p(x|z_q(x)) - log p(k(x)) under its code prior, also a bound on "
            "-log p(x))",
            "vaelab.evaluate.per_image_loss_parts",
            "likelihood",
            has_se=True,
        ),
        Measure(
            "bits_per_dim_iwae",
            "generation",
            "bits/dim bound (IWAE)",
            "lower",
            "-L_K / (D ln 2), D = C*H*W: an upper bound on -log2 P(x) per dimension of the 8-bit test images for "
            "the discretised logistics; for a Gaussian, on uniformly dequantised images plus log2 256; bits per "
            "binary pixel for binarised data; none for grey-level Bernoulli targets (notes.bits_per_dim says which)",
            "vaelab.objectives.bits_per_dim",
            "likelihood",
            has_se=True,
        ),
        Measure(
            "bits_per_dim_elbo",
            "generation",
            "bits/dim, negative ELBO",
            "lower",
            "the negative ELBO / (D ln 2), computed as the bits/dim bound (IWAE) is: a looser upper bound",
            "vaelab.objectives.bits_per_dim",
            "likelihood",
            has_se=True,
        ),
        Measure(
            "kl_nats",
            "generation",
            "KL to the prior, nats",
            None,
            "KL(q(z|x) || p(z)) per test image, nats: the information the code carries about x (a rate); a "
            "one-sample estimate log q(z|x) - log p(z) where the prior has no closed-form KL (VampPrior); "
            "VQ-VAE: -log p(k(x)) of the code grid under its code prior",
            "vaelab.objectives.gaussian_kl",
            "likelihood",
        ),
        Measure(
            "test_loss",
            "generation",
            "own training loss",
            None,
            "each model's own training objective on the test split (AE: squared error; VAE: recon + beta*kl; "
            "IWAE: -L_K with K = k_train): "
            "not comparable across models",
            "vaelab.evaluate.per_image_loss_parts",
            "likelihood",
            has_se=True,
        ),
        Measure(
            "recon_sq_error",
            "generation",
            "reconstruction error",
            "lower",
            "||x - d(mu(x))||² summed over pixels, the decoded code of each test image against the image: "
            "reconstruction quality",
            "vaelab.evaluate.reconstruction_squared_error",
            "likelihood",
            has_se=True,
        ),
        Measure(
            "classifier_test_accuracy",
            "generation",
            "classifier's test accuracy",
            None,
            "test accuracy of the data set's CNN classifier whose features the sample metrics use (the same "
            "for every model; data without labels uses a rotation-prediction net instead, see notes.features)",
            "vaelab.classifier.get_classifier",
            "samples",
        ),
    ]


def _sample_measures(sampler: str, samples: str, where: str) -> list[Measure]:
    quality = "vaelab.sample_quality"
    return [
        Measure(
            f"fd_{sampler}",
            "generation",
            f"Fréchet distance, {samples}",
            "lower",
            f"Frechet distance between the feature net's features (notes.features) of test images and of decoded "
            f"{where} (FD, not Inception's FID)",
            f"{quality}.frechet_distance",
            "samples",
        ),
        Measure(
            f"precision_{sampler}",
            "generation",
            f"precision, {samples}",
            "higher",
            f"share of decoded {where} inside the k-NN manifold (k={PR_K}) of test images: are samples realistic?",
            f"{quality}.precision_recall",
            "samples",
        ),
        Measure(
            f"recall_{sampler}",
            "generation",
            f"recall, {samples}",
            "higher",
            f"share of test images inside the k-NN manifold (k={PR_K}) of decoded {where}: is the data's "
            "variety covered?",
            f"{quality}.precision_recall",
            "samples",
        ),
        Measure(
            f"confidence_{sampler}",
            "generation",
            f"classifier confidence, {samples}",
            "higher",
            f"the classifier's mean top-class probability on decoded {where}: do samples look like some class?",
            f"{quality}.class_statistics",
            "samples",
        ),
        Measure(
            f"class_entropy_nats_{sampler}",
            "generation",
            f"class entropy, nats, {samples}",
            "higher",
            f"entropy of the classifier's predicted-class histogram on decoded {where}, nats (log C when all "
            "classes appear equally)",
            f"{quality}.class_statistics",
            "samples",
        ),
    ]


def _conditional_measures() -> list[Measure]:
    return [
        Measure(
            "sample_class_accuracy",
            "generation",
            "sample class accuracy",
            "higher",
            "share of a conditional model's prior samples z ~ p(z|y), decoded as each class y in turn, that "
            "the data set's classifier labels as the class asked for: does the label control the sample? "
            "(conditional models only)",
            "vaelab.evaluate.sample_class_accuracy",
            "samples",
            has_se=True,
        ),
    ]


def _latent_measures() -> list[Measure]:
    return [
        Measure(
            "knn_accuracy",
            "latent",
            "k-NN accuracy",
            "higher",
            f"test accuracy of a {KNN_K}-NN vote among training codes mu(x): do similar images lie close?",
            "vaelab.latent.knn_accuracy",
            "probes",
        ),
        Measure(
            "linear_probe_accuracy",
            "latent",
            "linear probe accuracy",
            "higher",
            "test accuracy of logistic regression on training codes: are classes linearly separable?",
            "vaelab.latent.linear_probe_accuracy",
            "probes",
        ),
        Measure(
            "silhouette",
            "latent",
            "silhouette",
            "higher",
            "silhouette of test codes grouped by label, in [-1, 1]: tight and separate classes score high",
            "vaelab.latent.silhouette",
            "probes",
        ),
        Measure(
            "neighbourhood_agreement",
            "latent",
            "neighbourhood agreement",
            "higher",
            f"share of each test code's {NEIGHBOURS} nearest codes with its label",
            "vaelab.latent.neighbourhood_agreement",
            "probes",
        ),
        Measure(
            "active_units",
            "latent",
            "active units",
            None,
            f"latent dimensions with Cov_x(mu_d(x)) > {ACTIVE_UNIT_THRESHOLD} (Burda et al. 2016): capacity in use",
            "vaelab.latent.active_units",
            "codes",
        ),
        Measure(
            "codebook_perplexity",
            "latent",
            "codebook perplexity",
            None,
            "exp(entropy) of the codes' usage over the test images' grid positions (VQ-VAE): the effective number "
            "of codebook vectors in use, K when all are used equally, 1 when one is",
            "vaelab.objectives.codebook_perplexity",
            "codes",
        ),
        Measure(
            "interp_evenness",
            "latent",
            "interpolation evenness",
            "lower",
            f"max step / mean step between {INTERP_POINTS} decoded points on the latent line between test "
            "images of different classes (1: even)",
            "vaelab.latent.interpolation_smoothness",
            "probes",
            has_se=True,
        ),
        Measure(
            "interp_straightness",
            "latent",
            "interpolation straightness",
            "lower",
            "decoded path length / endpoint distance along those lines, in pixel space (1: no detour)",
            "vaelab.latent.interpolation_smoothness",
            "probes",
            has_se=True,
        ),
    ]


def _disentanglement_measures() -> list[Measure]:
    factors = "the data's known factors (the class label as the one factor of labelled data without them)"
    dci = (
        f"from a random forest of {DCI_TREES} trees of depth {DCI_DEPTH} per factor (factors cut into "
        f"{DISENTANGLEMENT_BINS} bins) on training codes mu(x)"
    )
    return [
        Measure(
            "mig",
            "latent",
            "MIG",
            "higher",
            f"mutual information gap (Chen et al. 2018): per factor, the gap between the two codes mu_j(x) (cut "
            f"into {DISENTANGLEMENT_BINS} bins) sharing most information with it, over its entropy, averaged over "
            f"{factors}; in [0, 1], 1 when each factor lives in one code alone",
            "vaelab.disentanglement.mig",
            "disentanglement",
        ),
        Measure(
            "dci_disentanglement",
            "latent",
            "DCI disentanglement",
            "higher",
            f"Eastwood & Williams (2018)'s D: 1 - entropy of each code's importance over the factors, weighted by "
            f"the code's importance, {dci}; in [0, 1], 1 when each code serves one factor (needs 2 factors)",
            "vaelab.disentanglement.dci_scores",
            "disentanglement",
        ),
        Measure(
            "dci_completeness",
            "latent",
            "DCI completeness",
            "higher",
            f"Eastwood & Williams (2018)'s C: 1 - entropy of each factor's importance over the codes, {dci}; in "
            "[0, 1], 1 when each factor is captured by one code",
            "vaelab.disentanglement.dci_scores",
            "disentanglement",
        ),
        Measure(
            "dci_informativeness",
            "latent",
            "DCI informativeness",
            "higher",
            "Eastwood & Williams (2018)'s I, as disentanglement_lib reports it: the forests' mean accuracy on "
            f"held-out test codes in predicting each binned factor of {factors}",
            "vaelab.disentanglement.importance_matrix",
            "disentanglement",
        ),
    ]


MEASURES: dict[str, Measure] = {
    m.key: m
    for m in (
        *_likelihood_measures(),
        *(m for sampler, (name, where) in SAMPLERS.items() for m in _sample_measures(sampler, name, where)),
        *_conditional_measures(),
        *_latent_measures(),
        *_disentanglement_measures(),
    )
}


def section_keys(section: str) -> list[str]:
    """The keys of one section of eval.json, in order: each measure's, followed by its ``_se`` where it has one."""
    return [
        key
        for m in MEASURES.values()
        if m.section == section
        for key in ((m.key, f"{m.key}_se") if m.has_se else (m.key,))
    ]


def format_value(value: float | int | None, se: float | None = None) -> str:
    """A value rounded to its standard error's second significant digit (93.12 ± 0.45), else to 4 digits."""
    if value is None:
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if se is None or not math.isfinite(se) or se <= 0 or not math.isfinite(value):
        return f"{value:.4g}"
    decimals = max(0, 1 - math.floor(math.log10(se)))
    return f"{value:.{decimals}f} ± {se:.{decimals}f}"


def summary_table(evaluation: dict, source: str = "the evaluation") -> str:
    """The measures of one eval.json as a short text table (name, value ± se, better), then what was not measured
    and why (from ``notes.not_measured``), a whole part of the evaluation named at once."""
    rows, missing = [("measure", "value", "better")], {}
    for m in MEASURES.values():
        value, se = m.read(evaluation, source)
        if value is None:
            why = evaluation.get("notes", {}).get("not_measured", {}).get(m.key, "not computed")
            missing.setdefault(why, []).append(m)
        else:
            rows.append((m.label, format_value(value, se), m.better or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c}" for a, b, c in rows]
    lines.insert(1, "-" * max(map(len, lines)))
    for why, measures in missing.items():
        lines += textwrap.wrap(f"not measured ({why}): {'; '.join(_names(measures))}", 110, subsequent_indent="  ")
    features = evaluation.get("notes", {}).get("features")
    if isinstance(features, str):  # which network's features FD, precision and recall were measured in
        lines += textwrap.wrap(f"features: {features}", 110, subsequent_indent="  ")
    return "\n".join(lines)


def _names(measures: list[Measure]) -> list[str]:
    """Labels of measures, a whole part of the evaluation (PARTS) named once instead of measure by measure."""
    names, done = [], set()
    for m in measures:
        whole_part = [other for other in MEASURES.values() if other.part == m.part]
        if all(other in measures for other in whole_part) and len(whole_part) > 1:
            if m.part not in done:
                names.append(PARTS[m.part])
                done.add(m.part)
        else:
            names.append(m.label)
    return names
