"""Models side by side: train each with the same data, seed and budget (or take run folders), evaluate, tabulate.

A model spec is a family's name (``ae``, ``vae``, ``iwae``, ``cvae``, ``vamp``, ``vqvae``, ``beta-tcvae``), with
``:VALUE`` for its one setting (SPEC_PARAMETERS: ``beta-vae:B`` is the VAE with beta = B, ``iwae:5`` trains on
L_5), or the path of an existing run folder.
Output: ``OUT/<spec with ':' as '-'>`` run folders (each with its eval.json), ``OUT/comparison.json`` and
``OUT/comparison.md``. The rows are vaelab.measures' measures, with their names, directions and descriptions;
every one is reported as measured, and the better value is marked by the measure's fixed direction, never chosen
per comparison. Every spec is checked before anything is trained or written.
"""

from __future__ import annotations

import math
from pathlib import Path

from vaelab.atomic import atomic_write_bytes, atomic_write_json
from vaelab.config import MODELS, SPEC_HELP, SPEC_PARAMETERS, RunConfig
from vaelab.data import ImageData, check_matches, load_data_for
from vaelab.devices import Compute
from vaelab.errors import VaelabError
from vaelab.evaluate import evaluate_run
from vaelab.measures import MEASURES, format_value
from vaelab.models import check_likelihood_data
from vaelab.runs import Run, load_run, read_config
from vaelab.train import total_epochs, train


def comparison_rows(evals: dict[str, dict]) -> list[dict]:
    """One row per measure over the models' eval.json dicts; `best` is the unique best value's model, else None.

    A malformed evaluation (a section that is not an object, a value that is not a number) is a VaelabError.
    """
    rows = []
    for measure in MEASURES.values():
        values = {name: measure.read(evaluation, f"eval.json of {name}")[0] for name, evaluation in evals.items()}
        rows.append(
            {
                "metric": measure.key,
                "label": measure.label,
                "description": measure.description,
                "better": measure.better,
                "values": values,
                "best": _best(values, measure.better),
            }
        )
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
    """(folder name, RunConfig overrides) for a model spec, or (folder name, path) for an existing run folder.

    A family's name alone takes its defaults; NAME:VALUE sets the family's one setting of SPEC_PARAMETERS
    (beta-vae needs it: it is the VAE with beta = B)."""
    name, colon, value = spec.partition(":")
    if name in MODELS and not colon:
        return name, {"model": name}
    if name in SPEC_PARAMETERS and colon:
        model, key = SPEC_PARAMETERS[name]
        return spec.replace(":", "-"), {"model": model, key: _spec_value(spec, key, value)}
    path = Path(spec)
    if (path / "config.json").is_file():
        return path.name, path
    raise VaelabError(f"model spec {spec!r}: use {SPEC_HELP}, or the path of an existing run folder")


