"""The store: images and containers sharing layers, and what Docker reports of them.

A store holds layers keyed by ChainID, each stored once however many images
and containers stand on it [STORE-1]; images, each a list of DiffIDs and a
history whose rows either made a layer or only changed metadata
(``empty_layer``) [STORE-2]; and containers, each an image and its own
writable layer (the filesystem-level model of chapters 1 to 9) [STORE-3].
Reference counts are not kept: they are derived from the images and
containers, so they cannot drift.

The figures are Docker's (research notes, section 2.3) [STORE-4]:

- a layer's own size (``DiffSize``) is SIZE-1 over what the layer holds;
- an image's size is the sum of its chain's own sizes;
- a container's SIZE is its writable layer's size, its virtual size that
  plus its image's size (SIZE-2, SIZE-3);
- ``docker history`` gives each row that made a layer that layer's own size,
  and 0 to the others, newest first;
- ``docker system df`` counts a layer as shared when more than one image's
  chain holds it.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import cast

from pyrsistent import pmap
from pyrsistent.typing import PMap

from cowspec.errors import SpecError
from cowspec.fs.build import EntryType, LayerEntry, build_layer
from cowspec.fs.entries import Dir, Name
from cowspec.fs.layer import Layer, empty_layer, link, new_name, put
from cowspec.fs.paths import ROOT, fold
from cowspec.fs.resolve import resolve_final
from cowspec.fs.sizes import layer_size
from cowspec.fs.stack import Container, Found, inode_of, lookup, new_container, visible_children
from cowspec.oci.identity import chain_ids, digest
from cowspec.oci.layer_tar import LayerTar


@dataclass(frozen=True, slots=True)
class StoredLayer:
    """One layer of the store: its identity, its parent's, its content."""

    chain_id: str
    diff_id: str
    parent: str | None
    content: Layer

    @property
    def size(self) -> int:
        """``DiffSize``: the layer's own apparent bytes [SIZE-1]."""
        return layer_size(self.content)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """A row of an image's history; ``empty_layer`` rows made no layer [STORE-2]."""

    created_by: str
    empty_layer: bool = False


@dataclass(frozen=True, slots=True)
class Image:
    """An image: its layers by DiffID, bottom first, and its history.

    Docker names an image by the digest of its config, so two images with
    the same layers and history are one image under two tags [STORE-7];
    ``unique`` stands for what else a config holds (a commit's creation
    time, say) that makes otherwise equal images distinct.
    """

    diff_ids: tuple[str, ...]
    history: tuple[HistoryRow, ...]
    unique: str = ""
    parent: str | None = None
    """The image it was made from (a commit's or a build's), by ID [STORE-10]."""

    @property
    def id(self) -> str:
        """The image's identity: a digest of what its config holds."""
        rows = [[row.created_by, row.empty_layer] for row in self.history]
        return digest(json.dumps([list(self.diff_ids), rows, self.unique]).encode())

    @property
    def chain(self) -> tuple[str, ...]:
        """The ChainID of each prefix of the image's layers [IDENTITY-2]."""
        return tuple(chain_ids(list(self.diff_ids)))


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    """A container: the ID of the image it was made from, and its filesystem."""

    name: str
    image: str
    filesystem: Container
    mounts: tuple[tuple[str, str], ...] = ()
    """(path, volume) pairs: what is under ``path`` lives in the volume [STORE-9]."""


NO_LAYERS: PMap[str, StoredLayer] = pmap()
NO_IMAGES: PMap[str, Image] = pmap()
NO_TAGS: PMap[str, str] = pmap()
NO_CONTAINERS: PMap[str, ContainerRecord] = pmap()
NO_VOLUMES: PMap[str, Container] = pmap()


