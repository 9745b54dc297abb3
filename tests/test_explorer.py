"""The latent explorer: its Python side, and the page itself in a real headless Chromium driven by Playwright.

The browser tests fail (never skip) when Playwright or Chromium is missing: .ci/run installs both. Their fixtures
(`browser`, `page`) live in conftest.py, shared with the report's test.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from torch import nn

import vaelab.explorer as explorer_module
from conftest import BROWSER_TIMEOUT_MS
from vaelab import RunConfig, VaelabError, build_model, load_data
from vaelab.cli import main
from vaelab.data import ImageData
from vaelab.explorer import (
    MAX_DECODER_BYTES,
    DecoderNotShowable,
    decoder_bytes,
    explorer_html,
    explorer_payload,
    export_decoder,
    latent_codes,
    latent_plane,
)
from vaelab.nets import mlp_decoder
from vaelab.report import write_report
from vaelab.runs import Run

DECODE_TOLERANCE = 1e-4  # the page's decoded probabilities against PyTorch's decode_mean on the same float16 weights
ONE_GREY_LEVEL = 1 / 255  # the page's decoded probabilities against the float32 model the weights were rounded from
GREY_TOLERANCE = 1  # canvas pixels against round(255 * p), in 8-bit grey levels


def _plane_point(run: Run, digits: ImageData, index: int) -> list[float]:
    """The code of test image `index` projected onto the explorer's plane: a point the pointer can reach."""
    codes = latent_codes(run.model, digits.x_test).double()
    mean, basis, _ = latent_plane(codes)
    return (mean + (codes[index] - mean) @ basis.T @ basis).tolist()


def _decode(model: nn.Module, z: list[float]) -> np.ndarray:
    with torch.no_grad():
        return model.decode_mean(torch.tensor([z], dtype=torch.float32)).flatten().numpy().astype(np.float64)


def _float16_rounded(model: nn.Module) -> nn.Module:
    """A copy of the model whose decoder weights are rounded to float16, as the page receives them."""
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for p in rounded.decoder.parameters():
            p.copy_(p.half().float())
    return rounded


def _check_decoded(values, run: Run, z: list[float]) -> np.ndarray:
    """The page's decode of z equals PyTorch's on the float16-rounded weights, and the float32 model's to within
    one grey level; returns the former."""
    expected = _decode(_float16_rounded(run.model), z)
    np.testing.assert_allclose(values, expected, rtol=0, atol=DECODE_TOLERANCE)
    np.testing.assert_allclose(values, _decode(run.model, z), rtol=0, atol=ONE_GREY_LEVEL)
    return expected


