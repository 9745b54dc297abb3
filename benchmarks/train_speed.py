"""Training speed of the lecture's VAE: vaelab's loop vs the per-sample Dataset + DataLoader loop, side by side.

The DataLoader loop runs twice: as pytorch/examples' VAE has it (torchvision's MNIST with ToTensor: each sample
a uint8 array turned into a PIL image and back into a float tensor, returned with its label), and over float
tensors with no conversion, the fastest a per-sample Dataset gets. Prints images per second for all, the ratios,
and vaelab's share of the float32 matmul ceiling: the rate at which torch runs the training step's own matrix
products (forward and backward) on this machine with nothing else around them. With --epochs N all loops also
train N epochs and report the test loss they reach.

    python benchmarks/train_speed.py                 # three timed epochs each, Fashion-MNIST (or mnist5k)
    python benchmarks/train_speed.py --epochs 10     # also compare the test loss after 10 epochs
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vaelab import RunConfig, build_model, load_data
from vaelab.data import DEBIAN_FASHION_MNIST
from vaelab.devices import DeviceImages
from vaelab.evaluate import dataset_loss
from vaelab.train import Stepper, make_optimizer, train_epoch

# (in, out) of the lecture's four Linear layers: encoder 784 -> 400 -> 2*20, decoder 20 -> 400 -> 784.
LECTURE_WIDTHS = [(784, 400), (400, 40), (20, 400), (400, 784)]


class LectureVAE(nn.Module):
    """The lecture's code as written (Sigmoid output, BCE on probabilities), as the common examples have it."""

    def __init__(self, image_size=784, h_dim=400, z_dim=20):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(image_size, h_dim), nn.LeakyReLU(0.2), nn.Linear(h_dim, z_dim * 2))
        self.decoder = nn.Sequential(nn.Linear(z_dim, h_dim), nn.ReLU(), nn.Linear(h_dim, image_size), nn.Sigmoid())

    def forward(self, x):
        mu, logvar = torch.chunk(self.encoder(x), 2, dim=-1)
        z = mu + logvar.mul(0.5).exp() * torch.randn_like(mu)
        return self.decoder(z), mu, logvar


def lecture_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp())
    return bce + kld


class TorchvisionStyleImages(Dataset):
    """torchvision's MNIST with transform=ToTensor(), as pytorch/examples' VAE loads it, per sample:
    uint8 image -> PIL image -> float tensor in [0, 1], returned with its label. (torchvision itself has no CPU
    build on these machines, so its two steps are written out here.)"""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None):
        # (N, H, W) grey or (N, H, W, 3) colour uint8, as torchvision stores MNIST and CIFAR-10.
        self.images = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).squeeze(3)
        self.labels = labels if labels is not None else torch.zeros(len(images), dtype=torch.long)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = Image.fromarray(self.images[i].numpy())
        # transforms.ToTensor on a PIL image: (H, W) or (H, W, C) uint8 -> (C, H, W) float32 / 255.
        x = torch.from_numpy(np.array(image, np.uint8, copy=True)).view(image.size[1], image.size[0], -1)
        return x.permute(2, 0, 1).contiguous().to(torch.float32).div(255), int(self.labels[i])


