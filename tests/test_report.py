"""The report: one valid, self-contained HTML file with the configurations, the comparison table and every figure."""

import base64
import dataclasses
import html
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import BROWSER_TIMEOUT_MS, run_cli
from test_plots import png_size
from vaelab import cli, report
from vaelab.compare import comparison_rows
from vaelab.figures import RunView, why_not
from vaelab.measures import MEASURES
from vaelab.report_data import Comparison, training_seconds

VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "col", "area", "base"}


class PageChecker(HTMLParser):
    """Collects tags, ids, references and table cells, and every nesting error, of one HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.ids, self.refs, self.images, self.cells = [], [], set(), [], [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for name in ("src", "href", "action", "data", "poster"):
            if name in attrs:
                self.refs.append(attrs[name])
        if tag == "img":
            self.images.append(attrs)
        if tag in ("td", "th"):
            self._cell = [attrs.get("class", ""), ""]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


def parse(page: str) -> PageChecker:
    checker = PageChecker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == [], (checker.errors, checker.stack)
    return checker


def assert_self_contained(page: str, checker: PageChecker) -> None:
    assert not re.search(r"https?://", page), "the page names a web address"
    assert not re.search(r"\burl\(\s*['\"]?(?!data:|#)", page), "CSS loads something"
    assert not re.search(r"@import", page)
    for ref in checker.refs:
        assert ref.startswith("data:") or (ref.startswith("#") and ref[1:] in checker.ids), ref[:60]


@pytest.fixture(scope="module")
def views(ae_run, vae_run, vae2d_run, digits):
    return [RunView(r.path.name, r, digits, digits.x_test) for r in (ae_run, vae_run, vae2d_run)]


def small_evals():
    """Two eval.json-like dicts as vaelab.evaluate writes them, with numbers chosen to make a clear winner:
    the VAE's prior samples are better on every measure, the AE's interpolations are more even."""
    return {
        "ae": {
            "generation": {
                "recon_sq_error": 4.5,
                "recon_sq_error_se": 0.1,
                "test_loss": 4.5,
                "fd_prior": 90.0,
                "precision_prior": 0.2,
                "confidence_prior": 0.6,
            },
            "latent": {
                "knn_accuracy": 0.93,
                "active_units": 8,
                "interp_evenness": 1.1,
                "interp_evenness_se": 0.01,
                "interp_straightness": 1.05,
                "interp_straightness_se": 0.01,
            },
        },
        "vae": {
            "generation": {
                "recon_sq_error": 6.0,
                "recon_sq_error_se": 0.12,
                "neg_elbo_nats": 27.0,
                "neg_elbo_nats_se": 0.3,
                "kl_nats": 9.5,
                "fd_prior": 30.0,
                "precision_prior": 0.7,
                "confidence_prior": 0.9,
            },
            "latent": {
                "knn_accuracy": 0.91,
                "active_units": 5,
                "interp_evenness": 1.3,
                "interp_evenness_se": 0.02,
                "interp_straightness": 1.2,
                "interp_straightness_se": 0.01,
            },
        },
    }


def comparison_of(views, evals, settings=None) -> Comparison:
    """The table of `evals` with the AE view behind column "ae" and the 8-D VAE behind "vae"."""
    return Comparison(comparison_rows(evals), {"ae": views[0], "vae": views[1]}, evals, settings)


@pytest.fixture(scope="module")
def page_text(views):
    """The report of the three runs with the default explorers and settings holding a nested object."""
    settings = {"data": "digits", "base_config": {"z_dim": 8}}
    return report.build_report(views, comparison_of(views, small_evals(), settings))


def section(page_text: str, section_id: str) -> str:
    """The text of one <section> of the page, tags removed, entities decoded."""
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page_text, re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1)))


def test_report_is_valid_self_contained_html_with_every_figure_and_the_table(views, page_text):
    page = page_text
    checker = parse(page)
    assert_self_contained(page, checker)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page

    shown = 0
    for kind_section in report.SECTIONS:  # every figure kind that fits some run has its section and its images
        fitting = [v for v in views if why_not(kind_section.kind, v) is None]
        assert (kind_section.kind in checker.ids) == bool(fitting), kind_section.kind
        assert (kind_section.caption in html.unescape(page)) == bool(fitting), kind_section.kind
        shown += bool(fitting)
    assert shown == len(report.SECTIONS) - 1  # all but one row per class, which needs a conditional run
    pngs = [img for img in checker.images if img["src"].startswith("data:image/png;base64,")]
    assert len(pngs) == len(checker.images) >= shown
    for img in pngs:
        width, height = png_size(base64.b64decode(img["src"].split(",", 1)[1]))
        assert width > 300 and height > 200 and img["alt"]

    table = {text.strip(): css for css, text in checker.cells}
    for row in comparison_rows(small_evals()):
        measured = any(v is not None for v in row["values"].values())
        # A row's header cell: its readable name, its key, then its description; rows no model has are left out.
        header = f"{MEASURES[row['metric']].label} {row['metric']}{row['description']}"
        assert (header in table) == measured, row["metric"]
    assert ("num best", "30.00 ★") in checker.cells  # fd_prior: lower is better, the VAE's 30 wins
    assert ("num best", "0.93 ★") in checker.cells  # knn_accuracy: higher is better
    assert ("num", "8") in checker.cells  # active_units has no better direction: nothing marked
    assert ("num best", "4.50 ± 0.1 ★") in checker.cells  # recon_sq_error with its standard error
    assert ("num", "27.00 ± 0.3") in checker.cells
    for view in views:  # each run's configuration
        assert view.name in table
    # Explorers by default: the 2-D run and the main VAE (the 8-D VAE with beta 1), not the AE.
    assert page.count('class="vaelab-explorer"') == 2
    assert "--explorers all" in section(page, "explorer")


def test_summary_says_what_was_trained_and_the_headline_numbers(views, page_text):
    summary = section(page_text, "summary")
    assert summary.startswith("Summary3 runs on digits:")
    for view in views:
        assert f"{view.name} ({view.model.kind.upper()}, {view.model.z_dim}-D latent" in summary
        assert f"{view.run.epoch} epochs, trained in {training_seconds(view):.1f} s" in summary
    assert "negative ELBO, nats: vae 27.00 ± 0.3" in summary
    assert "reconstruction error: vae 6.00 ± 0.12, ae 4.50 ± 0.1" in summary


def _claims(views, evals) -> list[str]:
    """The verdicts of the lecture's two claims in the summary of a report on `evals`."""
    summary = section(report.build_report(views[:2], comparison_of(views, evals), explorers="none"), "summary")
    return re.findall(r"claim \d: .*?\. ([A-Z][a-z]+(?: not hold| shown| measured)?):", summary)


