"""fuse-overlayfs held to the model: what it agrees on, the divergences kept for it, and that it leaves nothing behind.

The divergences are the minimal traces of ``tests/divergences/fuse-overlayfs/``,
each listed in ``divergences.json`` with the rule cowspec reports for it under
each profile (``reported``): every one must still replay as that divergence,
so that a fuse-overlayfs that fixes one makes this test say so. The vectors
the kernel and the model agree on must pass on fuse-overlayfs, or diverge as
one of the listed divergences does. A short derandomized run of the state
machine under ``portable`` may only find divergences of the listed kinds.
Where fuse-overlayfs cannot run (not installed, no ``/dev/fuse``, not root),
these tests skip on a developer's machine and fail under ``CI=true``.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from cowcheck import vectors
from cowcheck.compare import Difference, first_differences
from cowcheck.drivers import fuse_overlay
from cowcheck.drivers.cleanup import descendants, mount_points, sweep_stale
from cowcheck.drivers.fuse_overlay import FuseOverlay, unavailable_reason
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.namespace import SCRATCH_PREFIX, scratch_root
from cowcheck.drivers.protocol import DriverUnavailable
from cowcheck.machines import profiles
from cowcheck.machines.fs_machine import Divergence, Tally, machine_for, minimise
from cowspec.formats.trace import Trace, decode_trace, encode_trace
from cowspec.fs.conformance import CONFORMANCES, Conformance

pytestmark = pytest.mark.kernel

DIVERGENCES = Path(__file__).resolve().parents[1] / "divergences" / "fuse-overlayfs"
LISTED: list[dict[str, Any]] = json.loads((DIVERGENCES / "divergences.json").read_text())

PORTABLE_VECTORS = {
    "chown-clears-set-id-bits": "copyup-directory-drops-setgid",
    "op-owner-of-a-new-object": "copyup-directory-drops-setgid",
    "copyup-breaks-hardlinks": "hardlink-write-shows-through",
    "copyup-image-layers-never-change": "hardlink-write-shows-through",
    "rename-same-inode": "rename-between-hardlinks-changes-nothing",
}
"""The vectors the kernel agrees on that fuse-overlayfs fails under ``portable``, each with the listed divergence
it shows."""
KERNEL_VECTORS = {
    **PORTABLE_VECTORS,
    # A whiteout in layer 1 hides one of three names: the kernel says 3 links, fuse-overlayfs fewer (CONFORM-6).
    "entry-hardlinks-share-an-inode": "hardlink-nlink-counts-names-looked-up",
    "readdir-plain-directory-lists-whiteouts": "readdir-plain-directory-hides-whiteouts",
}
"""Under ``kernel``, the same and the listing of whiteouts; a difference only in the writable layer or the sizes
is the writable layer's form (``upper-new-directory-opaque``)."""


@pytest.fixture(scope="module")
def fuse() -> FuseOverlay:
    """The fuse-overlayfs driver, or a loud failure in CI when it cannot run."""
    reason = unavailable_reason()
    if reason is None:
        try:
            scratch_root()
        except DriverUnavailable as error:
            reason = str(error)
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"fuse-overlayfs tests cannot run in CI: {reason}")
        pytest.skip(f"fuse-overlayfs unavailable: {reason}")
    return FuseOverlay()


def load(name: str) -> Trace:
    return decode_trace(json.loads((DIVERGENCES / name).read_text()))


def fuse_mounts() -> list[str]:
    """FUSE mounts of fuse-overlayfs in this thread's mount namespace."""
    with open("/proc/thread-self/mountinfo") as table:
        return [line.split()[4] for line in table if " - fuse.fuse-overlayfs " in line]


