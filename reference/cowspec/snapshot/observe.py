"""What can be observed of a snapshotter: snapshots, trees, mounts, usage, diffs.

- ``infos``: every snapshot with its kind and parent, as ``ctr snapshots
  ls`` lists them [SNAP-1];
- ``tree``: what a snapshot's mounts show, walked as the filesystem level
  walks a merged directory (``merged_tree``) [SNAP-7][SNAP-8];
- ``mounts``: the kind of mount a snapshot gives, read-only or not, and
  how many lower directories an overlay stacks [SNAP-6];
- ``usage``: the bytes and inodes ``ctr snapshots usage`` reports [SNAP-9]
  [SNAP-10];
- ``diff``: the layer tar of a snapshot against its parent as containerd's
  walking differ writes it [SNAP-11]...[SNAP-14].
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cowspec.errors import ModelError
from cowspec.fs.entries import Dir, FileInode, Name, Whiteout, written_ranges
from cowspec.fs.layer import Layer
from cowspec.fs.observe import Entry, merged_tree
from cowspec.fs.paths import ROOT, parent_of
from cowspec.fs.stack import Container, Found, inode_of, root_of, visible_children
from cowspec.oci.commit import commit_entries
from cowspec.oci.diff import stat_key
from cowspec.oci.layer_tar import LayerTar, TarEntry, canonical_key
from cowspec.snapshot.state import (
    Active,
    Kind,
    Snapshots,
    ViewSnapshot,
    base_container,
    chain_of,
    kind_of,
    tree_container,
)

INFO_RULE = "SNAP-1"
"""The rule a snapshot's listing (name, kind, parent) is held to; a view that vanished breaks SNAP-3."""
TREE_RULES: dict[str, str] = {"overlayfs": "SNAP-7", "native": "SNAP-8"}
"""The rule a snapshot's tree is held to, per snapshotter."""
TREE_RULE = "SNAP-7"
USAGE_RULE = "SNAP-9"
MOUNTS_RULE = "SNAP-6"
DIFF_RULE = "SNAP-11"


@dataclass(frozen=True, slots=True)
class Info:
    """One line of ``ctr snapshots ls``: name, kind, parent [SNAP-1]."""

    name: str
    kind: Kind
    parent: str | None


def infos(snapshots: Snapshots) -> dict[str, Info]:
    """Every snapshot that exists, by key [SNAP-1]."""
    return {key: Info(key, kind_of(snapshot), snapshot.parent) for key, snapshot in sorted(snapshots.snapshots.items())}


def tree(snapshots: Snapshots, key: str) -> list[Entry]:
    """What the mounts of snapshot ``key`` show, root excluded, sorted by path [SNAP-7][SNAP-8].

    An active snapshot shows its container; a view its parent's tree (or an
    empty directory); a committed snapshot what it showed when committed.
    """
    return merged_tree(tree_container(snapshots, key))


# -- mounts ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mounts:
    """The mount a snapshot gives: ``bind`` or ``overlay``, read-only or
    not, and the number of lower directories of an overlay (0 for a bind) [SNAP-6]."""

    type: Literal["bind", "overlay"]
    readonly: bool
    lowers: int


def mounts(snapshots: Snapshots, key: str) -> Mounts:
    """The mount of active or view ``key`` [SNAP-6].

    overlayfs: a snapshot with no parent is a bind of its own directory, and
    so is a view whose parent's chain is one layer long (a bind of that
    layer); otherwise an overlay of the parent's chain, with a writable
    layer for an active snapshot. native: always a bind, read-only for a view.
    """
    found = snapshots.get(key)
    if not isinstance(found, Active | ViewSnapshot):
        raise ModelError(f"mounts of {key!r}, which is not an active snapshot or a view")
    readonly = isinstance(found, ViewSnapshot)
    if snapshots.snapshotter == "native":
        return Mounts("bind", readonly, 0)
    depth = len(chain_of(snapshots, found.parent))
    if depth == 0 or (readonly and depth == 1):
        return Mounts("bind", readonly, 0)
    return Mounts("overlay", readonly, depth)


# -- usage -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """``ctr snapshots usage -b``: bytes and inodes [SNAP-9]."""

    size: int
    inodes: int


Allocation = Callable[[str, int], int]
"""The bytes a filesystem allocates to an inode (``st_blocks * 512``), from its
type (``file``, ``dir``, ``symlink``, ``whiteout``) and apparent size (a
file's length, a symlink target's length in bytes, 0 for a directory or a
whiteout) [SNAP-9]."""


