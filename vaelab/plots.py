"""Pictures: arrays in, matplotlib Figures (or PNG, JPEG, PDF and SVG files) out. Nothing here trains or loads a model.

Figures are built with the object-oriented API (matplotlib.figure.Figure on an Agg canvas), never pyplot, so
nothing opens a window or touches global figure state. Every figure has a fixed size in inches and is saved at
DPI with no tight cropping, so a raster's pixel size is known in advance: size_in_inches * DPI. Panels are
dataclasses of arrays; several panels (one per run) are drawn side by side, in rows of up to PANELS_PER_ROW,
under one title.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Ellipse, Patch
from matplotlib.text import Text

from vaelab.atomic import atomic_write_bytes
from vaelab.errors import VaelabError

DPI = 150  # pixels per inch of every saved figure: sharp on screens, true size in print
# Paul Tol's "muted" palette (colour-blind safe) plus black, with one marker shape per class so ten classes
# stay apart in greyscale print too.
CLASS_COLOURS = (
    "#332288",
    "#88CCEE",
    "#44AA99",
    "#117733",
    "#999933",
    "#DDCC77",
    "#CC6677",
    "#882255",
    "#AA4499",
    "#000000",
)
CLASS_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")
TRAIN_TEST_COLOURS = {"train": "#0077BB", "test": "#EE7733"}  # Tol's "vibrant" blue and orange
ACTIVE_COLOURS = {True: "#0077BB", False: "#BBBBBB"}
# Even, so runs compared in pairs (ae-2d beside vae-2d) never straddle two rows; four fill a landscape page.
PANELS_PER_ROW = 4
MIN_TILE_PX = 48  # the smallest image tile vaelab sample writes: 8x8 digits are drawn 6x, 28x28 MNIST 2x
TITLE_ROOM = 0.94  # share of its figure or column a title's line may fill, leaving a margin at each edge
# Output suffix -> matplotlib's format name (JPEG through Pillow, which matplotlib requires).
IMAGE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg", ".jpg": "jpeg", ".jpeg": "jpeg"}


def on_white(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) images in [0, 1] as grey (C = 1) or RGB (C = 3) pictures: grey + alpha (C = 2) and RGBA
    (C = 4) are composited over white, colour * alpha + (1 - alpha), as a viewer shows them on a white page."""
    c = images.shape[1]
    if c in (2, 4):
        colour, alpha = images[:, :-1], images[:, -1:]
        return colour * alpha + (1.0 - alpha)
    if c not in (1, 3):
        raise VaelabError(f"cannot draw images of {c} channels: vaelab draws 1 (grey), 2, 3 (RGB) or 4 (RGBA)")
    return images


