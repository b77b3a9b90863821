"""The bytes a container's writable layer really takes on disk, per storage driver [DRIVER-7].

Docker's figures (SIZE) count what a driver finds changed; the disk holds
what the driver keeps. Two figures of the container's own directory
(overlay2 and fuse-overlayfs: ``ID/diff``; vfs: ``vfs/dir/ID``; btrfs:
``btrfs/subvolumes/ID``), each a range ``[min, max]`` that is one number
where the model is exact:

- ``apparent``: ``du --apparent-size --bytes``: every inode once, a regular
  file its length, a symlink its target's length, a whiteout 0, and every
  directory its ``st_size``: the backing filesystem's ``directory_size``
  (4096 on ext4), or on btrfs twice the lengths of the names it holds;
- ``allocated``: ``st_blocks`` times 512 over the non-directories, each
  inode once: a file the blocks its written ranges touch (a hole takes
  none), a symlink one block on btrfs and on ext4 one unless its target is
  shorter than 60 bytes (a fast symlink); directories are not counted;
- ``exclusive``: the bytes no other layer shares. It is ``apparent`` except
  on btrfs, where it is what ``btrfs filesystem du`` calls exclusive: the
  data extents only the snapshot holds. A snapshot shares every extent it
  did not rewrite, and a small file (2048 bytes at most) has no extent, its
  data being inline in the metadata; so only files written in the container
  count, in 4 KiB blocks (``btrfs_exclusive``).

overlay2 and fuse-overlayfs keep exactly the writable layer (fuse-overlayfs
writes its whiteouts and opaque markers as empty files, 0 bytes). vfs and
btrfs keep the whole tree (a copy, a snapshot) and Docker's init layer's
entries the image lacks (``/.dockerenv``, ``/dev``, ``/etc/hosts``, ...:
STORE-13's list; empty files, and ``/etc/mtab``, a symlink to
``/proc/mounts``).
"""

from collections.abc import Iterable
from dataclasses import dataclass

from cowspec.fs.entries import Dir, FileInode, Inode, Name, written_ranges
from cowspec.fs.layer import Layer
from cowspec.fs.stack import Container, inode_of, lookup, new_container, root_of, visible_children
from cowspec.store.drivers import StoreConfig
from cowspec.store.naive import directory_names, naive_changes, tree_entries, with_entries

BTRFS_MAX_INLINE = 2048
"""btrfs's default ``max_inline``: a file this small is kept in the metadata, with no data extent [DRIVER-7]."""
BLOCK = 4096

INIT_ENTRIES: tuple[tuple[str, str, int], ...] = (
    ("/.dockerenv", "file", 0),
    ("/dev", "dir", 0),
    ("/dev/console", "file", 0),
    ("/dev/pts", "dir", 0),
    ("/dev/shm", "dir", 0),
    ("/etc", "dir", 0),
    ("/etc/hostname", "file", 0),
    ("/etc/hosts", "file", 0),
    ("/etc/mtab", "symlink", len("/proc/mounts")),
    ("/etc/resolv.conf", "file", 0),
    ("/proc", "dir", 0),
    ("/sys", "dir", 0),
)
"""Docker's init layer (STORE-13), as a vfs or btrfs container's directory holds it: (path, kind, size)."""


@dataclass(frozen=True, slots=True)
class Bytes:
    """A figure in bytes the spec allows anywhere from ``min`` to ``max`` (one number when equal) [DRIVER-7]."""

    min: int
    max: int

    def allows(self, value: int) -> bool:
        """True if ``value`` is within the range."""
        return self.min <= value <= self.max


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """A container's writable layer on disk [DRIVER-7]."""

    apparent: Bytes
    exclusive: Bytes
    allocated: Bytes


EXT4_FAST_SYMLINK = 60
"""ext4 keeps a symlink whose target is shorter than this in its inode: no block [DRIVER-7]."""


def symlink_allocated(config: StoreConfig, length: int) -> int:
    """The blocks a symlink's target takes: one on btrfs (inline, reported as a block), none for a
    short target on ext4 (a fast symlink), else one [DRIVER-7]."""
    if config.driver == "btrfs":
        return config.block_size if length else 0
    return 0 if length < EXT4_FAST_SYMLINK else config.block_size


