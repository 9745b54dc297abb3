"""One self-contained HTML report of several runs: configurations, the comparison table, every figure, explorers.

Nothing in the page points outside it: figures are PNG data: URIs, the style sheet is inline, and the latent
explorers (vaelab.explorer) carry their decoders as inline data. It reads on a phone: a viewport meta tag,
images that shrink to the screen, and tables that scroll sideways inside their own box.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from vaelab import plots
from vaelab.errors import VaelabError
from vaelab.figures import FigureOptions, RunView, make_figure, open_runs, why_not
from vaelab.atomic import atomic_write_bytes


@dataclass(frozen=True)
class Section:
    kind: str  # a vaelab.figures kind
    heading: str
    caption: str  # what the lecture says one should see


SECTIONS = (
    Section("latent", "Latent space: AutoEncoder and VAE side by side",
            "Each dot is one test image, placed at its code (AE) or at its posterior mean μ(x) (VAE), coloured by "
            "its label; latents with more than two dimensions are projected onto their two principal components. "
            "This is the lecture's central picture. Both models group images of the same class, but only the VAE "
            "is asked to keep its codes near the prior N(0, I): its cloud sits around the origin, roughly within "
            "two or three units, without large empty gaps. The AE's codes live wherever the decoder finds them "
            "useful, at any scale and with holes between the classes, so a random point need not decode to anything."),
    Section("posterior", "Each image is a distribution",
            "For a VAE with a 2-D latent, each ellipse is one test image's posterior q(z|x) = N(μ(x), diag σ²(x)), "
            "drawn one standard deviation wide, over the prior N(0, I) (grey, with circles at 1, 2 and 3σ). The "
            "encoder does not map an image to a point but to a small cloud; the KL term keeps the clouds from "
            "shrinking to points and pulls them towards the prior, so together they cover it and neighbouring "
            "clouds overlap. That overlap is why points between two codes still decode to sensible images."),
    Section("manifold", "The learned manifold",
            "Kingma & Welling (2014), figure 4: the 2-D latent decoded on a grid whose coordinates are quantiles of "
            "the prior (from 5% to 95% on each axis), so each tile covers the same prior probability. A VAE's grid "
            "changes smoothly from one class to the next and every tile looks like a digit. The AutoEncoder has no "
            "prior, and its codes may lie far from N(0, I): its grid spans the 5% to 95% range of its own test codes "
            "on each axis (see its axis labels), so its panel shows the region its codes fill, where the gaps between "
            "classes may decode to images that are no digit."),
    Section("samples", "Samples from the prior",
            "Images decoded from z drawn from N(0, I). This is how a VAE generates: its samples look like blurry "
            "but recognisable digits. The AutoEncoder was never trained to make N(0, I) meaningful, so its "
            "'samples' (the lecture's random latent points) are often smudges that are not digits."),
    Section("recon", "Reconstructions",
            "Test images (odd rows) over their reconstructions d(μ(x)) (even rows). Both models reconstruct; the "
            "AE, which spends all its capacity on reconstruction, is usually sharper, while the VAE pays for its "
            "organised latent space with some blur."),
    Section("interp", "Interpolation between test images",
            "Each row decodes points on the straight line from the code of test image A to that of test image B. "
            "In the VAE the path crosses regions the prior covers, so the intermediate images tend to morph "
            "smoothly; in the AE the line may cross empty regions and give implausible images in between."),
    Section("curves", "Training curves",
            "Loss per epoch on the training set (solid) and the test set (dashed), with its two parts. For the VAE "
            "the loss is the negative ELBO in nats per image: reconstruction -log p(x|z) plus β times KL(q(z|x) ‖ "
            "p(z)). Typically reconstruction falls while the KL rises as the encoder starts to use the latent "
            "space. The AE's loss is the squared error summed over pixels, in other units, and has no KL term."),
    Section("kl", "KL per latent dimension",
            "The mean KL(q(z_u|x) ‖ N(0, 1)) of each latent dimension u over the test set: the nats of information "
            "the dimension carries about the image. Dimensions whose KL is near zero have collapsed to the prior "
            "(posterior collapse) and are ignored by the decoder; coloured bars are active units, grey hatched ones "
            "inactive (the variance of μ_u(x) over the test images is at most 0.01, Burda et al. 2016)."),
)

PHONE_MIN_WIDTH_PX = 600  # narrowest a figure is drawn; narrower screens scroll it sideways

STYLE = """
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, 'DejaVu Sans', sans-serif; color: #222; margin: 0 auto; padding: 12px;
  max-width: 1100px; }
