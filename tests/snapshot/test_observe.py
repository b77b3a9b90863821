"""Chapter 17: what a snapshot's mounts show, its mounts, and its usage, held to containerd 1.6.20's numbers."""

import pytest

from cowspec.errors import ModelError
from cowspec.fs.calls import Append, Ok, Rename, Stat, StatValue
from cowspec.snapshot.calls import Commit, Perform, Prepare, View
from cowspec.snapshot.observe import Mounts, Usage, mounts, tree, usage
from cowspec.snapshot.state import SNAPSHOTTERS, Snapshotter
from cowspec.snapshot.steps import step
from tests.snapshot.scenarios import (
    FIRST_CHILD,
    FIRST_PARENT,
    FOURTH_CHILD,
    FOURTH_PARENT,
    SECOND_CHILD,
    SECOND_PARENT,
    THIRD_CHILD,
    THIRD_PARENT,
    child_of,
    run_more,
)
from tests.snapshot.support import perform, run, tmpfs

BOTH = pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)


def test_overlayfs_mounts() -> None:
    """[SNAP-6] Observed: bind without parent, bind of the one layer for a view of a one-long chain, else overlay."""
    snapshots = run(
        "overlayfs",
        Prepare("a", None),
        View("v0", None),
        Commit("c1", "a"),
        Prepare("b", "c1"),
        View("v1", "c1"),
        Commit("c2", "b"),
        Prepare("x", "c2"),
        View("v3", "c2"),
    )
    assert mounts(run("overlayfs", Prepare("a", None)), "a") == Mounts("bind", False, 0)
    assert mounts(snapshots, "v0") == Mounts("bind", True, 0)
    assert mounts(snapshots, "v1") == Mounts("bind", True, 0)
    assert mounts(snapshots, "x") == Mounts("overlay", False, 2)
    assert mounts(snapshots, "v3") == Mounts("overlay", True, 2)
    with pytest.raises(ModelError):
        mounts(snapshots, "c1")


def test_native_mounts() -> None:
    """[SNAP-6] Observed: native always binds one directory, read-only for a view."""
    snapshots = run("native", Prepare("a", None), Commit("c1", "a"), Prepare("b", "c1"), View("v1", "c1"))
    assert mounts(snapshots, "b") == Mounts("bind", False, 0)
    assert mounts(snapshots, "v1") == Mounts("bind", True, 0)


def test_overlayfs_keeps_dockers_overlay2_rules() -> None:
    """[SNAP-7] Observed: a directory of the parent cannot be renamed, and copy-up breaks a hardlink."""
    snapshots = child_of("overlayfs", FIRST_PARENT, ())
    snapshots, results = perform(
        snapshots, "b", Append("/d/f", b"more\n"), Stat("/d/f"), Stat("/d/g"), Rename("/d", "/d2")
    )
    assert results == [
        Ok(),
        Ok(StatValue("file", 0o644, 0, 0, size=11, nlink=1)),
        Ok(StatValue("file", 0o644, 0, 0, size=6, nlink=2)),
        "EXDEV",
    ]
    # The parent's tree is untouched; a view of it shows it.
    viewed = run_more(snapshots, View("v", "c1"))
    assert tree(viewed, "v") == tree(viewed, "c1")
    assert [entry["path"] for entry in tree(viewed, "v")] == ["/d", "/d/e", "/d/f", "/d/g", "/s"]


def test_native_is_a_plain_copy() -> None:
    """[SNAP-8] Observed: native renames a directory of the parent, and a hardlink stays one."""
    snapshots = child_of("native", FIRST_PARENT, ())
    snapshots, results = perform(snapshots, "b", Append("/d/f", b"more\n"), Stat("/d/g"), Rename("/d", "/d2"))
    assert results == [Ok(), Ok(StatValue("file", 0o644, 0, 0, size=11, nlink=2)), Ok()]
    shown = {str(entry["path"]): entry for entry in tree(snapshots, "b")}
    assert sorted(shown) == ["/d2", "/d2/e", "/d2/f", "/d2/g", "/s"]
    assert shown["/d2/f"]["sha256"] == shown["/d2/g"]["sha256"]
    # The parent keeps its own tree: the child's changes are not the parent's.
    assert [entry["path"] for entry in tree(snapshots, "c1")] == ["/d", "/d/e", "/d/f", "/d/g", "/s"]


@BOTH
def test_usage_of_a_first_snapshot(snapshotter: Snapshotter) -> None:
    """[SNAP-9] Observed on both: /d, /d/e, a 6-byte file with two names and a symlink: 4096 bytes, 5 inodes,
    the root counted; the committed snapshot keeps it; a view uses nothing."""
    snapshots = run(snapshotter, Prepare("a", None))
    snapshots, _ = perform(snapshots, "a", *FIRST_PARENT)
    assert usage(snapshots, "a", tmpfs) == Usage(4096, 5)
    snapshots = run_more(snapshots, Commit("c1", "a"), Prepare("b", "c1"))
    after, _ = step(snapshots, View("v1", "c1"))
    assert usage(after, "c1", tmpfs) == Usage(4096, 5)
    assert usage(after, "v1", tmpfs) == Usage(0, 0)
    fresh = Usage(0, 1) if snapshotter == "overlayfs" else Usage(4096, 5)
    assert usage(after, "b", tmpfs) == fresh


