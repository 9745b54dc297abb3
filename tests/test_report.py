"""The report: one valid, self-contained HTML file with the configurations, the comparison table and every figure."""

import base64
import html
import json
import re
from html.parser import HTMLParser

import pytest

from test_plots import png_size
from vaelab import cli, report
from vaelab.compare import comparison_rows
from vaelab.figures import RunView, why_not

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
    """Two eval.json-like dicts as vaelab.evaluate writes them, with numbers chosen to make a clear winner."""
    return {
        "ae": {"generation": {"recon_sq_error": 4.5, "test_loss": 4.5, "fd_prior": 90.0},
               "latent": {"knn_accuracy": 0.93, "active_units": 8}},
        "vae": {"generation": {"recon_sq_error": 6.0, "neg_elbo_nats": 27.0, "kl_nats": 9.5, "fd_prior": 30.0},
                "latent": {"knn_accuracy": 0.91, "active_units": 5}},
    }


def test_report_is_valid_self_contained_html_with_every_figure_and_the_table(views):
    comparison = {"rows": comparison_rows(small_evals()), "settings": {"data": "digits"}}
    page = report.build_report(views, comparison, explorers=True)
    checker = parse(page)
    assert_self_contained(page, checker)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page

    for section in report.SECTIONS:  # every figure kind that fits some run has its section and its images
        fitting = [v for v in views if why_not(section.kind, v) is None]
        assert fitting, section.kind
        assert section.kind in checker.ids
        assert section.caption in html.unescape(page)
    pngs = [img for img in checker.images if img["src"].startswith("data:image/png;base64,")]
    assert len(pngs) == len(checker.images) >= len(report.SECTIONS)
    for img in pngs:
        width, height = png_size(base64.b64decode(img["src"].split(",", 1)[1]))
        assert width > 300 and height > 200 and img["alt"]

    table = {text.strip(): css for css, text in checker.cells}
    for row in comparison["rows"]:
        measured = any(v is not None for v in row["values"].values())
        # A row's header cell is its metric name, then its description; rows no model has (IWAE here) are left out.
        assert ((row["metric"] + row["description"]) in table) == measured
    assert ("num best", "30.00 ★") in checker.cells  # fd_prior: lower is better, the VAE's 30 wins
    assert ("num best", "0.93 ★") in checker.cells  # knn_accuracy: higher is better
    assert ("num", "8") in checker.cells  # active_units has no better direction: nothing marked
    for view in views:  # each run's configuration, and its live explorer
        assert view.name in table
    assert page.count('class="vaelab-explorer"') == len(views)


def test_report_command_reads_a_compare_folder_and_writes_one_file(ae_run, vae_run, tmp_path, capsys):
    folder = tmp_path / "cmp"
    folder.mkdir()
    evals = small_evals()
    rows = comparison_rows(evals)
    (folder / "comparison.json").write_text(json.dumps(
        {"models": {"ae": str(ae_run.path), "vae": str(vae_run.path)}, "rows": rows, "settings": {"epochs": 5}}))
    out = tmp_path / "report.html"
    assert cli.main(["report", str(folder), "-o", str(out), "--no-explorer"]) == 0
    page = out.read_text()
    checker = parse(page)
    assert_self_contained(page, checker)
    assert "vaelab-explorer" not in page
    assert all(row["metric"] in page for row in rows if row["values"]["vae"] is not None)
    assert {"latent", "samples", "recon", "interp", "curves", "kl"} <= checker.ids
    assert "posterior" not in checker.ids and "manifold" not in checker.ids  # no 2-D run given
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp", "report.html"]


def test_report_without_evaluations_says_how_to_get_the_table(views):
    page = report.build_report(views[:1], None, explorers=False)
    parse(page)
    assert "vaelab evaluate RUN" in page


@pytest.mark.parametrize("args, message", [
    (["report", "{tmp}/nope", "-o", "{tmp}/r.html"], "no such run folder"),
    (["report", "{run}", "-o", "{tmp}/missing/r.html"], "does not exist"),
    (["report", "{run}", "-o", "{tmp}/r.txt"], ".html"),
])
def test_report_refuses_bad_paths_and_writes_nothing(args, message, vae_run, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, run=vae_run.path) for a in args]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
