"""VQ-VAE's prior over its grid of codes: a small causal transformer, p(k) = prod_i p(k_i | k_<i).

van den Oord et al. (2017, section 3.3) fit an autoregressive prior (a PixelCNN) to the codes of the trained
autoencoder, after it, and sample images by ancestral sampling of codes then decoding. The L positions of the grid
are modelled in a fixed order by a transformer with a causal mask; it is exactly normalised over the K^L grids.

Until the second training phase starts (``learned`` is 0) the prior is the paper's training-time prior: uniform,
log p(k) = -L log K. The prior speaks codes (``log_prob_codes``, ``sample_codes``) and, through the two functions
its model hands it, latent vectors (``log_prob``, ``sample``), the interface every family's prior has.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

WIDTH = 64  # the transformer's width: a few thousand training grids need no more
LAYERS = 2
HEADS = 4


class CodePrior(nn.Module):
    """An autoregressive distribution over grids of `positions` codes, each one of `codes` values."""

    def __init__(
        self,
        positions: int,
        codes: int,
        to_latent: Callable[[torch.Tensor], torch.Tensor],
        to_codes: Callable[[torch.Tensor], torch.Tensor],
    ):
        super().__init__()
        self.positions, self.codes = positions, codes
        # Plain attributes, not modules: the codebook is the model's, saved once in its state_dict.
        self.to_latent, self.to_codes = to_latent, to_codes
        self.start = nn.Parameter(torch.zeros(WIDTH))  # the input that predicts the first position
        self.embedding = nn.Embedding(codes, WIDTH)
        self.position = nn.Parameter(0.02 * torch.randn(positions, WIDTH))
        layer = nn.TransformerEncoderLayer(WIDTH, HEADS, 4 * WIDTH, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.out = nn.Linear(WIDTH, codes)
        # 1 once the second phase trains the network; until then the prior is uniform (the paper's during training).
        self.register_buffer("learned", torch.zeros(()))
        # No gradient reaches the prior while the autoencoder trains; frozen, DistributedDataParallel does not wait
        # for one. vaelab.prior_training unfreezes it for the second phase.
        self.requires_grad_(False)

    def is_learned(self) -> bool:
        return bool(self.learned.item())

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """The logits of p(k_i | k_<i) at every position i, from codes (n, L) (only k_<i is read).  # (n, L, K)"""
        n = len(codes)
        previous = self.embedding(codes[:, :-1])  # (n, L-1, W): position i sees codes 0..i-1
        inputs = torch.cat([self.start.expand(n, 1, WIDTH), previous], 1) + self.position
        mask = nn.Transformer.generate_square_subsequent_mask(self.positions, device=codes.device)
        return self.out(self.norm(self.blocks(inputs, mask=mask, is_causal=True))).float()

    def log_prob_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(k) of code grids (n, L), in nats.  # (n,)"""
        if not self.is_learned():
            return torch.full((len(codes),), -self.positions * math.log(self.codes), device=codes.device)
        log_p = torch.log_softmax(self.logits(codes), -1)
        return log_p.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(1)

    @torch.no_grad()
    def sample_codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n grids by ancestral sampling, every draw from `generator`, on the generator's device.  # (n, L)

        The network runs where its weights are; the probabilities are drawn from on the generator's device, so
        the host's generator gives the same codes on every device (up to the network's rounding).
        """
        codes = torch.zeros(n, self.positions, dtype=torch.long, device=generator.device)
        if not self.is_learned():
            return torch.randint(self.codes, codes.shape, generator=generator, device=generator.device)
        device = self.out.weight.device
        for i in range(self.positions):
            probs = torch.softmax(self.logits(codes.to(device))[:, i].double(), -1).to(generator.device)
            codes[:, i] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return codes

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p of the code grids of latent vectors z (..., L*D), each position read as its nearest code.  # (...,)"""
        return self.log_prob_codes(self.to_codes(z.reshape(-1, z.shape[-1]))).reshape(z.shape[:-1])

    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n latent vectors: sampled code grids, looked up in the codebook, on the generator's device.  # (n, L*D)"""
        codes = self.sample_codes(n, generator)
        return self.to_latent(codes.to(self.out.weight.device)).to(generator.device)
