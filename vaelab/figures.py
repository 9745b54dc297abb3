"""The lecture's pictures of trained runs: compute the arrays from a run, hand them to vaelab.plots to draw.

Every latent code here is a posterior mean mu(x) (the AutoEncoder's code itself). Letters in shape comments:
N test images, C channels, H height, W width, Z latent dimensions, P pairs, S interpolation steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from vaelab import objectives, plots
from vaelab.config import SEED_RANGE
from vaelab.data import ImageData, check_matches, load_data_for, training_targets
from vaelab.devices import Compute, model_device
from vaelab.errors import VaelabError
from vaelab.latent import decode_line, encode_means, mean_variances
from vaelab.measures import ACTIVE_UNIT_THRESHOLD
from vaelab.models import AutoEncoder, balanced_labels, decode_prior, reconstruct
from vaelab.pca import principal_plane
from vaelab.priors import StandardNormal
from vaelab.runs import Run, load_run, read_history

# Kingma & Welling (2014), figure 4: the 2-D latent decoded on a grid of the prior's quantiles, which spreads
# the tiles evenly in probability mass rather than in z.
QUANTILE_RANGE = (0.05, 0.95)
# An AutoEncoder has no prior, and its codes may lie far from N(0, I)'s ±1.64: its grid spans this range of
# its own test codes on each axis (evenly in z), so its panel shows the region its codes fill.
CODE_RANGE = QUANTILE_RANGE
CLASS_NAMES = {
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}
METHODS = ("pca", "tsne")
TSNE_MIN_IMAGES = 2  # t-SNE's perplexity must be positive: (N - 1) / 3 > 0
# Largest -n per figure kind (also for vaelab sample and reconstruct) and what it counts: beyond these a figure
# is unreadable, takes minutes, or exceeds Agg's 2**16-pixel side. Other kinds show at most the test split.
N_LIMITS = {
    "manifold": (50, "tiles per grid side"),
    "samples": (10_000, "samples"),
    "classes": (50, "samples per class"),
    "recon": (512, "test images"),
    "interp": (100, "pairs"),
}


@dataclass
class RunView:
    """A loaded run with the test images its encoder is shown (binarised as in evaluation when it was trained so)."""

    name: str
    run: Run
    data: ImageData
    x_test: torch.Tensor  # (N, C, H, W)

    @property
    def model(self) -> AutoEncoder:
        return self.run.model

    @property
    def title(self) -> str:
        return f"{self.name}: {self.model.kind.upper()}, {self.model.z_dim}-D latent"


@dataclass
class FigureOptions:
    method: str = "pca"  # projection of latents with more than two dimensions: "pca" or "tsne"
    n: int | None = None  # how many images (or grid side, pairs); None = the figure's default
    seed: int = 0  # which test images and prior draws are shown


def open_runs(paths: list[str | Path], data_source: str | None = None, compute: Compute | None = None) -> list[RunView]:
    """Load each run folder and its test data (each data set once), checked to fit the model; each model moved to
    compute's device (default: left on the CPU)."""
    cache: dict[str, ImageData] = {}
    views = []
    names = _display_names([Path(p) for p in paths])
    for path, name in zip(paths, names):
        run = load_run(path)
        source = data_source or run.config.data
        if source not in cache:
            cache[source] = load_data_for(run.config, source)
        data = cache[source]
        check_matches(data, run.model.image_shape, f"the model in {path}")
        if compute is not None:
            compute.prepare(run.model)
        views.append(RunView(name, run, data, training_targets(run.config, data)[1]))
    return views


def _display_names(paths: list[Path]) -> list[str]:
    """Folder names, or whole paths where two folders share a name."""
    names = [p.name or str(p) for p in paths]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names)]


