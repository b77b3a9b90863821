"""Whole-tree observations: the merged view and the writable layer.

These are what a conformance check compares after every step
[OBSERVE-1]: the merged tree as ``lstat`` sees it, root excluded, and the
writable layer entry by entry as Docker's overlay2 would export it, with
whiteouts and each directory's opaque flag, and a file's metacopy mark and
redirect where it has them [METACOPY-4]. Both are sorted by path and use
the plain JSON shape of the trace format's result.
"""

import hashlib

from cowspec.fs.entries import Dir, FileInode, SymlinkInode, Whiteout
from cowspec.fs.layer import Layer
from cowspec.fs.paths import ROOT
from cowspec.fs.stack import Container, Found, inode_of, root_of, visible_children

Entry = dict[str, object]


def _inode_fields(inode: FileInode | SymlinkInode, *, nlink: bool) -> Entry:
    """The fields of a file or symlink; ``nlink`` for the merged view, where
    the data is the file's. In the writable layer (``nlink`` false) a
    metacopy file holds a hole of its size, zeros when read straight from
    the layer, and says so; a redirect on a file is given [METACOPY-4]."""
    if isinstance(inode, SymlinkInode):
        return {"type": "symlink", "uid": inode.uid, "gid": inode.gid, "target": inode.target}
    held = inode.data
    if not nlink and inode.metacopy:
        held = bytes(len(inode.data))
    fields: Entry = {
        "type": "file",
        "mode": inode.mode,
        "uid": inode.uid,
        "gid": inode.gid,
        "size": len(inode.data),
        "sha256": hashlib.sha256(held).hexdigest(),
    }
    if nlink:
        fields["nlink"] = inode.nlink
    else:
        if inode.metacopy:
            fields["metacopy"] = True
        if inode.redirect is not None:
            fields["redirect"] = inode.redirect
    return fields


def merged_tree(container: Container) -> list[Entry]:
    """Every visible object below the root, sorted by path [OBSERVE-1]."""
    entries: list[Entry] = []
    pending: list[Found] = [root_of(container)]
    while pending:
        directory = pending.pop()
        for found in visible_children(container, directory).values():
            node = found.node
            if isinstance(node, Dir):
                entries.append({"path": found.path, "type": "dir", "mode": node.mode, "uid": node.uid, "gid": node.gid})
                pending.append(found)
            else:
                entries.append({"path": found.path, **_inode_fields(inode_of(container, found), nlink=True)})
    return sorted(entries, key=lambda entry: str(entry["path"]))


def layer_tree(layer: Layer) -> list[Entry]:
    """Every entry of ``layer`` below its root, sorted by path [OBSERVE-1]."""
    entries: list[Entry] = []
    for path, node in layer.entries.items():
        if path == ROOT:
            continue
        if isinstance(node, Whiteout):
            entries.append({"path": path, "type": "whiteout"})
        elif isinstance(node, Dir):
            entries.append(
                {
                    "path": path,
                    "type": "dir",
                    "mode": node.mode,
                    "uid": node.uid,
                    "gid": node.gid,
                    "opaque": node.opaque,
                }
            )
        else:
            entries.append({"path": path, **_inode_fields(layer.inode(node.ino), nlink=False)})
    return sorted(entries, key=lambda entry: str(entry["path"]))
