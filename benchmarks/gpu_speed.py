"""Training speed on a GPU: vaelab's loop against a pytorch/examples-style and a pythae-style DataLoader loop, on
the same card in the same run, and vaelab's share of the card's measured matrix-product throughput.

Cases: the lecture's VAE (MLP 784-400-20) on Fashion-MNIST (mnist5k without it), and the conv VAE on 32x32 and
64x64 colour images (random 8-bit pixels: speed does not depend on what the pixels show), at batches 128 and 1024.
The three loops train the same network in fp32 and differ only in how they feed it and read it:
- examples: pytorch/examples' VAE loop, a per-sample Dataset (uint8 -> PIL image -> ToTensor, as torchvision does),
  a DataLoader, each batch copied to the card, loss.item() every step;
- pythae: pythae's BaseTrainer loop, per-sample dict samples collated into a dict, moved to the card key by key,
  the loss read every step (and checked for NaN);
- vaelab: vaelab.train's loop, the data set on the card as uint8, batches sliced there, the loss read every
  DEFAULT_READBACK_STEPS steps (with --precision and --compile if asked).
"Share of the ceiling": the step's matrix-product FLOPs (torch.utils.flop_counter) per second against what the card
does on one large matrix product in the same dtype. Without a CUDA device the script says so and stops.

    python benchmarks/gpu_speed.py
    python benchmarks/gpu_speed.py --precision bf16 --compile
    python benchmarks/gpu_speed.py --device cpu --images 512 --rounds 1     # a smoke run of the code paths
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from train_speed import TorchvisionStyleImages, synchronize
from vaelab import RunConfig, build_model, load_data
from vaelab.data import DEBIAN_FASHION_MNIST
from vaelab.devices import Compute, DeviceImages, device_name
from vaelab.train import Stepper, make_optimizer, train_epoch

BATCHES = (128, 1024)


@dataclass(frozen=True)
class Case:
    name: str
    config: RunConfig
    image_shape: tuple[int, int, int] | None  # None: the named data set's own images


CASES = (
    Case("lecture VAE, Fashion-MNIST 28x28", RunConfig(hidden=[400], z_dim=20), None),
    Case("conv VAE, 32x32 colour", RunConfig(arch="conv", hidden=[256], z_dim=32), (3, 32, 32)),
    Case("conv VAE, 64x64 colour", RunConfig(arch="conv", hidden=[256], z_dim=64), (3, 64, 64)),
)


class PythaeStyleImages(Dataset):
    """pythae's BaseDataset: each sample a dict (its DatasetOutput) holding the image, collated into a dict."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"data": self.images[i]}


def examples_epoch(model, optimizer, loader: DataLoader, device: torch.device) -> None:
    """pytorch/examples' train(): each batch to the card, forward, summed loss, backward, loss.item(), step."""
    model.train()
    train_loss = 0.0
    for x, _ in loader:
        x = x.to(device)
        optimizer.zero_grad()
        recon, kl_per_dim = model.loss_parts(x)[:2]
        loss = recon.sum() + kl_per_dim.sum()
        loss.backward()
        train_loss += loss.item()
        optimizer.step()


def pythae_epoch(model, optimizer, loader: DataLoader, device: torch.device) -> None:
    """pythae's BaseTrainer.train_step: inputs moved key by key, loss as the batch mean, read and NaN-checked."""
    model.train()
    epoch_loss = 0.0
    for inputs in loader:
        inputs = {key: value.to(device) for key, value in inputs.items()}
        recon, kl_per_dim = model.loss_parts(inputs["data"])[:2]
        loss = (recon + kl_per_dim.sum(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        epoch_loss += loss.item()
        if epoch_loss != epoch_loss:
            raise ArithmeticError("NaN detected in train loss")


def images_for(case: Case, n: int, data_name: str) -> torch.Tensor:
    """n float images in [0, 1] on the host: the named data set's, or random 8-bit colour pixels."""
    if case.image_shape is None:
        return load_data(data_name).x_train[:n]
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, *case.image_shape), generator=generator, dtype=torch.uint8).float() / 255


