"""The encoder and decoder networks: conv and resnet at any image size, exact output shapes, receptive fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from vaelab.config import RunConfig
from vaelab.errors import VaelabError
from vaelab.nets import DECODERS, ENCODERS, MAX_MAP_SIDE, ResBlock, conv_decoder, conv_encoder, conv_stages

SIDES = [(8, 8), (28, 28), (32, 32), (48, 48), (64, 64), (96, 96), (128, 128), (50, 70)]
STAGED = ["conv", "resnet"]


def _build(arch: str, shape: tuple[int, int, int], z_dim: int = 5, **kwargs) -> tuple[nn.Module, nn.Module]:
    encoder = ENCODERS[arch](shape, [32], 2 * z_dim, "leaky_relu", **kwargs)
    decoder = DECODERS[arch](shape, [32], z_dim, "relu", **kwargs)
    return encoder, decoder


@pytest.mark.parametrize("arch", STAGED)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("side", SIDES, ids=[f"{h}x{w}" for h, w in SIDES])
def test_encoder_and_decoder_shapes_are_exact_at_every_size(arch, channels, side):
    shape = (channels, *side)
    encoder, decoder = _build(arch, shape)
    x = torch.rand(2, *shape)
    assert encoder(x).shape == (2, 10)
    assert decoder(torch.randn(2, 5)).shape == (2, *shape)  # exactly the input size, no crop left to the caller


@pytest.mark.parametrize("arch", STAGED)
@pytest.mark.parametrize("side", [(9, 13), (8, 200), (127, 33)], ids=["9x13", "8x200", "127x33"])
def test_odd_and_long_thin_images_come_back_exactly(arch, side):
    shape = (2, *side)
    encoder, decoder = _build(arch, shape, channels=[4, 8])
    assert encoder(torch.rand(1, *shape)).shape == (1, 10)
    assert decoder(torch.randn(1, 5)).shape == (1, *shape)


@pytest.mark.parametrize(
    "side,sizes",
    [
        ((8, 8), [(4, 4)]),
        ((28, 28), [(14, 14), (7, 7), (3, 3)]),
        ((64, 64), [(32, 32), (16, 16), (8, 8), (4, 4)]),
        ((50, 70), [(25, 35), (12, 17), (6, 8), (3, 4)]),
        ((8, 40), [(4, 20), (4, 10), (4, 5), (4, 2)]),  # the short side stops halving at 4, the long one goes on
    ],
)
def test_stages_halve_each_side_until_the_map_is_at_most_4x4(side, sizes):
    stages = conv_stages((3, *side), [16])
    assert [s.size_out for s in stages] == sizes
    assert max(stages[-1].size_out) <= MAX_MAP_SIDE < max(stages[-1].size_in)


def test_fewer_stages_use_the_first_widths_and_more_repeat_the_last():
    assert [s.c_out for s in conv_stages((1, 8, 8), [5, 6, 7])] == [5]
    assert [s.c_out for s in conv_stages((1, 128, 128), [8, 16])] == [8, 16, 16, 16, 16]
    encoder = conv_encoder((1, 28, 28), [16], 4, "relu", channels=[6, 10, 12])
    convs = [m for m in encoder if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(1, 6), (6, 10), (10, 12)]


def test_default_conv_on_28x28_has_three_stages_to_a_3x3_map():
    encoder = conv_encoder((1, 28, 28), [400], 40, "leaky_relu")
    assert [m.out_channels for m in encoder if isinstance(m, nn.Conv2d)] == [32, 64, 128]
    linear = next(m for m in encoder if isinstance(m, nn.Linear))
    assert linear.in_features == 128 * 3 * 3


@pytest.mark.parametrize("arch", ["mlp", *STAGED])
def test_decoder_gives_the_output_channels_asked_for(arch):
    shape = (3, 16, 20)
    default = DECODERS[arch](shape, [16], 4, "relu")
    assert default(torch.randn(2, 4)).shape == (2, 3, 16, 20)
    several = DECODERS[arch](shape, [16], 4, "relu", out_channels=30)  # e.g. a 10-component mixture of 3 numbers
    assert several(torch.randn(2, 4)).shape == (2, 30, 16, 20)


def test_decoder_refuses_zero_output_channels():
    with pytest.raises(VaelabError, match="output channel"):
        conv_decoder((1, 8, 8), [8], 2, "relu", out_channels=0)


@pytest.mark.parametrize("arch", STAGED)
def test_images_smaller_than_8_px_are_refused_with_the_way_out(arch):
    with pytest.raises(VaelabError, match=r"at least 8x8; got 7x30.*--arch mlp"):
        _build(arch, (1, 7, 30))


def test_resnet_adds_a_residual_block_at_every_stage_on_both_sides():
    encoder, decoder = _build("resnet", (3, 64, 64))
    assert sum(isinstance(m, ResBlock) for m in encoder) == 4 == sum(isinstance(m, ResBlock) for m in decoder)
    assert not any(isinstance(m, ResBlock) for m in _build("conv", (3, 64, 64))[0])


def test_residual_block_is_the_input_plus_relu_conv3x3_relu_conv1x1():
    torch.manual_seed(0)
    block = ResBlock(6, "relu")
    x = torch.randn(2, 6, 5, 7)
    conv3, conv1 = block.body[1], block.body[3]
    assert (conv3.kernel_size, conv3.padding, conv1.kernel_size) == ((3, 3), (1, 1), (1, 1))
    expected = x + conv1(torch.relu(conv3(torch.relu(x))))
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("arch", STAGED)
@pytest.mark.parametrize("side", [(8, 8), (64, 64), (50, 70), (8, 40)], ids=["8x8", "64x64", "50x70", "8x40"])
def test_one_latent_output_sees_every_pixel_of_the_image(arch, side):
    # The receptive field, measured: d mu_1 / d x is non-zero at every pixel, the four corners included.
    torch.manual_seed(0)
    encoder, _ = _build(arch, (3, *side))
    x = torch.rand(1, 3, *side, dtype=torch.float64, requires_grad=True)
    encoder.double()(x)[0, 0].backward()
    reached = x.grad[0].abs().sum(0) > 0  # (H, W)
    h, w = side
    assert all(reached[i, j] for i, j in [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)])
    assert reached.all()


def _write_colour_npz(path, n: int, side: int, seed: int = 0) -> None:
    """Random colour images with a little structure (a bright square per image), uint8 channels-last."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(n, side, side, 3), dtype=np.uint8)
    for i, (top, left) in enumerate(rng.integers(0, side // 2, size=(n, 2))):
        x[i, top : top + side // 2, left : left + side // 2] = rng.integers(128, 256, size=3, dtype=np.uint8)
    np.savez(path, x=x)


@pytest.mark.parametrize("arch", STAGED)
def test_one_epoch_of_conv_and_resnet_trains_on_colour_images(cli, tmp_path, arch):
    data = tmp_path / "colour.npz"
    _write_colour_npz(data, n=80, side=48)
    out = tmp_path / arch
    done = cli(
        "train", "--data", str(data), "--arch", arch, "--conv-channels", "8,16", "--hidden", "32", "--z-dim", "4",
        "--likelihood", "gaussian", "--epochs", "1", "--batch-size", "32", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["arch"], config["conv_channels"]) == (arch, [8, 16])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and np.isfinite(rows[0]["test_loss"])


@pytest.mark.parametrize(
    "widths,message",
    [
        ([], "conv_channels must be a list of 1 to"),
        ([16, 0], "each conv_channels width must be a positive integer"),
        ([10**6], "each conv_channels width must be a positive integer and at most 4096"),
    ],
)
def test_conv_channels_out_of_range_are_refused(widths, message):
    with pytest.raises(VaelabError, match=message):
        RunConfig(conv_channels=widths).validate()


def test_conv_channels_flag_refuses_a_zero_width_in_one_line(cli, tmp_path):
    done = cli("train", "--data", "digits", "--arch", "conv", "--conv-channels", "8,0", "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and done.stderr.startswith("vaelab: error:") and "conv_channels" in done.stderr
    assert len(done.stderr.splitlines()) == 1