@dataclass(frozen=True, slots=True)
class Store:
    """Layers by ChainID, images by ID, tags to image IDs, containers by name."""

    layers: PMap[str, StoredLayer] = NO_LAYERS
    images: PMap[str, Image] = NO_IMAGES
    tags: PMap[str, str] = NO_TAGS
    containers: PMap[str, ContainerRecord] = NO_CONTAINERS
    volumes: PMap[str, Container] = NO_VOLUMES
    """Each named volume's files, as the writable layer of a container over nothing."""

    def image(self, name: str) -> Image:
        """The image a tag names; an unknown tag is refused."""
        found = self.tags.get(name)
        if found is None:
            raise SpecError(f"no image {name!r}")
        return self.images[found]


def load(store: Store, name: str, image: Image, contents: Iterable[Layer]) -> Store:
    """``store`` with ``image`` tagged ``name`` and the layers it needs [STORE-1][STORE-7].

    Known ChainIDs are reused; an image already stored under another tag
    only gains this tag.
    """
    contents = tuple(contents)
    if len(contents) != len(image.diff_ids):
        raise SpecError(f"image {name}: {len(image.diff_ids)} DiffIDs but {len(contents)} layers")
    if sum(not row.empty_layer for row in image.history) != len(image.diff_ids):
        raise SpecError(f"image {name}: history rows that made a layer do not match its layers [STORE-2]")
    layers = store.layers
    parent: str | None = None
    for chain, diff, content in zip(image.chain, image.diff_ids, contents, strict=True):
        if chain not in layers:
            layers = layers.set(chain, StoredLayer(chain, diff, parent, content))
        parent = chain
    images = store.images if image.id in store.images else store.images.set(image.id, image)
    return replace(store, layers=layers, images=images, tags=store.tags.set(name, image.id))


def create_volume(store: Store, name: str) -> Store:
    """``docker volume create``: an empty volume [STORE-9]."""
    if name in store.volumes:
        raise SpecError(f"a volume {name!r} exists already")
    return replace(store, volumes=store.volumes.set(name, new_container(())))


def ensure_volumes(store: Store, names: Iterable[str]) -> Store:
    """``store`` with an empty volume for each name it lacks [STORE-9]."""
    volumes = store.volumes
    for name in names:
        if name not in volumes:
            volumes = volumes.set(name, new_container(()))
    return replace(store, volumes=volumes)


def remove_volume(store: Store, name: str) -> Store:
    """``docker volume rm``: refused while a container mounts it [STORE-9]."""
    if name not in store.volumes:
        raise SpecError(f"no volume {name!r}")
    if any(volume == name for record in store.containers.values() for _, volume in record.mounts):
        raise SpecError(f"volume {name!r} is in use")
    return replace(store, volumes=store.volumes.discard(name))


def create(store: Store, name: str, image_name: str, mounts: tuple[tuple[str, str], ...] = ()) -> Store:
    """``docker create``: only a writable layer is made, and the volumes are mounted [STORE-3][STORE-9].

    A volume that does not exist is made. An empty volume mounted where the
    image has a directory is first filled with that directory's contents.
    """
    image = store.image(image_name)
    if name in store.containers:
        raise SpecError(f"a container {name!r} exists already")
    lowers = tuple(store.layers[chain].content for chain in image.chain)
    filesystem = new_container(lowers)
    volumes = store.volumes
    for path, _ in mounts:
        # A volume goes on a directory, or where nothing is yet [STORE-9].
        target = resolve_final(filesystem, path, follow=True)
        if target == "ENOTDIR" or target == "ELOOP" or (not isinstance(target, str) and not target.is_dir):
            raise SpecError(f"cannot mount a volume over {path!r}: not a directory in the image")
    for path, volume in mounts:
        files = volumes.get(volume) or new_container(())
        if not files.upper.names_in(ROOT):
            found = lookup(filesystem, path)
            if found is not None and found.is_dir:
                files = replace(files, upper=copied_tree(filesystem, found))
        volumes = volumes.set(volume, files)
    record = ContainerRecord(name, image.id, filesystem, mounts)
    return replace(store, containers=store.containers.set(name, record), volumes=volumes)


