"""fuse-overlayfs as a driver of the filesystem level, over the kernel driver's very layers.

fuse-overlayfs is overlayfs in user space: rootless Podman and Buildah use
it, and it reads and writes the upper directory in overlay2's on-disk form
(0/0 character devices for whiteouts, ``trusted.overlay.opaque`` when root).
A session here is a kernel session (``kernel_overlay.KernelSession``) with
one step changed, the mount: the layers are laid out on the session's tmpfs
exactly as for the kernel, the upper directory and the sizes are read from
the host side exactly as for the kernel, and the container process
``chroot``s into the merged directory exactly as for the kernel; only what
is mounted there differs. So every difference a check finds between the two
is fuse-overlayfs's own.

``fuse-overlayfs -f`` runs in the foreground as a child of this process, in
its private mount namespace (``namespace.scratch_root``), so its PID is
known and its mount is seen by no one else. The session waits until the
mount shows in the mount table (or the program has exited, or a timeout
passed: then the driver is unavailable, with the program's last line of
complaint). Closing the session unmounts the merged directory, after which
fuse-overlayfs exits by itself; one that does not is sent ``SIGTERM``, then
``SIGKILL``. The program is started with ``PR_SET_PDEATHSIG``: should cowspec
die, the kernel kills it, and the mount namespace goes with the last process
in it, mount and all.
"""

import contextlib
import errno
import os
import signal
import subprocess
import tempfile
import time
from typing import IO

from cowcheck.drivers.cleanup import die_with_parent, mount_points
from cowcheck.drivers.kernel_overlay import POOL, KernelSession, ProcessPool, describe
from cowcheck.drivers.namespace import scratch_root, umount
from cowcheck.drivers.protocol import DriverUnavailable
from cowspec.fs.build import LayerEntry
from cowspec.fs.features import Features
from cowspec.fs.observe import Entry

PROGRAM = "/usr/bin/fuse-overlayfs"
"""Debian's fuse-overlayfs (1.10 on bookworm)."""
FUSE_DEVICE = "/dev/fuse"
MOUNT_TIMEOUT = 10.0
"""Seconds to wait for the mount to show before calling the driver unavailable."""
EXIT_TIMEOUT = 5.0
"""Seconds given to fuse-overlayfs to exit after its mount is gone, and again after ``SIGTERM``."""
MOUNT_TABLE = "/proc/thread-self/mountinfo"
"""The mount table of the calling thread's namespace, the one the program was started in."""


def unavailable_reason(program: str = PROGRAM) -> str | None:
    """Why fuse-overlayfs cannot run here (one line), or None if it can as far as can be told before starting it."""
    if not os.access(program, os.X_OK):
        return f"{program} is missing or not executable (apt-get install fuse-overlayfs)"
    if not os.path.exists(FUSE_DEVICE):
        return f"{FUSE_DEVICE} is missing: the kernel offers no FUSE here"
    return None


def _last_line(stream: IO[bytes]) -> str:
    """The last non-empty line the program wrote to ``stream``, or a note that it wrote none."""
    with contextlib.suppress(OSError):
        stream.seek(0)
        lines = [line.strip() for line in stream.read()[-4096:].decode("utf-8", "replace").splitlines()]
        said = [line for line in lines if line]
        if said:
            return said[-1]
    return "(nothing on its standard error)"


def _errno_name(error: OSError) -> str:
    return errno.errorcode.get(error.errno or 0, f"E{error.errno}")


def merged_tree(top: str) -> list[Entry]:
    """Every entry below ``top`` as ``kernel_overlay.tree`` gives it, walked from outside the container.

    A walk of a FUSE mount can fail where the kernel's cannot: fuse-overlayfs
    has answered ``readdir`` with ``ENOMEM``. Such a failure is part of what
    the merged view shows, not a failure of the driver: a directory that
    cannot be listed carries ``"readdir": ERRNO`` (the root, which the tree
    leaves out otherwise, then shows as ``/``), and a name whose ``lstat``
    or content cannot be read shows as ``{"path": ..., "type": "unreadable",
    "errno": ERRNO}``, so that the comparison names it as a difference.
    ``lstat`` saying ``ENOENT`` skips the name, as the kernel driver's walk
    does (a listed whiteout of a plain directory).
    """
    entries: list[Entry] = []
    pending: list[tuple[str, str, Entry | None]] = [("", top, None)]
    while pending:
        logical, real, entry = pending.pop()
        try:
            names = os.listdir(real)
        except OSError as error:
            if entry is None:
                entries.append({"path": "/", "type": "dir", "readdir": _errno_name(error)})
            else:
                entry["readdir"] = _errno_name(error)
            continue
        for name in names:
            child_logical, child_real = logical + "/" + name, os.path.join(real, name)
            try:
                info = os.lstat(child_real)
                child = describe(child_logical, child_real, info, upper=False)
            except FileNotFoundError:
                continue
            except OSError as error:
                entries.append({"path": child_logical, "type": "unreadable", "errno": _errno_name(error)})
                continue
            entries.append(child)
            if child["type"] == "dir":
                pending.append((child_logical, child_real, child))
    return sorted(entries, key=lambda each: str(each["path"]))


