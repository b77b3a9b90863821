"""Docker's storage drivers at the store level: which one, and what it changes [DRIVER-1].

The store model holds one engine, configured with one storage driver. Today's
model is Docker's ``overlay2``: a container is the overlay stack of the
filesystem-level model, and every figure comes from its writable layer
(chapters 7, 13, 15). The three other drivers the spec states find a
container's changes the *naive* way [DRIVER-2]: by walking the container's
tree beside its image's and comparing what ``lstat`` says of each path
(moby's ``NaiveDiffDriver`` over ``archive.ChangesDirs``):

- ``vfs`` and ``btrfs`` give a container a full copy of its image (a copied
  directory, a btrfs snapshot): a plain filesystem, where a directory of the
  image is renamed like any other and hardlinks stay hardlinks [DRIVER-3];
- ``fuse-overlayfs`` is an overlay in user space: its upper directory holds
  what the kernel's overlay's would (a directory of the image is not renamed,
  ``EXDEV``; a copy-up parts a hardlinked pair on disk), and its layers are
  measured as overlay2's are [DRIVER-3][DRIVER-4].

This module names the drivers and the store's configuration; ``naive`` says
what the naive drivers report.
"""

from dataclasses import dataclass
from typing import Literal

from cowspec.errors import SpecError

StorageDriver = Literal["overlay2", "fuse-overlayfs", "vfs", "btrfs"]
"""The storage drivers the spec states [DRIVER-1]."""

STORAGE_DRIVERS: tuple[StorageDriver, ...] = ("overlay2", "fuse-overlayfs", "vfs", "btrfs")
DEFAULT_DRIVER: StorageDriver = "overlay2"
NAIVE_DRIVERS: frozenset[StorageDriver] = frozenset({"fuse-overlayfs", "vfs", "btrfs"})
"""The drivers that find changes by comparing trees, not by reading an upper directory [DRIVER-2]."""
PLAIN_DRIVERS: frozenset[StorageDriver] = frozenset({"vfs", "btrfs"})
"""The drivers whose container is a plain filesystem holding a full copy of its image, and which
count a layer's size as they unpack it [DRIVER-3][DRIVER-4]."""

DEFAULT_DIRECTORY_SIZE = 4096
"""``st_size`` of a small directory on ext4 (and most filesystems under ``/var/lib/docker``) [DRIVER-7]."""
DEFAULT_BLOCK_SIZE = 4096
"""The allocation unit of ext4 and btrfs as made by default [DRIVER-7]."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The engine the store model stands for: its storage driver, and the one fact of its backing
    filesystem the disk figures need (a directory's ``st_size``) [DRIVER-1][DRIVER-7]."""

    driver: StorageDriver = DEFAULT_DRIVER
    directory_size: int = DEFAULT_DIRECTORY_SIZE
    block_size: int = DEFAULT_BLOCK_SIZE
    """The backing filesystem's allocation unit, in bytes [DRIVER-7]."""

    @property
    def naive(self) -> bool:
        """True for a driver that compares trees to find a container's changes [DRIVER-2]."""
        return self.driver in NAIVE_DRIVERS

    @property
    def plain(self) -> bool:
        """True for a driver whose container is a full copy of its image [DRIVER-3]."""
        return self.driver in PLAIN_DRIVERS


OVERLAY2 = StoreConfig()


def storage_driver(name: object) -> StorageDriver:
    """A storage driver's name, checked; an unknown one is rejected in one line [DRIVER-1]."""
    for known in STORAGE_DRIVERS:
        if name == known:
            return known
    raise SpecError(f"unknown storage_driver {name!r} (known: {', '.join(STORAGE_DRIVERS)})")


def store_config(
    driver: object = DEFAULT_DRIVER,
    directory_size: object = DEFAULT_DIRECTORY_SIZE,
    block_size: object = DEFAULT_BLOCK_SIZE,
) -> StoreConfig:
    """A checked ``StoreConfig`` from untrusted values (a trace's fields) [DRIVER-1]."""
    if isinstance(directory_size, bool) or not isinstance(directory_size, int) or directory_size < 0:
        raise SpecError(f"directory_size must be a non-negative integer, not {directory_size!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 512 or block_size % 512:
        raise SpecError(f"block_size must be a positive multiple of 512, not {block_size!r}")
    return StoreConfig(storage_driver(driver), directory_size, block_size)
