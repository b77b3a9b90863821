"""The state machine: the model held against the kernel on random stacks.

The budget comes from the Hypothesis profile (``dev`` by default, ``ci`` in
CI: at least 500 examples of 30 steps, derandomized).

Every divergence the machine found is kept as a trace in ``conformance/cowcheck/vector_set/found/``
(``fs-*.json``), with the commit that fixed it and the result that was
wrong: a state machine takes no ``@example``, so these are its explicit
examples, replayed on the kernel the way the machine compares (every
result, and every tree and size after every step).
"""

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, cast

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.compare import result_differences
from cowcheck.drivers.kernel_overlay import KernelOverlay, KernelSession
from cowcheck.drivers.runner import run_real
from cowcheck.machines import profiles
from cowcheck.machines.fs_machine import (
    Divergence,
    OpsMachine,
    Tally,
    _smaller,
    first_divergence,
    machine_for,
    minimise,
)
from cowspec.formats.oracle import oracle
from cowspec.formats.trace import Trace, decode_trace
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Mkdir, Op, Rename, Rmdir, Unlink
from cowspec.fs.features import Features
from cowspec.fs.observe import Entry

MODEL = Path(__file__).resolve().parents[2] / "reference" / "cowspec" / "fs"


def spec_errnos() -> set[str]:
    """Every errno the filesystem model can give: the ``"E..."`` names in its source."""
    return {name for path in MODEL.glob("*.py") for name in re.findall(r'"(E[A-Z]+)"', path.read_text())}


ERRNOS = tuple(sorted(spec_errnos() - {"EXDEV"}))
"""The errnos every configuration shows; ``EXDEV`` only without redirect_dir."""


def test_the_model_gives_the_errnos_this_file_expects() -> None:
    """The scan finds the errnos of the issue, so that a change of the model's spelling does not empty it."""
    assert {"ENOENT", "ENOTDIR", "EEXIST", "EISDIR", "ENOTEMPTY", "ELOOP", "EINVAL", "EPERM", "EBUSY"} <= set(ERRNOS)
    assert "EXDEV" in spec_errnos()


@pytest.mark.kernel
@pytest.mark.parametrize("features", [Features(), Features(redirect_dir=True)], ids=["docker", "redirect_dir"])
def test_model_agrees_with_the_kernel(kernel: KernelOverlay, features: Features) -> None:
    """[OBSERVE-1][LOOKUP-1][COPYUP-6][WHITEOUT-2][RENAME-6][REDIRECT-2] every result, tree and size, every step."""
    tally = Tally()
    run_state_machine_as_test(machine_for(kernel, tally, features), settings=settings())
    current = settings()
    assert tally.examples >= current.max_examples
    assert tally.ops > tally.examples
    # Every transition's rules were counted, nothing broken, nothing relaxed under kernel.
    assert tally.rules.exercised["OP-4"] > 0 and tally.rules.exercised["COPYUP-6"] > 0
    assert not tally.rules.broken and not tally.rules.relaxed
    # The generated mix reaches successes and the errnos of the issue: paths
    # drawn from the merged view make most calls succeed, creates above all
    # (with placeholder paths, 28% did, and 737 creates of 902 gave EEXIST).
    assert tally.results["ok"] >= tally.ops // 2
    assert tally.by_op["create ok"] > 2 * tally.by_op["create EEXIST"]
    if current.max_examples >= 500:
        expected = ERRNOS if features.redirect_dir else (*ERRNOS, "EXDEV")
        for name in expected:
            assert tally.results[name] > 0, name
        if features.redirect_dir:
            assert tally.results["EXDEV"] == 0


class CountingMachine(OpsMachine):
    """The model's side alone, every result counted in ``RESULTS``."""

    RESULTS: ClassVar[Counter[str]] = Counter()

    def run(self, op: Op) -> Entry:
        outcome = super().run(op)
        self.RESULTS[str(outcome.get("errno", "ok"))] += 1
        return outcome


