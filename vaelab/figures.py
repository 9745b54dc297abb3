"""The lecture's pictures of trained runs: compute the arrays from a run, hand them to vaelab.plots to draw.

Every latent code here is a posterior mean mu(x) (the AutoEncoder's code itself). Letters in shape comments:
N test images, C channels, H height, W width, Z latent dimensions, P pairs, S interpolation steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from matplotlib.figure import Figure

from vaelab import objectives, plots
from vaelab.data import ImageData, check_matches, load_data
from vaelab.errors import VaelabError
from vaelab.latent import decode_line, encode_means, mean_variances
from vaelab.models import AutoEncoder, reconstruct, sample_prior
from vaelab.pca import principal_plane
from vaelab.runs import Run, load_run
from vaelab.train import training_targets

# Kingma & Welling (2014), figure 4: the 2-D latent decoded on a grid of the prior's quantiles, which spreads
# the tiles evenly in probability mass rather than in z.
QUANTILE_RANGE = (0.05, 0.95)
# Burda et al. (2016), section 5.2: a latent unit u is active when Var_x(E_q(u|x)[u]) exceeds 0.01 (the
# threshold vaelab.latent.active_units counts with).
ACTIVE_UNIT_THRESHOLD = 0.01
CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}
METHODS = ("pca", "tsne")


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


def open_runs(paths: list[str | Path], data_source: str | None = None) -> list[RunView]:
    """Load each run folder and its test data (each data set once), checked to fit the model."""
    cache: dict[str, ImageData] = {}
    views = []
    names = _display_names([Path(p) for p in paths])
    for path, name in zip(paths, names):
        run = load_run(path)
        source = data_source or run.config.data
        if source not in cache:
            cache[source] = load_data(source, run.config.download, run.config.data_cache)
        data = cache[source]
        check_matches(data, run.model.image_shape, f"the model in {path}")
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
        labels = (f"principal component {i + 1} ({100 * share:.0f}% of variance)"
                  for i, share in enumerate(plane.variance_shares))
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


def prior_quantiles(n: int, low: float = QUANTILE_RANGE[0], high: float = QUANTILE_RANGE[1]) -> torch.Tensor:
    """n values z with Phi(z) evenly spaced in [low, high]: the inverse normal CDF (ndtri) of a linspace.  # (n,)"""
    return torch.special.ndtri(torch.linspace(low, high, n, dtype=torch.float64)).float()


def manifold_points(values: torch.Tensor) -> torch.Tensor:
    """The grid's 2-D points in reading order: row r holds z₂ = values[-1 - r] (z₂ grows upwards, as on a plot),
    column c holds z₁ = values[c].  # (n*n, 2)"""
    z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")  # (n, n) each
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)


