"""One layer: an immutable changeset over the layers below it.

A ``Layer`` keeps three maps:

- ``entries``: normalised path to node; the root ``"/"`` is always a ``Dir``;
- ``children``: directory path to the set of names stored directly inside
  it in this layer, so that a directory's subtree is found from its root
  without scanning the layer;
- ``inodes``: inode number to ``FileInode`` or ``SymlinkInode``.

Every entry's parent is a ``Dir`` of the same layer [ENTRY-4]. The functions
below keep that invariant and raise ``ModelError`` when asked to break it.

Image layers and the writable layer use one persistent map type,
``immutables.Map`` (a hash array mapped trie written in C, with a
pure-Python fallback). An image layer is built once (``frozen_layer``) and
never changes; the writable layer changes at every step, and an update
costs a few insertions of O(log n) each and shares the rest with the layer
before it: no update copies a layer. A directory's names in the writable
layer are ``Names``, a persistent set over a ``Map``, so adding one name is
O(log n) too, not O(size of the directory). An image layer keeps its
directories' names as frozensets: nothing adds to them, and a directory
changed in an image layer (only tests do that) becomes ``Names`` once.

Why this split of set types, measured with ``benchmarks/model_bench.py``
(20 layers, 100,000 entries, 100,000 lookups, 10,000 steps): CPU seconds,
best of six runs per layout, the layouts alternated in one session, all
with the ``build_layer`` of that time (a later change to it took about half
a second off the build):

=============================  =====  ======  ====  =====
layout                         build  lookup  ops   total
=============================  =====  ======  ====  =====
before                         1.76   0.71    0.64  3.27
this one                       2.01   0.46    0.43  2.90
a ``Map`` per image directory  2.31   0.50    0.40  3.36
two map types                  1.86   0.48    0.42  2.80
=============================  =====  ======  ====  =====

"Before" kept image layers as read-only views of dictionaries and the
writable layer in pyrsistent's ``PMap`` and ``PSet``; "two map types" is
that with ``Map`` and ``Names`` in the writable layer.

Lookups and steps are faster by a third: every probe of the writable
layer is one C call, where pyrsistent's ``PMap`` ran Python code. Building
costs more than with dictionaries: a trie is made of many small objects,
which Python's cycle collector traverses again and again while the image
layers are made. One ``Map`` per directory of every image layer adds as
many objects again, and the build cost with them; frozensets add none.
Dictionaries for the image layers would still build faster, but the
layers would then be of two map types again, for a tenth of a second.
"""

from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, replace
from typing import TypeVar

from immutables import Map

from cowspec.errors import ModelError
from cowspec.fs.entries import DEFAULT_DIR_MODE, Dir, Inode, Name, Node, Whiteout, is_metacopy
from cowspec.fs.paths import ROOT, join, name_of, parent_of, rebase

K = TypeVar("K")
V = TypeVar("V")


def without(mapping: "Map[K, V]", key: K) -> "Map[K, V]":
    """``mapping`` without ``key``, which may be absent (``Map.delete`` would raise)."""
    return mapping.delete(key) if key in mapping else mapping


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Names(Set[str]):
    """The names stored directly inside one directory: a persistent set.

    The members are the keys of a ``Map``, so adding or removing one name
    costs O(log n) and shares the rest. It is a ``collections.abc.Set``, so
    it compares equal to any set of the same names, and ``&``, ``|`` and
    ``-`` work (their results are frozensets).
    """

    members: "Map[str, bool]"

    def __contains__(self, name: object) -> bool:
        return name in self.members

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"Names({sorted(self.members)!r})"

    __hash__ = Set._hash

    @classmethod
    def _from_iterable(cls, names: Iterable[str]) -> frozenset[str]:  # type: ignore[override]
        return frozenset(names)

    def add(self, name: str) -> "Names":
        """These names and ``name``."""
        return Names(self.members.set(name, True))

    def discard(self, name: str) -> "Names":
        """These names without ``name``."""
        return Names(without(self.members, name))


def names_of(names: Iterable[str]) -> Names:
    """A ``Names`` holding ``names``."""
    return Names(Map(dict.fromkeys(names, True)))


