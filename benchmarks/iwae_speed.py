"""The importance-weighted bound three ways, side by side in one run: two per-image loops vs vaelab's iwae_bound.

- replicated loop: pythae's VAE.get_nll: per image, chunks of 100 samples, each chunk encoding 100 copies of
  the image, decoding to sigmoid probabilities and scoring them with binary_cross_entropy. The encoder runs
  once per sample, so it costs as much as the decoder. (pythae drops the remainder of K / 100 and draws 100
  samples when K < 100; here the last chunk is smaller, so all three estimate the same L_K.)
- per-image loop: encode the image once, draw its K samples, decode them as one batch from logits.
- vaelab: decodes about 1024 rows at a time: several images' samples when K is small, slices of one image's
  K samples when K is large, so the logits stay in cache.

All give the same bound up to Monte Carlo noise; the script prints the means, the seconds of each and the ratios.

    python benchmarks/iwae_speed.py --run runs/fvae --data fashion-mnist --k 1000        # full size
    python benchmarks/iwae_speed.py --k 50 --n 200                                          # small, trains a tiny VAE
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from vaelab import RunConfig, load_data, load_run, train
from vaelab.bounds import iwae_bound, log_importance_weights
from vaelab.data import training_targets


@torch.no_grad()
def per_image_loop(model, x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """One image at a time, encoded once, its K samples decoded as one batch from logits.  # (B,)"""
    out = torch.empty(len(x), dtype=torch.float64)
    for i in range(len(x)):
        mu, logvar = model.encode(x[i : i + 1])  # (1, Z)
        z = mu + torch.exp(0.5 * logvar) * torch.randn((k, model.z_dim), generator=generator)  # (K, Z)
        logits = model.decode(z)  # (K, C, H, W)
        log_lik = model.log_likelihood(logits, x[i : i + 1].expand_as(logits))  # (K,)
        log_w = log_importance_weights(log_lik, model.prior.log_prob(z), z, mu, logvar)  # (K,)
        out[i] = torch.logsumexp(log_w.double(), 0) - math.log(k)
    return out


@torch.no_grad()
def replicated_loop(model, x: torch.Tensor, k: int, generator: torch.Generator, batch_size: int = 100) -> torch.Tensor:
    """pythae's get_nll for one K: each chunk of samples encodes as many copies of the image.  # (B,)"""
    out = torch.empty(len(x), dtype=torch.float64)
    for i in range(len(x)):
        log_w = []
        for k_start in range(0, k, batch_size):
            rows = min(batch_size, k - k_start)
            mu, logvar = model.encode(torch.cat(rows * [x[i : i + 1]]))  # (rows, Z), all rows alike
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)
            probs = model.decode_mean(z).flatten(1)  # (rows, D)
            log_lik = -F.binary_cross_entropy(probs, x[i : i + 1].flatten(1).expand_as(probs), reduction="none")
            log_w.append(log_importance_weights(log_lik.sum(1), model.prior.log_prob(z), z, mu, logvar))
        out[i] = torch.logsumexp(torch.cat(log_w).double(), 0) - math.log(k)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a trained VAE run folder (default: train a tiny VAE on --data first)")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--n", type=int, default=0, help="test images to use (0 = all)")
    parser.add_argument("--slices", type=int, default=10, help="turns the contenders take, rotating")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run:
        run = load_run(args.run, expect_kind="vae")
    else:
        import tempfile

        config = RunConfig(data=args.data, epochs=1, seed=0)
        run = train(config, tempfile.mkdtemp(prefix="iwae_speed_"), progress=False)
    data = load_data(args.data, run.config.download, run.config.data_cache)
    x = training_targets(run.config, data)[1][: args.n or None]  # the test images as the encoder saw them
    print(
        f"data {data.name}: {len(x)} test images, K={args.k}, {torch.get_num_threads()} torch threads, "
        f"model hidden={run.config.hidden} z_dim={run.config.z_dim}"
    )
    # The machine's speed drifts within a minute, so the contenders take turns on slices of the images and each
    # slice's timings give one ratio per baseline; every contender keeps its own random stream across slices.
    contenders = {"replicated loop": replicated_loop, "per-image loop": per_image_loop, "vaelab iwae_bound": iwae_bound}
    generators = {name: torch.Generator().manual_seed(0) for name in contenders}
    seconds = {name: 0.0 for name in contenders}
    bounds = {name: [] for name in contenders}
    ratios = {name: [] for name in list(contenders)[:-1]}
    slice_size = math.ceil(len(x) / args.slices)
    for i, start in enumerate(range(0, len(x), slice_size)):
        xs = x[start : start + slice_size]
        took = {}
        names = list(contenders)
        for name in names[i % len(names) :] + names[: i % len(names)]:
            started = time.perf_counter()
            bounds[name].append(contenders[name](run.model, xs, args.k, generator=generators[name]))
            took[name] = time.perf_counter() - started
            seconds[name] += took[name]
        for name, r in ratios.items():
            r.append(took[name] / took["vaelab iwae_bound"])
    for name in contenders:
        bound = torch.cat(bounds[name])
        se = bound.std().item() / math.sqrt(len(bound))
        print(f"{name:>18}: {seconds[name]:8.2f} s   mean bound {bound.mean().item():.3f} +- {se:.3f} nats/image")
    for name, r in ratios.items():
        print(
            f"speed-up over the {name}: {seconds[name] / seconds['vaelab iwae_bound']:.2f}x in total, "
            f"{statistics.median(r):.2f}x median of {len(r)} slices (range {min(r):.2f}-{max(r):.2f})"
        )


if __name__ == "__main__":
    main()
