"""Measurements of a trained model, returned as plain dicts of floats (nats per image unless named otherwise)."""

from __future__ import annotations

import torch

from vaelab.models import AutoEncoder


@torch.no_grad()
def dataset_loss(
    model: AutoEncoder,
    x: torch.Tensor,
    target: torch.Tensor,
    beta: float = 1.0,
    seed: int = 0,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Mean loss, reconstruction and KL per image over a whole split, one posterior sample per image.

    For the VAE, recon + kl is the negative ELBO in nats (beta = 1); for the AE recon is the squared error.
    The noise is seeded so that repeated evaluations of one model agree exactly.
    """
    was_training = model.training
    model.eval()
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    recon_sum = kl_sum = 0.0
    for start in range(0, len(x), batch_size):
        recon, kl_per_dim = model.loss_parts(x[start:start + batch_size], target[start:start + batch_size])
        recon_sum += recon.double().sum().item()
        kl_sum += kl_per_dim.double().sum().item()
    torch.set_rng_state(generator_state)
    model.train(was_training)
    recon_mean, kl_mean = recon_sum / len(x), kl_sum / len(x)
    return {"loss": recon_mean + beta * kl_mean, "recon": recon_mean, "kl": kl_mean}