def file_allocated(config: StoreConfig, inode: FileInode, whole: bool) -> int:
    """The blocks a file's data takes: every block its written ranges touch (a hole takes none, SNAP-9);
    ``whole``: all of its length, as a file unpacked from an archive is written [DRIVER-7]."""
    ranges = ((0, len(inode.data)),) if whole else written_ranges(inode)
    blocks: set[int] = set()
    for low, high in ranges:
        blocks.update(range(low // config.block_size, -(-high // config.block_size)))
    return len(blocks) * config.block_size


def inodes_allocated(config: StoreConfig, inodes: Iterable[Inode], whole: bool) -> int:
    """The blocks of ``inodes`` (each once), as ``st_blocks`` reports them; directories are not counted
    (their blocks are the backing filesystem's, however many entries) [DRIVER-7]."""
    total = 0
    for inode in inodes:
        if isinstance(inode, FileInode):
            total += file_allocated(config, inode, whole)
        else:
            total += symlink_allocated(config, len(inode.target.encode("utf-8", "surrogateescape")))
    return total


def layer_inodes(layer: Layer) -> list[Inode]:
    """The inodes a layer's names hold, each once."""
    return [layer.inode(ino) for ino in {node.ino for node in layer.entries.values() if isinstance(node, Name)}]


def visible_inodes(container: Container, linked_below: bool = True) -> list[Inode]:
    """The inodes the container shows, each once (its whole tree, as a copy or a snapshot holds it).

    ``linked_below`` off: a symlink from below the top layer counts once per
    name, as vfs's copy of the layers below holds it [DRIVER-3].
    """
    inodes: dict[tuple[int, int] | str, Inode] = {}
    pending = [root_of(container)]
    while pending:
        current = pending.pop()
        if isinstance(current.node, Dir):
            pending.extend(visible_children(container, current).values())
            continue
        inode = inode_of(container, current)
        split = not linked_below and current.layer > 1 and not isinstance(inode, FileInode)
        inodes.setdefault(current.path if split else (current.layer, current.node.ino), inode)
    return list(inodes.values())


def layer_allocated(config: StoreConfig, lowers: tuple[Layer, ...]) -> int:
    """What the top layer of ``lowers`` takes as the driver stores it: overlay2 and fuse-overlayfs its
    own entries, vfs and btrfs the whole tree up to it (a copy; a snapshot, whose shared extents
    ``st_blocks`` counts in full) [DRIVER-7]."""
    if config.plain:
        tree = visible_inodes(new_container(lowers), linked_below=config.driver != "vfs")
        return inodes_allocated(config, tree, whole=True)
    return inodes_allocated(config, layer_inodes(lowers[-1]), whole=True)


def exactly(value: int) -> Bytes:
    """A figure the model knows to the byte."""
    return Bytes(value, value)


def upper_apparent(layer: Layer, directory_size: int) -> int:
    """The apparent bytes of an overlay writable layer's directory [DRIVER-7]."""
    directories = sum(isinstance(node, Dir) for node in layer.entries.values())
    named = {node.ino for node in layer.entries.values() if isinstance(node, Name)}
    data = 0
    for ino in named:
        inode = layer.inode(ino)
        if isinstance(inode, FileInode):
            data += len(inode.data)
        else:
            data += len(inode.target.encode("utf-8", "surrogateescape"))
    return data + directories * directory_size


def tree_apparent(entries: dict[str, tuple[str, int, int]], config: StoreConfig) -> int:
    """The apparent bytes of a whole tree, directories sized as ``config``'s filesystem sizes them [DRIVER-7]."""
    data = sum(dict((key, size) for kind, size, key in entries.values() if kind != "dir").values())
    names = directory_names(entries)
    if config.driver == "btrfs":
        held = [name for inside in names.values() for name in inside]
        directories = 2 * sum(len(name.encode("utf-8", "surrogateescape")) for name in held)
    else:
        directories = len(names) * config.directory_size
    return data + directories


def disk_usage(config: StoreConfig, image: Container | None, filesystem: Container) -> DiskUsage:
    """What a container's writable layer takes on disk under ``config``'s driver [DRIVER-7].

    ``image`` is the image's own view (a naive driver's parent tree), None on overlay2.
    """
    if not config.plain or image is None:
        upper = exactly(upper_apparent(filesystem.upper, config.directory_size))
        return DiskUsage(upper, upper, exactly(inodes_allocated(config, layer_inodes(filesystem.upper), whole=False)))
    entries = tree_entries(filesystem)
    whole = tree_apparent(with_entries(entries, INIT_ENTRIES), config)
    init_links = sum(
        symlink_allocated(config, size)
        for path, kind, size in INIT_ENTRIES
        if kind == "symlink" and path not in entries
    )
    allocated = exactly(inodes_allocated(config, visible_inodes(filesystem), whole=False) + init_links)
    if config.driver == "vfs":
        return DiskUsage(exactly(whole), exactly(whole), allocated)
    low = high = 0
    seen: set[int] = set()
    for change in naive_changes(image, filesystem):
        found = lookup(filesystem, change.path) if change.kind != "D" else None
        if found is None or not isinstance(found.node, Name) or found.node.ino in seen:
            continue
        seen.add(found.node.ino)
        inode = inode_of(filesystem, found)
        if isinstance(inode, FileInode):
            before = lookup(image, inode.origin) if inode.origin is not None else None
            had = inode_of(image, before) if before is not None and not before.is_dir else None
            fewest, most = btrfs_exclusive(inode, len(had.data) if isinstance(had, FileInode) else None)
            low, high = low + fewest, high + most
    return DiskUsage(exactly(whole), Bytes(low, high), allocated)


def btrfs_exclusive(inode: FileInode, original: int | None) -> tuple[int, int]:
    """The data bytes a changed file holds on its own in a btrfs snapshot, as ``btrfs filesystem du``
    counts them: least and most [DRIVER-7].

    ``original`` is the length of the image's file it was copied from (None
    for a file made in the container). A file whose data was not written
    shares its extents (0), and so does a file that is all hole (grown by
    ``truncate`` from nothing: no extent at all). A file of at most 2048 bytes written without
    holes is inline in btrfs's metadata (0). A file written without holes
    that had no extent before (made in the container, or an inline file of
    the image grown past 2048 bytes) has its own extents, in 4 KiB blocks.
    Anything else (a hole, a larger file of the image partly rewritten) lies
    between 0 and its size in blocks.
    """
    if not inode.touched:
        return 0, 0
    size = len(inode.data)
    ranges = written_ranges(inode)
    if size and not ranges:
        return 0, 0
    whole = ranges == ((0, size),) if size else True
    blocks = -(-size // BLOCK) * BLOCK
    if whole and size <= BTRFS_MAX_INLINE:
        return 0, 0
    if whole and (original is None or original <= BTRFS_MAX_INLINE):
        return blocks, blocks
    return 0, blocks
