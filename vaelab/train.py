"""The training loop: batches gathered from a shuffled permutation of the stored (uint8) images, Adam; in one
process, or in several started by torchrun (vaelab.distributed), which compute what one process computes.

Only a batch is ever converted to float (on the device, when the images fit there), so training holds the data at
one byte a pixel, in memory or memory-mapped from the decode cache (vaelab.data).

Reproducibility: an epoch's permutation is a function of (seed, epoch) and a step's noise (its binarisation and
its posterior samples) of (seed, epoch, step), drawn for the whole global batch (vaelab.noise). So an interrupted
run resumed from its last checkpoint replays exactly the batches and noise the uninterrupted run would have seen,
and N processes, each taking its share of every global batch, see the numbers one process sees.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from vaelab import objectives
from vaelab.config import RunConfig
from vaelab.data import TEST_SEED, ImageData, Pixels, check_matches, load_data_for, training_pixels
from vaelab.devices import Compute, DeviceImages
from vaelab.distributed import Processes
from vaelab.errors import VaelabError
from vaelab.evaluate import dataset_loss, evaluation_inputs
from vaelab.families import FAMILIES
from vaelab.models import AutoEncoder, balanced_labels, build_model, check_likelihood_data, decode_prior, reconstruct
from vaelab.noise import ImageNoise, binarize_per_image, stream_seed
from vaelab.prior_training import prior_epoch, prior_epochs, training_codes
from vaelab.runs import Run, RunFolder, load_run, restore_optimizer

# Written into every metrics line so a number is never read without its units.
LOSS_SCALING = (
    "per image: summed over pixels and latent dimensions, averaged over images; "
    "VAE terms in nats (recon = -log p(x|z), one z sample), AE recon is squared error; loss = recon + beta*kl "
    "(iwae: loss = -L_K, the importance-weighted bound of its k_train samples; recon and kl of its first sample)"
)
# The RunConfig fields that define the network a checkpoint's weights belong to.
NETWORK_FIELDS = (
    "arch",
    "hidden",
    "enc_activation",
    "dec_activation",
    "z_dim",
    "likelihood",
    "mixture_components",
    "codebook_size",
    "code_dim",
    "codebook_ema",
)


def total_epochs(config: RunConfig) -> int:
    """Epochs of the whole run: the networks' config.epochs, then a family's prior epochs (vaelab.prior_training)."""
    return config.epochs + prior_epochs(config, FAMILIES[config.model])


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
        f"(recon {row['test_recon']:.2f}, kl {row['test_kl']:.2f})  {row['seconds']:.1f} s"
    )


def train(
    config: RunConfig,
    out: str | Path,
    resume: bool = False,
    data: ImageData | None = None,
    progress: bool = True,
    compute: Compute | None = None,
    processes: Processes | None = None,
) -> Run:
    """Train (or, with resume=True, continue) the configured model, checkpointing into `out` after each epoch.

    `compute` says where and how (default: the CPU, fp32); `processes`, which processes train together (default:
    this one alone). Only rank 0 holds `out` (locked for the whole call; see vaelab.runs.RunFolder for what a
    failure leaves behind), writes to it and prints. A family with a prior fitted afterwards (VQ-VAE) trains it for
    config.prior_epochs more epochs, checkpointed as the first ones (see vaelab.prior_training).
    """
    config.validate()
    compute = compute or Compute()
    processes = processes or Processes()
    progress = progress and processes.is_main
    out = Path(out)
    with contextlib.ExitStack() as stack:
        opened = processes.together(lambda: _open(stack, config, out, resume, data, processes, progress))
        folder, data, previous = opened
        board = processes.together(lambda: _open_tensorboard(config, folder, previous))
        model, optimizer = _build(config, data, previous, compute)
        history = list(previous.history) if previous else []
        x_train, x_test = training_pixels(config, data)  # stored pixels; floats made a batch at a time
        model.set_training_size(len(x_train))  # N, for a family whose loss needs it (beta-TCVAE)
        y_train, y_test = (data.y_train, data.y_test) if model.conditional else (None, None)
        images = DeviceImages(x_train.values, compute.device, max_value=x_train.max_value, labels=y_train)
        stepper = Stepper(model, optimizer, config, compute, processes)
        state = folder.state_sentence if folder else lambda: f"{out} keeps the last checkpoint process 0 committed"
        steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
        second_phase = PriorPhase(model, optimizer, config, data, compute.device)
        epochs = total_epochs(config)
        with processes.peers_lost(state):
            for epoch in range(len(history) + 1, epochs + 1):
                started = time.perf_counter()
                try:
                    if epoch <= config.epochs:
                        train_means = train_epoch(stepper, images, epoch, steps_per_epoch, progress)
                    else:
                        train_means = second_phase.epoch(epoch)
                except NonFiniteLoss as exc:
                    raise processes.error(f"{exc}; {state()} (try a lower --lr or --clip-grad)") from None
                seconds = time.perf_counter() - started
                with compute.autocast():
                    test_means = dataset_loss(
                        model, x_test, beta=config.beta, seed=TEST_SEED, processes=processes, labels=y_test
                    )
                beta = kl_weight(config, epoch * steps_per_epoch, steps_per_epoch)
                history.append(epoch_row(epoch, train_means, test_means, beta, seconds, len(x_train), stepper))
                if epoch > config.epochs:
                    history[-1]["phase"] = "code prior"
                if folder is not None:
                    folder.save_checkpoint(model, optimizer, config, history)
                if board is not None:
                    _log_to_tensorboard(board, model, history[-1], x_test, y_test)
                if progress:
                    print(epoch_line(history[-1], epochs), flush=True)
        if board is not None:
            board.close()
    model.eval()
    return Run(out, config, model, epochs, history, checkpoint_file=folder.current_file if folder else "")


@dataclass
class PriorPhase:
    """The second phase's epochs (vaelab.prior_training): the training codes are computed at its first epoch."""

    model: AutoEncoder
    optimizer: torch.optim.Optimizer
    config: RunConfig
    data: ImageData
    device: torch.device
    codes: torch.Tensor | None = None
    recon: float = 0.0

    def epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of the prior; the row's recon is the frozen autoencoder's on the training set, its kl the
        prior's mean -log p(k) this epoch, and loss their sum (the training images' bound on -log p(x))."""
        if self.codes is None:
            train_inputs, _ = evaluation_inputs(self.config, self.data)
            self.codes = training_codes(self.model, train_inputs, self.device)
            self.recon = dataset_loss(self.model, train_inputs, seed=TEST_SEED)["recon"]
        order = epoch_order(self.config.seed, epoch, len(self.codes))
        nll = prior_epoch(self.model, self.optimizer, self.codes, order, self.config.batch_size)
        if not math.isfinite(nll):
            raise NonFiniteLoss(f"non-finite code-prior loss at epoch {epoch}; training stopped")
        return {"loss": self.recon + nll, "recon": self.recon, "kl": nll}


def epoch_row(
    epoch: int, train_means: dict, test_means: dict, beta: float, seconds: float, images: int, stepper: Stepper
) -> dict:
    """One line of metrics.jsonl: the epoch's means, its time, and where and how it was computed."""
    return {
        "epoch": epoch,
        **{f"train_{k}": v for k, v in train_means.items()},
        **{f"test_{k}": v for k, v in test_means.items() if v is not None},  # no per-dimension KL for some families
        "beta": beta,
        "seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 1),
        **stepper.compute.describe(),
        "processes": stepper.processes.world,
        "scaling": LOSS_SCALING,
    }


