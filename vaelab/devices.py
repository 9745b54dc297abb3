"""Where and how a command computes: the device, the precision of the networks, torch.compile, and the placement
of the images a loop batches. Chosen once, at the command's entry (`choose_compute`), and passed down.

Checkpoints never depend on any of it: weights are saved from the CPU and load onto any device.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from vaelab.config import PRECISIONS
from vaelab.data.images import to_float
from vaelab.errors import VaelabError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# The images may take at most this share of the device's free memory: the model, its activations, Adam's state
# and the allocator's slack need the rest. Beyond it they stay on the host and stream in, batch by batch.
DEVICE_MEMORY_SHARE = 0.5
# A readback (loss values to the host) waits for the device to finish its queue; on the CPU there is no queue, and
# reading every step lets a NaN stop training at the step that made it.
READBACK_STEPS = {"cpu": 1}
DEFAULT_READBACK_STEPS = 20


def _cuda_device(name: str, local_rank: int | None) -> torch.device:
    if not torch.cuda.is_available():
        raise VaelabError(
            f"--device {name}: this machine has no CUDA device (or this torch has no CUDA); use --device cpu"
        )
    count = torch.cuda.device_count()
    if local_rank is not None:  # torchrun: one GPU per process of a node
        if name != "cuda":
            raise VaelabError(
                f"--device {name}: under torchrun every process takes cuda:LOCAL_RANK; pass --device cuda"
            )
        index = local_rank
    else:
        index = int(name.partition(":")[2] or torch.cuda.current_device())
    if index >= count:
        raise VaelabError(
            f"--device {name}: process {index} of this node needs GPU cuda:{index}, but {count} is/are visible; "
            "use fewer processes per node (--nproc-per-node) or another --device"
        )
    return torch.device("cuda", index)


def choose_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The device named: auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps.

    `local_rank` is torchrun's LOCAL_RANK when several processes train: each then takes the GPU of its rank, and
    MPS, which has no collective backend, is skipped by auto and refused by name.
    """
    several = local_rank is not None
    if name == "auto":
        if torch.cuda.is_available():
            return _cuda_device("cuda", local_rank)
        name = "mps" if torch.backends.mps.is_available() and not several else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise VaelabError("--device mps: this machine has no Apple GPU available to torch; use --device cpu")
        if several:
            raise VaelabError("--device mps trains in one process only (no collective backend); use cpu or cuda")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        return _cuda_device(name, local_rank)
    raise VaelabError(f"--device must be auto, cpu, cuda, cuda:N or mps; got {name!r}")


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run: fp16 needs CUDA (and its gradient scaler), bf16 a recent GPU."""
    if precision not in PRECISIONS:
        raise VaelabError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise VaelabError(f"--precision fp16 needs a CUDA device, not {device.type}; use --precision bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise VaelabError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16")


def device_name(device: torch.device) -> str:
    """The card (or processor) behind a device, as a person would name it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU (MPS), {platform.machine()}"
    threads = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU, {threads} thread{'s' if threads > 1 else ''}"