def step_flops(model, x: torch.Tensor) -> int:
    """The matrix-product and convolution FLOPs of one training step (forward and backward) on batch x."""
    with FlopCounterMode(display=False) as counter:
        recon, kl_per_dim = model.loss_parts(x)[:2]
        (recon.sum() + kl_per_dim.sum()).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype, side: int = 8192, repeats: int = 20) -> float:
    """The card's throughput on one large square matrix product, the most of its peak torch reaches."""
    a, b = (torch.randn(side, side, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * side**3 * repeats / (time.perf_counter() - started)


def timed(epoch, images: int, device: torch.device) -> float:
    """Images per second of one epoch (the device's queue drained at both ends)."""
    synchronize(device)
    started = time.perf_counter()
    epoch()
    synchronize(device)
    return images / (time.perf_counter() - started)


def loops(case: Case, x: torch.Tensor, batch: int, compute: Compute):
    """The three loops of one case, each with its own copy of the network (same seed) and optimiser."""
    device = compute.device

    def fresh():
        torch.manual_seed(0)
        model = build_model(case.config, tuple(x.shape[1:])).to(device)
        return model, make_optimizer(model, case.config.lr)

    config = RunConfig(**{**case.config.to_dict(), "batch_size": batch})
    model, optimizer = fresh()
    stepper = Stepper(compute.prepare(model), optimizer, config, compute)
    resident = DeviceImages((x * 255).round().to(torch.uint8), device, max_value=255)
    steps = math.ceil(len(x) / batch)
    examples = (*fresh(), DataLoader(TorchvisionStyleImages(x, None), batch_size=batch, shuffle=True), device)
    pythae = (*fresh(), DataLoader(PythaeStyleImages(x), batch_size=batch, shuffle=True), device)
    return {
        "examples": lambda: examples_epoch(*examples),
        "pythae": lambda: pythae_epoch(*pythae),
        "vaelab": lambda: train_epoch(stepper, resident, 1, steps),
    }, model


def run_case(case: Case, batch: int, args: argparse.Namespace, compute: Compute, peak: float) -> None:
    x = images_for(case, args.images, args.data)
    contenders, model = loops(case, x, batch, compute)
    for epoch in contenders.values():  # warm-up: kernels chosen, caches filled, compilation done
        epoch()
    rates = {name: 0.0 for name in contenders}
    for r in range(args.rounds):  # rotating order: a drifting card does not favour one loop
        names = list(contenders)[r % 3 :] + list(contenders)[: r % 3]
        for name in names:
            rates[name] = max(rates[name], timed(contenders[name], len(x), compute.device))
    flops_per_image = step_flops(model, x[:batch].to(compute.device)) / batch
    share = rates["vaelab"] * flops_per_image / peak
    print(
        f"{case.name:34s} {batch:5d} {rates['examples']:10.0f} {rates['pythae']:9.0f} {rates['vaelab']:9.0f} "
        f"{rates['vaelab'] / rates['examples']:9.2f}x {rates['vaelab'] / rates['pythae']:8.2f}x "
        f"{100 * share:7.1f}%  ({peak / flops_per_image:,.0f} img/s ceiling)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke run")
    parser.add_argument("--data", default="fashion-mnist" if DEBIAN_FASHION_MNIST.is_dir() else "mnist5k")
    parser.add_argument("--images", type=int, default=20000, help="training images per case (default 20000)")
    parser.add_argument("--rounds", type=int, default=2, help="timed epochs of each loop, best kept (default 2)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="vaelab's loop only")
    parser.add_argument("--compile", action="store_true", help="torch.compile vaelab's networks")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_speed: skipped: no CUDA device here (torch sees none); run it on a machine with a GPU")
        return
    device = torch.device(args.device)
    compute = Compute(device, args.precision, args.compile)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    peak = matmul_flops_per_second(device, dtype, side=8192 if device.type == "cuda" else 1024)
    print(
        f"{device_name(device)} ({device}), torch {torch.__version__}, vaelab in {args.precision}"
        f"{' compiled' if args.compile else ''}; {args.images} images per case; best of {args.rounds} epochs; "
        f"one large {args.precision} matmul runs at {peak / 1e9:,.0f} GFLOP/s"
    )
    print(
        f"{'case':34s} {'batch':>5s} {'examples':>10s} {'pythae':>9s} {'vaelab':>9s} {'vs ex.':>10s} "
        f"{'vs pythae':>9s} {'of ceiling':>8s}   (images/s)"
    )
    for case in CASES:
        for batch in BATCHES:
            run_case(case, batch, args, compute, peak)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
