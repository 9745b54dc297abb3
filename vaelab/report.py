"""One self-contained HTML report of several runs: a summary, the comparison, the runs, every figure, explorers.

Nothing in the page points outside it: figures are PNG data: URIs, the style sheet is inline, and the latent
explorers (vaelab.explorer) carry their decoders as inline data. It reads on a phone: a viewport meta tag,
figures that shrink to the screen, and tables that turn into one block per row on narrow screens, so at
400 px nothing scrolls sideways.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from vaelab import plots
from vaelab.atomic import atomic_write_bytes
from vaelab.config import FAMILY_FIELDS
from vaelab.devices import Compute
from vaelab.errors import VaelabError
from vaelab.explorer import DecoderNotShowable, explorer_html
from vaelab.figures import FigureOptions, RunView, make_figure, open_runs, why_not
from vaelab.measures import MEASURES
from vaelab.report_data import (
    CLAIMS,
    Claim,
    Comparison,
    best_names,
    claim_verdict,
    is_number,
    main_ae,
    main_vae,
    read_comparison,
    resolve_inputs,
    standard_error,
    training_seconds,
)


@dataclass(frozen=True)
class Section:
    kind: str  # a vaelab.figures kind
    heading: str
    caption: str  # what the lecture says one should see


SECTIONS = (
    Section(
        "latent",
        "Latent space: AutoEncoder and VAE side by side",
        "Each dot is one test image, placed at its code (AE) or at its posterior mean μ(x) (VAE), coloured by "
        "its label; latents with more than two dimensions are projected onto their two principal components. "
        "This is the lecture's central picture. Both models group images of the same class, but only the VAE "
        "is asked to keep its codes near the prior N(0, I): its cloud sits around the origin, roughly within "
        "two or three units, without large empty gaps. The AE's codes live wherever the decoder finds them "
        "useful, at any scale and with holes between the classes, so a random point need not decode to anything.",
    ),
    Section(
        "posterior",
        "Each image is a distribution",
        "For a VAE with a 2-D latent, each ellipse is one test image's posterior q(z|x) = N(μ(x), diag σ²(x)), "
        "drawn one standard deviation wide, over the prior N(0, I) (grey, with circles at 1, 2 and 3σ). The "
        "encoder does not map an image to a point but to a small cloud; the KL term keeps the clouds from "
        "shrinking to points and pulls them towards the prior, so together they cover it and neighbouring "
        "clouds overlap. That overlap is why points between two codes still decode to sensible images.",
    ),
    Section(
        "manifold",
        "The learned manifold",
        "Kingma & Welling (2014), figure 4: the 2-D latent decoded on a grid whose coordinates are quantiles of "
        "the prior (from 5% to 95% on each axis), so each tile covers the same prior probability. A VAE's grid "
        "changes smoothly from one class to the next and every tile looks like a digit. The AutoEncoder has no "
        "prior, and its codes may lie far from N(0, I): its grid spans the 5% to 95% range of its own test codes "
        "on each axis (see its axis labels), so its panel shows the region its codes fill, where the gaps between "
        "classes may decode to images that are no digit.",
    ),
    Section(
        "samples",
        "Samples from the prior",
        "Images decoded from z drawn from N(0, I). This is how a VAE generates: its samples look like blurry "
        "but recognisable digits. The AutoEncoder was never trained to make N(0, I) meaningful, so its "
        "'samples' (the lecture's random latent points) are often smudges that are not digits. A VQ-VAE has no "
        "Gaussian prior: it draws a grid of codes from its autoregressive code prior, fitted to the training "
        "images' codes after the autoencoder, and decodes their codebook vectors.",
    ),
    Section(
        "classes",
        "One row per class (conditional models)",
        "A conditional model (Sohn et al. 2015's CVAE) decodes z with the class y it is asked for: each row is "
        "one class, each column one draw z ~ N(0, I) decoded as every class in turn. When the label controls "
        "the class, every row shows its own class, and a column keeps what z carries (stroke, slant, width).",
    ),
    Section(
        "recon",
        "Reconstructions",
        "Test images (odd rows) over their reconstructions d(μ(x)) (even rows). Both models reconstruct; the "
        "AE, which spends all its capacity on reconstruction, is usually sharper, while the VAE pays for its "
        "organised latent space with some blur.",
    ),
    Section(
        "interp",
        "Interpolation between test images",
        "Each row decodes points on the straight line from the code of test image A to that of test image B. "
        "In the VAE the path crosses regions the prior covers, so the intermediate images tend to morph "
        "smoothly; in the AE the line may cross empty regions and give implausible images in between.",
    ),
    Section(
        "curves",
        "Training curves",
        "Loss per epoch on the training set (solid) and the test set (dashed), with its two parts. For the VAE "
        "the loss is the negative ELBO in nats per image: reconstruction -log p(x|z) plus β times KL(q(z|x) ‖ "
        "p(z)). Typically reconstruction falls while the KL rises as the encoder starts to use the latent "
        "space. The AE's loss is the squared error summed over pixels, in other units, and has no KL term.",
    ),
    Section(
        "kl",
        "KL per latent dimension",
        "The mean KL(q(z_u|x) ‖ N(0, 1)) of each latent dimension u over the test set: the nats of information "
        "the dimension carries about the image. Dimensions whose KL is near zero have collapsed to the prior "
        "(posterior collapse) and are ignored by the decoder; coloured bars are active units, grey hatched ones "
        "inactive (the variance of μ_u(x) over the test images is at most 0.01, Burda et al. 2016).",
    ),
)

STYLE = """
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, 'DejaVu Sans', sans-serif; color: #222; margin: 0 auto; padding: 12px;
  max-width: 1100px; overflow-wrap: anywhere; }
