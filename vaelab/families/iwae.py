"""Burda, Grosse & Salakhutdinov's importance-weighted autoencoder: the VAE's model and networks, trained on the
K-sample bound L_K (K = --k-train) instead of the ELBO."""

from __future__ import annotations

import torch

from vaelab import objectives
from vaelab.config import RunConfig
from vaelab.families.terms import LossTerms
from vaelab.families.vae import VAE


class IWAE(VAE):
    """The VAE trained on -L_K, L_K = log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al. 2016, eq. 8).

    L_1 is the ELBO; L_K tightens towards log p(x) as K grows, and its gradient weights each sample's gradient by
    its normalised importance weight (eq. 14), which lets q spread over more of the posterior.
    """

    kind = "iwae"

    def __init__(self, image_shape: tuple[int, int, int], config: RunConfig):
        super().__init__(image_shape, config)
        self.k_train = config.k_train

    def loss_parts(
        self, x: torch.Tensor, *, noise=None, labels: torch.Tensor | None = None, beta: float = 1.0
    ) -> LossTerms:
        """objective = -L_K per image (B,), with K = k_train samples drawn from `noise` (one row per image);
        recon = -log p(x|z_1) of the first sample and the closed-form KL (B, Z), so that recon + KL is the
        one-sample negative ELBO every VAE reports. beta does not apply (RunConfig refuses it)."""
        mu, logvar = self.encode(x)  # (B, Z) each
        shape = (len(x), self.k_train, self.z_dim)
        # Drawn (B, K, Z), one row per image, so a batch split across processes sees the same eps per image.
        eps = (
            torch.randn(shape, device=mu.device, dtype=mu.dtype)
            if noise is None
            else noise.normal_like(mu.new_empty(shape))
        )
        z = mu + torch.exp(0.5 * logvar) * eps.transpose(0, 1)  # (K, B, Z)
        logits = self.decode(z.reshape(-1, self.z_dim)).unflatten(0, z.shape[:2])  # (K, B, P, H, W)
        log_px_given_z = self.log_likelihood(logits, x)  # (K, B)
        log_w = objectives.log_importance_weights(log_px_given_z, self.prior.log_prob(z), z, mu, logvar)
        objective = -objectives.importance_weighted_bound(log_w)
        return LossTerms(-log_px_given_z[0], objectives.gaussian_kl(mu, logvar), objective=objective)
