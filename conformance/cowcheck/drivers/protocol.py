"""What a driver is: a real implementation that runs traces.

A driver starts a *session* per example: the layers of a trace laid out in
the implementation's own way, with an empty writable layer over them. The
session performs ops and reports what it saw in the JSON shape of the trace
result, so the harness compares real and model results without knowing
which implementation ran them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the CLI imports this module for its errors alone, and starts fast
    from cowspec.fs.build import LayerEntry
    from cowspec.fs.calls import Op
    from cowspec.fs.features import Features
    from cowspec.fs.observe import Entry


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