h1 { font-size: 1.6em; margin: 0.4em 0; } h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
nav ul { padding-left: 1.2em; } a { color: #0055aa; }
figure { margin: 1em 0; } figure img { display: block; max-width: 100%; height: auto; margin: 0.3em 0; }
figcaption { color: #444; font-size: 0.95em; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.9em; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { background: #e6f2e6; font-weight: 700; }
th.metric { min-width: 12em; max-width: 30em; }
.desc { display: block; font-weight: 400; color: #555; font-size: 0.9em; }
.se { color: #666; font-weight: 400; white-space: nowrap; }
.note { color: #666; font-size: 0.9em; }
.held { color: #1a6b1a; } .failed { color: #a02020; } .open { color: #8a5a00; }
details { margin: 0.6em 0; } summary { cursor: pointer; }
dl.shared { display: grid; grid-template-columns: max-content 1fr; gap: 0 1em; margin: 0.5em 0; }
dl.shared dt { font-weight: 600; } dl.shared dd { margin: 0; }
code { font-size: 0.95em; }
/* Narrow screens: each table row becomes a block whose cells name their column, so nothing scrolls sideways. */
@media (max-width: 700px) {
  table.stack, table.stack tbody, table.stack tr, table.stack th, table.stack td { display: block; width: 100%; }
  table.stack thead { display: none; }
  table.stack tr { border: 1px solid #ccc; margin-bottom: 0.6em; }
  table.stack th, table.stack td { border: none; max-width: none; }
  table.stack td { text-align: left; }
  table.stack td[data-label]::before { content: attr(data-label) ": "; font-weight: 400; color: #555; }
}
"""


def write_report(
    paths: list[str | Path],
    out: str | Path,
    data_source: str | None = None,
    explorers: str = "auto",
    compute: Compute | None = None,
) -> None:
    """Write the report of run folders, or of a `vaelab compare` folder (holding comparison.json), to `out`.

    explorers: which runs get a live latent explorer, one of EXPLORERS; compute: the models' device (default CPU).
    """
    check_explorers(explorers)
    out = plots.check_output_path(out, ".html")
    run_paths, compared = resolve_inputs([Path(p) for p in paths])
    views = open_runs(run_paths, data_source, compute)
    comparison = read_comparison(views, compared)
    atomic_write_bytes(out, build_report(views, comparison, explorers=explorers).encode("utf-8"))


# ----- which runs get a live explorer -----

EXPLORERS = ("auto", "all", "2d", "none")  # the choices of `vaelab report --explorers`


def check_explorers(choice: str) -> None:
    if choice not in EXPLORERS:
        raise VaelabError(f"--explorers must be one of {', '.join(EXPLORERS)}; got {choice!r}")


def explorer_views(views: list[RunView], choice: str) -> list[RunView]:
    """The runs that get a live explorer, in report order: auto, the 2-D runs and the main VAE
    (report_data.main_vae); all; 2d, the 2-D runs; none."""
    check_explorers(choice)
    if choice == "none":
        return []
    if choice == "all":
        return list(views)
    main = main_vae(views) if choice == "auto" else None
    return [view for view in views if view.model.z_dim == 2 or view is main]


# ----- the page -----


def build_report(views: list[RunView], comparison: Comparison | None, explorers: str = "auto") -> str:
    """The whole page as a string."""
    body = [
        f"<h1>vaelab report: {html.escape(', '.join(v.name for v in views))}</h1>",
        f'<p class="note">Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Everything is inside this '
        "one file; it needs no network.</p>",
    ]
    contents = [("summary", "Summary"), ("comparison", "Comparison"), ("runs", "Runs and their configurations")]
    sections = []
    for section in SECTIONS:
        fitting = [v for v in views if why_not(section.kind, v) is None]
        if fitting:
            sections.append((section, fitting))
            contents.append((section.kind, section.heading))
    explored = explorer_views(views, explorers)
    if explored:
        contents.append(("explorer", "Live latent explorer"))
    body.append(
        "<nav><ul>" + "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in contents) + "</ul></nav>"
    )
    body.append(_summary_section(views, comparison))
    body.append(_comparison_section(comparison))
    body.append(_runs_section(views))
    for section, fitting in sections:
        body.append(_figure_section(section, fitting))
    if explored:
        body.append(_explorer_section(explored, len(views)))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>vaelab report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _summary_section(views: list[RunView], comparison: Comparison | None) -> str:
    """What was trained, the headline numbers, and whether the lecture's two claims held, from the table."""
    trained = "; ".join(f"<b>{html.escape(v.name)}</b> ({html.escape(_describe(v))})" for v in views)
    data = sorted({v.data.name for v in views})
    items = [f"<li>{len(views)} run{'s' if len(views) > 1 else ''} on {html.escape(', '.join(data))}: {trained}.</li>"]
    if comparison is None:
        items.append(
            "<li>No evaluation yet, so the lecture's claims are not tested here: run "
            "<code>vaelab evaluate RUN</code> on each run (or <code>vaelab compare</code>).</li>"
        )
        return f'<section id="summary"><h2>Summary</h2><ul>{"".join(items)}</ul></section>'
    runs = list(comparison.columns.values())
    vae_run = main_vae(runs)
    vae, ae = (_column(comparison, run) for run in (vae_run, main_ae(runs, vae_run)))
    headline = _headline(comparison, [name for name in (vae, ae) if name is not None])
    if headline:
        items.append(f"<li>Headline: {headline}.</li>")
    for number, claim in enumerate(CLAIMS, 1):
        items.append(
            f"<li><b>The lecture's claim {number}</b>: {html.escape(claim.text)}. "
            f"{_claim_verdict(claim, comparison, ae, vae)}</li>"
        )
    return f'<section id="summary"><h2>Summary</h2><ul>{"".join(items)}</ul></section>'


def _column(comparison: Comparison, view: RunView | None) -> str | None:
    """The name of the table column whose run is `view`, or None."""
    return next((name for name, run in comparison.columns.items() if run is view), None)


def _describe(view: RunView) -> str:
    config = view.run.config
    # beta weights a KL term; the AE has none, and IWAE's bound L_K none apart (RunConfig refuses beta there).
    beta = f", β = {config.beta:g}" if view.model.kind not in ("ae", "iwae") else ""
    own = "".join(
        f", {name} = {getattr(config, name)}" for name, model in FAMILY_FIELDS.items() if model == config.model
    )
    return (
        f"{view.model.kind.upper()}, {view.model.z_dim}-D latent{beta}{own}, {view.run.epoch} epochs, "
        f"trained in {_duration(training_seconds(view))}"
    )


HEADLINE_METRICS = ("nll_iwae_nats", "neg_elbo_nats", "bits_per_dim_iwae", "recon_sq_error", "knn_accuracy")


def _headline(comparison: Comparison, names: list[str]) -> str:
    """The main VAE's and AE's values of HEADLINE_METRICS, where measured."""
    parts = []
    for row in comparison.rows:
        if row["metric"] not in HEADLINE_METRICS:
            continue
        values = [
            f"{html.escape(n)} {_value_text(row, n, comparison)}" for n in names if row["values"].get(n) is not None
        ]
        if values:
            parts.append(f"{html.escape(_metric_name(row['metric']))}: {', '.join(values)}")
    return "; ".join(parts)


def _claim_verdict(claim: Claim, comparison: Comparison, ae: str | None, vae: str | None) -> str:
    """Whether the claim held for the columns `vae` against `ae`, and the numbers it was judged on, as HTML."""
    if ae is None or vae is None:
        return '<span class="open">Not tested: the table needs an AutoEncoder and a VAE.</span>'
    rows = {row["metric"]: row for row in comparison.rows}
    measured = [
        rows[m]
        for m in claim.metrics
        if m in rows
        and all(is_number(rows[m]["values"].get(n)) and math.isfinite(rows[m]["values"][n]) for n in (ae, vae))
    ]
    if not measured:
        return f'<span class="open">Not measured: {html.escape(claim.missing)}.</span>'
    status, verdict = claim_verdict(
        [
            (
                row["values"][vae],
                row["values"][ae],
                row.get("better"),
                standard_error(comparison.evals.get(vae), row["metric"]),
                standard_error(comparison.evals.get(ae), row["metric"]),
            )
            for row in measured
        ]
    )
    evidence = "; ".join(
        f"{html.escape(_metric_name(row['metric']))} {_value_text(row, vae, comparison)} "
        f"({html.escape(vae)}) against {_value_text(row, ae, comparison)} ({html.escape(ae)})"
        + (f", {row['better']} is better" if row["better"] else "")
        for row in measured
    )
    return f'<span class="{status}">{html.escape(verdict)}</span>: {evidence}.'


def _metric_name(metric: str) -> str:
    """The measure's readable name, from vaelab.measures (the one place names are kept)."""
    return MEASURES[metric].label if metric in MEASURES else metric


def _value_text(row: dict, name: str, comparison: Comparison) -> str:
    """A cell's value with its ± standard error where eval.json has one, as HTML."""
    text = _format(row["values"].get(name))
    se = standard_error(comparison.evals.get(name), row["metric"])
    return text + (f' <span class="se">± {_format(se, significant=True)}</span>' if se is not None else "")


def _comparison_section(comparison: Comparison | None) -> str:
    heading = '<section id="comparison"><h2>Comparison</h2>'
    if comparison is None or not comparison.rows:
        return (
            heading + '<p class="note">No evaluation yet: run <code>vaelab evaluate RUN</code> on each run '
            "(or <code>vaelab compare</code>) and write the report again to fill this table.</p></section>"
        )
    rows = [row for row in comparison.rows if any(v is not None for v in row["values"].values())]
    names = list(comparison.columns)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    lines = []
    for row in rows:
        best = set(best_names(row.get("best")))
        cells = "".join(
            f'<td class="num{" best" if n in best else ""}" data-label="{html.escape(n)}">'
            f"{_value_text(row, n, comparison)}{' ★' if n in best else ''}</td>"
            for n in names
        )
        lines.append(
            f'<tr><th class="metric">{html.escape(_metric_name(row["metric"]))} '
            f'<code class="note">{html.escape(row["metric"])}</code>'
            f'<span class="desc">{html.escape(row.get("description", ""))}</span></th>'
            f'<td data-label="better">{html.escape(row.get("better") or "–")}</td>{cells}</tr>'
        )
    return (
        heading + '<p class="note">★ and green: the best value of the row, by its fixed direction (none when '
        "tied or when the row has none); ± one standard error over test images, where measured; –: not "
        "applicable or not computed. Metrics no model has are left out.</p>"
        f'<table class="stack"><thead><tr><th>metric and what it measures</th><th>better</th>{head}</tr>'
        f"</thead><tbody>{''.join(lines)}</tbody></table>{_settings_note(comparison.settings)}</section>"
    )


def _settings_note(settings: dict | None) -> str:
    if not settings:
        return ""
    return f'<p class="note">Compared with the settings: {html.escape(_plain(settings))}.</p>'


def _plain(value) -> str:
    """A setting's value as words: objects as 'key value' pairs, lists comma-separated, nothing as 'none'."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {_plain(v)}" for key, v in value.items()) if value else "none"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"  # as in a TOML --config file
    return "none" if value is None else str(value)


def _format(value, significant: bool = False) -> str:
    """A number for a table cell: about three significant digits (two for a standard error)."""
    if value is None:
        return "–"
    if not is_number(value):
        return html.escape(str(value))
    if isinstance(value, int) or not math.isfinite(value):
        return str(value)
    if significant:
        return f"{value:.2g}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _runs_section(views: list[RunView]) -> str:
    """A table of what differs between the runs (and their folders, epochs and training times); the
    configuration fields all runs share are folded below it."""
    configs = [v.run.config.to_dict() for v in views]
    shown = {key: [_plain(c[key]) for c in configs] for key in configs[0]}
    differing = {k: values for k, values in shown.items() if len(views) > 1 and len(set(values)) > 1}
    rows = [
        ("folder", [f"<code>{html.escape(str(v.run.path))}</code>" for v in views]),
        ("epochs trained", [str(v.run.epoch) for v in views]),
        ("training time", [html.escape(_duration(training_seconds(v))) for v in views]),
    ]
    rows += [(key, [html.escape(value) for value in values]) for key, values in differing.items()]
    head = "".join(f"<th>{html.escape(v.name)}</th>" for v in views)
    body = "".join(
        f"<tr><th>{html.escape(key)}</th>"
        + "".join(f'<td data-label="{html.escape(v.name)}">{cell}</td>' for v, cell in zip(views, cells))
        + "</tr>"
        for key, cells in rows
    )
    shared = "".join(
        f"<dt>{html.escape(key)}</dt><dd>{html.escape(values[0])}</dd>"
        for key, values in shown.items()
        if key not in differing
    )
    what = "the fields every run shares" if len(views) > 1 else "the run's configuration"
    return (
        f'<section id="runs"><h2>Runs and their configurations</h2><p class="note">Every field is a flag of '
        "<code>vaelab train</code> (z_dim is --z-dim); the table shows those that differ between the runs.</p>"
        f'<table class="stack"><thead><tr><th>setting</th>{head}</tr></thead><tbody>{body}</tbody></table>'
        f"<details><summary>{what} ({len(shown) - len(differing)} fields)</summary>"
        f'<dl class="shared">{shared}</dl></details></section>'
    )


def _figure_section(section: Section, views: list[RunView]) -> str:
    """The section's one figure of every run (vaelab.plots puts up to four side by side in a row), and its caption."""
    images = _image(make_figure(section.kind, views, FigureOptions()), section.heading, views)
    return (
        f'<section id="{section.kind}"><h2>{html.escape(section.heading)}</h2><figure>{images}'
        f'<figcaption>{html.escape(section.caption)} <span class="note">(Also '
        f"<code>vaelab plot {section.kind} RUN...</code>.)</span></figcaption></figure></section>"
    )


def _image(fig, heading: str, views: list[RunView]) -> str:
    """An inline PNG shown at its print size (CSS px are 1/96 inch), shrunk to the screen where narrower."""
    width_px = round(fig.get_size_inches()[0] * 96)
    png = base64.b64encode(plots.figure_png(fig)).decode()
    alt = html.escape(f"{heading} ({', '.join(v.name for v in views)})")
    return f'<img alt="{alt}" width="{width_px}" src="data:image/png;base64,{png}">'


def _explorer_section(views: list[RunView], total: int) -> str:
    left_out = total - len(views)
    parts = [
        '<section id="explorer"><h2>Live latent explorer</h2><p>Move the pointer (or a finger) over a map: '
        "the image under it is decoded in the page, as you move.</p>"
    ]
    if left_out:
        parts.append(
            f'<p class="note">{left_out} run{"s" if left_out > 1 else ""} without an explorer here, to '
            "keep the file small: <code>vaelab report --explorers all</code> gives every run one, "
            "<code>vaelab explore RUN</code> one page per run.</p>"
        )
    for view in views:
        try:
            explorer = explorer_html(view.run, view.data)
        except DecoderNotShowable as err:  # this run's explorer is left out, with the reason
            explorer = f'<p class="note">No live explorer for this run: {html.escape(str(err))}.</p>'
        parts.append(f"<h3>{html.escape(view.title)}</h3>{explorer}")
    return "".join(parts) + "</section>"
