"""Where a training step of the lecture's VAE spends its time: forward, backward, Adam, and the GEMMs alone.

The parts are timed by difference, in alternating rounds of 40 steps, and each is the best round (the machine's
speed drifts, and the best round is the one least disturbed). A last row times the leanest eager step we could
write, the same maths as ten lines of F.linear with a summed BCE and the same fused Adam: how far below
vaelab's step eager PyTorch itself can go.

    python benchmarks/step_breakdown.py
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from train_speed import LECTURE_WIDTHS, matmul_ceiling_seconds
from vaelab import RunConfig, build_model, load_data, objectives
from vaelab.data import DEBIAN_FASHION_MNIST
from vaelab.train import make_optimizer

STAGES = ("forward", "forward + backward", "full step")


def lean_step(linears: list[nn.Linear], optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    """The lecture's VAE step written flat: no modules, no per-image terms, no log-variance bound."""
    (w1, b1), (w2, b2), (w3, b3), (w4, b4) = [(m.weight, m.bias) for m in linears]
    x = x.flatten(1)
    mu, logvar = F.linear(F.leaky_relu(F.linear(x, w1, b1), 0.2), w2, b2).chunk(2, 1)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    logits = F.linear(F.relu(F.linear(z, w3, b3)), w4, b4)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    loss = (bce - 0.5 * torch.sum(1 + logvar - mu * mu - logvar.exp())) / len(x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist" if DEBIAN_FASHION_MNIST.is_dir() else "mnist5k")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=40, help="steps per round")
    args = parser.parse_args()

    data = load_data(args.data)
    config = RunConfig(data=args.data, seed=0)
    torch.manual_seed(0)
    model = build_model(config, data.image_shape)
    optimizer = make_optimizer(model, config.lr)
    torch.manual_seed(0)
    lean = build_model(config, data.image_shape)
    lean_optimizer = make_optimizer(lean, config.lr)
    linears = [m for m in lean.modules() if isinstance(m, nn.Linear)]
    order = torch.randperm(len(data.x_train))
    b = config.batch_size

    def step(stage: str, x: torch.Tensor) -> None:
        recon, kl_per_dim = model.loss_parts(x, x)
        loss = recon.mean() + objectives.kl_with_free_bits(kl_per_dim, 0.0)
        if stage == "forward":
            return
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if stage == "full step":
            optimizer.step()

    best = {stage: float("inf") for stage in (*STAGES, "lean step", "GEMMs alone")}
    for r in range(args.rounds):
        for stage in (*STAGES, "lean step") if r % 2 else ("lean step", *STAGES[::-1]):
            started = time.perf_counter()
            for i in range(args.steps):
                start = (r * args.steps + i) * b % (len(order) - b)
                x = data.x_train.index_select(0, order[start:start + b])
                if stage == "lean step":
                    lean_step(linears, lean_optimizer, x)
                else:
                    step(stage, x)
            best[stage] = min(best[stage], (time.perf_counter() - started) / args.steps)
        best["GEMMs alone"] = min(best["GEMMs alone"], matmul_ceiling_seconds(b, LECTURE_WIDTHS, repeats=args.steps))

    ms = {stage: 1e3 * seconds for stage, seconds in best.items()}
    print(f"data {args.data}, batch {b}, {torch.get_num_threads()} threads; ms per step, best of {args.rounds} rounds")
    print(f"  forward              {ms['forward']:.3f}")
    print(f"  backward             {ms['forward + backward'] - ms['forward']:.3f}")
    print(f"  Adam (fused)         {ms['full step'] - ms['forward + backward']:.3f}")
    print(f"  full step            {ms['full step']:.3f}   ({b / best['full step']:.0f} images/s)")
    print(f"  the GEMMs alone      {ms['GEMMs alone']:.3f}   ({b / best['GEMMs alone']:.0f} images/s)")
    print(f"  everything else      {ms['full step'] - ms['GEMMs alone']:.3f}")
    print(f"  lean eager step      {ms['lean step']:.3f}   ({b / best['lean step']:.0f} images/s; "
          f"the GEMMs are {100 * best['GEMMs alone'] / best['lean step']:.0f}% of it, "
          f"{100 * best['GEMMs alone'] / best['full step']:.0f}% of vaelab's)")


if __name__ == "__main__":
    main()