def usage(snapshots: Snapshots, key: str, allocation: Allocation) -> Usage:
    """The usage of snapshot ``key`` [SNAP-9][SNAP-10].

    A view's is nothing. Otherwise containerd walks the snapshot's own
    directory and counts every inode once, the root and the directories
    included, at its allocated size: overlayfs its ``fs`` directory (the
    writable layer), native the whole tree. A committed snapshot's is what
    it was at commit.
    """
    found = snapshots.get(key)
    if found is None:
        raise ModelError(f"usage of {key!r}, which does not exist")
    if isinstance(found, ViewSnapshot):
        return Usage(0, 0)
    return layer_usage(found.container.upper, found.renamed_whiteouts, allocation)


def layer_usage(layer: Layer, renamed_whiteouts: frozenset[str], allocation: Allocation) -> Usage:
    """The usage of one directory on disk, held as a layer [SNAP-9][SNAP-10].

    Each directory and each inode counts once. Whiteouts made by a rename
    are an inode each; every other whiteout of the layer is a name of one
    shared whiteout inode, counted once.
    """
    size = inodes = 0
    shared_whiteout = False
    for path, node in layer.entries.items():
        if isinstance(node, Dir):
            size, inodes = size + allocation("dir", 0), inodes + 1
        elif isinstance(node, Whiteout):
            if path in renamed_whiteouts:
                size, inodes = size + allocation("whiteout", 0), inodes + 1
            else:
                shared_whiteout = True
    for inode in layer.inodes.values():
        if isinstance(inode, FileInode):
            size += file_allocation(inode, allocation)
        else:
            size += allocation("symlink", len(inode.target.encode("utf-8", "surrogateescape")))
        inodes += 1
    if shared_whiteout:
        size, inodes = size + allocation("whiteout", 0), inodes + 1
    return Usage(size, inodes)


