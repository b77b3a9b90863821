"""One layer: an immutable changeset over the layers below it.

A ``Layer`` keeps three maps:

- ``entries``: normalised path to node; the root ``"/"`` is always a ``Dir``;
- ``children``: directory path to the set of names stored directly inside
  it in this layer, so that a directory's subtree is found from its root
  without scanning the layer;
- ``inodes``: inode number to ``FileInode`` or ``SymlinkInode``.

Every entry's parent is a ``Dir`` of the same layer [ENTRY-4]. The functions
below keep that invariant and raise ``ModelError`` when asked to break it.

An image layer is built once (``frozen_layer``) and never changes: its maps
are read-only views of plain dictionaries, the fastest to read. The
writable layer changes at every step: its maps are persistent (pyrsistent's
``PMap`` and ``PSet``), so an update costs a few insertions and shares the
rest with the layer before it; no update copies a whole layer.
"""

from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TypeVar

from pyrsistent import PMap, PSet, pmap, pset

from cowspec.errors import ModelError
from cowspec.fs.entries import DEFAULT_DIR_MODE, Dir, Inode, Name, Node, Whiteout
from cowspec.fs.paths import ROOT, join, name_of, parent_of, rebase

EMPTY_NAMES: PSet[str] = pset()
K = TypeVar("K")
V = TypeVar("V")


def _persistent(mapping: Mapping[K, V]) -> "PMap[K, V]":
    """The map as a ``PMap``; a frozen layer's map is converted once (O(n))."""
    return mapping if isinstance(mapping, PMap) else pmap(mapping)


def _names(names: Set[str]) -> "PSet[str]":
    return names if isinstance(names, PSet) else pset(names)


@dataclass(frozen=True, slots=True)
class Layer:
    """An immutable layer; build one with ``empty_layer`` and the updates."""

    entries: Mapping[str, Node]
    children: Mapping[str, Set[str]]
    inodes: Mapping[int, Inode]
    next_ino: int = 1

    def get(self, path: str) -> Node | None:
        """The node at ``path`` in this layer, or None if it is absent."""
        return self.entries.get(path)

    def inode(self, ino: int) -> Inode:
        """The inode ``ino``; a dangling number is a model bug."""
        found = self.inodes.get(ino)
        if found is None:
            raise ModelError(f"inode {ino} is not in the layer")
        return found

    def names_in(self, directory: str) -> Set[str]:
        """Names stored directly inside ``directory`` in this layer."""
        return self.children.get(directory, EMPTY_NAMES)


DEFAULT_ROOT = Dir(DEFAULT_DIR_MODE, 0, 0)


def empty_layer(root: Dir = DEFAULT_ROOT) -> Layer:
    """A layer holding only its root directory, ready for updates."""
    return Layer(entries=pmap({ROOT: root}), children=pmap(), inodes=pmap())


def frozen_layer(entries: dict[str, Node], inodes: dict[int, Inode]) -> Layer:
    """An image layer from complete maps, which the caller gives up.

    ``entries`` must hold the root and every parent [ENTRY-4]; every inode's
    ``nlink`` must count the names that point to it [ENTRY-2].
    """
    children: dict[str, set[str]] = {}
    for path, node in entries.items():
        if path == ROOT:
            continue
        parent = parent_of(path)
        if not isinstance(entries.get(parent), Dir):
            raise ModelError(f"parent of {path} is not a directory in the layer")
        children.setdefault(parent, set()).add(name_of(path))
        if isinstance(node, Name) and node.ino not in inodes:
            raise ModelError(f"{path} names a missing inode")
    frozen = {path: frozenset(names) for path, names in children.items()}
    return Layer(
        entries=MappingProxyType(entries),
        children=MappingProxyType(frozen),
        inodes=MappingProxyType(inodes),
        next_ino=max(inodes, default=0) + 1,
    )


def put(layer: Layer, path: str, node: Node) -> Layer:
    """``layer`` with ``node`` at ``path``; the parent must be a directory.

    A node already at ``path`` is replaced: a non-directory name gives up its
    link; a directory must have no children left (use ``remove`` first).
    """
    if path == ROOT:
        if not isinstance(node, Dir):
            raise ModelError("the root of a layer must be a directory")
        return replace(layer, entries=_persistent(layer.entries).set(ROOT, node))
    parent = parent_of(path)
    if not isinstance(layer.get(parent), Dir):
        raise ModelError(f"parent of {path} is not a directory in the layer")
    old = layer.get(path)
    if old is not None:
        if isinstance(old, Dir) and not isinstance(node, Dir) and layer.names_in(path):
            raise ModelError(f"replacing non-empty directory {path}")
        if isinstance(old, Name) and old != node:
            layer = _unlink_inode(layer, old.ino)
    children = _persistent(layer.children).set(parent, _names(layer.names_in(parent)).add(name_of(path)))
    if isinstance(old, Dir) and not isinstance(node, Dir):
        children = children.discard(path)
    return replace(layer, entries=_persistent(layer.entries).set(path, node), children=children)


