"""Copy-up: bringing an object into the writable layer before changing it.

The image layers are never modified [COPYUP-1]. Before a change to an
object that lives only in an image layer, the object is copied into the
writable layer, after every directory above it [COPYUP-2]:

- a directory is copied with its attributes and without its entries; the
  copy is not opaque, whatever the original was [COPYUP-3];
- a regular file is copied whole, with its mode and owner; a symlink with
  its target and owner [COPYUP-4];
- with ``index`` off, as Docker mounts it, the copy is a new inode with one
  link: copying up one name of a hardlinked file breaks the link, and the
  other names keep the old inode [COPYUP-5] (docs/rationale/
  hardlink-copy-up.md). With ``index`` on, the copy is the image inode's
  index entry, which every name shows [INDEX-1];
- with ``metacopy`` on, a copy-up for a change of metadata alone leaves the
  data out until a call opens the file for writing [METACOPY-1][METACOPY-2].

Which calls copy up is said with each operation (``operations.py``).
"""

from dataclasses import replace

from cowspec.errors import ModelError
from cowspec.fs.entries import Dir, FileInode, Inode, Name, is_metacopy
from cowspec.fs.layer import add_inode, link, new_name, put, set_inode, unlink_inode
from cowspec.fs.paths import ancestors
from cowspec.fs.stack import Container, Found, ImageInode, IndexEntry, index_key, inode_of, lookup


def copy_up_parents(container: Container, path: str) -> Container:
    """``container`` with every directory above ``path`` in the writable layer.

    [COPYUP-2][COPYUP-3]
    """
    for each in ancestors(path):
        if container.upper.get(each) is not None:
            continue
        found = lookup(container, each)
        if found is None or not isinstance(found.node, Dir):
            raise ModelError(f"{each} is above {path} but is no directory of the merged view")
        copied = Dir(found.node.mode, found.node.uid, found.node.gid, opaque=False)
        container = replace(container, upper=put(container.upper, each, copied))
    return container


def parents_rules(container: Container, path: str) -> tuple[str, ...]:
    """The rules ``copy_up_parents`` exercises for ``path``: COPYUP-2 and
    COPYUP-3 when a directory above it is not yet in the writable layer."""
    if any(container.upper.get(each) is None for each in ancestors(path)):
        return ("COPYUP-2", "COPYUP-3")
    return ()


def copy_up_rules(container: Container, found: Found, *, metadata_only: bool = False) -> tuple[str, ...]:
    """The rules ``copy_up`` exercises for ``found``, read before it runs.

    For an object already in the writable layer: METACOPY-2 when a metacopy
    file's data is copied in, else none. Otherwise COPYUP-1 and COPYUP-6, its
    parents' (``parents_rules``), COPYUP-3 or COPYUP-4 for its kind, COPYUP-5
    when it is one name of an inode with several (INDEX-1 instead with
    ``index`` on), METACOPY-1 for a metadata-only copy and METACOPY-2 when
    the data of an indexed metacopy copy is needed.
    """
    if found.in_upper:
        if not metadata_only and isinstance(found.node, Name) and is_metacopy(inode_of(container, found)):
            return ("METACOPY-2",)
        return ()
    rules = ("COPYUP-1", "COPYUP-6", *parents_rules(container, found.path))
    if isinstance(found.node, Dir):
        return (*rules, "COPYUP-3")
    inode = inode_of(container, found)
    if index_key(container, found) is not None:
        rules = (*rules, "COPYUP-4", "INDEX-1")
    elif inode.nlink > 1:
        rules = (*rules, "COPYUP-4", "COPYUP-5")
    else:
        rules = (*rules, "COPYUP-4")
    if isinstance(inode, FileInode):
        if is_metacopy(inode) and not metadata_only:
            rules = (*rules, "METACOPY-2")
        elif metadata_only and container.features.metacopy and not is_metacopy(inode):
            rules = (*rules, "METACOPY-1")
    return rules


