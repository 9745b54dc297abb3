"""Chen et al.'s beta-TCVAE (2018): the VAE with its KL split into index-code mutual information, total correlation
and dimension-wise KL, and only the total correlation weighted by beta.

The split needs the aggregate posterior q(z) = (1/N) sum_n q(z|x_n), estimated from each batch by minibatch-weighted
sampling (vaelab.objectives.tc_decomposition), which needs N, the training-set size: a buffer set by training
(set_training_size) and saved with the checkpoint. Until it is set (a model built outside training) N is taken to
be the batch size, the batch standing for the whole data set.

With torchrun each process estimates q(z) from its own share of the global batch (M/world images), so two processes
do not reproduce one process exactly for this family (the network, the noise and the data order still are the same);
gathering the posteriors of every share would restore it, at one collective with gradients per step.
"""

from __future__ import annotations

import math

import torch

from vaelab import objectives
from vaelab.config import RunConfig
from vaelab.families.terms import LossTerms
from vaelab.families.vae import VAE


class BetaTCVAE(VAE):
    """The VAE trained on recon + MI + beta * TC + dimension-wise KL (Chen et al. 2018, eq. 4 with alpha = gamma = 1).

    recon + the closed-form KL is still the one-sample negative ELBO that evaluation reports; the three estimated
    terms are in LossTerms.extra and the training loss is LossTerms.objective.
    """

    kind = "beta-tcvae"

    def __init__(self, image_shape: tuple[int, int, int], config: RunConfig):
        super().__init__(image_shape, config)
        self.register_buffer("dataset_size", torch.tensor(0, dtype=torch.int64))  # N; 0 until training sets it

    def set_training_size(self, n_images: int) -> None:
        """Record N, the number of training images, for the minibatch-weighted estimate of q(z)."""
        self.dataset_size.fill_(n_images)

    def loss_parts(
        self, x: torch.Tensor, *, noise=None, labels: torch.Tensor | None = None, beta: float = 1.0
    ) -> LossTerms:
        """recon (B,), the closed-form KL per dimension (B, Z), the estimated mi, tc and dim_kl (B,) each, and the
        objective recon + mi + beta * tc + dim_kl (B,)."""
        mu, logvar = self.encode(x, labels)
        z = self.reparameterize(mu, logvar, noise)
        recon = -self.log_likelihood(self.decode(z, labels), x)
        n_images = self.dataset_size.clamp(min=len(x))  # the batch stands for the data set when N is unknown
        mi, tc, dim_kl = objectives.tc_decomposition(z, mu, logvar, n_images)
        # MWS's offsets when the batch is the whole data set (log M, (D - 1) log M, -D log M: tc_decomposition),
        # removed. They are constants that add up to 0, so the gradients are the paper's; the terms (and a loss that
        # reads as recon + KL + (beta - 1) TC) are then in nats that are exact at N = M, not hundreds of nats off.
        log_m, dims = math.log(len(x)), z.shape[-1]
        mi, tc, dim_kl = mi - log_m, tc - (dims - 1) * log_m, dim_kl + dims * log_m
        extra = {"mi": mi, "tc": tc, "dim_kl": dim_kl}
        return LossTerms(recon, objectives.gaussian_kl(mu, logvar), extra, recon + mi + beta * tc + dim_kl)
