"""The arrays behind the figures, checked against independent references, and `vaelab plot` end to end."""

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.decomposition import PCA

from test_plots import png_size
from vaelab import cli, figures, objectives, plots
from vaelab.evaluate import dataset_loss
from vaelab.figures import FigureOptions, RunView, make_figure


def view_of(run, digits) -> RunView:
    return RunView(run.path.name, run, digits, digits.x_test)


def test_prior_quantiles_are_scipys_normal_ppf():
    values = figures.prior_quantiles(7)
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
            tile = drawn[1 + row * (h + 1):1 + row * (h + 1) + h, 1 + col * (w + 1):1 + col * (w + 1) + w]
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
    assert one == pytest.approx(0.5 * (sigma2 + mu[0, 0] ** 2 - 1 - np.log(sigma2)))


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
    options = FigureOptions(n=int(flags[flags.index("-n") + 1]) if "-n" in flags else None,
                            method=flags[flags.index("--method") + 1] if "--method" in flags else "pca")
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


@pytest.mark.parametrize("kind, fixture, message", [
    ("posterior", "vae_run", "needs a 2-D latent"),
    ("manifold", "vae_run", "needs a 2-D latent"),
    ("kl", "ae_run", "no KL term"),
    ("posterior", "ae_run", "needs a VAE"),
    ("wobble", "vae_run", "unknown figure"),
])
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
