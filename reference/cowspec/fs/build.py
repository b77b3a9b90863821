"""Layers described entry by entry: what a trace or a store step lists, made a ``Layer``.

A trace lists a layer's entries with the format's defaults filled in
(``LayerEntry``); ``build_layer`` makes the layer value of the list [TRACE-2]
[ENTRY-4], refusing what no real layer can hold (two entries for one path,
an entry below a non-directory, a hardlink to something that is not a file
or symlink of the same layer) with a ``SpecError``. The formats decode
entries into this shape; the store builds its layers from it too.
"""

from dataclasses import dataclass, replace
from typing import Literal

from cowspec.errors import SpecError
from cowspec.fs.entries import DEFAULT_DIR_MODE, Dir, FileInode, Inode, Name, Node, SymlinkInode, Whiteout
from cowspec.fs.layer import Layer, frozen_layer
from cowspec.fs.paths import ROOT, name_too_long, parent_of, path_too_long

EntryType = Literal["dir", "file", "symlink", "hardlink", "whiteout"]
ENTRY_TYPES = ("dir", "file", "symlink", "hardlink", "whiteout")


@dataclass(frozen=True, slots=True)
class LayerEntry:
    """One entry of a trace layer, with the format's defaults filled in."""

    path: str
    type: EntryType
    mode: int
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    target: str = ""
    opaque: bool = False


def build_layer(entries: tuple[LayerEntry, ...], where: str) -> Layer:
    """The ``Layer`` a list of entries describes [TRACE-2][ENTRY-4].

    Missing parents are implied directories (0o755, 0:0). Rejected: two
    entries for one path, an entry below a non-directory of the same layer,
    a hardlink whose target is not a non-directory of the same layer, and
    what no Linux file system can hold: a name longer than ``NAME_MAX``
    bytes, a path or symlink target of ``PATH_MAX`` bytes or more.
    """
    by_path: dict[str, LayerEntry] = {}
    for number, entry in enumerate(entries):
        if path_too_long(entry.path) or any(name_too_long(name) for name in entry.path.split("/")):
            raise SpecError(f"{where} entry {number}: path too long for Linux (NAME_MAX 255, PATH_MAX 4096 bytes)")
        if entry.type == "symlink" and path_too_long(entry.target):
            raise SpecError(f"{where} entry {number}: symlink target of PATH_MAX (4096) bytes or more")
        if entry.path in by_path:
            raise SpecError(f"{where} entry {number}: duplicate path {entry.path!r}")
        by_path[entry.path] = entry
    # Each directory's ancestors are checked once: ``clean`` holds the paths
    # with no non-directory entry at or above them.
    clean = {ROOT}
    for entry in entries:
        unchecked = []
        current = parent_of(entry.path)
        while current not in clean:
            unchecked.append(current)
            current = parent_of(current)
        for ancestor in reversed(unchecked):
            above = by_path.get(ancestor)
            if above is not None and above.type != "dir":
                raise SpecError(f"{where}: {entry.path!r} lies below the {above.type} {ancestor!r}")
        clean.update(unchecked)
    implied = Dir(DEFAULT_DIR_MODE, 0, 0)
    nodes: dict[str, Node] = {ROOT: implied}
    inodes: dict[int, Inode] = {}
    links: dict[str, int] = {}
    for entry in entries:
        # Every path in ``nodes`` has its ancestors there too, so the walk up
        # stops at the first one present.
        current = parent_of(entry.path)
        while current not in nodes:
            nodes[current] = implied
            current = parent_of(current)
        if entry.type == "dir":
            nodes[entry.path] = Dir(entry.mode, entry.uid, entry.gid, entry.opaque)
        elif entry.type == "whiteout":
            nodes[entry.path] = Whiteout()
        elif entry.type in ("file", "symlink"):
            ino = len(inodes) + 1
            inodes[ino] = (
                FileInode(entry.data, entry.mode, entry.uid, entry.gid)
                if entry.type == "file"
                else SymlinkInode(entry.target, entry.uid, entry.gid)
            )
            nodes[entry.path] = Name(ino)
            links[entry.path] = ino
    counts: dict[int, int] = dict.fromkeys(inodes, 1)
    for entry in entries:
        if entry.type == "hardlink":
            ino = links[hardlink_origin(by_path, entry, where).path]
            nodes[entry.path] = Name(ino)
            counts[ino] += 1
    for ino, count in counts.items():
        if count > 1:
            inodes[ino] = replace(inodes[ino], nlink=count)
    return frozen_layer(nodes, inodes)


def hardlink_origin(by_path: dict[str, LayerEntry], entry: LayerEntry, where: str) -> LayerEntry:
    """The file or symlink a hardlink entry names, through other hardlinks."""
    seen = {entry.path}
    current = entry
    while current.type == "hardlink":
        following = by_path.get(current.target)
        if following is None or following.type in ("dir", "whiteout"):
            raise SpecError(
                f"{where}: hardlink {entry.path!r} must name a file or symlink of the same layer,"
                f" not {current.target!r}"
            )
        if following.path in seen:
            raise SpecError(f"{where}: hardlink {entry.path!r} is part of a cycle")
        seen.add(following.path)
        current = following
    return current


# -- ops ------------------------------------------------------------------------
