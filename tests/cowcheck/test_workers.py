"""``cowspec check --workers N``: processes side by side, each in its own mount namespace, and nothing left behind.

Each worker is a process of its own with its own private mount namespace
and seed; the parent adds up their tallies; the first divergence stops the
others. Killed with ``kill -9``, a run leaves no worker, no mount and no
scratch directory behind (what a killed single-process run leaves, the next
start removes).
"""

import argparse
import glob
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cowcheck.cli.generate import _snapshot, _tally_of, generated_check
from cowcheck.drivers.kernel_overlay import KernelOverlay, KernelSession
from cowcheck.drivers.namespace import SCRATCH_PREFIX
from cowcheck.drivers.registry import filesystem_driver
from cowcheck.machines import profiles
from cowcheck.machines.fs_machine import Tally, first_divergence
from cowspec.formats.trace import decode_trace
from cowspec.fs.build import LayerEntry
from cowspec.fs.features import Features
from tests.cowcheck.test_compare import OtherDriver
from tests.cowcheck.test_machine import LyingDriver


def check_arguments(tmp_path: Path, **given: object) -> argparse.Namespace:
    """The arguments ``cowspec check`` would pass, for a small run."""
    defaults: dict[str, object] = {
        "profile": "dev",
        "examples": 40,
        "steps": 8,
        "workers": 2,
        "database": "none",
        "progress": "never",
        "save": str(tmp_path / "out"),
        "feature": [],
    }
    return argparse.Namespace(**{**defaults, **given})


class RecordingKernel(KernelOverlay):
    """The kernel driver, writing down which process and mount namespace opened each session."""

    def __init__(self, record: Path) -> None:
        super().__init__()
        self.record = record

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> KernelSession:
        session = super().open(layers, features)
        with open(self.record, "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {os.readlink('/proc/self/ns/mnt')}\n")
        return session


@pytest.mark.kernel
def test_workers_run_in_their_own_namespaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kernel: KernelOverlay
) -> None:
    """[OBSERVE-1] Two workers: two processes, two private mount namespaces, one report of both."""
    record = tmp_path / "sessions"
    status = generated_check(RecordingKernel(record), check_arguments(tmp_path))
    report = capsys.readouterr().out
    assert status == 0, report
    seen = {tuple(line.split()) for line in record.read_text().splitlines()}
    pids = {pid for pid, _ in seen}
    namespaces = {namespace for _, namespace in seen}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    assert len(namespaces) == 2 and os.readlink("/proc/self/ns/mnt") not in namespaces
    sessions = len(record.read_text().splitlines())
    # The report adds up both workers' examples (one session each), after a header that came first.
    assert report.index("kernel: Linux") < report.index("budget: 40 examples of up to 8 ops, 2 workers")
    assert f"  {sessions} examples, " in report and "divergences: none" in report
    assert multiprocessing.active_children() == []


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "drivers" / "overlay_driver.py"


@pytest.mark.kernel
def test_the_example_exec_driver_agrees_through_two_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kernel: KernelOverlay
) -> None:
    """[OBSERVE-1] ``--driver exec:... --workers 2``: the program cowspec shook hands with before the run serves
    neither worker (each starts its own), so their requests never interleave and the run agrees."""
    driver = filesystem_driver(f"exec:{sys.executable} {EXAMPLE}")
    status = generated_check(driver, check_arguments(tmp_path, examples=20))
    report = capsys.readouterr().out
    assert status == 0, report
    assert "2 workers" in report and "divergences: none" in report
    assert multiprocessing.active_children() == []


def test_the_workers_rule_counts_are_added_up() -> None:
    """Each worker's rule counts reach the parent as JSON and are merged with the others'."""
    first, second = Tally(), Tally()
    first.rules.exercised.update({"OP-4": 2, "LOOKUP-1": 5})
    first.rules.relaxed["CONFORM-5"] = 1
    second.rules.exercised["OP-4"] = 3
    second.rules.broken["WHITEOUT-2"] = 1
    sent = [json.loads(json.dumps(_snapshot(each))) for each in (first, second)]
    total = _tally_of(sent).rules
    assert total.exercised == {"OP-4": 5, "LOOKUP-1": 5}
    assert total.broken == {"WHITEOUT-2": 1} and total.relaxed == {"CONFORM-5": 1}


def test_two_workers_count_the_relaxations_under_portable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[CONFORM-5] Two workers over an implementation that leaves whiteouts out of plain listings: the report
    adds up both workers' relaxations and rule counts."""
    report = tmp_path / "report.md"
    budget = profiles.planted_bug_search()  # derandomized (profile ci): each worker's seed is fixed
    arguments = check_arguments(
        tmp_path,
        profile="ci",
        examples=budget.max_examples,
        steps=budget.stateful_step_count,
        conformance="portable",
        report=[str(report)],
    )
    status = generated_check(OtherDriver("listing"), arguments)
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "relaxations applied (portable): " in printed and "CONFORM-5" in printed
    markdown = report.read_text()
    assert (
        f"| budget | {budget.max_examples} examples of up to {budget.stateful_step_count} ops, 2 workers," in markdown
    )
    examples = int(markdown.split("| examples | ", 1)[1].split(" ", 1)[0])
    assert examples >= budget.max_examples  # both workers' shares, added up
    assert "| OP-4 | " in markdown and "| CONFORM-5 | " in markdown
    assert multiprocessing.active_children() == []


