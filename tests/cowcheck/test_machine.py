"""The state machine: the model held against the kernel on random stacks.

The budget comes from the Hypothesis profile (``dev`` by default, ``ci`` in
CI: at least 500 examples of 30 steps, derandomized).
"""

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.compare import result_differences
from cowcheck.drivers.kernel_overlay import KernelOverlay, KernelSession
from cowcheck.drivers.runner import run_real
from cowcheck.machines.fs_machine import Divergence, Tally, _smaller, first_divergence, machine_for, minimise
from cowspec.formats.oracle import oracle
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Op, Rename, Rmdir, Unlink
from cowspec.fs.features import Features
from cowspec.fs.observe import Entry

ERRNOS = ("ENOENT", "ENOTDIR", "EEXIST", "EISDIR", "ENOTEMPTY", "ELOOP", "EINVAL", "EPERM", "EBUSY")


@pytest.mark.kernel
@pytest.mark.parametrize("features", [Features(), Features(redirect_dir=True)], ids=["docker", "redirect_dir"])
def test_model_agrees_with_the_kernel(kernel: KernelOverlay, features: Features) -> None:
    """[OBSERVE-1][LOOKUP-1][COPYUP-6][WHITEOUT-2][RENAME-6][REDIRECT-2] every result, tree and size, every step."""
    tally = Tally()
    run_state_machine_as_test(machine_for(kernel, tally, features), settings=settings())
    current = settings()
    assert tally.examples >= current.max_examples
    assert tally.ops > tally.examples
    # The generated mix reaches successes and the errnos of the issue.
    assert tally.results["ok"] > tally.ops // 10
    if current.max_examples >= 500:
        expected = ERRNOS if features.redirect_dir else (*ERRNOS, "EXDEV")
        for name in expected:
            assert tally.results[name] > 0, name
        if features.redirect_dir:
            assert tally.results["EXDEV"] == 0


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
    """[WHITEOUT-2] A driver that hides whiteouts is caught, with a small trace."""
    tally = Tally()
    with pytest.raises(Divergence) as raised:
        run_state_machine_as_test(
            machine_for(LyingDriver(kernel), tally),
            settings=settings(max_examples=300, stateful_step_count=20, database=None, deadline=None, derandomize=True),
        )
    assert "upper" in str(raised.value) and "whiteout" in str(raised.value)
    trace, reason = minimise(LyingDriver(kernel), raised.value.trace)
    assert "whiteout" in reason
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
