"""Models side by side: train each with the same data, seed and budget (or take run folders), evaluate, tabulate.

A model spec is ``ae``, ``vae``, ``beta-vae:B`` (the VAE with beta = B) or the path of an existing run folder.
Output: ``OUT/<spec with ':' as '-'>`` run folders (each with its eval.json), ``OUT/comparison.json`` and
``OUT/comparison.md``. Every metric is reported as measured; the better value is marked by a fixed direction
per metric, never chosen per comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

from vaelab.config import RunConfig
from vaelab.errors import VaelabError
from vaelab.atomic import atomic_write_bytes, atomic_write_json

# (section of eval.json, metric, better, what it measures). better=None: a property, not a quality.
METRICS = [
    ("generation", "nll_iwae_nats", "lower",
     "-L_K, Burda et al.'s importance-weighted bound with K samples (see notes): an upper bound on -log p(x), nats per test image (VAE only)"),
    ("generation", "neg_elbo_nats", "lower",
     "negative ELBO, -log p(x|z) with one z ~ q(z|x) + KL(q(z|x) || N(0, I)), beta = 1, nats per test image (VAE only)"),
    ("generation", "kl_nats", None,
     "KL(q(z|x) || N(0, I)) per test image, nats: the information the code carries about x (a rate)"),
    ("generation", "test_loss", None,
     "each model's own training objective on the test split (AE: squared error; VAE: recon + beta*kl): not comparable across models"),
    ("generation", "recon_sq_error", "lower",
     "||x - d(mu(x))||² summed over pixels, the decoded code of each test image against the image: reconstruction quality"),
    ("generation", "classifier_test_accuracy", None,
     "test accuracy of the data set's CNN classifier whose features the sample metrics use (the same for every model)"),
    *[
        row
        for sampler, where in (("prior", "z ~ N(0, I)"), ("fitted", "z ~ a Gaussian fitted to the training codes"))
        for row in (
            ("generation", f"fd_{sampler}", "lower",
             f"Frechet distance between classifier features of test images and of decoded {where} (FD, not Inception's FID)"),
            ("generation", f"precision_{sampler}", "higher",
             f"share of decoded {where} inside the k-NN manifold (k=3) of test images: are samples realistic?"),
            ("generation", f"recall_{sampler}", "higher",
             f"share of test images inside the k-NN manifold (k=3) of decoded {where}: is the data's variety covered?"),
            ("generation", f"confidence_{sampler}", "higher",
             f"the classifier's mean top-class probability on decoded {where}: do samples look like some class?"),
            ("generation", f"class_entropy_nats_{sampler}", "higher",
             f"entropy of the classifier's predicted-class histogram on decoded {where}, nats (log C when all classes appear equally)"),
        )
    ],
    ("latent", "knn_accuracy", "higher", "test accuracy of a 5-NN vote among training codes mu(x): do similar images lie close?"),
    ("latent", "linear_probe_accuracy", "higher", "test accuracy of logistic regression on training codes: are classes linearly separable?"),
    ("latent", "silhouette", "higher", "silhouette of test codes grouped by label, in [-1, 1]: tight and separate classes score high"),
    ("latent", "neighbourhood_agreement", "higher", "share of each test code's 10 nearest codes with its label"),
    ("latent", "active_units", None, "latent dimensions with Cov_x(mu_d(x)) > 0.01 (Burda et al. 2016): capacity in use"),
    ("latent", "interp_evenness", "lower",
     "max step / mean step between 16 decoded points on the latent line between test images of different classes (1: even)"),
    ("latent", "interp_straightness", "lower",
     "decoded path length / endpoint distance along those lines, in pixel space (1: no detour)"),
]


def comparison_rows(evals: dict[str, dict]) -> list[dict]:
    """One row per metric over the models' eval.json dicts; `best` is the unique best value's model, else None."""
    rows = []
    for section, metric, better, description in METRICS:
        values = {name: evaluation.get(section, {}).get(metric) for name, evaluation in evals.items()}
        rows.append({"metric": metric, "description": description, "better": better,
                     "values": values, "best": _best(values, better)})
    return rows


def _best(values: dict[str, float | None], better: str | None) -> str | None:
    present = {name: v for name, v in values.items() if v is not None}
    if better is None or len(present) < 2:
        return None
    pick = max if better == "higher" else min
    top = pick(present.values())
    winners = [name for name, v in present.items() if v == top]
    return winners[0] if len(winners) == 1 else None


def parse_spec(spec: str) -> tuple[str, dict | Path]:
    """(folder name, RunConfig overrides) for a model spec, or (folder name, path) for an existing run folder."""
    if spec == "ae":
        return "ae", {"model": "ae"}
    if spec == "vae":
        return "vae", {"model": "vae"}
    if spec.startswith("beta-vae:"):
        try:
            beta = float(spec.split(":", 1)[1])
        except ValueError:
            raise VaelabError(f"model spec {spec!r}: beta must be a number, as in beta-vae:4") from None
        return spec.replace(":", "-"), {"model": "vae", "beta": beta}
    path = Path(spec)
    if (path / "config.json").is_file():
        return path.name, path
    raise VaelabError(f"model spec {spec!r}: use ae, vae, beta-vae:B or the path of an existing run folder")


def _train_or_reuse(config: RunConfig, run_dir: Path, progress: bool):
    """Train into run_dir; a folder already holding this exact configuration is reused (resumed if short)."""
    from vaelab.runs import load_run, read_config
    from vaelab.train import train

    if (run_dir / "checkpoint.json").exists():
        existing = read_config(run_dir)
        if existing != config:
            raise VaelabError(f"{run_dir}: holds a run with another configuration; choose another --out")
        run = load_run(run_dir)
        if run.epoch >= config.epochs:
            return run
        return train(config, run_dir, resume=True, progress=progress)
    return train(config, run_dir, progress=progress)


def compare(
    specs: list[str],
    out: str | Path,
    data: str | None = None,
    epochs: int = 20,
    seed: int = 0,
    base: dict | None = None,
    k: int = 1000,
    skip_iwae: bool = False,
    skip_samples: bool = False,
    n_samples: int | None = None,
    progress: bool = False,
) -> dict:
    """Train (or load) every model, evaluate each on one data set, write comparison.json and comparison.md."""
    from vaelab.data import check_matches, load_data
    from vaelab.evaluate import evaluate_run
    from vaelab.runs import load_run

    if not specs:
        raise VaelabError("--models needs at least one model")
    out = Path(out)
    parsed = [parse_spec(s) for s in specs]
    names = [name for name, _ in parsed]
    if len(set(names)) != len(names):
        raise VaelabError(f"model names must differ, got {', '.join(names)}")
    paths = [p for _, p in parsed if isinstance(p, Path)]
    data_name = data or (load_run(paths[0]).config.data if paths else RunConfig().data)
    base_config = {**(base or {}), "data": data_name, "epochs": epochs, "seed": seed}
    first = RunConfig.from_dict({**base_config}).validate()
    image_data = load_data(data_name, first.download, first.data_cache)
    out.mkdir(parents=True, exist_ok=True)

    run_dirs, evals = {}, {}
    for name, what in parsed:
        if isinstance(what, Path):
            run = load_run(what)
        else:
            config = RunConfig.from_dict({**base_config, **what}).validate()
            if progress:
                print(f"[compare] training {name} -> {out / name}", flush=True)
            run = _train_or_reuse(config, out / name, progress)
        check_matches(image_data, run.model.image_shape, f"the model {name}")
        evaluation = evaluate_run(run, image_data, k=k, skip_iwae=skip_iwae, skip_samples=skip_samples,
                                  n_samples=n_samples, seed=seed, progress=progress)
        atomic_write_json(Path(run.path) / "eval.json", evaluation)
        run_dirs[name], evals[name] = str(run.path), evaluation

    rows = comparison_rows(evals)
    settings = {"data": image_data.name, "epochs": epochs, "seed": seed, "k": k, "skip_iwae": skip_iwae,
                "skip_samples": skip_samples, "n_samples": n_samples, "base_config": base or {}}
    result = {"models": run_dirs, "rows": rows, "settings": settings}
    atomic_write_json(out / "comparison.json", result)
    atomic_write_bytes(out / "comparison.md", render_markdown(rows, evals, settings).encode())
    return result


def _cell(row: dict, name: str, evaluation: dict) -> str:
    value = row["values"][name]
    if value is None:
        return "n/a"
    se = _find(evaluation, f"{row['metric']}_se")
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    if se is not None:
        text += f" ± {se:.2g}"
    return f"**{text}**" if row["best"] == name else text


def _find(evaluation: dict, key: str):
    for section in ("generation", "latent"):
        if key in evaluation.get(section, {}):
            return evaluation[section][key]
    return None


def render_markdown(rows: list[dict], evals: dict[str, dict], settings: dict) -> str:
    """comparison.md: one column per model, one row per metric, the best in bold, then what each row means."""
    names = list(evals)
    lines = [
        f"# {' vs '.join(names)} on {settings['data']}",
        "",
        f"Same data, seed ({settings['seed']}) and budget ({settings['epochs']} epochs) for every model trained here. "
        "Bold: the better value by the row's fixed direction (none when tied or when the row has no better "
        "direction); ± is the standard error over test images. n/a: not applicable to that model or not computed.",
        "",
        "| metric | better | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for row in rows:
        cells = " | ".join(_cell(row, name, evals[name]) for name in names)
        lines.append(f"| {row['metric']} | {row['better'] or '-'} | {cells} |")
    lines += ["", "## What each row measures", ""]
    for row in rows:
        direction = f"{row['better']} is better" if row["better"] else "no better direction"
        lines.append(f"- `{row['metric']}` ({direction}): {row['description'].rstrip('.')}")
    lines += ["", "## How it was computed", ""]
    for name in names:
        notes = evals[name].get("notes", {})
        lines.append(f"- {name} ({evals[name].get('run')}): {notes.get('likelihood', '')}; "
                     f"IWAE: {notes.get('nll_iwae_nats', '')}; samples: {notes.get('samples', '')}.")
    return "\n".join(lines) + "\n"
