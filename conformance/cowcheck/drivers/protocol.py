"""What a driver is at each level: a real implementation, asked in the model's terms.

- Level 1, ``Driver``: it starts a *session* per example: the layers of a
  trace laid out in the implementation's own way, with an empty writable
  layer over them. The session performs ops and reports what it saw in the
  JSON shape of the trace result, so the harness compares real and model
  results without knowing which implementation ran them.
- Level 2, ``LayerDriver``: a tool that turns a stack of layer tars into a
  root filesystem, or refuses the image; a ``Committer`` also runs ops in a
  container over a stack of layers and commits it to a layer tar.
- Level 3, ``StoreDriver``: an engine that runs a store trace's steps and
  reports every figure in the shape of the store trace result.
- The snapshot level, ``SnapshotDriver``: a snapshotter as containerd defines
  one (keys, parents, active snapshots, views, commit, remove). Each example
  opens a fresh, empty snapshotter state (``open_snapshots``); the session
  makes each call and reports what it saw in JSON shapes (the model's
  ``cowspec.snapshot.observe`` gives the same), so that the harness compares
  without knowing which snapshotter ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:  # the CLI imports this module for its errors alone, and starts fast
    from cowspec.fs.build import LayerEntry
    from cowspec.fs.calls import Op
    from cowspec.fs.features import Features
    from cowspec.fs.observe import Entry
    from cowspec.store.steps import Step


class DriverUnavailable(RuntimeError):
    """The implementation cannot run here (not root, no overlay, ...)."""


class DriverError(RuntimeError):
    """The driver itself failed while running a trace (not a divergence)."""


class Session(Protocol):
    """One container of a real implementation, for one example."""

    def perform(self, op: Op) -> Entry:
        """Run ``op``; ``{"ok": true, ...}`` or ``{"errno": NAME}``."""

    def merged(self) -> list[Entry]:
        """The merged tree, root excluded, sorted by path."""

    def upper(self) -> list[Entry]:
        """The writable layer as Docker's overlay2 would export it."""

    def sizes(self) -> Entry:
        """``{"size": ..., "virtual_size": ...}`` in bytes."""

    def close(self) -> None:
        """Unmount and remove everything the session made."""


class Driver(Protocol):
    """A real implementation of layered copy-on-write storage."""

    name: str

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> Session:
        """A fresh session over ``layers`` (bottom first)."""


Entries = list[dict[str, object]]


@dataclass(frozen=True)
class Refused:
    """A layer tool refused the image; ``reason`` is its first line of complaint."""

    reason: str


Answer = Entries | Refused


class LayerDriver(Protocol):
    """A tool that flattens layer stacks (level 2)."""

    name: str

    def flatten(self, archives: list[bytes]) -> Answer:
        """The root filesystem the tool makes of ``archives`` (bottom first), as ``rootfs_entries`` shows one."""


class StoreDriver(Protocol):
    """An engine that runs store traces (level 3)."""

    name: str

    def run(self, steps: tuple[Step, ...]) -> Entry:
        """The store trace result the engine gives for ``steps``, every figure included."""


class Committer(Protocol):
    """A layer-level implementation that commits containers (level 2, COMMIT-1)."""

    name: str

    def commit(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features, ops: tuple[Op, ...]) -> bytes:
        """The uncompressed layer tar a commit gives of a container over ``layers`` (bottom first) after ``ops``.

        Ops that fail are part of the run as they are in a trace; only the
        committed layer is returned.
        """


def committer_of(driver: object) -> Committer | None:
    """``driver`` as a ``Committer`` if it commits, else None.

    A driver commits when it has a ``commit`` method and does not say
    otherwise in a ``commits`` attribute (an exec program's layer level
    says whether its handshake declared the ``commit`` request).
    """
    if not callable(getattr(driver, "commit", None)) or getattr(driver, "commits", True) is False:
        return None
    return cast(Committer, driver)


class SnapshotSession(Protocol):
    """One fresh snapshotter state, for one example (the snapshot level).

    Each call answers ``{"ok": true}`` or ``{"error": KIND}``, KIND one of
    containerd's error names (``already exists``, ``not found``, ``failed
    precondition``, ``invalid argument``); ``perform`` answers the result item
    of a ``cowspec-trace/1`` op.
    """

    def prepare(self, key: str, parent: str | None) -> Entry:
        """A new active (writable) snapshot ``key`` over committed ``parent`` (None: over nothing)."""

    def view(self, key: str, parent: str | None) -> Entry:
        """A new view (read-only snapshot) ``key`` of committed ``parent``."""

    def commit(self, name: str, key: str) -> Entry:
        """Active ``key`` becomes committed ``name``; ``key`` is gone."""

    def remove(self, key: str) -> Entry:
        """Remove snapshot ``key`` (one with no children)."""

    def perform(self, key: str, op: Op) -> Entry:
        """Make ``op`` through the mounts of active ``key``; its result item."""

    def infos(self) -> list[Entry]:
        """Every snapshot that exists: ``{"name", "kind", "parent"}`` (kind ``active``, ``view`` or
        ``committed``; parent None for none), sorted by name."""

    def tree(self, key: str) -> list[Entry]:
        """The tree of active or view ``key`` through its mounts, as ``Session.merged`` gives a merged tree."""

    def usage(self) -> dict[str, Entry]:
        """Every snapshot's usage: ``{key: {"size": bytes, "inodes": count}}``."""

    def mounts(self, key: str) -> Entry:
        """What the mounts of active or view ``key`` are: ``{"type": "bind"|"overlay", "readonly", "lowers"}``."""

    def diff(self, key: str) -> bytes:
        """The uncompressed layer tar of ``key`` against its parent, as the snapshotter's differ writes it."""

    def close(self) -> None:
        """Unmount and remove everything the session made."""


class SnapshotDriver(Protocol):
    """A snapshotter (the snapshot level): ``level = "snapshot"``."""

    name: str

    @property
    def snapshotter(self) -> str:
        """The model's name for the kind of snapshotter it is (``overlayfs``, ``native``)."""

    def allocation(self, kind: str, size: int) -> int:
        """The bytes the snapshotter's backing filesystem allocates for one inode of ``kind`` (``file``,
        ``dir``, ``symlink``, ``whiteout``) and apparent ``size``: what its usage counts."""

    def open_snapshots(self) -> SnapshotSession:
        """A fresh, empty snapshotter state."""

    def close(self) -> None:
        """Stop whatever the driver started (a daemon); a later ``open_snapshots`` starts it again."""
