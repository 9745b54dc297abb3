"""The training loop: whole data set in memory, batches sliced from a shuffled permutation, Adam.

Reproducibility: every epoch reseeds its random streams from (seed, epoch), so an interrupted run resumed from
its last checkpoint replays exactly the batches, binarisations and noise the uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from vaelab import objectives
from vaelab.config import RunConfig
from vaelab.data import ImageData, binarize, check_matches, load_data
from vaelab.errors import VaelabError
from vaelab.evaluate import dataset_loss
from vaelab.models import AutoEncoder, build_model
from vaelab.atomic import atomic_write_bytes, atomic_write_json
from vaelab.runs import Run, load_run, restore_optimizer, save_checkpoint

# Written into every metrics line so a number is never read without its units.
LOSS_SCALING = (
    "per image: summed over pixels and latent dimensions, averaged over images; "
    "VAE terms in nats (recon = -log p(x|z), one z sample), AE recon is squared error; loss = recon + beta*kl"
)
TEST_SEED = 0  # the test set's static binarisation and evaluation noise never depend on the run's seed
# The RunConfig fields that define the network a checkpoint's weights belong to.
NETWORK_FIELDS = ("arch", "hidden", "enc_activation", "dec_activation", "z_dim", "likelihood")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's random streams, a function of (seed, epoch) alone."""
    return seed * 1_000_003 + epoch


