"""A btrfs filesystem in a sparse file, on a loop device that frees itself.

Docker's ``btrfs`` storage driver needs its data root on btrfs, and this
machine's temporary directory is not. So a filesystem is made in a file:
``truncate`` makes it sparse (it takes disk only as btrfs writes), then
``mkfs.btrfs`` formats it, and ``mount -o loop`` attaches it to a free loop
device and mounts it.

Loop devices are not namespaced: one left attached is seen by the whole
machine and holds its file. Every device here is attached with
``LO_FLAGS_AUTOCLEAR`` (util-linux's ``mount -o loop`` sets it, and
``losetup -l`` shows it), so the kernel detaches it by itself when its last
user goes: its mount. The mount is made in a private mount namespace (the
engine's, or this process's own: ``namespace.scratch_root``), so that
namespace dying unmounts it and frees the device. Measured on this machine
(kernel 6.18, util-linux mount): a ``mount -o loop`` under ``unshare --mount
--pid --fork --kill-child`` showed ``AUTOCLEAR 1`` in ``losetup -l``;
``kill -9`` of ``unshare`` left ``losetup -a`` empty a second later.

``LoopFilesystem`` is the whole life in one ``with`` block (for a benchmark:
a btrfs directory seen by this process alone). ``make_image`` and
``mount_prefix`` are the two halves an engine uses when the mount must be
made inside the engine's own namespace, before its daemon starts
(``engines.Dockerd``).
"""

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

from cowcheck.drivers.cleanup import die_with_parent, mount_points, owned_directory, remove_tree, sweep_stale
from cowcheck.drivers.namespace import scratch_root, umount
from cowcheck.drivers.protocol import DriverError, DriverUnavailable

DEFAULT_SIZE = 1 << 30
"""A sparse file of 1 GiB: far more than a test's images, and it costs only what btrfs writes."""
MINIMUM_SIZE = 256 << 20
"""mkfs.btrfs refuses much smaller filesystems (it wants room for its duplicated metadata)."""
BTRFS_BLOCK_SIZE = 4096
"""The sector size ``mkfs.btrfs`` gives on this machine's 4 KiB pages: a file's data takes whole blocks of it."""
LOOPFS_PREFIX = "cowspec-loopfs-"
"""The name of a ``LoopFilesystem``'s directory begins so (then its owner: ``cleanup.owned_directory``)."""


def program(name: str) -> str:
    """The path of a btrfs or util-linux program, or ``DriverUnavailable`` saying what to install."""
    for candidate in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}", f"/bin/{name}"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        raise DriverUnavailable(f"{name} is not installed (apt-get install btrfs-progs mount)")
    return found


def unavailable_reason() -> str | None:
    """Why a btrfs loop filesystem cannot be made here (one line), or None as far as can be told without trying."""
    if os.geteuid() != 0:
        return "a btrfs loop filesystem needs root (mount -o loop)"
    try:
        with open("/proc/filesystems") as table:
            kinds = {line.split()[-1] for line in table if line.strip()}
    except OSError:
        kinds = set()
    if "btrfs" not in kinds:
        return "the kernel has no btrfs filesystem (/proc/filesystems)"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices here (/dev/loop-control is missing)"
    for name in ("mkfs.btrfs", "mount", "losetup", "btrfs"):
        try:
            program(name)
        except DriverUnavailable as error:
            return str(error)
    return None


def make_image(path: str, size: int = DEFAULT_SIZE) -> str:
    """A sparse file at ``path`` formatted as btrfs; its path. ``DriverUnavailable`` in one line if it cannot be."""
    reason = unavailable_reason()
    if reason is not None:
        raise DriverUnavailable(reason)
    with open(path, "wb") as handle:
        handle.truncate(max(size, MINIMUM_SIZE))
    made = subprocess.run(
        [program("mkfs.btrfs"), "--quiet", "--force", "--sectorsize", str(BTRFS_BLOCK_SIZE), path],
        capture_output=True,
        timeout=120,
        check=False,
        preexec_fn=die_with_parent(),
    )
    if made.returncode != 0:
        with contextlib.suppress(OSError):
            os.unlink(path)
        message = made.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DriverUnavailable(f"mkfs.btrfs failed: {message[-1] if message else made.returncode}")
    return path


