"""A private mount namespace and a scratch tmpfs for the whole process.

Every mount the harness makes happens inside a mount namespace of its own,
entered once per process, with propagation private: nothing it mounts is
seen by the host, and whatever a crash leaves mounted goes away with the
process. Layers, upper and work directories live on a tmpfs mounted in that
namespace, so they are fast and never touch the root filesystem.

The tmpfs needs a directory to be mounted on, and that directory is the
one trace a run leaves on the host: ``/tmp/cowcheck-PID.START-XXXX``
(``cleanup.owned_directory``), empty there. A run that ends cleanly, or a
worker told to stop, removes it; a run killed with ``kill -9`` cannot, so
each run first removes those whose process is gone (``sweep_stale``).
"""

import atexit
import ctypes
import ctypes.util
import os

from cowcheck.drivers.cleanup import owned_directory, sweep_stale
from cowcheck.drivers.protocol import DriverUnavailable

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]

_scratch: str | None = None
SCRATCH_PREFIX = "cowcheck-"


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, options: str | None, flags: int = 0) -> None:
    """``mount(2)`` with ``flags`` (``MS_BIND``, ``MS_RDONLY``...); an empty source, no type or no options
    pass NULL, as a bind mount or a remount wants. Raises ``OSError`` naming the call on failure."""
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            options.encode() if options else None,
        ),
        f"mount -t {fstype or '(none)'} {source or '(none)'} {target} -o {options or ''}",
    )


def umount(target: str) -> None:
    """``umount2(2)``, detaching lazily if the mount is busy."""
    if _libc.umount2(target.encode(), 0) != 0:
        detach(target)


def detach(target: str) -> None:
    """``umount2(2)`` with ``MNT_DETACH``: the mount leaves the tree now, and goes when its last user does."""
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


_private = False


def private_namespace() -> None:
    """Move this process into a mount namespace of its own, propagation private (once; later calls do nothing):
    what it mounts is seen by no one else and goes with the process, even one killed by ``kill -9``."""
    global _private
    if _private:
        return
    if os.geteuid() != 0:
        raise DriverUnavailable("the kernel overlay driver needs root (mount -t overlay)")
    if _libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise DriverUnavailable(f"cannot enter a private mount namespace: {os.strerror(err)}")
    try:
        _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    except OSError as error:
        raise DriverUnavailable(f"cannot make the mounts private: {error}") from None
    _private = True


def scratch_root() -> str:
    """A tmpfs in this process's private mount namespace (made on first use)."""
    global _scratch
    if _scratch is not None:
        return _scratch
    private_namespace()
    try:
        sweep_stale(SCRATCH_PREFIX)
        base = owned_directory(SCRATCH_PREFIX)
        mount("cowcheck", base, "tmpfs", "mode=0755")
    except OSError as error:
        raise DriverUnavailable(f"cannot set up scratch space: {error}") from None
    with open("/proc/filesystems") as table:
        if not any(line.split()[-1] == "overlay" for line in table if line.strip()):
            raise DriverUnavailable("the kernel has no overlay filesystem")
    _scratch = base
    atexit.register(_release, base)
    return base


def _release(base: str) -> None:
    try:
        umount(base)
        os.rmdir(base)
    except OSError:
        pass


def forget() -> None:
    """Forget the scratch space this process inherited (a forked worker): its first use makes its own,
    in a mount namespace of its own. What the parent made stays the parent's to remove."""
    global _scratch, _private
    _scratch = None
    _private = False


def release() -> None:
    """Unmount and remove this process's scratch space now (a worker told to stop does, then exits)."""
    global _scratch
    if _scratch is not None:
        _release(_scratch)
        _scratch = None