@dataclass(frozen=True)
class Compute:
    """How a command computes: on `device`, the networks in `precision` (likelihoods, KL and sums stay in fp32),
    optionally compiled."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    compile: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        """The networks' forward passes in the chosen precision (autocast); nothing at fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 gradients underflow unless the loss is scaled up (and the step skipped on inf); off otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` moved to the device and, with compile, the forward pass of each of its networks compiled.

        Each network's forward is replaced by its compiled self, which keeps the parameter names (checkpoints do
        not change); wrapping the network (torch.compile(net)) would prefix them, and torch 2.13's Module.compile
        runs the network uncompiled.
        """
        model.to(self.device)
        if self.compile:
            for network in model.children():
                network.forward = torch.compile(network.forward)
        return model

    def describe(self) -> dict[str, str | bool]:
        """What a history row records: the device, its card, the precision and whether the networks were compiled."""
        return {
            "device": str(self.device),
            "device_name": device_name(self.device),
            "precision": self.precision,
            "compiled": self.compile,
        }

    @property
    def readback_steps(self) -> int:
        """Steps between two reads of the loss values on the host (each one waits for the device)."""
        return READBACK_STEPS.get(self.device.type, DEFAULT_READBACK_STEPS)


def choose_compute(
    device: str = "auto", precision: str = "fp32", compile: bool = False, local_rank: int | None = None
) -> Compute:
    """The Compute of a command's flags, checked before any work: one clear VaelabError for what cannot run here."""
    chosen = choose_device(device, local_rank)
    check_precision(precision, chosen)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    return Compute(chosen, precision, compile)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's weights live on, where its inputs must go; the CPU for a model without weights."""
    parameters = getattr(model, "parameters", None)  # duck-typed decoders (a function of z) have none
    first = next(parameters(), None) if parameters is not None else None
    return first.device if first is not None else torch.device("cpu")


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether `nbytes` of images fit on the device within DEVICE_MEMORY_SHARE of its free memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= DEVICE_MEMORY_SHARE * free
    return True  # the CPU, and MPS, whose memory is the host's: the images are already in it


def place(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`images` on the device when they fit there (moved once), else where they are (batches then move alone)."""
    return images.to(device) if fits_on(device, images.nbytes) else images


class DeviceImages:
    """A split of images (and their labels, when a conditional model trains on them), batched onto `device`.

    When the split fits on the device it moves there once, and a batch is an index_select on the device: no copy
    from the host and no synchronisation per batch. Otherwise it stays on the host; each batch is gathered into
    pinned memory (on CUDA) and copied without blocking, and the next batch is gathered and its copy queued before
    the current one is handed out, so the host's gathering overlaps the device's work. Integer pixels become floats
    on the device (to_float), so 8-bit images cross the bus as one byte a pixel. Labels are gathered by the same
    rows as the images.
    """

    def __init__(
        self,
        images: torch.Tensor,
        device: torch.device,
        max_value: float = 1.0,
        resident: bool | None = None,
        labels: torch.Tensor | None = None,
    ):
        self.device = device
        self.max_value = max_value
        self.resident = fits_on(device, images.nbytes) if resident is None else resident
        self.images = images.to(device) if self.resident else images
        self.labels = None if labels is None else labels.to(device if self.resident else "cpu")
        self.pin = device.type == "cuda" and not self.resident

    def __len__(self) -> int:
        return len(self.images)

    def _gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        labels = None if self.labels is None else self.labels.index_select(0, index)
        if self.resident:
            return self.images.index_select(0, index), labels
        batch = torch.empty((len(index), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=self.pin)
        torch.index_select(self.images, 0, index, out=batch)
        labels = None if labels is None else labels.to(self.device, non_blocking=True)
        return batch.to(self.device, non_blocking=True), labels

    def batches(
        self, order: torch.Tensor, batch_size: int, share: Callable[[int], slice]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, slice, int]]:
        """(this process's images, their labels or None, their rows in the global batch, the global batch's size)
        for each global batch of `batch_size` images taken from `order` (a permutation on the host); share(n) names
        the rows this process takes of a global batch of n."""
        order = order.to(self.device) if self.resident else order

        def fetch(start: int) -> tuple[torch.Tensor, torch.Tensor | None, slice, int]:
            global_size = min(batch_size, len(order) - start)
            rows = share(global_size)
            return *self._gather(order[start + rows.start : start + rows.stop]), rows, global_size

        starts = range(0, len(order), batch_size)
        upcoming = fetch(starts[0]) if starts else None
        for i in range(len(starts)):
            (stored, labels, rows, global_size), upcoming = (
                upcoming,
                fetch(starts[i + 1]) if i + 1 < len(starts) else None,
            )
            yield to_float(stored, self.max_value), labels, rows, global_size
