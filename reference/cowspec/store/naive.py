"""What the naive-diff drivers (``fuse-overlayfs``, ``vfs``, ``btrfs``) find and report [DRIVER-2].

Such a driver never reads an upper directory: it walks the container's tree
beside its image's (moby's ``archive.ChangesDirs``) and calls a path

- added (``A``) when only the container has it, each path of a new subtree;
- deleted (``D``) when only the image has it, once at the top of what went;
- modified (``C``) when its type, mode, owner or group differ, or, for a
  non-directory, its size or its modification time; a directory holding any
  change is modified too (the root excepted).

Then its SIZE adds up the ``lstat`` sizes of the added and modified
non-directories, each inode with several names once [DRIVER-4]; a commit
archives those paths, with a ``.wh.`` marker per deletion [DRIVER-5]; and
applying a layer (loading an image, storing a commit) counts the sizes of the
archive's regular files alone, so a symlink counts 0 there [DRIVER-4].

Modification times: every entry of a store trace's image layers has the
same one (the layer tars carry 0), a file or symlink made in the container,
or whose data was written, a new one; so a non-directory's time moved
exactly when the model marks it ``touched`` [DRIVER-2].

A plain container (``vfs``, ``btrfs``) is the filesystem-level container
over no image layer, whose writable layer holds a full copy of the image:
``plain_container``. A ``fuse-overlayfs`` container is the overlay stack, as
on overlay2; only its figures are found the naive way.
"""

from dataclasses import dataclass, replace
from typing import Literal

from cowspec.errors import ModelError
from cowspec.fs.entries import WHITEOUT, Dir, FileInode, Name
from cowspec.fs.layer import Layer, empty_layer, link, new_name, put
from cowspec.fs.paths import ROOT, ancestors, join, parent_of
from cowspec.fs.stack import Container, Found, inode_of, new_container, root_of, visible_children

Kind = Literal["A", "C", "D"]


@dataclass(frozen=True, slots=True)
class NaiveChange:
    """One change a tree walk finds [DRIVER-2]."""

    kind: Kind
    path: str


def plain_copy(image: Container, symlink_links: bool = True) -> Layer:
    """The visible tree of ``image`` as one layer: what ``vfs`` copies and ``btrfs`` snapshots [DRIVER-3].

    Hardlinks stay hardlinks, but with ``symlink_links`` off (vfs, whose copy
    keeps links between regular files only) each name of a hardlinked
    symlink becomes a symlink of its own; nothing is ``touched`` (times are
    the image's).
    """
    root = root_of(image)
    if not isinstance(root.node, Dir):
        raise ModelError("the root of an image is a directory")
    layer = empty_layer(replace(root.node, opaque=False, redirect=None))
    copies: dict[tuple[int, int], int] = {}
    pending = [root]
    while pending:
        current = pending.pop()
        for child in sorted(visible_children(image, current).values(), key=lambda each: each.path):
            if isinstance(child.node, Dir):
                layer = put(layer, child.path, replace(child.node, opaque=False, redirect=None))
                pending.append(child)
                continue
            key = (child.layer, child.node.ino)
            inode = inode_of(image, child)
            if key in copies and (symlink_links or isinstance(inode, FileInode)):
                layer = link(layer, child.path, copies[key])
                continue
            layer = new_name(layer, child.path, replace(inode, nlink=1, touched=False, origin=child.path))
            name = layer.get(child.path)
            if not isinstance(name, Name):
                raise ModelError(f"{child.path}: a name just made is not in the layer")
            copies[key] = name.ino
    return layer


def plain_container(lowers: tuple[Layer, ...], symlink_links: bool = True) -> Container:
    """A container that is a plain filesystem holding a full copy of ``lowers`` [DRIVER-3]."""
    return replace(new_container(()), upper=plain_copy(new_container(lowers), symlink_links))


def _stat(container: Container, found: Found) -> tuple[str, int, int, int, int, bool]:
    """What ``ChangesDirs`` compares: type, mode, owner, group, size, and whether the time moved."""
    node = found.node
    if isinstance(node, Dir):
        return ("dir", node.mode, node.uid, node.gid, 0, False)
    inode = inode_of(container, found)
    if isinstance(inode, FileInode):
        return ("file", inode.mode, inode.uid, inode.gid, len(inode.data), inode.touched)
    size = len(inode.target.encode("utf-8", "surrogateescape"))
    return ("symlink", 0o777, inode.uid, inode.gid, size, inode.touched)


def naive_changes(image: Container, container: Container) -> tuple[NaiveChange, ...]:
    """The changes a tree walk finds in ``container`` against ``image``, sorted by path [DRIVER-2]."""
    changes: dict[str, NaiveChange] = {}

    def added(found: Found) -> None:
        changes[found.path] = NaiveChange("A", found.path)
        if found.is_dir:
            for child in visible_children(container, found).values():
                added(child)

    def walk(before: Found, after: Found) -> None:
        old = visible_children(image, before)
        new = visible_children(container, after)
        for name in sorted(set(old) | set(new)):
            was, now = old.get(name), new.get(name)
            if now is None:
                if was is not None:
                    changes[was.path] = NaiveChange("D", was.path)
                continue
            if was is None:
                added(now)
                continue
            stat_was, stat_now = _stat(image, was), _stat(container, now)
            if stat_was[:4] != stat_now[:4] or (not now.is_dir and (stat_was[4:] != stat_now[4:])):
                changes[now.path] = NaiveChange("C", now.path)
            if now.is_dir:
                if was.is_dir:
                    walk(was, now)
                else:
                    for child in visible_children(container, now).values():
                        added(child)

    walk(root_of(image), root_of(container))
    for change in list(changes.values()):
        for above in ancestors(change.path):
            if above != ROOT and above not in changes:
                changes[above] = NaiveChange("C", above)
    return tuple(sorted(changes.values(), key=lambda change: change.path))


