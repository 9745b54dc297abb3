"""The second training phase of a family whose prior is fitted after its networks (model.trains_prior: VQ-VAE's
autoregressive prior over codes, van den Oord et al. 2017, section 3.3).

The autoencoder is frozen; the training set's code grids k(x) are computed once and the prior is trained by Adam
(the run's optimiser, so one checkpoint holds both phases) on their mean -log p(k) per image, in a permutation that
is a function of (seed, epoch) as the first phase's. With several processes every process trains on the whole
global batch: the prior is small, and identical gradients keep identical weights without a collective.
"""

from __future__ import annotations

import torch

from vaelab.config import RunConfig
from vaelab.models import AutoEncoder


def prior_epochs(config: RunConfig, model_class: type[AutoEncoder]) -> int:
    """Epochs of the second phase: config.prior_epochs for a family with one, else 0."""
    return config.prior_epochs if model_class.trains_prior else 0


@torch.no_grad()
def training_codes(model: AutoEncoder, x: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """The code grids k(x) of the (float) training images x, on `device`.  # (N, L)"""
    was_training = model.training
    model.eval()
    codes = torch.cat([model.code_indices(x[s : s + batch_size].to(device)) for s in range(0, len(x), batch_size)])
    model.train(was_training)
    return codes


def prior_epoch(
    model: AutoEncoder, optimizer: torch.optim.Optimizer, codes: torch.Tensor, order: torch.Tensor, batch_size: int
) -> float:
    """One pass of Adam over the code grids (N, L) in `order`; returns the mean -log p(k) per grid, in nats.

    Only the prior's parameters get gradients, so Adam leaves the autoencoder (and its moments) as they are.
    """
    prior = model.prior
    prior.learned.fill_(1.0)  # from now on the prior is the network
    prior.requires_grad_(True)
    prior.train()
    total = 0.0
    for start in range(0, len(order), batch_size):
        batch = codes[order[start : start + batch_size].to(codes.device)]
        nll = -prior.log_prob_codes(batch)  # (b,)
        optimizer.zero_grad(set_to_none=True)
        nll.mean().backward()
        optimizer.step()
        total += nll.detach().sum().item()
    return total / len(order)
