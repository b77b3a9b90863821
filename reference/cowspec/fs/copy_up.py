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
  hardlink-copy-up.md).

Which calls copy up is said with each operation (``operations.py``).
"""

from dataclasses import replace

from cowspec.errors import ModelError
from cowspec.fs.entries import Dir, Name
from cowspec.fs.layer import new_name, put
from cowspec.fs.paths import ancestors
from cowspec.fs.stack import Container, Found, inode_of, lookup


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


def copy_up_rules(container: Container, found: Found) -> tuple[str, ...]:
    """The rules ``copy_up`` exercises for ``found``, read before it runs.

    None for an object already in the writable layer. Otherwise COPYUP-1
    and COPYUP-6, its parents' (``parents_rules``), COPYUP-3 or COPYUP-4 for
    its kind, and COPYUP-5 when it is one name of an inode with several.
    """
    if found.in_upper:
        return ()
    rules = ("COPYUP-1", "COPYUP-6", *parents_rules(container, found.path))
    if isinstance(found.node, Dir):
        return (*rules, "COPYUP-3")
    if inode_of(container, found).nlink > 1:
        return (*rules, "COPYUP-4", "COPYUP-5")
    return (*rules, "COPYUP-4")


def copy_up(container: Container, found: Found) -> tuple[Container, Found]:
    """``container`` with ``found`` in the writable layer, and its new place.

    An object already there is returned unchanged.
    [COPYUP-1][COPYUP-3][COPYUP-4][COPYUP-5]
    """
    if found.in_upper:
        return container, found
    container = copy_up_parents(container, found.path)
    # COPY-UP
    if isinstance(found.node, Dir):
        node = found.node
        copied = Dir(node.mode, node.uid, node.gid, opaque=False)
        upper = put(container.upper, found.path, copied)
        stack = ((0, found.path), *found.stack)
        container = replace(container, upper=upper)
        return container, Found(found.path, copied, stack)
    inode = inode_of(container, found)
    upper = new_name(container.upper, found.path, replace(inode, nlink=1, origin=found.path))
    container = replace(container, upper=upper)
    name = upper.get(found.path)
    if not isinstance(name, Name):
        raise ModelError(f"the copy of {found.path} is not a name in the writable layer")
    return container, Found(found.path, name, ((0, found.path),))
