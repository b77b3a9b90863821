"""Chapter 17: a snapshot's diff as containerd's walking differ writes it.

The examples are the diffs containerd 1.6.20 wrote (``ctr snapshots diff
--media-type application/vnd.oci.image.layer.v1.tar KEY | tar tvf -``);
the property ties the diff to the two levels below: applied on the
parent's tree by the layer level, it gives the tree the filesystem level
shows through the snapshot.
"""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cowcheck.machines.strategies import ops, view_of
from cowspec.fs.observe import Entry
from cowspec.fs.paths import ROOT, parent_of
from cowspec.oci.apply import flatten, rootfs_entries
from cowspec.snapshot.calls import Commit, Perform, Prepare, View
from cowspec.snapshot.observe import diff, diff_entries, diff_with_uncertain, tree
from cowspec.snapshot.state import SNAPSHOTTERS, Snapshots, Snapshotter, empty_snapshots
from cowspec.snapshot.steps import Done, step
from tests.snapshot.scenarios import (
    FIRST_CHILD,
    FIRST_PARENT,
    SECOND_CHILD,
    SECOND_PARENT,
    THIRD_CHILD,
    THIRD_PARENT,
    child_of,
    run_more,
)

Row = tuple[str, str, int | None, bytes | str | None]


def rows(entries: list[Entry]) -> list[Row]:
    """Path, type, mode, and a file's data (as its digest) or a link's target, of each entry."""
    shown: list[Row] = []
    for entry in entries:
        detail = entry.get("sha256") or entry.get("target")
        mode = entry.get("mode")
        shown.append((str(entry["path"]), str(entry["type"]), mode if isinstance(mode, int) else None, detail))  # type: ignore[arg-type]
    return shown


def file(path: str, data: bytes, mode: int = 0o644) -> Row:
    return (path, "file", mode, hashlib.sha256(data).hexdigest())


def directory(path: str, mode: int = 0o755) -> Row:
    return (path, "dir", mode, None)


def link(path: str, target: str) -> Row:
    return (path, "hardlink", None, target)


def whiteout(path: str) -> Row:
    return (path, "whiteout", None, None)


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
def test_a_first_diff_holds_everything(snapshotter: Snapshotter) -> None:
    """[SNAP-11][SNAP-14] Observed: against no parent, every entry; a second name is a hardlink to the first."""
    snapshots = child_of(snapshotter, FIRST_PARENT, ())
    assert rows(diff_entries(diff(snapshots, "c1"))) == [
        directory("/d"),
        directory("/d/e"),
        file("/d/f", b"hello\n"),
        link("/d/g", "/d/f"),
        ("/s", "symlink", None, "xx"),
    ]
    assert rows(diff_entries(diff(snapshots, "b"))) == []