class FuseSession(KernelSession):
    """A kernel session whose merged directory is a fuse-overlayfs mount; everything else is the kernel's."""

    daemon: "subprocess.Popen[bytes] | None" = None
    errors: IO[bytes] | None = None
    program: str = PROGRAM

    def __init__(
        self,
        layers: tuple[tuple[LayerEntry, ...], ...],
        features: Features,
        pool: ProcessPool | None = None,
        program: str = PROGRAM,
    ) -> None:
        self.program = program
        super().__init__(layers, features, pool)

    def _mount(self, lowers_top_first: list[str], upper: str, work: str, features: Features) -> None:
        """Start ``fuse-overlayfs -f`` on the merged directory and wait until its mount is in the table.

        ``mounted`` is set as soon as the program runs, so that a session
        failing from here on stops it (``close``, through ``_unmount``).
        """
        options = f"lowerdir={':'.join(lowers_top_first)},upperdir={upper},workdir={work}"
        # Kept open for the session (closed by ``_stop_daemon``): the program's complaint, read if it fails.
        self.errors = tempfile.TemporaryFile(prefix="cowcheck-fuse-overlayfs-")  # noqa: SIM115
        try:
            # start_new_session: a Ctrl-C at the terminal reaches cowspec, which closes the session, not the
            # program itself. die_with_parent: cowspec killed outright takes the program with it.
            self.daemon = subprocess.Popen(
                [self.program, "-f", "-o", options, self.merged_dir],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self.errors,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        except OSError as error:
            self._stop_daemon()  # closes the file of its complaints
            raise DriverUnavailable(f"cannot start {self.program}: {error.strerror}") from None
        self.mounted = True
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not self._is_mounted():
            if self.daemon.poll() is not None:
                raise DriverUnavailable(
                    f"fuse-overlayfs exited with status {self.daemon.returncode} before mounting"
                    f" {self.merged_dir}: {_last_line(self.errors)}"
                )
            if time.monotonic() > deadline:
                raise DriverUnavailable(
                    f"fuse-overlayfs did not mount {self.merged_dir} within {MOUNT_TIMEOUT:.0f} s:"
                    f" {_last_line(self.errors)}"
                )
            time.sleep(0.002)

    def merged(self) -> list[Entry]:
        """The merged tree, walked through the mount from this process (``merged_tree``).

        The container process's own walk would die with the first failing
        ``readdir`` and take the session with it; this walk reports the
        failure instead. ``lstat`` and ``readdir`` follow no symlink, so
        the container's root changes nothing the walk sees.
        """
        return merged_tree(self.merged_dir)

    def _is_mounted(self) -> bool:
        return self.merged_dir in mount_points(MOUNT_TABLE)

    def _unmount(self) -> None:
        """Unmount the merged directory (if it got mounted), then see fuse-overlayfs gone: ``SIGTERM``, ``SIGKILL``.

        The program exits by itself once its mount is gone; it is waited
        for in any case, so that it holds nothing on the session's tmpfs
        when that is unmounted.
        """
        try:
            if self._is_mounted():
                umount(self.merged_dir)
        finally:
            self._stop_daemon()

    def _stop_daemon(self) -> None:
        daemon, self.daemon = self.daemon, None
        if daemon is not None:
            for ending in (None, signal.SIGTERM, signal.SIGKILL):
                if ending is not None and daemon.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        daemon.send_signal(ending)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    daemon.wait(timeout=EXIT_TIMEOUT)
                    break
        if self.errors is not None:
            with contextlib.suppress(OSError):
                self.errors.close()
            self.errors = None


class FuseOverlay:
    """Debian's fuse-overlayfs over overlay2's on-disk layers, in Docker's configuration.

    It has no mount option for ``redirect_dir``, ``index`` or ``metacopy``:
    it is held to Docker's configuration (all three off), the one every
    implementation must support, and declares no optional feature.
    """

    name = "fuse-overlayfs"
    level = "filesystem"
    features: frozenset[str] = frozenset()
    program = PROGRAM

    def __init__(self) -> None:
        self.pool = POOL

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> FuseSession:
        """A fresh fuse-overlayfs mount over ``layers`` (bottom first)."""
        missing = [name for name in features.enabled() if name not in self.features]
        if missing:
            raise DriverUnavailable(
                f"{self.name} does not support the overlay feature {missing[0]} (it declares: none)"
            )
        reason = unavailable_reason(self.program)
        if reason is not None:
            raise DriverUnavailable(reason)
        scratch_root()  # not root, or no mount namespace: the kernel driver's one line
        return FuseSession(layers, features, self.pool, self.program)
