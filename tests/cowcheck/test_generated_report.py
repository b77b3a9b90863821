"""``cowspec check`` with generated cases: the rule each divergence breaks, the conformance profile, the report file.

The generated check compares under ``--conformance`` (spec chapter 16): a
planted bug is named by the rule it breaks, in the printed report and in
the ``--report`` files; an implementation that varies only where chapter 16
allows fails under ``kernel`` and passes under ``portable``, the relaxation
counted under its CONFORM rule. The implementations that vary are the
model-backed ones of ``test_compare`` (they run anywhere); the planted bug
is ``test_machine``'s liar over the kernel.
"""

import argparse
import json
import re
from pathlib import Path

import pytest

from cowcheck.cli.generate import generated_check
from cowcheck.cli.main import main
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.machines import profiles
from cowcheck.machines.fs_machine import first_divergence
from cowspec.formats.trace import Trace, decode_trace
from cowspec.fs.build import LayerEntry
from cowspec.fs.features import Features
from tests.cowcheck.test_compare import OtherDriver, OtherSession
from tests.cowcheck.test_workers import LyingKernel


def planted_bug_arguments(tmp_path: Path, conformance: str, *reports: str) -> argparse.Namespace:
    """The arguments of a derandomized search with the planted-bug budget (``profiles.planted_bug_search``)."""
    budget = profiles.planted_bug_search()
    return argparse.Namespace(
        profile="ci",  # derandomized, no database: the same examples on every run
        examples=budget.max_examples,
        steps=budget.stateful_step_count,
        workers=1,
        database="none",
        progress="never",
        save=str(tmp_path / "out"),
        feature=[],
        conformance=conformance,
        report=[str(tmp_path / name) for name in reports],
    )


def rule_row(markdown: str, rule: str) -> dict[str, str]:
    """The per-rule table's row of ``rule`` in a Markdown report: exercised, broken, relaxed, status."""
    found = re.search(rf"^\| {re.escape(rule)} \| [^|]* \| (\d+) \| (\d+) \| (\d+) \| ([a-z ]+) \|$", markdown, re.M)
    assert found is not None, f"no row for {rule}:\n{markdown}"
    return dict(zip(("exercised", "broken", "relaxed", "status"), found.groups(), strict=True))


def reported_trace(markdown: str) -> Trace:
    """The minimal trace a Markdown report shows, decoded."""
    found = re.search(r"```json\n(.*?)\n```", markdown, re.S)
    assert found is not None, markdown
    return decode_trace(json.loads(found.group(1)))


@pytest.mark.kernel
def test_a_planted_bug_is_named_by_its_rule_in_the_report_and_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kernel: KernelOverlay
) -> None:
    """[WHITEOUT-2] Under kernel, a driver hiding whiteouts: the printed report, the .md and the .html name the rule."""
    arguments = planted_bug_arguments(tmp_path, "kernel", "report.md", "report.html")
    status = generated_check(LyingKernel(), arguments)
    printed = capsys.readouterr().out
    assert status == 1, printed
    assert "divergence 1 breaks WHITEOUT-2: upper /" in printed and ", actual null" in printed
    assert "relaxations applied" not in printed  # nothing is relaxed under kernel
    markdown = (tmp_path / "report.md").read_text()
    assert "### 1. WHITEOUT-2 (generated)" in markdown
    assert "| conformance | kernel |" in markdown and "| driver | lying |" in markdown
    row = rule_row(markdown, "WHITEOUT-2")
    assert int(row["broken"]) > 0 and int(row["exercised"]) > 0 and row["status"] == "broken"
    page = (tmp_path / "report.html").read_text()
    assert "<h3>1. WHITEOUT-2 (generated)</h3>" in page and "<td>WHITEOUT-2</td>" in page
    # The report's minimal trace is the one saved, and shows the bug on the liar alone.
    trace = reported_trace(markdown)
    assert trace == decode_trace(json.loads((tmp_path / "out" / "divergence-1.json").read_text()))
    assert first_divergence(LyingKernel(), trace) is not None
    assert first_divergence(kernel, trace) is None


VARIATIONS = {
    # A listing of a plain directory without the whiteouts it stores: an op's outcome the portable profile allows.
    "listing": ("READDIR-2", "CONFORM-5"),
    # Every name of a hardlink a copy-up broke counted together: link counts the portable profile allows.
    "nlink": ("COPYUP-5", "CONFORM-4"),
}


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_a_variation_chapter_16_allows_fails_kernel_and_passes_portable(
    variation: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[CONFORM-1][CONFORM-4][CONFORM-5] The same search: under kernel a divergence naming the rule the
    implementation departs from; under portable none, and the relaxation counted under its rule."""
    broken, relaxation = VARIATIONS[variation]
    status = generated_check(OtherDriver(variation), planted_bug_arguments(tmp_path, "kernel", "kernel.md"))
    printed = capsys.readouterr().out
    assert status == 1, printed
    assert f"divergence 1 breaks {broken}: " in printed
    assert "### 1. " + broken in (tmp_path / "kernel.md").read_text()

    status = generated_check(OtherDriver(variation), planted_bug_arguments(tmp_path, "portable", "portable.md"))
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "conformance portable" in printed and "divergences: none" in printed
    said = re.search(rf"relaxations applied \(portable\): (\d+) \({relaxation} (\d+)\)$", printed, re.M)
    assert said is not None, printed
    assert int(said.group(1)) == int(said.group(2)) > 0
    markdown = (tmp_path / "portable.md").read_text()
    assert "| verdict | agrees |" in markdown and "| conformance | portable |" in markdown
    assert f"| relaxations applied | {said.group(1)} |" in markdown
    row = rule_row(markdown, relaxation)
    assert row["relaxed"] == said.group(1) and row["status"] == "relaxed"
    assert rule_row(markdown, broken)["broken"] == "0"


class CountingDriver:
    """The model as a driver, counting the sessions opened (``--driver module:attr`` makes it with no arguments)."""

    name = "counting"
    opened = 0

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> OtherSession:
        CountingDriver.opened += 1
        return OtherSession(layers, features, frozenset())


def test_a_report_named_neither_md_nor_html_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--report bad.txt``: one line, exit 2, no header and no session opened."""
    CountingDriver.opened = 0
    driver = f"{__name__}:CountingDriver"
    good, bad = str(tmp_path / "good.md"), str(tmp_path / "bad.txt")
    status = main(["check", "--driver", driver, "--progress", "never", "--report", good, "--report", bad])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == "" and CountingDriver.opened == 0
    assert captured.err.count("\n") == 1 and captured.err.startswith("cowspec: --report ") and "bad.txt" in captured.err
    assert not Path(good).exists()


def test_a_report_that_cannot_be_written_is_one_line_after_the_printed_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A report file in a directory that does not exist: the run and its printed report, then one line, exit 2."""
    CountingDriver.opened = 0
    driver = f"{__name__}:CountingDriver"
    unwritable = str(tmp_path / "missing" / "report.html")
    # One example suffices: what is tested is when the report file is written, not the search.
    options = ["--examples", "1", "--database", "none", "--progress", "never", "--save", str(tmp_path / "out")]
    status = main(["check", "--driver", driver, *options, "--report", unwritable])
    captured = capsys.readouterr()
    assert status == 2
    assert CountingDriver.opened >= 1 and "divergences: none" in captured.out
    assert captured.err == f"cowspec: --report {unwritable}: cannot write (No such file or directory)\n"
