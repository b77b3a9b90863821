"""The kernel's overlayfs as a driver: the ground truth of the filesystem level.

A session lays the trace's layers out on a tmpfs the way Docker's overlay2
driver stores them: one directory per layer, whiteouts as 0/0 character
devices, opaque directories marked ``trusted.overlay.opaque=y``. It mounts
them with explicit feature options under an empty upper directory, and
has a container process ``chroot`` into the merged directory, so that
absolute symlinks resolve inside the container root as they would in a
container. The container process performs each op as the real system call
and walks the merged tree; the parent reads the upper directory and the
sizes from the host side exactly as Docker does.

Each session lives on a tmpfs of its own, so that closing it is two
unmounts, whatever the depth of the trees an example made. The driver
keeps its container processes: a session's process leaves its root when
the session closes (it holds a descriptor of the real root, and ``chroot``s
back through it) and serves the next session, so that an example costs no
``fork``. A container process exits when the pipe from its parent closes,
so none outlives cowspec.
"""

import atexit
import base64
import contextlib
import errno
import hashlib
import itertools
import json
import os
import stat
from collections.abc import Iterable, Iterator
from typing import IO, cast

from cowcheck.drivers.cleanup import remove_tree
from cowcheck.drivers.namespace import mount, scratch_root, umount
from cowcheck.drivers.protocol import DriverError, DriverUnavailable
from cowspec.formats.trace import decode_op, encode_op
from cowspec.fs.build import LayerEntry, hardlink_origin
from cowspec.fs.calls import (
    Append,
    Chmod,
    Chown,
    Create,
    Link,
    Mkdir,
    Op,
    Open,
    Read,
    Readdir,
    Readlink,
    Rename,
    Rmdir,
    Stat,
    Symlink,
    Truncate,
    Unlink,
    Write,
)
from cowspec.fs.features import Features
from cowspec.fs.observe import Entry
from cowspec.fs.paths import ROOT, ancestors

OPAQUE_XATTR = "trusted.overlay.opaque"
METACOPY_XATTR = "trusted.overlay.metacopy"
REDIRECT_XATTR = "trusted.overlay.redirect"
_counter = itertools.count()


def lay_out(entries: tuple[LayerEntry, ...], directory: str) -> None:
    """Write one trace layer into ``directory`` in overlay2's on-disk form."""
    os.makedirs(directory)
    by_path = {entry.path: entry for entry in entries}
    dirs: list[LayerEntry] = []
    for entry in sorted(entries, key=lambda each: each.path.count("/") if each.path != ROOT else 0):
        real = directory + entry.path if entry.path != ROOT else directory
        for ancestor in ancestors(entry.path):
            if not os.path.isdir(directory + ancestor) and ancestor != ROOT:
                os.mkdir(directory + ancestor, 0o755)
        if entry.type == "dir":
            if entry.path != ROOT:
                os.mkdir(real, 0o755)
            dirs.append(entry)
        elif entry.type == "file":
            with open(real, "wb") as handle:
                handle.write(entry.data)
            os.chown(real, entry.uid, entry.gid)
            os.chmod(real, entry.mode)
        elif entry.type == "symlink":
            os.symlink(entry.target, real)
            os.lchown(real, entry.uid, entry.gid)
        elif entry.type == "whiteout":
            os.mknod(real, stat.S_IFCHR, os.makedev(0, 0))
    for entry in entries:
        if entry.type == "hardlink":
            real = directory + entry.path
            for ancestor in ancestors(entry.path):
                if ancestor != ROOT and not os.path.isdir(directory + ancestor):
                    os.mkdir(directory + ancestor, 0o755)
            origin = hardlink_origin(by_path, entry, "layer")
            os.link(directory + origin.path, real, follow_symlinks=False)
    for entry in reversed(dirs):
        real = directory + entry.path if entry.path != ROOT else directory
        os.chown(real, entry.uid, entry.gid)
        os.chmod(real, entry.mode)
        if entry.opaque:
            os.setxattr(real, OPAQUE_XATTR, b"y")


