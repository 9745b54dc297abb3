"""Training on several processes: torchrun's environment, the process group, and the few collectives vaelab needs.

torchrun starts one process per device and tells each its place in RANK, WORLD_SIZE and LOCAL_RANK (and where
to meet in MASTER_ADDR and MASTER_PORT). Every process holds the whole model; each takes a contiguous share of
every global batch, and DistributedDataParallel averages their gradients (gloo on the CPU, NCCL on CUDA).
Nothing else in vaelab reads that environment or calls torch.distributed: the training loop asks a Processes.

- Batches: `rows(n)` is this process's share of a global batch of n images; shares differ by at most one image
  and together hold each image once, so an uneven last batch is neither padded nor repeated.
- Gradients: the loss of a share is scaled to (world / global batch) times its sum over the share's images;
  DDP's mean over processes then is the gradient of the mean over the global batch, exactly as one process has it.
- Evaluation: `chunks(n)` deals whole chunks of a split to processes; `sum` adds what they measured.
- Failures: `together` turns an error on any process into the same error on all (printed once, by rank 0), and
  a process that dies closes its sockets, so the others fail at their next collective (or torchrun stops them).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vaelab.errors import VaelabError

if TYPE_CHECKING:  # an annotation only: vaelab.families imports this module (VQ-VAE's codebook sums over it)
    from vaelab.families.terms import LossTerms

# No buffer changes in training (the fixed pixel variance is a constant), so none is synchronised before each
# forward pass (a collective per step). torch 2.13 renamed the option; older releases know only the first name.
NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)
# How long a collective waits for a process that hangs without dying (one that dies is noticed at once). It must
# outlast the longest work one process does alone while the others wait: rank 0 writing a checkpoint, every
# process loading (or first decoding) the data.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
T = TypeVar("T")


class PeerError(VaelabError):
    """An error the whole job stops for, already reported by rank 0: the other processes exit without repeating it."""


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun job."""

    rank: int
    world: int
    local_rank: int


def _env_int(name: str, low: int, high: int | None = None) -> int:
    text = os.environ.get(name, "")
    if not text.isdigit() or int(text) < low or (high is not None and int(text) >= high):
        raise VaelabError(f"torchrun's environment variable {name}={text!r} is not valid; launch with torchrun")
    return int(text)


def launched() -> Launch | None:
    """The torchrun job this process belongs to (from RANK, WORLD_SIZE and LOCAL_RANK), or None outside one."""
    if "WORLD_SIZE" not in os.environ:
        return None
    world = _env_int("WORLD_SIZE", 1)
    return Launch(_env_int("RANK", 0, world), world, _env_int("LOCAL_RANK", 0))


class _LossParts(nn.Module):
    """model.loss_parts as a forward(): DDP synchronises gradients of what runs through a module's forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, noise, beta: float, labels: torch.Tensor | None = None) -> LossTerms:
        return self.model.loss_parts(x, noise=noise, labels=labels, beta=beta)


@dataclass(frozen=True)
class Processes:
    """The processes training together (one by default) and what this one is among them."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")  # where collectives take their tensors (CUDA for NCCL)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0

    def rows(self, global_size: int) -> slice:
        """This process's contiguous share of a global batch of `global_size` images, in rank order."""
        return slice(self.rank * global_size // self.world, (self.rank + 1) * global_size // self.world)

    def chunks(self, n: int) -> range:
        """The chunks of a split (0..n-1) this process measures: every world-th one, from its rank."""
        return range(self.rank, n, self.world)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` added over every process (a new tensor on values' device); `values` itself with one process."""
        if self.world == 1:
            return values
        total = values.detach().to(self.device, copy=True)
        dist.all_reduce(total)
        return total.to(values.device)

    def global_value(self, local: torch.Tensor) -> torch.Tensor:
        """A tensor worth the mean of `local` over processes, with this process's own gradient of `local`.

        `local` is a process's part of a global-batch mean, already scaled by world / global batch size, so that
        DDP's mean of the gradients is the global mean's gradient; where the loss is not linear in such a mean
        (free bits clamp the global mean of each KL dimension), the clamp must see the global value.
        """
        if self.world == 1:
            return local
        return local + (self.sum(local) / self.world - local).detach()

    def loss_parts(self, model: nn.Module) -> Callable[..., LossTerms]:
        """model.loss_parts as a function of (x, noise, beta, labels=None), through DistributedDataParallel when
        several train."""
        if self.world == 1:
            return lambda x, noise, beta, labels=None: model.loss_parts(x, noise=noise, labels=labels, beta=beta)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(_LossParts(model), device_ids=device_ids, **NO_BUFFER_SYNC)

    def error(self, message: str) -> VaelabError:
        """The error to raise for the whole job: rank 0 reports it, the others stop quietly."""
        return VaelabError(message) if self.is_main else PeerError(message)

    def together(self, work: Callable[[], T]) -> T:
        """work() on every process; a VaelabError on any of them is raised on all (the lowest rank's message), so
        no process waits at a collective for one that already stopped."""
        try:
            result, message = work(), None
        except VaelabError as exc:
            result, message = None, str(exc)
        if self.world > 1:
            messages: list[str | None] = [None] * self.world
            dist.all_gather_object(messages, message)
            message = next((m for m in messages if m is not None), None)
        if message is not None:
            raise self.error(message) from None
        return result

    @contextlib.contextmanager
    def peers_lost(self, state: Callable[[], str]) -> Iterator[None]:
        """Turn the error of a collective whose peer died into one line that says what is left (state()), printed
        by every process that sees it (rank 0 may be the one that died)."""
        try:
            yield
        except RuntimeError as exc:  # gloo and NCCL report a dropped peer as RuntimeError (DistBackendError)
            if self.world == 1 or not _names_a_lost_peer(exc):
                raise
            raise VaelabError(
                f"process {self.rank} lost contact with the other processes of this job ({_first_line(exc)}); "
                f"{state()}; continue with --resume"
            ) from None


LOST_PEER_WORDS = ("gloo", "nccl", "connection", "peer", "timed out", "timeout")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


def _names_a_lost_peer(exc: RuntimeError) -> bool:
    return isinstance(exc, dist.DistError) or any(word in str(exc).lower() for word in LOST_PEER_WORDS)


@contextlib.contextmanager
def joined(launch: Launch | None, device: torch.device) -> Iterator[Processes]:
    """The processes of this job, with the process group set up for the block and torn down after it.

    One process (no torchrun, or a world of one) needs no group. NCCL serves CUDA devices, gloo the CPU.
    """
    if launch is None or launch.world == 1:
        yield Processes()
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    collective_device = device if backend == "nccl" else torch.device("cpu")
    try:
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT, device_id=device if backend == "nccl" else None)
    except (RuntimeError, ValueError) as exc:
        raise VaelabError(f"cannot join the torchrun job as process {launch.rank}: {_first_line(exc)}") from None
    try:
        yield Processes(launch.rank, launch.world, collective_device)
        dist.barrier()  # no process tears its connections down while another still uses them (gloo aborts then)
    finally:
        dist.destroy_process_group()
