"""Helpers of the snapshot tests: a run of calls, and the allocation of a tmpfs."""

from cowspec.fs.calls import Op, Outcome
from cowspec.snapshot.calls import Perform, SnapshotCall
from cowspec.snapshot.state import Snapshots, Snapshotter, empty_snapshots
from cowspec.snapshot.steps import Done, Failed, step

PAGE = 4096


def tmpfs(kind: str, size: int) -> int:
    """What a tmpfs allocates (``st_blocks * 512``), as measured here: a file its
    pages, a directory and a whiteout nothing, a symlink a page only for a
    target of 128 bytes or more (shorter ones are kept in the inode)."""
    if kind == "file":
        return -(-size // PAGE) * PAGE
    if kind == "symlink":
        return PAGE if size >= 128 else 0
    return 0


def run(snapshotter: Snapshotter, *calls: SnapshotCall) -> Snapshots:
    """The snapshots after ``calls``, each of which must succeed (a filesystem
    call through an active snapshot with any outcome)."""
    snapshots = empty_snapshots(snapshotter)
    for call in calls:
        snapshots, outcome = step(snapshots, call)
        assert isinstance(outcome, Done), f"{call} gave {outcome}"
    return snapshots


def perform(snapshots: Snapshots, key: str, *ops: Op) -> tuple[Snapshots, list[Outcome | None]]:
    """``snapshots`` after ``ops`` through active ``key``, and each op's outcome."""
    results: list[Outcome | None] = []
    for op in ops:
        snapshots, outcome = step(snapshots, Perform(key, op))
        assert isinstance(outcome, Done)
        results.append(outcome.result)
    return snapshots, results


def refused(snapshots: Snapshots, call: SnapshotCall) -> Failed:
    """The failure of ``call``, which must be refused and change nothing [SNAP-1]."""
    after, outcome = step(snapshots, call)
    assert isinstance(outcome, Failed), f"{call} gave {outcome}"
    assert after is snapshots
    return outcome