def file_fields(path: str, info: os.stat_result, *, nlink: bool) -> Entry:
    """The JSON fields of a regular file (with its content hash)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    fields: Entry = {
        "type": "file",
        "mode": stat.S_IMODE(info.st_mode),
        "uid": info.st_uid,
        "gid": info.st_gid,
        "size": info.st_size,
        "sha256": digest.hexdigest(),
    }
    if nlink:
        fields["nlink"] = info.st_nlink
    return fields


def walk(top: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(container path, real path, lstat) of everything below ``top``.

    A name whose ``lstat`` fails with ENOENT is skipped: overlayfs lists a
    whiteout of a non-merged directory but says it does not exist.
    """
    pending = [("", top)]
    while pending:
        logical, real = pending.pop()
        for name in os.listdir(real):
            child_logical, child_real = logical + "/" + name, os.path.join(real, name)
            try:
                info = os.lstat(child_real)
            except FileNotFoundError:
                continue
            yield child_logical, child_real, info
            if stat.S_ISDIR(info.st_mode):
                pending.append((child_logical, child_real))


def describe(logical: str, real: str, info: os.stat_result, *, upper: bool) -> Entry:
    """One entry of ``merged`` or ``upper`` from what ``lstat`` says."""
    mode = info.st_mode
    common: Entry = {"path": logical}
    if stat.S_ISDIR(mode):
        entry: Entry = {**common, "type": "dir", "mode": stat.S_IMODE(mode), "uid": info.st_uid, "gid": info.st_gid}
        if upper:
            try:
                entry["opaque"] = os.getxattr(real, OPAQUE_XATTR, follow_symlinks=False) == b"y"
            except OSError:
                entry["opaque"] = False
        return entry
    if stat.S_ISLNK(mode):
        return {**common, "type": "symlink", "uid": info.st_uid, "gid": info.st_gid, "target": os.readlink(real)}
    if stat.S_ISREG(mode):
        fields = {**common, **file_fields(real, info, nlink=not upper)}
        if upper:
            fields.update(file_marks(real))
        return fields
    if stat.S_ISCHR(mode) and info.st_rdev == 0 and upper:
        return {**common, "type": "whiteout"}
    return {**common, "type": "other", "mode": stat.S_IMODE(mode), "uid": info.st_uid, "gid": info.st_gid}


def file_marks(real: str) -> Entry:
    """The overlay's marks on a file of the upper directory, in the trace
    format's optional fields: ``metacopy`` when it holds no data yet, and
    ``redirect`` when it records where its data is [METACOPY-4]."""
    marks: Entry = {}
    try:
        names = os.listxattr(real, follow_symlinks=False)
    except OSError:
        return marks
    if METACOPY_XATTR in names:
        marks["metacopy"] = True
    if REDIRECT_XATTR in names:
        marks["redirect"] = os.getxattr(real, REDIRECT_XATTR, follow_symlinks=False).decode("utf-8", "surrogateescape")
    return marks


def tree(top: str, *, upper: bool) -> list[Entry]:
    """Every entry below ``top``, sorted by path."""
    return sorted((describe(*each, upper=upper) for each in walk(top)), key=lambda entry: str(entry["path"]))


def docker_size(top: str) -> int:
    """Docker's ``directory.Size``: apparent bytes of non-directories, each inode once."""
    return _size_of(info for _, _, info in walk(top))


def _size_of(infos: Iterable[os.stat_result]) -> int:
    seen: set[int] = set()
    total = 0
    for info in infos:
        if stat.S_ISDIR(info.st_mode) or info.st_size == 0 or info.st_ino in seen:
            continue
        seen.add(info.st_ino)
        total += info.st_size
    return total


def tree_and_size(top: str, *, upper: bool) -> tuple[list[Entry], int]:
    """``tree(top)`` and ``docker_size(top)`` in one walk."""
    found = list(walk(top))
    entries = sorted((describe(*each, upper=upper) for each in found), key=lambda entry: str(entry["path"]))
    return entries, _size_of(info for _, _, info in found)


# -- the system calls, run inside the container root ---------------------------


def syscall(op: Op) -> Entry:
    """Perform ``op`` with the real system call; the result item."""
    try:
        value = _call(op)
    except OSError as error:
        return {"errno": errno.errorcode.get(error.errno or 0, f"E{error.errno}")}
    return {"ok": True} if value is None else {"ok": True, "value": value}