class LyingKernel(LyingDriver):
    """The planted liar over the kernel, made with no arguments."""

    def __init__(self) -> None:
        super().__init__(KernelOverlay())


@pytest.mark.kernel
def test_the_first_divergence_stops_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kernel: KernelOverlay
) -> None:
    """[WHITEOUT-2] A worker that finds the liar out stops the other; one minimal trace is saved."""
    started = time.monotonic()
    status = generated_check(LyingKernel(), check_arguments(tmp_path, examples=100000, steps=10))
    elapsed = time.monotonic() - started
    report = capsys.readouterr().out
    assert status == 1, report
    assert report.count("divergence 1 breaks WHITEOUT-2: upper /") == 1 and "divergence 2" not in report
    assert elapsed < 300  # far less than 100,000 examples would take: the other worker was stopped
    assert multiprocessing.active_children() == []
    saved = sorted((tmp_path / "out").iterdir())
    assert [each.name for each in saved] == ["divergence-1.json"]
    trace = decode_trace(json.loads(saved[0].read_text()))
    assert first_divergence(LyingKernel(), trace) is not None
    assert first_divergence(kernel, trace) is None


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children...)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    text = handle.read()
            except OSError:
                continue
            parents[int(entry)] = int(text[text.rfind(")") + 2 :].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def scratch_of(pid: int) -> list[str]:
    """The scratch directories a process ``pid`` made (``/tmp/cowcheck-PID.START-XXXX``)."""
    return glob.glob(os.path.join("/tmp", f"{SCRATCH_PREFIX}{pid}.*"))


CHECK = [
    sys.executable,
    "-m",
    "cowcheck.cli",
    "check",
    "--driver",
    "kernel-overlay",
    "--profile",
    "dev",
    "--database",
    "none",
]


def start_check(tmp_path: Path, workers: int) -> "subprocess.Popen[str]":
    """A long ``cowspec check`` against the kernel, once it has run examples."""
    process = subprocess.Popen(
        [*CHECK, "--examples", "100000", "--workers", str(workers), "--progress", "always", "--save", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = ""
    while "examples/s" not in seen or "cowspec: 0 examples" in seen.rsplit("\x1b[K", 1)[-1]:
        chunk = process.stderr.read(1)
        assert chunk, f"the check ended early: {seen!r}"
        seen += chunk
    return process


def wait_gone(pids: set[int], seconds: float = 20) -> set[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return {pid for pid in pids if alive(pid)}


@pytest.mark.kernel
def test_a_killed_run_with_workers_leaves_nothing(tmp_path: Path, kernel: KernelOverlay) -> None:
    """``kill -9`` of the parent: its workers and their container processes die, their scratch goes with them."""
    process = start_check(tmp_path, workers=2)
    below = descendants(process.pid)
    assert len(below) >= 2
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert wait_gone(below) == set()
    assert [path for pid in {process.pid, *below} for path in scratch_of(pid)] == []


@pytest.mark.kernel
def test_what_a_killed_run_left_goes_at_the_next_start(tmp_path: Path, kernel: KernelOverlay) -> None:
    """``kill -9`` of a single-process run leaves its empty scratch directory; the next run removes it."""
    process = start_check(tmp_path, workers=1)
    below = descendants(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert wait_gone(below) == set()  # its container process read the end of its pipe and left
    left = scratch_of(process.pid)
    assert len(left) == 1 and os.listdir(left[0]) == []
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        assert left[0] not in table.read()
    done = subprocess.run(
        [*CHECK, "--examples", "1", "--progress", "never", "--save", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert scratch_of(process.pid) == []


@pytest.mark.kernel
def test_a_run_with_workers_that_ends_leaves_nothing(tmp_path: Path, kernel: KernelOverlay) -> None:
    """A run that ends normally leaves no scratch directory of its own or of a worker's, for no sweep to find.

    Workers leave by ``os._exit``, without exit handlers: each removes its scratch space itself.
    """
    process = subprocess.Popen(
        [*CHECK, "--examples", "20", "--workers", "2", "--progress", "never", "--save", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: set[int] = set()
    while process.poll() is None:  # note the workers while they run: their scratch directories name them
        workers |= descendants(process.pid)
        time.sleep(0.05)
    out, err = process.communicate()
    assert process.returncode == 0, out + err
    assert workers, "no worker was seen"
    assert [path for pid in {process.pid, *workers} for path in scratch_of(pid)] == []
