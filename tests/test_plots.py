"""Drawing: arrays in, Figures out, PNGs of a known pixel size, nothing half-written."""

import struct

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
        assert np.array_equal(grid[1 + r * 4:1 + r * 4 + 3, 1 + c * 5:1 + c * 5 + 4], images[i, 0].numpy())
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
    outlines = [p for p in fig.axes[0].patches if type(p) is Ellipse and not p.get_fill()]  # Circle is an Ellipse
    assert len(outlines) == 2
    for e, m, s in zip(outlines, mu, sigma):
        assert e.center == pytest.approx(tuple(m))
        assert (e.width, e.height) == pytest.approx((2 * s[0], 2 * s[1]))


def test_kl_bars_show_each_dimension_and_hatch_the_inactive_ones():
    kl = np.array([1.5, 0.001, 0.7, 0.0])
    active = np.array([True, False, True, False])
    fig = plots.kl_per_dimension([plots.KLPanel("k", kl, active)], threshold=0.01)
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx(kl.tolist())
    assert [bool(b.get_hatch()) for b in bars] == [False, True, False, True]
    assert "2 of 4 units active" in fig.axes[0].get_title()


def test_training_curves_plot_train_and_test_of_every_epoch():
    history = [{"epoch": e, **{f"{s}_{k}": 10.0 / e + (s == "test") + (k == "kl") for s in ("train", "test")
                               for k in ("loss", "recon", "kl")}} for e in range(1, 6)]
    fig = plots.training_curves([plots.CurvesPanel("run", "vae", history)])
    kl_axes = fig.axes[2]
    lines = {line.get_label(): line for line in kl_axes.get_lines()}
    assert list(lines["train"].get_xdata()) == [1, 2, 3, 4, 5]
    assert list(lines["test"].get_ydata()) == pytest.approx([h["test_kl"] for h in history])


def test_save_figure_refuses_a_missing_folder_or_a_wrong_suffix_and_writes_nothing(tmp_path):
    fig = plots.latent_scatter([scatter_panel()], "t")
    with pytest.raises(VaelabError, match="does not exist"):
        plots.save_figure(fig, tmp_path / "missing" / "x.png")
    with pytest.raises(VaelabError, match=r"\.png"):
        plots.save_figure(fig, tmp_path / "x.jpg")
    assert list(tmp_path.iterdir()) == []
    plots.save_figure(fig, tmp_path / "x.png")
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
