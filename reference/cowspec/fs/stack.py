"""The container: read-only layers under one writable layer, and lookup.

Layers are numbered from the top: 0 is the writable (upper) layer, 1 the
topmost image layer, and so on down. Lookup of a name in a directory scans
the layers in which that directory was found, from the top [LOOKUP-1]:

- the first layer that holds the name decides: a whiteout means the name is
  absent [WHITEOUT-1]; a non-directory is the object, and everything below
  is hidden [LOOKUP-2];
- a directory starts a collection of same-named directories from the layers
  below, which stops at a non-directory, a whiteout, or after an opaque
  directory [LOOKUP-3][OPAQUE-1]. Several collected directories make a
  *merged* directory; one makes a plain (real) one.

A merged directory's attributes are its top copy's [LOOKUP-4]; its entries
are the union of its copies' entries without the hidden ones [READDIR-1].

``scan_child`` states that scan as the rules say it. The image layers never
change, so a container scans them once, when it is made: its ``ImageView``
holds, for every path the image layers show by themselves, what the scan
finds there. Lookup in a container then asks the writable layer, and below
it the view: a few dictionary probes per path component, however many
layers there are. The two agree because every copy a directory has in the
image layers sits at one path, the same in each of them: only the writable
layer holds redirects [REDIRECT-1], so the image-layer part of any found
directory is the view's entry at that path (``tests/fs/test_stack.py`` checks
``lookup_child`` against ``scan_child`` over whole trees).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from immutables import Map

from cowspec.errors import ModelError
from cowspec.fs.entries import Dir, Inode, Name, Node, Whiteout
from cowspec.fs.features import DOCKER_OVERLAY2, Features
from cowspec.fs.layer import Layer, empty_layer
from cowspec.fs.paths import ROOT, join

Place = tuple[int, str]
"""A copy of an object: (layer index from the top, its path in that layer)."""


@dataclass(frozen=True, slots=True)
class Found:
    """A visible object of the merged view.

    ``stack`` lists where it lives, top first, as (layer index, path in that
    layer). A non-directory has one place; a directory has one per collected
    copy, and is merged when it has more than one.
    """

    path: str
    node: Dir | Name
    stack: tuple[Place, ...]

    @property
    def layer(self) -> int:
        """The layer of the top copy."""
        return self.stack[0][0]

    @property
    def in_upper(self) -> bool:
        """True if the top copy is in the writable layer."""
        return self.stack[0][0] == 0

    @property
    def is_dir(self) -> bool:
        """True for a directory."""
        return isinstance(self.node, Dir)

    @property
    def merged(self) -> bool:
        """True for a directory collected from more than one layer."""
        return len(self.stack) > 1

    @property
    def has_lower(self) -> bool:
        """True if any copy lives in an image layer."""
        return any(index > 0 for index, _ in self.stack)


@dataclass(frozen=True, slots=True)
class ImageView:
    """What the image layers show by themselves, looked up once.

    ``found`` maps every path the image layers show (the root included) to
    the object ``scan_child`` finds there, its stack counted as in a
    container (1 is the topmost image layer). A path that is absent, whited
    out or hidden below a non-directory is not in it. ``lowers`` are the
    layers it was made from, bottom first.

    ``found`` is a read-only view of a dictionary, not a persistent map: the
    view is made once and never updated, and as an ``immutables.Map`` it
    made the model benchmark's build slower (2.81 s of CPU against 2.30 s,
    best of six runs each) and its lookups no faster.
    """

    lowers: tuple[Layer, ...]
    found: Mapping[str, Found]


def image_view(lowers: tuple[Layer, ...]) -> ImageView:
    """The view of ``lowers`` (bottom first): the merged tree of the image
    layers, walked once from the root with ``scan_child``.

    [LOOKUP-1][LOOKUP-2][LOOKUP-3][LOOKUP-4][REDIRECT-1]
    """
    # Index 0 stands for the writable layer, which no stack here names.
    layers = (empty_layer(), *reversed(lowers))
    root_node = lowers[-1].get(ROOT) if lowers else None
    found: dict[str, Found] = {}
    if isinstance(root_node, Dir):
        # Every image layer contributes its root [LOOKUP-4].
        root = Found(ROOT, root_node, tuple((index, ROOT) for index in range(1, len(layers))))
        found[ROOT] = root
        pending = [root]
        while pending:
            directory = pending.pop()
            for name in child_names_in(layers, directory):
                child = scan_child(layers, directory, name)
                if child is None:
                    continue
                if isinstance(child.node, Dir) and child.node.redirect is not None:
                    raise ModelError(f"image layer {child.layer} holds a redirect at {child.path} [REDIRECT-1]")
                found[child.path] = child
                if child.is_dir:
                    pending.append(child)
    return ImageView(lowers, MappingProxyType(found))


NO_IMAGE = image_view(())

ImageInode = tuple[int, int]
"""An inode of the image layers: (layer index from the top, inode number)."""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """With ``index`` on, the writable-layer inode that stands for an
    image-layer inode with several names, and the link count the merged
    view reports for all of them [INDEX-1][INDEX-2].

    ``ino`` is a writable-layer inode whose own ``nlink`` counts its names
    in the writable layer plus one for the index entry, as the kernel's
    upper inode does; ``nlink`` is the overlay's count: the image inode's,
    plus each ``link``, minus each name removed.
    """

    ino: int
    nlink: int


NO_INDEX: "Map[ImageInode, IndexEntry]" = Map()


@dataclass(frozen=True, slots=True)
class Container:
    """One container: image layers (bottom first) and its writable layer.

    ``image`` is derived from ``lowers``: made once with the container, and
    kept by ``dataclasses.replace`` while ``lowers`` stay the same tuple.
    """

    lowers: tuple[Layer, ...]
    upper: Layer
    features: Features = DOCKER_OVERLAY2
    image: ImageView = field(default=NO_IMAGE, repr=False, compare=False)
    index: "Map[ImageInode, IndexEntry]" = NO_INDEX
    """With ``index`` on, the image-layer inodes with several names that
    were copied up, each to its writable-layer inode [INDEX-1]."""
    top_down: tuple[Layer, ...] = field(init=False, repr=False, compare=False)
    """Every layer from the top, derived: index 0 is the writable layer."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "top_down", (self.upper, *reversed(self.lowers)))
        if self.image.lowers is not self.lowers:
            object.__setattr__(self, "image", image_view(self.lowers))

    def layer(self, index: int) -> Layer:
        """Layer ``index`` counted from the top (0 is the writable layer)."""
        return self.top_down[index]

    @property
    def depth(self) -> int:
        """How many layers, the writable one included."""
        return len(self.lowers) + 1


