"""The report per rule: tallies from the model's transitions, Markdown and one HTML page."""

import json
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import cast

import pytest

from cowcheck.compare import Difference, compare_run
from cowcheck.report import (
    ReportedDivergence,
    RuleTally,
    RunReport,
    default_spec_dir,
    render,
    render_html,
    render_markdown,
    report_format,
    rule_rows,
    spec_rules,
)
from cowspec.formats.oracle import model_run
from cowspec.formats.trace import decode_trace, encode_trace
from tests.support import d, f, op

TRACE_DOCUMENT = {
    "format": "cowspec-trace/1",
    "layers": [[d("/d"), f("/d/a", "x")]],
    "ops": [op("unlink", path="/d/a"), op("stat", path="/d/a")],
}


def diverging_report(source: str = "traces/one.json", conformance: str = "kernel") -> RunReport:
    """A run of one trace against a 'real' result that forgot the whiteout, as a checker would report it."""
    trace = decode_trace(TRACE_DOCUMENT)
    run = model_run(trace)
    real = dict(run.result)
    upper = cast(list[dict[str, object]], run.result["upper"])
    real["upper"] = [each for each in upper if each.get("type") != "whiteout"]
    tally = RuleTally()
    tally.record_all(run.taken)
    differences = compare_run(run, real)
    tally.record_differences(differences)
    return RunReport(
        driver="buggy",
        conformance="kernel" if conformance == "kernel" else "portable",
        kernel="6.18.0",
        features={"redirect_dir": False},
        profile="dev",
        budget="1 example",
        examples=1,
        ops=2,
        seconds=0.5,
        results={"ok": 1, "ENOENT": 1},
        tally=tally,
        divergences=(ReportedDivergence(source, encode_trace(trace), tuple(differences)),),
    )


def test_the_tally_counts_exercised_broken_and_relaxed() -> None:
    """[WHITEOUT-2][WHITEOUT-1] Each transition's rules count as exercised; each difference under its rule."""
    report = diverging_report()
    tally = report.tally
    assert tally.exercised["UNLINK-1"] == 1 and tally.exercised["WHITEOUT-2"] == 1
    assert tally.exercised["WHITEOUT-1"] == 1 and tally.exercised["OP-1"] == 1
    assert tally.broken == Counter({"WHITEOUT-2": 1})
    other = RuleTally(relaxed=Counter({"CONFORM-5": 2}), exercised=Counter({"UNLINK-1": 3}))
    tally.merge(other)
    assert tally.exercised["UNLINK-1"] == 4 and tally.relaxed == Counter({"CONFORM-5": 2})
    assert RuleTally.from_json(json.loads(json.dumps(tally.to_json()))) == tally


def test_rows_follow_the_spec_and_show_what_was_not_exercised() -> None:
    """Rows come in the spec's order; every rule of a chapter the run touched has one."""
    report = diverging_report()
    known = spec_rules(default_spec_dir())
    rows = rule_rows(report, known)
    order = list(known)
    assert [order.index(rule) for rule in rows] == sorted(order.index(rule) for rule in rows)
    assert rows["WHITEOUT-2"].status == "broken" and rows["UNLINK-1"].status == "held"
    assert rows["RENAME-3"].status == "not exercised"  # chapter 6 was touched
    assert "TAR-1" not in rows  # chapter 11 was not
    # A filesystem-level run is shown every rule of chapters 1 to 10 and of the profiles, reached or not.
    assert {"ENTRY-1", "SIZE-2", "OBSERVE-1", "CONFORM-2"} <= set(rows)
    assert rows["ENTRY-1"].status in ("held", "not exercised")
    assert report.to_json()["rules"]["WHITEOUT-2"] == {  # type: ignore[index]
        "exercised": 1,
        "broken": 1,
        "relaxed": 0,
        "status": "broken",
    }