def _untrained_run(tmp_path: Path, name: str, seed: int, **fields) -> Run:
    """A model with random weights (std 0.3, so the decoded images vary) for checking layer types."""
    torch.manual_seed(seed)
    config = RunConfig(data="digits", hidden=[16], **fields)
    model = build_model(config, (1, 8, 8)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    (tmp_path / name).mkdir()
    return Run(tmp_path / name, config, model, epoch=0)


def _image_run(tmp_path: Path, arch: str, shape: tuple[int, int, int]) -> tuple[Run, ImageData]:
    """An untrained `arch` model (default widths) for images of `shape`, and random test images of that shape.

    Its decoder's weights are redrawn with fan-in scaling and its last layer rescaled to logits of std 2, so the
    decoded images vary over most of the grey range and agreement with PyTorch means something.
    """
    x = np.random.default_rng(0).integers(0, 256, size=(40, *shape), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", x=x[:30], x_test=x[30:])
    torch.manual_seed(0)
    config = RunConfig(arch=arch, z_dim=3, hidden=[32])
    model = build_model(config, shape).eval()
    weighted = [m for m in model.decoder.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        for m in weighted:
            fan_in = m.weight.numel() / (m.out_channels if hasattr(m, "out_channels") else m.out_features)
            m.weight.normal_(0, (2 / fan_in) ** 0.5)
            m.bias.normal_(0, 0.1)
        shrink = float(model.decode(torch.randn(16, 3)).std()) / 2
        weighted[-1].weight /= shrink
        weighted[-1].bias /= shrink
    (tmp_path / arch).mkdir()
    return Run(tmp_path / arch, config, model, epoch=0), load_data(str(tmp_path / "images.npz"))


# --- the Python side -------------------------------------------------------------------------------------------


def test_latent_plane_is_the_codes_first_two_principal_components(vae_run, digits):
    codes = latent_codes(vae_run.model, digits.x_test).double()
    mean, basis, explained = latent_plane(codes)
    reference = PCA(n_components=2).fit(codes.numpy())
    np.testing.assert_allclose(mean.numpy(), reference.mean_, atol=1e-9)
    # Principal directions are defined up to sign.
    np.testing.assert_allclose(np.abs(basis.numpy() @ reference.components_.T), np.eye(2), atol=1e-6)
    np.testing.assert_allclose(explained, reference.explained_variance_ratio_, rtol=1e-6)


def test_two_dimensional_latent_is_shown_as_itself(vae2d_run, digits):
    mean, basis, _ = latent_plane(latent_codes(vae2d_run.model, digits.x_test))
    assert mean.tolist() == [0.0, 0.0] and basis.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_fragment_is_self_contained_with_a_unique_id(vae2d_run, vae_run, digits):
    fragments = [explorer_html(vae2d_run, digits), explorer_html(vae_run, digits)]
    ids = [re.match(r'<div class="vaelab-explorer" id="([\w-]+)">', f).group(1) for f in fragments]
    assert ids[0] != ids[1]
    for fragment in fragments:
        assert not re.search(r"<\w+[^>]*\s(src|href)\s*=|https?://|url\(|@import", fragment)  # nothing fetched
        blob = re.search(r'<script type="application/json" class="vx-data">(.*?)</script>', fragment, re.S).group(1)
        assert len(json.loads(blob)["points"]["a"]) == len(digits.x_test)  # 360 test digits < max_points


def test_max_points_limits_the_plotted_codes(vae2d_run, digits):
    blob = re.search(r'class="vx-data">(.*?)</script>', explorer_html(vae2d_run, digits, max_points=50), re.S).group(1)
    assert len(json.loads(blob)["points"]["a"]) == 50


def test_decoder_weights_travel_as_float16(vae_run):
    layers = export_decoder(vae_run.model.decoder)
    modules = [m for m in vae_run.model.decoder if isinstance(m, (nn.Linear, nn.ConvTranspose2d))]
    assert len(modules) == sum("weight" in layer for layer in layers) >= 2
    for module, layer in zip(modules, [layer for layer in layers if "weight" in layer]):
        for name in ("weight", "bias"):
            stored = np.frombuffer(base64.b64decode(layer[name]), dtype="<f2")  # 2 bytes a value: half of float32's
            np.testing.assert_array_equal(stored, getattr(module, name).detach().half().flatten().numpy())


def test_weights_beyond_float16_are_refused_by_name(tmp_path, digits):
    run = _untrained_run(tmp_path, "huge", seed=0, z_dim=2)
    with torch.no_grad():
        run.model.decoder[0].weight[0, 0] = 1e5  # float16 ends at 65504
    with pytest.raises(VaelabError, match="layer 0's weight.*float16|float16.*layer 0's weight"):
        explorer_html(run, digits)


def test_explorer_refuses_data_of_another_shape(vae2d_run):
    x = torch.zeros(4, 1, 28, 28)
    with pytest.raises(VaelabError, match="shape"):
        explorer_html(vae2d_run, ImageData("other", x, None, x, None))


def test_decoder_layer_the_browser_cannot_evaluate_is_refused(tmp_path, digits):
    run = _untrained_run(tmp_path, "softplus", seed=0, z_dim=2)
    run.model.decoder = nn.Sequential(nn.Linear(2, 64), nn.Softplus(), nn.Unflatten(1, (1, 8, 8)))
    with pytest.raises(VaelabError, match="Softplus"):
        explorer_html(run, digits)


def test_decoder_with_several_parameters_a_pixel_is_refused(tmp_path, digits):
    run = _untrained_run(tmp_path, "mixture", seed=0, z_dim=2)
    run.model.decoder = mlp_decoder((1, 8, 8), [16], 2, "relu", out_channels=3)  # e.g. a likelihood's parameters
    with pytest.raises(DecoderNotShowable, match="several parameters a pixel"):
        explorer_html(run, digits)


def test_decoder_too_large_for_a_page_is_refused_with_its_size(monkeypatch, vae2d_run, digits):
    monkeypatch.setattr(explorer_module, "MAX_DECODER_BYTES", 1000)
    with pytest.raises(DecoderNotShowable, match=r"MiB of float16 weights, more than the explorer's limit"):
        explorer_html(vae2d_run, digits)


def test_default_colour_decoders_at_64x64_fit_in_a_page():
    for arch in ("mlp", "conv", "resnet"):
        assert decoder_bytes(build_model(RunConfig(arch=arch), (3, 64, 64)).decoder) < MAX_DECODER_BYTES / 4


def test_explore_command_says_why_a_decoder_is_too_large(monkeypatch, vae2d_run, tmp_path, capsys):
    monkeypatch.setattr(explorer_module, "MAX_DECODER_BYTES", 1000)
    out = tmp_path / "big.html"
    assert main(["explore", str(vae2d_run.path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaelab: error:") and "explorer's limit" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_report_leaves_out_an_explorer_it_cannot_show_and_says_why(monkeypatch, vae2d_run, tmp_path):
    monkeypatch.setattr(explorer_module, "MAX_DECODER_BYTES", 1000)
    write_report([vae2d_run.path], tmp_path / "report.html", explorers="all")
    text = (tmp_path / "report.html").read_text()
    assert 'class="vaelab-explorer"' not in text
    assert re.search(r"No live explorer for this run: the decoder holds [\d.]+ MiB of float16 weights", text)


def test_explore_command_writes_a_page_that_opens_cleanly(cli, vae2d_run, tmp_path, page):
    out = tmp_path / "page.html"
    done = cli("explore", str(vae2d_run.path), "-o", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and 'class="vaelab-explorer"' in text
    page.goto(out.as_uri())
    assert page.evaluate("Object.keys(window.vaelabExplorers).length") == 1


def test_explore_command_refuses_a_missing_run_in_one_line(tmp_path, capsys):
    assert main(["explore", str(tmp_path / "nowhere"), "-o", str(tmp_path / "bad.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaelab: error:") and "nowhere" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad.html").exists()


# --- in the browser ------------------------------------------------------------------------------------------------


def _open(page, tmp_path: Path, fragments: list[str]) -> list[str]:
    path = tmp_path / "explorers.html"
    path.write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>explorers</title></head>'
        f"<body>{''.join(fragments)}</body></html>\n"
    )
    page.goto(path.as_uri())
    return page.evaluate("Object.keys(window.vaelabExplorers)")


def _hook(page, explorer_id: str, expression: str, *args):
    """Evaluate `expression` with e = window.vaelabExplorers[explorer_id] and a = args."""
    return page.evaluate(
        f"([id, a]) => {{ const e = window.vaelabExplorers[id]; return {expression}; }}", [explorer_id, list(args)]
    )


def _after_update(page, explorer_id: str, action) -> None:
    """Do `action`, then wait (polling, up to BROWSER_TIMEOUT_MS) until the explorer has shown a new image."""
    before = _hook(page, explorer_id, "e.updates")
    action()
    page.wait_for_function(
        "([id, n]) => window.vaelabExplorers[id].updates > n", arg=[explorer_id, before], timeout=BROWSER_TIMEOUT_MS
    )


def _move_pointer_to(page, explorer_id: str, z: list[float]) -> None:
    x, y = _hook(
        page,
        explorer_id,
        "(r => { const p = e.latentToPoint(a[0]); return [r.left + p[0], r.top + p[1]]; })"
        "(e.mapCanvas.getBoundingClientRect())",
        z,
    )
    _after_update(page, explorer_id, lambda: page.mouse.move(x, y))


def _canvas_pixels(page, explorer_id: str) -> np.ndarray:
    """The decoded-image canvas as (height, width, RGBA) bytes, passed as base64 (a JS array is far slower)."""
    width, height, rgba = _hook(
        page,
        explorer_id,
        """(c => {
        const bytes = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let text = '';
        for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
        return [c.width, c.height, btoa(text)];
    })(e.imageCanvas)""",
    )
    return np.frombuffer(base64.b64decode(rgba), dtype=np.uint8).reshape(height, width, 4).astype(np.int64)


def _check_shown_image(page, explorer_id: str, run: Run) -> np.ndarray:
    """What the page decoded at its current z equals PyTorch's decode_mean, and the canvas shows it exactly: grey
    images in all three canvas channels, RGB images channel by channel."""
    z, values, scale = _hook(page, explorer_id, "[e.z, e.values, e.scale]")
    expected = _check_decoded(values, run, z)
    c, h, w = run.model.image_shape
    levels = np.round(255 * expected).reshape(c, h, w)
    pixels = _canvas_pixels(page, explorer_id)
    assert pixels.shape == (h * scale, w * scale, 4) and (pixels[..., 3] == 255).all()
    for channel in range(3):
        shown = np.kron(levels[channel if c == 3 else 0], np.ones((scale, scale)))  # nearest-neighbour upscale
        assert np.abs(pixels[..., channel] - shown).max() <= GREY_TOLERANCE
    return pixels


def test_pointer_decodes_the_latent_point_under_it_like_pytorch(page, tmp_path, vae2d_run, vae_run, digits):
    ids = _open(page, tmp_path, [explorer_html(vae2d_run, digits), explorer_html(vae_run, digits)])
    assert len(ids) == 2
    for explorer_id, run in zip(ids, (vae2d_run, vae_run)):
        before = _check_shown_image(page, explorer_id, run)  # the starting point
        labels = digits.y_test.tolist()
        for index in (labels.index(0), labels.index(7)):  # two test digits' codes, as seen on the map
            target = _plane_point(run, digits, index)
            _move_pointer_to(page, explorer_id, target)
            z = _hook(page, explorer_id, "e.z")
            # The pointer lands on a whole pixel: the decoded z is the target to within one pixel.
            shown, wanted = _hook(page, explorer_id, "[e.latentToPoint(a[0]), e.latentToPoint(a[1])]", z, target)
            assert np.hypot(shown[0] - wanted[0], shown[1] - wanted[1]) <= 1.0
            after = _check_shown_image(page, explorer_id, run)
            assert np.abs(after - before).max() >= 1  # moving the pointer changed the decoded canvas
            before = after
    shot = tmp_path / "explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("VAELAB_TEST_ARTIFACTS"):
        artifacts = Path(os.environ["VAELAB_TEST_ARTIFACTS"])
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, artifacts / "explorer.png")


def test_pointer_finds_the_latent_point_on_a_phone_sized_screen(page, tmp_path, vae2d_run, digits):
    page.set_viewport_size({"width": 360, "height": 800})
    (explorer_id,) = _open(page, tmp_path, [explorer_html(vae2d_run, digits)])
    assert _hook(page, explorer_id, "e.mapCanvas.getBoundingClientRect().right") <= 360  # the map shrank to fit
    target = [0.5, -1.0]
    _move_pointer_to(page, explorer_id, target)
    z = _hook(page, explorer_id, "e.z")
    shown, wanted = _hook(page, explorer_id, "[e.latentToPoint(a[0]), e.latentToPoint(a[1])]", z, target)
    assert np.hypot(shown[0] - wanted[0], shown[1] - wanted[1]) <= 1.0
    _check_shown_image(page, explorer_id, vae2d_run)


def test_slider_sets_one_latent_coordinate(page, tmp_path, vae_run, digits):
    (explorer_id,) = _open(page, tmp_path, [explorer_html(vae_run, digits)])
    before_z = _hook(page, explorer_id, "e.z")
    before = _check_shown_image(page, explorer_id, vae_run)
    sliders = page.locator(f"#{explorer_id} .vx-sliders input")
    assert sliders.count() == vae_run.model.z_dim
    sliders.nth(2).focus()
    _after_update(page, explorer_id, lambda: page.keyboard.press("End"))  # a real key press: the slider's maximum
    z = _hook(page, explorer_id, "e.z")
    assert z[2] == pytest.approx(float(sliders.nth(2).get_attribute("max")), abs=1e-3 * abs(z[2]) + 1e-9)
    assert z[:2] + z[3:] == before_z[:2] + before_z[3:]
    after = _check_shown_image(page, explorer_id, vae_run)
    assert np.abs(after - before).max() >= 1


def test_class_selector_decodes_the_chosen_class_like_pytorch(page, tmp_path, digits):
    torch.manual_seed(2)
    config = RunConfig(model="cvae", data="digits", hidden=[16], z_dim=3)
    model = build_model(config, (1, 8, 8), classes=digits.n_classes).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    (tmp_path / "cvae").mkdir()
    run = Run(tmp_path / "cvae", config, model, epoch=0)
    (explorer_id,) = _open(page, tmp_path, [explorer_html(run, digits)])
    assert _hook(page, explorer_id, "e.label") == int(digits.y_test[0])  # the first test image's own class
    options = page.locator(f"#{explorer_id} select.vx-class option")
    assert options.count() == digits.n_classes
    rounded = _float16_rounded(model)
    shown = {}
    choose = page.locator(f"#{explorer_id} select.vx-class")
    for label in (3, 5):
        _after_update(page, explorer_id, lambda choice=str(label): choose.select_option(choice))
        z, values = _hook(page, explorer_id, "[e.z, e.values]")
        with torch.no_grad():
            expected = rounded.decode_mean(torch.tensor([z]), torch.tensor([label])).flatten().double().numpy()
        np.testing.assert_allclose(values, expected, rtol=0, atol=DECODE_TOLERANCE)
        shown[label] = np.asarray(values)
    assert np.abs(shown[3] - shown[5]).max() > 0.01  # the class, not only z, decides the image


@pytest.mark.parametrize(
    "fields",
    [
        dict(arch="conv", z_dim=3, dec_activation="elu"),
        dict(arch="mlp", z_dim=2, dec_activation="tanh"),
        dict(arch="mlp", z_dim=1, dec_activation="leaky_relu", model="ae"),
    ],
    ids=["conv-elu", "mlp-tanh", "mlp-leaky-relu-ae-z1"],
)
def test_every_decoder_layer_type_is_evaluated_like_pytorch(page, tmp_path, digits, fields):
    run = _untrained_run(tmp_path, "untrained", seed=1, **fields)
    (explorer_id,) = _open(page, tmp_path, [explorer_html(run, digits, max_points=100)])
    zs = torch.randn(4, run.model.z_dim, generator=torch.Generator().manual_seed(2)).tolist()
    decoded = _hook(page, explorer_id, "a[0].map(z => Array.from(e.decode(z)))", zs)
    for z, values in zip(zs, decoded):
        expected = _check_decoded(values, run, z)
        assert expected.std() > 0.05  # the weights make images that vary, so agreement means something
    _check_shown_image(page, explorer_id, run)


@pytest.mark.parametrize(
    "arch,shape",
    [("conv", (3, 64, 64)), ("resnet", (3, 64, 64)), ("resnet", (1, 13, 40))],
    ids=["conv-rgb-64x64", "resnet-rgb-64x64", "resnet-grey-13x40"],
)
def test_conv_and_resnet_decoders_are_evaluated_and_drawn_like_pytorch(page, tmp_path, arch, shape):
    # Covers Conv2d (3x3 and 1x1), residual blocks, and transposed convs with output_padding and per-axis strides.
    run, data = _image_run(tmp_path, arch, shape)
    (explorer_id,) = _open(page, tmp_path, [explorer_html(run, data)])
    zs = torch.randn(3, run.model.z_dim, generator=torch.Generator().manual_seed(2)).tolist()
    decoded = _hook(page, explorer_id, "a[0].map(z => Array.from(e.decode(z)))", zs)
    for z, values in zip(zs, decoded):
        assert _check_decoded(values, run, z).std() > 0.05
    _move_pointer_to(page, explorer_id, _hook(page, explorer_id, "e.pointToLatent(250, 100)"))
    pixels = _check_shown_image(page, explorer_id, run)
    if shape[0] == 3:
        assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 32  # drawn in colour, not grey


def test_vqvae_code_grid_and_prior_walk_decode_like_pytorch(page, tmp_path, digits):
    run = _untrained_run(tmp_path, "vq", seed=2, model="vqvae", z_dim=3, code_dim=2, codebook_size=6)
    payload = explorer_payload(run, digits)
    assert payload["sliders"] is None and payload["code_grid"]["positions"] == 3
    (explorer_id,) = _open(page, tmp_path, [explorer_html(run, digits)])
    inputs = page.locator(f"#{explorer_id} .vx-codes input")
    assert inputs.count() == 3
    halves = np.frombuffer(base64.b64decode(payload["code_grid"]["vectors"]), dtype="<f2").astype(np.float64)
    codebook = torch.from_numpy(halves.reshape(6, 2))
    codes = _hook(page, explorer_id, "e.codes")
    assert _hook(page, explorer_id, "e.z") == codebook[codes].flatten().tolist()  # the start is snapped to codes
    _after_update(page, explorer_id, lambda: page.locator(f"#{explorer_id} .vx-walk").click())
    assert _hook(page, explorer_id, "e.codes") == payload["code_grid"]["prior_walk"][0]
    _check_shown_image(page, explorer_id, run)
    other = (payload["code_grid"]["prior_walk"][0][1] + 1) % 6
    _after_update(page, explorer_id, lambda: (inputs.nth(1).fill(str(other)), inputs.nth(1).press("Enter")))
    assert _hook(page, explorer_id, "e.codes")[1] == other
    _check_shown_image(page, explorer_id, run)
