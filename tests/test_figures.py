"""The arrays behind the figures, checked against independent references, and `vaelab plot` end to end."""

import matplotlib.image
import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.decomposition import PCA

from colour_images import train_unlabelled_colour_run
from test_plots import MAGIC, png_size
from vaelab import RunConfig, cli, figures, objectives, plots, train
from vaelab.errors import VaelabError
from vaelab.evaluate import dataset_loss
from vaelab.figures import FigureOptions, RunView, make_figure


def view_of(run, digits) -> RunView:
    return RunView(run.path.name, run, digits, digits.x_test)


def test_prior_quantiles_are_scipys_normal_ppf(vae2d_run):
    for values in figures.prior_quantiles(vae2d_run.model, 7):
        assert values.numpy() == pytest.approx(norm.ppf(np.linspace(0.05, 0.95, 7)), abs=1e-6)


def test_manifold_tiles_equal_the_decoder_at_the_prior_quantile_grid(vae2d_run, digits):
    n = 5
    fig = make_figure("manifold", [view_of(vae2d_run, digits)], FigureOptions(n=n))
    drawn = fig.axes[0].get_images()[0].get_array()  # the tiled picture actually shown
    h, w = digits.image_shape[1:]
    z_axis = norm.ppf(np.linspace(0.05, 0.95, n))
    for row in range(n):
        for col in range(n):
            z = torch.tensor([[z_axis[col], z_axis[n - 1 - row]]], dtype=torch.float32)  # z2 grows upwards
            with torch.no_grad():
                expected = vae2d_run.model.decode_mean(z)[0, 0].numpy()
            tile = drawn[1 + row * (h + 1) : 1 + row * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w]
            assert np.asarray(tile) == pytest.approx(expected, abs=1e-5), (row, col)


def test_pca_projection_matches_scikit_learn_up_to_sign(vae_run, digits):
    mu, _ = figures.encode_means(vae_run.model, digits.x_test)
    points, labels = figures.project_2d(mu, "pca")
    reference = PCA(2).fit_transform(mu)
    signs = np.sign((points * reference).sum(0))
    assert points * signs == pytest.approx(reference, abs=1e-4)
    assert "principal component 1" in labels[0]


def test_interpolation_starts_and_ends_at_the_decoded_codes_and_passes_the_midpoint(vae_run, digits):
    model = vae_run.model
    x_a, x_b = digits.x_test[:3], digits.x_test[3:6]
    path = figures.interpolations(model, x_a, x_b, steps=5)  # (P, S, C, H, W)
    with torch.no_grad():
        mu_a, mu_b = model.encode(x_a)[0], model.encode(x_b)[0]
        assert path[:, 0] == pytest.approx(model.decode_mean(mu_a), abs=1e-6)
        assert path[:, -1] == pytest.approx(model.decode_mean(mu_b), abs=1e-6)
        assert path[:, 2] == pytest.approx(model.decode_mean((mu_a + mu_b) / 2), abs=1e-6)


def test_kl_per_dimension_sums_to_the_evaluated_kl(vae_run, digits):
    mu, logvar = figures.encode_means(vae_run.model, digits.x_test)
    kl, activity = figures.kl_and_activity(mu, logvar)
    assert kl.sum() == pytest.approx(dataset_loss(vae_run.model, digits.x_test)["kl"], rel=1e-5)
    assert activity == pytest.approx(np.var(mu, axis=0))
    one = objectives.gaussian_kl(torch.tensor(mu[:1]), torch.tensor(logvar[:1]))[0, 0].item()
    sigma2 = np.exp(logvar[0, 0])
    # float32 terms of size ~1 cancel to a KL that may be ~0.01: an absolute tolerance of a few float32 ulps of 1.
    assert one == pytest.approx(0.5 * (sigma2 + mu[0, 0] ** 2 - 1 - np.log(sigma2)), abs=1e-6)


CASES = [  # kind, runs, extra flags
    ("latent", ["ae_run", "vae_run"], []),
    ("latent", ["vae_run"], ["--method", "tsne", "-n", "60"]),
    ("posterior", ["vae2d_run"], []),
    ("manifold", ["vae2d_run"], ["-n", "6"]),
    ("samples", ["ae_run", "vae_run"], ["-n", "16"]),
    ("recon", ["ae_run", "vae_run"], []),
    ("interp", ["vae_run"], ["-n", "3"]),
    ("curves", ["ae_run", "vae_run"], []),
    ("kl", ["vae_run"], []),
]