def _open(
    stack: contextlib.ExitStack,
    config: RunConfig,
    out: Path,
    resume: bool,
    data: ImageData | None,
    processes: Processes,
    progress: bool,
) -> tuple[RunFolder | None, ImageData, Run | None]:
    """Rank 0 takes the run folder (its lock and checks); every process loads the data and, on resume, the same
    checkpoint, checked to fit the flags. Returns (the folder on rank 0 else None, the data, the checkpoint)."""
    folder = stack.enter_context(RunFolder(out, resume)) if processes.is_main else None
    if data is None:
        data = load_data_for(config, progress=progress)
        if progress:
            print(data.description, flush=True)
    check_likelihood_data(config, data.max_value, data.x_test)
    if not resume:
        return folder, data, None
    previous = folder.load(expect_kind=config.model) if folder else load_run(out, expect_kind=config.model)
    check_matches(data, previous.model.image_shape, f"the checkpoint in {out}")
    if previous.model.conditional and previous.model.classes != data.classes:
        raise VaelabError(
            f"{out}: the checkpoint's model takes {previous.model.classes} classes, the data has {data.classes}"
        )
    _check_same_network(previous.config, config, out)
    if previous.epoch > previous.config.epochs and config.epochs != previous.config.epochs:
        raise VaelabError(
            f"{out}: the code prior is training after {previous.config.epochs} autoencoder epochs; "
            "keep --epochs and raise --prior-epochs to continue"
        )
    if previous.epoch >= total_epochs(config):
        raise VaelabError(f"{out}: already trained for {previous.epoch} epochs; raise --epochs to continue")
    return folder, data, previous