def project_2d(codes: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, tuple[str, str]]:
    """(N, Z) codes -> (N, 2) points and axis labels: the codes themselves when Z = 2, else PCA or t-SNE."""
    if codes.shape[1] == 2:
        return codes, ("z₁", "z₂")
    if codes.shape[1] == 1:
        raise VaelabError("a 1-D latent has no 2-D picture; train with --z-dim 2 or more")
    if method == "pca":
        plane = principal_plane(codes)  # the explorer's plane too: same axes, same signs
        labels = (
            f"principal component {i + 1} ({100 * share:.0f}% of variance)"
            for i, share in enumerate(plane.variance_shares)
        )
        return plane.project(codes), tuple(labels)
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = min(30.0, (len(codes) - 1) / 3)
        # One thread: scikit-learn's OpenMP Barnes-Hut t-SNE slowed 300-fold (0.1 s -> 40 s for 60 points) on
        # a busy 2-core machine, and one thread embeds a few thousand codes in seconds.
        with threadpool_limits(1):
            points = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes)
        return points, ("t-SNE axis 1", "t-SNE axis 2")
    raise VaelabError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")


def prior_quantiles(model: AutoEncoder, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per axis of a 2-D latent, n values z with F(z) evenly spaced over QUANTILE_RANGE, F the CDF of the prior's
    marginal on that axis (N(0, 1)'s inverse, ndtri, for the standard prior; the VampPrior's mixture).  # (n,) x 2"""
    levels = torch.linspace(*QUANTILE_RANGE, n, dtype=torch.float64, device="cpu")  # (n,)
    values = model.prior.marginal_quantiles(levels)  # (n, 2)
    return values[:, 0].contiguous(), values[:, 1].contiguous()


def manifold_points(z1_values: torch.Tensor, z2_values: torch.Tensor) -> torch.Tensor:
    """The grid's 2-D points in reading order: row r holds z₂ = z2_values[-1 - r] (z₂ grows upwards, as on a
    plot), column c holds z₁ = z1_values[c].  # (n*n, 2)"""
    z2, z1 = torch.meshgrid(z2_values.flip(0), z1_values, indexing="ij")  # (n, n) each
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)


