"""The example C driver (``examples/drivers/c``), held to the model through ``cowspec-driver/1``.

The program is built with its own Makefile into a temporary directory (the
source tree gets no build artefacts) and spoken to as ``--driver
exec:PROGRAM`` would: through ``ExecProgram``. Without a flag it must agree
with the model, and with cowspec's own kernel driver result for result, on
every kept vector, every filesystem scenario of the suite, and a run of the
state machine. Each of its planted bugs (``--bug=NAME``) must be found by
the state machine and cut by ``minimise`` to a trace of a few ops and
entries that shows that bug: ``rmdir-checks-lower`` asks the image's copies
of a directory whether it is empty, not the merged view, so the trace ends
in an ``rmdir`` refused with ENOTEMPTY; ``size-counts-links`` counts a file
once per hardlink, so the sizes differ after a second name is made.
"""

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.compare import Difference, result_differences
from cowcheck.drivers.exec_driver import ExecProgram
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.protocol import Driver
from cowcheck.drivers.runner import run_real
from cowcheck.machines import profiles
from cowcheck.machines.fs_machine import Divergence, Tally, _smaller, first_divergence, machine_for, minimise
from cowspec.formats.oracle import oracle, oracle_following
from cowspec.formats.trace import Trace, decode_trace
from cowspec.fs.calls import Link, Rmdir
from cowspec.fs.features import Features
from tests.fs import every_scenario
from tests.support import Scenario

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "drivers" / "c"
VECTORS = sorted((ROOT / "conformance" / "cowcheck" / "vector_set" / "found").glob("fs-*.json"))
SCENARIOS: list[Scenario] = every_scenario()


@pytest.fixture(scope="module")
def binary(kernel: KernelOverlay, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The driver, built by its Makefile (with -Werror) outside the source tree."""
    missing = [tool for tool in ("make", "gcc") if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the C driver cannot be built in CI: no {', '.join(missing)}")
        pytest.skip(f"no {', '.join(missing)} to build the C driver")
    out = tmp_path_factory.mktemp("c-driver")
    built = subprocess.run(
        ["make", "-s", "-C", str(EXAMPLE), f"OUT={out}"], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert not (EXAMPLE / "overlay-driver").exists(), "the build left a program in the source tree"
    return out / "overlay-driver"


@contextlib.contextmanager
def program(binary: Path, *flags: str) -> Iterator[Driver]:
    """The program's filesystem level; the program ends (bye, then its group killed) afterwards."""
    with ExecProgram([str(binary), *flags]) as started:
        yield started.filesystem()


@pytest.fixture(scope="module")
def c_driver(binary: Path) -> Iterator[Driver]:
    """The driver as it should be."""
    with program(binary) as driver:
        yield driver


def load(path: Path) -> Trace:
    return decode_trace(json.loads(path.read_text()))


def agrees(driver: Driver, kernel: KernelOverlay, trace: Trace) -> None:
    """The model allows what ``driver`` did on ``trace``, and cowspec's kernel driver did exactly the same."""
    observed = run_real(driver, trace)
    differences = result_differences(oracle_following(trace, observed), observed)
    assert not differences, "\n".join(differences)
    assert observed == run_real(kernel, trace)


@pytest.mark.kernel
def test_the_driver_declares_what_it_supports(binary: Path) -> None:
    """The handshake: the filesystem level, redirect_dir, nothing it does not do."""
    with ExecProgram([str(binary)]) as started:
        assert started.levels == frozenset({"filesystem"})
        assert started.features == frozenset({"redirect_dir"})
        assert started.name == "c-overlay"


@pytest.mark.kernel
@pytest.mark.parametrize("path", VECTORS, ids=[each.stem for each in VECTORS])
def test_the_driver_agrees_on_the_vectors(path: Path, c_driver: Driver, kernel: KernelOverlay) -> None:
    """[OBSERVE-1] Every kept vector: the result, and step by step as the machine compares."""
    trace = load(path)
    agrees(c_driver, kernel, trace)
    assert first_divergence(c_driver, trace) is None


@pytest.mark.kernel
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[each.name for each in SCENARIOS])
def test_the_driver_agrees_on_the_scenarios(scenario: Scenario, c_driver: Driver, kernel: KernelOverlay) -> None:
    """[OBSERVE-1] Every filesystem scenario of the suite, as its kernel test runs it."""
    agrees(c_driver, kernel, decode_trace(scenario.trace()))


@pytest.mark.kernel
@pytest.mark.parametrize("features", [Features(), Features(redirect_dir=True)], ids=["docker", "redirect_dir"])
def test_the_machine_finds_no_divergence(c_driver: Driver, features: Features) -> None:
    """[OBSERVE-1] The state machine, with the planted-bug budget, finds nothing in the driver as it should be."""
    tally = Tally()
    run_state_machine_as_test(machine_for(c_driver, tally, features), settings=profiles.planted_bug_search())
    assert tally.examples >= profiles.planted_bug_search().max_examples
    assert tally.ops > tally.examples
    assert tally.by_op["rmdir ok"] > 0 and tally.by_op["rmdir ENOTEMPTY"] > 0


def shows_rmdir_checks_lower(trace: Trace, differences: list[Difference]) -> None:
    """The rmdir of a directory that looks empty is refused: the model removes it, the buggy driver says
    ENOTEMPTY, and the difference names the rule of an empty merged directory [RMDIR-2]."""
    last = trace.ops[-1]
    assert isinstance(last, Rmdir), (trace, differences)
    first = differences[0]
    assert (first.field, first.path, first.expected, first.actual) == (
        "result",
        f"op {len(trace.ops) - 1}",
        {"ok": True},
        {"errno": "ENOTEMPTY"},
    ), differences
    assert first.rule.startswith("RMDIR-"), first


def shows_size_counts_links(trace: Trace, differences: list[Difference]) -> None:
    """The sizes differ and nothing else does, and the trace makes a second name for a file (a hardlink
    entry or a link op)."""
    assert {difference.field for difference in differences} == {"sizes"}, differences
    linked = any(isinstance(op, Link) for op in trace.ops) or any(
        entry.type == "hardlink" for layer in trace.layers for entry in layer
    )
    assert linked, trace


PLANTED: dict[str, Callable[[Trace, list[Difference]], None]] = {
    "rmdir-checks-lower": shows_rmdir_checks_lower,
    "size-counts-links": shows_size_counts_links,
}


@pytest.mark.kernel
@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_the_machine_finds_the_planted_bug(bug: str, binary: Path, c_driver: Driver, kernel: KernelOverlay) -> None:
    """[RMDIR-2][SIZE-1] Each planted bug is found, and cut down to a trace of a few ops and entries."""
    with program(binary, f"--bug={bug}") as buggy_driver:
        with pytest.raises(Divergence) as raised:
            run_state_machine_as_test(machine_for(buggy_driver, Tally()), settings=profiles.planted_bug_search())
        trace, differences = minimise(buggy_driver, raised.value.trace)
        PLANTED[bug](trace, differences)
        assert len(trace.ops) <= 4, trace
        assert sum(len(layer) for layer in trace.layers) <= 4, trace
        # The trace is 1-minimal and shows the bug alone: the driver without the flag agrees with the model on it.
        for smaller in _smaller(trace):
            assert first_divergence(buggy_driver, smaller) is None, smaller
        assert result_differences(oracle(trace), run_real(buggy_driver, trace)) != []
    assert first_divergence(c_driver, trace) is None
    agrees(c_driver, kernel, trace)
