"""Sohn, Lee & Yan's conditional VAE (2015), in its common form with the prior p(z|y) = N(0, I).

The encoder q(z|x, y) and the decoder p(x|z, y) both take the class label y as a one-hot vector: the MLP encoder
reads it appended to the flattened image, the convolutional encoders as K constant extra channels, and every
decoder appended to z. Its loss is the VAE's with y given to both networks (Sohn et al. 2015, eq. 4, with
p(z|y) = N(0, I)): -log p(x|z, y) with one z ~ q(z|x, y), plus KL(q(z|x, y) || N(0, I)) in closed form.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from vaelab.config import RunConfig
from vaelab.errors import VaelabError
from vaelab.families.vae import VAE


class CVAE(VAE):
    """A VAE whose encoder and decoder take the class label: every method needs `labels` (B,) in 0..classes-1."""

    kind = "cvae"
    conditional = True

    def __init__(self, image_shape: tuple[int, int, int], config: RunConfig, classes: int | None = None):
        if not classes or classes < 1:
            raise VaelabError(f"{self.kind} needs labelled data: it is trained on (image, class) pairs")
        self.classes = int(classes)  # a plain int, set before the networks that it sizes are built
        self.flat_input = config.arch == "mlp"  # the MLP reads the label beside the flat image, not as channels
        super().__init__(image_shape, config)

    def encoder_input_shape(self, config: RunConfig) -> tuple[int, int, int]:
        """(1, 1, C*H*W + K) for the MLP (the flat image, then the one-hot); (C + K, H, W) for conv and resnet."""
        c, h, w = self.image_shape
        return (1, 1, c * h * w + self.classes) if self.flat_input else (c + self.classes, h, w)

    def decoder_input_dim(self, config: RunConfig) -> int:
        """z and the one-hot label, side by side."""
        return config.z_dim + self.classes

    def one_hot(self, labels: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
        """The labels (n,) as one-hot rows (n, K) in like's dtype and device; a clear error when they are missing.

        Their range is checked where they enter (vaelab.models.check_labels), not here: a check per batch would
        wait for the device at every step.
        """
        if labels is None:
            raise VaelabError(f"the {self.kind} model is conditional: it needs the class label of each image")
        if labels.shape != (n,):
            raise VaelabError(f"{self.kind}: expected {n} labels (one per image), got shape {tuple(labels.shape)}")
        return functional.one_hot(labels.to(like.device, torch.long), self.classes).to(like.dtype)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x, y): (mu, logvar) (B, Z) each, the label given to the encoder with the image."""
        y = self.one_hot(labels, len(x), x)  # (B, K)
        if self.flat_input:
            inputs = torch.cat([x.flatten(1), y], 1).view(len(x), 1, 1, -1)  # (B, 1, 1, D + K)
        else:
            inputs = torch.cat([x, y[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)  # (B, C + K, H, W)
        return super().encode(inputs)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """p(x|z, y)'s parameters (B, P, H, W), from z and the one-hot label side by side."""
        return super().decode(torch.cat([z, self.one_hot(labels, len(z), z)], 1))
