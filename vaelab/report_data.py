"""The numbers behind the report, read and judged (no HTML): the inputs checked, the comparison with its standard
errors, training times, which runs stand for "the AE" and "the VAE", and whether the lecture's two claims held,
judged from the comparison's numbers (never written in advance).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from vaelab.compare import comparison_rows
from vaelab.errors import VaelabError
from vaelab.figures import RunView


@dataclass
class Comparison:
    """The table's rows (comparison.json's), the run behind each column, and its eval.json for standard errors."""

    rows: list[dict]
    columns: dict[str, RunView]
    evals: dict[str, dict]
    settings: dict | None = None


def resolve_inputs(paths: list[Path]) -> tuple[list[Path], dict | None]:
    """Run folders, and the checked comparison.json when one path is a compare folder (whose runs are used)."""
    if not paths:
        raise VaelabError("name at least one run folder or compare folder")
    run_paths: list[Path] = []
    comparison = None
    for path in paths:
        if not path.is_dir():
            raise VaelabError(f"{path}: no such run folder")
        if (path / "comparison.json").is_file():
            if comparison is not None:
                raise VaelabError(f"{path}: only one compare folder can go into a report")
            comparison = check_comparison(_read_json(path / "comparison.json"), path / "comparison.json")
            comparison["models"] = {name: _relative_to(path, Path(run)) for name, run in comparison["models"].items()}
            run_paths += comparison["models"].values()
        else:
            run_paths.append(path)
    return run_paths, comparison


def check_comparison(data, path: Path) -> dict:
    """comparison.json as `vaelab compare` writes it, or VaelabError saying which part is wrong."""

    def wrong(what: str) -> VaelabError:
        return VaelabError(f"{path}: {what}; write it again with vaelab compare")

    if not isinstance(data, dict):
        raise wrong(f"expected a JSON object, found {type(data).__name__}")
    models, rows = data.get("models"), data.get("rows")
    if not isinstance(models, dict) or not models or not all(isinstance(v, str) for v in models.values()):
        raise wrong("'models' must map each model's name to its run folder")
    if not isinstance(rows, list):
        raise wrong("'rows' must be a list of metric rows")
    for i, row in enumerate(rows):
        if not (
            isinstance(row, dict)
            and isinstance(row.get("metric"), str)
            and isinstance(row.get("description", ""), str)
            and row.get("better") in (None, "higher", "lower")
            and isinstance(row.get("values"), dict)
            and all(v is None or is_number(v) for v in row["values"].values())
            and all(isinstance(b, str) for b in best_names(row.get("best")))
        ):
            raise wrong(
                f"row {i} needs 'metric' (text), 'better' (higher, lower or null), 'values' (numbers or "
                "null by model) and 'best' (a model's name or null)"
            )
    if not isinstance(data.get("settings", {}), dict):
        raise wrong("'settings' must be an object")
    return data


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def best_names(best) -> list:
    """A row's best model(s): `best` is a name, a list of names (ties, older files) or None."""
    return [] if best is None else best if isinstance(best, list) else [best]


def _relative_to(folder: Path, run: Path) -> Path:
    """A run path recorded in comparison.json: as written if it exists, else relative to the compare folder."""
    return run if run.is_absolute() or run.is_dir() else folder / run


def _read_json(path: Path):
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON, too many digits
        raise VaelabError(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:200]})") from None


def read_comparison(views: list[RunView], compared: dict | None) -> Comparison | None:
    """The compare folder's table over its runs, else the runs' eval.json files tabulated; None without either."""
    if compared is not None:
        by_path = {view.run.path: view for view in views}
        columns = {name: by_path[path] for name, path in compared["models"].items()}
        rows, settings = compared["rows"], compared.get("settings")
    else:
        columns = {view.name: view for view in views if (view.run.path / "eval.json").is_file()}
        rows, settings = None, None
    evals = {}
    for name, view in columns.items():
        if (view.run.path / "eval.json").is_file():
            evaluation = _read_json(view.run.path / "eval.json")
            if not isinstance(evaluation, dict):
                raise VaelabError(f"{view.run.path / 'eval.json'}: expected a JSON object; run vaelab evaluate again")
            evals[name] = evaluation
    if not columns:
        return None
    return Comparison(rows if rows is not None else comparison_rows(evals), columns, evals, settings)


