"""Leave nothing behind: remove trees of any depth, sweep what a killed run left, end a process's whole tree.

A run of cowspec killed with ``kill -9`` never reaches its ``finally``
blocks, so whatever it made (a temporary directory, a mount, a daemon and
the processes that daemon started) must either die with it or be found and
removed by the next run. This module holds the pieces every driver shares:

- ``remove_tree`` removes a directory tree without recursing by depth (a
  trace can build a tree thousands of levels deep, and ``shutil.rmtree``
  recurses once per level), unmounting whatever is mounted under it first;
- ``owned_directory`` makes a temporary directory whose name records the
  process that owns it (PID and start time), and ``sweep_stale`` removes
  such directories whose owner is gone;
- ``descendants`` and ``kill_tree`` find and end every process started,
  directly or not, by one process, including those that were re-parented
  away from it (the shims a container engine starts on purpose to outlive
  it are found through the owner's mark in their environment).
"""

import contextlib
import ctypes
import ctypes.util
import errno
import os
import signal
import stat
import tempfile
import time
from collections.abc import Callable

MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

OWNER_VARIABLE = "COWSPEC_OWNER"
"""Set in the environment of every long-lived child cowspec starts (daemons,
their shims inherit it): its value names the owning run's directory, so that
``kill_marked`` can find the processes of a run even after they left its
process tree."""


# --- mounts ---------------------------------------------------------------