def image_grid(images: torch.Tensor, ncol: int, pad: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images in [0, 1] into one (rows*(H+pad)+pad, ncol*(W+pad)+pad) grey or (..., 3) RGB
    array, padding white (see on_white for 2 and 4 channels)."""
    images = on_white(images.detach().cpu().clamp(0, 1).numpy())
    n, c, h, w = images.shape
    nrow = -(-n // ncol)
    grid = np.ones((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def tile_scale(height_px: int, width_px: int, min_tile_px: int = MIN_TILE_PX) -> int:
    """The smallest whole factor k with k * min(height, width) >= min_tile_px: nearest-neighbour upscaling by an
    integer keeps every pixel a sharp square, and 8x8 digits become 48x48 tiles one can read."""
    return max(1, -(-min_tile_px // min(height_px, width_px)))


def save_image_grid(path: str | Path, images: torch.Tensor, ncol: int) -> None:
    """Write an image grid (grey-level colormap for one channel), each pixel repeated tile_scale times, atomically,
    in the format its suffix names (IMAGE_FORMATS)."""
    path = image_output_path(path)
    scale = tile_scale(*images.shape[-2:])
    grid = image_grid(images, ncol).repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, grid, cmap="gray", vmin=0.0, vmax=1.0, format=IMAGE_FORMATS[path.suffix.lower()])
    atomic_write_bytes(path, buffer.getvalue())


def figure_bytes(fig: Figure, image_format: str = "png") -> bytes:
    """The figure as a file of that format (png, jpeg, pdf, svg) at DPI, uncropped: a raster is
    fig.get_size_inches() * DPI pixels."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=image_format, dpi=DPI, facecolor="white")
    return buffer.getvalue()


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (see figure_bytes)."""
    return figure_bytes(fig, "png")


def save_figure(fig: Figure, path: str | Path) -> None:
    """Write the figure in the format its suffix names (IMAGE_FORMATS), atomically (nothing half-written)."""
    path = image_output_path(path)
    atomic_write_bytes(path, figure_bytes(fig, IMAGE_FORMATS[path.suffix.lower()]))


def image_output_path(path: str | Path) -> Path:
    """The output path of a picture, refused (VaelabError) unless its folder exists and its suffix is in
    IMAGE_FORMATS."""
    return check_output_path(path, *IMAGE_FORMATS)


def check_output_path(path: str | Path, *suffixes: str) -> Path:
    """The output path, refused (VaelabError) when its folder is missing or its name ends in none of `suffixes`."""
    path = Path(path)
    if not path.parent.is_dir():
        raise VaelabError(f"{path}: the folder {path.parent} does not exist")
    if path.suffix.lower() not in suffixes:
        names = ", ".join(suffixes[:-1]) + (" or " if len(suffixes) > 1 else "") + suffixes[-1]
        raise VaelabError(f"{path}: the output file must end in {names}")
    return path


def _figure(width_in: float, height_in: float) -> Figure:
    """A figure whose size is a whole number of pixels at DPI (Agg truncates fractions of a pixel), on an Agg
    canvas so that text can be measured before it is saved."""
    fig = Figure(figsize=(round(width_in * DPI) / DPI, round(height_in * DPI) / DPI), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _panels_figure(n: int, panel_in: tuple[float, float], extra_in: tuple[float, float] = (0.0, 0.0)):
    """A figure of n panels of panel_in (width, height) inches, in rows of at most PANELS_PER_ROW, plus extra_in
    inches (width for a legend, height for the title); and its n axes in reading order."""
    rows, cols = -(-n // PANELS_PER_ROW), min(n, PANELS_PER_ROW)
    fig = _figure(panel_in[0] * cols + extra_in[0], panel_in[1] * rows + extra_in[1])
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.remove()
    return fig, list(axes[:n])


def _titled(fig: Figure, title: str, **text_props) -> Figure:
    """Give the figure its one title, then wrap it and every panel title at spaces so that each fits, centred
    where it stands, inside the figure: Agg crops text that runs past the figure's edge, and constrained layout
    makes room for a title's height but never its width."""
    suptitle = fig.suptitle(title, **text_props)
    # Lay out once to learn where each panel sits; titles' widths never move panels, so wrapping keeps them there.
    fig.get_layout_engine().execute(fig)
    renderer = fig.canvas.get_renderer()
    width_px = fig.bbox.width
    texts = [(suptitle, width_px / 2)] + [(ax.title, ax.bbox.x0 + ax.bbox.width / 2) for ax in fig.axes]
    for text, centre_px in texts:
        room_px = 2 * min(centre_px, width_px - centre_px)
        text.set_text(_wrapped(text, TITLE_ROOM * room_px, renderer))
    return fig


def _wrapped(text: Text, room_px: float, renderer) -> str:
    """The text's string with line breaks so that no line is wider than room_px as drawn: at spaces, and inside
    a word (a long run path) only where the word alone is too wide."""
    props = text.get_fontproperties()

    def fits(line: str) -> bool:
        return renderer.get_text_width_height_descent(line, props, ismath=False)[0] <= room_px

    lines = []
    for paragraph in text.get_text().split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if fits(candidate):
                line = candidate
                continue
            if line:
                lines.append(line)
            while len(word) > 1 and not fits(word):
                cut = max([k for k in range(1, len(word)) if fits(word[:k])], default=1)
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return "\n".join(lines)


def _class_legend(fig: Figure, labels: np.ndarray | None, names: list[str] | None, title: str = "label") -> None:
    """One legend for the whole figure, one entry per class present, outside the panels on the right."""
    if labels is None:
        return
    handles = [
        Line2D(
            [],
            [],
            linestyle="",
            marker=CLASS_MARKERS[c % 10],
            color=CLASS_COLOURS[c % 10],
            markersize=7,
            label=names[c] if names else str(c),
        )
        for c in np.unique(labels)
    ]
    fig.legend(handles=handles, loc="outside right center", title=title, frameon=False)


def _first_labelled(panels: list) -> tuple[np.ndarray | None, list[str] | None]:
    """(labels, class names) of the first panel with labels, which the shared legend shows; (None, None) if none."""
    labelled = next((panel for panel in panels if panel.labels is not None), None)
    return (None, None) if labelled is None else (labelled.labels, labelled.class_names)


def _class_style(label: int) -> dict:
    return {"color": CLASS_COLOURS[label % 10], "marker": CLASS_MARKERS[label % 10]}


# ----- latent scatter -----


@dataclass
class ScatterPanel:
    title: str
    points: np.ndarray  # (N, 2)
    labels: np.ndarray | None  # (N,) integer classes, or None
    axis_labels: tuple[str, str]
    class_names: list[str] | None = None


def latent_scatter(panels: list[ScatterPanel], title: str) -> Figure:
    """One scatter of 2-D latent points per panel, coloured and shaped by class, with one shared legend."""
    fig, axes = _panels_figure(len(panels), (3.9, 3.9), extra_in=(1.3, 0.4))
    for ax, panel in zip(axes, panels):
        if panel.labels is None:
            ax.scatter(*panel.points.T, s=8, color="#332288", alpha=0.6, linewidths=0)
        else:
            for label in np.unique(panel.labels):
                pts = panel.points[panel.labels == label]
                ax.scatter(*pts.T, s=12, alpha=0.75, linewidths=0, **_class_style(int(label)))
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.axis_labels[0])
        ax.set_ylabel(panel.axis_labels[1])
        ax.grid(alpha=0.3)
    _class_legend(fig, *_first_labelled(panels))
    return _titled(fig, title)