def _call(op: Op) -> object:
    match op:
        case Create():
            os.close(os.open(op.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, op.mode))
        case Open():
            flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[op.flags]
            os.close(os.open(op.path, flags))
        case Write():
            fd = os.open(op.path, os.O_WRONLY)
            try:
                os.pwrite(fd, op.data, op.offset)
            finally:
                os.close(fd)
        case Append():
            fd = os.open(op.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, op.data)
            finally:
                os.close(fd)
        case Truncate():
            os.truncate(op.path, op.size)
        case Read():
            fd = os.open(op.path, os.O_RDONLY)
            try:
                chunks = list(iter(lambda: os.read(fd, 1 << 16), b""))
            finally:
                os.close(fd)
            return base64.b64encode(b"".join(chunks)).decode()
        case Stat():
            info = os.lstat(op.path)
            kind = "dir" if stat.S_ISDIR(info.st_mode) else "symlink" if stat.S_ISLNK(info.st_mode) else "file"
            value: Entry = {"type": kind, "mode": stat.S_IMODE(info.st_mode), "uid": info.st_uid, "gid": info.st_gid}
            if kind != "dir":
                value["size"] = info.st_size
            if kind == "file":
                value["nlink"] = info.st_nlink
            return value
        case Readdir():
            return sorted(os.listdir(op.path))
        case Readlink():
            return os.readlink(op.path)
        case Mkdir():
            os.mkdir(op.path, op.mode)
        case Rmdir():
            os.rmdir(op.path)
        case Unlink():
            os.unlink(op.path)
        case Rename():
            os.rename(op.src, op.dst)
        case Symlink():
            os.symlink(op.target, op.path)
        case Link():
            os.link(op.src, op.dst, follow_symlinks=False)
        case Chmod():
            os.chmod(op.path, op.mode)
        case Chown():
            os.lchown(op.path, op.uid, op.gid)
    return None


