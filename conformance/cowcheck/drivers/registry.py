"""The drivers the command line knows, by name."""

from collections.abc import Callable

from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.protocol import Driver

DRIVERS: dict[str, Callable[[], Driver]] = {
    "kernel-overlay": KernelOverlay,
}