def mount_prefix(image: str, target: str) -> list[str]:
    """A command prefix that mounts ``image`` at ``target`` (loop, autoclear) and then runs the command after it.

    Meant to run as the first process of a new mount namespace: the mount
    is that namespace's, and goes with it (see the module's text).
    """
    mount = program("mount")
    script = 'mount=$1 image=$2 target=$3; shift 3; "$mount" -t btrfs -o loop "$image" "$target" && exec "$@"'
    return ["/bin/sh", "-c", script, "cowspec-loopfs", mount, image, target]


def devices_backed_by(path: str) -> list[str]:
    """The loop devices attached to the file ``path`` (``losetup -j``), to check that none is left.

    ``DriverError`` (one line) if ``losetup`` fails: its silence is not "none left".
    """
    command = [program("losetup"), "--associated", path, "--noheadings", "--output", "NAME", "--list"]
    try:
        found = subprocess.run(command, capture_output=True, timeout=30, check=False, preexec_fn=die_with_parent())
    except (OSError, subprocess.SubprocessError) as error:
        raise DriverError(f"losetup --associated {path}: {error}") from error
    if found.returncode != 0:
        message = found.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DriverError(f"losetup --associated {path}: {message[-1] if message else f'exit {found.returncode}'}")
    return [line.strip() for line in found.stdout.decode().splitlines() if line.strip()]


def detach_devices(path: str) -> None:
    """Detach every loop device still attached to ``path`` (``losetup -d``); ``DriverError`` if one stays."""
    for device in devices_backed_by(path):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([program("losetup"), "--detach", device], capture_output=True, timeout=30, check=False)
    left = devices_backed_by(path)
    if left:
        raise DriverError(f"loop device {', '.join(left)} of {path} is still attached (losetup --detach failed)")


class LoopFilesystem:
    """A btrfs filesystem mounted at ``mount_point`` for the ``with`` block, seen by this process alone.

    The mount is made in this process's private mount namespace (entered
    once, ``namespace.scratch_root``), on a loop device with autoclear: when
    the block ends, the filesystem is unmounted, the device detaches itself
    (a device still attached then is detached with ``losetup -d``), and the
    file and directory are removed, also when the block raised. Should the
    process be killed instead, its namespace goes with it, and the device
    with the mount; the directory, named for its owner, is removed by the
    next ``LoopFilesystem``'s start.
    """

    def __init__(self, size: int = DEFAULT_SIZE, parent: str | None = None) -> None:
        self.size = size
        self.parent = parent
        self.base = ""
        self.image = ""
        self.mount_point = ""
        self.mounted = False

    def __enter__(self) -> "LoopFilesystem":
        reason = unavailable_reason()
        if reason is not None:
            raise DriverUnavailable(reason)
        scratch_root()  # this process's private mount namespace
        sweep_stale(LOOPFS_PREFIX, self.parent)
        self.base = owned_directory(LOOPFS_PREFIX, self.parent)
        try:
            self.image = make_image(os.path.join(self.base, "btrfs.img"), self.size)
            self.mount_point = os.path.join(self.base, "mount")
            os.mkdir(self.mount_point)
            mounted = subprocess.run(
                [program("mount"), "-t", "btrfs", "-o", "loop", self.image, self.mount_point],
                capture_output=True,
                timeout=60,
                check=False,
                preexec_fn=die_with_parent(),
            )
            if mounted.returncode != 0:
                message = mounted.stderr.decode("utf-8", "replace").strip().splitlines()
                raise DriverUnavailable(f"cannot mount a btrfs loop filesystem: {message[-1] if message else '?'}")
            self.mounted = True
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exception: object) -> None:
        """Unmount, detach a device still attached, remove the file and the directory (this last whatever happens).

        A device that cannot be checked or detached is a ``DriverError``,
        unless the block itself raised: its error is the one said.
        """
        try:
            if self.mounted and self.mount_point in mount_points():
                umount(self.mount_point)
            self.mounted = False
            if self.image and os.path.exists(self.image):
                detach_devices(self.image)
        except (DriverError, DriverUnavailable, OSError):
            if exception[0] is None:
                raise
        finally:
            if self.base:
                with contextlib.suppress(OSError):
                    remove_tree(self.base)
            self.base = self.image = self.mount_point = ""


@contextlib.contextmanager
def btrfs_directory(size: int = DEFAULT_SIZE, parent: str | None = None) -> Iterator[str]:
    """A directory on a fresh btrfs filesystem for the ``with`` block (``LoopFilesystem``'s mount point)."""
    with LoopFilesystem(size, parent) as filesystem:
        yield filesystem.mount_point
