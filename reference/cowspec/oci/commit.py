"""Commit: a container's writable layer as the layer tar Docker makes of it.

Docker's overlay2 driver commits a container by archiving its upper
directory as it is [COMMIT-1]: every entry the writable layer holds, parent
directories that copy-up made and files copied up by an open for writing
included; a whiteout (a 0/0 character device on disk) becomes an empty
``.wh.NAME`` file; an opaque directory is followed by its
``.wh..wh..opq`` marker. Names of one inode are one file and hardlinks to
the name that comes first in path order. Times are not modelled.
"""

from cowspec.errors import ModelError
from cowspec.fs.entries import Dir, FileInode, Name, Whiteout
from cowspec.fs.layer import Layer
from cowspec.fs.paths import ROOT
from cowspec.fs.stack import Container
from cowspec.oci.layer_tar import LayerTar, TarEntry, canonical_key


def commit(container: Container) -> LayerTar:
    """The layer a commit of ``container`` gives [COMMIT-1]."""
    return layer_tar_of(container.upper)


def layer_tar_of(upper: Layer) -> LayerTar:
    """A filesystem-level layer as a layer tar value [COMMIT-1]."""
    entries: list[TarEntry] = []
    whiteouts: set[str] = set()
    opaque: set[str] = set()
    first_name: dict[int, str] = {}
    for path in sorted(upper.entries, key=canonical_key):
        node = upper.entries[path]
        if path == ROOT:
            continue
        if isinstance(node, Whiteout):
            whiteouts.add(path)
        elif isinstance(node, Dir):
            entries.append(TarEntry(path, "dir", node.mode, node.uid, node.gid))
            if node.opaque:
                opaque.add(path)
        else:
            if not isinstance(node, Name):
                raise ModelError(f"{path}: a writable layer's node is a directory, a whiteout or a name")
            inode = upper.inode(node.ino)
            if node.ino in first_name:
                entries.append(TarEntry(path, "hardlink", link=first_name[node.ino]))
                continue
            first_name[node.ino] = path
            if isinstance(inode, FileInode):
                entries.append(TarEntry(path, "file", inode.mode, inode.uid, inode.gid, data=inode.data))
            else:
                entries.append(TarEntry(path, "symlink", 0o777, inode.uid, inode.gid, link=inode.target))
    return LayerTar(tuple(entries), frozenset(whiteouts), frozenset(opaque))