def _build(
    config: RunConfig, data: ImageData, previous: Run | None, compute: Compute
) -> tuple[AutoEncoder, torch.optim.Optimizer]:
    """The model (its checkpoint's weights on resume) on the device, and its Adam with the checkpoint's state.

    A conditional family takes as many classes as the data has (VaelabError for data without labels).
    """
    torch.manual_seed(config.seed)
    with torch.device("cpu"):  # initial weights from the CPU generator: the same on every device and process
        model = build_model(config, data.image_shape, data.classes)
    if previous is not None:
        model.load_state_dict(previous.model.state_dict())
    compute.prepare(model)
    optimizer = make_optimizer(model, config.lr)
    if previous is not None:
        restore_optimizer(optimizer, previous.optimizer_state)
    return model, optimizer


def _open_tensorboard(config: RunConfig, folder: RunFolder | None, previous: Run | None):
    """The TensorBoard writer of rank 0 when --tensorboard asks for one, else None."""
    if not config.tensorboard or folder is None:
        return None
    from vaelab.tensorboard_log import open_writer  # here: it imports matplotlib, which training otherwise never needs

    return open_writer(config.tensorboard, previous.epoch + 1 if previous else 1)


def _log_to_tensorboard(
    board, model: AutoEncoder, row: dict, x_test: Pixels, y_test: torch.Tensor | None = None
) -> None:
    """The epoch's numbers, 16 prior samples from one fixed seed (the same codes every epoch, so the grid shows them
    learning; a conditional model's cycle through the classes) and the first 16 test images over their
    reconstructions (given their labels y_test where the model is conditional)."""
    from vaelab.tensorboard_log import log_epoch

    originals = x_test[:16].cpu()
    samples = decode_prior(model, 16, 0, balanced_labels(model, 16))
    recons = reconstruct(model, originals, None if y_test is None else y_test[:16])
    log_epoch(board, row["epoch"], row, samples, originals, recons)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The epoch's permutation of the n training images, drawn on the host: the same on every process.  # (n,)"""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)), device="cpu")


