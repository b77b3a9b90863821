"""Applying layer tars to one another: the root filesystem of an image.

An image's filesystem is what applying its layers, bottom first, to an
empty directory gives [APPLY-1]. Applying one layer:

1. its opaque directories lose every child the layers below gave them, and
   its whiteouts delete their paths with everything below them; markers act
   on the layers below only, so an entry of the same layer survives a
   whiteout of its own path [APPLY-2];
2. its entries are written parents first: a directory over a directory
   takes the new attributes and keeps its children; anything else replaces
   what was there, subtree included [APPLY-3];
3. a parent the layer does not list is implied [APPLY-4].

Where the image-spec leaves a choice, ``ApplyOptions`` names the positions
and their alternatives [APPLY-5]; the defaults are cowspec's positions.
"""

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

from cowspec.fs.paths import ROOT, ancestors, fold, join, parent_of
from cowspec.oci.layer_tar import PATH_MAX, LayerTar, TarEntry, canonical_key

ImpliedParents = Literal["keep", "default"]
UnderSymlink = Literal["replace", "follow"]


@dataclass(frozen=True, slots=True)
class ApplyOptions:
    """The choices the image-spec leaves open [APPLY-5].

    - ``implied_parents``: a parent a layer does not list keeps the
      attributes it had below (``"keep"``, as Docker's and containerd's
      naive apply and umoci do), or takes 0o755 root:root, as it does in
      Docker's overlay2 diff directories (``"default"``).
    - ``under_symlink``: an entry below a path that is a symlink in a lower
      layer replaces the symlink with a directory (``"replace"``, as a layer
      applied on overlayfs shows it), or is written through the symlink,
      resolved inside the root (``"follow"``, a naive extractor).
    """

    implied_parents: ImpliedParents = "keep"
    under_symlink: UnderSymlink = "replace"


