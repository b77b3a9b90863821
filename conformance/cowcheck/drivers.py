"""The drivers the command line knows, by name."""

from collections.abc import Callable

from .driver import Driver
from .kernel_overlay import KernelOverlay

DRIVERS: dict[str, Callable[[], Driver]] = {
    "kernel-overlay": KernelOverlay,
}