@dataclass
class Stepper:
    """One optimisation step on a process's share of a global batch: everything it needs besides the batch."""

    model: AutoEncoder
    optimizer: torch.optim.Optimizer
    config: RunConfig
    compute: Compute = field(default_factory=Compute)
    processes: Processes = field(default_factory=Processes)

    def __post_init__(self):
        self.model.attach_processes(self.processes)  # a family's buffers updated in training (VQ-VAE's codebook)
        self.loss_parts = self.processes.loss_parts(self.model)  # through DistributedDataParallel with several
        self.scaler = self.compute.grad_scaler()

    def loss(
        self,
        x: torch.Tensor,
        noise: ImageNoise | None,
        beta: float,
        global_size: int,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the training loss to differentiate, the summed (loss, recon, kl) of x as LOSS_SCALING says (3,)).

        x is this process's share of a global batch of `global_size` images (labels: theirs, for a conditional
        model). The training loss is recon + beta * KL (+ the family's extra terms) as means over the global batch,
        the KL through free bits (objectives.kl_with_free_bits), or the family's own objective (LossTerms); the sums
        report the KL without free bits.
        """
        with self.compute.autocast():
            terms = self.loss_parts(x, noise, beta, labels)  # LossTerms of (b,) and (b, Z) tensors, float32
        # DDP averages the processes' gradients; each share's sum scaled by world / global_size makes that average
        # the gradient of the mean over the global batch, shares of unequal size included.
        scale = self.processes.world / global_size
        recon_sum, kl_sums = terms.recon.sum(), terms.kl_per_dim.sum(0)  # (), (Z,)
        kl_sum = kl_sums.sum()
        if terms.objective is not None:  # the family's own training loss (IWAE's bound, beta-TCVAE's split KL)
            loss_sum = terms.objective.sum()
            return loss_sum * scale, torch.stack((loss_sum, recon_sum, kl_sum))
        kl_means = kl_sums * scale
        if self.config.free_bits > 0:  # the floor applies to each dimension's mean over the global batch
            kl_means = self.processes.global_value(kl_means)
        kl_term = objectives.kl_with_free_bits(kl_means.unsqueeze(0), self.config.free_bits)  # (1, Z): the means
        extra_sum = torch.as_tensor(terms.extra_sum(), device=recon_sum.device).sum()  # () : 0 for most families
        loss_sum = recon_sum + beta * kl_sum + extra_sum
        return (recon_sum + extra_sum) * scale + beta * kl_term, torch.stack((loss_sum, recon_sum, kl_sum))

    def update(self, loss: torch.Tensor) -> None:
        """Backward (scaled for fp16), clip, and one Adam step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def step(
        self,
        x: torch.Tensor,
        noise: ImageNoise | None,
        beta: float,
        global_size: int,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Update the model on x (with labels for a conditional model); returns x's summed (loss, recon, kl), on
        the device, unread.  # (3,)"""
        loss, sums = self.loss(x, noise, beta, global_size, labels)
        self.update(loss)
        return sums.detach()


class EpochTotals:
    """The epoch's (loss, recon, kl) summed over every process's images, read from the device in one transfer per
    interval: each read waits for the device, so it happens every Compute.readback_steps steps, not every step."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        self.sums = [0.0, 0.0, 0.0]
        self.images = 0
        self.batches = 0
        self.pending: list[tuple[torch.Tensor, int]] = []  # (step's sums on the device, its global batch size)

    def add(self, step_sums: torch.Tensor, global_size: int) -> None:
        self.pending.append((step_sums, global_size))

    def read(self, processes: Processes) -> None:
        """Add the pending steps, summed over processes; NonFiniteLoss names the first batch with a non-finite loss."""
        per_step = processes.sum(torch.stack([sums for sums, _ in self.pending])).tolist()  # (S, 3)
        for values, (_, size) in zip(per_step, self.pending):
            self.batches += 1
            if not math.isfinite(values[0]):
                where = f"at epoch {self.epoch}, batch {self.batches}"
                raise NonFiniteLoss(f"non-finite loss ({values[0] / size}) {where}; training stopped")
            self.sums = [total + value for total, value in zip(self.sums, values)]
            self.images += size
        self.pending = []

    def means(self) -> dict[str, float]:
        return {name: total / self.images for name, total in zip(("loss", "recon", "kl"), self.sums)}


def train_epoch(
    stepper: Stepper, images: DeviceImages, epoch: int, steps_per_epoch: int, progress: bool = False
) -> dict[str, float]:
    """One pass over the training set in this epoch's order; returns the image-weighted means of loss, recon and kl
    over every process's images."""
    config, processes, device = stepper.config, stepper.processes, stepper.compute.device
    stepper.model.train()
    order = epoch_order(config.seed, epoch, len(images))
    totals = EpochTotals(epoch)
    bar = tqdm(total=len(images), desc=f"epoch {epoch}/{config.epochs}", unit="img", disable=not progress, leave=False)
    for batch, (x, labels, rows, global_size) in enumerate(images.batches(order, config.batch_size, processes.rows)):
        noise = ImageNoise(stream_seed(config.seed, epoch, batch), global_size, rows, device)
        if config.binarize == "dynamic":
            x = binarize_per_image(x, noise)
        beta = kl_weight(config, (epoch - 1) * steps_per_epoch + batch, steps_per_epoch)
        totals.add(stepper.step(x, noise, beta, global_size, labels), global_size)
        if len(totals.pending) == stepper.compute.readback_steps or batch + 1 == steps_per_epoch:
            seen = totals.images
            try:
                totals.read(processes)
            except NonFiniteLoss:
                bar.close()
                raise
            bar.update(totals.images - seen)
            bar.set_postfix({k: f"{v:.2f}" for k, v in totals.means().items()}, refresh=False)
    bar.close()
    return totals.means()