DEFAULTS = ApplyOptions()
IMPLIED = TarEntry(ROOT, "dir", 0o755)
NO_INODES: Mapping[str, int] = MappingProxyType({})
NO_NAMES: Mapping[int, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class LayerStats:
    """What one layer did to the layers below it [APPLY-6].

    ``adds`` and ``changes`` count the layer's entries whose path did not, or
    did, exist below; ``deletes`` counts the paths below that its whiteouts
    and opaque directories removed, a removed subtree once at its root.
    ``size`` is the layer's own apparent bytes as Docker counts them (files
    and symlink targets, each hardlinked inode once) [SIZE-1]; ``kept`` is
    how many of them the final root filesystem still shows [APPLY-7].
    """

    adds: int = 0
    changes: int = 0
    deletes: int = 0
    size: int = 0
    kept: int = 0

    @property
    def wasted(self) -> int:
        """Bytes of this layer that the layers above shadow or delete [APPLY-7]."""
        return self.size - self.kept


@dataclass(frozen=True, slots=True)
class Rootfs:
    """A root filesystem: every entry below the root, in canonical order."""

    entries: tuple[TarEntry, ...]
    root: TarEntry = IMPLIED
    inode: Mapping[str, int] = field(default_factory=lambda: NO_INODES)
    """Each non-directory's inode number: names that share one are hardlinks."""
    names: Mapping[int, int] = field(default_factory=lambda: NO_NAMES)
    """How many names each inode has."""

    def nlink(self, path: str) -> int:
        """The number of names of the non-directory at ``path``."""
        return self.names[self.inode[path]]


class _Tree:
    """The filesystem while ``flatten`` applies layers: a private builder.

    It is mutated only by its own methods, and only inside ``flatten``,
    which returns an immutable ``Rootfs``. ``group`` numbers the inode each
    non-directory path names, so that hardlinks are counted at the end.
    """

    def __init__(self) -> None:
        self.entries: dict[str, TarEntry] = {ROOT: IMPLIED}
        self.children: dict[str, set[str]] = {}
        self.group: dict[str, int] = {}
        self.next_group = 1
        self.layer_index = 0
        self.layer_size = 0
        """Apparent bytes of the inodes the layer being applied has made."""
        self.group_origin: dict[int, tuple[int, int]] = {}

    def put(self, entry: TarEntry, group: int | None = None) -> None:
        """Place ``entry``; a non-directory names ``group``, or a new inode of this layer."""
        path = entry.path
        self.entries[path] = entry
        if path != ROOT:
            parent = path.rpartition("/")[0] or ROOT
            siblings = self.children.get(parent)
            if siblings is None:
                self.children[parent] = {path}
            else:
                siblings.add(path)
        kind = entry.kind
        if kind == "dir":
            return
        if group is None:
            group = self.next_group
            self.next_group = group + 1
            # Apparent bytes of the new inode: a file's length, a symlink's target [SIZE-1]
            size = entry.size if kind == "file" else len(entry.link.encode()) if kind == "symlink" else 0
            self.group_origin[group] = (self.layer_index, size)
            self.layer_size += size
        self.group[path] = group

    def remove(self, path: str) -> None:
        if path not in self.entries or path == ROOT:
            return
        pending = [path]
        while pending:
            current = pending.pop()
            self.entries.pop(current, None)
            self.group.pop(current, None)
            pending.extend(self.children.pop(current, ()))
        self.children.get(parent_of(path), set()).discard(path)

    def empty(self, directory: str) -> None:
        for child in list(self.children.get(directory, ())):
            self.remove(child)

    def resolve_inside(self, path: str, depth: int = 0) -> str:
        """``path`` with symlinks among its parents followed inside the root."""
        if depth > 40:
            return path
        current = ROOT
        parts = path[1:].split("/")
        for index, part in enumerate(parts[:-1]):
            candidate = join(current, part)
            entry = self.entries.get(candidate)
            if entry is not None and entry.kind == "symlink":
                base = "" if entry.link.startswith("/") else current
                resolved = fold(base + "/" + entry.link)
                rest = "/".join(parts[index + 1 :])
                followed = fold(resolved + "/" + rest)
                if len(followed) > PATH_MAX:
                    # No path longer than PATH_MAX is made, so no parent chain beyond it [TAR-5]:
                    # such a resolution is given up, as one of too many links is.
                    return path
                return self.resolve_inside(followed, depth + 1)
            current = candidate
        return path

    def imply(self, path: str, options: ApplyOptions, listed: set[str]) -> None:
        """Make ``path`` a directory of this layer if the layer does not list it [APPLY-4]."""
        if path == ROOT or path in listed:
            return
        existing = self.entries.get(path)
        if existing is None or existing.kind != "dir":
            # A missing parent, or a non-directory in the way
            self.remove(path)
            self.put(IMPLIED._replace(path=path))
        elif options.implied_parents == "default":
            self.put(IMPLIED._replace(path=path))

    def apply(self, layer: LayerTar, options: ApplyOptions) -> LayerStats:
        """Apply one layer [APPLY-2][APPLY-3][APPLY-4]; what it did."""
        deletes = 0
        whiteouts, opaque = set(layer.whiteouts), set(layer.opaque)
        if options.under_symlink == "follow":
            # A naive extractor reaches markers through symlinks too [APPLY-5].
            whiteouts = {self.resolve_inside(path) for path in whiteouts}
            opaque = {parent_of(self.resolve_inside(join(path, "_"))) for path in opaque}
        # MARKERS: against the layers below only [APPLY-2]
        for directory in sorted(opaque, key=canonical_key):
            deletes += len(self.children.get(directory, ()))
            self.empty(directory)
        for path in sorted(whiteouts, key=canonical_key):
            deletes += path in self.entries
            self.remove(path)
        existed = {entry.path for entry in layer.entries if entry.path in self.entries}
        listed = {entry.path for entry in layer.entries}
        # A marker lives inside its directory, so the layer holds that
        # directory and every one above it [APPLY-4].
        holders = {parent_of(path) for path in whiteouts} | opaque
        for holder in sorted(holders, key=canonical_key):
            for each in (*ancestors(holder), holder):
                self.imply(each, options, listed)
        # ENTRIES: parents first [APPLY-3]
        placed_at: dict[str, str] = {}
        # Parents already made directories by this layer: checking them
        # again changes nothing until something in the tree is replaced.
        checked: set[str] = set()
        # Hardlinks last, so that their targets are in place whatever the order.
        ordered = [each for each in layer.entries if each.kind != "hardlink"]
        ordered += [each for each in layer.entries if each.kind == "hardlink"]
        follow = options.under_symlink == "follow"
        self.layer_size = 0
        for entry in ordered:
            path = entry.path
            if path == ROOT:
                self.entries[ROOT] = entry
                continue
            if follow:
                path = self.resolve_inside(path)
            if (path.rpartition("/")[0] or ROOT) not in checked:
                above = ancestors(path)
                for ancestor in above:
                    self.imply(ancestor, options, listed)
                checked.update(above)
            existing = self.entries.get(path)
            placed = entry if path == entry.path else entry._replace(path=path)
            if existing is not None:
                if entry.kind == "dir" and existing.kind == "dir":
                    self.put(placed)
                    continue
                self.remove(path)
                checked.clear()
            if entry.kind == "hardlink":
                # [APPLY-3] a hardlink names the inode of its target in this layer
                origin_path = placed_at[entry.link]
                origin = self.entries[origin_path]
                self.put(origin._replace(path=path), self.group[origin_path])
            else:
                self.put(placed)
            placed_at[entry.path] = path
        changed = len(existed - {ROOT})
        added = len(listed - {ROOT}) - changed
        return LayerStats(adds=added, changes=changed, deletes=deletes, size=self.layer_size)


def flatten(layers: Iterable[LayerTar], options: ApplyOptions = DEFAULTS) -> Rootfs:
    """The root filesystem of a stack of layers, bottom first [APPLY-1]."""
    return flatten_with_stats(layers, options)[0]


def flatten_with_stats(
    layers: Iterable[LayerTar], options: ApplyOptions = DEFAULTS
) -> tuple[Rootfs, tuple[LayerStats, ...]]:
    """The root filesystem, and what each layer did on its way [APPLY-1][APPLY-6]."""
    tree = _Tree()
    done: list[LayerStats] = []
    for index, layer in enumerate(layers):
        tree.layer_index = index
        done.append(tree.apply(layer, options))
    kept = [0] * len(done)
    for group in set(tree.group.values()):
        index, size = tree.group_origin[group]
        kept[index] += size
    stats = tuple(replace(each, kept=kept[index]) for index, each in enumerate(done))
    return _rootfs(tree), stats


def _rootfs(tree: _Tree) -> Rootfs:
    """The finished tree as a value: entries in canonical order, each inode's names counted."""
    names = Counter(tree.group.values())
    order = sorted(tree.entries, key=canonical_key)
    entries = tuple(tree.entries[path] for path in order if path != ROOT)
    return Rootfs(entries, tree.entries[ROOT], MappingProxyType(tree.group), MappingProxyType(dict(names)))


def rootfs_layer(rootfs: Rootfs) -> LayerTar:
    """The root filesystem as one layer (no markers): what ``flatten --tar`` writes [APPLY-1].

    Of the names of one inode, the first in path order is the file and the
    others are hardlinks to it, with its mode, owner and mtime, as GNU tar
    writes them (the attributes are the inode's, whatever its name).
    """
    inode = rootfs.inode
    first: dict[int, TarEntry] = {}
    entries: list[TarEntry] = []
    for entry in rootfs.entries:
        if entry.kind == "dir":
            entries.append(entry)
            continue
        number = inode[entry.path]
        target = first.get(number)
        if target is not None:
            entries.append(
                TarEntry(entry.path, "hardlink", target.mode, target.uid, target.gid, target.mtime, link=target.path)
            )
        else:
            first[number] = entry
            entries.append(entry)
    return LayerTar(tuple(entries))


def rootfs_entries(rootfs: Rootfs) -> list[dict[str, object]]:
    """The root filesystem in the shape of a trace result's ``merged`` [APPLY-1]."""
    shown: list[dict[str, object]] = []
    for entry in rootfs.entries:
        fields: dict[str, object] = {"path": entry.path, "type": entry.kind, "uid": entry.uid, "gid": entry.gid}
        if entry.kind == "symlink":
            fields["target"] = entry.link
        else:
            fields["mode"] = entry.mode
        if entry.kind == "file":
            fields.update(size=entry.size, sha256=entry.sha256, nlink=rootfs.nlink(entry.path))
        if entry.kind in ("char", "block"):
            fields["device"] = list(entry.device)
        shown.append(fields)
    return shown


# -- path by path: what ``layers --files`` and ``inspect`` show -----------------


@dataclass(frozen=True, slots=True)
class Copy:
    """One inode a layer wrote, and its fate [APPLY-8].

    ``path`` is where the layer lists it (a hardlink names the same inode
    and makes no copy); ``size`` its apparent bytes (SIZE-1); ``lost_in``
    the layer that took its last name away (an entry over it, a whiteout,
    an opaque directory, an implied parent), or None when the final root
    filesystem still shows it.
    """

    path: str
    layer: int
    size: int
    lost_in: int | None = None


@dataclass(frozen=True, slots=True)
class LayerTrace:
    """What one layer did, path by path [APPLY-8].

    ``changed`` holds the layer's entries whose path existed below (the
    others are added); ``deleted`` the entries below that its markers
    removed, a removed subtree once at its root, in the order removed;
    ``copies`` the inodes the layer wrote.
    """

    changed: frozenset[str]
    deleted: tuple[TarEntry, ...]
    copies: tuple[Copy, ...]


def _marked(tree: _Tree, layer: LayerTar, options: ApplyOptions) -> tuple[frozenset[str], tuple[TarEntry, ...]]:
    """What ``_Tree.apply`` will find of ``layer``'s markers, before it runs [APPLY-2][APPLY-8].

    The paths its entries find after its markers acted, and the entries
    below its markers remove, in the order ``_Tree.apply`` removes them.
    """
    whiteouts, opaque = set(layer.whiteouts), set(layer.opaque)
    if options.under_symlink == "follow":
        whiteouts = {tree.resolve_inside(path) for path in whiteouts}
        opaque = {parent_of(tree.resolve_inside(join(path, "_"))) for path in opaque}
    gone: set[str] = set()

    def survives(path: str) -> bool:
        return not gone or (path not in gone and not any(each in gone for each in ancestors(path)))

    removed: list[str] = []
    for directory in sorted(opaque, key=canonical_key):
        if survives(directory):
            children = sorted(tree.children.get(directory, ()), key=canonical_key)
            removed.extend(children)
            gone.update(children)
    for path in sorted(whiteouts, key=canonical_key):
        if path != ROOT and path in tree.entries and survives(path):
            removed.append(path)
            gone.add(path)
    changed = frozenset(
        entry.path
        for entry in layer.entries
        if entry.path != ROOT and entry.path in tree.entries and survives(entry.path)
    )
    return changed, tuple(tree.entries[path] for path in removed)


def flatten_traced(
    layers: Iterable[LayerTar], options: ApplyOptions = DEFAULTS
) -> tuple[Rootfs, tuple[LayerStats, ...], tuple[LayerTrace, ...]]:
    """``flatten_with_stats``, and what each layer did path by path [APPLY-6][APPLY-7][APPLY-8].

    Slower than ``flatten``: it follows every inode to the layer that loses
    it, for ``inspect`` and ``layers --files``.
    """
    tree = _Tree()
    done: list[LayerStats] = []
    marked: list[tuple[frozenset[str], tuple[TarEntry, ...]]] = []
    origin: dict[int, str] = {}
    lost_in: dict[int, int] = {}
    alive: set[int] = set()
    for index, layer in enumerate(layers):
        tree.layer_index = index
        first = tree.next_group
        marked.append(_marked(tree, layer, options))
        done.append(tree.apply(layer, options))
        # ``_Tree.put`` numbers a layer's new inodes in the order it places
        # them: its files, symlinks, devices and FIFOs, hardlinks after.
        made = [entry.path for entry in layer.entries if entry.kind not in ("dir", "hardlink")]
        assert tree.next_group == first + len(made), "every non-directory entry makes one inode"
        origin.update(zip(range(first, tree.next_group), made, strict=True))
        now = set(tree.group.values())
        for group in (alive | set(range(first, tree.next_group))) - now:
            lost_in[group] = index
        alive = now
    copies: list[list[Copy]] = [[] for _ in done]
    for group, path in origin.items():
        index, size = tree.group_origin[group]
        copies[index].append(Copy(path, index, size, lost_in.get(group)))
    traces = tuple(
        LayerTrace(changed, deleted, tuple(made)) for (changed, deleted), made in zip(marked, copies, strict=True)
    )
    kept = [sum(each.size for each in made if each.lost_in is None) for made in copies]
    stats = tuple(replace(each, kept=kept[index]) for index, each in enumerate(done))
    return _rootfs(tree), stats, traces
