"""The calls of a snapshotter, as values [SNAP-1].

Each class stands for one request to a snapshotter, as ``ctr snapshots``
makes it: ``Prepare`` (an active snapshot), ``View``, ``Commit`` and
``Remove``; and ``Perform``, a filesystem call made through the mounts of
an active snapshot (the filesystem level's ``Op``).
"""

from dataclasses import dataclass

from cowspec.fs.calls import Op


@dataclass(frozen=True, slots=True)
class Prepare:
    """``ctr snapshots prepare KEY [PARENT]``: a writable snapshot [SNAP-2]."""

    key: str
    parent: str | None


@dataclass(frozen=True, slots=True)
class View:
    """``ctr snapshots view KEY [PARENT]``: a read-only snapshot [SNAP-3]."""

    key: str
    parent: str | None


@dataclass(frozen=True, slots=True)
class Commit:
    """``ctr snapshots commit NAME KEY``: active ``key`` becomes committed ``name`` [SNAP-4]."""

    name: str
    key: str


@dataclass(frozen=True, slots=True)
class Remove:
    """``ctr snapshots rm KEY`` [SNAP-5]."""

    key: str


@dataclass(frozen=True, slots=True)
class Perform:
    """A filesystem call made through the mounts of active ``key`` [SNAP-7][SNAP-8]."""

    key: str
    op: Op


SnapshotCall = Prepare | View | Commit | Remove | Perform

CALL_NAMES: dict[type, str] = {
    Prepare: "prepare",
    View: "view",
    Commit: "commit",
    Remove: "remove",
    Perform: "perform",
}