def test_markdown_has_the_summary_the_table_and_each_divergence_with_its_rule_text() -> None:
    """[WHITEOUT-2] The divergence names its rule, its source, its minimal trace and the spec's text of the rule."""
    text = render_markdown(diverging_report())
    assert "| driver | buggy |" in text and "| conformance | kernel |" in text and "| kernel | 6.18.0 |" in text
    assert "| WHITEOUT-2 | When removing leaves a whiteout | 1 | 1 | 0 | broken |" in text
    assert "### 1. WHITEOUT-2 (traces/one.json)" in text
    assert '- upper /d/a: expected {"path": "/d/a", "type": "whiteout"}, actual null [WHITEOUT-2]' in text
    assert "| features | redirect_dir=false |" in text
    trace_text = text.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(trace_text) == encode_trace(decode_trace(TRACE_DOCUMENT))  # copied from the page, it replays
    assert '  {"op": "unlink", "path": "/d/a"},' in trace_text
    spec_text = spec_rules(default_spec_dir())["WHITEOUT-2"].text
    assert "> " + spec_text.splitlines()[0] in text


def test_the_report_names_the_cowspec_version_and_when_it_ran() -> None:
    """A report read later says which cowspec wrote it and when the run started."""
    from cowcheck.report import started_now
    from cowspec import __version__

    report = RunReport(driver="kernel-overlay", started=started_now())
    text = render_markdown(report)
    assert f"| cowspec | {__version__}, run {report.started} |" in text
    assert report.to_json()["cowspec"] == __version__ and str(report.to_json()["started"]).endswith("Z")


def test_an_agreeing_run_says_so() -> None:
    report = RunReport(driver="kernel-overlay", examples=3, ops=9, seconds=1.0)
    text = render_markdown(report)
    assert "| verdict | agrees |" in text and "No rule was exercised." in text and "None." in text
    assert "<strong>agrees</strong>" in render_html(report)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_one_page_with_everything_escaped() -> None:
    """A path holding ``<script>`` is shown as text, never as markup."""
    evil = "/<script>alert(1)</script>"
    difference = Difference("merged", evil, None, {"path": evil}, "WHITEOUT-1")
    report = RunReport(
        driver="<b>driver</b>",
        divergences=(ReportedDivergence("generated", {"ops": [{"op": "stat", "path": evil}]}, (difference,)),),
    )
    page = render_html(report)
    assert "<script>" not in page and "<b>driver" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parsed = _Collector()
    parsed.feed(page)
    assert "script" not in parsed.tags and "b" not in parsed.tags
    assert parsed.tags.count("html") == 1 and "style" in parsed.tags
    assert "link" not in parsed.tags and "img" not in parsed.tags  # self-contained
    assert any(evil in each for each in parsed.text)


def test_html_has_the_table_and_the_rule_text() -> None:
    page = render_html(diverging_report())
    assert '<tr class="broken"><td>WHITEOUT-2</td>' in page
    assert "<h3>1. WHITEOUT-2 (traces/one.json)</h3>" in page
    assert "<blockquote>" in page and "cowspec-trace/1" in page


def test_without_the_spec_the_rule_text_is_unavailable(tmp_path: Path) -> None:
    report = diverging_report()
    assert "The spec text of WHITEOUT-2 is unavailable." in render_markdown(report, tmp_path / "none")
    assert "The spec text of WHITEOUT-2 is unavailable." in render_html(report, tmp_path / "none")


def test_the_format_follows_the_file_name() -> None:
    report = diverging_report()
    assert report_format("out/report.md") == "markdown" and report_format("R.HTML") == "html"
    assert render(report, "r.html").startswith("<!DOCTYPE html>")
    assert render(report, "r.md").startswith("# cowspec check: buggy")
    with pytest.raises(ValueError, match=r"\.md, \.html or \.json"):
        report_format("report.pdf")


def test_a_json_report_is_the_runs_data_for_programs() -> None:
    report = diverging_report()
    data = json.loads(render(report, "run.json"))
    assert data == json.loads(json.dumps(report.to_json()))
    assert data["driver"] == "buggy" and len(data["divergences"]) == len(report.divergences) > 0
    assert data["divergences"][0]["rule"] == report.divergences[0].rule != ""