def test_the_ci_profile_reaches_every_errno_and_mostly_succeeds() -> None:
    """The ``ci`` budget's ops give every errno the spec can give, and at least half of them succeed.

    Run on the model alone, with Docker's configuration (where ``EXDEV``
    shows too); ``test_model_agrees_with_the_kernel`` holds the kernel to
    the same results op by op under the same profile. Paths are drawn from
    what exists for ops that need an object, and fresh names for ops that
    create one.
    """
    CountingMachine.RESULTS.clear()
    run_state_machine_as_test(CountingMachine, settings=settings(settings.get_profile("ci")))
    results = CountingMachine.RESULTS
    assert results["ok"] >= sum(results.values()) / 2, results
    assert spec_errnos() <= set(results), spec_errnos() - set(results)


@pytest.mark.kernel
def test_a_thousand_deep_tree_is_torn_down(kernel: KernelOverlay) -> None:
    """Teardown does not recurse by depth: a trace's 1,000-deep tree is observed and removed."""
    session = kernel.open((), Features())
    home = session.home
    try:
        path = ""
        for _ in range(1000):
            path += "/d"
            assert session.perform(Mkdir(path, 0o755)) == {"ok": True}
        assert len(session.upper()) == 1000
        assert len(session.merged()) == 1000
    finally:
        session.close()
    assert not Path(home).exists()


@dataclass
class LyingSession:
    """A kernel session whose ``unlink`` never leaves a whiteout behind."""

    real: KernelSession

    def perform(self, op: Op) -> Entry:
        return self.real.perform(op)

    def merged(self) -> list[Entry]:
        return self.real.merged()

    def upper(self) -> list[Entry]:
        return [entry for entry in self.real.upper() if entry["type"] != "whiteout"]

    def sizes(self) -> Entry:
        return self.real.sizes()

    def close(self) -> None:
        self.real.close()


class LyingDriver:
    name = "lying"

    def __init__(self, kernel: KernelOverlay) -> None:
        self.kernel = kernel

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> LyingSession:
        return LyingSession(self.kernel.open(layers, features))


@pytest.mark.kernel
def test_the_machine_catches_a_divergence(kernel: KernelOverlay) -> None:
    """[WHITEOUT-2] A driver that hides whiteouts is caught, with a small trace, naming the rule it breaks."""
    tally = Tally()
    with pytest.raises(Divergence) as raised:
        run_state_machine_as_test(machine_for(LyingDriver(kernel), tally), settings=profiles.planted_bug_search())
    assert raised.value.rule == "WHITEOUT-2"
    assert "actual null [WHITEOUT-2]" in str(raised.value)
    assert tally.rules.broken["WHITEOUT-2"] > 0 and tally.rules.exercised["WHITEOUT-2"] > 0
    trace, differences = minimise(LyingDriver(kernel), raised.value.trace)
    assert {(each.field, each.rule, each.actual) for each in differences} == {("upper", "WHITEOUT-2", None)}
    assert all(isinstance(each.expected, dict) and each.expected["type"] == "whiteout" for each in differences)
    # What the minimiser always reaches is a 1-minimal trace: taking away any
    # one op, layer entry or empty layer loses the divergence. (Fewer entries
    # is not always reachable one cut at a time: a parent directory and the
    # file in it may only go together.) The last op is the one that removes.
    assert isinstance(trace.ops[-1], (Unlink, Rmdir, Rename))
    for smaller in _smaller(trace):
        assert first_divergence(LyingDriver(kernel), smaller) is None, smaller
    # The kept trace reproduces the divergence on its own, and only against the liar.
    assert result_differences(oracle(trace), run_real(LyingDriver(kernel), trace)) != []
    assert result_differences(oracle(trace), run_real(kernel, trace)) == []
    assert first_divergence(kernel, trace) is None


# -- what the machine found, kept -------------------------------------------------

VECTORS = Path(__file__).resolve().parents[2] / "conformance" / "cowcheck" / "vector_set" / "found"
FOUND_TRACES = sorted(VECTORS.glob("fs-*.json"))


