"""What a layer holds at a path.

A layer maps normalised paths to *nodes* [ENTRY-1]:

- ``Dir``: a directory, with its attributes and its ``opaque`` flag. An
  opaque directory hides every same-named directory in the layers below it
  [OPAQUE-1].
- ``Name``: one name of a non-directory inode of the same layer. Several
  names of one inode are hardlinks [ENTRY-2]; the inode holds the data and
  the attributes, so a change through one name shows through all of them.
- ``Whiteout``: the name is deleted; whatever the layers below hold there is
  hidden [WHITEOUT-1].

A path a layer does not map is *absent* from that layer: lookup goes on to
the layer below. That is the difference between an absent path and a
whiteout: absence lets the lower layers show, a whiteout stops them.

Inodes are ``FileInode`` (bytes) or ``SymlinkInode`` (a target). Modes are
the permission bits ``st_mode & 0o7777`` [ENTRY-3]; a symlink has no mode of
its own.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dir:
    """A directory node; ``opaque`` hides the layers below [OPAQUE-1].

    ``redirect`` is set only in the writable layer, on a directory that was
    renamed while it had image-layer copies, with ``redirect_dir`` on: it
    names where those copies are, relative to the parent (a bare name) or
    from the root (a path starting with ``/``) [REDIRECT-1].
    """

    mode: int
    uid: int
    gid: int
    opaque: bool = False
    redirect: str | None = None


@dataclass(frozen=True, slots=True)
class Name:
    """A name of the non-directory inode ``ino`` of the same layer."""

    ino: int


@dataclass(frozen=True, slots=True)
class Whiteout:
    """A deleted name: hides the layers below, and is itself invisible."""


Node = Dir | Name | Whiteout


@dataclass(frozen=True, slots=True)
class FileInode:
    """A regular file's data and attributes; ``nlink`` counts its names."""

    data: bytes
    mode: int
    uid: int
    gid: int
    nlink: int = 1
    touched: bool = False
    """The file's data was written since it came from its layer (its mtime moved)."""
    origin: str | None = None
    """For a copy-up, the path it was copied from [DIFF-2]."""
    written: tuple[tuple[int, int], ...] | None = None
    """The byte ranges ``[start, end)`` data was written to, sorted and merged;
    None for the whole of ``data`` (a file made from a layer entry, written in
    one go). The rest of the file is a hole, which a filesystem that keeps
    holes (tmpfs) allocates no block to [SNAP-9]."""
    metacopy: bool = False
    """Only in the writable layer, with ``metacopy`` on: the copy holds the
    attributes only (a hole of ``len(data)`` bytes, no block, marked
    ``trusted.overlay.metacopy``); ``data`` is still read from the image-layer
    inode it was copied from, and the first change of data copies it in
    [METACOPY-1][METACOPY-2]."""
    redirect: str | None = None
    """Only in the writable layer: where the image-layer data of a metacopy
    file that was renamed or linked is, as a directory's redirect says it
    [METACOPY-3][REDIRECT-1]. It stays once the data is copied in."""
    indexed: tuple[int, int] | None = None
    """With ``index`` on, the image-layer inode (layer index from the top,
    inode number) this writable-layer inode is the index entry of: every
    name of that inode shows this one [INDEX-1]."""
    lower: tuple[int, int] | None = None
    """For a copy-up, the image-layer inode it was copied from (layer index
    from the top, inode number): a metacopy file's data is still there, and
    when that inode has several names its redirect is always a path from
    the root [METACOPY-3]."""


def written_ranges(inode: FileInode) -> tuple[tuple[int, int], ...]:
    """The byte ranges of ``inode`` that hold written data [SNAP-9]."""
    if inode.written is None:
        return ((0, len(inode.data)),) if inode.data else ()
    return inode.written


def add_written(inode: FileInode, start: int, end: int) -> tuple[tuple[int, int], ...]:
    """The written ranges of ``inode`` once ``[start, end)`` is written too, merged."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted((*written_ranges(inode), (start, end))):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def cut_written(inode: FileInode, size: int) -> tuple[tuple[int, int], ...]:
    """The written ranges of ``inode`` once it is truncated to ``size``: what lies past it is gone."""
    return tuple((low, min(high, size)) for low, high in written_ranges(inode) if low < size)


@dataclass(frozen=True, slots=True)
class SymlinkInode:
    """A symbolic link's target and owner; ``nlink`` counts its names."""

    target: str
    uid: int
    gid: int
    nlink: int = 1
    touched: bool = False
    origin: str | None = None
    indexed: tuple[int, int] | None = None
    """As ``FileInode.indexed`` [INDEX-1]."""


def is_metacopy(inode: "Inode") -> bool:
    """True if ``inode`` is a writable-layer file that holds its attributes
    but not its data, which is still the image layer's [METACOPY-1]: a copy
    of it costs no data bytes until the data is copied in [METACOPY-2]."""
    return isinstance(inode, FileInode) and inode.metacopy


Inode = FileInode | SymlinkInode

WHITEOUT = Whiteout()
DEFAULT_DIR_MODE = 0o755
DEFAULT_FILE_MODE = 0o644
SETUID, SETGID, STICKY = 0o4000, 0o2000, 0o1000
