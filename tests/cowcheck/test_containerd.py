"""containerd's overlayfs and native snapshotters, held to the snapshot level (spec chapter 17).

The tests start private containerd instances (``drivers/containerd.py``):
they need root, the kernel's overlayfs and Debian's containerd with ``ctr``.
Where those are missing they are skipped on a developer's machine and FAIL in
CI (``CI=true``), as the kernel and engine tests do.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.cli.main import main
from cowcheck.drivers import registry
from cowcheck.drivers.cleanup import mounts_under, start_time
from cowcheck.drivers.containerd import (
    ContainerdNative,
    ContainerdOverlayfs,
    ContainerdSnapshots,
    error_kind,
    mount_lines,
    tmpfs_allocation,
)
from cowcheck.drivers.namespace import scratch_root
from cowcheck.drivers.protocol import DriverUnavailable
from cowcheck.machines import snapshot_machine as machine
from cowspec.formats.snapshot_trace import SnapshotTrace, decode_snapshot_trace
from cowspec.fs.calls import Append, Chmod, Create, Link, Mkdir, Rename, Rmdir, Symlink, Truncate, Unlink, Write
from cowspec.oci.apply import flatten, rootfs_entries
from cowspec.oci.commit import commit
from cowspec.oci.layer_tar import decode_layer
from cowspec.snapshot import observe
from cowspec.snapshot.calls import Commit, Perform, Prepare, Remove, SnapshotCall, View
from cowspec.snapshot.state import Active

pytestmark = pytest.mark.kernel

DRIVERS: dict[str, type[ContainerdSnapshots]] = {"overlayfs": ContainerdOverlayfs, "native": ContainerdNative}
SPECS = {
    "overlayfs": "cowcheck.drivers.containerd:ContainerdOverlayfs",
    "native": "cowcheck.drivers.containerd:ContainerdNative",
}
DIVERGENCES = Path(__file__).parent.parent / "divergences"


def unavailable(error: Exception) -> None:
    """Skip where containerd cannot run; fail loudly in CI, where it must."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"containerd tests cannot run in CI: {error}")
    pytest.skip(f"containerd unavailable: {error}")


def started(kind: str) -> ContainerdSnapshots:
    """A driver whose daemon has started (or the test is skipped / failed)."""
    driver = DRIVERS[kind]()
    try:
        driver.open_snapshots().close()
    except DriverUnavailable as error:
        driver.close()
        unavailable(error)
    return driver


def containerd_processes() -> list[int]:
    """Every containerd started from this process's scratch space (its config file is there)."""
    try:
        scratch = scratch_root()
    except DriverUnavailable:
        return []
    found = []
    for name in sorted(os.listdir("/proc"), key=lambda each: int(each) if each.isdigit() else 0):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                command = handle.read().split(b"\0")
        except OSError:
            continue
        if (
            command
            and command[0].endswith(b"containerd")
            and any(part.startswith(scratch.encode()) for part in command)
        ):
            found.append(int(name))
    return found