def test_native_diff_of_a_renamed_directory() -> None:
    """[SNAP-12][SNAP-14] Observed on native: the old name whited out, the new one whole, its hardlink kept."""
    snapshots = child_of("native", FIRST_PARENT, FIRST_CHILD)
    assert rows(diff_entries(diff(snapshots, "b"))) == [
        whiteout("/d"),
        directory("/d2"),
        directory("/d2/e"),
        file("/d2/f", b"hello\nmore\n"),
        link("/d2/g", "/d2/f"),
        whiteout("/s"),
    ]


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
def test_diff_of_changes_hardlinks_and_type_changes(snapshotter: Snapshotter) -> None:
    """[SNAP-11][SNAP-12][SNAP-13][SNAP-14] Observed: unchanged parents come with a change, a new name of an
    unchanged linked file is written first with the old names after it (overlayfs: the copy-up made a new inode,
    so the untouched name is left out), a removed subtree is one whiteout, a type change no whiteout, a mode
    change the whole file, a directory whose mtime alone changed nothing."""
    snapshots = child_of(snapshotter, SECOND_PARENT, SECOND_CHILD)
    expected = [
        directory("/d"),
        directory("/d/e"),
        link("/d/e/f", "/d/e/i"),
        file("/d/e/g", b"54321\n"),
        *([link("/d/e/h", "/d/e/i")] if snapshotter == "native" else []),
        file("/d/e/i", b"hello\n"),
        file("/p", b"p\n", 0o600),
        whiteout("/q"),
        directory("/w"),
        file("/w2", b"w2\n"),
        directory("/z", 0o700),
    ]
    layer = diff(snapshots, "b")
    assert rows(diff_entries(layer)) == expected
    assert layer.opaque == frozenset()


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
def test_whiteouts_bring_their_parents_and_the_root_never_comes(snapshotter: Snapshotter) -> None:
    """[SNAP-12][SNAP-13] Observed: m/ and m/n/ before m/n/.wh.o; t/ (its mtime only) and / (chmod) not written."""
    snapshots = child_of(snapshotter, THIRD_PARENT, THIRD_CHILD)
    found = diff_with_uncertain(snapshots, "b")
    assert rows(diff_entries(found.layer)) == [
        whiteout("/a1"),
        whiteout("/a2"),
        file("/a2n", b"2\n"),
        whiteout("/dd"),
        directory("/m"),
        directory("/m/n"),
        whiteout("/m/n/o"),
    ]
    assert found.uncertain == frozenset()


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
def test_a_file_renamed_over_a_twin_is_uncertain(snapshotter: Snapshotter) -> None:
    """[SNAP-11] Same type, mode, owner and size, another file: only the mtimes could tell."""
    from cowspec.fs.calls import Rename
    from tests.snapshot.scenarios import new_file

    snapshots = child_of(snapshotter, (*new_file("/x", b"1\n"), *new_file("/y", b"2\n")), (Rename("/x", "/y"),))
    found = diff_with_uncertain(snapshots, "b")
    assert rows(diff_entries(found.layer)) == [whiteout("/x"), file("/y", b"1\n")]
    assert found.uncertain == frozenset({"/y"})


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
def test_a_view_has_no_changes(snapshotter: Snapshotter) -> None:
    """[SNAP-3][SNAP-11] A view shows its parent's tree unchanged."""
    snapshots = run_more(child_of(snapshotter, FIRST_PARENT, ()), Commit("c2", "b"))
    after, _ = step(snapshots, View("v", "c2"))
    assert diff(after, "v").entries == ()


# -- the property: the diff applied on the parent's tree gives the snapshot's -------------------------


def comparable(entries: list[Entry], snapshotter: Snapshotter) -> list[Entry]:
    """On overlayfs a name left in a lower layer keeps the lower inode's link count, which no diff can carry
    (COPYUP-5): leave link counts out there."""
    if snapshotter == "native":
        return entries
    return [{key: value for key, value in entry.items() if key != "nlink"} for entry in entries]


def grow(snapshots: Snapshots, key: str, data: st.DataObject, count: int) -> Snapshots:
    """``count`` random filesystem calls through active ``key``, each drawn against its current tree."""
    for _ in range(count):
        op = data.draw(ops(view_of(tree(snapshots, key))))
        snapshots, outcome = step(snapshots, Perform(key, op))
        assert isinstance(outcome, Done)
    return snapshots


@given(
    snapshotter=st.sampled_from(SNAPSHOTTERS),
    sizes=st.lists(st.integers(0, 10), min_size=1, max_size=3),
    data=st.data(),
)
def test_the_diffs_of_a_chain_applied_give_its_tree(
    snapshotter: Snapshotter, sizes: list[int], data: st.DataObject
) -> None:
    """[SNAP-11][SNAP-12][SNAP-13][SNAP-14][SNAP-7][SNAP-8] Each snapshot of a chain made by random calls: the
    layer level's flatten of the chain's diffs is the tree the snapshot shows, per-name whiteouts only, every
    entry's parent written or implied, and a committed snapshot's diff the one it had while active."""
    snapshots = empty_snapshots(snapshotter)
    parent: str | None = None
    diffs = []
    for level, size in enumerate(sizes):
        key = f"s{level}"
        snapshots, outcome = step(snapshots, Prepare(key, parent))
        assert isinstance(outcome, Done)
        snapshots = grow(snapshots, key, data, size)
        layer = diff(snapshots, key)
        assert layer.opaque == frozenset()
        written = {entry.path for entry in layer.entries if entry.kind == "dir"} | {ROOT}
        for entry in layer.entries:
            if entry.kind != "hardlink":
                assert parent_of(entry.path) in written, entry.path
        for path in layer.whiteouts:
            assert parent_of(path) in written, path
        diffs.append(layer)
        expected = comparable(tree(snapshots, key), snapshotter)
        assert comparable(rootfs_entries(flatten(diffs)), snapshotter) == expected
        name = f"c{level}"
        snapshots, outcome = step(snapshots, Commit(name, key))
        assert isinstance(outcome, Done)
        assert diff(snapshots, name) == layer
        assert comparable(tree(snapshots, name), snapshotter) == expected
        parent = name