def _spec_value(spec: str, key: str, text: str) -> int | float:
    """The VALUE of NAME:VALUE as its field's type: a float >= 0 for beta, else an integer (its bounds are
    RunConfig's, checked when the configuration is validated)."""
    try:
        value = float(text) if key == "beta" else int(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        kind = "a finite number >= 0" if key == "beta" else "a positive integer"
        raise VaelabError(f"model spec {spec!r}: {key} must be {kind}, as in {spec.partition(':')[0]}:4")
    return value


def _train_or_reuse(config: RunConfig, run_dir: Path, progress: bool, compute: Compute):
    """Train into run_dir; a folder already holding this exact configuration is reused (resumed if short)."""
    if (run_dir / "checkpoint.json").exists():
        existing = read_config(run_dir)
        if existing != config:
            raise VaelabError(f"{run_dir}: holds a run with another configuration; choose another --out")
        run = load_run(run_dir)
        if run.epoch >= total_epochs(config):
            compute.prepare(run.model)
            return run
        return train(config, run_dir, resume=True, progress=progress, compute=compute)
    return train(config, run_dir, progress=progress, compute=compute)


def plan_models(specs: list[str], data: str | None, shared: dict) -> tuple[RunConfig, dict[str, RunConfig | Run]]:
    """(the shared settings, {model name: the configuration to train, or an existing run}) for model specs.

    Every spec is parsed, every configuration validated and every run folder loaded here, before anything is
    written, so that a bad spec leaves no folder behind. The data set is `data`, else the first run folder's.
    """
    if not specs:
        raise VaelabError("--models needs at least one model")
    parsed = [parse_spec(s) for s in specs]
    names = [name for name, _ in parsed]
    if len(set(names)) != len(names):
        raise VaelabError(f"model names must differ, got {', '.join(names)}")
    runs = {name: load_run(what) for name, what in parsed if isinstance(what, Path)}
    shared = {**shared, "data": data or (next(iter(runs.values())).config.data if runs else RunConfig().data)}
    base = RunConfig.from_dict(shared).validate()
    planned = {
        name: runs[name] if name in runs else RunConfig.from_dict({**shared, **what}).validate()
        for name, what in parsed
    }
    return base, planned


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
    compute: Compute | None = None,
) -> dict:
    """Train (or load) every model, evaluate each on one data set, write comparison.json and comparison.md.

    `compute`: the device, precision and compilation (default the CPU, fp32) of training and evaluation."""
    out = Path(out)
    compute = compute or Compute()
    shared, planned = plan_models(specs, data, {**(base or {}), "epochs": epochs, "seed": seed})
    image_data = load_data_for(shared, progress=progress)
    for what in planned.values():
        check_likelihood_data(what.config if isinstance(what, Run) else what, image_data.max_value, image_data.x_test)
    out.mkdir(parents=True, exist_ok=True)

    run_dirs, evals = {}, {}
    for name, what in planned.items():
        if isinstance(what, RunConfig):
            if progress:
                print(f"[compare] training {name} -> {out / name}", flush=True)
            run = _train_or_reuse(what, out / name, progress, compute)
        else:
            run = what
            compute.prepare(run.model)
        evaluation = _evaluate(
            run,
            name,
            image_data,
            k=k,
            skip_iwae=skip_iwae,
            skip_samples=skip_samples,
            n_samples=n_samples,
            seed=seed,
            progress=progress,
        )
        run_dirs[name], evals[name] = str(run.path), evaluation

    rows = comparison_rows(evals)
    settings = {
        "data": image_data.name,
        "epochs": epochs,
        "seed": seed,
        "k": k,
        "skip_iwae": skip_iwae,
        "skip_samples": skip_samples,
        "n_samples": n_samples,
        "base_config": base or {},
    }
    result = {"models": run_dirs, "rows": rows, "settings": settings}
    atomic_write_json(out / "comparison.json", result)
    atomic_write_bytes(out / "comparison.md", render_markdown(rows, evals, settings).encode())
    return result


def _evaluate(run: Run, name: str, data: ImageData, **options) -> dict:
    """evaluate_run of one model, written to its eval.json."""
    check_matches(data, run.model.image_shape, f"the model {name}")
    evaluation = evaluate_run(run, data, **options)
    atomic_write_json(Path(run.path) / "eval.json", evaluation)
    return evaluation


def _cell(row: dict, name: str, evaluation: dict) -> str:
    value, se = MEASURES[row["metric"]].read(evaluation, f"eval.json of {name}")
    text = format_value(value, se)
    return f"**{text}**" if value is not None and row["best"] == name else text


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
        lines.append(f"| {row['label']} | {row['better'] or '-'} | {cells} |")
    lines += ["", "## What each row measures", ""]
    for row in rows:
        direction = f"{row['better']} is better" if row["better"] else "no better direction"
        lines.append(f"- {row['label']} (`{row['metric']}`, {direction}): {row['description'].rstrip('.')}")
    lines += ["", "## How it was computed", ""]
    for name in names:
        notes = evals[name].get("notes", {})
        lines.append(
            f"- {name} ({evals[name].get('run')}): {notes.get('likelihood', '')}; "
            f"IWAE: {notes.get('nll_iwae_nats', '')}; bits/dim: {notes.get('bits_per_dim', 'not computed')}; "
            f"samples: {notes.get('samples', '')}."
        )
    return "\n".join(lines) + "\n"