def changes_layer(image: Container, container: Container) -> Layer:
    """The layer a naive driver's commit archives: each added or modified path, each deletion
    as a whiteout [DRIVER-5].

    A directory is archived alone (its children only if they changed);
    names of one inode that both changed stay one file and its hardlinks, but
    a name that did not change is left out, so a new name of an image file
    (``ln``) is archived as a file of its own.
    """
    layer = empty_layer()
    copies: dict[int, int] = {}
    for change in naive_changes(image, container):
        if change.kind == "D":
            layer = put(layer, change.path, WHITEOUT)
            continue
        found = _found(container, change.path)
        if isinstance(found.node, Dir):
            layer = put(layer, change.path, Dir(found.node.mode, found.node.uid, found.node.gid))
            continue
        if found.node.ino in copies:
            layer = link(layer, change.path, copies[found.node.ino])
            continue
        inode = inode_of(container, found)
        if isinstance(inode, FileInode):
            inode = replace(inode, written=None)
        layer = new_name(layer, change.path, replace(inode, nlink=1, touched=False, origin=None))
        name = layer.get(change.path)
        if not isinstance(name, Name):
            raise ModelError(f"{change.path}: a name just made is not in the layer")
        copies[found.node.ino] = name.ino
    return layer


def _found(container: Container, path: str) -> Found:
    """The visible object at ``path``, which a change just named."""
    found = root_of(container)
    for part in path.strip("/").split("/"):
        child = visible_children(container, found).get(part)
        if child is None:
            raise ModelError(f"{path}: a changed path is not in the container")
        found = child
    return found


def changes_size(image: Container, container: Container) -> int:
    """A naive driver's SIZE: the ``lstat`` sizes of the added and modified non-directories,
    an inode with several names once (a symlink counts its target's length here) [DRIVER-4]."""
    total = 0
    seen: set[int] = set()
    for change in naive_changes(image, container):
        if change.kind == "D":
            continue
        found = _found(container, change.path)
        if isinstance(found.node, Dir):
            continue
        inode = inode_of(container, found)
        if inode.nlink > 1:
            if found.node.ino in seen:
                continue
            seen.add(found.node.ino)
        total += _stat(container, found)[4]
    return total


def unpacked_size(layer: Layer) -> int:
    """What applying a layer's archive counts on a naive driver: its regular files' bytes, each
    inode once (a hardlink's member holds no data), symlinks and whiteouts 0 [DRIVER-4]."""
    return sum(len(inode.data) for inode in layer.inodes.values() if isinstance(inode, FileInode))


def tree_entries(container: Container) -> dict[str, tuple[str, int, int]]:
    """Every visible path of ``container``: (kind, size, inode key), for the disk figures [DRIVER-7].

    ``kind`` is ``dir``, ``file`` or ``symlink``; the inode key is the same
    for the names of one inode (directories have their own).
    """
    entries: dict[str, tuple[str, int, int]] = {}
    keys: dict[tuple[int, int], int] = {}
    pending = [root_of(container)]
    while pending:
        current = pending.pop()
        if isinstance(current.node, Dir):
            entries[current.path] = ("dir", 0, -len(entries) - 1)
            pending.extend(visible_children(container, current).values())
            continue
        key = keys.setdefault((current.layer, current.node.ino), len(keys))
        kind, _, _, _, size, _ = _stat(container, current)
        entries[current.path] = (kind, size, key)
    return entries


def directory_names(entries: dict[str, tuple[str, int, int]]) -> dict[str, list[str]]:
    """The names directly inside each directory of ``entries``."""
    names: dict[str, list[str]] = {path: [] for path, (kind, _, _) in entries.items() if kind == "dir"}
    for path in entries:
        if path != ROOT:
            names.setdefault(parent_of(path), []).append(path.rsplit("/", 1)[-1])
    return names


def with_entries(
    entries: dict[str, tuple[str, int, int]], extra: tuple[tuple[str, str, int], ...]
) -> dict[str, tuple[str, int, int]]:
    """``entries`` with each (path, kind, size) of ``extra`` that is absent and under a directory."""
    result = dict(entries)
    for path, kind, size in extra:
        parent = result.get(parent_of(path))
        if path in result or parent is None or parent[0] != "dir":
            continue
        result[path] = (kind, size, -len(result) - 1 if kind == "dir" else 10**9 + len(result))
    return result


def join_names(directory: str, names: list[str]) -> list[str]:
    """The paths of ``names`` inside ``directory``."""
    return [join(directory, name) for name in names]
