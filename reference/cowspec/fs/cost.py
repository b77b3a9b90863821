"""What a step costs the writable layer: bytes copied up, entries created.

The seed's claim is that copy-up has a cost that grows with the file, the
stack and the tree. This module states what a step must copy and create,
so that the cost can be predicted from the model and measured exactly on a
real implementation (``cowcheck.copy_cost``) [COST-1]:

- *bytes copied up*: the data a step copies from the image layers into
  the writable layer. A data copy-up copies a regular file whole, its logical size
  at the time, whatever the call then does to it (a ``truncate`` to 0
  copies the file first). Directories and symlinks copy no data; neither
  does a metadata-only copy-up (``metacopy``), until the first call that
  needs the data [COST-2][COST-3];
- *entries created*: the entries of the writable layer after the step that
  were not there before: the parents copied up, the object copied up, a
  new file, directory or symlink, a new name of a hardlink, a whiteout. An
  entry a rename moves is the same entry at its new path [COST-4].

Both are read off the writable layer before and after ``step``, so they
hold whatever path the step took. Which inodes are metadata-only copies
is asked of ``is_metacopy`` alone, the one place the metacopy feature
enters here; with ``index`` on, the second name of an image inode copied
up links to the first one's copy, which is no new inode and copies
nothing, and removing a name of a hardlinked image file copies the file
into the index first (its other names must stay one inode): a data copy
no upper name shows, listed as ``INDEX_LABEL``.
"""

from dataclasses import dataclass

from cowspec.errors import ModelError
from cowspec.fs import entries
from cowspec.fs.calls import Ok, Op, Rename
from cowspec.fs.entries import Dir, FileInode, Inode, Name, Node, Whiteout
from cowspec.fs.layer import Layer
from cowspec.fs.operations import Transition, plan_rename, resolve_rename, step
from cowspec.fs.paths import ROOT, is_inside, rebase
from cowspec.fs.resolve import Denied
from cowspec.fs.stack import Container, inode_of, lookup


@dataclass(frozen=True, slots=True)
class Cost:
    """The cost of one step in the writable layer [COST-1].

    ``copied`` lists every inode whose data the step copied up, as (its
    first path in the writable layer after the step, bytes copied), sorted;
    ``created`` the paths of the entries it created, sorted.
    """

    copied: tuple[tuple[str, int], ...] = ()
    created: tuple[str, ...] = ()

    @property
    def bytes_copied(self) -> int:
        """Data bytes copied from the image layers [COST-2]."""
        return sum(size for _, size in self.copied)

    @property
    def objects_created(self) -> int:
        """Entries the step added to the writable layer [COST-4]."""
        return len(self.created)


FREE = Cost()

INDEX_LABEL = "(index)"
"""The path a copy is listed under when no name of the writable layer shows it: with ``index`` on, removing one
name of a hardlinked image file copies the file into the work directory's index alone [COST-2]."""


def is_metacopy(inode: Inode) -> bool:
    """True for an upper file whose data is still in an image layer: a
    metadata-only copy-up [COST-3] (``FileInode.metacopy``, METACOPY-1)."""
    return entries.is_metacopy(inode)


def step_cost(container: Container, op: Op) -> Cost:
    """The cost of ``op`` on ``container``, by ``step`` [COST-1]."""
    return transition_cost(container, op, step(container, op))


def transition_cost(before: Container, op: Op, transition: Transition) -> Cost:
    """The cost of the step from ``before`` by ``op`` to ``transition`` [COST-1][COST-2][COST-4]."""
    after = transition.container
    moved = rename_move(before, op) if isinstance(transition.outcome, Ok) else None
    return Cost(copied=copied_data(before, after), created=created_entries(before.upper, after.upper, moved))


def rename_move(container: Container, op: Op) -> tuple[str, str] | None:
    """(source, destination) of a rename that moves something; None for
    any other call and a rename of an object onto itself [COST-4]."""
    if not isinstance(op, Rename):
        return None
    ends = resolve_rename(container, op)
    if isinstance(ends, Denied):
        return None
    plan = plan_rename(container, *ends)
    if isinstance(plan, Denied) or plan.noop:
        return None
    return plan.source.path, plan.target.path


