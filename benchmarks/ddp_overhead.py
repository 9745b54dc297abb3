"""What training on 2 gloo processes costs on this CPU: the per-step time of 1 process against 2 at the same global
batch, each with one thread, and the share of a step spent on the gradient all-reduce.

The all-reduce share is measured twice: as the step time DDP adds over the same 2-process step without gradient
synchronisation (DDP's no_sync; the two kinds of step alternate), and as the time of all_reduce on a buffer of the
model's size alone. A figure to
watch, not a target: on one machine two processes share its memory bandwidth and cores with everything else.

    python benchmarks/ddp_overhead.py                      # the lecture's VAE, global batch 128
    python benchmarks/ddp_overhead.py --batch-size 1024
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist

from vaelab import RunConfig, build_model, load_data
from vaelab.data import DEBIAN_FASHION_MNIST
from vaelab.devices import DeviceImages
from vaelab.distributed import joined, launched
from vaelab.noise import ImageNoise, stream_seed
from vaelab.train import Stepper, epoch_order, make_optimizer

WARMUP_STEPS = 10


def timed_steps(stepper: Stepper, images: DeviceImages, batch: int, steps: int) -> dict[str, float]:
    """Median seconds per step over `steps` steps (after WARMUP_STEPS), each read back as the CPU loop does.

    With several processes, steps alternate between DDP's gradient all-reduce ("step") and none ("step_no_sync"),
    so both see the same (shared, drifting) machine.
    """
    processes = stepper.processes
    kinds = ("step", "step_no_sync") if processes.world > 1 else ("step",)
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    batches = images.batches(epoch_order(0, 1, len(images)), batch, processes.rows)
    for step, (x, _, rows, size) in zip(range(WARMUP_STEPS + len(kinds) * steps), batches):
        kind = kinds[step % len(kinds)]
        if processes.world > 1:
            dist.barrier()  # every step starts together: the time is the job's, not one process's
        started = time.perf_counter()
        with stepper.loss_parts.no_sync() if kind == "step_no_sync" else nullcontext():
            sums = stepper.step(x, ImageNoise(stream_seed(0, 1, step), size, rows, torch.device("cpu")), 1.0, size)
        processes.sum(sums).tolist()
        if step >= WARMUP_STEPS:
            seconds[kind].append(time.perf_counter() - started)
    return {kind: statistics.median(values) for kind, values in seconds.items()}


def all_reduce_seconds(model: torch.nn.Module, repeats: int = 50) -> float:
    """Median seconds of one all_reduce of a float32 buffer as large as the model's gradients."""
    buffer = torch.zeros(sum(p.numel() for p in model.parameters()))
    seconds = []
    for _ in range(repeats):
        dist.barrier()
        started = time.perf_counter()
        dist.all_reduce(buffer)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def measure(args: argparse.Namespace, data, processes) -> dict:
    """Step times (and, with 2 processes, the all-reduce's) of the lecture's VAE; its DDP dies with this call, before
    the process group it uses."""
    config = RunConfig(data=args.data, batch_size=args.batch_size, seed=0)
    torch.manual_seed(0)
    model = build_model(config, data.image_shape)
    stepper = Stepper(model, make_optimizer(model, config.lr), config, processes=processes)
    images = DeviceImages(data.x_train, torch.device("cpu"))
    result = {"world": processes.world, **timed_steps(stepper, images, args.batch_size, args.steps)}
    if processes.world > 1:
        result["all_reduce"] = all_reduce_seconds(model)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    return result


def worker(args: argparse.Namespace) -> None:
    """One process of the job: time the steps and print the result as JSON on rank 0."""
    torch.set_num_threads(1)
    data = load_data(args.data)
    with joined(launched(), torch.device("cpu")) as processes:
        result = measure(args, data, processes)
    if processes.is_main:
        print(json.dumps(result), flush=True)


def launch(args: argparse.Namespace, nproc: int) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", __file__]
    command += ["--worker", "--data", args.data, "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"torchrun with {nproc} processes failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist" if DEBIAN_FASHION_MNIST.is_dir() else "mnist5k")
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch")
    parser.add_argument("--steps", type=int, default=100, help="timed steps of each kind")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    one, two = launch(args, 1), launch(args, 2)
    ms = {k: 1e3 * v for k, v in {"one": one["step"], **{f"two_{k}": v for k, v in two.items()}}.items()}
    print(
        f"data {args.data}, the lecture's VAE ({one['parameters']:,} parameters), global batch {args.batch_size}, "
        f"one thread per process, gloo on {os.cpu_count()} cores, torch {torch.__version__}; median ms per step"
    )
    print(f"  1 process                      {ms['one']:8.3f}")
    print(f"  2 processes                    {ms['two_step']:8.3f}   ({one['step'] / two['step']:.2f}x the speed of 1)")
    print(f"  2 processes without all-reduce {ms['two_step_no_sync']:8.3f}")
    exposed = (two["step"] - two["step_no_sync"]) / two["step"]
    print(
        f"  all-reduce share of the 2-process step: {100 * exposed:.0f}% by difference with no_sync, "
        f"{100 * two['all_reduce'] / two['step']:.0f}% for all_reduce of the gradients alone "
        f"({1e3 * two['all_reduce']:.3f} ms for {4 * one['parameters'] / 2**20:.1f} MiB)"
    )
    ideal = math.ceil(args.batch_size / 2) / args.batch_size
    print(f"  (with perfect scaling, 2 processes would take {100 * ideal:.0f}% of the 1-process step)")


if __name__ == "__main__":
    main()
