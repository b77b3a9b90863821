"""The state of one snapshotter: every snapshot by key [SNAP-1].

Keys and committed names share one namespace: a committed snapshot's key is
its name. Each snapshot has a kind and a parent, which is a committed
snapshot or none. What else a snapshot holds depends on its kind:

- ``Active``: the filesystem its mounts show, as the filesystem level's
  ``Container``. On ``overlayfs`` its writable layer is the snapshot's own
  ``fs`` directory and its image layers are its committed ancestors' own
  layers [SNAP-7]; on ``native`` the container has no image layer and its
  writable layer is the whole tree, a copy of the parent's [SNAP-8].
  ``renamed_whiteouts`` names the whiteouts a rename made, each an inode
  of its own on disk (the others share one) [SNAP-10].
- ``ViewSnapshot``: nothing of its own; it shows its parent's tree [SNAP-3].
- ``Committed``: the container as it was at commit (its diff and its usage
  are the same ever after [SNAP-9]), and ``settled``: its own layer
  (overlayfs) or its tree (native) as a child sees it, where no file has
  been written since it was made (``settled_layer``). ``chain`` is what a
  child's overlay mount stacks: the settled layers of the snapshot and its
  ancestors, bottom first.

Nothing here copies a tree per step: layers are persistent maps, and a
native child starts from its parent's settled tree, shared [SNAP-8].
"""

from dataclasses import dataclass, replace
from typing import Literal

from immutables import Map

from cowspec.errors import ModelError
from cowspec.fs.entries import FileInode
from cowspec.fs.layer import Layer, empty_layer
from cowspec.fs.stack import Container

Kind = Literal["active", "view", "committed"]
Snapshotter = Literal["overlayfs", "native"]
SNAPSHOTTERS: tuple[Snapshotter, ...] = ("overlayfs", "native")
ErrorKind = Literal["already exists", "not found", "failed precondition", "invalid argument", "unknown"]
"""containerd's error kinds (errdefs) as ``ctr`` prints them at the end of its message [SNAP-1].

``unknown`` is given by one call only: ``native``'s commit of a view that has a
parent, which fails measuring a directory the view does not have [SNAP-4].
"""
ERROR_KINDS: tuple[ErrorKind, ...] = (
    "already exists",
    "not found",
    "failed precondition",
    "invalid argument",
    "unknown",
)


@dataclass(frozen=True, slots=True)
class Active:
    """A writable snapshot and the filesystem its mounts show [SNAP-2]."""

    parent: str | None
    container: Container
    renamed_whiteouts: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ViewSnapshot:
    """A read-only snapshot of its parent's tree, or of an empty directory [SNAP-3]."""

    parent: str | None


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed snapshot: read-only, the only kind a snapshot can have as parent [SNAP-4]."""

    parent: str | None
    container: Container
    renamed_whiteouts: frozenset[str]
    settled: Layer
    chain: tuple[Layer, ...]


Snapshot = Active | ViewSnapshot | Committed


@dataclass(frozen=True, slots=True)
class Snapshots:
    """The whole state of one snapshotter: its snapshots by key [SNAP-1]."""

    snapshotter: Snapshotter
    snapshots: "Map[str, Snapshot]"

    def get(self, key: str) -> Snapshot | None:
        """The snapshot ``key``, or None if there is none."""
        return self.snapshots.get(key)


def empty_snapshots(snapshotter: Snapshotter) -> Snapshots:
    """A snapshotter that holds no snapshot."""
    if snapshotter not in SNAPSHOTTERS:
        raise ModelError(f"unknown snapshotter {snapshotter!r}")
    return Snapshots(snapshotter, Map())


def kind_of(snapshot: Snapshot) -> Kind:
    """The kind ``ctr snapshots ls`` shows, in lower case."""
    if isinstance(snapshot, Active):
        return "active"
    if isinstance(snapshot, ViewSnapshot):
        return "view"
    return "committed"


def has_children(snapshots: Snapshots, key: str) -> bool:
    """True if some snapshot, of any kind, has ``key`` as its parent [SNAP-5]."""
    return any(each.parent == key for each in snapshots.snapshots.values())


def committed(snapshots: Snapshots, key: str | None) -> Committed | None:
    """The committed snapshot ``key``, or None for no parent; anything else is a model bug."""
    if key is None:
        return None
    found = snapshots.get(key)
    if not isinstance(found, Committed):
        raise ModelError(f"{key!r} is not a committed snapshot")
    return found


def chain_of(snapshots: Snapshots, parent: str | None) -> tuple[Layer, ...]:
    """The layers an overlay mount over ``parent`` stacks, bottom first [SNAP-6][SNAP-7]."""
    found = committed(snapshots, parent)
    return () if found is None else found.chain


def settled_layer(layer: Layer) -> Layer:
    """``layer`` as the next snapshot sees it: no file written since it was made [SNAP-11].

    The filesystem level marks a file whose data was written (``touched``,
    its mtime moved) and where a copy-up came from (``origin``); both are
    about one snapshot's life. A committed layer becomes the base of its
    children, whose diff asks what changed since, so they start cleared.
    One pass over the layer's inodes, made once per commit.
    """
    inodes = {
        ino: replace(inode, touched=False, origin=None)
        for ino, inode in layer.inodes.items()
        if inode.touched or inode.origin is not None
    }
    if not inodes:
        return layer
    return replace(layer, inodes=layer.inodes.update(inodes))


def base_container(snapshots: Snapshots, parent: str | None) -> Container:
    """The filesystem a new active snapshot over ``parent`` shows [SNAP-7][SNAP-8].

    overlayfs: an empty writable layer over the parent's chain; with no parent
    the mount is a bind of one empty directory, a plain directory with no
    layer below. native: a copy of the parent's tree, a plain directory.
    """
    if snapshots.snapshotter == "overlayfs":
        return Container(lowers=chain_of(snapshots, parent), upper=empty_layer())
    found = committed(snapshots, parent)
    if found is None:
        return Container(lowers=(), upper=empty_layer())
    # native copies the parent's tree byte by byte: a hole comes out written [SNAP-9]
    inodes = {
        ino: replace(inode, written=None)
        for ino, inode in found.settled.inodes.items()
        if isinstance(inode, FileInode) and inode.written is not None
    }
    settled = found.settled if not inodes else replace(found.settled, inodes=found.settled.inodes.update(inodes))
    return Container(lowers=(), upper=settled)


def tree_container(snapshots: Snapshots, key: str) -> Container:
    """The filesystem snapshot ``key`` shows, of any kind [SNAP-6][SNAP-7][SNAP-8]."""
    found = snapshots.get(key)
    if found is None:
        raise ModelError(f"no snapshot {key!r}")
    if isinstance(found, ViewSnapshot):
        return base_container(snapshots, found.parent)
    return found.container
