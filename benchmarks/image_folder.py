"""A folder of PNGs, two ways: vaelab's decode-once uint8 cache against a torchvision-style ImageFolder loop.

Builds (once, reused) a folder of N 64x64 colour PNGs of the `shapes` set, one sub-folder per shape, then
measures, side by side in one run:
- vaelab's first load (every file decoded, in several processes, into the uint8 cache) and its second load (the
  cache opened memory-mapped);
- epoch speed in images/s: vaelab's training loop (uint8 batches gathered from the memory-mapped cache and
  converted one batch at a time) against a per-sample ``Dataset`` that opens and decodes every PNG every epoch
  (PIL -> float tensor, torchvision's ``ImageFolder`` + ``ToTensor`` written out, since torchvision has no CPU
  build here) behind a ``DataLoader``; both train the same model with the same step, in alternating rounds;
- peak resident memory of the data while training, in child processes: vaelab's memory-mapped uint8 path against
  the float32 in-memory path (the whole train split converted to float first, as vaelab held data before).

Aims (issue 11): from the second run on, an epoch at least 5x faster than the per-sample loop with the same model;
resident data memory within 1.2x of the uint8 size.

    python benchmarks/image_folder.py                 # 60,000 images; the folder and cache go to /tmp
    python benchmarks/image_folder.py --n 6000 --steps 40
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaelab import RunConfig, build_model, load_data
from vaelab.train import make_optimizer

SIDE = 64


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=60_000, help="PNG files in the folder (default %(default)s)")
    p.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "vaelab-image-folder-bench"))
    p.add_argument("--steps", type=int, default=100, help="training steps timed per contender and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the per-sample loop")
    p.add_argument("--child", help=argparse.SUPPRESS)  # memory measurement in a fresh process: uint8 | float32
    return p.parse_args()


def build_folder(root: Path, n: int) -> Path:
    """N PNGs of the shapes set in root/png/<shape>/NNNNN.png (made once; reused while N matches)."""
    folder = root / "png"
    stamp = folder / ".count"
    if stamp.is_file() and stamp.read_text() == str(n):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    shapes = load_data("shapes", cache_dir=str(root / "cache"))
    pixels = torch.cat([shapes.train.values, shapes.test.values]).numpy()  # (M, 3, 64, 64) uint8
    labels = torch.cat([shapes.y_train, shapes.y_test]).numpy()
    started = time.perf_counter()
    for i in range(n):
        j = i % len(pixels)
        sub = folder / shapes.label_names[labels[j]]
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[j].transpose(1, 2, 0)).save(sub / f"{i:05d}.png")
    stamp.write_text(str(n))
    print(f"wrote {n} PNGs of {SIDE}x{SIDE} RGB in {time.perf_counter() - started:.1f} s -> {folder}")
    return folder


class PngFolder(torch.utils.data.Dataset):
    """torchvision's ImageFolder + ToTensor, written out: every item opens and decodes its file."""

    def __init__(self, folder: Path):
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        self.items = [(f, c) for c, name in enumerate(classes) for f in sorted((folder / name).glob("*.png"))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        with Image.open(path) as image:
            array = np.array(image.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(array).permute(2, 0, 1).float().div(255), label


def step(model, optimizer, x: torch.Tensor) -> None:
    """One step of the negative ELBO, through the model's public interface (the same for both contenders)."""
    recon, kl_per_dim = model.loss_parts(x)[:2]
    loss = (recon + kl_per_dim.sum(1)).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def vaelab_steps(model, optimizer, data, steps: int, batch_size: int, seed: int) -> None:
    """`steps` training steps on batches gathered from the uint8 split (model None: the data path alone)."""
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    for s in range(steps):
        x = data.train.gather(order[s * batch_size : (s + 1) * batch_size])
        if model is not None:
            step(model, optimizer, x)


def loader_steps(model, optimizer, loader, steps: int) -> None:
    """`steps` training steps on the DataLoader's batches (model None: the data path alone)."""
    for s, (x, _) in enumerate(loader):
        if s == steps:
            break
        if model is not None:
            step(model, optimizer, x)


def time_loads(folder: Path, cache: Path) -> object:
    shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    load_data(str(folder), cache_dir=str(cache))
    first = time.perf_counter() - started
    started = time.perf_counter()
    data = load_data(str(folder), cache_dir=str(cache))
    second = time.perf_counter() - started
    print(f"vaelab load: first {first:.1f} s (decode into the cache), second {second:.2f} s (memory-mapped)")
    print(f"  {data.description}")
    return data


def time_epochs(args: argparse.Namespace, folder: Path, data) -> None:
    """Alternating rounds of `steps` batches per contender: training steps of the same model, and the data path
    alone (batches made, no model); images/s and the per-round ratios."""
    config = RunConfig(data=str(folder), z_dim=20)
    torch.manual_seed(0)
    model = build_model(config, data.image_shape)
    optimizer = make_optimizer(model, config.lr)
    loader = torch.utils.data.DataLoader(
        PngFolder(folder), batch_size=args.batch_size, shuffle=True, num_workers=args.workers, persistent_workers=True
    )
    contenders = {
        "vaelab train": lambda r: vaelab_steps(model, optimizer, data, args.steps, args.batch_size, r),
        "folder train": lambda r: loader_steps(model, optimizer, loader, args.steps),
        "vaelab data": lambda r: vaelab_steps(None, None, data, args.steps, args.batch_size, r),
        "folder data": lambda r: loader_steps(None, None, loader, args.steps),
    }
    names = list(contenders)
    print("round " + " ".join(f"{name + ' img/s':>18s}" for name in names) + "  train ratio  data ratio")
    ratios = {"train": [], "data": []}
    for r in range(args.rounds):
        rates = {}
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.perf_counter()
            contenders[name](r)
            rates[name] = args.steps * args.batch_size / (time.perf_counter() - started)
        for kind in ratios:
            ratios[kind].append(rates[f"vaelab {kind}"] / rates[f"folder {kind}"])
        print(
            f"{r + 1:5d} "
            + " ".join(f"{rates[name]:18,.0f}" for name in names)
            + f"  {ratios['train'][-1]:10.2f}x {ratios['data'][-1]:10.1f}x"
        )
    print(
        f"vaelab's speed-up over the ImageFolder loop, median of rounds: training {np.median(ratios['train']):.2f}x "
        f"(aim: 5x), data path alone {np.median(ratios['data']):.1f}x"
    )


def resident_bytes() -> int:
    """This process's resident memory now (file-backed pages of a memory map included)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child_memory(mode: str, folder: Path, cache: Path, steps: int, batch_size: int) -> None:
    """Train from the data in a fresh process, touching every training image once as an epoch does; print the
    largest resident memory seen above the process's memory before the data was read."""
    data = load_data(str(folder), cache_dir=str(cache))
    torch.manual_seed(0)
    model = build_model(RunConfig(data=str(folder)), data.image_shape)
    optimizer = make_optimizer(model, 1e-3)
    step(model, optimizer, data.test.gather(torch.arange(batch_size)))  # the model's own memory, before the data
    baseline = peak = resident_bytes()
    n = len(data.train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    x = data.train.floats() if mode == "float32" else None  # (N, C, H, W) float32, held whole as vaelab used to
    for s in range(0, n, batch_size):
        index = order[s : s + batch_size]
        batch = x.index_select(0, index) if x is not None else data.train.gather(index)
        if s // batch_size < steps:
            step(model, optimizer, batch)
        peak = max(peak, resident_bytes())
    print(json.dumps({"data_bytes": peak - baseline, "uint8_bytes": data.train.values.numel()}))


def time_memory(args: argparse.Namespace, folder: Path, cache: Path) -> None:
    results = {}
    for mode in ("uint8", "float32"):
        command = [sys.executable, __file__, "--child", mode, "--root", args.root, "--n", str(args.n)]
        command += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
        results[mode] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    uint8_size = results["uint8"]["uint8_bytes"]
    for mode, result in results.items():
        share = result["data_bytes"] / uint8_size
        print(
            f"peak resident memory of the data, {mode} path: {result['data_bytes'] / 2**20:,.0f} MiB = "
            f"{share:.2f}x the uint8 size ({uint8_size / 2**20:,.0f} MiB)"
        )
    print("aim: the uint8 path within 1.2x of the uint8 size (memory-mapped pages the kernel may also drop)")


def main() -> None:
    args = parse_args()
    root = Path(args.root)
    folder, cache = root / "png", root / "cache"
    if args.child:
        child_memory(args.child, folder, cache, args.steps, args.batch_size)
        return
    torch.set_num_threads(2)
    folder = build_folder(root, args.n)
    data = time_loads(folder, cache)
    time_epochs(args, folder, data)
    time_memory(args, folder, cache)


if __name__ == "__main__":
    main()
