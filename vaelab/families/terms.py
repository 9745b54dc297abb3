"""What every family's ``loss_parts`` returns: one batch's loss, term by term, one value per image."""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossTerms(NamedTuple):
    """A batch's per-image loss terms, in nats (the AutoEncoder's squared error excepted).

    recon (B,): -log p(x|z) with one posterior sample (the AE: ||x - d(e(x))||²).
    kl_per_dim (B, Z): KL(q(z|x) || p(z)) per latent dimension, or (B, 1) when the KL does not split by
        dimension (a Monte Carlo estimate against a prior that is not a product, as the VampPrior's). recon + KL
        summed is the negative ELBO of one sample.
    extra: family-specific terms (B,) each, by name (VQ-VAE's codebook and commitment losses, beta-TCVAE's
        mutual information, total correlation and dimension-wise KL). They are reported, and added to the
        training loss unweighted unless `objective` is given.
    objective (B,): the training loss itself, when it is not recon + beta * KL + sum(extra) (IWAE's -L_K,
        beta-TCVAE's decomposed KL); the family has already applied beta to it.

    A NamedTuple, so that DistributedDataParallel finds its tensors when it is the output of a forward().
    """

    recon: torch.Tensor
    kl_per_dim: torch.Tensor
    extra: dict[str, torch.Tensor] = {}  # never mutated: a family builds its own dict
    objective: torch.Tensor | None = None

    def kl(self) -> torch.Tensor:
        """KL (or its estimate) per image.  # (B,)"""
        return self.kl_per_dim.sum(1)

    def per_image_loss(self, beta: float) -> torch.Tensor:
        """The training loss per image: `objective` when the family gives one, else recon + beta * KL + extras.

        Free bits (objectives.kl_with_free_bits) act on the batch's mean KL and are applied by the trainer, not here.
        """
        if self.objective is not None:
            return self.objective
        return self.recon + beta * self.kl() + self.extra_sum()

    def extra_sum(self) -> torch.Tensor | float:
        """The family's extra terms added up (B,), or 0.0 when it has none."""
        return sum(self.extra.values(), 0.0)