def moved_from(path: str, moved: tuple[str, str] | None) -> str:
    """Where the entry now at ``path`` was before a rename ``moved`` (source, destination)."""
    if moved is None:
        return path
    source, destination = moved
    if path == destination or is_inside(path, destination):
        return rebase(path, destination, source)
    return path


def copied_data(before: Container, after: Container) -> tuple[tuple[str, int], ...]:
    """Every inode of ``after``'s writable layer whose data the step copied
    up, with the bytes it copied [COST-2][COST-3].

    A new inode that came from an image layer (it has an ``origin``) is a
    copy-up: its data was copied unless it is a metadata-only copy. An
    inode that was a metadata-only copy before and is not any more had its
    data copied now. An inode no name of the writable layer shows (an
    index entry alone, left by removing one name of a hardlinked image
    file with ``index`` on) is listed as ``INDEX_LABEL``.
    """
    names = first_names(after.upper)
    copied: list[tuple[str, int]] = []
    for ino, inode in after.upper.inodes.items():
        if not isinstance(inode, FileInode) or is_metacopy(inode):
            continue
        previous = before.upper.inodes.get(ino)
        name = names.get(ino, INDEX_LABEL)  # no name: a copy in the index alone, still copied
        if previous is None and inode.origin is not None:
            copied.append((name, source_size(before, inode.origin)))
        elif isinstance(previous, FileInode) and is_metacopy(previous):
            copied.append((name, len(previous.data)))
    return tuple(sorted(copied))


def source_size(container: Container, path: str) -> int:
    """The size of the image-layer file a copy-up of ``path`` copied, read in
    the container before the step (the merged view finds it there)."""
    found = lookup(container, path)
    if found is None or found.in_upper or not isinstance(found.node, Name):
        raise ModelError(f"{path} was copied up but is no image-layer file before the step")
    inode = inode_of(container, found)
    if not isinstance(inode, FileInode):
        raise ModelError(f"{path} was copied up as a file but is no file in its layer")
    return len(inode.data)


def first_names(layer: Layer) -> dict[int, str]:
    """Each inode of ``layer`` and the first of its paths, in sorted order."""
    names: dict[int, str] = {}
    for path, node in layer.entries.items():
        if isinstance(node, Name) and (node.ino not in names or path < names[node.ino]):
            names[node.ino] = path
    return names


def created_entries(before: Layer, after: Layer, moved: tuple[str, str] | None) -> tuple[str, ...]:
    """The paths of ``after``'s entries that ``before`` did not hold [COST-4].

    A directory or a whiteout is the entry it was if ``before`` held one of
    its kind where it was (its path, or its source if a rename moved it).
    The names of a file or symlink are counted by inode: an inode with more
    names than before gained the new ones; a name a rename moved is not new.
    """
    created: list[str] = []
    names_before: dict[int, set[str]] = {}
    for path, node in before.entries.items():
        if isinstance(node, Name):
            names_before.setdefault(node.ino, set()).add(path)
    names_after: dict[int, list[str]] = {}
    for path, node in after.entries.items():
        if path == ROOT:
            continue
        if isinstance(node, Name):
            names_after.setdefault(node.ino, []).append(path)
        elif not same_kind(before.entries.get(moved_from(path, moved)), node):
            created.append(path)
    for ino, paths in names_after.items():
        old = names_before.get(ino, set())
        gained = len(paths) - len(old)
        if gained > 0:
            fresh = sorted(path for path in paths if path not in old and moved_from(path, moved) not in old)
            created.extend(fresh[:gained])
    return tuple(sorted(created))


def same_kind(old: Node | None, new: Node) -> bool:
    """True if ``old`` is a directory and ``new`` one too, or both are whiteouts."""
    return (isinstance(old, Dir) and isinstance(new, Dir)) or (isinstance(old, Whiteout) and isinstance(new, Whiteout))
