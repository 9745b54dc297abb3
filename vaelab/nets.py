"""Encoder and decoder networks: plain nn.Sequential stacks, built from an image shape and a list of widths.

Letters in shape comments: B batch, C channels, H height, W width, D = C*H*W pixels, Z latent size.
"""

from __future__ import annotations

from torch import nn

from vaelab.errors import VaelabError

# Channels of the two stride-2 convolutions; each halves the image side, so H and W must divide by 4.
CONV_CHANNELS = (32, 64)


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


def mlp_encoder(image_shape: tuple[int, int, int], hidden: list[int], out_dim: int, act: str) -> nn.Sequential:
    """(B, C, H, W) -> (B, out_dim): the lecture's Linear(784,400) -> LeakyReLU(0.2) -> Linear(400, 2*z_dim)."""
    c, h, w = image_shape
    return nn.Sequential(nn.Flatten(), *_dense([c * h * w, *hidden], act), nn.Linear(hidden[-1], out_dim))


def mlp_decoder(
    image_shape: tuple[int, int, int], hidden: list[int], z_dim: int, act: str, out_channels: int | None = None
) -> nn.Sequential:
    """(B, Z) -> (B, C, H, W) logits: the lecture's Linear(z_dim,400) -> ReLU -> Linear(400,784), no sigmoid.

    `hidden` is in encoder order and is mirrored here. The lecture's final Sigmoid is left to the likelihood,
    which works on logits (binary_cross_entropy_with_logits) for exactness. `out_channels` (default C) is the
    number of outputs per pixel, for likelihoods with several parameters per pixel.
    """
    _, h, w = image_shape
    c = out_channels or image_shape[0]
    widths = [z_dim, *reversed(hidden)]
    return nn.Sequential(*_dense(widths, act), nn.Linear(widths[-1], c * h * w), nn.Unflatten(1, (c, h, w)))


def _check_conv_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    c, h, w = image_shape
    if h % 4 or w % 4:
        raise VaelabError(f"arch 'conv' needs image sides divisible by 4 (28x28, 32x32); got {h}x{w}")
    return CONV_CHANNELS[-1], h // 4, w // 4


def conv_encoder(image_shape: tuple[int, int, int], hidden: list[int], out_dim: int, act: str) -> nn.Sequential:
    """(B, C, H, W) -> two stride-2 convolutions -> (B, 64*H/4*W/4) -> dense `hidden` -> (B, out_dim)."""
    c_feat, h4, w4 = _check_conv_shape(image_shape)
    c1, c2 = CONV_CHANNELS
    return nn.Sequential(
        nn.Conv2d(image_shape[0], c1, 4, stride=2, padding=1),
        activation(act),
        nn.Conv2d(c1, c2, 4, stride=2, padding=1),
        activation(act),
        nn.Flatten(),
        *_dense([c_feat * h4 * w4, *hidden], act),
        nn.Linear(hidden[-1], out_dim),
    )


def conv_decoder(
    image_shape: tuple[int, int, int], hidden: list[int], z_dim: int, act: str, out_channels: int | None = None
) -> nn.Sequential:
    """(B, Z) -> dense -> (B, 64, H/4, W/4) -> two stride-2 transposed convolutions -> (B, out_channels or C, H, W)
    logits."""
    c_feat, h4, w4 = _check_conv_shape(image_shape)
    c1, c2 = CONV_CHANNELS
    return nn.Sequential(
        *_dense([z_dim, *reversed(hidden), c_feat * h4 * w4], act),
        nn.Unflatten(1, (c_feat, h4, w4)),
        nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
        activation(act),
        nn.ConvTranspose2d(c1, out_channels or image_shape[0], 4, stride=2, padding=1),
    )


ENCODERS = {"mlp": mlp_encoder, "conv": conv_encoder}
DECODERS = {"mlp": mlp_decoder, "conv": conv_decoder}