def copy_up(container: Container, found: Found, *, metadata_only: bool = False) -> tuple[Container, Found]:
    """``container`` with ``found`` in the writable layer, and its new place.

    ``metadata_only`` is for a call that changes no data (``chmod``,
    ``lchown``, ``rename``, ``link``): with ``metacopy`` on, a regular file
    is then copied without its data [METACOPY-1]. Any other copy-up is for
    writing: it copies the data, also of a file already in the writable
    layer as a metacopy [METACOPY-2]. With ``index`` on, a name of an
    image-layer inode with several names becomes a name of that inode's
    index entry, made by the first of them copied up [INDEX-1].

    [COPYUP-1][COPYUP-3][COPYUP-4][COPYUP-5]
    """
    if found.in_upper:
        if metadata_only or not isinstance(found.node, Name):
            return container, found
        return copy_data_in(container, found.node.ino), found
    container = copy_up_parents(container, found.path)
    # COPY-UP
    if isinstance(found.node, Dir):
        node = found.node
        copied = Dir(node.mode, node.uid, node.gid, opaque=False)
        upper = put(container.upper, found.path, copied)
        stack = ((0, found.path), *found.stack)
        container = replace(container, upper=upper)
        return container, Found(found.path, copied, stack)
    key = index_key(container, found)
    if key is not None:
        container, ino = index_up(container, found, key, metadata_only=metadata_only)
        container = replace(container, upper=link(container.upper, found.path, ino))
    else:
        copy = copy_of(container, inode_of(container, found), found.path, metadata_only=metadata_only)
        if isinstance(copy, FileInode):
            copy = replace(copy, lower=(found.layer, found.node.ino))
        container = replace(container, upper=new_name(container.upper, found.path, copy))
    name = container.upper.get(found.path)
    if not isinstance(name, Name):
        raise ModelError(f"the copy of {found.path} is not a name in the writable layer")
    if not metadata_only:
        container = copy_data_in(container, name.ino)
    return container, Found(found.path, name, ((0, found.path),))


def copy_of(container: Container, inode: Inode, path: str, *, metadata_only: bool) -> Inode:
    """The writable-layer copy of the image-layer ``inode`` at ``path``: one
    link, its origin recorded; with ``metacopy`` on and no data needed, a
    regular file holds no data yet [METACOPY-1]."""
    if isinstance(inode, FileInode) and metadata_only and container.features.metacopy:
        return replace(inode, nlink=1, origin=path, metacopy=True, written=())
    return replace(inode, nlink=1, origin=path)


def index_up(container: Container, found: Found, key: ImageInode, *, metadata_only: bool) -> tuple[Container, int]:
    """``container`` with an index entry for the image-layer inode ``key``,
    whose name ``found`` is, and that entry's writable-layer inode.

    The first copy-up of any of its names makes the entry: a copy with one
    link, the index's, no name of the writable layer yet; the overlay's count
    starts at the image inode's [INDEX-1][INDEX-2][INDEX-3].
    """
    entry = container.index.get(key)
    if entry is not None:
        return container, entry.ino
    image_inode = container.layer(key[0]).inode(key[1])
    copy = replace(copy_of(container, image_inode, found.path, metadata_only=metadata_only), indexed=key)
    if isinstance(copy, FileInode):
        copy = replace(copy, lower=key)
    upper, ino = add_inode(container.upper, copy)
    index = container.index.set(key, IndexEntry(ino, image_inode.nlink))
    return replace(container, upper=upper, index=index), ino


def copy_data_in(container: Container, ino: int) -> Container:
    """``container`` with the data of the writable-layer inode ``ino`` in the
    writable layer: a metacopy file's is copied in, and the mark goes [METACOPY-2]."""
    inode = container.upper.inode(ino)
    if not isinstance(inode, FileInode) or not inode.metacopy:
        return container
    return replace(container, upper=set_inode(container.upper, ino, replace(inode, metacopy=False, written=None)))


def index_link_change(container: Container, found: Found, change: int) -> Container:
    """``container`` with the overlay's count of the inode ``found`` names
    changed by ``change`` (a ``link`` adds one, a removed name takes one)
    [INDEX-2]. At 0 the index entry goes, and the writable-layer inode
    loses the index's link. Nothing happens for an inode without an entry."""
    key = index_key(container, found)
    entry = container.index.get(key) if key is not None else None
    if key is None or entry is None:
        return container
    nlink = entry.nlink + change
    if nlink > 0:
        return replace(container, index=container.index.set(key, IndexEntry(entry.ino, nlink)))
    return replace(container, upper=unlink_inode(container.upper, entry.ino), index=container.index.delete(key))


def index_before_removal(container: Container, found: Found) -> Container:
    """``container`` ready for ``found``'s name to be removed (``unlink``, or
    ``rename`` over it): with ``index`` on, a name of an image-layer inode
    with several names and no index entry yet makes the entry first, data
    and all unless ``metacopy`` is on, though no name of the writable layer
    will hold it [INDEX-3]."""
    key = index_key(container, found)
    if key is None or found.in_upper or key in container.index:
        return container
    return index_up(container, found, key, metadata_only=True)[0]


def removal_index_rules(container: Container, found: Found) -> tuple[str, ...]:
    """The rules removing ``found``'s name exercises for the index: INDEX-2
    for an indexed inode, and INDEX-3 when it makes the entry first."""
    key = index_key(container, found)
    if key is None:
        return ()
    if found.in_upper or key in container.index:
        return ("INDEX-2",)
    return ("INDEX-2", "INDEX-3")