def load(name: str) -> Trace:
    return decode_trace(json.loads((VECTORS / name).read_text()))


def upper_entry(result: Entry, path: str) -> Entry:
    """The writable layer's entry at ``path`` in a result document."""
    return next(entry for entry in cast(list[Entry], result["upper"]) if entry["path"] == path)


def last_result(result: Entry) -> Entry:
    """The last op's result in a result document."""
    return cast(list[Entry], result["results"])[-1]


FOUND: dict[str, Callable[[Entry], bool]] = {
    # 03ff82f, the first divergence: pwrite of nothing past the end does not
    # extend the file, though the open for writing copies it up [WRITE-1].
    "fs-empty-write-past-end.json": lambda result: (
        result["results"] == [{"ok": True}, {"ok": True, "value": "YWI="}] and upper_entry(result, "/a")["size"] == 2
    ),
    # 05564b1: a rename refused with ENOTEMPTY leaves its source opaque [RENAME-7].
    "fs-failed-rename-marks-opaque.json": lambda result: (
        last_result(result) == {"errno": "ENOTEMPTY"} and upper_entry(result, "/x/m")["opaque"] is True
    ),
    # e4c89b0, with redirect_dir: mkdir in a merged directory is opaque [REDIRECT-4] ...
    "fs-redirect-dir-mkdir-opaque.json": lambda result: upper_entry(result, "/x/n")["opaque"] is True,
    # ... and a refused rename of an image directory still copies it up [RENAME-7][REDIRECT-3].
    "fs-redirect-dir-failed-rename-copies-up.json": lambda result: (
        last_result(result) == {"errno": "ENOTEMPTY"} and upper_entry(result, "/x")["opaque"] is False
    ),
    # 0e2ad86: with no layers the root is still merged, so a directory moved into it is opaque [LOOKUP-4][RENAME-5].
    "fs-no-layers-root-is-merged.json": lambda result: upper_entry(result, "/b")["opaque"] is True,
    # What test_the_machine_catches_a_divergence found against the planted liar: a whiteout to hide.
    "fs-planted-hidden-whiteout.json": lambda result: upper_entry(result, "/a")["type"] == "whiteout",
}


def test_every_found_trace_says_what_it_shows() -> None:
    assert {each.name for each in FOUND_TRACES} == set(FOUND)


@pytest.mark.parametrize("path", FOUND_TRACES, ids=[each.stem for each in FOUND_TRACES])
def test_the_model_gives_what_was_found(path: Path) -> None:
    """[WRITE-1][RENAME-7][REDIRECT-4][REDIRECT-3][LOOKUP-4][RENAME-5] What the kernel showed, the model says."""
    assert FOUND[path.name](oracle(load(path.name)))


@pytest.mark.kernel
@pytest.mark.parametrize("path", FOUND_TRACES, ids=[each.stem for each in FOUND_TRACES])
def test_the_kernel_agrees_step_by_step(path: Path, kernel: KernelOverlay) -> None:
    """[OBSERVE-1] Replayed as the machine compares: every result, tree and size after every step."""
    trace = load(path.name)
    assert first_divergence(kernel, trace) is None
    assert FOUND[path.name](run_real(kernel, trace))


@pytest.mark.kernel
def test_the_planted_liar_is_caught_on_the_kept_trace(kernel: KernelOverlay) -> None:
    """[WHITEOUT-2] The kept trace catches the liar without a search."""
    differences = first_divergence(LyingDriver(kernel), load("fs-planted-hidden-whiteout.json"))
    assert differences is not None
    assert [(each.field, each.path, each.rule) for each in differences] == [("upper", "/a", "WHITEOUT-2")]
    # Under portable the writable layer's form is not compared [CONFORM-2]: the liar passes there.
    assert first_divergence(LyingDriver(kernel), load("fs-planted-hidden-whiteout.json"), "portable") is None