def test_summary_judges_the_lecture_claims_from_the_numbers(views):
    evals = small_evals()
    assert _claims(views, evals) == ["Held", "Did not hold"]  # VAE samples better; AE interpolations more even
    for metric in ("interp_evenness", "interp_straightness"):  # swap the models' interpolation numbers
        evals["ae"]["latent"][metric], evals["vae"]["latent"][metric] = (
            evals["vae"]["latent"][metric],
            evals["ae"]["latent"][metric],
        )
    evals["vae"]["generation"]["fd_prior"] = 120.0  # the VAE's samples now further from the data by FD
    assert _claims(views, evals) == ["Mixed", "Held"]
    evals["vae"]["latent"]["interp_evenness"] = evals["ae"]["latent"]["interp_evenness"] + 0.01  # < 2 SE apart
    evals["vae"]["latent"]["interp_straightness"] = evals["ae"]["latent"]["interp_straightness"]
    for sampled in ("fd_prior", "precision_prior", "confidence_prior"):
        del evals["ae"]["generation"][sampled]
    assert _claims(views, evals) == ["Not measured", "Not shown"]


def test_runs_table_shows_only_the_fields_that_differ_and_folds_the_rest(page_text):
    runs = re.search(r'<section id="runs">(.*?)</section>', page_text, re.S).group(1)
    table, details = runs.split("<details>")
    rows = re.findall(r"<tr><th>(.*?)</th>", table.split("<tbody>")[1])
    assert rows == ["folder", "epochs trained", "training time", "model", "z_dim"]
    shared = html.unescape(re.sub(r"<[^>]+>", " ", details))
    for field in ("hidden", "beta", "lr", "batch_size", "seed"):
        assert f" {field} " in shared and f">{field}<" not in table


def test_no_raw_json_is_dumped_into_the_page(page_text):
    outside_scripts = re.sub(r"<script\b.*?</script>", "", page_text, flags=re.S)
    assert '{"' not in outside_scripts
    assert "Compared with the settings: data digits, base_config z_dim 8." in section(page_text, "comparison")


