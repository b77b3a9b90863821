"""Chapter 8 on the kernel: the index and metacopy scenarios replayed on
Linux's overlayfs, and a short derandomized state machine run for every
feature combination the kernel mounts [FEATURE-3][INDEX-1][METACOPY-1].

Marked ``kernel``: they fail, not skip, under ``CI=true`` when the kernel
cannot run them (``tests/conftest.py``).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.machines.fs_machine import Tally, machine_for
from cowspec.fs.features import ACCEPTED, Features
from tests.fs.test_index import SCENARIOS as INDEX_SCENARIOS
from tests.fs.test_metacopy import SCENARIOS as METACOPY_SCENARIOS
from tests.support import scenario_tests

_, test_index_scenarios_on_the_kernel = scenario_tests(INDEX_SCENARIOS)
_, test_metacopy_scenarios_on_the_kernel = scenario_tests(METACOPY_SCENARIOS)


FEATURE_RULES = {
    "index": ("INDEX-1", "INDEX-2", "INDEX-3"),
    "metacopy": ("METACOPY-1", "METACOPY-2", "METACOPY-3"),
    "redirect_dir": ("REDIRECT-2", "REDIRECT-3", "REDIRECT-4"),
}
"""The rules a short run with each feature on must exercise."""


@pytest.mark.kernel
@pytest.mark.parametrize("features", ACCEPTED[1:], ids=lambda features: "+".join(features.enabled()))
def test_a_short_machine_agrees_with_the_kernel(kernel: KernelOverlay, features: Features) -> None:
    """[FEATURE-3][INDEX-2][METACOPY-2] every result, tree and size, every step, for every combination the
    kernel mounts; derandomized, so a failure reproduces, and the feature's rules are exercised."""
    tally = Tally()
    budget = settings(max_examples=60, stateful_step_count=20, deadline=None, database=None, derandomize=True)
    run_state_machine_as_test(machine_for(kernel, tally, features), settings=budget)
    assert tally.examples >= 60 and tally.ops > tally.examples
    assert not tally.rules.broken and not tally.rules.relaxed
    for name in features.enabled():
        for rule in FEATURE_RULES[name]:
            assert tally.rules.exercised[rule] > 0, (rule, dict(tally.rules.exercised))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["check", "--driver", "kernel-overlay", "--feature", "metacopy"], "conflicting options"),
        (["oracle", "TRACE"], "conflicting options"),
        (["check", "--driver", "kernel-overlay", "TRACE"], "conflicting options"),
    ],
)
def test_a_refused_combination_is_one_line_and_a_failure(tmp_path: Path, arguments: list[str], message: str) -> None:
    """[FEATURE-3] metacopy without redirect_dir: the kernel's reason in one line, a non-zero exit, no traceback."""
    trace = tmp_path / "refused.json"
    trace.write_text(json.dumps({"format": "cowspec-trace/1", "features": {"metacopy": True}, "layers": [], "ops": []}))
    command = [sys.executable, "-m", "cowcheck.cli", *(str(trace) if each == "TRACE" else each for each in arguments)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("cowspec: ") and message in done.stderr
    assert "Traceback" not in done.stderr
