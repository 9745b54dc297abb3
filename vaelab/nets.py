"""Encoder and decoder networks: plain nn.Sequential stacks, built from an image shape and a list of widths.

Letters in shape comments: B batch, C channels, H height, W width, D = C*H*W pixels, Z latent size.

Every builder has one of two signatures, so ENCODERS and DECODERS dispatch on the arch's name alone:
``encoder(image_shape, hidden, out_dim, act, channels=CONV_CHANNELS) -> (B, C, H, W) -> (B, out_dim)`` and
``decoder(image_shape, hidden, z_dim, act, out_channels=None, channels=CONV_CHANNELS) -> (B, Z) ->
(B, out_channels, H, W)`` logits, where out_channels defaults to the image's C (a likelihood with several
parameters a pixel asks for more and reshapes). ``channels`` are the conv stages' widths; the MLP has no
convolutions and ignores them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vaelab.config import CONV_CHANNELS
from vaelab.errors import VaelabError

MAX_MAP_SIDE = 4  # conv stages halve the image until the feature map is at most 4x4
MIN_CONV_SIDE = 2 * MAX_MAP_SIDE  # at least one stride-2 stage: 8 px a side


def activation(name: str) -> nn.Module:
    """The lecture's encoder uses LeakyReLU(0.2), its decoder ReLU; tanh reproduces Burda et al. (2016)."""
    return {
        "relu": lambda: nn.ReLU(),
        "leaky_relu": lambda: nn.LeakyReLU(0.2),
        "tanh": lambda: nn.Tanh(),
        "elu": lambda: nn.ELU(),
    }[name]()


def _dense(widths: list[int], act: str) -> list[nn.Module]:
    """Linear -> activation for each consecutive pair of widths."""
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(w_in, w_out), activation(act)]
    return layers


def _out_channels(image_shape: tuple[int, int, int], out_channels: int | None) -> int:
    if out_channels is None:
        return image_shape[0]
    if out_channels < 1:
        raise VaelabError(f"a decoder needs at least one output channel, got {out_channels}")
    return out_channels


# ----- the lecture's MLP -----


def mlp_encoder(
    image_shape: tuple[int, int, int], hidden: list[int], out_dim: int, act: str, channels: Sequence[int] = ()
) -> nn.Sequential:
    """(B, C, H, W) -> (B, out_dim): the lecture's Linear(784,400) -> LeakyReLU(0.2) -> Linear(400, 2*z_dim)."""
    c, h, w = image_shape
    return nn.Sequential(nn.Flatten(), *_dense([c * h * w, *hidden], act), nn.Linear(hidden[-1], out_dim))


def mlp_decoder(
    image_shape: tuple[int, int, int],
    hidden: list[int],
    z_dim: int,
    act: str,
    out_channels: int | None = None,
    channels: Sequence[int] = (),
) -> nn.Sequential:
    """(B, Z) -> (B, out_channels, H, W) logits: the lecture's Linear(z_dim,400) -> ReLU -> Linear(400,784).

    `hidden` is in encoder order and is mirrored here. The lecture's final Sigmoid is left to the likelihood,
    which works on logits (binary_cross_entropy_with_logits) for exactness. `out_channels` (default C) is the
    number of outputs per pixel, for likelihoods with several parameters per pixel.
    """
    _, h, w = image_shape
    c = _out_channels(image_shape, out_channels)
    widths = [z_dim, *reversed(hidden)]
    return nn.Sequential(*_dense(widths, act), nn.Linear(widths[-1], c * h * w), nn.Unflatten(1, (c, h, w)))


# ----- convolutional stages, shared by conv and resnet -----


@dataclass(frozen=True)
class ConvStage:
    """One encoder stage: a convolution from size_in to size_out (H, W), per-axis kernel, stride and padding.

    The decoder runs each stage backwards with a transposed convolution of the same kernel, stride and padding
    whose output_padding restores size_in exactly.
    """

    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    size_in: tuple[int, int]
    size_out: tuple[int, int]

    def output_padding(self) -> tuple[int, int]:
        """size_in - (size_out - 1)*s + 2p - k per axis: what a transposed conv adds to return size_in exactly."""
        return tuple(
            n_in - ((n_out - 1) * s - 2 * p + k)
            for n_in, n_out, k, s, p in zip(self.size_in, self.size_out, self.kernel, self.stride, self.padding)
        )


def _axis_step(n: int) -> tuple[int, int, int, int]:
    """(kernel, stride, padding, size out) along one axis of a stage.

    An axis longer than MAX_MAP_SIDE is halved by a 4-wide, stride-2, padding-1 convolution (floor(n/2) out:
    DCGAN's and PyTorch-VAE's downsampling); a side already short keeps its size (3-wide, stride 1, padding 1),
    so a long thin image (8x200) reaches 4x4 without its short side vanishing.
    """
    if n > MAX_MAP_SIDE:
        return 4, 2, 1, n // 2
    return 3, 1, 1, n