def test_training_time_is_the_sum_of_the_epochs_seconds(views):
    for view in views:
        assert training_seconds(view) == pytest.approx(sum(row["seconds"] for row in view.run.history))
        assert training_seconds(view) > 0
    broken = RunView(
        "broken", dataclasses.replace(views[0].run, history=[{"seconds": "soon"}]), views[0].data, views[0].x_test
    )
    assert training_seconds(broken) is None
    assert "trained in an unknown time" in section(report.build_report([broken], None, explorers="none"), "summary")


@pytest.mark.parametrize(
    "choice, expected",
    [
        ("auto", ["vae", "vae2d"]),
        ("2d", ["vae2d"]),
        ("all", ["ae", "vae", "vae2d"]),
        ("none", []),
    ],
)
def test_explorers_go_by_default_to_2d_runs_and_the_main_vae(views, choice, expected):
    named = [RunView(name, v.run, v.data, v.x_test) for name, v in zip(["ae", "vae", "vae2d"], views)]
    assert [v.name for v in report.explorer_views(named, choice)] == expected


def test_main_vae_is_the_first_with_beta_one(views):
    beta4 = dataclasses.replace(views[1].run, config=dataclasses.replace(views[1].run.config, beta=4.0))
    named = [
        RunView("beta4", beta4, views[1].data, views[1].x_test),
        RunView("vae", views[1].run, views[1].data, views[1].x_test),
    ]
    assert [v.name for v in report.explorer_views(named, "auto")] == ["vae"]
    assert [v.name for v in report.explorer_views(named[:1], "auto")] == ["beta4"]  # no beta-1 VAE: the first VAE


def test_explorer_choices_of_the_command_are_the_reports():
    report_parser = cli.build_parser()._subparsers._group_actions[0].choices["report"]
    (action,) = [a for a in report_parser._actions if a.dest == "explorers"]
    assert tuple(action.choices) == report.EXPLORERS and action.default == "auto"


def test_report_command_reads_a_compare_folder_and_writes_one_file(ae_run, vae_run, tmp_path, capsys):
    folder = tmp_path / "cmp"
    folder.mkdir()
    evals = small_evals()
    rows = comparison_rows(evals)
    (folder / "comparison.json").write_text(
        json.dumps(
            {"models": {"ae": str(ae_run.path), "vae": str(vae_run.path)}, "rows": rows, "settings": {"epochs": 5}}
        )
    )
    out = tmp_path / "report.html"
    assert cli.main(["report", str(folder), "-o", str(out), "--explorers", "none"]) == 0
    page = out.read_text()
    checker = parse(page)
    assert_self_contained(page, checker)
    assert "vaelab-explorer" not in page
    assert all(row["metric"] in page for row in rows if row["values"]["vae"] is not None)
    assert {"summary", "latent", "samples", "recon", "interp", "curves", "kl"} <= checker.ids
    assert "posterior" not in checker.ids and "manifold" not in checker.ids  # no 2-D run given
    assert "Held: the VAE is better on 3 of 3 measures" in section(page, "summary")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp", "report.html"]


def test_report_without_evaluations_says_how_to_get_the_table(views):
    page = report.build_report(views[:1], None, explorers="none")
    parse(page)
    assert "vaelab evaluate RUN" in page
    assert "claims are not tested here" in section(page, "summary")


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "{tmp}/nope", "-o", "{tmp}/r.html"], "no such run folder"),
        (["report", "{run}", "-o", "{tmp}/missing/r.html"], "does not exist"),
        (["report", "{run}", "-o", "{tmp}/r.txt"], ".html"),
    ],
)
def test_report_refuses_bad_paths_and_writes_nothing(args, message, vae_run, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, run=vae_run.path) for a in args]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _row(**changes) -> dict:
    return {"metric": "fd_prior", "description": "d", "better": "lower", "values": {"ae": 1.0}, "best": None, **changes}


