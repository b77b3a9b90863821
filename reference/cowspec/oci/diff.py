"""``docker diff``: what a container changed, as Docker's rules report it.

Docker walks the container's root filesystem beside its image's and reports
each path as Added, Changed or Deleted [DIFF-1]:

- a path only the container has is ``A``, each one of a new subtree;
- a path only the image has is ``D``, once at the root of what went;
- a path both have is ``C`` when its type, mode, owner or group differ, or,
  for a non-directory, its size or its modification time; a directory
  replaced by a file hides its old children from the report;
- every directory above a change is ``C`` too, the root excepted.

The model has no clock. It knows instead whether a file's data was written
since it left its layer (its mtime moved: ``C``), and, for a file copied up,
which path it was copied from: a copy at its own path keeps its mtime (no
change), but a file renamed over another has the other's neighbour's mtime,
which only the real layers know; that ``C`` is *possible*, not certain, and
the oracle accepts it either way [DIFF-2].
"""

from dataclasses import dataclass
from typing import Literal

from cowspec.errors import ModelError
from cowspec.fs.entries import Dir, FileInode, Inode
from cowspec.fs.paths import ROOT, ancestors
from cowspec.fs.stack import Container, Found, inode_of, new_container, root_of, visible_children

Kind = Literal["A", "C", "D"]


@dataclass(frozen=True, slots=True)
class Change:
    """One line of ``docker diff``; ``certain`` is False where mtimes decide."""

    kind: Kind
    path: str
    certain: bool = True


def stat_key(container: Container, found: Found) -> tuple[str, int, int, int, int]:
    """What a walk comparing two trees compares of a path: type, mode, owner, group and size (a symlink's
    size is its target's length in bytes, names that are not UTF-8 included)."""
    node = found.node
    if isinstance(node, Dir):
        return ("dir", node.mode, node.uid, node.gid, 0)
    inode = inode_of(container, found)
    if isinstance(inode, FileInode):
        return ("file", inode.mode, inode.uid, inode.gid, len(inode.data))
    return ("symlink", 0o777, inode.uid, inode.gid, len(inode.target.encode("utf-8", "surrogateescape")))


def _subtree(container: Container, found: Found) -> list[str]:
    paths = [found.path]
    if found.is_dir:
        for child in visible_children(container, found).values():
            paths.extend(_subtree(container, child))
    return paths


def _same_time(path: str, inode: Inode, in_upper: bool) -> bool | None:
    """Whether the container's non-directory kept the image's mtime at ``path``.

    True, False, or None when only the real mtimes could tell [DIFF-2].
    """
    if not in_upper:
        return True
    if inode.touched:
        return False
    return True if inode.origin == path else None


def docker_diff(container: Container) -> tuple[Change, ...]:
    """The changes ``docker diff`` reports for ``container``, sorted by path [DIFF-1]."""
    image = new_container(container.lowers, container.features)
    changes: dict[str, Change] = {}

    def walk(before: Found, after: Found) -> None:
        old = visible_children(image, before)
        new = visible_children(container, after)
        for name in sorted(set(old) | set(new)):
            was, now = old.get(name), new.get(name)
            if was is None:
                if now is None:
                    raise ModelError(f"{name!r} is in neither view it was listed from")
                for path in _subtree(container, now):
                    changes[path] = Change("A", path)
                continue
            if now is None:
                changes[was.path] = Change("D", was.path)
                continue
            stat_was, stat_now = stat_key(image, was), stat_key(container, now)
            if stat_was[:4] != stat_now[:4]:
                changes[now.path] = Change("C", now.path)
            elif not now.is_dir:
                same = _same_time(now.path, inode_of(container, now), now.in_upper)
                if stat_was[4] != stat_now[4] or same is False:
                    changes[now.path] = Change("C", now.path)
                elif same is None:
                    changes[now.path] = Change("C", now.path, certain=False)
            if was.is_dir and now.is_dir:
                walk(was, now)
            elif now.is_dir:
                for path in _subtree(container, now)[1:]:
                    changes[path] = Change("A", path)

    walk(root_of(image), root_of(container))
    # Every directory above a change is changed too [DIFF-1].
    for change in list(changes.values()):
        for above in ancestors(change.path):
            if above == ROOT:
                continue
            known = changes.get(above)
            if known is None or (not known.certain and change.certain):
                changes[above] = Change("C", above, certain=change.certain or (known is not None and known.certain))
    return tuple(sorted(changes.values(), key=lambda change: change.path))