@pytest.mark.parametrize("kind, fixtures, flags", CASES, ids=[f"{c[0]}-{len(c[1])}{c[2][:1]}" for c in CASES])
def test_plot_command_writes_a_png_of_the_figures_size(kind, fixtures, flags, request, tmp_path, digits):
    runs = [request.getfixturevalue(name) for name in fixtures]
    out = tmp_path / f"{kind}.png"
    assert cli.main(["plot", kind, *[str(r.path) for r in runs], "-o", str(out), *flags]) == 0
    options = FigureOptions(
        n=int(flags[flags.index("-n") + 1]) if "-n" in flags else None,
        method=flags[flags.index("--method") + 1] if "--method" in flags else "pca",
    )
    expected = make_figure(kind, [view_of(r, digits) for r in runs], options).get_size_inches() * plots.DPI
    assert out.stat().st_size > 10_000  # a drawn figure, not an empty canvas
    assert png_size(out.read_bytes()) == tuple(round(v) for v in expected)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind


def test_real_command_draws_the_ae_and_vae_side_by_side(cli, ae_run, vae_run, digits, tmp_path):
    out = tmp_path / "latent.png"
    result = cli("plot", "latent", str(ae_run.path), str(vae_run.path), "-o", str(out))
    assert result.returncode == 0, result.stderr
    one_panel = make_figure("latent", [view_of(vae_run, digits)]).get_size_inches()[0] * plots.DPI
    assert png_size(out.read_bytes())[0] > 1.6 * one_panel