# ----- "each image is a distribution" -----


@dataclass
class PosteriorPanel:
    title: str
    mu: np.ndarray  # (N, 2) posterior means
    sigma: np.ndarray  # (N, 2) posterior standard deviations
    labels: np.ndarray | None
    class_names: list[str] | None = None
    # The prior's log-density at (G, 2) points, (G,); None: N(0, I), drawn with circles at 1, 2 and 3 sigma.
    prior_log_density: Callable[[np.ndarray], np.ndarray] | None = None


def _standard_normal_log_density(points: np.ndarray) -> np.ndarray:
    return -0.5 * (points**2).sum(-1) - np.log(2 * np.pi)  # (G,)


def posterior_ellipses(panels: list[PosteriorPanel]) -> Figure:
    """1-sigma ellipses of q(z|x) = N(mu, diag sigma²) over the prior's density (N(0, I): with 1, 2, 3-sigma
    circles)."""
    fig, axes = _panels_figure(len(panels), (4.6, 4.3), extra_in=(1.3, 0.6))
    for ax, panel in zip(axes, panels):
        reach = max(3.5, float(np.max(np.abs(panel.mu) + panel.sigma)) * 1.05)
        grid = np.linspace(-reach, reach, 201)
        zz1, zz2 = np.meshgrid(grid, grid)
        log_density = panel.prior_log_density or _standard_normal_log_density
        density = np.exp(log_density(np.stack([zz1.ravel(), zz2.ravel()], axis=1))).reshape(zz1.shape)
        ax.contourf(zz1, zz2, density, levels=8, cmap="Greys", alpha=0.35)
        for radius in (1, 2, 3) if panel.prior_log_density is None else ():
            ax.add_patch(Circle((0, 0), radius, fill=False, linestyle="--", linewidth=0.8, color="0.35"))
            ax.text(
                radius * 0.707,
                -radius * 0.707,
                f"{radius}σ",
                fontsize=8,
                color="0.2",
                ha="center",
                va="center",
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            )
        for i in range(len(panel.mu)):
            label = 0 if panel.labels is None else int(panel.labels[i])
            colour = CLASS_COLOURS[label % 10]
            # One patch: a faint fill and a full-strength edge (the alpha lives in the face colour alone).
            width, height = 2 * panel.sigma[i, 0], 2 * panel.sigma[i, 1]
            face = to_rgba(colour, 0.18)
            ax.add_patch(Ellipse(tuple(panel.mu[i]), width, height, facecolor=face, edgecolor=colour, linewidth=1.2))
            ax.plot(*panel.mu[i], linestyle="", markersize=4, markeredgewidth=0, **_class_style(label))
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        ax.set_xlabel("z₁")
        ax.set_ylabel("z₂")
        ax.set_title(f"{panel.title}\n{len(panel.mu)} test images", fontsize=10)
    _class_legend(fig, *_first_labelled(panels))
    return _titled(
        fig,
        "Each test image x is a distribution q(z|x)\n"
        "ellipses: μ(x) ± σ(x) · grey: the prior p(z) (N(0, I): circles at 1, 2, 3σ)",
        fontsize=11,
    )


# ----- image figures -----


@dataclass
class ManifoldPanel:
    title: str
    images: torch.Tensor  # (n*n, C, H, W) in reading order, see vaelab.figures.manifold_points
    z1_values: np.ndarray  # (n,) the grid's z₁ values, increasing left to right
    z2_values: np.ndarray  # (n,) the grid's z₂ values, increasing bottom to top
    axis_labels: tuple[str, str] = ("z₁", "z₂")