def conv_stages(image_shape: tuple[int, int, int], channels: Sequence[int]) -> list[ConvStage]:
    """Stride-2 stages until the map is at most MAX_MAP_SIDE on each side.

    Stage i has channels[i] output channels; when the image needs more stages than widths were given, the last
    width is repeated (fewer stages use the first widths only).
    """
    c, h, w = image_shape
    if min(h, w) < MIN_CONV_SIDE:
        raise VaelabError(
            f"arch conv and resnet need images at least {MIN_CONV_SIDE}x{MIN_CONV_SIDE}; got {h}x{w}: use --arch mlp"
        )
    if not channels:
        raise VaelabError("conv_channels must list at least one width")
    stages = []
    while max(h, w) > MAX_MAP_SIDE:
        (kh, sh, ph, h_out), (kw, sw, pw, w_out) = _axis_step(h), _axis_step(w)
        c_out = channels[min(len(stages), len(channels) - 1)]
        stages.append(ConvStage(c, c_out, (kh, kw), (sh, sw), (ph, pw), (h, w), (h_out, w_out)))
        c, h, w = c_out, h_out, w_out
    return stages


class ResBlock(nn.Module):
    """x + conv1x1(act(conv3x3(act(x)))): the residual block of VQ-VAE (van den Oord et al. 2017, sec. 4.1),
    which PyTorch-VAE's VQ-VAE also uses; the shape (B, C, H, W) is kept."""

    def __init__(self, channels: int, act: str):
        super().__init__()
        self.body = nn.Sequential(
            activation(act),
            nn.Conv2d(channels, channels, 3, padding=1),
            activation(act),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _staged_encoder(
    image_shape: tuple[int, int, int],
    hidden: list[int],
    out_dim: int,
    act: str,
    channels: Sequence[int],
    residual: bool,
) -> nn.Sequential:
    """(B, C, H, W) -> stages -> (B, C_last*h*w) -> dense `hidden` -> (B, out_dim).

    A stage is conv -> act, or with residual conv -> ResBlock -> act (the act closes the block's linear skip,
    as VQ-VAE's residual stack ends in a ReLU).
    """
    stages = conv_stages(image_shape, channels)
    layers: list[nn.Module] = []
    for s in stages:
        layers.append(nn.Conv2d(s.c_in, s.c_out, s.kernel, s.stride, s.padding))
        layers += [ResBlock(s.c_out, act), activation(act)] if residual else [activation(act)]
    last = stages[-1]
    features = last.c_out * math.prod(last.size_out)
    return nn.Sequential(*layers, nn.Flatten(), *_dense([features, *hidden], act), nn.Linear(hidden[-1], out_dim))


def _staged_decoder(
    image_shape: tuple[int, int, int],
    hidden: list[int],
    z_dim: int,
    act: str,
    out_channels: int | None,
    channels: Sequence[int],
    residual: bool,
) -> nn.Sequential:
    """(B, Z) -> dense -> (B, C_last, h, w) -> the encoder's stages backwards -> (B, out_channels, H, W) logits.

    Each stage is a transposed conv whose output_padding returns the encoder stage's input size exactly (so any
    H, W comes back, odd sides included); act between them, none after the last (logits). With residual each
    transposed conv is preceded by ResBlock -> act.
    """
    stages = conv_stages(image_shape, channels)
    c_image = _out_channels(image_shape, out_channels)
    last = stages[-1]
    layers: list[nn.Module] = [
        *_dense([z_dim, *reversed(hidden), last.c_out * math.prod(last.size_out)], act),
        nn.Unflatten(1, (last.c_out, *last.size_out)),
    ]
    for i, s in enumerate(reversed(stages)):
        if residual:
            layers += [ResBlock(s.c_out, act), activation(act)]
        elif i:
            layers.append(activation(act))
        c_to = c_image if s is stages[0] else s.c_in
        layers.append(nn.ConvTranspose2d(s.c_out, c_to, s.kernel, s.stride, s.padding, s.output_padding()))
    return nn.Sequential(*layers)


def conv_encoder(
    image_shape: tuple[int, int, int],
    hidden: list[int],
    out_dim: int,
    act: str,
    channels: Sequence[int] = CONV_CHANNELS,
) -> nn.Sequential:
    """Stride-2 convolutions (4x4, padding 1) -> act, until the map is at most 4x4, then dense layers."""
    return _staged_encoder(image_shape, hidden, out_dim, act, channels, residual=False)


def conv_decoder(
    image_shape: tuple[int, int, int],
    hidden: list[int],
    z_dim: int,
    act: str,
    out_channels: int | None = None,
    channels: Sequence[int] = CONV_CHANNELS,
) -> nn.Sequential:
    """Dense layers, then transposed convolutions mirroring conv_encoder, back to exactly (H, W)."""
    return _staged_decoder(image_shape, hidden, z_dim, act, out_channels, channels, residual=False)


def resnet_encoder(
    image_shape: tuple[int, int, int],
    hidden: list[int],
    out_dim: int,
    act: str,
    channels: Sequence[int] = CONV_CHANNELS,
) -> nn.Sequential:
    """conv_encoder with a ResBlock after every stride-2 convolution."""
    return _staged_encoder(image_shape, hidden, out_dim, act, channels, residual=True)


def resnet_decoder(
    image_shape: tuple[int, int, int],
    hidden: list[int],
    z_dim: int,
    act: str,
    out_channels: int | None = None,
    channels: Sequence[int] = CONV_CHANNELS,
) -> nn.Sequential:
    """conv_decoder with a ResBlock before every transposed convolution."""
    return _staged_decoder(image_shape, hidden, z_dim, act, out_channels, channels, residual=True)


ENCODERS = {"mlp": mlp_encoder, "conv": conv_encoder, "resnet": resnet_encoder}
DECODERS = {"mlp": mlp_decoder, "conv": conv_decoder, "resnet": resnet_decoder}