class PerSampleImages(Dataset):
    """The same loop's data with nothing but the per-sample path: float images, already flat, no labels."""

    def __init__(self, images: torch.Tensor):
        self.images = images.flatten(1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def example_style_epoch(model, optimizer, loader) -> float:
    """pytorch/examples' VAE train(): zero_grad, forward, the lecture's loss, backward, loss.item(), step.

    Returns the mean training loss, which the examples print; its loss.item() is a read they pay every step."""
    model.train()
    train_loss = 0.0
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch  # (images, labels) or images
        x = x.view(-1, 784)
        optimizer.zero_grad()
        recon, mu, logvar = model(x)
        loss = lecture_loss(recon, x, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
    return train_loss / len(loader.dataset)


@torch.no_grad()
def example_style_test_loss(model, x_test: torch.Tensor) -> float:
    torch.manual_seed(0)
    x = x_test.flatten(1)
    total = 0.0
    for i in range(0, len(x), 1000):
        recon, mu, logvar = model(x[i : i + 1000])
        total += lecture_loss(recon, x[i : i + 1000], mu, logvar).item()
    return total / len(x)


def step_flops(batch: int, widths: list[tuple[int, int]]) -> float:
    """FLOPs of one training step's matrix products: forward, weight gradients, and input gradients except the
    first layer's (the images need no gradient)."""
    forward = sum(2 * batch * i * o for i, o in widths)
    input_grads = sum(2 * batch * i * o for i, o in widths[1:])
    return 2 * forward + input_grads


def matmul_ceiling_seconds(
    batch: int, widths: list[tuple[int, int]], repeats: int = 300, device: str | torch.device = "cpu"
) -> float:
    """Seconds per step of the step's own GEMMs run back to back: forward, then grad-W and grad-input per layer."""
    xs = {i: torch.randn(batch, i, device=device) for i, _ in widths}
    gs = {o: torch.randn(batch, o, device=device) for _, o in widths}
    ws = [torch.randn(o, i, device=device) for i, o in widths]

    def one_step():
        for (i, o), w in zip(widths, ws):
            torch.addmm(gs[o], xs[i], w.t())  # forward
        for k, ((i, o), w) in enumerate(zip(widths, ws)):
            torch.mm(gs[o].t(), xs[i])  # weight gradient
            if k > 0:
                torch.mm(gs[o], w)  # input gradient

    for _ in range(20):
        one_step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        one_step()
    synchronize(device)
    return (time.perf_counter() - started) / repeats


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (a GPU runs it after the call returns), so a clock reads the work itself."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist" if DEBIAN_FASHION_MNIST.is_dir() else "mnist5k")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs of each loop, alternated")
    parser.add_argument("--epochs", type=int, default=0, help="also train all N epochs and compare test loss")
    args = parser.parse_args()

    data = load_data(args.data)
    config = RunConfig(data=args.data, batch_size=args.batch_size, seed=0)
    n = len(data.x_train)
    print(
        f"data {args.data}: {n} training images, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )

    torch.manual_seed(0)
    ours = build_model(config, data.image_shape)
    stepper, images = (
        Stepper(ours, make_optimizer(ours, config.lr), config),
        DeviceImages(data.x_train, torch.device("cpu")),
    )
    steps = math.ceil(n / args.batch_size)
    datasets = {"examples": TorchvisionStyleImages(data.x_train, data.y_train), "float": PerSampleImages(data.x_train)}
    theirs = {}
    for name, dataset in datasets.items():
        torch.manual_seed(0)
        model = LectureVAE()
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True)
        theirs[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-3), loader)

    flops = step_flops(args.batch_size, LECTURE_WIDTHS)
    print(
        "examples: the DataLoader loop as pytorch/examples writes it (torchvision-style uint8 -> PIL -> ToTensor "
        "per sample); float: the same loop over float tensors, no PIL; images/s"
    )
    # These machines are shared and their speed drifts by tens of percent within a minute, so each round times
    # one epoch of each loop and the ceiling back to back, in rotating order; the ratios are per round.
    print(
        f"{'round':>5s} {'examples':>9s} {'float':>7s} {'vaelab':>7s} {'ceiling':>8s} "
        f"{'vs examples':>12s} {'vs float':>9s} {'share':>6s}"
    )
    rows = []
    for epoch in range(1, args.rounds + 1):
        contenders = {"ours": lambda epoch=epoch: train_epoch(stepper, images, epoch, steps)}
        contenders.update({name: (lambda t=t: example_style_epoch(*t)) for name, t in theirs.items()})
        names = list(contenders)
        rates = {}
        for name in names[epoch % len(names) :] + names[: epoch % len(names)]:
            started = time.perf_counter()
            contenders[name]()
            rates[name] = n / (time.perf_counter() - started)
        rates["ceiling"] = args.batch_size / matmul_ceiling_seconds(args.batch_size, LECTURE_WIDTHS)
        rows.append(rates)
        print(
            f"{epoch:5d} {rates['examples']:9.0f} {rates['float']:7.0f} {rates['ours']:7.0f} "
            f"{rates['ceiling']:8.0f} {rates['ours'] / rates['examples']:11.2f}x "
            f"{rates['ours'] / rates['float']:8.2f}x {100 * rates['ours'] / rates['ceiling']:5.0f}%"
        )

    best = {name: max(r[name] for r in rows) for name in rows[0]}
    gflops = best["ceiling"] * flops / args.batch_size / 1e9
    print(
        f"best of {args.rounds}: examples' loop {best['examples']:.0f}, float DataLoader loop {best['float']:.0f}, "
        f"vaelab {best['ours']:.0f}, ceiling {best['ceiling']:.0f} images/s ({gflops:.1f} GFLOP/s, "
        f"{flops / args.batch_size / 1e6:.2f} MFLOP per image)"
    )
    for name in datasets:
        print(
            f"speed-up over the {name} loop: {best['ours'] / best[name]:.2f}x (best against best), "
            f"{statistics.median(r['ours'] / r[name] for r in rows):.2f}x (median of rounds)"
        )
    print(
        f"vaelab's share of the matmul ceiling: {100 * best['ours'] / best['ceiling']:.0f}% (best against best), "
        f"{100 * statistics.median(r['ours'] / r['ceiling'] for r in rows):.0f}% (median of rounds)"
    )

    if args.epochs:
        for epoch in range(args.rounds + 1, args.epochs + 1):
            train_epoch(stepper, images, epoch, steps)
            for t in theirs.values():
                example_style_epoch(*t)
        losses = {"vaelab": dataset_loss(ours, data.x_test)["loss"]}
        losses.update({f"{name} loop": example_style_test_loss(t[0], data.x_test) for name, t in theirs.items()})
        print(
            f"test loss after {args.epochs} epochs (grey-level BCE + KL, nats per image, one z sample): "
            + ", ".join(f"{name} {loss:.2f}" for name, loss in losses.items())
        )


if __name__ == "__main__":
    main()
