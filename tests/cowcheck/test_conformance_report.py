"""``cowspec conformance-report``: gathered from real runs, rendered, every kept divergence replayed.

The pages are checked twice: with a runner that stands in for the checks
(a diverging JSON report written where the check would write it, so that
the rendering of a divergence, its sentence and its trace file are checked
exactly), and for real, with the kernel's overlayfs (a dev run, which
agrees) and kept divergences replayed by ``cowspec check``: a trace that
diverges on the implementation is reported as diverging, one that does not
as agreeing now.
"""

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from cowcheck.cli.conformance_commands import IMPLEMENTATION_NAMES
from cowcheck.conformance_report import IMPLEMENTATIONS, Finished, Implementation, generate
from cowcheck.drivers.kernel_overlay import KernelOverlay, KernelSession
from cowcheck.report import render
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Op
from cowspec.fs.features import Features
from cowspec.fs.observe import Entry
from tests.cowcheck.test_report import diverging_report
from tests.support import d, f, op

FAKE = Implementation("fake-overlay", "fake-overlay", "filesystem", ("kernel", "portable"))


def fake_runner(statuses: dict[str, int]) -> Callable[[Sequence[str]], Finished]:
    """A runner standing in for ``cowspec``: each check writes the report of a diverging run where asked."""

    def run(argv: Sequence[str]) -> Finished:
        arguments = list(argv)
        if "check" in arguments and "--report" in arguments:
            target = arguments[arguments.index("--report") + 1]
            conformance = arguments[arguments.index("--conformance") + 1]
            if statuses.get(conformance, 1) == 3:
                return Finished(3, "cowspec: driver fake-overlay cannot run here: no /dev/fuse")
            Path(target).write_text(render(diverging_report(conformance=conformance), target), encoding="utf-8")
            return Finished(1, "")
        raise AssertionError(f"unexpected command {arguments}")

    return run


def test_a_divergence_gets_a_sentence_its_rule_and_a_replayable_trace(tmp_path: Path) -> None:
    runs, known = generate(
        tmp_path,
        [FAKE],
        profile="dev",
        workers=1,
        known_directory=tmp_path / "none",
        with_matrix=False,
        command="cowspec conformance-report --profile dev",
        runner=fake_runner({}),
    )
    assert [run.label for run in runs] == ["fake-overlay-kernel", "fake-overlay-portable"] and known == {
        "fake-overlay": []
    }
    expected = diverging_report().divergences[0]
    index = (tmp_path / "README.md").read_text()
    assert "| fake-overlay | filesystem | kernel (dev) | 1 | 2 |" in index
    page = (tmp_path / "fake-overlay.md").read_text()
    assert f"### Divergence 1: {expected.rule}" in page
    first = expected.differences[0]
    assert f"{first.field} of `{first.path}`: the model says" in page and f"[{first.rule}]" in page
    trace = json.loads((tmp_path / "traces" / "fake-overlay-kernel-1.json").read_text())
    assert trace["format"] == "cowspec-trace/1" and trace["ops"] == expected.trace["ops"]  # type: ignore[index]
    assert (
        f"cowspec check --driver fake-overlay --conformance portable {tmp_path}/traces/fake-overlay-portable-1.json"
        in page
    )
    summary = json.loads((tmp_path / "runs" / "summary.json").read_text())
    assert [each["status"] for each in summary["runs"]] == [1, 1]


def test_a_run_that_could_not_be_made_is_said_not_hidden(tmp_path: Path) -> None:
    runs, _known = generate(
        tmp_path,
        [FAKE],
        profile="dev",
        workers=1,
        known_directory=tmp_path,
        with_matrix=False,
        command="cowspec conformance-report",
        runner=fake_runner({"portable": 3}),
    )
    assert [run.failure for run in runs] == ["", "cowspec: driver fake-overlay cannot run here: no /dev/fuse"]
    assert (
        "could not run: cowspec: driver fake-overlay cannot run here: no /dev/fuse"
        in (tmp_path / "README.md").read_text()
    )


class OverSizedSession:
    """A kernel session that says its container is one byte bigger than it is."""

    def __init__(self, inner: KernelSession) -> None:
        self.inner = inner

    def perform(self, op: Op) -> Entry:
        return self.inner.perform(op)

    def merged(self) -> list[Entry]:
        return self.inner.merged()

    def upper(self) -> list[Entry]:
        return self.inner.upper()

    def sizes(self) -> Entry:
        sizes = self.inner.sizes()
        return {"size": int(str(sizes["size"])) + 1, "virtual_size": int(str(sizes["virtual_size"])) + 1}

    def close(self) -> None:
        self.inner.close()


class OverSizedOverlay:
    """The kernel's overlayfs with a planted size bug: every run of it diverges, on SIZE rules only."""

    name = "oversized-overlay"
    level = "filesystem"

    def __init__(self) -> None:
        self.kernel = KernelOverlay()

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> OverSizedSession:
        return OverSizedSession(self.kernel.open(layers, features))


@pytest.mark.kernel
def test_real_runs_and_kept_divergences_replayed(tmp_path: Path, kernel: KernelOverlay) -> None:
    """For real: the kernel agrees with the model on a dev run, a driver with a planted size bug diverges and its
    divergence is on its page with its trace; kept traces are replayed on the implementation: one that shows the
    bug 'diverges', and on the kernel itself the same trace 'agrees now'."""
    kept = tmp_path / "kept"
    trace = {
        "format": "cowspec-trace/1",
        "layers": [[d("/a"), f("/a/a", "x")]],
        "ops": [op("unlink", path="/a/a"), op("rmdir", path="/a")],
    }
    listing = [{"trace": "sizes.json", "rule": "SIZE-1", "verdict": "bug", "summary": "one byte too many"}]
    for name in ("kernel-overlay", "oversized"):
        (kept / name).mkdir(parents=True)
        (kept / name / "sizes.json").write_text(json.dumps(trace))
        (kept / name / "divergences.json").write_text(json.dumps(listing))
    implementations = [
        Implementation("kernel-overlay", "kernel-overlay", "filesystem", known="kernel-overlay"),
        Implementation("oversized", f"{__name__}:OverSizedOverlay", "filesystem", known="oversized"),
    ]
    runs, known = generate(
        tmp_path / "out",
        implementations,
        profile="dev",
        workers=1,
        known_directory=kept,
        with_matrix=False,
        command="cowspec conformance-report --profile dev",
    )
    truth, oversized = runs
    assert truth.failure == "" and truth.status == 0, truth
    assert int(str(truth.data["examples"])) > 0 and int(str(truth.data["ops"])) > 0 and truth.data["divergences"] == []
    assert oversized.failure == "" and oversized.status == 1, oversized
    assert [each.replayed for each in known["kernel-overlay"]] == ["agrees now"]
    assert [each.replayed for each in known["oversized"]] == ["diverges"]
    page = (tmp_path / "out" / "oversized.md").read_text()
    assert (
        "### Divergence 1: SIZE-2" in page and "sizes of `size`: the model says 0, oversized gave 1 [SIZE-2]." in page
    )
    assert "| [`sizes.json`](../../tests/divergences/oversized/sizes.json) | SIZE-1 | **bug** |" in page
    assert "No divergence was found in this run." in (tmp_path / "out" / "kernel-overlay.md").read_text()
    index = (tmp_path / "out" / "README.md").read_text()
    assert "| oversized | filesystem | kernel (dev) |" in index and "| 1 (1) |" in index


def test_the_command_names_every_implementation_the_report_runs() -> None:
    assert tuple(each.name for each in IMPLEMENTATIONS) == IMPLEMENTATION_NAMES