MALFORMED = {
    "not JSON": b'{"models": ',
    "not UTF-8": b'\xff\xfe{"models": {}}',
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
    "a list": b"[1, 2]",
    "no models": json.dumps({"rows": []}).encode(),
    "models a list": json.dumps({"models": ["RUN"], "rows": []}).encode(),
    "a model's folder a number": json.dumps({"models": {"ae": 3}, "rows": []}).encode(),
    "no rows": json.dumps({"models": {"ae": "RUN"}}).encode(),
    "rows an object": json.dumps({"models": {"ae": "RUN"}, "rows": {}}).encode(),
    "a row a string": json.dumps({"models": {"ae": "RUN"}, "rows": ["fd_prior"]}).encode(),
    "a row without metric": json.dumps({"models": {"ae": "RUN"}, "rows": [_row(metric=None)]}).encode(),
    "a value a string": json.dumps({"models": {"ae": "RUN"}, "rows": [_row(values={"ae": "1.0"})]}).encode(),
    "values a list": json.dumps({"models": {"ae": "RUN"}, "rows": [_row(values=[1.0])]}).encode(),
    "better unknown": json.dumps({"models": {"ae": "RUN"}, "rows": [_row(better="up")]}).encode(),
    "best a number": json.dumps({"models": {"ae": "RUN"}, "rows": [_row(best=3)]}).encode(),
    "settings a list": json.dumps({"models": {"ae": "RUN"}, "rows": [], "settings": [1]}).encode(),
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_comparison_json_is_one_error_line_and_no_file(content, ae_run, tmp_path, capsys):
    folder = tmp_path / "cmp"
    folder.mkdir()
    (folder / "comparison.json").write_bytes(content.replace(b'"RUN"', json.dumps(str(ae_run.path)).encode()))
    out = tmp_path / "report.html"
    assert cli.main(["report", str(folder), "-o", str(out)]) == 2  # any other exception fails this test
    err = capsys.readouterr().err
    assert err.startswith("vaelab: error:") and len(err.splitlines()) == 1 and "comparison.json" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cmp"]


def test_malformed_comparison_json_through_the_real_command(tmp_path):
    folder = tmp_path / "cmp"
    folder.mkdir()
    (folder / "comparison.json").write_text("[1, 2]")
    done = run_cli("report", str(folder), "-o", str(tmp_path / "report.html"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("vaelab: error:") and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "report.html").exists()


def test_every_user_string_is_escaped(vae2d_run, tmp_path):
    run = tmp_path / 'run<b>bold</b>&"quoted"'
    shutil.copytree(vae2d_run.path, run)
    folder = tmp_path / "cmp"
    folder.mkdir()
    hostile = "<img src=x onerror=alert(1)>"
    row = _row(metric="<script>alert(2)</script>", description='"><i>desc', values={hostile: 1.0}, best=hostile)
    (folder / "comparison.json").write_text(
        json.dumps({"models": {hostile: str(run)}, "rows": [row], "settings": {"<u>key": "<u>value"}})
    )
    out = tmp_path / "report.html"
    assert cli.main(["report", str(folder), "-o", str(out), "--explorers", "all"]) == 0
    page = out.read_text()
    parse(page)
    for raw in ("<img src=x", "<script>alert", "<b>bold", "<i>desc", "<u>"):
        assert raw not in page, raw
    for escaped in (
        "&lt;img src=x onerror=alert(1)&gt;",
        "&lt;script&gt;alert(2)&lt;/script&gt;",
        "run&lt;b&gt;bold&lt;/b&gt;&amp;&quot;quoted&quot;",
        "&lt;u&gt;key &lt;u&gt;value",
    ):
        assert escaped in page, escaped


def _overflow(page) -> dict:
    """How the page fits its viewport: the document's scroll width, elements sticking out on the right, and
    boxes that scroll sideways inside the page."""
    return page.evaluate("""() => {
        const width = document.documentElement.clientWidth;
        const all = Array.from(document.querySelectorAll('body *'));
        const name = e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '');
        return {
            scrollWidth: document.documentElement.scrollWidth,
            sticking_out: all.filter(e => e.getBoundingClientRect().right > width + 0.5).map(name),
            scrolling: all.filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
                          .map(name),
        };
    }""")


def test_report_fits_a_400px_screen_without_sideways_scrolling(page, page_text, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(page_text)
    page.set_viewport_size({"width": 400, "height": 900})
    page.goto(path.as_uri())
    page.wait_for_function("Object.keys(window.vaelabExplorers || {}).length === 2", timeout=BROWSER_TIMEOUT_MS)
    fit = _overflow(page)
    assert fit == {"scrollWidth": 400, "sticking_out": [], "scrolling": []}
    shot = tmp_path / "report-400px.png"
    page.screenshot(path=str(shot), full_page=True)
    assert png_size(shot.read_bytes())[0] == 400
    if os.environ.get("VAELAB_TEST_ARTIFACTS"):
        artifacts = Path(os.environ["VAELAB_TEST_ARTIFACTS"])
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, artifacts / "report-400px.png")