def copied_tree(filesystem: Container, directory: Found) -> Layer:
    """The visible tree below ``directory`` as a layer rooted there (a volume's first filling)."""
    assert isinstance(directory.node, Dir)
    layer = empty_layer(replace(directory.node, opaque=False))
    copies: dict[tuple[int, int], int] = {}  # hardlinks stay hardlinks, as the copy keeps them
    pending = [directory]
    while pending:
        current = pending.pop()
        for child in sorted(visible_children(filesystem, current).values(), key=lambda each: each.path):
            inside = "/" + child.path[len(directory.path) :].lstrip("/")
            if isinstance(child.node, Dir):
                layer = put(layer, inside, replace(child.node, opaque=False))
                pending.append(child)
                continue
            key = (child.layer, child.node.ino)
            if key in copies:
                layer = link(layer, inside, copies[key])
                continue
            inode = inode_of(filesystem, child)
            layer = new_name(layer, inside, replace(inode, nlink=1, touched=False, origin=None))
            name = layer.get(inside)
            assert isinstance(name, Name)
            copies[key] = name.ino
    return layer


def route(record: ContainerRecord, path: str) -> tuple[str | None, str]:
    """Where a path of the container lives: (volume, path inside it), or (None, path) [STORE-9].

    Paths are taken lexically (``.``, ``..`` and repeated slashes folded);
    symlinks that lead into or out of a volume are outside the model.
    """
    clean = fold(path)
    for mount, volume in sorted(record.mounts, key=lambda each: -len(each[0])):
        if clean == mount or clean.startswith(mount + "/"):
            return volume, clean[len(mount) :] or ROOT
    return None, path


def with_filesystem(store: Store, name: str, filesystem: Container) -> Store:
    """``store`` with container ``name``'s filesystem after some ops."""
    record = store.containers[name]
    return replace(store, containers=store.containers.set(name, replace(record, filesystem=filesystem)))


def remove_container(store: Store, name: str) -> Store:
    """``docker rm``: the writable layer goes; the image stays [STORE-3]."""
    return replace(store, containers=store.containers.discard(name))


def held_chains(store: Store) -> frozenset[str]:
    """Every ChainID some image still stands on [STORE-1]."""
    held: set[str] = set()
    for image in store.images.values():
        held.update(image.chain)
    return frozenset(held)


def children(store: Store, image_id: str) -> list[str]:
    """The images made from ``image_id`` [STORE-10]."""
    return [image.id for image in store.images.values() if image.parent == image_id]


def untagged(store: Store, image_id: str) -> bool:
    """True if no tag names ``image_id``."""
    return image_id not in store.tags.values()


def remove_image(store: Store, name: str) -> Store:
    """``docker rmi NAME`` [STORE-1][STORE-7][STORE-10].

    With other tags on the image, or images made from it, only the tag goes.
    Otherwise the image goes too (refused while a container uses it), then
    each parent that is left untagged, unused and childless; the layers no
    image holds any more are freed.
    """
    image_id = store.image(name).id
    tags = store.tags.discard(name)
    if image_id in tags.values():
        return replace(store, tags=tags)
    if any(record.image == image_id for record in store.containers.values()):
        raise SpecError(f"image {name!r} is used by a container")
    if children(store, image_id):
        # Images were made from it: the tag goes, the image stays, untagged.
        return replace(store, tags=tags)
    images = store.images
    doomed: str | None = image_id
    while doomed is not None:
        parent = images[doomed].parent
        images = images.discard(doomed)
        later = replace(store, images=images, tags=tags)
        if (
            parent is None
            or parent not in images
            or not untagged(later, parent)
            or children(later, parent)
            or any(record.image == parent for record in store.containers.values())
        ):
            break
        doomed = parent
    kept = held_chains(replace(store, images=images))
    layers = pmap({chain: layer for chain, layer in store.layers.items() if chain in kept})
    return replace(store, images=images, tags=tags, layers=layers)


def image_size(store: Store, image_id: str) -> int:
    """An image's size: its chain's own sizes added up [STORE-4]."""
    return sum(store.layers[chain].size for chain in store.images[image_id].chain)


def volume_size(store: Store, name: str) -> int:
    """A volume's size: its files' apparent bytes, each inode once [STORE-9]."""
    return layer_size(store.volumes[name].upper)


