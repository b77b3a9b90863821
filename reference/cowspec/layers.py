"""One layer: an immutable changeset over the layers below it.

A ``Layer`` keeps three persistent maps, so that an update costs a few map
insertions and never a copy of the whole layer:

- ``entries``: normalised path to node; the root ``"/"`` is always a ``Dir``;
- ``children``: directory path to the set of names stored directly inside
  it in this layer, so that a directory's subtree is found from its root
  without scanning the layer;
- ``inodes``: inode number to ``FileInode`` or ``SymlinkInode``.

Every entry's parent is a ``Dir`` of the same layer [ENTRY-4]. The functions
below keep that invariant and raise ``ModelError`` when asked to break it.
"""

from collections.abc import Iterator
from dataclasses import dataclass, replace

from pyrsistent import pmap, pset
from pyrsistent.typing import PMap, PSet

from .entries import DEFAULT_DIR_MODE, Dir, Inode, Name, Node, Whiteout
from .errors import ModelError
from .paths import ROOT, join, name_of, parent_of, rebase

EMPTY_NAMES: PSet[str] = pset()


@dataclass(frozen=True, slots=True)
class Layer:
    """An immutable layer; build one with ``empty_layer`` and the updates."""

    entries: PMap[str, Node]
    children: PMap[str, PSet[str]]
    inodes: PMap[int, Inode]
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

    def names_in(self, directory: str) -> PSet[str]:
        """Names stored directly inside ``directory`` in this layer."""
        return self.children.get(directory, EMPTY_NAMES)


DEFAULT_ROOT = Dir(DEFAULT_DIR_MODE, 0, 0)


def empty_layer(root: Dir = DEFAULT_ROOT) -> Layer:
    """A layer holding only its root directory."""
    return Layer(entries=pmap({ROOT: root}), children=pmap(), inodes=pmap())


def put(layer: Layer, path: str, node: Node) -> Layer:
    """``layer`` with ``node`` at ``path``; the parent must be a directory.

    A node already at ``path`` is replaced: a non-directory name gives up its
    link; a directory must have no children left (use ``remove`` first).
    """
    if path == ROOT:
        if not isinstance(node, Dir):
            raise ModelError("the root of a layer must be a directory")
        return replace(layer, entries=layer.entries.set(ROOT, node))
    parent = parent_of(path)
    if not isinstance(layer.get(parent), Dir):
        raise ModelError(f"parent of {path} is not a directory in the layer")
    old = layer.get(path)
    if old is not None:
        if isinstance(old, Dir) and not isinstance(node, Dir) and layer.names_in(path):
            raise ModelError(f"replacing non-empty directory {path}")
        if isinstance(old, Name) and old != node:
            layer = _unlink_inode(layer, old.ino)
    children = layer.children.set(parent, layer.names_in(parent).add(name_of(path)))
    if isinstance(old, Dir) and not isinstance(node, Dir):
        children = children.discard(path)
    return replace(layer, entries=layer.entries.set(path, node), children=children)


def add_inode(layer: Layer, inode: Inode) -> tuple[Layer, int]:
    """``layer`` with a new inode (not yet named by any path), and its number."""
    ino = layer.next_ino
    return replace(layer, inodes=layer.inodes.set(ino, inode), next_ino=ino + 1), ino


def set_inode(layer: Layer, ino: int, inode: Inode) -> Layer:
    """``layer`` with inode ``ino`` replaced (data or attributes changed)."""
    layer.inode(ino)
    return replace(layer, inodes=layer.inodes.set(ino, inode))


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
        return replace(layer, inodes=layer.inodes.discard(ino))
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
    entries, children = layer.entries, layer.children
    for each in doomed:
        node = entries[each]
        if isinstance(node, Name):
            layer = _unlink_inode(layer, node.ino)
        entries = entries.discard(each)
        children = children.discard(each)
    parent = parent_of(path)
    remaining = layer.names_in(parent).discard(name_of(path))
    children = children.set(parent, remaining) if remaining else children.discard(parent)
    return replace(layer, entries=entries, children=children)


def move(layer: Layer, src: str, dst: str) -> Layer:
    """``layer`` with the subtree at ``src`` moved to ``dst`` (which is free).

    The cost is the size of the moved subtree, never the whole layer.
    """
    moved = [(each, layer.entries[each]) for each in subtree(layer, src)]
    names = {each: layer.names_in(each) for each, node in moved if isinstance(node, Dir)}
    entries, children = layer.entries, layer.children
    for each, _ in moved:
        entries = entries.discard(each)
        children = children.discard(each)
    for each, node in moved:
        entries = entries.set(rebase(each, src, dst), node)
        if names.get(each):
            children = children.set(rebase(each, src, dst), names[each])
    src_parent, dst_parent = parent_of(src), parent_of(dst)
    left = children.get(src_parent, EMPTY_NAMES).discard(name_of(src))
    children = children.set(src_parent, left) if left else children.discard(src_parent)
    children = children.set(dst_parent, children.get(dst_parent, EMPTY_NAMES).add(name_of(dst)))
    if not isinstance(entries.get(dst_parent), Dir):
        raise ModelError(f"parent of {dst} is not a directory in the layer")
    return replace(layer, entries=entries, children=children)


def is_whiteout(node: Node | None) -> bool:
    """True if ``node`` is a whiteout."""
    return isinstance(node, Whiteout)