@torch.no_grad()
def manifold_images(model: AutoEncoder, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The quantile values (n,) and decode_mean at manifold_points (n*n, C, H, W), for a 2-D latent."""
    values = prior_quantiles(n)
    return values, model.decode_mean(manifold_points(values))


@torch.no_grad()
def interpolations(model: AutoEncoder, x_a: torch.Tensor, x_b: torch.Tensor, steps: int) -> torch.Tensor:
    """decode_mean((1-t) mu(x_a) + t mu(x_b)) for `steps` t in [0, 1], per pair.  # (P, S, C, H, W)"""
    mu_a, _ = model.encode(x_a)  # (P, Z)
    mu_b, _ = model.encode(x_b)
    return decode_line(model, mu_a, mu_b, steps)


def kl_and_activity(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean KL(q(z_u|x) || N(0,1)) per dimension in nats (Z,), and Var_x(mu_u) (Z,) (Burda et al.'s activity)."""
    kl = objectives.gaussian_kl(torch.from_numpy(mu).double(), torch.from_numpy(logvar).double())  # (N, Z)
    return kl.mean(0).numpy(), mean_variances(mu)


def read_history(run: Run) -> list[dict]:
    """The per-epoch rows of the run's metrics.jsonl (the committed history if that file is missing)."""
    path = run.path / "metrics.jsonl"
    if not path.is_file():
        return run.history
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise VaelabError(f"{path}: unreadable ({exc})") from None


def _labels(view: RunView, index: np.ndarray | None = None) -> tuple[np.ndarray | None, list[str] | None]:
    y = view.data.y_test
    if y is None:
        return None, None
    y = y.numpy() if index is None else y.numpy()[index]
    return y, CLASS_NAMES.get(view.data.name)


def _balanced_indices(view: RunView, n: int, seed: int) -> np.ndarray:
    """n test indices drawn with a seeded generator, taking the classes in turn when there are labels."""
    rng = np.random.default_rng(seed)
    if view.data.y_test is None:
        return np.sort(rng.choice(len(view.x_test), size=min(n, len(view.x_test)), replace=False))
    y = view.data.y_test.numpy()
    per_class = [rng.permutation(np.flatnonzero(y == c)).tolist() for c in np.unique(y)]
    picked: list[int] = []
    while len(picked) < min(n, len(y)):
        for pool in per_class:
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return np.array(picked)


# ----- one function per figure kind: (runs, options) -> Figure -----

def latent_figure(views: list[RunView], options: FigureOptions) -> Figure:
    panels = []
    for view in views:
        index = None if options.n is None else _balanced_indices(view, options.n, options.seed)
        x = view.x_test if index is None else view.x_test[torch.from_numpy(index)]
        mu, _ = encode_means(view.model, x)
        points, axis_labels = project_2d(mu, options.method, options.seed)
        how = "posterior means μ(x)" if view.model.kind == "vae" else "codes e(x)"
        if mu.shape[1] > 2:
            how += f", {options.method.upper() if options.method == 'pca' else 't-SNE'} to 2-D"
        labels, names = _labels(view, index)
        panels.append(plots.ScatterPanel(f"{view.title}\n{how} of {len(points)} test images", points, labels,
                                         axis_labels, names))
    return plots.latent_scatter(panels, "Where the encoder puts the test images, coloured by their label")


def posterior_figure(views: list[RunView], options: FigureOptions) -> Figure:
    panels = []
    for view in views:
        index = _balanced_indices(view, options.n or 30, options.seed)
        mu, logvar = encode_means(view.model, view.x_test[torch.from_numpy(index)])
        labels, names = _labels(view, index)
        panels.append(plots.PosteriorPanel(view.title, mu, np.exp(0.5 * logvar), labels, names))
    return plots.posterior_ellipses(panels)


def manifold_figure(views: list[RunView], options: FigureOptions) -> Figure:
    panels = []
    for view in views:
        values, images = manifold_images(view.model, options.n or 15)
        note = "" if view.model.kind == "vae" else "\n(the AE has no prior: same grid, for contrast)"
        panels.append(plots.ManifoldPanel(view.title + note, images, values.numpy()))
    return plots.manifold_grid(panels, QUANTILE_RANGE)


def samples_figure(views: list[RunView], options: FigureOptions) -> Figure:
    n = options.n or 64
    panels = [plots.ImagePanel(view.title, sample_prior(view.model, n, seed=options.seed)) for view in views]
    return plots.image_panels(panels, "Decoded prior samples z ~ N(0, I)", ncol=_side(n))


def recon_figure(views: list[RunView], options: FigureOptions) -> Figure:
    n = options.n or 16
    panels = []
    for view in views:
        x = view.x_test[torch.from_numpy(_balanced_indices(view, n, options.seed))]
        panels.append(plots.ReconPanel(view.title, x, reconstruct(view.model, x)))
    return plots.reconstructions(panels)


def interp_figure(views: list[RunView], options: FigureOptions, steps: int = 9) -> Figure:
    pairs = options.n or 6
    panels = []
    for view in views:
        index = _balanced_indices(view, 2 * pairs, options.seed)
        x_a, x_b = view.x_test[torch.from_numpy(index[0::2])], view.x_test[torch.from_numpy(index[1::2])]
        panels.append(plots.InterpPanel(view.title, x_a, interpolations(view.model, x_a, x_b, steps), x_b))
    return plots.interpolation_strips(panels)


def curves_figure(views: list[RunView], options: FigureOptions) -> Figure:
    return plots.training_curves([plots.CurvesPanel(view.title, view.model.kind, read_history(view.run)) for view in views])


def kl_figure(views: list[RunView], options: FigureOptions) -> Figure:
    panels = []
    for view in views:
        mu, logvar = encode_means(view.model, view.x_test)
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
    "recon": recon_figure,
    "interp": interp_figure,
    "curves": curves_figure,
    "kl": kl_figure,
}
KINDS = tuple(FIGURES)


def why_not(kind: str, view: RunView) -> str | None:
    """Why figure `kind` cannot be drawn for this run, or None when it can."""
    model = view.model
    if kind in ("posterior", "kl") and model.kind != "vae":
        return "the AutoEncoder has no posterior q(z|x) and no KL term; this figure needs a VAE run"
    if kind in ("posterior", "manifold") and model.z_dim != 2:
        return f"this figure needs a 2-D latent (train with --z-dim 2); the run has z_dim={model.z_dim}"
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
    """Refuse an unknown figure kind, projection method or a non-positive -n (before any run is loaded)."""
    if kind not in FIGURES:
        raise VaelabError(f"unknown figure {kind!r}: choose one of {', '.join(KINDS)}")
    if options.method not in METHODS:
        raise VaelabError(f"--method must be one of {', '.join(METHODS)}; got {options.method!r}")
    if options.n is not None and options.n <= 0:
        raise VaelabError(f"-n must be a positive integer, got {options.n}")