@pytest.mark.parametrize(
    "kind, fixture, message",
    [
        ("posterior", "vae_run", "needs a 2-D latent"),
        ("manifold", "vae_run", "needs a 2-D latent"),
        ("kl", "ae_run", "no KL term"),
        ("posterior", "ae_run", "needs a VAE"),
        ("wobble", "vae_run", "unknown figure"),
    ],
)
def test_figures_that_do_not_fit_the_run_are_refused_with_a_reason(kind, fixture, message, request, tmp_path, capsys):
    run = request.getfixturevalue(fixture)
    out = tmp_path / "x.png"
    assert cli.main(["plot", kind, str(run.path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaelab: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_missing_run_folder_output_folder_and_bad_method_are_refused(vae_run, tmp_path, capsys):
    assert cli.main(["plot", "latent", str(tmp_path / "nope"), "-o", str(tmp_path / "x.png")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert cli.main(["plot", "latent", str(vae_run.path), "-o", str(tmp_path / "no" / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["plot", "latent", str(vae_run.path), "--method", "umap", "-o", str(tmp_path / "x.png")]) == 2
    assert "pca, tsne" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def ae2d_run(tmp_path_factory, digits):
    """An AutoEncoder with a 2-D latent trained 5 epochs on digits: its codes are not near N(0, I)."""
    config = RunConfig(data="digits", epochs=5, hidden=[64], batch_size=64, seed=0, model="ae", z_dim=2)
    return train(config, tmp_path_factory.mktemp("ae_z2"), data=digits, progress=False)


def test_autoencoder_manifold_spans_the_5_to_95_percent_range_of_its_own_codes(ae2d_run, digits):
    n = 4
    fig = make_figure("manifold", [view_of(ae2d_run, digits)], FigureOptions(n=n))
    ax = fig.axes[0]
    codes, _ = figures.encode_means(ae2d_run.model, digits.x_test)
    low, high = np.quantile(codes, 0.05, axis=0), np.quantile(codes, 0.95, axis=0)
    z1, z2 = np.linspace(low[0], high[0], n), np.linspace(low[1], high[1], n)
    drawn = ax.get_images()[0].get_array()
    h, w = digits.image_shape[1:]
    for row, col in [(0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1), (1, 2)]:
        z = torch.tensor([[z1[col], z2[n - 1 - row]]], dtype=torch.float32)  # z2 grows upwards
        with torch.no_grad():
            expected = ae2d_run.model.decode_mean(z)[0, 0].numpy()
        tile = drawn[1 + row * (h + 1) : 1 + row * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w]
        assert np.asarray(tile) == pytest.approx(expected, abs=1e-5), (row, col)
    assert [t.get_text() for t in ax.get_xticklabels()][:: n - 1] == [f"{z1[0]:.2f}", f"{z1[-1]:.2f}"]
    assert "of its codes" in ax.get_xlabel() and "of its codes" in ax.get_ylabel()
    assert "no prior: grid over the 5%…95% range of its test codes" in " ".join(ax.get_title().split())


def test_vae_manifold_keeps_the_prior_quantile_grid_beside_an_autoencoder(ae2d_run, vae2d_run, digits):
    fig = make_figure("manifold", [view_of(ae2d_run, digits), view_of(vae2d_run, digits)], FigureOptions(n=5))
    vae_ticks = [float(t.get_text()) for t in fig.axes[1].get_xticklabels()]
    assert [vae_ticks[0], vae_ticks[-1]] == pytest.approx(norm.ppf([0.05, 0.95]), abs=0.006)  # ticks print 2 digits
    assert "prior's 5%…95% quantiles" in fig.axes[1].get_title() and fig.axes[1].get_xlabel() == "z₁"


def test_reconstruct_command_draws_the_plot_recon_figure_of_the_run(vae_run, tmp_path):
    assert cli.main(["reconstruct", str(vae_run.path), "-n", "16", "-o", str(tmp_path / "a.png")]) == 0
    assert cli.main(["plot", "recon", str(vae_run.path), "-n", "16", "-o", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_recon_figure_shows_test_images_of_different_classes_under_a_title_with_row_labels(vae_run, digits):
    fig = make_figure("recon", [view_of(vae_run, digits)], FigureOptions(n=8))
    drawn = np.asarray(fig.axes[0].get_images()[0].get_array())
    h, w = digits.image_shape[1:]
    tiles = [drawn[1 : 1 + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] for c in range(8)]  # the first row: inputs
    flat = digits.x_test[:, 0].flatten(1).numpy()  # (N, H*W)
    shown = [int(np.abs(flat - tile.reshape(1, -1)).sum(1).argmin()) for tile in tiles]
    assert len(set(digits.y_test[shown].tolist())) == 8
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["test image", "reconstruction"]
    assert fig.texts[0].get_text() == "Test images over their reconstructions d(μ(x))"


@pytest.mark.parametrize("suffix", sorted(MAGIC))
@pytest.mark.parametrize("command", ["plot", "sample", "reconstruct"])
def test_plot_sample_and_reconstruct_write_the_format_their_suffix_names(command, suffix, vae2d_run, tmp_path):
    out = tmp_path / f"picture{suffix}"
    args = {
        "plot": ["plot", "manifold", str(vae2d_run.path), "-n", "3"],
        "sample": ["sample", str(vae2d_run.path), "-n", "4"],
        "reconstruct": ["reconstruct", str(vae2d_run.path), "-n", "4"],
    }[command]
    assert cli.main([*args, "-o", str(out)]) == 0
    assert out.read_bytes().startswith(MAGIC[suffix])
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_sample_draws_8x8_digits_as_tiles_of_48_pixels(vae_run, tmp_path):
    out = tmp_path / "s.png"
    assert cli.main(["sample", str(vae_run.path), "-n", "4", "-o", str(out)]) == 0
    assert png_size(out.read_bytes()) == (6 * (2 * 9 + 1), 6 * (2 * 9 + 1))  # 2x2 tiles of 8 px, 1 px padding


@pytest.mark.parametrize("command", ["plot", "sample", "reconstruct"])
def test_an_unknown_picture_suffix_is_one_error_line_and_no_file(command, vae_run, tmp_path, capsys):
    out = tmp_path / "picture.gif"
    args = {
        "plot": ["plot", "latent", str(vae_run.path)],
        "sample": ["sample", str(vae_run.path)],
        "reconstruct": ["reconstruct", str(vae_run.path)],
    }[command]
    assert cli.main([*args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"vaelab: error: {out}: the output file must end in .png, .pdf, .svg, .jpg or .jpeg\n"
    assert list(tmp_path.iterdir()) == []


OUT_OF_RANGE = [  # the run fixture, what a user types (RUN: its folder), what the error line says
    (
        "vae2d_run",
        ["plot", "manifold", "RUN", "-n", "100000"],
        "-n 100000 is too large for manifold: at most 50 tiles per grid side",
    ),
    ("vae_run", ["sample", "RUN", "-n", "100000000"], "-n 100000000 is too large for samples: at most 10000 samples"),
    ("vae_run", ["plot", "latent", "RUN", "--method", "tsne", "-n", "1"], "t-SNE needs at least 2 test images"),
    ("vae_run", ["sample", "RUN", "--seed", str(2**70)], "--seed: expected an integer from 0 to 4294967295"),
    ("vae_run", ["sample", "RUN", "--seed", "-1"], "--seed: expected an integer from 0 to 4294967295"),
    ("vae_run", ["plot", "samples", "RUN", "--seed", str(2**32)], "--seed: expected an integer from 0 to 4294967295"),
    ("vae_run", ["plot", "latent", "RUN", "--seed", "-1"], "--seed: expected an integer from 0 to 4294967295"),
]


@pytest.mark.parametrize("fixture, args, message", OUT_OF_RANGE, ids=[" ".join(c[1])[:40] for c in OUT_OF_RANGE])
def test_out_of_range_sizes_and_seeds_end_in_one_error_line_and_no_file(fixture, args, message, cli, request, tmp_path):
    run = request.getfixturevalue(fixture)
    out = tmp_path / "picture.png"
    result = cli(*[str(run.path) if a == "RUN" else a for a in args], "-o", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("vaelab: error: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", sorted(figures.N_LIMITS))
def test_each_capped_figure_takes_its_largest_n_and_refuses_one_more_before_loading_anything(kind, tmp_path, capsys):
    limit, what = figures.N_LIMITS[kind]
    figures.check_request(kind, FigureOptions(n=limit))
    missing_run = str(tmp_path / "no-run")  # refused before the run is opened
    args = ["reconstruct", missing_run] if kind == "recon" else ["plot", kind, missing_run]
    assert cli.main([*args, "-n", str(limit + 1), "-o", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == f"vaelab: error: -n {limit + 1} is too large for {kind}: at most {limit} {what}\n"
    assert list(tmp_path.iterdir()) == []


def test_figure_requests_from_python_refuse_seeds_the_generators_cannot_take():
    from vaelab.figures import FigureOptions, check_request

    for seed in (-1, 2**32):
        with pytest.raises(VaelabError, match="seed must be an integer from 0 to 4294967295"):
            check_request("latent", FigureOptions(seed=seed))
    check_request("latent", FigureOptions(seed=2**32 - 1))


# ----- data without labels, in colour -----


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """A 2-D VAE trained by the real command on 3x32x32 colour images without labels."""
    return train_unlabelled_colour_run(tmp_path_factory.mktemp("colour"))


@pytest.mark.parametrize("kind", ["latent", "recon", "samples"])
def test_plot_command_draws_unlabelled_colour_data(kind, colour_run, cli, tmp_path):
    out = tmp_path / f"{kind}.png"
    done = cli("plot", kind, str(colour_run), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 10_000 and done.stderr == ""
    if kind == "recon":  # the test images are drawn in their colours, not as grey levels
        rgb = matplotlib.image.imread(out)[..., :3]
        assert ((rgb.max(-1) - rgb.min(-1)) > 0.2).mean() > 0.01


def test_every_figure_of_unlabelled_colour_data_is_drawn_in_colour_and_without_a_class_legend(colour_run):
    (view,) = figures.open_runs([colour_run])
    assert view.data.y_test is None and view.data.image_shape == (3, 32, 32)
    for kind in (kind for kind in figures.KINDS if figures.why_not(kind, view) is None):  # classes: conditional only
        fig = make_figure(kind, [view], FigureOptions(n=4 if kind in ("manifold", "interp") else None))
        if kind in ("latent", "posterior"):
            assert fig.legends == [], kind  # no class legend without classes
        for image in (im for ax in fig.axes for im in ax.get_images()):
            assert np.asarray(image.get_array()).shape[-1] == 3, kind  # RGB tiles, not a grey-level colormap
    title = make_figure("latent", [view]).texts[0].get_text().replace("\n", " ")
    assert "uncoloured: the data has no labels" in title


def test_picks_without_labels_are_evenly_spaced_from_a_seeded_start(colour_run):
    (view,) = figures.open_runs([colour_run])
    n_test = len(view.x_test)
    picks = figures._balanced_indices(view, 8, seed=3)
    assert len(set(picks.tolist())) == 8 and set(np.diff(np.sort(picks)).tolist()) <= {n_test // 8, n_test // 8 + 1}
    np.testing.assert_array_equal(picks, figures._balanced_indices(view, 8, seed=3))
    assert sorted(figures._balanced_indices(view, n_test + 5, seed=0).tolist()) == list(range(n_test))
    np.testing.assert_array_equal(figures.evenly_spaced(10, 4, start=7), [7, 9, 2, 4])


def test_image_grids_composite_alpha_over_white_and_refuse_channels_they_cannot_draw():
    rgba = torch.tensor([0.2, 0.4, 0.6, 1.0]).view(1, 4, 1, 1).repeat(2, 1, 2, 2)
    rgba[1, 3] = 0.0  # the second image is fully transparent
    grid = plots.image_grid(rgba, ncol=2, pad=0)  # (2, 4, 3)
    np.testing.assert_allclose(grid[0, 0], [0.2, 0.4, 0.6])
    np.testing.assert_allclose(grid[0, 2], [1.0, 1.0, 1.0])
    grey_alpha = torch.tensor([0.0, 0.5]).view(1, 2, 1, 1)
    np.testing.assert_allclose(plots.image_grid(grey_alpha, ncol=1, pad=0), [[0.5]])  # black, half transparent
    assert plots.image_grid(torch.rand(3, 3, 5, 6), ncol=3).shape == (7, 22, 3)
    with pytest.raises(VaelabError, match="cannot draw images of 5 channels"):
        plots.image_grid(torch.rand(1, 5, 4, 4), ncol=1)
