"""Conformance profiles: what a real system is held to (spec chapter 16).

``kernel`` holds it to Linux overlayfs as Docker's overlay2 mounts it,
exactly [CONFORM-1]. ``portable`` holds it to what any correct
implementation of the same model must do: every op's result and the merged
view exact, except at the points of legitimate variation the spec names,
each a rule of its own: the writable layer's form [CONFORM-2], the sizes
counted from it [CONFORM-3], the link count of the names of a hardlinked
image-layer file once a copy-up broke the link [CONFORM-4] or once one of
its names was hidden [CONFORM-6], and whiteouts listed by ``readdir`` in a
plain directory [CONFORM-5], an op's outcome, given as a set of allowed
outcomes by ``operations.allowed``.

This module says where the model's state allows a variation; the
comparison itself is the checker's (``cowcheck.compare``).
"""

from dataclasses import dataclass
from typing import Literal

from cowspec.fs.entries import Dir, FileInode, Inode, Name
from cowspec.fs.stack import Container, Found, root_of, visible_children

Conformance = Literal["kernel", "portable"]
CONFORMANCES: tuple[Conformance, ...] = ("kernel", "portable")


def broken_links(container: Container) -> dict[tuple[int, int], int]:
    """The image-layer inodes that have several names and one of whose names
    a copy-up has made a new inode of [COPYUP-5][CONFORM-4]: (layer index
    from the top, inode number) mapped to the highest link count any of their
    names may show, the image inode's count plus its copies'.

    A copy records the path it came from (``origin``); the inode the image
    layers show there is the one whose link the copy broke.
    """
    broken: dict[tuple[int, int], int] = {}
    if container.features.index:
        return broken  # the index keeps every link [INDEX-1]
    for inode in container.upper.inodes.values():
        key = _original(container, inode)
        if key is None:
            continue
        if key not in broken:
            broken[key] = container.layer(key[0]).inode(key[1]).nlink
        broken[key] += inode.nlink
    return broken


def _original(container: Container, inode: Inode) -> tuple[int, int] | None:
    """The image-layer inode with several names that ``inode`` was copied from, if any."""
    if not isinstance(inode, FileInode) or inode.origin is None:
        return None
    source = container.image.found.get(inode.origin)
    if source is None or not isinstance(source.node, Name):
        return None
    if container.layer(source.layer).inode(source.node.ino).nlink < 2:
        return None
    return source.layer, source.node.ino


@dataclass(frozen=True, slots=True)
class LinkBound:
    """The link counts a portable implementation may give for one name: any
    from ``lowest`` to ``highest``, by ``rule``."""

    lowest: int
    highest: int
    rule: str


def link_bounds(container: Container) -> dict[str, LinkBound]:
    """The merged view's paths whose link count a portable implementation may
    give otherwise, each with the counts allowed:

    - every visible name of an image-layer inode whose hardlink a copy-up
      broke, and every name of such a copy: 1 to the image inode's count plus
      its copies' [CONFORM-4];
    - every visible name of an image-layer inode with several names some of
      which the merged view no longer shows (an ``unlink``, a ``rename``, a
      whiteout or a shadowing entry of a higher layer hid them): from the
      number of names still shown to the image inode's count [CONFORM-6].
    """
    broken = broken_links(container)
    bounds: dict[str, LinkBound] = {}
    shown: dict[tuple[int, int], list[str]] = {}
    pending: list[Found] = [root_of(container)]
    while pending:
        directory = pending.pop()
        for found in visible_children(container, directory).values():
            if isinstance(found.node, Dir):
                pending.append(found)
                continue
            key: tuple[int, int] | None = (found.layer, found.node.ino)
            if found.in_upper:
                key = _original(container, container.upper.inode(found.node.ino))
            if key in broken:
                bounds[found.path] = LinkBound(1, broken[key], "CONFORM-4")
            elif not found.in_upper and key is not None:
                shown.setdefault(key, []).append(found.path)
    for (layer, ino), paths in shown.items():
        inode = container.layer(layer).inode(ino)
        if isinstance(inode, FileInode) and len(paths) < inode.nlink:
            for path in paths:
                bounds[path] = LinkBound(len(paths), inode.nlink, "CONFORM-6")
    return bounds


def nlink_bounds(container: Container) -> dict[str, int]:
    """The highest link count ``link_bounds`` allows at each of its paths."""
    return {path: bound.highest for path, bound in link_bounds(container).items()}
