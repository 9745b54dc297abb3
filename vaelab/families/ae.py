"""The lecture's AutoEncoder, and the interface every family shares.

Every model has ``encode(x, labels) -> (mu, logvar)`` (logvar is None for a deterministic code),
``decode(z, labels) -> logits`` (B, P, H, W), ``decode_mean(z, labels)`` (the image in [0, 1]),
``loss_parts(x, noise=, labels=, beta=) -> LossTerms``, a ``prior`` with ``log_prob`` and ``sample``, and the
flags ``has_bound`` (the importance-weighted bound of vaelab.bounds is defined) and ``conditional`` (the networks
take the class label; the unconditional families ignore `labels`). So training, evaluation, plots, the report
and the explorer never ask which family they hold. Losses themselves live in vaelab.objectives.
"""

from __future__ import annotations

import torch
from torch import nn

from vaelab import objectives
from vaelab.config import RunConfig
from vaelab.families.terms import LossTerms
from vaelab.nets import DECODERS, ENCODERS
from vaelab.priors import StandardNormal


class AutoEncoder(nn.Module):
    """x -> z = e(x) -> d(z), trained on the lecture's ||x - d(e(x))||² (summed over pixels)."""

    kind = "ae"
    encoder_outputs_per_dim = 1  # the code z itself
    has_bound = False  # no likelihood: no ELBO, no importance-weighted bound
    conditional = False
    kl_per_dimension = True  # loss_parts' KL is (B, Z); False where it is one estimate per image (B, 1)
    has_likelihood = False  # log p(x|z) (model.log_likelihood), so a negative ELBO and bits/dim
    discrete_codes = False  # a grid of codebook indices (model.code_indices): codebook usage is measured
    trains_prior = False  # a second training phase fits model.prior after the networks (vaelab.prior_training)
    kl_description = "none: the AE has no posterior"

    def __init__(self, image_shape: tuple[int, int, int], config: RunConfig):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.z_dim = config.z_dim
        out_dim = self.encoder_outputs_per_dim * config.z_dim
        widths = dict(channels=config.conv_channels)
        self.encoder = ENCODERS[config.arch](
            self.encoder_input_shape(config), config.hidden, out_dim, config.enc_activation, **widths
        )
        self.decoder = DECODERS[config.arch](
            self.image_shape,
            config.hidden,
            self.decoder_input_dim(config),
            config.dec_activation,
            out_channels=self.decoder_channels(config),
            **widths,
        )
        # The lecture's "random latent points" for the AE: decoded draws of N(0, I), though nothing trained the
        # codes to follow it (that is the lecture's point).
        self.prior = StandardNormal(config.z_dim)

    def encoder_input_shape(self, config: RunConfig) -> tuple[int, int, int]:
        """The shape the encoder network takes: the image's (a conditional family adds the label to it)."""
        return self.image_shape

    def decoder_input_dim(self, config: RunConfig) -> int:
        """The width the decoder network takes: z (a conditional family appends the label to it)."""
        return config.z_dim

    def set_training_size(self, n_images: int) -> None:
        """Told by training how many images it trains on, before the first step: a family whose loss depends on it
        (beta-TCVAE's estimate of the aggregate posterior) keeps it in a buffer; the others need nothing."""

    def attach_processes(self, processes) -> None:
        """Training on several processes (a vaelab.distributed.Processes): nothing to share for most families."""

    def decoder_channels(self, config: RunConfig) -> int:
        """The AE decodes the image itself: C logits per pixel."""
        return self.image_shape[0]

    # Network outputs are cast to float32 (a no-op without autocast): under --precision bf16/fp16 the networks run
    # in half precision, while the likelihood, the KL and their sums stay in float32.
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return self.encoder(x).float(), None  # (B, Z), no variance

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z).float()  # (B, C, H, W) logits

    def decode_mean(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoded image in [0, 1]: the lecture's final Sigmoid."""
        return torch.sigmoid(self.decode(z, labels))

    def loss_parts(
        self, x: torch.Tensor, *, noise=None, labels: torch.Tensor | None = None, beta: float = 1.0
    ) -> LossTerms:
        """||x - d(e(x))||² per image, and a zero KL (B, Z) that keeps the interface uniform."""
        z, _ = self.encode(x)
        return LossTerms(objectives.squared_error(self.decode_mean(z), x), z.new_zeros(z.shape))
