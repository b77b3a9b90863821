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