def new_container(lowers: tuple[Layer, ...], features: Features = DOCKER_OVERLAY2) -> Container:
    """A container over ``lowers`` (bottom first) with an empty writable layer.

    An empty stack stands for one empty image layer: overlayfs needs a lower
    directory, and a Docker container always has its init layer below it,
    so the root is always a merged directory [LOOKUP-4].
    """
    return Container(lowers=lowers or (empty_layer(),), upper=empty_layer(), features=features)


def root_of(container: Container) -> Found:
    """The root directory: every layer contributes its root [LOOKUP-4]."""
    top = container.upper.get(ROOT)
    if not isinstance(top, Dir):
        raise ModelError("the writable layer's root is not a directory [ENTRY-4]")
    below = container.image.found.get(ROOT)
    return Found(ROOT, top, ((0, ROOT), *below.stack) if below is not None else ((0, ROOT),))


def inode_of(container: Container, found: Found) -> Inode:
    """The inode behind a non-directory, as the merged view shows it.

    With ``index`` on, a name of an image-layer inode that has an index
    entry shows the entry's writable-layer inode, copied up or not, with
    the overlay's link count [INDEX-1][INDEX-2].
    """
    if not isinstance(found.node, Name):
        raise ModelError(f"{found.path} is a directory, which has no inode of its own")
    inode = container.layer(found.layer).inode(found.node.ino)
    if not container.index:
        return inode
    key = inode.indexed if found.layer == 0 else (found.layer, found.node.ino)
    entry = container.index.get(key) if key is not None else None
    if entry is None:
        return inode
    indexed = container.upper.inode(entry.ino)
    return indexed if indexed.nlink == entry.nlink else replace(indexed, nlink=entry.nlink)


