"""The kernel's overlayfs as a driver: the ground truth of the filesystem level.

A session lays the trace's layers out on a tmpfs the way Docker's overlay2
driver stores them: one directory per layer, whiteouts as 0/0 character
devices, opaque directories marked ``trusted.overlay.opaque=y``. It mounts
them with explicit feature options under an empty upper directory, and
forks a child that ``chroot``s into the merged directory, so that absolute
symlinks resolve inside the container root as they would in a container.
The child performs each op as the real system call and walks the merged
tree; the parent reads the upper directory and the sizes from the host side
exactly as Docker does. Closing the session unmounts and removes it all.
"""

import base64
import contextlib
import errno
import hashlib
import itertools
import json
import os
import shutil
import stat
from collections.abc import Iterator
from typing import IO, cast

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
        return {**common, **file_fields(real, info, nlink=not upper)}
    if stat.S_ISCHR(mode) and info.st_rdev == 0 and upper:
        return {**common, "type": "whiteout"}
    return {**common, "type": "other", "mode": stat.S_IMODE(mode), "uid": info.st_uid, "gid": info.st_gid}


def tree(top: str, *, upper: bool) -> list[Entry]:
    """Every entry below ``top``, sorted by path."""
    return sorted((describe(*each, upper=upper) for each in walk(top)), key=lambda entry: str(entry["path"]))


def docker_size(top: str) -> int:
    """Docker's ``directory.Size``: apparent bytes of non-directories, each inode once."""
    seen: set[int] = set()
    total = 0
    for _, _, info in walk(top):
        if stat.S_ISDIR(info.st_mode) or info.st_size == 0 or info.st_ino in seen:
            continue
        seen.add(info.st_ino)
        total += info.st_size
    return total


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


def _serve(requests: IO[str], replies: IO[str]) -> None:
    """The child's loop: one JSON request per line, one JSON reply per line."""
    for line in requests:
        request = json.loads(line)
        if request == "merged":
            reply: object = tree("/", upper=False)
        elif request == "exit":
            return
        else:
            try:
                reply = syscall(decode_op(request, "request"))
            except Exception as error:  # reported to the parent, never swallowed
                reply = {"driver_error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


class KernelSession:
    """One overlay mount and the container process working in it."""

    def __init__(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> None:
        self._name_directories()
        self.lowers.extend(os.path.join(self.home, f"l{index}") for index in range(max(len(layers), 1)))
        with self._closed_on_failure():
            os.makedirs(self.home)
            for index, directory in enumerate(self.lowers):
                lay_out(layers[index] if index < len(layers) else (), directory)
            work = os.path.join(self.home, "work")
            for directory in (self.upper_dir, work, self.merged_dir):
                os.mkdir(directory, 0o755)
            self._mount_and_fork(list(reversed(self.lowers)), self.upper_dir, work, features)

    def _name_directories(self, upper_dir: str | None = None, merged_dir: str | None = None) -> None:
        """The session's own home, and its upper and merged directories (in the home unless given)."""
        self.home = os.path.join(scratch_root(), f"s{next(_counter)}")
        self.lowers: list[str] = []
        self.upper_dir = upper_dir or os.path.join(self.home, "upper")
        self.merged_dir = merged_dir or os.path.join(self.home, "merged")
        self.mounted = False
        self.pid = 0

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
            session._mount_and_fork(lowers_top_first, upper, work, Features())
        return session

    def _mount_and_fork(self, lowers_top_first: list[str], upper: str, work: str, features: Features) -> None:
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
        self._fork_server()

    @classmethod
    def in_directory(cls, root: str) -> "KernelSession":
        """A session whose process works in a plain directory (a volume's), nothing mounted."""
        session = cls.__new__(cls)
        session._name_directories(upper_dir=root, merged_dir=root)
        with session._closed_on_failure():
            session._fork_server()
        return session

    def _fork_server(self) -> None:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the container process
            code = 0
            try:
                os.close(from_parent)
                os.close(to_parent)
                os.chroot(self.merged_dir)
                os.chdir("/")
                os.umask(0)
                with os.fdopen(to_child, "r") as requests, os.fdopen(from_child, "w") as replies:
                    _serve(requests, replies)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(to_child)
        os.close(from_child)
        self._requests = os.fdopen(from_parent, "w")
        self._replies = os.fdopen(to_parent, "r")

    def _ask(self, request: object) -> object:
        self._requests.write(json.dumps(request) + "\n")
        self._requests.flush()
        line = self._replies.readline()
        if not line:
            raise DriverError("the container process died")
        return json.loads(line)

    def perform(self, op: Op) -> Entry:
        """Run ``op`` inside the container root."""
        reply = cast(Entry, self._ask(encode_op(op)))
        if "driver_error" in reply:
            raise DriverError(f"the kernel driver failed on {encode_op(op)}: {reply['driver_error']}")
        return reply

    def merged(self) -> list[Entry]:
        """The merged tree as ``lstat`` sees it from inside the container."""
        return cast(list[Entry], self._ask("merged"))

    def upper(self) -> list[Entry]:
        """The upper directory, read from the host side."""
        return tree(self.upper_dir, upper=True)

    def sizes(self) -> Entry:
        """Docker's SIZE and virtual size, measured on the real directories."""
        size = docker_size(self.upper_dir)
        return {"size": size, "virtual_size": size + sum(docker_size(lower) for lower in self.lowers)}

    def close(self) -> None:
        """Stop the container process, unmount, remove the session's files."""
        if self.pid:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self._ask("exit")
            for stream in (self._requests, self._replies):
                with contextlib.suppress(OSError):
                    stream.close()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0
        if self.mounted:
            umount(self.merged_dir)
            self.mounted = False
        shutil.rmtree(self.home, ignore_errors=True)


class KernelOverlay:
    """The Linux kernel's overlayfs, mounted as Docker's overlay2 mounts it."""

    name = "kernel-overlay"

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> KernelSession:
        """A fresh mount over ``layers`` (bottom first)."""
        return KernelSession(layers, features)