def _serve(requests: IO[str], replies: IO[str], real_root: int) -> None:
    """The container process's loop: one JSON request per line, one JSON reply per line.

    ``{"enter": PATH}`` makes PATH its root, ``"leave"`` goes back to the
    real root (through the descriptor ``real_root``), ``"merged"`` walks
    the tree, ``"exit"`` ends the loop, and anything else is an op.
    """
    for line in requests:
        request = json.loads(line)
        reply: object
        if request == "merged":
            reply = tree("/", upper=False)
        elif request == "exit":
            return
        elif request == "leave" or (isinstance(request, dict) and "enter" in request):
            os.fchdir(real_root)
            os.chroot(".")
            if request != "leave":
                os.chroot(request["enter"])
            os.chdir("/")
            reply = "ok"
        else:
            try:
                reply = syscall(decode_op(request, "request"))
            except Exception as error:  # reported to the parent, never swallowed
                reply = {"driver_error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


class ContainerProcess:
    """A forked process that performs ops inside a root it is told to enter.

    It stays in the parent's mount namespace and keeps a descriptor of the
    real root, so that one process can serve one session after another. It
    exits when its request pipe closes, the parent's death included.
    """

    def __init__(self) -> None:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        self.owner = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the container process
            code = 0
            try:
                os.close(from_parent)
                os.close(to_parent)
                real_root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
                os.umask(0)
                with os.fdopen(to_child, "r") as requests, os.fdopen(from_child, "w") as replies:
                    _serve(requests, replies, real_root)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(to_child)
        os.close(from_child)
        self._requests = os.fdopen(from_parent, "w")
        self._replies = os.fdopen(to_parent, "r")

    def send(self, *requests: object) -> None:
        """Send requests, in one write; their replies come in order (``receive``)."""
        try:
            self._requests.write("".join(json.dumps(request) + "\n" for request in requests))
            self._requests.flush()
        except (OSError, ValueError):
            raise DriverError("the container process died") from None

    def receive(self) -> object:
        """The next reply."""
        try:
            line = self._replies.readline()
        except (OSError, ValueError):
            line = ""
        if not line:
            raise DriverError("the container process died")
        return json.loads(line)

    def ask(self, request: object) -> object:
        """Send one request; its reply."""
        self.send(request)
        return self.receive()

    def stop(self) -> None:
        """Ask the process to exit and wait for it (only from the process that forked it)."""
        if not self.pid:
            return
        if os.getpid() == self.owner:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self.ask("exit")
        for stream in (self._requests, self._replies):
            with contextlib.suppress(OSError):
                stream.close()
        if os.getpid() == self.owner:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        self.pid = 0


class ProcessPool:
    """Idle container processes, ready for the next session (one pool per process: ``POOL``).

    A process forked (``multiprocessing``'s workers) inherits the pool of
    its parent: it keeps none of those processes and makes its own.
    """

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.idle: list[ContainerProcess] = []
        atexit.register(self.stop_all)

    def take(self) -> ContainerProcess:
        """An idle process, or a new one."""
        if os.getpid() != self.owner:
            self.owner, self.idle = os.getpid(), []
        return self.idle.pop() if self.idle else ContainerProcess()

    def give_back(self, process: ContainerProcess) -> None:
        """Keep ``process`` for the next session (it has left its root)."""
        if os.getpid() == self.owner and process.owner == self.owner:
            self.idle.append(process)
        else:
            process.stop()

    def stop_all(self) -> None:
        """Stop every idle process (at exit)."""
        while self.idle and os.getpid() == self.owner:
            self.idle.pop().stop()


class KernelSession:
    """One overlay mount and the container process working in it."""

    def __init__(
        self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features, pool: ProcessPool | None = None
    ) -> None:
        self._name_directories(pool=pool)
        self.lowers.extend(os.path.join(self.home, f"l{index}") for index in range(max(len(layers), 1)))
        with self._closed_on_failure():
            os.mkdir(self.home)
            mount("cowcheck-session", self.home, "tmpfs", "mode=0755")
            self.home_mounted = True
            for index, directory in enumerate(self.lowers):
                lay_out(layers[index] if index < len(layers) else (), directory)
            work = os.path.join(self.home, "work")
            for directory in (self.upper_dir, work, self.merged_dir):
                os.mkdir(directory, 0o755)
            # The lower layers never change: their part of the virtual size is measured once [SIZE-2].
            self.lower_size: int | None = sum(docker_size(lower) for lower in self.lowers)
            self._mount_and_enter(list(reversed(self.lowers)), self.upper_dir, work, features)

    def _name_directories(
        self, upper_dir: str | None = None, merged_dir: str | None = None, pool: ProcessPool | None = None
    ) -> None:
        """The session's own home, and its upper and merged directories (in the home unless given)."""
        self.home = os.path.join(scratch_root(), f"s{next(_counter)}")
        self.lowers: list[str] = []
        self.upper_dir = upper_dir or os.path.join(self.home, "upper")
        self.merged_dir = merged_dir or os.path.join(self.home, "merged")
        self.mounted = False
        self.home_mounted = False
        self.lower_size = None
        self.pool = pool
        self.process: ContainerProcess | None = None
        self.seen_upper: tuple[list[Entry], int] | None = None
        self.observing = False
        self.merged_asked = False

    @contextlib.contextmanager
    def _closed_on_failure(self) -> Iterator[None]:
        """Undo what a failed start made, and let the failure go on."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    @classmethod
    def attach(cls, lowers_top_first: list[str], upper: str, work: str) -> "KernelSession":
        """A session over directories that exist already (a Docker container's), mounted as Docker mounts them.

        Closing it unmounts and removes only what the session made.
        """
        session = cls.__new__(cls)
        session._name_directories(upper_dir=upper)
        session.lowers = list(reversed(lowers_top_first))
        with session._closed_on_failure():
            os.makedirs(session.merged_dir)
            session._mount_and_enter(lowers_top_first, upper, work, Features())
        return session

    def _mount_and_enter(self, lowers_top_first: list[str], upper: str, work: str, features: Features) -> None:
        self._mount(lowers_top_first, upper, work, features)
        self._enter()

    def _mount(self, lowers_top_first: list[str], upper: str, work: str, features: Features) -> None:
        """Mount the overlay of ``lowers_top_first`` and ``upper`` on the merged directory, and say so in ``mounted``.

        The one step that names the implementation: the kernel's overlayfs
        here; a session class of another implementation over the same
        on-disk layers (``fuse_overlay``) mounts its own, and undoes it in
        ``_unmount``.
        """
        options = ",".join(
            [
                "lowerdir=" + ":".join(lowers_top_first),
                f"upperdir={upper}",
                f"workdir={work}",
                "redirect_dir=" + ("on" if features.redirect_dir else "off"),
                "index=" + ("on" if features.index else "off"),
                "metacopy=" + ("on" if features.metacopy else "off"),
            ]
        )
        try:
            mount("overlay", self.merged_dir, "overlay", options)
        except OSError as error:
            raise DriverUnavailable(str(error)) from None
        self.mounted = True

    def _unmount(self) -> None:
        """Undo ``_mount`` (called while ``mounted`` says it is there, after the container process has left)."""
        umount(self.merged_dir)

    @classmethod
    def in_directory(cls, root: str) -> "KernelSession":
        """A session whose process works in a plain directory (a volume's), nothing mounted."""
        session = cls.__new__(cls)
        session._name_directories(upper_dir=root, merged_dir=root)
        with session._closed_on_failure():
            session._enter()
        return session

    def _enter(self) -> None:
        """A container process, its root the merged directory."""
        self.process = self.pool.take() if self.pool is not None else ContainerProcess()
        self._ask({"enter": self.merged_dir})

    def _ask(self, request: object) -> object:
        return self._ready().ask(request)

    def _ready(self) -> ContainerProcess:
        """The container process, with no reply left unread."""
        if self.process is None:
            raise DriverError("the session is closed")
        if self.merged_asked:
            self.merged_asked = False
            self.process.receive()
        return self.process

    def perform(self, op: Op) -> Entry:
        """Run ``op`` inside the container root.

        Once the caller has looked at the merged tree after an op, it is
        taken to look after every op (as the state machine does): the walk
        is asked for with the op, in the same write, and read when
        ``merged`` is called, so that a step costs one round trip to the
        container process, not two. Nothing else runs in the container
        between the two, so the tree is the one ``merged`` would see.
        """
        self.seen_upper = None
        process = self._ready()
        if self.observing:
            process.send(encode_op(op), "merged")
            self.merged_asked = True
        else:
            process.send(encode_op(op))
        reply = cast(Entry, process.receive())
        if "driver_error" in reply:
            raise DriverError(f"the kernel driver failed on {encode_op(op)}: {reply['driver_error']}")
        return reply

    def merged(self) -> list[Entry]:
        """The merged tree as ``lstat`` sees it from inside the container."""
        self.observing = True
        if self.merged_asked and self.process is not None:
            self.merged_asked = False
            return cast(list[Entry], self.process.receive())
        return cast(list[Entry], self._ask("merged"))

    def _upper_and_size(self) -> tuple[list[Entry], int]:
        """The upper directory and its size, read from the host side in one walk.

        A session of its own layers keeps them until its next op: nothing
        else writes there. One over Docker's directories reads them afresh.
        """
        if self.seen_upper is not None:
            return self.seen_upper
        found = tree_and_size(self.upper_dir, upper=True)
        if self.lower_size is not None:
            self.seen_upper = found
        return found

    def upper(self) -> list[Entry]:
        """The upper directory, read from the host side."""
        return self._upper_and_size()[0]

    def sizes(self) -> Entry:
        """Docker's SIZE and virtual size, measured on the real directories."""
        size = self._upper_and_size()[1]
        lower_size = self.lower_size
        if lower_size is None:
            lower_size = sum(docker_size(lower) for lower in self.lowers)
        return {"size": size, "virtual_size": size + lower_size}

    def close(self) -> None:
        """Release the container process, unmount, remove the session's files."""
        process, self.process = self.process, None
        if process is not None:
            try:
                if self.merged_asked:
                    process.receive()
                if process.ask("leave") != "ok":
                    raise DriverError("the container process did not leave its root")
            except DriverError:
                process.stop()
            else:
                if self.pool is not None:
                    self.pool.give_back(process)
                else:
                    process.stop()
        if self.mounted:
            self._unmount()
            self.mounted = False
        if self.home_mounted:
            umount(self.home)
            self.home_mounted = False
            with contextlib.suppress(OSError):
                os.rmdir(self.home)
        remove_tree(self.home)  # what is left: a session over Docker's directories keeps its merged one here


POOL = ProcessPool()
"""The container processes every ``KernelOverlay`` of this process shares."""


class KernelOverlay:
    """The Linux kernel's overlayfs, mounted as Docker's overlay2 mounts it."""

    name = "kernel-overlay"
    features = frozenset({"redirect_dir", "index", "metacopy"})
    """The optional overlay features it mounts with: all three, in every combination the kernel accepts [FEATURE-3]."""

    def __init__(self) -> None:
        self.pool = POOL

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> KernelSession:
        """A fresh mount over ``layers`` (bottom first)."""
        return KernelSession(layers, features, self.pool)
