"""The scenarios run on containerd 1.6.20 for chapter 17, as snapshot calls.

Each is the shell commands of the experiment written as the filesystem
calls they make (``echo DATA > f`` creates and writes, or truncates and
writes; ``rm -r`` unlinks and removes from the bottom up), as root with the
modes a shell's umask 022 gives.
"""

from cowspec.fs.calls import Append, Chmod, Create, Link, Mkdir, Op, Rename, Rmdir, Symlink, Truncate, Unlink, Write
from cowspec.snapshot.calls import Commit, Prepare, SnapshotCall
from cowspec.snapshot.state import Snapshots, Snapshotter
from cowspec.snapshot.steps import Done, step
from tests.snapshot.support import perform, run


def new_file(path: str, data: bytes) -> tuple[Op, ...]:
    """``echo ... > path`` for a new file."""
    return (Create(path, 0o644), Write(path, 0, data))


def overwrite(path: str, data: bytes) -> tuple[Op, ...]:
    """``echo ... > path`` for a file that exists."""
    return (Truncate(path, 0), Write(path, 0, data))


def mkdirs(*paths: str) -> tuple[Op, ...]:
    return tuple(Mkdir(path, 0o755) for path in paths)


def child_of(snapshotter: Snapshotter, parent_ops: tuple[Op, ...], child_ops: tuple[Op, ...]) -> Snapshots:
    """``a`` made with ``parent_ops``, committed as ``c1``; ``b`` prepared on it, then ``child_ops``."""
    snapshots = run(snapshotter, Prepare("a", None))
    snapshots, _ = perform(snapshots, "a", *parent_ops)
    snapshots = run_more(snapshots, Commit("c1", "a"), Prepare("b", "c1"))
    snapshots, _ = perform(snapshots, "b", *child_ops)
    return snapshots


def run_more(snapshots: Snapshots, *calls: SnapshotCall) -> Snapshots:
    """``snapshots`` after ``calls``, each of which must succeed."""
    for call in calls:
        snapshots, outcome = step(snapshots, call)
        assert isinstance(outcome, Done)
    return snapshots


# The first experiment: a small tree, then a change through a child.
FIRST_PARENT = (
    *mkdirs("/d", "/d/e"),
    *new_file("/d/f", b"hello\n"),
    Link("/d/f", "/d/g"),
    Symlink("xx", "/s"),
)
FIRST_CHILD = (Append("/d/f", b"more\n"), Rename("/d", "/d2"), Unlink("/s"))

# The second: hardlinks, a changed file, a removed subtree, modes, type changes.
SECOND_PARENT = (
    *mkdirs("/d", "/d/e", "/d/e/k", "/q", "/q/r", "/z"),
    *new_file("/d/e/f", b"hello\n"),
    *new_file("/d/e/g", b"12345\n"),
    Link("/d/e/f", "/d/e/h"),
    *new_file("/q/r/x", b"x\n"),
    *new_file("/z/y", b"y\n"),
    *new_file("/p", b"p\n"),
    *new_file("/w", b"w\n"),
    *mkdirs("/w2"),
)
SECOND_CHILD = (
    *overwrite("/d/e/g", b"54321\n"),
    Link("/d/e/f", "/d/e/i"),
    Unlink("/q/r/x"),
    Rmdir("/q/r"),
    Rmdir("/q"),
    Chmod("/z", 0o700),
    Create("/z/new", 0o644),
    Unlink("/z/new"),
    Chmod("/p", 0o600),
    Unlink("/w"),
    *mkdirs("/w"),
    Rmdir("/w2"),
    *new_file("/w2", b"w2\n"),
)

# The third: whiteouts deep in unchanged directories, a renamed file, a directory's mtime, the root's mode.
THIRD_PARENT = (
    *mkdirs("/m", "/m/n", "/t", "/dd", "/dd/ee"),
    *new_file("/a1", b"1\n"),
    *new_file("/a2", b"2\n"),
    *new_file("/m/n/o", b"3\n"),
    *new_file("/dd/ee/x", b"4\n"),
)
THIRD_CHILD = (
    Unlink("/a1"),
    Rename("/a2", "/a2n"),
    Unlink("/dd/ee/x"),
    Rmdir("/dd/ee"),
    Rmdir("/dd"),
    Unlink("/m/n/o"),
    Create("/t/x", 0o644),
    Unlink("/t/x"),
    Chmod("/", 0o700),
)

# The fourth (overlayfs): whiteouts of unlink and rmdir share an inode, a rename's has its own.
FOURTH_PARENT = (
    *mkdirs("/dd", "/m"),
    *new_file("/a1", b"1\n"),
    *new_file("/a2", b"2\n"),
    *new_file("/a3", b"3\n"),
    *new_file("/a4", b"4\n"),
    *new_file("/m/a5", b"5\n"),
)
FOURTH_CHILD = (Unlink("/a1"), Rename("/a2", "/a2n"), Rename("/a3", "/a4"), Rmdir("/dd"), Rename("/m/a5", "/a5"))