h1 { font-size: 1.6em; margin: 0.4em 0; } h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
nav ul { padding-left: 1.2em; } a { color: #0055aa; }
figure { margin: 1em 0; } figure img { display: block; max-width: 100%; height: auto; margin: 0.3em 0; }
figcaption { color: #444; font-size: 0.95em; margin-top: 0.4em; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { background: #e6f2e6; font-weight: 700; }
tr.differs th { background: #fff6d5; }
th.metric { min-width: 14em; max-width: 30em; }
th.metric .desc { display: block; font-weight: 400; color: #555; font-size: 0.9em; }
.note { color: #666; font-size: 0.9em; }
code { font-size: 0.95em; }
"""


def write_report(
    paths: list[str | Path], out: str | Path, data_source: str | None = None, explorers: bool = True
) -> None:
    """Write the report of run folders, or of a `vaelab compare` folder (holding comparison.json), to `out`."""
    out = plots.check_output_path(out, ".html")
    run_paths, comparison = resolve_inputs([Path(p) for p in paths])
    views = open_runs(run_paths, data_source)
    if comparison is None:
        comparison = comparison_from_evals(views)
    atomic_write_bytes(out, build_report(views, comparison, explorers=explorers).encode("utf-8"))


def resolve_inputs(paths: list[Path]) -> tuple[list[Path], dict | None]:
    """Run folders, and the comparison when one path is a compare folder (its models' run folders are used)."""
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
            comparison = _read_json(path / "comparison.json")
            models = comparison.get("models")
            if not isinstance(models, dict) or not isinstance(comparison.get("rows"), list):
                raise VaelabError(f"{path / 'comparison.json'}: needs 'models' and 'rows' as vaelab compare writes them")
            run_paths += [_relative_to(path, Path(run)) for run in models.values()]
        else:
            run_paths.append(path)
    return run_paths, comparison


def _relative_to(folder: Path, run: Path) -> Path:
    """A run path recorded in comparison.json: as written if it exists, else relative to the compare folder."""
    return run if run.is_absolute() or run.is_dir() else folder / run


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise VaelabError(f"{path}: unreadable ({exc})") from None


def comparison_from_evals(views: list[RunView]) -> dict | None:
    """The comparison of the runs' eval.json files (vaelab.compare.comparison_rows), or None without them."""
    evals = {v.name: _read_json(v.run.path / "eval.json") for v in views if (v.run.path / "eval.json").is_file()}
    if not evals:
        return None
    try:
        from vaelab.compare import comparison_rows
    except ImportError:
        return None
    return {"rows": comparison_rows(evals)}


def build_report(views: list[RunView], comparison: dict | None, explorers: bool = True) -> str:
    """The whole page as a string."""
    body = [f"<h1>vaelab report: {html.escape(', '.join(v.name for v in views))}</h1>",
            f'<p class="note">Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Everything is inside this '
            "one file; it needs no network.</p>"]
    contents = [("runs", "Runs and their configurations"), ("comparison", "Comparison")]
    sections = []
    for section in SECTIONS:
        fitting = [v for v in views if why_not(section.kind, v) is None]
        if fitting:
            sections.append((section, fitting))
            contents.append((section.kind, section.heading))
    if explorers and _explorer() is not None:
        contents.append(("explorer", "Live latent explorer"))
    body.append("<nav><ul>" + "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in contents)
                + "</ul></nav>")
    body.append(_runs_section(views))
    body.append(_comparison_section(comparison))
    for section, fitting in sections:
        body.append(_figure_section(section, fitting))
    if explorers and _explorer() is not None:
        body.append(_explorer_section(views))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>vaelab report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _runs_section(views: list[RunView]) -> str:
    """One table: a row per configuration field, a column per run; fields that differ between runs are marked."""
    configs = [v.run.config.to_dict() for v in views]
    head = "".join(f"<th>{html.escape(v.name)}</th>" for v in views)
    rows = [
        "<tr><th>folder</th>" + "".join(f"<td><code>{html.escape(str(v.run.path))}</code></td>" for v in views) + "</tr>",
        "<tr><th>epochs trained</th>" + "".join(f"<td>{v.run.epoch}</td>" for v in views) + "</tr>",
    ]
    for key in configs[0]:
        values = [json.dumps(c[key]) if isinstance(c[key], list) else str(c[key]) for c in configs]
        marked = ' class="differs"' if len(set(values)) > 1 else ""
        rows.append(f"<tr{marked}><th>{html.escape(key)}</th>"
                    + "".join(f"<td>{html.escape(value)}</td>" for value in values) + "</tr>")
    note = ('<p class="note">Highlighted rows differ between the runs. Every field is a flag of '
            "<code>vaelab train</code> (z_dim is --z-dim).</p>") if len(views) > 1 else ""
    return (f'<section id="runs"><h2>Runs and their configurations</h2>{note}'
            f'<div class="scroll"><table><thead><tr><th>setting</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div></section>")


def _comparison_section(comparison: dict | None) -> str:
    heading = '<section id="comparison"><h2>Comparison</h2>'
    if not comparison or not comparison.get("rows"):
        return (heading + '<p class="note">No evaluation yet: run <code>vaelab evaluate RUN</code> on each run '
                "(or <code>vaelab compare</code>) and write the report again to fill this table.</p></section>")
    rows = [row for row in comparison["rows"] if any(v is not None for v in row.get("values", {}).values())]
    names = list(dict.fromkeys(name for row in rows for name in row.get("values", {})))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    lines = []
    for row in rows:
        best = row.get("best")
        best = set(best) if isinstance(best, list) else {best}
        cells = "".join(
            f'<td class="num{" best" if n in best else ""}">{_format(row["values"].get(n))}'
            f'{" ★" if n in best else ""}</td>' for n in names
        )
        lines.append(f'<tr><th class="metric">{html.escape(str(row.get("metric", "")))}'
                     f'<span class="desc">{html.escape(str(row.get("description", "")))}</span></th>'
                     f"<td>{html.escape(str(row.get('better') or '–'))}</td>{cells}</tr>")
    settings = comparison.get("settings")
    note = (f'<p class="note">Settings: <code>{html.escape(json.dumps(settings))}</code></p>' if settings else "")
    return (heading + '<p class="note">★ and green: the best value of the row, by its fixed direction (none when '
            "tied or when the row has none); –: not applicable or not computed. Metrics no model has are left out.</p>"
            f'<div class="scroll"><table><thead><tr><th>metric and what it measures</th><th>better</th>{head}</tr>'
            f"</thead><tbody>{''.join(lines)}</tbody></table></div>{note}</section>")


def _format(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return html.escape(str(value))
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def _figure_section(section: Section, views: list[RunView]) -> str:
    """The section's one figure of every run (vaelab.plots puts up to four side by side in a row), and its caption."""
    images = _image(make_figure(section.kind, views, FigureOptions()), section.heading, views)
    return (f'<section id="{section.kind}"><h2>{html.escape(section.heading)}</h2><figure>{images}'
            f"<figcaption>{html.escape(section.caption)} <span class=\"note\">(Also "
            f"<code>vaelab plot {section.kind} RUN...</code>.)</span></figcaption></figure></section>")


def _image(fig, heading: str, views: list[RunView]) -> str:
    """An inline PNG shown at its print size (CSS px are 1/96 inch); on a phone it keeps at least
    PHONE_MIN_WIDTH_PX and scrolls sideways rather than shrinking its text below legibility."""
    width_px = round(fig.get_size_inches()[0] * 96)
    png = base64.b64encode(plots.figure_png(fig)).decode()
    alt = html.escape(f"{heading} ({', '.join(v.name for v in views)})")
    return (f'<div class="scroll"><img alt="{alt}" style="width:{width_px}px;min-width:{min(width_px, PHONE_MIN_WIDTH_PX)}px" '
            f'src="data:image/png;base64,{png}"></div>')


def _explorer():
    """vaelab.explorer.explorer_html, or None where that module is not installed."""
    try:
        from vaelab.explorer import explorer_html
    except ImportError:
        return None
    return explorer_html


def _explorer_section(views: list[RunView]) -> str:
    explorer_html = _explorer()
    parts = ['<section id="explorer"><h2>Live latent explorer</h2><p>Move the pointer (or a finger) over a map: '
             "the image under it is decoded in the page, as you move.</p>"]
    for view in views:
        parts.append(f"<h3>{html.escape(view.title)}</h3>{explorer_html(view.run, view.data)}")
    return "".join(parts) + "</section>"