EMPTY_NAMES = Names(Map())


def _names(names: Set[str]) -> Names:
    """``names`` as a ``Names``: an image layer's frozenset is converted once."""
    return names if isinstance(names, Names) else names_of(names)


@dataclass(frozen=True, slots=True)
class Layer:
    """An immutable layer; build one with ``empty_layer`` and the updates."""

    entries: "Map[str, Node]"
    children: "Map[str, Set[str]]"
    inodes: "Map[int, Inode]"
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
    return Layer(entries=Map({ROOT: root}), children=Map(), inodes=Map())


def frozen_layer(entries: Mapping[str, Node], inodes: Mapping[int, Inode]) -> Layer:
    """An image layer from complete maps (copied once into persistent ones).

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
    return Layer(
        entries=Map(entries),
        children=Map({path: frozenset(names) for path, names in children.items()}),
        inodes=Map(inodes),
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
        return replace(layer, entries=layer.entries.set(ROOT, node))
    parent = parent_of(path)
    if not isinstance(layer.get(parent), Dir):
        raise ModelError(f"parent of {path} is not a directory in the layer")
    old = layer.get(path)
    if old is not None:
        if isinstance(old, Dir) and not isinstance(node, Dir) and layer.names_in(path):
            raise ModelError(f"replacing non-empty directory {path}")
        if isinstance(old, Name) and old != node:
            layer = unlink_inode(layer, old.ino)
    children = layer.children.set(parent, _names(layer.names_in(parent)).add(name_of(path)))
    if isinstance(old, Dir) and not isinstance(node, Dir):
        children = without(children, path)
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


def unlink_inode(layer: Layer, ino: int) -> Layer:
    """``layer`` with inode ``ino`` one link short; gone at none."""
    inode = layer.inode(ino)
    if inode.nlink <= 1:
        return replace(layer, inodes=layer.inodes.delete(ino))
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
            layer = unlink_inode(layer, node.ino)
        entries = entries.delete(each)
        children = without(children, each)
    parent = parent_of(path)
    remaining = _names(layer.names_in(parent)).discard(name_of(path))
    children = children.set(parent, remaining) if remaining else without(children, parent)
    return replace(layer, entries=entries, children=children)


def move(layer: Layer, src: str, dst: str) -> Layer:
    """``layer`` with the subtree at ``src`` moved to ``dst`` (which is free).

    The cost is the size of the moved subtree, never the whole layer.
    """
    moved = [(each, layer.entries[each]) for each in subtree(layer, src)]
    names = {each: layer.names_in(each) for each, node in moved if isinstance(node, Dir)}
    entries, children = layer.entries, layer.children
    for each, _ in moved:
        entries = entries.delete(each)
        children = without(children, each)
    for each, node in moved:
        entries = entries.set(rebase(each, src, dst), node)
        if names.get(each):
            children = children.set(rebase(each, src, dst), names[each])
    src_parent, dst_parent = parent_of(src), parent_of(dst)
    left = _names(children.get(src_parent, EMPTY_NAMES)).discard(name_of(src))
    children = children.set(src_parent, left) if left else without(children, src_parent)
    children = children.set(dst_parent, _names(children.get(dst_parent, EMPTY_NAMES)).add(name_of(dst)))
    if not isinstance(entries.get(dst_parent), Dir):
        raise ModelError(f"parent of {dst} is not a directory in the layer")
    return replace(layer, entries=entries, children=children)


def metacopy_at(layer: Layer, path: str) -> bool:
    """True if ``path`` in ``layer`` names a metacopy file: one whose
    attributes the layer holds but whose data it does not (no block; the
    data is still the image layer's) [METACOPY-1]. A cost predictor counts
    no data bytes for such a copy until ``is_metacopy`` of its inode turns
    false [METACOPY-2]."""
    node = layer.get(path)
    return isinstance(node, Name) and is_metacopy(layer.inode(node.ino))


def is_whiteout(node: Node | None) -> bool:
    """True if ``node`` is a whiteout."""
    return isinstance(node, Whiteout)