def add_inode(layer: Layer, inode: Inode) -> tuple[Layer, int]:
    """``layer`` with a new inode (not yet named by any path), and its number."""
    ino = layer.next_ino
    return replace(layer, inodes=_persistent(layer.inodes).set(ino, inode), next_ino=ino + 1), ino


def set_inode(layer: Layer, ino: int, inode: Inode) -> Layer:
    """``layer`` with inode ``ino`` replaced (data or attributes changed)."""
    layer.inode(ino)
    return replace(layer, inodes=_persistent(layer.inodes).set(ino, inode))


def link(layer: Layer, path: str, ino: int) -> Layer:
    """``layer`` with a new name ``path`` for inode ``ino`` [ENTRY-2]."""
    inode = layer.inode(ino)
    linked = set_inode(layer, ino, replace(inode, nlink=inode.nlink + 1))
    return put(linked, path, Name(ino))


def new_name(layer: Layer, path: str, inode: Inode) -> Layer:
    """``layer`` with a fresh inode named ``path`` (nlink 1)."""
    with_inode, ino = add_inode(layer, replace(inode, nlink=0))
    return link(with_inode, path, ino)


def _unlink_inode(layer: Layer, ino: int) -> Layer:
    inode = layer.inode(ino)
    if inode.nlink <= 1:
        return replace(layer, inodes=_persistent(layer.inodes).discard(ino))
    return set_inode(layer, ino, replace(inode, nlink=inode.nlink - 1))


def subtree(layer: Layer, path: str) -> Iterator[str]:
    """``path`` and every path below it in this layer, parents first."""
    if layer.get(path) is None:
        return
    pending = [path]
    while pending:
        current = pending.pop()
        yield current
        pending.extend(join(current, name) for name in layer.names_in(current))


def remove(layer: Layer, path: str) -> Layer:
    """``layer`` without ``path`` and everything below it."""
    if path == ROOT:
        raise ModelError("the root of a layer cannot be removed")
    doomed = list(subtree(layer, path))
    if not doomed:
        return layer
    entries, children = _persistent(layer.entries), _persistent(layer.children)
    for each in doomed:
        node = entries[each]
        if isinstance(node, Name):
            layer = _unlink_inode(layer, node.ino)
        entries = entries.discard(each)
        children = children.discard(each)
    parent = parent_of(path)
    remaining = _names(layer.names_in(parent)).discard(name_of(path))
    children = children.set(parent, remaining) if remaining else children.discard(parent)
    return replace(layer, entries=entries, children=children)


def move(layer: Layer, src: str, dst: str) -> Layer:
    """``layer`` with the subtree at ``src`` moved to ``dst`` (which is free).

    The cost is the size of the moved subtree, never the whole layer.
    """
    moved = [(each, layer.entries[each]) for each in subtree(layer, src)]
    names = {each: layer.names_in(each) for each, node in moved if isinstance(node, Dir)}
    entries, children = _persistent(layer.entries), _persistent(layer.children)
    for each, _ in moved:
        entries = entries.discard(each)
        children = children.discard(each)
    for each, node in moved:
        entries = entries.set(rebase(each, src, dst), node)
        if names.get(each):
            children = children.set(rebase(each, src, dst), _names(names[each]))
    src_parent, dst_parent = parent_of(src), parent_of(dst)
    left = _names(children.get(src_parent, EMPTY_NAMES)).discard(name_of(src))
    children = children.set(src_parent, left) if left else children.discard(src_parent)
    children = children.set(dst_parent, _names(children.get(dst_parent, EMPTY_NAMES)).add(name_of(dst)))
    if not isinstance(entries.get(dst_parent), Dir):
        raise ModelError(f"parent of {dst} is not a directory in the layer")
    return replace(layer, entries=entries, children=children)


def is_whiteout(node: Node | None) -> bool:
    """True if ``node`` is a whiteout."""
    return isinstance(node, Whiteout)