@pytest.fixture(scope="module", params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Iterator[ContainerdSnapshots]:
    """One started driver per snapshotter for the module; stopped at its end, nothing left."""
    made = started(request.param)
    yield made
    made.close()
    assert containerd_processes() == []


def test_tmpfs_allocation_is_what_tmpfs_allocates() -> None:
    """The model's allocation for containerd's root: st_blocks * 512 on a tmpfs, per kind and size."""
    try:
        base = os.path.join(scratch_root(), "allocation")
    except DriverUnavailable as error:
        unavailable(error)
    os.makedirs(base)
    try:
        checks: list[tuple[str, int, str]] = []
        for size in (0, 1, 4095, 4096, 4097, 10000):
            path = os.path.join(base, f"f{size}")
            with open(path, "wb") as handle:
                handle.write(b"x" * size)
            checks.append(("file", size, path))
        for length in (1, 60, 127, 128, 300):
            path = os.path.join(base, f"s{length}")
            os.symlink("t" * length, path)
            checks.append(("symlink", length, path))
        os.mkdir(os.path.join(base, "d"))
        checks.append(("dir", 0, os.path.join(base, "d")))
        os.mknod(os.path.join(base, "w"), 0o020000, os.makedev(0, 0))
        checks.append(("whiteout", 0, os.path.join(base, "w")))
        for kind, size, path in checks:
            assert tmpfs_allocation(kind, size) == os.lstat(path).st_blocks * 512, (kind, size)
    finally:
        subprocess.run(["rm", "-rf", base], check=True)


def test_error_kinds_and_mount_lines_are_read_as_ctr_prints_them() -> None:
    """[SNAP-1] The kind is the errdefs name ending ctr's message; mounts are read from its shell lines."""
    assert error_kind('ctr: snapshot "a": already exists\n') == "already exists"
    assert error_kind('ctr: failed to remove "c": cannot remove snapshot with child: failed precondition') == (
        "failed precondition"
    )
    assert error_kind("ctr: parent snapshot zz does not exist: not found") == "not found"
    assert error_kind("ctr: something else broke").startswith("other: ")
    lines = mount_lines(
        "mount -t overlay overlay /x -o index=off,workdir=/r/2/work,upperdir=/r/2/fs,lowerdir=/r/1/fs\n"
        "mount -t bind /r/3/fs /x -o ro,rbind\n"
    )
    assert lines == [
        ("overlay", "overlay", ["index=off", "workdir=/r/2/work", "upperdir=/r/2/fs", "lowerdir=/r/1/fs"]),
        ("bind", "/r/3/fs", ["ro", "rbind"]),
    ]


def test_lifecycle_fresh_state_per_example_and_nothing_left() -> None:
    """One daemon per driver, a fresh namespace per session, removed at close; stopped by PID, nothing left."""
    before = containerd_processes()
    made = started("overlayfs")
    try:
        daemon = made.daemon
        assert daemon is not None and daemon.running
        pid, base = daemon.daemon_pid, daemon.base
        assert pid and start_time(pid) is not None and base.startswith(scratch_root())
        assert containerd_processes() == sorted([*before, pid])
        first, second = made.open_snapshots(), made.open_snapshots()
        try:
            assert first.namespace != second.namespace
            assert first.prepare("a", None) == {"ok": True}
            assert first.perform("a", Create("/f", 0o644)) == {"ok": True}
            assert [row["name"] for row in first.infos()] == ["a"]
            assert second.infos() == []  # the other example's snapshots are not seen
            assert mounts_under(first.home) != []
        finally:
            first.close()
            second.close()
        listed = daemon.command("namespaces", "ls", "-q").stdout.decode().split()
        assert first.namespace not in listed and second.namespace not in listed
        assert mounts_under(base) == []
    finally:
        made.close()
    deadline = time.monotonic() + 10
    while start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert start_time(pid) is None
    assert not os.path.exists(base)
    assert containerd_processes() == before


def test_a_killed_cowspec_takes_its_containerd_along(tmp_path: Path) -> None:
    """A cowspec killed with SIGKILL: its containerd dies with it (PDEATHSIG, unshare --kill-child)."""
    try:
        scratch_root()
    except DriverUnavailable as error:
        unavailable(error)
    program = (
        "from cowcheck.drivers.containerd import ContainerdNative\n"
        "driver = ContainerdNative(); driver.open_snapshots()\n"
        "print(driver.daemon.daemon_pid, flush=True)\n"
        "import time; time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode().strip()
        if not line.isdigit():
            unavailable(RuntimeError(child.stderr.read().decode()[-300:] if child.stderr else "no output"))
        pid = int(line)
        assert start_time(pid) is not None
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        deadline = time.monotonic() + 10
        while start_time(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert start_time(pid) is None, "containerd outlived the cowspec that started it"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def calls_of_every_kind(snapshotter: str) -> list[SnapshotCall]:
    """Every call kind, each error kind the snapshotter gives, and the filesystem ops that differ between the two
    snapshotters (a rename of a parent's directory, a hardlink broken by copy-up)."""
    return [
        Prepare("t", None),
        Remove("t"),  # done: no view exists yet, that a collection would take [SNAP-3]
        Prepare("a", None),
        Perform("a", Mkdir("/d", 0o755)),
        Perform("a", Create("/d/f", 0o644)),
        Perform("a", Write("/d/f", 0, b"hello")),
        Perform("a", Link("/d/f", "/g")),
        Perform("a", Symlink("d/f", "/s")),
        Perform("a", Create("/gone", 0o600)),
        Commit("c", "a"),
        Prepare("a", "c"),
        View("v", "c"),
        View("w", None),
        Prepare("b", "v"),  # invalid argument: a view is no parent
        Prepare("x", "zz"),  # not found
        Prepare("a", "c"),  # already exists
        Commit("c", "a"),  # already exists
        Commit("n", "zz"),  # not found
        Commit("n", "c"),  # failed precondition: not active
        Commit("n", "w"),  # failed precondition: a view without parent
        Remove("c"),  # failed precondition: children
        Remove("zz"),  # not found
        Perform("a", Rename("/d", "/e")),  # EXDEV on overlayfs, done on native
        Perform("a", Append("/g", b"!")),  # copy-up breaks the hardlink on overlayfs
        Perform("a", Unlink("/gone")),
        Perform("a", Mkdir("/n", 0o700)),
        Perform("a", Rmdir("/n")),
        *([Commit("n", "v")] if snapshotter == "native" else []),  # unknown: native measures a missing directory
    ]


def test_every_call_and_error_kind_agrees_with_the_model(driver: ContainerdSnapshots) -> None:
    """[SNAP-1..5][SNAP-7][SNAP-8] Each call's outcome, every info and tree after it, then usage, mounts and
    diffs, as the machine compares them; and every error kind containerd gives is met."""
    session = driver.open_snapshots()
    run = machine.SnapshotRun(session, driver.snapshotter, driver.allocation)
    outcomes: set[str] = set()
    try:
        for call in calls_of_every_kind(driver.snapshotter):
            differences = run.call(call)
            assert not differences, (call, [each.line() for each in differences])
            outcomes.add(str(run.last_outcome.get("error", run.last_outcome.get("errno", "ok"))))
            differences = run.state()
            assert not differences, (call, [each.line() for each in differences])
        differences = run.end()
        assert not differences, [each.line() for each in differences]
    finally:
        session.close()
    expected = {"ok", "already exists", "not found", "failed precondition", "invalid argument"}
    expected |= {"unknown"} if driver.snapshotter == "native" else {"EXDEV"}
    assert expected <= outcomes


def test_a_view_is_collected_while_it_lives(driver: ContainerdSnapshots) -> None:
    """[SNAP-1][SNAP-3] containerd 1.6.20's bug, found by the machine: a view has no gc.root label, so the
    collection after an unrelated removal deletes it; its parent then keeps a child link and cannot be removed."""
    lost = SnapshotTrace(driver.snapshotter, (View("v", None), Prepare("a", None), Remove("a")))
    differences = machine.first_divergence(driver, lost)
    assert [(each.field, each.path, each.expected, each.actual) for each in differences] == [
        ("info", "v", {"name": "v", "kind": "view", "parent": None}, None)
    ]
    stuck = SnapshotTrace(
        driver.snapshotter,
        (Prepare("a", None), Commit("c", "a"), View("v", "c"), Prepare("b", None), Remove("b")),
    )
    differences = machine.first_divergence(driver, stuck)
    assert differences and differences[0].path == "v" and differences[0].actual is None


def test_renames_onto_whiteouts_agree_on_usage(driver: ContainerdSnapshots) -> None:
    """[SNAP-10] A rename onto a whiteout takes that whiteout over (the kernel exchanges the two): found as a
    usage difference by a generated run, before the model said so; kept so that it stays agreed."""
    calls: tuple[SnapshotCall, ...] = (
        Prepare("a", None),
        *(Perform("a", Create(path, 0o644)) for path in ("/x", "/y", "/z", "/w")),
        Commit("c", "a"),
        Prepare("b", "c"),
        Perform("b", Unlink("/x")),
        Perform("b", Unlink("/z")),
        Perform("b", Rename("/y", "/x")),
        Perform("b", Rename("/w", "/w2")),
        Perform("b", Rename("/x", "/w")),
    )
    assert machine.first_divergence(driver, SnapshotTrace(driver.snapshotter, calls)) == []


def test_holes_agree_on_usage(driver: ContainerdSnapshots) -> None:
    """[SNAP-9] A file's hole takes no block on tmpfs, and native's copy fills it: found as a usage difference by a
    generated run, before the model said so; kept so that it stays agreed."""
    calls: tuple[SnapshotCall, ...] = (
        Prepare("a", None),
        Perform("a", Create("/x", 0o644)),
        Perform("a", Truncate("/x", 5)),
        Perform("a", Create("/y", 0o644)),
        Perform("a", Write("/y", 8, b"a")),
        Commit("c", "a"),
        Prepare("b", "c"),
        Perform("b", Chmod("/x", 0o600)),
    )
    assert machine.first_divergence(driver, SnapshotTrace(driver.snapshotter, calls)) == []


def test_a_short_machine_run_and_its_divergence_replays(driver: ContainerdSnapshots) -> None:
    """The machine runs on the snapshotter; what it finds is a trace that replays as the same divergence."""
    found: list[machine.SnapshotDivergence] = []
    examples: list[int] = []
    budget = settings(
        max_examples=8,
        stateful_step_count=6,
        deadline=None,
        database=None,
        derandomize=True,
        report_multiple_bugs=False,
        phases=[Phase.generate],  # shrinking replays whole examples: the command line's run does it, not this test
    )
    with contextlib.suppress(machine.SnapshotDivergence):
        run_state_machine_as_test(machine.machine_for(driver, None, lambda: examples.append(1), found), settings=budget)
    assert examples
    if found:
        smallest = found[-1]
        replayed = machine.first_divergence(driver, smallest.trace)
        assert replayed and replayed[0].rule == smallest.rule


def saved_divergences() -> list[tuple[str, str, dict[str, str]]]:
    """(snapshotter, directory, entry) for every divergence kept under tests/divergences/containerd-*/."""
    found = []
    for snapshotter in sorted(DRIVERS):
        directory = DIVERGENCES / f"containerd-{snapshotter}"
        index = directory / "divergences.json"
        if index.exists():
            for entry in json.loads(index.read_text()):
                found.append((snapshotter, str(directory), entry))
    return found


def test_divergences_are_kept() -> None:
    """Each snapshotter has its divergences kept, each with a rule, a verdict and a sentence, and a README."""
    for snapshotter in DRIVERS:
        directory = DIVERGENCES / f"containerd-{snapshotter}"
        assert (directory / "README.md").exists()
        entries = json.loads((directory / "divergences.json").read_text())
        assert entries
        for entry in entries:
            assert set(entry) == {"trace", "rule", "verdict", "summary"}
            assert entry["verdict"] in ("bug", "allowed") and entry["rule"].startswith("SNAP-")
            decode_snapshot_trace(json.loads((directory / entry["trace"]).read_text()))


@pytest.mark.parametrize(
    ("snapshotter", "directory", "entry"),
    saved_divergences(),
    ids=[f"{each[0]}-{each[2]['trace']}" for each in saved_divergences()],
)
def test_each_saved_divergence_replays(
    snapshotter: str, directory: str, entry: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every kept divergence still diverges, under the rule it is kept with, through the command line."""
    before = containerd_processes()
    probe = registry.snapshot_driver(SPECS[snapshotter])
    try:
        probe.open_snapshots().close()
    except DriverUnavailable as error:
        unavailable(error)
    finally:
        probe.close()
    path = os.path.join(directory, entry["trace"])
    assert main(["replay", path, "--driver", SPECS[snapshotter]]) == 1
    printed = capsys.readouterr().out
    assert f"[{entry['rule']}]" in printed
    assert main(["check", "--driver", SPECS[snapshotter], path]) == 1
    assert containerd_processes() == before  # each command stopped the containerd it started


def test_a_diff_is_not_a_commit_and_applies_to_the_same_tree() -> None:
    """[SNAP-11][SNAP-12] containerd's differ against a commit of the same container (COMMIT-1): where a
    directory of the parent is removed and made again, the overlay upper marks it opaque and a commit writes the
    opaque marker, while the differ writes a per-name whiteout for what is gone and no marker; applied over the
    parent, both give the same tree."""
    driver = started("overlayfs")
    session = driver.open_snapshots()
    run = machine.SnapshotRun(session, "overlayfs", driver.allocation)
    calls: list[SnapshotCall] = [
        Prepare("a", None),
        Perform("a", Mkdir("/d", 0o755)),
        Perform("a", Create("/d/old", 0o644)),
        Perform("a", Create("/gone", 0o644)),
        Commit("c", "a"),
        Prepare("b", "c"),
        Perform("b", Unlink("/d/old")),
        Perform("b", Rmdir("/d")),
        Perform("b", Mkdir("/d", 0o755)),
        Perform("b", Create("/d/new", 0o644)),
        Perform("b", Unlink("/gone")),
    ]
    try:
        for call in calls:
            assert not run.call(call) and not run.state()
        real = decode_layer(session.diff("b"))
        active = run.snapshots.get("b")
        assert isinstance(active, Active)
        committed = commit(active.container)
    finally:
        session.close()
        driver.close()
    real_entries = {str(entry["path"]): entry for entry in observe.diff_entries(real)}
    commit_entries = {str(entry["path"]): entry for entry in observe.diff_entries(committed)}
    assert real_entries["/d"]["opaque"] is False and commit_entries["/d"]["opaque"] is True
    assert real_entries["/d/old"] == {"path": "/d/old", "type": "whiteout"} and "/d/old" not in commit_entries
    assert real_entries["/gone"] == commit_entries["/gone"] == {"path": "/gone", "type": "whiteout"}
    below = [observe.diff(run.snapshots, "c")]
    assert rootfs_entries(flatten([*below, real])) == rootfs_entries(flatten([*below, committed]))


def test_minimise_takes_away_the_calls_a_divergence_does_not_need(driver: ContainerdSnapshots) -> None:
    """What Hypothesis left of a divergence found on overlayfs (a chmod of the root that plays no part) is cut
    down to the calls it needs, and still diverges under the same rule."""
    found = SnapshotTrace(
        driver.snapshotter,
        (View("a", None), Prepare("b", None), Perform("b", Chmod("/", 0o755)), Remove("b")),
    )
    smaller = machine.minimise(driver, found, "SNAP-3")
    assert smaller.calls == (View("a", None), Prepare("b", None), Remove("b"))
    assert machine.first_divergence(driver, smaller)[0].rule == "SNAP-3"