def manifold_grid(panels: list[ManifoldPanel], title: str) -> Figure:
    """Decoded grids (Kingma & Welling 2014, fig. 4), ticks at the tiles' z values, z₂ growing upwards."""
    fig, axes = _panels_figure(len(panels), (4.8, 4.8), extra_in=(0.0, 0.5))
    for ax, panel in zip(axes, panels):
        n = len(panel.z1_values)
        h, w = panel.images.shape[-2:]
        ax.imshow(image_grid(panel.images, ncol=n), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ticks = np.unique(np.linspace(0, n - 1, 5).round().astype(int))
        ax.set_xticks(_tile_centres(ticks, w), [f"{panel.z1_values[t]:.2f}" for t in ticks])
        ax.set_yticks(_tile_centres(ticks, h), [f"{panel.z2_values[n - 1 - t]:.2f}" for t in ticks])
        ax.set_xlabel(panel.axis_labels[0])
        ax.set_ylabel(panel.axis_labels[1])
        ax.set_title(panel.title, fontsize=10)
    return _titled(fig, title)


@dataclass
class ImagePanel:
    title: str
    images: torch.Tensor  # (N, C, H, W)


def image_panels(panels: list[ImagePanel], title: str, ncol: int) -> Figure:
    """Image grids side by side, one per run."""
    grids = [image_grid(panel.images, ncol) for panel in panels]
    fig, axes = _grid_figure(grids, panel_width_in=4.0)
    for ax, panel, grid in zip(axes, panels, grids):
        _show_grid(ax, grid)
        ax.set_title(panel.title, fontsize=10)
    return _titled(fig, title)


def _grid_figure(grids: list[np.ndarray], panel_width_in: float, margin_in: float = 0.0, extra_height_in: float = 0.0):
    """A figure of one panel per image grid, each as high as its grids' aspect ratio needs when the image takes
    the panel's width less margin_in, plus 0.6 inch for the panel's title and extra_height_in (labels)."""
    height_px, width_px = grids[0].shape[:2]
    panel_height_in = 0.6 + extra_height_in + (panel_width_in - margin_in) * height_px / width_px
    return _panels_figure(len(grids), (panel_width_in, panel_height_in), extra_in=(0.0, 0.4))


def _tile_centres(tiles: np.ndarray, side: int) -> np.ndarray:
    """Pixel centres of tiles in an image_grid row or column: tile t spans 1 + t*(side+1) ... t*(side+1) + side."""
    return 1 + tiles * (side + 1) + (side - 1) / 2


def _show_grid(ax, grid: np.ndarray) -> None:
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass
class ReconPanel:
    title: str
    originals: torch.Tensor  # (N, C, H, W)
    reconstructions: torch.Tensor  # (N, C, H, W)


def reconstructions(panels: list[ReconPanel], per_row: int = 8) -> Figure:
    """Rows of test images, each over the row of their reconstructions d(μ(x)), labelled on the left."""
    grids = []
    for panel in panels:
        x, r = panel.originals, panel.reconstructions
        rows = [torch.cat([x[i : i + per_row], r[i : i + per_row]]) for i in range(0, len(x), per_row)]
        grids.append(image_grid(torch.cat(rows), min(per_row, len(x))))
    fig, axes = _grid_figure(grids, panel_width_in=4.4, margin_in=1.1)
    for ax, panel, grid in zip(axes, panels, grids):
        _show_grid(ax, grid)
        h = panel.originals.shape[-2]
        rows = np.arange((grid.shape[0] - 1) // (h + 1))
        ax.set_yticks(_tile_centres(rows, h), ["test image", "reconstruction"] * (len(rows) // 2), fontsize=8)
        ax.set_title(panel.title, fontsize=10)
    return _titled(fig, "Test images over their reconstructions d(μ(x))")


@dataclass
class InterpPanel:
    title: str
    starts: torch.Tensor  # (P, C, H, W) test images A
    path: torch.Tensor  # (P, S, C, H, W) decoded points on the straight line from μ(A) to μ(B)
    ends: torch.Tensor  # (P, C, H, W) test images B


def interpolation_strips(panels: list[InterpPanel]) -> Figure:
    """One strip per pair: image A, decode((1-t)μ(A) + tμ(B)) for t from 0 to 1, image B."""
    steps = panels[0].path.shape[1]
    strips = [torch.cat([p.starts[:, None], p.path, p.ends[:, None]], dim=1) for p in panels]  # (P, S+2, C, H, W)
    grids = [image_grid(s.flatten(0, 1), ncol=steps + 2) for s in strips]
    fig, axes = _grid_figure(grids, panel_width_in=max(5.0, 0.45 * (steps + 2)), extra_height_in=0.4)
    for ax, panel, grid in zip(axes, panels, grids):
        _show_grid(ax, grid)
        w = panel.starts.shape[-1]
        names = ["A"] + [f"{t:g}" if i % 2 == 0 else "" for i, t in enumerate(np.linspace(0, 1, steps))] + ["B"]
        ax.set_xticks(_tile_centres(np.arange(steps + 2), w), names, fontsize=8)
        ax.set_xlabel("A = test image, then t = 0 … 1 along the line, B = test image", fontsize=8)
        ax.set_title(panel.title, fontsize=10)
    return _titled(fig, "Interpolation in latent space: decode((1-t)·μ(A) + t·μ(B))")


# ----- numbers -----


@dataclass
class CurvesPanel:
    title: str
    kind: str  # the model's family: "ae" decides the units and that there is no KL term
    history: list[dict]  # metrics.jsonl rows: epoch, train_/test_ loss, recon, kl


def training_curves(panels: list[CurvesPanel]) -> Figure:
    """Per run (one row each): total loss, reconstruction and KL per epoch, train and test."""
    fig = _figure(10.0, 0.6 + 2.6 * len(panels))
    axes = fig.subplots(len(panels), 3, squeeze=False)
    for row, panel in zip(axes, panels):
        epochs = [h["epoch"] for h in panel.history]
        unit = "squared error per image" if panel.kind == "ae" else "nats per image"
        parts = {"loss": "total loss", "recon": "reconstruction", "kl": "KL(q(z|x) ‖ p(z))"}
        for ax, (key, name) in zip(row, parts.items()):
            if panel.kind == "ae" and key == "kl":
                ax.text(0.5, 0.5, "the AutoEncoder\nhas no KL term", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            for split, style in (("train", "-o"), ("test", "--s")):
                ax.plot(
                    epochs,
                    [h[f"{split}_{key}"] for h in panel.history],
                    style,
                    markersize=3,
                    color=TRAIN_TEST_COLOURS[split],
                    label=split,
                )
            ax.set_title(f"{panel.title}: {name}" if key == "loss" else name, fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel(("KL, nats per image" if key == "kl" else unit), fontsize=8)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return _titled(fig, "Training curves (loss = reconstruction + β·KL, IWAE: −L_K; averaged over images)")


@dataclass
class KLPanel:
    title: str
    kl_nats: np.ndarray  # (Z,) mean KL per latent dimension over the test set
    active: np.ndarray  # (Z,) bool


def kl_per_dimension(panels: list[KLPanel], threshold: float) -> Figure:
    """Bars of the mean KL per latent dimension, active units in colour, collapsed ones grey and hatched."""
    panel_width_in = max(5.0, 0.25 * max(len(p.kl_nats) for p in panels) + 2.0)
    fig, axes = _panels_figure(len(panels), (panel_width_in, 3.2), extra_in=(0.0, 0.8))
    for ax, panel in zip(axes, panels):
        dims = np.arange(1, len(panel.kl_nats) + 1)
        colours = [ACTIVE_COLOURS[bool(a)] for a in panel.active]
        bars = ax.bar(dims, panel.kl_nats, color=colours, edgecolor="0.3", linewidth=0.5)
        for bar, active in zip(bars, panel.active):
            if not active:
                bar.set_hatch("///")
        ax.set_xticks(dims if len(dims) <= 20 else dims[:: max(1, len(dims) // 10)])
        ax.set_xlabel("latent dimension u")
        ax.set_ylabel("mean KL(q(z_u|x) ‖ N(0,1)), nats")
        ax.set_title(f"{panel.title}\n{int(panel.active.sum())} of {len(dims)} units active", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    legend = [
        Patch(facecolor=ACTIVE_COLOURS[True], edgecolor="0.3", label="active"),
        Patch(facecolor=ACTIVE_COLOURS[False], edgecolor="0.3", hatch="///", label="inactive (collapsed)"),
    ]
    fig.legend(
        handles=legend,
        loc="outside lower center",
        ncols=2,
        frameon=False,
        title=f"active: variance of μ_u(x) over test images > {threshold:g}\n(Burda et al. 2016)",
    )
    return _titled(fig, "KL per latent dimension on the test set")
