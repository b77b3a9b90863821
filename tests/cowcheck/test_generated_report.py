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
import io
import json
import re
from pathlib import Path

import pytest

from cowcheck.cli.generate import Progress, generated_check
from cowcheck.cli.main import main
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.machines import profiles
from cowcheck.machines.fs_machine import first_divergence
from cowspec.formats.trace import Trace, decode_trace
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Op
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
    total, each = relaxations_printed(printed)
    # Varying link counts also meets names of a hardlink hidden by an unlink, which CONFORM-6 relaxes.
    also = {"CONFORM-6"} if variation == "nlink" else set()
    assert each[relaxation] > 0 and {relaxation, "CONFORM-2", "CONFORM-3"} <= set(each)
    assert set(each) <= {relaxation, "CONFORM-2", "CONFORM-3", *also}
    markdown = (tmp_path / "portable.md").read_text()
    assert "| verdict | agrees |" in markdown and "| conformance | portable |" in markdown
    assert f"| relaxations applied | {total} |" in markdown
    row = rule_row(markdown, relaxation)
    assert row["relaxed"] == str(each[relaxation]) and row["status"] == "relaxed"
    assert rule_row(markdown, broken)["broken"] == "0"


def relaxations_printed(printed: str) -> tuple[int, dict[str, int]]:
    """The printed report's ``relaxations applied (portable): TOTAL (RULE N, ...)``: the total and each rule's
    count (the total checked to be their sum)."""
    said = re.search(r"relaxations applied \(portable\): (\d+) \((.*)\)$", printed, re.M)
    assert said is not None, printed
    each = {rule: int(count) for rule, count in (part.split() for part in said.group(2).split(", "))}
    assert int(said.group(1)) == sum(each.values())
    return int(said.group(1)), each


def test_every_comparison_of_the_trees_and_sizes_is_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[OBSERVE-1][SIZE-2][SIZE-3][CONFORM-2][CONFORM-3] The trees and sizes are compared after every step: under
    kernel OBSERVE-1 and the size rules are exercised each time (a size bug is broken where it was exercised);
    under portable OBSERVE-1 is, and leaving the upper layer and the sizes out is a relaxation each time."""
    status = generated_check(OtherDriver("sizes"), planted_bug_arguments(tmp_path, "kernel", "kernel.md"))
    printed = capsys.readouterr().out
    assert status == 1 and "divergence 1 breaks SIZE-2: " in printed, printed
    markdown = (tmp_path / "kernel.md").read_text()
    steps = int(rule_row(markdown, "OBSERVE-1")["exercised"])
    assert steps > 0
    assert rule_row(markdown, "SIZE-2")["exercised"] == rule_row(markdown, "SIZE-3")["exercised"] == str(steps)
    assert rule_row(markdown, "SIZE-2")["status"] == "broken"
    assert rule_row(markdown, "CONFORM-2")["relaxed"] == rule_row(markdown, "CONFORM-3")["relaxed"] == "0"

    status = generated_check(OtherDriver(), planted_bug_arguments(tmp_path, "portable", "portable.md"))
    printed = capsys.readouterr().out
    assert status == 0, printed
    _, each = relaxations_printed(printed)
    markdown = (tmp_path / "portable.md").read_text()
    steps = int(rule_row(markdown, "OBSERVE-1")["exercised"])
    assert steps > 0 and each == {"CONFORM-2": steps, "CONFORM-3": steps}
    for rule in ("CONFORM-2", "CONFORM-3"):
        assert rule_row(markdown, rule)["relaxed"] == str(steps) and rule_row(markdown, rule)["status"] == "relaxed"
    assert rule_row(markdown, "SIZE-2")["exercised"] == "0"


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


def refused_before_the_run(capsys: pytest.CaptureFixture[str], *options: str) -> str:
    """``cowspec check`` with ``options`` over a counting driver: exit 2, nothing printed, no session opened; the
    one line it said."""
    CountingDriver.opened = 0
    driver = f"{__name__}:CountingDriver"
    status = main(
        ["check", "--driver", driver, "--examples", "1", "--database", "none", "--progress", "never", *options]
    )
    captured = capsys.readouterr()
    assert status == 2, captured
    assert captured.out == "" and CountingDriver.opened == 0
    assert captured.err.count("\n") == 1 and captured.err.startswith("cowspec: "), captured.err
    return captured.err


def test_a_report_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A report file in a directory that does not exist, under a plain file, or a report that is a directory:
    one line before anything runs, exit 2 (a nightly run is not spent to lose its report)."""
    save = ["--save", str(tmp_path / "out")]
    missing = str(tmp_path / "missing" / "report.html")
    said = refused_before_the_run(capsys, *save, "--report", missing)
    assert said == f"cowspec: --report {missing}: the directory {tmp_path / 'missing'} does not exist\n"
    (tmp_path / "plain").write_text("")
    under_a_file = str(tmp_path / "plain" / "report.md")
    said = refused_before_the_run(capsys, *save, "--report", under_a_file)
    assert said == f"cowspec: --report {under_a_file}: the directory {tmp_path / 'plain'} is not a directory\n"
    (tmp_path / "folder.md").mkdir()
    said = refused_before_the_run(capsys, *save, "--report", str(tmp_path / "folder.md"))
    assert said == f"cowspec: --report {tmp_path / 'folder.md'}: is a directory\n"
    assert not (tmp_path / "out").exists()


