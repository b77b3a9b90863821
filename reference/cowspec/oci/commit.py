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
from cowspec.fs.observe import Entry
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


def commit_entries(layer: LayerTar) -> list[Entry]:
    """A layer tar's entries in the JSON shape of a trace result's ``upper`` [COMMIT-1].

    This is what a committed layer is compared on: directories with
    ``opaque`` (true where the layer holds the directory's opaque marker),
    whiteouts as ``{"path", "type": "whiteout"}``, files with mode, owner,
    size and SHA-256, symlinks with their target, and a tar hardlink as
    ``{"path", "type": "hardlink", "target"}`` naming the member that holds
    the data. Times are left out, and so is the root. Devices and FIFOs,
    which a commit of the model never holds, keep their type (and a
    device its numbers) so that a real layer holding one differs from the
    model's. An opaque marker in a directory the layer does not list gives
    a directory entry with ``opaque`` alone. Sorted by path; at one path, a
    whiteout comes after the entry.
    """
    entries: list[Entry] = []
    listed: set[str] = set()
    for entry in layer.entries:
        if entry.path == ROOT:
            continue
        listed.add(entry.path)
        entries.append(_entry_json(entry, entry.path in layer.opaque))
    for path in layer.opaque - listed - {ROOT}:
        entries.append({"path": path, "type": "dir", "opaque": True})
    entries.extend({"path": path, "type": "whiteout"} for path in layer.whiteouts if path != ROOT)
    return sorted(entries, key=lambda each: (str(each["path"]), each["type"] == "whiteout"))


def _entry_json(entry: TarEntry, opaque: bool) -> Entry:
    """One tar entry (not a marker) as JSON [COMMIT-1]."""
    owner: Entry = {"mode": entry.mode, "uid": entry.uid, "gid": entry.gid}
    if entry.kind == "dir":
        return {"path": entry.path, "type": "dir", **owner, "opaque": opaque}
    if entry.kind == "file":
        return {"path": entry.path, "type": "file", **owner, "size": entry.size, "sha256": entry.sha256}
    if entry.kind == "symlink":
        return {"path": entry.path, "type": "symlink", "uid": entry.uid, "gid": entry.gid, "target": entry.link}
    if entry.kind == "hardlink":
        return {"path": entry.path, "type": "hardlink", "target": entry.link}
    if entry.kind in ("char", "block"):
        return {"path": entry.path, "type": entry.kind, **owner, "device": list(entry.device)}
    return {"path": entry.path, "type": entry.kind, **owner}