def file_allocation(inode: FileInode, allocation: Allocation) -> int:
    """The bytes a file's written ranges take: every block one of them touches, once;
    a hole (a gap a write skipped, what a truncate added) takes none [SNAP-9]. The
    block is the allocation of a one-byte file."""
    block = allocation("file", 1)
    if block == 0:
        return 0
    blocks = {index for low, high in written_ranges(inode) for index in range(low // block, -(-high // block))}
    return len(blocks) * block


# -- diff --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Diff:
    """A diff and the paths whose presence in it only mtimes decide [SNAP-11].

    ``uncertain`` holds the non-directories the differ writes because they
    are other files than the parent's at their path, with the same type,
    mode, owner and size: the clock the kernel stamps mtimes with ticks
    coarsely (a jiffy), so two files made within one tick have equal
    mtimes and the real differ may leave such a path out.
    """

    layer: LayerTar
    uncertain: frozenset[str]


Identity = tuple[int, int]
"""An inode as the differ's ``stat`` sees it: (layer index from the top, inode number)."""


def diff(snapshots: Snapshots, key: str) -> LayerTar:
    """Snapshot ``key`` against its parent, as containerd's walking differ writes it [SNAP-11]."""
    return diff_with_uncertain(snapshots, key).layer


def diff_with_uncertain(snapshots: Snapshots, key: str) -> Diff:
    """``diff``, and the paths in it only mtimes decide [SNAP-11][SNAP-12][SNAP-13][SNAP-14]."""
    found = snapshots.get(key)
    if found is None:
        raise ModelError(f"diff of {key!r}, which does not exist")
    before = base_container(snapshots, found.parent)
    after = before if isinstance(found, ViewSnapshot) else found.container
    return _Differ(snapshots.snapshotter == "overlayfs", before, after).run()


class _Differ:
    """containerd's walking differ over two trees: ``before`` (the parent's)
    and ``after`` (the snapshot's). A local, mutable helper of ``diff``: it
    is made, run once and dropped, and no state escapes it."""

    def __init__(self, overlay: bool, before: Container, after: Container) -> None:
        self.overlay = overlay
        self.before = before
        self.after = after
        self.entries: list[TarEntry] = []
        self.whiteouts: set[str] = set()
        self.uncertain: set[str] = set()
        self.added_dirs: set[str] = set()
        self.sources: dict[Identity, str] = {}
        self.references: dict[Identity, list[str]] = {}

    def run(self) -> Diff:
        self.walk(root_of(self.before), root_of(self.after))
        ordered = tuple(sorted(self.entries, key=lambda entry: canonical_key(entry.path)))
        return Diff(LayerTar(ordered, frozenset(self.whiteouts)), frozenset(self.uncertain))

    # The walk: both trees side by side, names in byte order, parents first [SNAP-11].

    def walk(self, was_dir: Found | None, now_dir: Found) -> None:
        old = visible_children(self.before, was_dir) if was_dir is not None else {}
        new = visible_children(self.after, now_dir)
        for name in sorted(set(old) | set(new)):
            was, now = old.get(name), new.get(name)
            if now is None:
                if was is None:
                    raise ModelError(f"{name!r} is in neither tree it was listed from")
                # A deleted name: one whiteout, its subtree not walked [SNAP-12].
                self.delete(was.path)
                continue
            if was is None:
                self.add_subtree(now)
                continue
            if self.same(was, now):
                if now.is_dir:
                    self.walk(was, now)
                else:
                    self.change(now, unmodified=True)
                continue
            # Changed: the new entry, no whiteout; a directory that replaced
            # a non-directory brings its whole subtree [SNAP-12].
            self.change(now, unmodified=False)
            if now.is_dir:
                if was.is_dir:
                    self.walk(was, now)
                else:
                    for child in visible_children(self.after, now).values():
                        self.add_subtree(child)

    def add_subtree(self, found: Found) -> None:
        self.change(found, unmodified=False)
        if found.is_dir:
            for child in visible_children(self.after, found).values():
                self.add_subtree(child)

    # What makes a file changed [SNAP-11].

    def same(self, was: Found, now: Found) -> bool:
        """containerd's ``sameFile``: type, mode, owner and group; for a
        non-directory also size and mtime."""
        if stat_key(self.before, was) != stat_key(self.after, now):
            return False
        if now.is_dir:
            return True
        if self.same_mtime(was, now):
            return True
        inode = inode_of(self.after, now)
        if not inode.touched:
            self.uncertain.add(now.path)
        return False

    def same_mtime(self, was: Found, now: Found) -> bool:
        """Whether ``now`` is the parent's file at its path, its data not written since.

        overlayfs: a file still in a lower layer is the parent's; one in the
        writable layer is if copy-up brought it from this very path. native:
        the copy keeps the parent's inode numbers, so it is the parent's file
        if it has the parent's inode number there.
        """
        inode = inode_of(self.after, now)
        if inode.touched:
            return False
        if self.overlay:
            return not now.in_upper or inode.origin == now.path
        if not isinstance(was.node, Name) or not isinstance(now.node, Name):
            return False
        return was.node.ino == now.node.ino

    # Writing entries: containerd's ChangeWriter [SNAP-13][SNAP-14].

    def delete(self, path: str) -> None:
        self.include_parents(path, is_dir=False)
        self.whiteouts.add(path)

    def include_parents(self, path: str, *, is_dir: bool) -> None:
        """Write the parent directory first if nothing wrote it yet, the root
        excepted; it takes the snapshot's attributes [SNAP-13]."""
        parent = parent_of(path)
        if parent != ROOT and parent not in self.added_dirs:
            self.added_dirs.add(parent)
            from_root = self.lookup_dir(parent)
            self.change(from_root, unmodified=False)
        if is_dir:
            self.added_dirs.add(path)

    def lookup_dir(self, path: str) -> Found:
        current = root_of(self.after)
        for name in path[1:].split("/"):
            child = visible_children(self.after, current).get(name)
            if child is None or not child.is_dir:
                raise ModelError(f"the parent {path} of a change is not a directory of the snapshot")
            current = child
        return current

    def change(self, found: Found, *, unmodified: bool) -> None:
        """An added, changed or unchanged-but-hardlinked entry [SNAP-14]."""
        node = found.node
        path = found.path
        if isinstance(node, Dir):
            if unmodified:
                return
            self.include_parents(path, is_dir=True)
            self.entries.append(TarEntry(path, "dir", node.mode, node.uid, node.gid))
            return
        if not isinstance(node, Name):
            raise ModelError(f"{path}: a visible object is a directory or a name")
        inode = inode_of(self.after, found)
        identity = (found.layer, node.ino)
        additional: list[str] = []
        if inode.nlink > 1:
            source = self.sources.get(identity)
            if source is not None:
                self.include_parents(path, is_dir=False)
                self.entries.append(TarEntry(path, "hardlink", link=source))
                return
            if unmodified:
                self.references.setdefault(identity, []).append(path)
                return
            self.sources[identity] = path
            additional = self.references.pop(identity, [])
        elif unmodified:
            return
        self.include_parents(path, is_dir=False)
        if isinstance(inode, FileInode):
            self.entries.append(TarEntry(path, "file", inode.mode, inode.uid, inode.gid, data=inode.data))
        else:
            self.entries.append(TarEntry(path, "symlink", 0o777, inode.uid, inode.gid, link=inode.target))
        # Earlier unchanged names of the inode follow as hardlinks to it,
        # their parents not written for them [SNAP-14].
        self.entries.extend(TarEntry(link, "hardlink", link=path) for link in additional)


def diff_entries(layer: LayerTar) -> list[Entry]:
    """A diff's entries as compared: ``commit_entries``, which leaves out
    every time, whiteouts' included (the differ stamps them with the time
    it ran) [SNAP-11]."""
    return commit_entries(layer)