@pytest.mark.parametrize(
    ("snapshotter", "parent", "child", "expected"),
    [
        ("overlayfs", SECOND_PARENT, SECOND_CHILD, Usage(16384, 10)),
        ("native", SECOND_PARENT, SECOND_CHILD, Usage(20480, 11)),
        ("overlayfs", THIRD_PARENT, THIRD_CHILD, Usage(4096, 7)),
        ("native", THIRD_PARENT, THIRD_CHILD, Usage(4096, 5)),
        ("overlayfs", FOURTH_PARENT, FOURTH_CHILD, Usage(12288, 9)),
        ("native", FIRST_PARENT, FIRST_CHILD, Usage(4096, 4)),
    ],
)
def test_usage_as_containerd_measured_it(
    snapshotter: Snapshotter, parent: tuple[object, ...], child: tuple[object, ...], expected: Usage
) -> None:
    """[SNAP-9][SNAP-10] Overlayfs counts its own layer, whiteouts of unlink and rmdir as one inode and
    each rename's whiteout as its own; native its whole tree, hardlinks once."""
    snapshots = child_of(snapshotter, parent, child)  # type: ignore[arg-type]
    assert usage(snapshots, "b", tmpfs) == expected
    committed = run_more(snapshots, Commit("c2", "b"))
    assert usage(committed, "c2", tmpfs) == expected


def test_a_whiteout_that_a_rename_made_and_a_later_call_replaced_is_shared_again() -> None:
    """[SNAP-10] Only a whiteout still at a rename's source is an inode of its own."""
    from cowspec.fs.calls import Create, Unlink

    snapshots = child_of("overlayfs", FOURTH_PARENT, (Rename("/a2", "/a2n"),))
    assert usage(snapshots, "b", tmpfs) == Usage(4096, 3)  # root, a2n, a2's whiteout
    snapshots, _ = perform(snapshots, "b", Unlink("/a1"))
    assert usage(snapshots, "b", tmpfs) == Usage(4096, 4)  # and the shared whiteout
    snapshots, _ = perform(snapshots, "b", Create("/a2", 0o644), Unlink("/a2"))
    assert usage(snapshots, "b", tmpfs) == Usage(4096, 3)  # a2's whiteout is now a shared one


def test_usage_counts_allocated_bytes_not_apparent_ones() -> None:
    """[SNAP-9] The allocation function decides: a long symlink takes a page on a tmpfs, a short one none."""
    from cowspec.fs.calls import Symlink

    snapshots = run("native", Prepare("a", None))
    snapshots, _ = perform(snapshots, "a", Symlink("x" * 200, "/long"), Symlink("x", "/short"))
    assert usage(snapshots, "a", tmpfs) == Usage(4096, 3)
    assert usage(snapshots, "a", lambda kind, size: size + (10 if kind == "dir" else 0)) == Usage(211, 3)


def test_a_rename_onto_a_whiteout_takes_that_whiteout_over() -> None:
    """[SNAP-10] The kernel exchanges a rename's source with a whiteout at its destination: the source holds the
    destination's whiteout (here the shared one of the unlinks), and no inode is made. Measured on containerd
    1.6.20: 3 inodes (root, /x, the shared whiteout at /y and /z)."""
    from cowspec.fs.calls import Create, Unlink

    snapshots = run(
        "overlayfs",
        Prepare("a", None),
        *(Perform("a", Create(path, 0o644)) for path in ("/x", "/y", "/z")),
        Commit("c", "a"),
        Prepare("b", "c"),
    )
    snapshots, _ = perform(snapshots, "b", Unlink("/x"), Unlink("/z"), Rename("/y", "/x"))
    assert usage(snapshots, "b", tmpfs) == Usage(0, 3)
    # Onto a whiteout a rename made, the source takes over that inode of its own. Measured on containerd 1.6.20
    # (this very sequence replayed, usage agreeing): root, /x2, /x (the copy of /y), /y's whiteout (the one
    # /x's rename made), /w's shared whiteout.
    other = run("overlayfs", Prepare("a", None), *(Perform("a", Create(p, 0o644)) for p in ("/x", "/y", "/w")))
    other = run_more(other, Commit("c", "a"), Prepare("b", "c"))
    other, _ = perform(other, "b", Unlink("/w"), Rename("/x", "/x2"), Rename("/y", "/x"))
    assert usage(other, "b", tmpfs) == Usage(0, 5)


def test_a_hole_takes_no_block_until_native_copies_it() -> None:
    """[SNAP-9] Usage counts the blocks written data takes: what a truncate added is a hole, none; native's copy
    of the parent writes every byte. Measured on containerd 1.6.20 on tmpfs: 0 bytes and 2 inodes, then 4096."""
    from cowspec.fs.calls import Create, Truncate, Write

    for snapshotter in SNAPSHOTTERS:
        snapshots = run(snapshotter, Prepare("a", None))
        snapshots, _ = perform(snapshots, "a", Create("/x", 0o644), Truncate("/x", 5))
        assert usage(snapshots, "a", tmpfs) == Usage(0, 2)
        snapshots, _ = perform(snapshots, "a", Write("/x", 8, b"a"))  # past the end: one page written
        assert usage(snapshots, "a", tmpfs) == Usage(4096, 2)
    holed = run("native", Prepare("a", None))
    holed, _ = perform(holed, "a", Create("/x", 0o644), Truncate("/x", 5))
    child = run_more(holed, Commit("c", "a"), Prepare("b", "c"))
    assert usage(child, "b", tmpfs) == Usage(4096, 2)