def index_key(container: Container, found: Found) -> ImageInode | None:
    """The image-layer inode whose names ``found`` is one of, when ``index``
    keeps them together: an image-layer inode with several names, or the
    writable-layer inode that is its index entry [INDEX-1]; else None."""
    if not container.features.index or not isinstance(found.node, Name):
        return None
    if found.layer == 0:
        return container.upper.inode(found.node.ino).indexed
    if container.layer(found.layer).inode(found.node.ino).nlink > 1:
        return found.layer, found.node.ino
    return None


def lookup_child(container: Container, parent: Found, name: str) -> Found | None:
    """The object ``name`` inside the directory ``parent``, or None if absent.

    The writable layer decides first, if ``parent`` is there; the image
    layers' answer is the view's, at the path where ``parent``'s image-layer
    copies are. The same as ``scan_child`` over every layer, in fewer steps.

    [LOOKUP-1][LOOKUP-2][LOOKUP-3][WHITEOUT-1][OPAQUE-1][REDIRECT-2]
    """
    path = join(parent.path, name)
    stack = parent.stack
    image = container.image.found
    # Where the parent's image-layer copies are: one path in every image
    # layer, since only the writable layer redirects [REDIRECT-1].
    if stack[0][0] != 0:
        below: str | None = stack[0][1]
    else:
        below = stack[1][1] if len(stack) > 1 else None
        # The writable layer decides first [LOOKUP-1][LOOKUP-2][WHITEOUT-1].
        node = container.upper.entries.get(path)
        if isinstance(node, Whiteout):
            return None
        if isinstance(node, Name):
            return Found(path, node, ((0, path),))
        if isinstance(node, Dir):
            # It collects the image-layer directories under its own name, a
            # bare redirect's, or a root path's: walking each image layer from
            # its root stops where LOOKUP-3 stops, so that is the view's entry
            # there too [LOOKUP-3][OPAQUE-1][REDIRECT-2].
            top = ((0, path),)
            if node.opaque:
                return Found(path, node, top)
            if node.redirect is None:
                copies = image.get(join(below, name)) if below is not None else None
            elif node.redirect.startswith("/"):
                copies = image.get(node.redirect)
            else:
                copies = image.get(join(below, node.redirect)) if below is not None else None
            if copies is None or not copies.is_dir:
                return Found(path, node, top)
            return Found(path, node, top + copies.stack)
    # Otherwise the image layers decide, as the view found them.
    if below is None:
        return None
    seen = image.get(join(below, name))
    if seen is None or seen.path == path:
        return seen
    return Found(path, seen.node, seen.stack)


def scan_child(layers: tuple[Layer, ...], parent: Found, name: str) -> Found | None:
    """The object ``name`` inside ``parent``, by scanning ``parent``'s copies.

    ``layers`` are counted from the top, as in ``Container.top_down``. This
    is the rule as stated; ``lookup_child`` gives the same answer faster.
    [LOOKUP-1][LOOKUP-2][LOOKUP-3][WHITEOUT-1][OPAQUE-1][REDIRECT-2]
    """
    path = join(parent.path, name)
    stack = parent.stack
    for position, (index, where) in enumerate(stack):
        here = join(where, name)
        node: Node | None = layers[index].entries.get(here)
        if node is None:
            continue
        if isinstance(node, Whiteout):
            return None
        if isinstance(node, Name):
            return Found(path, node, ((index, here),))
        collected = [(index, here)]
        if not node.opaque:
            below = stack[position + 1 :]
            if node.redirect is None:
                collected += collect_dirs(layers, [(each, join(at, name)) for each, at in below])
            elif node.redirect.startswith("/"):
                collected += collect_from_roots(layers, index + 1, node.redirect)
            else:
                collected += collect_dirs(layers, [(each, join(at, node.redirect)) for each, at in below])
        return Found(path, node, tuple(collected))
    return None


