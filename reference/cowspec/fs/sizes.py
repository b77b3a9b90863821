"""Sizes, as Docker's overlay2 driver counts them.

Docker measures a layer by walking its directory on disk with ``lstat`` and
adding the apparent size of every non-directory, each inode once
[SIZE-1]:

- a regular file counts its length in bytes; a hardlinked inode counts once,
  however many names it has;
- a symlink counts the length of its target;
- directories and whiteouts count 0.

A container's SIZE is that of its writable layer [SIZE-2]; its virtual size
is the writable layer's plus every image layer's own size [SIZE-3]. A file
copied up counts in full, even after a change of mode alone, and even as a
metacopy, which holds no data block but has the file's apparent size.
"""

from dataclasses import dataclass

from cowspec.fs.entries import FileInode
from cowspec.fs.layer import Layer
from cowspec.fs.stack import Container


@dataclass(frozen=True, slots=True)
class Sizes:
    """``docker ps -s``: SIZE and virtual size, in bytes."""

    size: int
    virtual_size: int


def layer_size(layer: Layer) -> int:
    """The apparent bytes of ``layer``, each inode once [SIZE-1]."""
    total = 0
    for inode in layer.inodes.values():
        total += len(inode.data) if isinstance(inode, FileInode) else len(inode.target.encode())
    return total


def container_sizes(container: Container) -> Sizes:
    """SIZE and virtual size of ``container`` [SIZE-2][SIZE-3].

    An inode only the index holds (no name of the writable layer) is in the
    work directory, which Docker's walk never sees [INDEX-3]. A metacopy
    file counts its apparent size, all of it [METACOPY-4].
    """
    size = layer_size(container.upper)
    for entry in container.index.values():
        inode = container.upper.inode(entry.ino)
        if inode.nlink == 1:
            size -= len(inode.data) if isinstance(inode, FileInode) else len(inode.target.encode())
    image = sum(layer_size(layer) for layer in container.lowers)
    return Sizes(size=size, virtual_size=size + image)
