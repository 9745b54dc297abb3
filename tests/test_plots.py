"""Drawing: arrays in, Figures out, PNGs of a known pixel size, nothing half-written."""

import struct

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.patches import Ellipse

from vaelab import plots
from vaelab.errors import VaelabError


def png_size(payload: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk (PNG spec: 8-byte signature, length, 'IHDR', then the sizes)."""
    assert payload[:8] == b"\x89PNG\r\n\x1a\n" and payload[12:16] == b"IHDR"
    return struct.unpack(">II", payload[16:24])


def scatter_panel(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return plots.ScatterPanel("panel", rng.normal(size=(n, 2)), np.arange(n) % 10, ("z1", "z2"))


def test_image_grid_places_each_image_at_its_tile_with_white_padding():
    images = torch.rand(5, 1, 3, 4)
    grid = plots.image_grid(images, ncol=2, pad=1)
    assert grid.shape == (3 * 4 + 1, 2 * 5 + 1)
    for i in range(5):
        r, c = divmod(i, 2)
        assert np.array_equal(grid[1 + r * 4 : 1 + r * 4 + 3, 1 + c * 5 : 1 + c * 5 + 4], images[i, 0].numpy())
    assert grid[0].min() == 1.0 and grid[:, 0].min() == 1.0
    assert (grid[9:12, 6:10] == 1.0).all()  # the empty sixth tile stays white


def test_png_pixel_size_is_the_figure_size_in_inches_times_dpi_and_grows_with_the_panels():
    widths = {}
    for panels in (1, 3):
        fig = plots.latent_scatter([scatter_panel(seed=i) for i in range(panels)], "title")
        width_in, height_in = fig.get_size_inches()
        size = png_size(plots.figure_png(fig))
        assert size == (round(width_in * plots.DPI), round(height_in * plots.DPI))
        widths[panels] = size[0]
    assert widths[3] > 2 * widths[1]


def test_latent_scatter_draws_every_point_and_one_legend_entry_per_class():
    panel = scatter_panel(n=123)
    fig = plots.latent_scatter([panel], "title")
    ax = fig.axes[0]
    drawn = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(drawn) == 123
    assert sorted(map(tuple, drawn)) == sorted(map(tuple, panel.points))
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [str(c) for c in range(10)]
    assert len(set(plots.CLASS_COLOURS)) == 10 and len(set(plots.CLASS_MARKERS)) == 10


def test_posterior_ellipses_are_one_standard_deviation_wide_around_the_means():
    mu = np.array([[0.5, -1.0], [2.0, 1.0]])
    sigma = np.array([[0.1, 0.3], [0.4, 0.2]])
    fig = plots.posterior_ellipses([plots.PosteriorPanel("p", mu, sigma, np.array([3, 7]))])
    outlines = [p for p in fig.axes[0].patches if type(p) is Ellipse]  # the prior's Circles are Ellipses too
    assert len(outlines) == 2
    for e, m, s in zip(outlines, mu, sigma):
        assert e.center == pytest.approx(tuple(m))
        assert (e.width, e.height) == pytest.approx((2 * s[0], 2 * s[1]))
        assert e.get_facecolor()[3] == pytest.approx(0.18) and e.get_edgecolor()[3] == 1  # faint fill, full edge


def test_kl_bars_show_each_dimension_and_hatch_the_inactive_ones():
    kl = np.array([1.5, 0.001, 0.7, 0.0])
    active = np.array([True, False, True, False])
    fig = plots.kl_per_dimension([plots.KLPanel("k", kl, active)], threshold=0.01)
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx(kl.tolist())
    assert [bool(b.get_hatch()) for b in bars] == [False, True, False, True]
    assert "2 of 4 units active" in fig.axes[0].get_title()


def test_training_curves_plot_train_and_test_of_every_epoch():
    history = [
        {
            "epoch": e,
            **{
                f"{s}_{k}": 10.0 / e + (s == "test") + (k == "kl")
                for s in ("train", "test")
                for k in ("loss", "recon", "kl")
            },
        }
        for e in range(1, 6)
    ]
    fig = plots.training_curves([plots.CurvesPanel("run", "vae", history)])
    kl_axes = fig.axes[2]
    lines = {line.get_label(): line for line in kl_axes.get_lines()}
    assert list(lines["train"].get_xdata()) == [1, 2, 3, 4, 5]
    assert list(lines["test"].get_ydata()) == pytest.approx([h["test_kl"] for h in history])


MAGIC = {  # a file's first bytes by format (PNG spec, JPEG SOI marker, PDF header, SVG's XML declaration)
    ".png": b"\x89PNG\r\n\x1a\n",
    ".jpg": b"\xff\xd8\xff",
    ".jpeg": b"\xff\xd8\xff",
    ".pdf": b"%PDF-",
    ".svg": b"<?xml",
}


@pytest.mark.parametrize("suffix", sorted(MAGIC))
def test_figures_and_image_grids_are_written_in_the_format_their_suffix_names(suffix, tmp_path):
    plots.save_figure(plots.latent_scatter([scatter_panel()], "t"), tmp_path / f"figure{suffix.upper()}")
    plots.save_image_grid(tmp_path / f"grid{suffix}", torch.rand(4, 1, 8, 8), ncol=2)
    for name in (f"figure{suffix.upper()}", f"grid{suffix}"):
        payload = (tmp_path / name).read_bytes()
        assert payload.startswith(MAGIC[suffix]), name
        assert suffix != ".svg" or b"<svg" in payload
    assert len(list(tmp_path.iterdir())) == 2  # no temporary file left behind


def test_save_figure_refuses_a_missing_folder_or_an_unknown_suffix_and_writes_nothing(tmp_path):
    fig = plots.latent_scatter([scatter_panel()], "t")
    with pytest.raises(VaelabError, match="does not exist"):
        plots.save_figure(fig, tmp_path / "missing" / "x.png")
    for name in ("x.gif", "x.html", "x"):
        with pytest.raises(VaelabError, match=r"must end in \.png, \.pdf, \.svg, \.jpg or \.jpeg$"):
            plots.save_figure(fig, tmp_path / name)
        with pytest.raises(VaelabError, match=r"must end in \.png"):
            plots.save_image_grid(tmp_path / name, torch.rand(1, 1, 8, 8), ncol=1)
    assert list(tmp_path.iterdir()) == []
    plots.save_figure(fig, tmp_path / "x.png")
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


@pytest.mark.parametrize("side, scale", [(8, 6), (28, 2), (32, 2), (48, 1), (64, 1)])
def test_image_grid_files_upscale_tiles_by_a_whole_factor_to_at_least_48_pixels(side, scale, tmp_path):
    assert plots.tile_scale(side, side) == scale
    plots.save_image_grid(tmp_path / "g.png", torch.rand(4, 1, side, side), ncol=2)
    grid_px = 2 * (side + 1) + 1
    assert png_size((tmp_path / "g.png").read_bytes()) == (grid_px * scale, grid_px * scale)
    assert side * scale >= plots.MIN_TILE_PX


def test_image_grid_files_repeat_each_pixel_into_a_square_nearest_neighbour(tmp_path):
    images = torch.zeros(1, 1, 8, 8)
    images[0, 0, 2, 5] = 1.0  # one white pixel on black
    plots.save_image_grid(tmp_path / "g.png", images, ncol=1)
    drawn = matplotlib.image.imread(tmp_path / "g.png")[..., 0]  # (60, 60) grey levels in [0, 1]
    scale = plots.tile_scale(8, 8)
    top, left = (1 + 2) * scale, (1 + 5) * scale  # image_grid pads one white pixel before the tile
    assert (drawn[top : top + scale, left : left + scale] == 1.0).all()
    assert drawn[scale : 9 * scale, scale : 9 * scale].sum() == scale * scale


# A title as long as the latent figure's, and panel titles like a run's (a folder, or a whole path).
LONG_TITLE = "Where the encoder puts the test images, coloured by their label"
PANEL_TITLES = [
    "ae-2d: AE, 2-D latent\ncodes e(x) of 360 test images",
    "/tmp/a-rather-long/path/to/runs/of/the/lecture/vae-2d: VAE, 2-D latent",
]


def _figure_of(kind: str, k: int):
    """Figure `kind` with k panels of small random arrays."""
    rng = np.random.default_rng(0)
    titles = [PANEL_TITLES[i % 2] for i in range(k)]
    x = torch.rand(8, 1, 8, 8)
    history = [
        {"epoch": e, **{f"{s}_{p}": 1.0 / e for s in ("train", "test") for p in ("loss", "recon", "kl")}}
        for e in (1, 2)
    ]
    makers = {
        "latent": lambda: plots.latent_scatter(
            [plots.ScatterPanel(t, rng.normal(size=(50, 2)), np.arange(50) % 10, ("z1", "z2")) for t in titles],
            LONG_TITLE,
        ),
        "posterior": lambda: plots.posterior_ellipses(
            [plots.PosteriorPanel(t, rng.normal(size=(5, 2)), np.full((5, 2), 0.2), None) for t in titles]
        ),
        "manifold": lambda: plots.manifold_grid(
            [plots.ManifoldPanel(t, torch.rand(9, 1, 8, 8), np.arange(3.0), np.arange(3.0)) for t in titles], LONG_TITLE
        ),
        "samples": lambda: plots.image_panels([plots.ImagePanel(t, x) for t in titles], LONG_TITLE, ncol=4),
        "recon": lambda: plots.reconstructions([plots.ReconPanel(t, x, x) for t in titles]),
        "interp": lambda: plots.interpolation_strips(
            [plots.InterpPanel(t, x[:2], torch.rand(2, 5, 1, 8, 8), x[2:4]) for t in titles]
        ),
        "curves": lambda: plots.training_curves([plots.CurvesPanel(t, "vae", history) for t in titles]),
        "kl": lambda: plots.kl_per_dimension([plots.KLPanel(t, np.ones(4), np.ones(4, bool)) for t in titles], 0.01),
    }
    return makers[kind]()


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("kind", ["latent", "posterior", "manifold", "samples", "recon", "interp", "curves", "kl"])
def test_one_title_per_figure_and_no_title_runs_past_the_figure_edge(kind, k):
    fig = _figure_of(kind, k)
    fig.canvas.draw()  # lays the figure out as saving does
    renderer = fig.canvas.get_renderer()
    assert len(fig.texts) == 1  # the figure's title, once, not once per row
    titles = fig.texts + [ax.title for ax in fig.axes if ax.get_title()]
    assert len(titles) == 1 + (3 * k if kind == "curves" else k)  # every panel's title is checked
    for text in titles:
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y0 >= 0 and box.y1 <= fig.bbox.y1, text.get_text()


@pytest.mark.parametrize("k, rows", [(1, [1]), (2, [2]), (3, [3]), (4, [4]), (5, [4, 1]), (8, [4, 4])])
def test_runs_sit_side_by_side_in_rows_of_up_to_four(k, rows):
    fig = plots.latent_scatter([scatter_panel(n=20, seed=i) for i in range(k)], "t")
    starts = [ax.get_subplotspec().rowspan.start for ax in fig.axes]
    assert starts == sorted(starts)  # reading order: panel i+1 right of or below panel i
    assert [starts.count(r) for r in sorted(set(starts))] == rows
