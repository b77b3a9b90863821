"""Paths inside a container root, as plain strings.

A *normalised* path is absolute, has no ``.`` or ``..`` component, no empty
component and no trailing slash; the root is ``"/"`` [PATH-1]. Layers are
keyed by normalised paths. Paths given to operations may also contain ``.``
and ``..`` and repeated slashes in their intermediate components; the
resolver in ``resolve.py`` walks those as the kernel does.
"""

ROOT = "/"

NAME_MAX = 255
"""The longest name a lookup takes, in bytes (Linux's ``NAME_MAX``): a longer component gives ``ENAMETOOLONG``."""

PATH_MAX = 4096
"""Linux's ``PATH_MAX``, in bytes with the closing NUL: a path given to a call must be shorter."""


def byte_length(text: str) -> int:
    """How many bytes ``text`` takes as the kernel sees it (UTF-8; undecodable bytes kept as they were)."""
    return len(text.encode("utf-8", "surrogateescape"))


def name_too_long(name: str) -> bool:
    """True if a lookup of the component ``name`` fails with ``ENAMETOOLONG`` [PATH-2]."""
    return len(name) > NAME_MAX // 4 and byte_length(name) > NAME_MAX


def path_too_long(path: str) -> bool:
    """True if a call given ``path`` (or a symlink target) refuses it with ``ENAMETOOLONG`` before any lookup
    [PATH-2]."""
    return len(path) >= PATH_MAX // 4 and byte_length(path) >= PATH_MAX


def is_normalised(path: str) -> bool:
    """True if ``path`` is an absolute, normalised path [PATH-1]."""
    if path == ROOT:
        return True
    if not path.startswith("/") or path.endswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path[1:].split("/"))


def join(parent: str, name: str) -> str:
    """The path of ``name`` inside the directory ``parent``."""
    return parent + name if parent == ROOT else parent + "/" + name


def parent_of(path: str) -> str:
    """The directory that holds ``path``; the root is its own parent."""
    if path == ROOT:
        return ROOT
    head = path.rsplit("/", 1)[0]
    return head or ROOT


def name_of(path: str) -> str:
    """The last component of a normalised path (empty for the root)."""
    return path.rsplit("/", 1)[1] if path != ROOT else ""


def ancestors(path: str) -> tuple[str, ...]:
    """Every proper ancestor of ``path``, from the root down."""
    result: list[str] = []
    current = parent_of(path)
    while current != ROOT:
        result.append(current)
        current = parent_of(current)
    result.append(ROOT)
    return tuple(reversed(result)) if path != ROOT else ()


def is_inside(path: str, directory: str) -> bool:
    """True if ``path`` lies strictly below ``directory``."""
    if directory == ROOT:
        return path != ROOT
    return path.startswith(directory + "/")


def rebase(path: str, old: str, new: str) -> str:
    """``path``, which is ``old`` or lies below it, moved to ``new``."""
    if path == old:
        return new
    rest = path if old == ROOT else path[len(old) :]
    return rest if new == ROOT else new + rest


def fold(path: str) -> str:
    """``path`` folded lexically: ``.`` and empty components dropped, ``..``
    taken back, never above the root. No symlink is looked at."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)