def container_size(store: Store, name: str) -> tuple[int, int]:
    """A container's SIZE and virtual size [STORE-4][SIZE-2][SIZE-3]."""
    record = store.containers[name]
    size = layer_size(record.filesystem.upper)
    return size, size + image_size(store, record.image)


def history(store: Store, image_id: str) -> list[tuple[str, int]]:
    """``docker history``: (created_by, size) per row, newest first [STORE-4]."""
    image = store.images[image_id]
    chain = iter(image.chain)
    rows = [(row.created_by, 0 if row.empty_layer else store.layers[next(chain)].size) for row in image.history]
    return list(reversed(rows))


@dataclass(frozen=True, slots=True)
class ImageUsage:
    """A row of ``docker system df -v``'s images: one per image, with its tags."""

    id: str
    tags: tuple[str, ...]
    size: int
    shared: int
    containers: int

    @property
    def unique(self) -> int:
        return self.size - self.shared


def system_df(store: Store) -> tuple[list[ImageUsage], int, int]:
    """Per image usage, the images' total and what is reclaimable [STORE-4].

    A layer is shared when the chains of more than one listed image hold
    it. The total counts every stored layer once. Reclaimable is the figure
    Docker's CLI prints (``diskUsageImagesContext.Reclaimable``): the total
    less the unique size of each listed image that a container uses. It is
    not "what ``docker image prune -a`` would free": a layer that two used
    images share counts as reclaimable.
    """
    # Untagged images that other images were made from are not listed, and
    # their layers are not counted as theirs [STORE-10].
    tagged = set(store.tags.values())
    parents = {image.parent for image in store.images.values()}
    listed = [image for image in store.images.values() if image.id in tagged or image.id not in parents]
    references: dict[str, int] = {}
    for image in listed:
        for chain in image.chain:
            references[chain] = references.get(chain, 0) + 1
    usage = []
    for image in listed:
        shared = sum(store.layers[chain].size for chain in image.chain if references[chain] > 1)
        users = sum(record.image == image.id for record in store.containers.values())
        tags = tuple(sorted(tag for tag, target in store.tags.items() if target == image.id))
        usage.append(ImageUsage(image.id, tags, image_size(store, image.id), shared, users))
    total = sum(layer.size for layer in store.layers.values())
    # [STORE-4] As docker/cli computes it from /system/df: LayersSize minus
    # Size - SharedSize of every image with Containers > 0. (The CLI skips an
    # image whose Size or SharedSize is -1, unknown; the model always knows.)
    in_use = sum(each.unique for each in usage if each.containers > 0)
    reclaimable = total - in_use
    return sorted(usage, key=lambda each: each.tags), total, reclaimable


def layer_of(tar: LayerTar) -> Layer:
    """The filesystem-level layer a layer tar describes [STORE-1].

    Whiteouts and opaque directories become the model's; devices and FIFOs
    are outside the filesystem-level model and refused.
    """
    entries: list[LayerEntry] = []
    listed = {entry.path for entry in tar.entries}
    for entry in tar.entries:
        if entry.path == ROOT:
            continue
        if entry.kind not in ("file", "dir", "symlink", "hardlink"):
            raise SpecError(f"entry {entry.path!r}: a {entry.kind} is outside the filesystem-level model")
        data = entry.data if entry.kind == "file" else b""
        kind = cast(EntryType, entry.kind)
        mode = entry.mode if entry.kind in ("file", "dir") else 0
        # A directory whited out in its own layer hides everything below: opaque.
        opaque = entry.path in tar.opaque or (entry.kind == "dir" and entry.path in tar.whiteouts)
        entries.append(LayerEntry(entry.path, kind, mode, entry.uid, entry.gid, data, entry.link, opaque))
    entries += [LayerEntry(path, "whiteout", 0) for path in sorted(tar.whiteouts) if path not in listed]
    entries += [LayerEntry(path, "dir", 0o755, opaque=True) for path in sorted(tar.opaque) if path not in listed]
    return build_layer(tuple(entries), "layer")