def training_targets(config: RunConfig, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed inputs for the train and test splits: grey levels, or a static binarisation.

    With dynamic binarisation the train images are re-drawn every batch (see train); the test split is then
    binarised once with TEST_SEED, the usual practice when reporting likelihoods on binarised data.
    """
    if config.binarize == "none":
        return data.x_train, data.x_test
    test = binarize(data.x_test, torch.Generator().manual_seed(TEST_SEED))
    if config.binarize == "static":
        return binarize(data.x_train, torch.Generator().manual_seed(config.seed)), test
    return data.x_train, test


def _check_same_network(saved: RunConfig, requested: RunConfig, out: Path) -> None:
    """Refuse to resume with flags that would rebuild a different network than the checkpoint holds."""
    changed = [
        f"{name} {getattr(saved, name)!r} -> {getattr(requested, name)!r}"
        for name in NETWORK_FIELDS
        if getattr(saved, name) != getattr(requested, name)
    ]
    if changed:
        raise VaelabError(f"{out}: cannot resume with another network ({'; '.join(changed)}); drop those flags")


def kl_weight(config: RunConfig, step: int, steps_per_epoch: int) -> float:
    """beta, ramped linearly from 0 over the first `kl_warmup` epochs (Bowman et al. 2016's KL annealing)."""
    if config.kl_warmup == 0:
        return config.beta
    return config.beta * min(1.0, step / (config.kl_warmup * steps_per_epoch))


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    # The fused kernel updates all parameters in one pass; it matters on CPU for small models (benchmarks/).
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def train(
    config: RunConfig,
    out: str | Path,
    resume: bool = False,
    data: ImageData | None = None,
    progress: bool = True,
) -> Run:
    """Train (or, with resume=True, continue) the configured model, checkpointing into `out` after each epoch."""
    config.validate()
    out = Path(out)
    if data is None:
        data = load_data(config.data, config.download, config.data_cache)
    torch.manual_seed(config.seed)
    model = build_model(config, data.image_shape)
    optimizer = make_optimizer(model, config.lr)
    history: list[dict] = []
    start_epoch = 0
    if resume:
        run = load_run(out, expect_kind=config.model)
        check_matches(data, run.model.image_shape, f"the checkpoint in {out}")
        _check_same_network(run.config, config, out)
        model.load_state_dict(run.model.state_dict())
        restore_optimizer(optimizer, run.optimizer_state)
        start_epoch, history = run.epoch, run.history
        if start_epoch >= config.epochs:
            raise VaelabError(f"{out}: already trained for {start_epoch} epochs; raise --epochs to continue")
    elif (out / "checkpoint.json").exists():
        raise VaelabError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config.to_dict())
    # Rebuild metrics.jsonl from the committed history: lines an interrupted epoch wrote are dropped.
    atomic_write_bytes(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history).encode())

    x_train, x_test = training_targets(config, data)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    for epoch in range(start_epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        train_means = train_epoch(model, optimizer, config, x_train, epoch, steps_per_epoch, out, progress)
        seconds = time.perf_counter() - started
        test_means = dataset_loss(model, x_test, beta=config.beta, seed=TEST_SEED)
        row = {
            "epoch": epoch,
            **{f"train_{k}": v for k, v in train_means.items()},
            **{f"test_{k}": v for k, v in test_means.items()},
            "beta": kl_weight(config, epoch * steps_per_epoch, steps_per_epoch),
            "seconds": round(seconds, 3),
            "images_per_second": round(len(x_train) / seconds, 1),
            "scaling": LOSS_SCALING,
        }
        history.append(row)
        save_checkpoint(out, model, optimizer, epoch, history)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    model.eval()
    return Run(out, config, model, config.epochs, history)


def batch_loss(
    model: AutoEncoder, x: torch.Tensor, beta: float, free_bits: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(training loss, mean recon, mean KL) of one batch, scalars per image scaled as LOSS_SCALING says:
    loss = recon + beta * KL, the KL through free bits (objectives.kl_with_free_bits)."""
    recon, kl_per_dim = model.loss_parts(x)  # (B,), (B, Z)
    recon_mean = recon.mean()
    return recon_mean + beta * objectives.kl_with_free_bits(kl_per_dim, free_bits), recon_mean, kl_per_dim.sum(1).mean()


def train_epoch(
    model: AutoEncoder,
    optimizer: torch.optim.Optimizer,
    config: RunConfig,
    x_train: torch.Tensor,
    epoch: int,
    steps_per_epoch: int,
    out: Path | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """One pass over the shuffled training set; returns the image-weighted means of loss, recon and kl."""
    model.train()
    seed = epoch_seed(config.seed, epoch)
    torch.manual_seed(seed)  # reparameterisation noise and dynamic binarisation
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    totals = [0.0, 0.0, 0.0]  # loss, recon, kl summed over images, in float64
    bar = tqdm(total=len(x_train), desc=f"epoch {epoch}/{config.epochs}", unit="img", disable=not progress,
               leave=False, mininterval=0.5)
    for batch, start in enumerate(range(0, len(x_train), config.batch_size)):
        # index_select rather than x_train[idx]: the same gather, without advanced indexing's overhead.
        x = x_train.index_select(0, order[start:start + config.batch_size])  # (B, C, H, W)
        if config.binarize == "dynamic":
            x = binarize(x)
        beta = kl_weight(config, (epoch - 1) * steps_per_epoch + batch, steps_per_epoch)
        loss, recon_mean, kl_mean = batch_loss(model, x, beta, config.free_bits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # One read of the three numbers per step: the check below and the running means need nothing more.
        with torch.no_grad():
            value, recon_value, kl_value = torch.stack((loss, recon_mean, kl_mean)).tolist()
        if not math.isfinite(value):
            bar.close()
            raise VaelabError(
                f"non-finite loss ({value}) at epoch {epoch}, batch {batch + 1}; training stopped, "
                f"the last good checkpoint in {out} is intact (try a lower --lr or --clip-grad)"
            )
        if config.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        optimizer.step()
        for i, v in enumerate((recon_value + beta * kl_value, recon_value, kl_value)):
            totals[i] += v * len(x)
        bar.update(len(x))
        if progress and batch % 20 == 0:
            seen = start + len(x)
            bar.set_postfix(loss=f"{totals[0] / seen:.2f}", recon=f"{totals[1] / seen:.2f}",
                            kl=f"{totals[2] / seen:.2f}", refresh=False)
    bar.close()
    return {name: total / len(x_train) for name, total in zip(("loss", "recon", "kl"), totals)}