def _unescape_mount_field(field: str) -> str:
    """A path from ``/proc/self/mountinfo``, whose spaces, tabs, newlines and backslashes are octal escapes."""
    out: list[str] = []
    index = 0
    while index < len(field):
        digits = field[index + 1 : index + 4]
        if field[index] == "\\" and len(digits) == 3 and digits.isdigit():
            out.append(chr(int(field[index + 1 : index + 4], 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Every mount point of the calling process's mount namespace, in the table's order."""
    try:
        with open(mountinfo) as table:
            lines = table.read().splitlines()
    except OSError:
        return []
    return [_unescape_mount_field(line.split()[4]) for line in lines if len(line.split()) > 4]


def _is_under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def mounts_under(directory: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The mount points at or under ``directory``, deepest first (the order to unmount them in)."""
    directory = os.path.realpath(directory)
    found = [point for point in mount_points(mountinfo) if _is_under(point, directory)]
    return sorted(set(found), key=lambda point: (point.count("/"), len(point)), reverse=True)


def unmount_under(directory: str) -> None:
    """Detach every mount at or under ``directory``, deepest first; a mount that will not go raises ``OSError``.

    Stacked mounts on one point are all detached (``umount2`` is repeated
    while the point is still listed).
    """
    for _ in range(64):
        points = mounts_under(directory)
        if not points:
            return
        for point in points:
            if _libc.umount2(point.encode(), MNT_DETACH) != 0:
                error = ctypes.get_errno()
                if error not in (errno.EINVAL, errno.ENOENT):
                    raise OSError(error, f"umount {point}: {os.strerror(error)}")
    raise OSError(errno.EBUSY, f"mounts under {directory} keep coming back")


# --- trees ----------------------------------------------------------------

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_directory(name: str, parent: int) -> int:
    """Open the directory ``name`` of ``parent`` (a descriptor), making it readable first if it is not."""
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=parent)
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)


def _remove_entry(name: str, directory: int, is_directory: bool) -> None:
    """Unlink (or, for an empty directory, rmdir) ``name``; on ``EACCES``/``EPERM`` make ``directory`` writable once."""
    for attempt in range(2):
        try:
            if is_directory:
                os.rmdir(name, dir_fd=directory)
            else:
                os.unlink(name, dir_fd=directory)
            return
        except FileNotFoundError:
            return
        except PermissionError:
            if attempt:
                raise
            os.fchmod(directory, stat.S_IMODE(os.fstat(directory).st_mode) | 0o700)


def _subdirectories_of(directory: int) -> list[str]:
    """Unlink every non-directory in ``directory``; the names of its subdirectories."""
    subdirectories: list[str] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirectories.append(entry.name)
            else:
                _remove_entry(entry.name, directory, is_directory=False)
    return subdirectories


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything under it, at any depth, without recursion; absent is fine.

    Mounts under ``path`` are detached first, so nothing is deleted through
    a mount into another filesystem. The walk holds one directory open at a
    time and climbs back through ``..``, checking each parent is the one it
    left (device and inode), so the depth of the tree bounds neither the
    Python stack nor the open descriptors nor the path length. Directories
    without read, write or search permission are opened up as they are met
    (matters when not root). Raises ``OSError`` on what cannot be removed
    (an immutable file, a file system gone read-only).
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(path)
        return
    unmount_under(path)
    parent_path, name = os.path.split(os.path.abspath(path).rstrip("/") or "/")
    top_parent = os.open(parent_path or "/", _DIRECTORY_FLAGS)
    try:
        _remove_directory(top_parent, name)
    finally:
        os.close(top_parent)


def _remove_directory(top_parent: int, top_name: str) -> None:
    """Remove the directory ``top_name`` of the open directory ``top_parent``, iteratively."""
    # One frame per level below top_parent: (name in its parent, (device, inode), subdirectories left to remove).
    frames: list[tuple[str, tuple[int, int], list[str]]] = []
    current = _open_directory(top_name, top_parent)
    try:
        identity = os.fstat(current)
        frames.append((top_name, (identity.st_dev, identity.st_ino), _subdirectories_of(current)))
        while frames:
            name, identity_pair, pending = frames[-1]
            if pending:
                child_name = pending.pop()
                try:
                    child = _open_directory(child_name, current)
                except FileNotFoundError:
                    continue
                child_info = os.fstat(child)
                if child_info.st_dev != identity_pair[0]:
                    os.close(child)
                    raise OSError(errno.EBUSY, f"a mount appeared under the tree being removed: {child_name}")
                os.close(current)
                current = child
                frames.append((child_name, (child_info.st_dev, child_info.st_ino), _subdirectories_of(child)))
                continue
            frames.pop()
            if frames:
                parent = os.open("..", _DIRECTORY_FLAGS, dir_fd=current)
                parent_info = os.fstat(parent)
                if (parent_info.st_dev, parent_info.st_ino) != frames[-1][1]:
                    os.close(parent)
                    raise OSError(errno.ESTALE, f"{name}: its parent changed while the tree was being removed")
            else:
                parent = os.dup(top_parent)
            os.close(current)
            current = parent
            try:
                _remove_entry(name, current, is_directory=True)
            except OSError as error:
                if error.errno != errno.ENOTEMPTY:
                    raise
                # Something was added meanwhile (a dying process writing): walk it again.
                again = _open_directory(name, current)
                again_info = os.fstat(again)
                os.close(current)
                current = again
                frames.append((name, (again_info.st_dev, again_info.st_ino), _subdirectories_of(again)))
    finally:
        os.close(current)


# --- owners ---------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/PID/stat`` field 22), or ``None`` if it is gone.

    With the PID it names one process for good: a PID reused later by
    another process has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def owner_tag(pid: int | None = None) -> str:
    """``PID.STARTTIME`` of ``pid`` (this process by default): the owner part of an owned directory's name."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{start_time(pid) or 0}"


def owner_alive(tag: str) -> bool:
    """Whether the process named by an ``owner_tag`` still runs (same PID, same start time)."""
    pid_text, _, start_text = tag.partition(".")
    if not (pid_text.isdigit() and start_text.isdigit()):
        return True  # not ours to judge: keep it
    started = start_time(int(pid_text))
    if started is None:
        return False
    return start_text == "0" or started == int(start_text)


def owned_directory(prefix: str, base: str | None = None) -> str:
    """A new directory ``BASE/PREFIX<pid>.<start>-<random>``: a temporary directory that says who owns it.

    ``base`` defaults to the temporary directory (``TMPDIR``). ``prefix``
    should end with ``-`` and be specific to its user (``cowcheck-``,
    ``cowspec-dockerd-``); ``sweep_stale(prefix)`` finds it again.
    """
    return tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=base)


def directory_owner(name: str, prefix: str) -> str | None:
    """The owner tag recorded in the directory name ``name`` made by ``owned_directory(prefix)``, else ``None``."""
    if not name.startswith(prefix):
        return None
    tag, dash, _ = name[len(prefix) :].partition("-")
    pid_text, dot, start_text = tag.partition(".")
    if not (dash and dot and pid_text.isdigit() and start_text.isdigit()):
        return None
    return tag


def sweep_stale(prefix: str, base: str | None = None) -> list[str]:
    """Remove what killed runs left: every ``owned_directory(prefix)`` in ``base`` whose owner is dead.

    Before removing a directory, the processes marked with it (``kill_marked``)
    are killed and the mounts under it detached. Directories of live owners,
    and names that record no owner (made some other way), are left alone.
    Best effort: a directory that cannot be removed is skipped. The paths
    removed are returned.
    """
    base = base or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in sorted(names):
        tag = directory_owner(name, prefix)
        if tag is None or owner_alive(tag):
            continue
        path = os.path.join(base, name)
        with contextlib.suppress(OSError):
            kill_marked(path)
            remove_tree(path)
            removed.append(path)
    return removed


# --- processes ------------------------------------------------------------

PR_SET_PDEATHSIG = 1


def die_with_parent(signal_number: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel send ``signal_number`` to the child when its parent dies.

    Made in the parent (it records the parent's PID): in the child, between
    fork and exec, it sets ``PR_SET_PDEATHSIG`` and then exits at once if the
    parent died before that (the child was already re-parented, so the signal
    would never come). The setting survives ``exec`` (of a program that is not
    set-user-ID). Linux sends it when the *thread* that forked the child ends,
    so start long-lived children from a thread that lives as long as they must.
    """
    parent = os.getpid()

    def tie() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return tie


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    try:
        return int(text[text.rfind(")") + 2 :].split()[1])
    except (IndexError, ValueError):
        return None


def all_pids() -> list[int]:
    """Every process visible in ``/proc``."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(pid: int) -> list[int]:
    """Every living process whose chain of parents leads to ``pid`` (not ``pid`` itself)."""
    children: dict[int, list[int]] = {}
    for candidate in all_pids():
        parent = _parent_of(candidate)
        if parent is not None:
            children.setdefault(parent, []).append(candidate)
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def marked_with(mark: str) -> list[int]:
    """The processes whose environment has ``COWSPEC_OWNER=<mark>``."""
    needle = f"{OWNER_VARIABLE}={mark}".encode()
    found: list[int] = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environment = handle.read().split(b"\0")
        except OSError:
            continue
        if needle in environment:
            found.append(pid)
    return found


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _wait_gone(pids: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if start_time(pid) is not None and not _is_zombie(pid)]
        if not alive:
            return
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return True
    return text[text.rfind(")") + 2 :].split()[:1] == ["Z"]


def kill_tree(pid: int, mark: str | None = None) -> None:
    """``SIGKILL`` ``pid``, everything under it, and (given ``mark``) every process marked with it; wait till gone.

    The tree is taken before anything is killed (a killed parent's children
    move to a reaper and no longer lead to ``pid``); the walk is repeated
    so that children forked meanwhile are caught too.
    """
    for _ in range(5):
        pids = [pid, *descendants(pid)] if start_time(pid) is not None else []
        if mark is not None:
            pids += marked_with(mark)
        pids = [found for found in dict.fromkeys(pids) if not _is_zombie(found)]
        if not pids:
            return
        _kill_all(pids)
        _wait_gone(pids, 10)


def kill_marked(mark: str) -> None:
    """``SIGKILL`` every process marked with ``mark`` (and their descendants); wait till they are gone."""
    for _ in range(5):
        marked = marked_with(mark)
        pids = list(dict.fromkeys(marked + [child for pid in marked for child in descendants(pid)]))
        pids = [found for found in pids if not _is_zombie(found)]
        if not pids:
            return
        _kill_all(pids)
        _wait_gone(pids, 10)