def collect_dirs(layers: tuple[Layer, ...], places: list[Place]) -> list[Place]:
    """The directories at ``places`` that merge below a directory [LOOKUP-3].

    Collection skips a layer without the name and stops at a non-directory,
    a whiteout, or after an opaque directory.
    """
    collected: list[Place] = []
    for index, here in places:
        node = layers[index].entries.get(here)
        if node is None:
            continue
        if not isinstance(node, Dir):
            break
        collected.append((index, here))
        if node.opaque:
            break
    return collected


def collect_from_roots(layers: tuple[Layer, ...], start: int, path: str) -> list[Place]:
    """The directories an absolute redirect names, in layers ``start`` and below.

    Each layer is walked from its root along ``path`` [REDIRECT-2]: a missing
    component means this layer has nothing; a whiteout or a non-directory on
    the way stops the collection; an opaque directory on the way lets this
    layer count and stops the ones below.
    """
    collected: list[Place] = []
    parts = path[1:].split("/")
    for index in range(start, len(layers)):
        entries = layers[index].entries
        current, found, stop = "", True, False
        for part in parts:
            current += "/" + part
            node = entries.get(current)
            if node is None:
                found = False
                break
            if not isinstance(node, Dir):
                found, stop = False, True
                break
            stop = stop or node.opaque
        if found:
            collected.append((index, path))
        if stop:
            break
    return collected


def lookup(container: Container, path: str) -> Found | None:
    """The object at the normalised ``path``, without following symlinks."""
    current: Found | None = root_of(container)
    if path == ROOT:
        return current
    for name in path[1:].split("/"):
        if current is None or not current.is_dir:
            return None
        current = lookup_child(container, current, name)
    return current


def child_names_in(layers: tuple[Layer, ...], directory: Found) -> frozenset[str]:
    """Every name stored in any copy of ``directory``, hidden ones included."""
    names: set[str] = set()
    for index, where in directory.stack:
        names.update(layers[index].names_in(where))
    return frozenset(names)


def child_names(container: Container, directory: Found) -> frozenset[str]:
    """Every name stored in any copy of ``directory``, hidden ones included."""
    return child_names_in(container.top_down, directory)


def visible_children(container: Container, directory: Found) -> dict[str, Found]:
    """The objects the merged view shows inside ``directory`` [READDIR-1]."""
    shown: dict[str, Found] = {}
    for name in sorted(child_names(container, directory)):
        found = lookup_child(container, directory, name)
        if found is not None:
            shown[name] = found
    return shown


def listed_names(container: Container, directory: Found) -> list[str]:
    """What ``readdir`` returns for ``directory``, sorted.

    A merged directory lists its visible entries [READDIR-1]. A directory
    that lives in one layer only is read straight from that layer, so a
    whiteout stored there is listed although lookup says it is absent
    [READDIR-2] (see docs/rationale/readdir-lists-whiteouts.md).
    """
    if directory.merged:
        return sorted(visible_children(container, directory))
    index, where = directory.stack[0]
    return sorted(container.layer(index).names_in(where))


def is_empty_dir(container: Container, directory: Found) -> bool:
    """True if the merged view shows nothing inside ``directory`` [RMDIR-2]."""
    return not any(lookup_child(container, directory, name) is not None for name in child_names(container, directory))
