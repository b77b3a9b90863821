"""The operations of the trace format, as values.

Each class stands for one system call made inside the container, as root
with umask 0 (``docs/formats/trace-format.md``). Paths are absolute.
"""

from dataclasses import dataclass
from typing import Literal

from cowspec.errors import Errno

OpenFlags = Literal["r", "w", "rw"]


@dataclass(frozen=True, slots=True)
class Create:
    """``open(path, O_CREAT|O_EXCL|O_WRONLY, mode)``."""

    path: str
    mode: int


@dataclass(frozen=True, slots=True)
class Open:
    """``open(path, O_RDONLY|O_WRONLY|O_RDWR)`` then ``close``."""

    path: str
    flags: OpenFlags


@dataclass(frozen=True, slots=True)
class Write:
    """``open(path, O_WRONLY)`` then ``pwrite(data, offset)``."""

    path: str
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Append:
    """``open(path, O_WRONLY|O_APPEND)`` then ``write(data)``."""

    path: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Truncate:
    """``truncate(path, size)``."""

    path: str
    size: int


@dataclass(frozen=True, slots=True)
class Read:
    """``open(path, O_RDONLY)`` then read to the end."""

    path: str


@dataclass(frozen=True, slots=True)
class Stat:
    """``lstat(path)``."""

    path: str


@dataclass(frozen=True, slots=True)
class Readdir:
    """``opendir(path)``, ``readdir`` without ``.`` and ``..``."""

    path: str


@dataclass(frozen=True, slots=True)
class Readlink:
    """``readlink(path)``."""

    path: str


@dataclass(frozen=True, slots=True)
class Mkdir:
    """``mkdir(path, mode)``."""

    path: str
    mode: int


@dataclass(frozen=True, slots=True)
class Rmdir:
    """``rmdir(path)``."""

    path: str


@dataclass(frozen=True, slots=True)
class Unlink:
    """``unlink(path)``."""

    path: str


@dataclass(frozen=True, slots=True)
class Rename:
    """``rename(src, dst)``."""

    src: str
    dst: str


@dataclass(frozen=True, slots=True)
class Symlink:
    """``symlink(target, path)``."""

    target: str
    path: str


@dataclass(frozen=True, slots=True)
class Link:
    """``link(src, dst)``, not following a final symlink of ``src``."""

    src: str
    dst: str


@dataclass(frozen=True, slots=True)
class Chmod:
    """``chmod(path, mode)``."""

    path: str
    mode: int


@dataclass(frozen=True, slots=True)
class Chown:
    """``lchown(path, uid, gid)``."""

    path: str
    uid: int
    gid: int


Op = (
    Create
    | Open
    | Write
    | Append
    | Truncate
    | Read
    | Stat
    | Readdir
    | Readlink
    | Mkdir
    | Rmdir
    | Unlink
    | Rename
    | Symlink
    | Link
    | Chmod
    | Chown
)

OP_NAMES: dict[type, str] = {
    Create: "create",
    Open: "open",
    Write: "write",
    Append: "append",
    Truncate: "truncate",
    Read: "read",
    Stat: "stat",
    Readdir: "readdir",
    Readlink: "readlink",
    Mkdir: "mkdir",
    Rmdir: "rmdir",
    Unlink: "unlink",
    Rename: "rename",
    Symlink: "symlink",
    Link: "link",
    Chmod: "chmod",
    Chown: "chown",
}


@dataclass(frozen=True, slots=True)
class StatValue:
    """What ``lstat`` reports: ``size`` for files and symlinks, ``nlink`` for files."""

    type: Literal["dir", "file", "symlink"]
    mode: int
    uid: int
    gid: int
    size: int | None = None
    nlink: int | None = None


Value = bytes | str | tuple[str, ...] | StatValue


@dataclass(frozen=True, slots=True)
class Ok:
    """A call that succeeded, with its value where the call has one."""

    value: Value | None = None


Outcome = Ok | Errno
"""``Ok`` or the errno of a failed call, by name (``"ENOENT"``)."""