def test_a_save_directory_that_cannot_be_made_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--save`` under a plain file, or a plain file itself: one line before anything runs, exit 2."""
    (tmp_path / "plain").write_text("")
    deep = str(tmp_path / "plain" / "a" / "b")
    said = refused_before_the_run(capsys, "--save", deep)
    assert said == f"cowspec: --save {deep}: not a directory ({tmp_path / 'plain'} is a file)\n"
    said = refused_before_the_run(capsys, "--save", str(tmp_path / "plain"))
    assert said == f"cowspec: --save {tmp_path / 'plain'}: not a directory\n"


def test_a_save_directory_is_not_made_by_a_run_that_agrees(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The check of ``--save`` makes nothing: a run with no divergence leaves no directory behind, even a deep
    one, and a report in an existing directory is written."""
    CountingDriver.opened = 0
    save, report = tmp_path / "new" / "deeper" / "out", tmp_path / "report.md"
    options = ["--examples", "1", "--database", "none", "--progress", "never", "--save", str(save)]
    status = main(["check", "--driver", f"{__name__}:CountingDriver", *options, "--report", str(report)])
    captured = capsys.readouterr()
    assert status == 0, captured
    assert CountingDriver.opened >= 1 and "divergences: none" in captured.out
    assert not (tmp_path / "new").exists() and report.exists()


def test_the_progress_line_says_shrinking_once_a_divergence_is_found() -> None:
    """Before a divergence the time left; after it Hypothesis shrinks, and the budget's time left means nothing."""
    progress = Progress("never", 100, io.StringIO())
    progress.started -= 10  # 20 examples in 10 s: 80 more take about 40 s
    assert progress.line(20, 100, 0).endswith(" 0 divergences, about 40 s left")
    line = progress.line(20, 100, 1)
    assert line.endswith(" 1 divergence found, shrinking it") and "left" not in line
    assert progress.line(20, 100, 2).endswith(" 2 divergences found, shrinking it")


class NullErrnoSession(OtherSession):
    """The model, whose ok replies carry ``"errno": null`` beside ``"ok": true``."""

    def perform(self, operation: Op) -> dict[str, object]:
        outcome = super().perform(operation)
        return {**outcome, "errno": None} if outcome.get("ok") is True else outcome


class NullErrnoDriver:
    name = "null-errno"

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> NullErrnoSession:
        return NullErrnoSession(layers, features, frozenset())


def test_an_ok_with_a_null_errno_is_counted_as_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The results mix names no errno "None": an ok reply is an ok, whatever null errno rides along (whether
    the comparison accepts such a reply is not what is tested here)."""
    generated_check(NullErrnoDriver(), planted_bug_arguments(tmp_path, "kernel"))
    printed = capsys.readouterr().out.splitlines()
    start = next(index for index, line in enumerate(printed) if line.startswith("  results: "))
    end = next(index for index, line in enumerate(printed) if line.startswith("  rules: "))
    mix = printed[start:end]
    assert mix[0].startswith("  results: ok ") and len(mix) > 1
    assert not [line for line in mix if "None" in line], mix