def fuse_processes() -> list[int]:
    """fuse-overlayfs processes started, directly or not, by this one."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as handle:
                if handle.read().strip() == "fuse-overlayfs":
                    found.append(pid)
        except OSError:
            continue
    return found


def test_every_listed_divergence_has_its_trace_and_says_what_it_is() -> None:
    saved = {path.name for path in DIVERGENCES.glob("*.json")} - {"divergences.json"}
    assert saved == {entry["trace"] for entry in LISTED}
    readme = (DIVERGENCES / "README.md").read_text()
    for entry in LISTED:
        assert entry["verdict"] in ("bug", "allowed")
        assert entry["portable"] == (entry["reported"]["portable"] is not None)
        assert f"## {entry['trace'].removesuffix('.json')}" in readme, entry["trace"]


@pytest.mark.parametrize("entry", LISTED, ids=[entry["trace"].removesuffix(".json") for entry in LISTED])
def test_each_divergence_still_replays_with_its_rule(
    entry: dict[str, Any], fuse: FuseOverlay, kernel: KernelOverlay
) -> None:
    """The kernel agrees with the model on the trace; fuse-overlayfs diverges as listed, under each profile."""
    trace = load(entry["trace"])
    assert first_differences(kernel, trace) == [], "the kernel no longer agrees with the model on this trace"
    for conformance in CONFORMANCES:
        differences = first_differences(fuse, trace, conformance=conformance)
        found = differences[0].rule if differences else None
        assert found == entry["reported"][conformance], (
            f"{entry['trace']} under {conformance}: listed as {entry['reported'][conformance]}, now {found}"
            f" ({differences[0].line() if differences else 'agrees: fixed in fuse-overlayfs?'})"
        )


def test_vectors_the_kernel_agrees_on(fuse: FuseOverlay, kernel: KernelOverlay) -> None:
    """Every filesystem vector the kernel agrees on passes on fuse-overlayfs, or shows a listed divergence."""
    files = vectors.build_set(vectors.load_sources())
    manifest, _ = vectors.check_manifest(files)
    listed = {entry["trace"].removesuffix(".json") for entry in LISTED}
    assert set(KERNEL_VECTORS.values()) <= listed
    problems: list[str] = []
    ran = 0
    for name in vectors.chosen(manifest, "fs", []):
        if vectors._unsupported(files, name, fuse.features) or vectors.verify_fs(files, name, kernel):
            continue
        ran += 1
        profiles_and_known: tuple[tuple[Conformance, dict[str, str]], ...] = (
            ("portable", PORTABLE_VECTORS),
            ("kernel", KERNEL_VECTORS),
        )
        for conformance, known in profiles_and_known:
            differences = vectors.verify_fs(files, name, fuse, conformance)
            if name in known:
                if not differences:
                    problems.append(f"{name} now passes under {conformance} (was {known[name]}): update the lists")
                continue
            form_only = all(each.field in ("upper", "sizes") for each in differences)
            if differences and not (conformance == "kernel" and form_only):
                problems.append(f"{name} under {conformance}: {differences[0].line()}")
    assert ran > 50
    assert not problems, "\n".join(problems)


def _kind(trace: Trace, difference: Difference) -> str | None:
    """Which listed divergence a difference the machine found is one of (None: a new one)."""
    hardlinked = any(entry.type == "hardlink" for layer in trace.layers for entry in layer)
    expected, actual = difference.expected, difference.actual
    same_but_set_id = isinstance(expected, int) and isinstance(actual, int) and expected & ~0o6000 == actual & ~0o6000
    if difference.attribute == "mode" and same_but_set_id:
        return "copyup-*-drops-set-id"
    if "ENOMEM" in json.dumps([expected, actual]):
        return "enomem"
    if hardlinked and difference.field in ("merged", "result"):
        return "hardlink-*"
    if difference.attribute in ("uid", "gid") and actual == 0:
        return "copyup-symlink-loses-owner"
    if difference.rule == "WHITEOUT-1" and any(op.__class__.__name__ == "Rename" for op in trace.ops):
        return "renamed-directory-uncovers-the-old-one"
    return None


def test_a_short_portable_machine_run_finds_only_listed_kinds(fuse: FuseOverlay) -> None:
    """The machine, derandomized, under ``portable``: what it finds, minimised, is of a listed kind."""
    tally = Tally()
    machine = machine_for(fuse, tally, conformance="portable")
    budget = settings(
        max_examples=40, stateful_step_count=10, deadline=None, database=None, derandomize=True, phases=profiles.PHASES
    )
    try:
        run_state_machine_as_test(machine, settings=budget)
    except Divergence as found:
        smallest, differences = minimise(fuse, found.trace, budget=150, conformance="portable")
        kind = _kind(smallest, differences[0])
        assert kind is not None, f"a new divergence: {differences[0].line()}\n{json.dumps(encode_trace(smallest))}"
    assert tally.examples > 0 and tally.driver_failure is None


def test_a_failing_start_leaves_nothing(fuse: FuseOverlay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program that exits, one that never mounts, one that is missing: one line each, nothing left behind."""
    silent = tmp_path / "never-mounts"
    silent.write_text("#!/bin/sh\nexec sleep 30\n")
    silent.chmod(0o755)
    monkeypatch.setattr(fuse_overlay, "MOUNT_TIMEOUT", 0.5)
    cases = {"/bin/false": "exited with status 1 before mounting", str(silent): "did not mount"}
    for program, said in cases.items():
        driver = FuseOverlay()
        driver.program = program
        with pytest.raises(DriverUnavailable, match=said) as raised:
            driver.open(((),), load("mkdir-enomem.json").features)
        assert "\n" not in str(raised.value)
        assert fuse_mounts() == [] and fuse_processes() == []
    driver = FuseOverlay()
    driver.program = str(tmp_path / "absent")
    with pytest.raises(DriverUnavailable, match="is missing or not executable"):
        driver.open(((),), load("mkdir-enomem.json").features)


def test_a_session_whose_program_dies_closes_cleanly(fuse: FuseOverlay) -> None:
    """fuse-overlayfs killed mid-session: the ops fail, and closing still unmounts and leaves no process."""
    trace = load("mkdir-enomem.json")
    session = fuse.open(trace.layers, trace.features)
    try:
        assert len(fuse_mounts()) == 1 and session.daemon is not None
        os.kill(session.daemon.pid, signal.SIGKILL)
        session.daemon.wait(timeout=10)
        assert session.perform(trace.ops[0]) == {"errno": "ENOTCONN"}
    finally:
        session.close()
    assert fuse_mounts() == [] and fuse_processes() == []
    assert [point for point in mount_points("/proc/thread-self/mountinfo") if point.startswith(session.home)] == []


def test_fuse_overlayfs_dies_with_cowspec(fuse: FuseOverlay) -> None:
    """cowspec killed outright (SIGKILL, no clean-up at all): its fuse-overlayfs goes with it."""
    program = textwrap.dedent(
        """
        import os, signal, sys
        from cowcheck.drivers.fuse_overlay import FuseOverlay
        from cowspec.fs.features import Features
        session = FuseOverlay().open(((),), Features())
        print(session.daemon.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    child = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    pid = int(child.stdout.split()[0])
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    sweep_stale(SCRATCH_PREFIX)  # the killed process's empty scratch directory, as the next run would
    assert not os.path.exists(f"/proc/{pid}"), "fuse-overlayfs outlived the process that started it"
