"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017): a grid of discrete codes instead of a Gaussian latent.

The encoder gives z_dim positions of code_dim numbers each (z_e, (B, L, D) with L = z_dim, D = code_dim); each
position is replaced by its nearest codebook vector (z_q), and the decoder takes the L*D numbers of z_q. So the
model's latent vector (what ``encode`` returns, ``decode`` takes and ``prior.sample`` draws) has L*D dimensions,
and ``self.z_dim`` is L*D; ``positions`` is L.

Training: the straight-through gradient, the codebook loss ||sg[z_e] - e||² (or, with codebook_ema, exponential
moving averages of the assigned outputs) and the commitment loss beta ||z_e - sg[e]||², as LossTerms.extra.
Codes no output chose for RESTART_AFTER training steps are restarted at encoder outputs of the batch (Dhariwal
et al. 2020's random restarts); all codes start so, at the first training step. These buffer updates use the
batch only; with several processes (vaelab.distributed) the counts and sums are added over processes and the
restart vectors are drawn from the global batch (see Codebook.restart_idle), so every process keeps the codebook
one process would have.

The likelihood is the VAE's (Bernoulli, logistic, ...), so recon = -log p(x|z_q). q(k|x) is one-hot, so the KL
to the prior is -log p(k(x)): L log K under the uniform prior the autoencoder trains with, and -log p_prior(k(x))
once the autoregressive prior (vaelab.families.code_prior) is trained; recon + KL is then an upper bound on
-log p(x) of the model p(k) p(x|k).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from vaelab import objectives
from vaelab.config import RunConfig
from vaelab.distributed import Processes
from vaelab.families.code_prior import CodePrior
from vaelab.families.terms import LossTerms
from vaelab.families.vae import VAE

EMA_DECAY = 0.99  # gamma of the EMA codebook (van den Oord et al. 2017, appendix A.1)
EMA_EPSILON = 1e-5  # Laplace smoothing of the EMA counts (Razavi et al. 2019's sonnet code)
RESTART_AFTER = 100  # training steps without an assignment after which a code is restarted


class Codebook(nn.Module):
    """K vectors of D numbers: a parameter learned by the codebook loss, or (ema) buffers updated by averages."""

    def __init__(self, size: int, dim: int, ema: bool):
        super().__init__()
        self.ema = ema
        vectors = torch.randn(size, dim)
        if ema:
            self.register_buffer("vectors", vectors)
            # Started as if each code had been assigned once to itself, so that e_j = m_j / N_j starts at the init.
            self.register_buffer("ema_counts", torch.ones(size))
            self.register_buffer("ema_sums", vectors.clone())
        else:
            self.vectors = nn.Parameter(vectors)
        # Every code starts idle, so the first training step places the codebook on encoder outputs of the batch
        # (a random init far from the encoder's outputs leaves all but a few codes unused).
        self.register_buffer("idle_steps", torch.full((size,), RESTART_AFTER, dtype=torch.long))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The vectors of codes (..., L), flattened per grid.  # (..., L*D)"""
        return self.vectors[codes].flatten(-2)

    @torch.no_grad()
    def restart_idle(self, z_e: torch.Tensor, noise, processes) -> None:
        """Move codes idle for RESTART_AFTER steps onto encoder outputs drawn at random from the global batch.

        z_e (b, L, D) is this process's share. The draws come from `noise` (a vaelab.noise.ImageNoise, the same on
        every process) over the global batch's positions; each process supplies the ones it holds and the sum over
        processes completes them, so one process and several restart the same codes at the same vectors. Without
        noise, the share is the batch and torch's generator draws.
        """
        idle = (self.idle_steps >= RESTART_AFTER).nonzero().squeeze(1)
        if len(idle) == 0 or len(z_e) == 0:
            return
        size, positions = len(z_e), z_e.shape[1]
        global_size, first = (size, 0) if noise is None else (noise.global_size, noise.rows.start)
        generator = None if noise is None else noise.generator
        picks = torch.randint(global_size * positions, (len(idle),), generator=generator, device=z_e.device)
        image, position = picks // positions - first, picks % positions
        mine = (image >= 0) & (image < size)
        chosen = z_e.new_zeros(len(idle), z_e.shape[2], dtype=torch.float32)
        chosen[mine] = z_e[image[mine], position[mine]].float()
        chosen = processes.sum(chosen)
        self.vectors[idle] = chosen
        self.idle_steps[idle] = 0
        if self.ema:
            self.ema_counts[idle] = 1.0
            self.ema_sums[idle] = chosen

    @torch.no_grad()
    def record(self, z_e: torch.Tensor, codes: torch.Tensor, processes) -> None:
        """Count the batch's assignments (all processes'), age the idle codes and, with ema, update the vectors.
        z_e (N, D), codes (N,)."""
        one_hot = torch.nn.functional.one_hot(codes, len(self.vectors)).float()  # (N, K)
        counts = processes.sum(one_hot.sum(0))
        self.idle_steps.add_(1).masked_fill_(counts > 0, 0)
        if self.ema:
            sums = processes.sum(one_hot.T @ z_e.float())  # (K, D)
            new = objectives.ema_codebook_update(self.ema_counts, self.ema_sums, counts, sums, EMA_DECAY, EMA_EPSILON)
            for buffer, value in zip((self.ema_counts, self.ema_sums, self.vectors), new):
                buffer.copy_(value)


class VQVAE(VAE):
    """The VQ-VAE: VAE's networks and likelihoods around a vector-quantised latent grid."""

    kind = "vqvae"
    encoder_outputs_per_dim = 1  # z_e itself
    has_bound = False  # no Gaussian q(z|x): vaelab.bounds' importance-weighted bound is not defined
    kl_per_dimension = False  # one -log p(k) per image
    discrete_codes = True
    trains_prior = True  # a second training phase fits model.prior (vaelab.prior_training)
    kl_description = (
        "-log p(k(x)) of the image's code grid, the KL from its one-hot q: L log K under the uniform prior "
        "(before the code prior is trained), else the trained autoregressive code prior's -log p"
    )

    def __init__(self, image_shape: tuple[int, int, int], config: RunConfig):
        # The networks see the latent vector of L*D numbers (see the module docstring).
        super().__init__(image_shape, dataclasses.replace(config, z_dim=config.z_dim * config.code_dim))
        self.positions, self.code_dim = config.z_dim, config.code_dim
        self.commitment = config.commitment
        self.codebook = Codebook(config.codebook_size, config.code_dim, config.codebook_ema)
        self.prior = CodePrior(self.positions, config.codebook_size, self.codebook.lookup, self.code_indices_of)
        self.processes = Processes()  # one process, until training attaches its own

    def attach_processes(self, processes) -> None:
        """Training on several processes: the codebook's statistics are added over them (vaelab.distributed)."""
        self.processes = processes

    def grid(self, z: torch.Tensor) -> torch.Tensor:
        """A latent vector (..., L*D) as its L positions of D numbers.  # (..., L, D)"""
        return z.unflatten(-1, (self.positions, self.code_dim))

    def code_indices_of(self, z: torch.Tensor) -> torch.Tensor:
        """The nearest code at each position of latent vectors z (..., L*D).  # (..., L)"""
        return objectives.nearest_code(self.grid(z.float()), self.codebook.vectors.float())

    def code_indices(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """k(x): the code grid of images x.  # (B, L)"""
        return self.code_indices_of(self.encoder(x).float())

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """z_q(x), the quantised latent vector (B, L*D); no variance (q is one-hot)."""
        return self.codebook.lookup(self.code_indices(x)), None

    def loss_parts(
        self, x: torch.Tensor, *, noise=None, labels: torch.Tensor | None = None, beta: float = 1.0
    ) -> LossTerms:
        """recon -log p(x|z_q) (B,), KL -log p(k(x)) (B, 1) (no gradient: constant or the separately trained
        prior's), and the codebook (unless ema) and commitment losses as extras (B,) each.

        In training mode the codebook's buffers are updated from the batch first (restarts, drawn from `noise`)
        and after the assignment (counts, EMA).
        """
        z_e = self.grid(self.encoder(x).float())  # (B, L, D)
        if self.training:
            self.codebook.restart_idle(z_e.detach(), noise, self.processes)
        codes = objectives.nearest_code(z_e.detach(), self.codebook.vectors.detach())  # (B, L)
        z_q = self.codebook.vectors[codes]  # (B, L, D): the codebook loss's gradient reaches the chosen vectors
        if self.training:
            self.codebook.record(z_e.detach().flatten(0, 1), codes.flatten(), self.processes)
        recon = -self.log_likelihood(self.decode(objectives.straight_through(z_e, z_q).flatten(1)), x)
        extra = {"commitment": objectives.commitment_loss(z_e, z_q, self.commitment)}
        if not self.codebook.ema:
            extra = {"codebook": objectives.codebook_loss(z_e, z_q), **extra}
        with torch.no_grad():
            kl = -self.prior.log_prob_codes(codes)
        return LossTerms(recon, kl.unsqueeze(1), extra)