def standard_error(evaluation: dict | None, metric: str) -> float | None:
    """The `<metric>_se` entry of an eval.json dict (in whichever section holds it), or None."""
    for section in (evaluation or {}).values():
        if isinstance(section, dict) and is_number(section.get(f"{metric}_se")):
            return section[f"{metric}_se"]
    return None


def training_seconds(view: RunView) -> float | None:
    """Seconds spent training the run: the sum of its history's per-epoch 'seconds', None where one is missing."""
    seconds = [row.get("seconds") if isinstance(row, dict) else None for row in view.run.history]
    if not seconds or not all(is_number(s) and math.isfinite(s) and s >= 0 for s in seconds):
        return None
    return float(sum(seconds))


# ----- the summary's judgements -----

NOISE_SES = 2.0  # a difference within this many combined standard errors counts for neither model


@dataclass(frozen=True)
class Claim:
    text: str
    metrics: tuple[str, ...]  # comparison rows that test it; each row carries its own better direction
    missing: str  # why none was measured, and what to run


CLAIMS = (
    Claim(
        "a VAE's random latent points z ~ N(0, I) decode to images of the data's classes far more often than an AE's",
        ("confidence_prior", "precision_prior", "fd_prior"),
        "the sample measures were skipped (run vaelab evaluate without --skip-samples)",
    ),
    Claim(
        "a VAE's latent space is more regular: the images decoded along a line between two codes change more evenly",
        ("interp_evenness", "interp_straightness"),
        "the interpolation measures were skipped (run vaelab evaluate without --skip-latent)",
    ),
)


def main_vae(views: list[RunView]) -> RunView | None:
    """The run that stands for "the VAE": the first VAE with beta = 1, else the first VAE, else None."""
    vaes = [view for view in views if view.model.kind == "vae"]
    plain = [view for view in vaes if view.run.config.beta == 1]
    return (plain or vaes or [None])[0]


def main_ae(views: list[RunView], vae: RunView | None) -> RunView | None:
    """The AutoEncoder to set against `vae`: the first with the same latent size, else the first AE, else None."""
    aes = [view for view in views if view.model.kind == "ae"]
    same = [view for view in aes if vae is not None and view.model.z_dim == vae.model.z_dim]
    return (same or aes or [None])[0]


def measure_verdict(vae: float, ae: float, better: str | None, se_vae: float | None, se_ae: float | None) -> int:
    """+1 when the VAE's value is better by the row's direction, -1 when the AE's is, 0 when the row has no
    direction or the difference is within NOISE_SES standard errors of a difference, sqrt(se_vae² + se_ae²)."""
    if better not in ("higher", "lower") or vae == ae:
        return 0
    if se_vae is not None and se_ae is not None and abs(vae - ae) <= NOISE_SES * math.hypot(se_vae, se_ae):
        return 0
    return 1 if (vae > ae) == (better == "higher") else -1


def claim_verdict(comparisons: list[tuple[float, float, str | None, float | None, float | None]]) -> tuple[str, str]:
    """(status, verdict) over a claim's measures, each (vae, ae, better, se_vae, se_ae); status "held" when the VAE
    is better on some and worse on none, "failed" when the reverse, else "open" (mixed, or all within noise)."""
    verdicts = [measure_verdict(*c) for c in comparisons]
    wins, losses = verdicts.count(1), verdicts.count(-1)
    if wins and not losses:
        return "held", f"Held: the VAE is better on {wins} of {len(verdicts)} measures"
    if losses and not wins:
        return "failed", f"Did not hold: the AE is better on {losses} of {len(verdicts)} measures"
    if wins and losses:
        return "open", f"Mixed: the VAE is better on {wins} of {len(verdicts)} measures, the AE on {losses}"
    return "open", f"Not shown: the differences are within {NOISE_SES:g} standard errors"
