"""The drivers the command line knows, by name, at each level that has them."""

from collections.abc import Callable

from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.protocol import Driver, StoreDriver


def _docker_store() -> StoreDriver:
    from cowcheck.drivers.docker_store import DockerStore  # the engine's driver loads only when asked for

    return DockerStore()


DRIVERS: dict[str, Callable[[], Driver]] = {
    "kernel-overlay": KernelOverlay,
}
"""Filesystem-level drivers: ``cowspec-trace/1`` traces and generated cases."""
STORE_DRIVERS: dict[str, Callable[[], StoreDriver]] = {
    "docker": _docker_store,
}
"""Store-level drivers: ``cowspec-store-trace/1`` traces."""