def code_range_values(
    codes: np.ndarray, n: int, low: float = CODE_RANGE[0], high: float = CODE_RANGE[1]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per axis of (N, 2) codes, n values evenly spaced from the codes' `low` to their `high` quantile.  # (n,) x 2"""
    ends = np.quantile(codes, [low, high], axis=0)  # (2, 2): rows low/high, columns z₁/z₂
    return tuple(torch.linspace(float(ends[0, a]), float(ends[1, a]), n, device="cpu") for a in range(2))


def manifold_panel(view: RunView, n: int) -> plots.ManifoldPanel:
    """The run's n x n grid decoded: a VAE at its prior's quantiles (whatever the prior: N(0, I), a VampPrior),
    an AutoEncoder (no prior) over the CODE_RANGE of its own test codes."""
    if view.model.has_bound:  # a generative model with a prior
        low, high = QUANTILE_RANGE
        values = prior_quantiles(view.model, n)
        how, axis_labels = f"z at the prior's {100 * low:g}%…{100 * high:g}% quantiles", ("z₁", "z₂")
    else:
        low, high = CODE_RANGE
        values = code_range_values(encode_means(view.model, view.x_test, labels=_model_labels(view))[0], n)
        span = f"{100 * low:g}%…{100 * high:g}%"
        how = f"no prior: grid over the {span} range of its test codes"
        axis_labels = (f"z₁ ({span} of its codes)", f"z₂ ({span} of its codes)")
    points = manifold_points(*values)
    labels = None
    if view.model.conditional:  # one class for the whole grid: the latent is the style within it
        labels, how = torch.zeros(len(points), dtype=torch.long), f"{how}, class 0"
    device = model_device(view.model)
    with torch.no_grad():
        images = view.model.decode_mean(points.to(device), None if labels is None else labels.to(device)).cpu()
    return plots.ManifoldPanel(f"{view.title}\n{how}", images, values[0].numpy(), values[1].numpy(), axis_labels)


@torch.no_grad()
def interpolations(
    model: AutoEncoder,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    steps: int,
    y_a: torch.Tensor | None = None,
    y_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """decode_mean((1-t) mu(x_a) + t mu(x_b)) for `steps` t in [0, 1], per pair.  # (P, S, C, H, W)

    A conditional model encodes each image with its label (y_a, y_b) and decodes the line as A's class."""
    device = model_device(model)
    y_a, y_b = (None, None) if y_a is None else (y_a.to(device), y_b.to(device))
    mu_a, _ = model.encode(x_a.to(device), y_a)  # (P, Z)
    mu_b, _ = model.encode(x_b.to(device), y_b)
    return decode_line(model, mu_a, mu_b, steps, y_a)


def kl_and_activity(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean KL(q(z_u|x) || N(0,1)) per dimension in nats (Z,), and Var_x(mu_u) (Z,) (Burda et al.'s activity)."""
    kl = objectives.gaussian_kl(torch.from_numpy(mu).double(), torch.from_numpy(logvar).double())  # (N, Z)
    return kl.mean(0).numpy(), mean_variances(mu)


def _model_labels(view: RunView, index: np.ndarray | None = None) -> torch.Tensor | None:
    """The test labels (at `index`) a conditional model takes with its images; None for the others."""
    if not view.model.conditional:
        return None
    return view.data.y_test if index is None else view.data.y_test[torch.from_numpy(index)]


def _labels(view: RunView, index: np.ndarray | None = None) -> tuple[np.ndarray | None, list[str] | None]:
    y = view.data.y_test
    if y is None:
        return None, None
    y = y.numpy() if index is None else y.numpy()[index]
    return y, CLASS_NAMES.get(view.data.name)


def _balanced_indices(view: RunView, n: int, seed: int) -> np.ndarray:
    """n test indices drawn with a seeded generator, taking the classes in turn when there are labels; without
    labels, n indices evenly spaced through the test split from a seeded start (the split is stored shuffled)."""
    rng = np.random.default_rng(seed)
    if view.data.y_test is None:
        return evenly_spaced(len(view.x_test), n, int(rng.integers(len(view.x_test))))
    y = view.data.y_test.numpy()
    per_class = [rng.permutation(np.flatnonzero(y == c)).tolist() for c in np.unique(y)]
    picked: list[int] = []
    while len(picked) < min(n, len(y)):
        for pool in per_class:
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return np.array(picked)


def evenly_spaced(size: int, n: int, start: int = 0) -> np.ndarray:
    """min(n, size) different indices into range(size), spaced size / n apart from `start`, wrapping around.  # (n,)"""
    n = min(n, size)
    return (start + np.arange(n) * size // n) % size


# ----- one function per figure kind: (runs, options) -> Figure -----


def latent_figure(views: list[RunView], options: FigureOptions) -> Figure:
    panels = []
    for view in views:
        index = None if options.n is None else _balanced_indices(view, options.n, options.seed)
        x = view.x_test if index is None else view.x_test[torch.from_numpy(index)]
        mu, _ = encode_means(view.model, x, labels=_model_labels(view, index))
        if mu.shape[1] > 2 and options.method == "tsne" and len(mu) < TSNE_MIN_IMAGES:
            raise VaelabError(f"t-SNE needs at least {TSNE_MIN_IMAGES} test images, got {len(mu)}: raise -n")
        points, axis_labels = project_2d(mu, options.method, options.seed)
        how = "posterior means μ(x)" if view.model.has_bound else "codes e(x)"
        if mu.shape[1] > 2:
            how += f", {options.method.upper() if options.method == 'pca' else 't-SNE'} to 2-D"
        labels, names = _labels(view, index)
        panels.append(
            plots.ScatterPanel(f"{view.title}\n{how} of {len(points)} test images", points, labels, axis_labels, names)
        )
    labelled = [panel.labels is not None for panel in panels]
    how = "coloured by their label" if any(labelled) else "uncoloured: the data has no labels"
    how += "" if all(labelled) or not any(labelled) else " where the data has them"
    return plots.latent_scatter(panels, f"Where the encoder puts the test images, {how}")


def posterior_figure(views: list[RunView], options: FigureOptions) -> Figure:
    panels = []
    for view in views:
        index = _balanced_indices(view, options.n or 30, options.seed)
        mu, logvar = encode_means(view.model, view.x_test[torch.from_numpy(index)], labels=_model_labels(view, index))
        labels, names = _labels(view, index)
        density = None if isinstance(view.model.prior, StandardNormal) else _log_density_of(view.model.prior)
        panels.append(plots.PosteriorPanel(view.title, mu, np.exp(0.5 * logvar), labels, names, density))
    return plots.posterior_ellipses(panels)


def _log_density_of(prior: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """prior.log_prob as a function of (G, Z) points in float64 numpy, evaluated where the prior lives.  # (G,)"""
    device = model_device(prior)

    @torch.no_grad()
    def log_density(points: np.ndarray) -> np.ndarray:
        return prior.log_prob(torch.from_numpy(points).float().to(device)).cpu().double().numpy()

    return log_density


def manifold_figure(views: list[RunView], options: FigureOptions) -> Figure:
    n = options.n or 15
    panels = [manifold_panel(view, n) for view in views]
    return plots.manifold_grid(panels, f"The 2-D latent decoded on a {n}×{n} grid (z₂ grows upwards)")


def samples_figure(views: list[RunView], options: FigureOptions) -> Figure:
    n = options.n or 64
    panels = [
        plots.ImagePanel(view.title, decode_prior(view.model, n, options.seed, balanced_labels(view.model, n)))
        for view in views
    ]
    conditional = (
        " (a conditional model's taking the classes in turn)" if any(v.model.conditional for v in views) else ""
    )
    return plots.image_panels(panels, f"Decoded prior samples {prior_phrase(views)}{conditional}", ncol=_side(n))


@torch.no_grad()
def class_rows(model: AutoEncoder, n: int, seed: int) -> torch.Tensor:
    """A conditional model's n prior draws decoded as every class: row y holds d(z_1, y) ... d(z_n, y) with
    z_i ~ p(z|y) drawn from one seed for every row, so a column keeps its noise (the style) while the class
    changes.  # (K*n, C, H, W)"""
    rows = [decode_prior(model, n, seed, torch.full((n,), y, device="cpu")) for y in range(model.classes)]
    return torch.cat(rows)


def classes_figure(views: list[RunView], options: FigureOptions) -> Figure:
    n = options.n or 10
    panels = [plots.ImagePanel(view.title, class_rows(view.model, n, options.seed)) for view in views]
    return plots.image_panels(panels, "One row per class: the same prior draws z in each column", ncol=n)


def prior_phrase(views: list[RunView]) -> str:
    """How the sampled z were drawn, for a figure's title: N(0, I), unless a run has a prior of its own."""
    if not any(view.model.trains_prior for view in views):
        return "z ~ N(0, I)"
    return "z ~ each model's prior (VAE, AE: N(0, I); VQ-VAE: code grids from its code prior)"


def recon_figure(views: list[RunView], options: FigureOptions) -> Figure:
    n = options.n or 16
    panels = []
    for view in views:
        index = _balanced_indices(view, n, options.seed)
        x = view.x_test[torch.from_numpy(index)]
        panels.append(plots.ReconPanel(view.title, x, reconstruct(view.model, x, _model_labels(view, index))))
    return plots.reconstructions(panels)


def interp_figure(views: list[RunView], options: FigureOptions, steps: int = 9) -> Figure:
    pairs = options.n or 6
    panels = []
    for view in views:
        index = _balanced_indices(view, 2 * pairs, options.seed)
        x_a, x_b = view.x_test[torch.from_numpy(index[0::2])], view.x_test[torch.from_numpy(index[1::2])]
        y_a, y_b = _model_labels(view, index[0::2]), _model_labels(view, index[1::2])
        lines = interpolations(view.model, x_a, x_b, steps, y_a, y_b)
        panels.append(plots.InterpPanel(view.title, x_a, lines, x_b))
    return plots.interpolation_strips(panels)


def curves_figure(views: list[RunView], options: FigureOptions) -> Figure:
    panels = [plots.CurvesPanel(view.title, view.model.kind, read_history(view.run)) for view in views]
    return plots.training_curves(panels)


def kl_figure(views: list[RunView], options: FigureOptions) -> Figure:
    panels = []
    for view in views:
        mu, logvar = encode_means(view.model, view.x_test, labels=_model_labels(view))
        kl, activity = kl_and_activity(mu, logvar)
        panels.append(plots.KLPanel(view.title, kl, activity > ACTIVE_UNIT_THRESHOLD))
    return plots.kl_per_dimension(panels, ACTIVE_UNIT_THRESHOLD)


def _side(n: int) -> int:
    return int(np.ceil(np.sqrt(n)))


FIGURES: dict[str, Callable[[list[RunView], FigureOptions], Figure]] = {
    "latent": latent_figure,
    "posterior": posterior_figure,
    "manifold": manifold_figure,
    "samples": samples_figure,
    "classes": classes_figure,
    "recon": recon_figure,
    "interp": interp_figure,
    "curves": curves_figure,
    "kl": kl_figure,
}
KINDS = tuple(FIGURES)


def why_not(kind: str, view: RunView) -> str | None:
    """Why figure `kind` cannot be drawn for this run, or None when it can."""
    model = view.model
    if kind in ("posterior", "kl") and not model.has_bound:
        return f"the {model.kind} model has no Gaussian posterior q(z|x) and no KL term; this figure needs a VAE run"
    if kind == "kl" and not model.kl_per_dimension:
        return (
            f"the {model.kind} model's prior is not a product over latent dimensions, so its KL does not split into "
            "one term per dimension; this figure needs a VAE with the N(0, I) prior"
        )
    if kind == "manifold" and model.discrete_codes:
        return (
            f"the {model.kind} latent is a grid of discrete codes, with no continuous plane to sweep; "
            "see the samples figure, or the explorer's code grid"
        )
    if kind in ("posterior", "manifold") and model.z_dim != 2:
        return f"this figure needs a 2-D latent (train with --z-dim 2); the run has z_dim={model.z_dim}"
    if kind == "classes" and not model.conditional:
        return f"the {model.kind} model is not conditional: one row per class needs a conditional run (--model cvae)"
    if kind == "latent" and model.z_dim < 2:
        return "a 1-D latent has no 2-D picture; train with --z-dim 2 or more"
    return None


def make_figure(kind: str, views: list[RunView], options: FigureOptions | None = None) -> Figure:
    """Draw figure `kind` (one of KINDS) for the runs side by side; VaelabError when a run does not fit it."""
    options = options or FigureOptions()
    check_request(kind, options)
    for view in views:
        reason = why_not(kind, view)
        if reason:
            raise VaelabError(f"{view.run.path}: {reason}")
    return FIGURES[kind](views, options)


def check_request(kind: str, options: FigureOptions) -> None:
    """Refuse an unknown figure kind, projection method, seed or -n out of range (before any run is loaded)."""
    if kind not in FIGURES:
        raise VaelabError(f"unknown figure {kind!r}: choose one of {', '.join(KINDS)}")
    if options.method not in METHODS:
        raise VaelabError(f"--method must be one of {', '.join(METHODS)}; got {options.method!r}")
    check_n(kind, options.n)
    check_seed(options.seed)


def check_n(kind: str, n: int | None) -> None:
    """Refuse a -n that is not positive, or above N_LIMITS for figure `kind` (None: the figure's default)."""
    if n is None:
        return
    if n <= 0:
        raise VaelabError(f"-n must be a positive integer, got {n}")
    limit, what = N_LIMITS.get(kind, (None, ""))
    if limit is not None and n > limit:
        raise VaelabError(f"-n {n} is too large for {kind}: at most {limit} {what}")


def check_seed(seed: int) -> None:
    """Refuse a seed outside SEED_RANGE, which the random generators behind the figures cannot take."""
    low, high = SEED_RANGE
    if not low <= seed <= high:
        raise VaelabError(f"seed must be an integer from {low} to {high}, got {seed}")
