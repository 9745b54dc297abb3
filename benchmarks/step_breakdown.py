"""Where a training step of the lecture's VAE spends its time: forward, backward, Adam, and the GEMMs alone.

The parts are timed by difference, in rotating rounds of 40 steps, and each is the best round (the machine's
speed drifts, and the best round is the one least disturbed):

    python benchmarks/step_breakdown.py

benchmarks/eager_floor.py puts the full step beside leaner ways of writing it.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch

from train_speed import LECTURE_WIDTHS, matmul_ceiling_seconds
from vaelab import RunConfig, build_model, load_data
from vaelab.data import DEBIAN_FASHION_MNIST
from vaelab.train import Stepper, make_optimizer

STAGES = ("forward", "forward + backward", "full step")


def vaelab_step(stepper: Stepper, x: torch.Tensor, stage: str = "full step") -> None:
    """vaelab's training step (train.Stepper.step without its readback), stopped after `stage`."""
    loss, _ = stepper.loss(x, None, beta=1.0, global_size=len(x))
    if stage == "forward":
        return
    stepper.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if stage == "full step":
        stepper.optimizer.step()


def parse_args(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist" if DEBIAN_FASHION_MNIST.is_dir() else "mnist5k")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=40, help="steps per round")
    return parser.parse_args()


def best_of_rounds(
    steps: dict[str, Callable[[torch.Tensor], None]], x_train: torch.Tensor, batch: int, rounds: int, per_round: int
) -> dict[str, float]:
    """Seconds per step of each step function and of the step's GEMMs alone ("GEMMs alone"), the best round of
    each; the functions take turns in rotating order, every round on the next batches of one shuffled order."""
    order = torch.randperm(len(x_train))
    best = {name: float("inf") for name in (*steps, "GEMMs alone")}
    for r in range(rounds):
        names = list(steps)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.perf_counter()
            for i in range(per_round):
                start = (r * per_round + i) * batch % (len(order) - batch)
                steps[name](x_train.index_select(0, order[start : start + batch]))
            best[name] = min(best[name], (time.perf_counter() - started) / per_round)
        best["GEMMs alone"] = min(best["GEMMs alone"], matmul_ceiling_seconds(batch, LECTURE_WIDTHS, per_round))
    return best


def main() -> None:
    args = parse_args(__doc__)
    data = load_data(args.data)
    config = RunConfig(data=args.data, seed=0)
    torch.manual_seed(0)
    model = build_model(config, data.image_shape)
    stepper = Stepper(model, make_optimizer(model, config.lr), config)
    b = config.batch_size
    steps = {stage: functools.partial(vaelab_step, stepper, stage=stage) for stage in STAGES}
    best = best_of_rounds(steps, data.x_train, b, args.rounds, args.steps)

    ms = {stage: 1e3 * seconds for stage, seconds in best.items()}
    print(f"data {args.data}, batch {b}, {torch.get_num_threads()} threads; ms per step, best of {args.rounds} rounds")
    print(f"  forward              {ms['forward']:.3f}")
    print(f"  backward             {ms['forward + backward'] - ms['forward']:.3f}")
    print(f"  Adam (fused)         {ms['full step'] - ms['forward + backward']:.3f}")
    print(f"  full step            {ms['full step']:.3f}   ({b / best['full step']:.0f} images/s)")
    print(f"  the GEMMs alone      {ms['GEMMs alone']:.3f}   ({b / best['GEMMs alone']:.0f} images/s)")
    print(f"  everything else      {ms['full step'] - ms['GEMMs alone']:.3f}")


if __name__ == "__main__":
    main()
