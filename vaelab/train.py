"""The training loop: batches gathered from a shuffled permutation of the stored (uint8) images, Adam.

Only a batch is ever converted to float, so training holds the data at one byte a pixel, in memory or
memory-mapped from the decode cache (vaelab.data).

Reproducibility: every epoch reseeds its random streams from (seed, epoch), so an interrupted run resumed from
its last checkpoint replays exactly the batches, binarisations and noise the uninterrupted run would have seen.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from vaelab import objectives
from vaelab.config import RunConfig
from vaelab.data import TEST_SEED, ImageData, Pixels, binarize, check_matches, load_data_for, training_pixels
from vaelab.errors import VaelabError
from vaelab.evaluate import dataset_loss
from vaelab.models import AutoEncoder, build_model, check_likelihood_data, reconstruct, sample_prior
from vaelab.runs import Run, RunFolder, restore_optimizer

# Written into every metrics line so a number is never read without its units.
LOSS_SCALING = (
    "per image: summed over pixels and latent dimensions, averaged over images; "
    "VAE terms in nats (recon = -log p(x|z), one z sample), AE recon is squared error; loss = recon + beta*kl"
)
# The RunConfig fields that define the network a checkpoint's weights belong to.
NETWORK_FIELDS = ("arch", "hidden", "enc_activation", "dec_activation", "z_dim", "likelihood", "mixture_components")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's random streams, a function of (seed, epoch) alone."""
    return seed * 1_000_003 + epoch


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


class NonFiniteLoss(VaelabError):
    """The loss became NaN or infinite; the message names the epoch and batch."""


def epoch_line(row: dict, epochs: int) -> str:
    """One line per epoch, as Keras and Lightning print: train and test loss, the test loss's parts, seconds."""
    return (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.2f}  test loss {row['test_loss']:.2f} "
        f"(recon {row['test_recon']:.2f} + kl {row['test_kl']:.2f})  {row['seconds']:.1f} s"
    )


def train(
    config: RunConfig,
    out: str | Path,
    resume: bool = False,
    data: ImageData | None = None,
    progress: bool = True,
) -> Run:
    """Train (or, with resume=True, continue) the configured model, checkpointing into `out` after each epoch.

    `out` is held locked for the whole call; see vaelab.runs.RunFolder for what a failure leaves behind.
    """
    config.validate()
    out = Path(out)
    with RunFolder(out, resume) as folder:
        if data is None:
            data = load_data_for(config, progress=progress)
            if progress:
                print(data.description, flush=True)
        check_likelihood_data(config, data.max_value, data.x_test)
        torch.manual_seed(config.seed)
        model = build_model(config, data.image_shape)
        optimizer = make_optimizer(model, config.lr)
        history = _resume(folder, config, data, model, optimizer) if resume else []
        x_train, x_test = training_pixels(config, data)
        steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
        board = _open_tensorboard(config.tensorboard, len(history) + 1) if config.tensorboard else None
        for epoch in range(len(history) + 1, config.epochs + 1):
            started = time.perf_counter()
            try:
                train_means = train_epoch(model, optimizer, config, x_train, epoch, steps_per_epoch, progress)
            except NonFiniteLoss as exc:
                raise VaelabError(f"{exc}; {folder.state_sentence()} (try a lower --lr or --clip-grad)") from None
            seconds = time.perf_counter() - started
            test_means = dataset_loss(model, x_test, beta=config.beta, seed=TEST_SEED)
            history.append(
                {
                    "epoch": epoch,
                    **{f"train_{k}": v for k, v in train_means.items()},
                    **{f"test_{k}": v for k, v in test_means.items()},
                    "beta": kl_weight(config, epoch * steps_per_epoch, steps_per_epoch),
                    "seconds": round(seconds, 3),
                    "images_per_second": round(len(x_train) / seconds, 1),
                    "scaling": LOSS_SCALING,
                }
            )
            folder.save_checkpoint(model, optimizer, config, history)
            if board is not None:
                _log_to_tensorboard(board, model, history[-1], x_test)
            if progress:
                print(epoch_line(history[-1], config.epochs), flush=True)
        if board is not None:
            board.close()
    model.eval()
    return Run(out, config, model, config.epochs, history, checkpoint_file=folder.current_file)


def _open_tensorboard(log_dir: str, first_epoch: int):
    from vaelab.tensorboard_log import open_writer  # here: it imports matplotlib, which training otherwise never needs

    return open_writer(log_dir, first_epoch)


def _log_to_tensorboard(board, model: AutoEncoder, row: dict, x_test: Pixels) -> None:
    """The epoch's numbers, 16 prior samples from one fixed seed (the same codes every epoch, so the grid shows them
    learning) and the first 16 test images over their reconstructions."""
    from vaelab.tensorboard_log import log_epoch

    originals = x_test[:16]
    log_epoch(board, row["epoch"], row, sample_prior(model, 16, seed=0), originals, reconstruct(model, originals))


def _resume(
    folder: RunFolder, config: RunConfig, data: ImageData, model: AutoEncoder, optimizer: torch.optim.Optimizer
) -> list[dict]:
    """Load the folder's checkpoint into `model` and `optimizer`, after checking it fits; returns its history."""
    run = folder.load(expect_kind=config.model)
    check_matches(data, run.model.image_shape, f"the checkpoint in {folder.path}")
    _check_same_network(run.config, config, folder.path)
    model.load_state_dict(run.model.state_dict())
    restore_optimizer(optimizer, run.optimizer_state)
    if run.epoch >= config.epochs:
        raise VaelabError(f"{folder.path}: already trained for {run.epoch} epochs; raise --epochs to continue")
    return list(run.history)


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
    x_train: Pixels | torch.Tensor,
    epoch: int,
    steps_per_epoch: int,
    progress: bool = False,
) -> dict[str, float]:
    """One pass over the shuffled training set (stored pixels, or float images in [0, 1]); returns the
    image-weighted means of loss, recon and kl."""
    if isinstance(x_train, torch.Tensor):
        x_train = Pixels(x_train, 1)
    model.train()
    seed = epoch_seed(config.seed, epoch)
    torch.manual_seed(seed)  # reparameterisation noise and dynamic binarisation
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    totals = [0.0, 0.0, 0.0]  # loss, recon, kl summed over images, in float64
    bar = tqdm(
        total=len(x_train),
        desc=f"epoch {epoch}/{config.epochs}",
        unit="img",
        disable=not progress,
        leave=False,
        mininterval=0.5,
    )
    for batch, start in enumerate(range(0, len(x_train), config.batch_size)):
        x = x_train.gather(order[start : start + config.batch_size])  # (B, C, H, W) float, the batch alone
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
            raise NonFiniteLoss(f"non-finite loss ({value}) at epoch {epoch}, batch {batch + 1}; training stopped")
        if config.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        optimizer.step()
        for i, v in enumerate((recon_value + beta * kl_value, recon_value, kl_value)):
            totals[i] += v * len(x)
        bar.update(len(x))
        if progress and batch % 20 == 0:
            seen = start + len(x)
            bar.set_postfix(
                loss=f"{totals[0] / seen:.2f}",
                recon=f"{totals[1] / seen:.2f}",
                kl=f"{totals[2] / seen:.2f}",
                refresh=False,
            )
    bar.close()
    return {name: total / len(x_train) for name, total in zip(("loss", "recon", "kl"), totals)}
