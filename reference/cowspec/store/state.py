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

What the engine refuses (no such image, an image in use, ...) is an answer
of the model, raised as ``Refused`` with one kind of a closed set
[STORE-12]; ``SpecError`` stays for input the spec rejects.
"""

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal, TypeVar, cast

from immutables import Map

from cowspec.errors import Errno, ModelError, SpecError
from cowspec.fs.build import EntryType, LayerEntry, build_layer
from cowspec.fs.calls import Link, Ok, Op, Outcome, Rename, Stat, StatValue, Truncate
from cowspec.fs.entries import Dir, FileInode, Name, SymlinkInode, Whiteout
from cowspec.fs.features import DOCKER_OVERLAY2, Features
from cowspec.fs.layer import Layer, empty_layer, link, new_name, put, set_inode
from cowspec.fs.operations import Transition
from cowspec.fs.operations import step as fs_step
from cowspec.fs.paths import ROOT, ancestors, fold, is_inside, parent_of
from cowspec.fs.resolve import resolve, resolve_final
from cowspec.fs.sizes import layer_size
from cowspec.fs.stack import (
    NO_INDEX,
    Container,
    Found,
    inode_of,
    lookup,
    new_container,
    root_of,
    visible_children,
)
from cowspec.oci.identity import chain_ids, digest
from cowspec.oci.layer_tar import LayerTar
from cowspec.store.disk import INIT_ENTRIES, DiskUsage, disk_usage, layer_allocated
from cowspec.store.drivers import OVERLAY2, StoreConfig
from cowspec.store.naive import (
    NaiveChange,
    changes_size,
    naive_changes,
    plain_container,
    unpacked_size,
)

RefusalKind = Literal[
    "no-such-image",
    "no-such-container",
    "no-such-volume",
    "invalid-name",
    "name-in-use",
    "image-in-use",
    "volume-in-use",
    "volume-on-non-directory",
    "volume-on-symlink-loop",
]
"""Why the engine refuses a step, as a closed set of kinds [STORE-12]."""

REFUSAL_KINDS: frozenset[str] = frozenset(RefusalKind.__args__)  # type: ignore[attr-defined]


class Refused(Exception):
    """The engine refuses a step: the model's answer, as an errno is a call's [STORE-12].

    ``kind`` is what is compared with a real engine; ``reason`` is for people.
    """

    def __init__(self, kind: RefusalKind, reason: str) -> None:
        super().__init__(reason)
        self.kind: RefusalKind = kind
        self.reason = reason


CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
"""The names Docker takes for a container (its ``validContainerNamePattern``) [STORE-12]."""


@dataclass(frozen=True, slots=True)
class StoredLayer:
    """One layer of the store: its identity, its parent's, its content."""

    chain_id: str
    diff_id: str
    parent: str | None
    content: Layer
    unpacked: bool = False
    """Stored by vfs or btrfs, which count what unpacking its archive wrote [DRIVER-4]."""

    @property
    def size(self) -> int:
        """``DiffSize``: the layer's own apparent bytes [SIZE-1]; on vfs and btrfs, its regular
        files' bytes alone [DRIVER-4]."""
        return unpacked_size(self.content) if self.unpacked else layer_size(self.content)


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
    image_view: Container | None = None
    """On a naive-diff driver, the image's own tree, which the container is compared with [DRIVER-2]."""


K = TypeVar("K")
V = TypeVar("V")


def _without(mapping: Map[K, V], key: K) -> Map[K, V]:
    """``mapping`` without ``key``, whether it held it or not."""
    return mapping.delete(key) if key in mapping else mapping


NO_LAYERS: Map[str, StoredLayer] = Map()
NO_IMAGES: Map[str, Image] = Map()
NO_TAGS: Map[str, str] = Map()
NO_CONTAINERS: Map[str, ContainerRecord] = Map()
NO_VOLUMES: Map[str, Container] = Map()


@dataclass(frozen=True, slots=True)
class Store:
    """Layers by ChainID, images by ID, tags to image IDs, containers by name."""

    layers: Map[str, StoredLayer] = NO_LAYERS
    images: Map[str, Image] = NO_IMAGES
    tags: Map[str, str] = NO_TAGS
    containers: Map[str, ContainerRecord] = NO_CONTAINERS
    volumes: Map[str, Container] = NO_VOLUMES
    """Each named volume's files, as the writable layer of a container over nothing."""
    config: StoreConfig = OVERLAY2
    """The engine's storage driver and backing filesystem [DRIVER-1]."""
    stamps: tuple[int, ...] = ()
    """The second each archive with deletion markers is stamped with on a naive driver, in the order
    they are made; past its end each takes a second of its own [DRIVER-6]."""
    stamped: tuple[str, ...] = ()
    """What each stamped archive so far holds (its parent chain and its content), in order [DRIVER-6]."""

    def image(self, name: str) -> Image:
        """The image a tag names; an unknown tag is refused."""
        found = self.tags.get(name)
        if found is None:
            raise Refused("no-such-image", f"no image {name!r}")
        return self.images[found]

    def container(self, name: str) -> "ContainerRecord":
        """The container called ``name``; an unknown name is refused [STORE-12]."""
        found = self.containers.get(name)
        if found is None:
            raise Refused("no-such-container", f"no container {name!r}")
        return found


def new_store(config: StoreConfig = OVERLAY2, stamps: tuple[int, ...] = ()) -> Store:
    """An empty store on an engine with ``config``'s storage driver [DRIVER-1]; ``stamps`` fixes the
    clock of the naive drivers' deletion markers [DRIVER-6]."""
    return Store(config=config, stamps=stamps)


def stamp_second(store: Store, index: int) -> int:
    """The second the ``index``-th archive with deletion markers is stamped with [DRIVER-6]."""
    if index < len(store.stamps):
        return store.stamps[index]
    return (store.stamps[-1] + 1 if store.stamps else 0) + index - len(store.stamps)


def stamp(store: Store, key: str) -> tuple[Store, int]:
    """The second the next archive with deletion markers is stamped with, and the store that took it [DRIVER-6]."""
    second = stamp_second(store, len(store.stamped))
    return replace(store, stamped=(*store.stamped, key)), second


def next_stamp(store: Store, same_second: bool) -> Store:
    """``store`` whose next archive with deletion markers is stamped in the same second as the last
    one, or in a later one: how a state machine follows an engine's clock [DRIVER-6]."""
    index = len(store.stamped)
    made = tuple(stamp_second(store, each) for each in range(index))
    last = made[-1] if made else 0
    return replace(store, stamps=(*made, last if same_second or not made else last + 1))


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
            layers = layers.set(chain, StoredLayer(chain, diff, parent, content, store.config.plain))
        parent = chain
    images = store.images if image.id in store.images else store.images.set(image.id, image)
    return replace(store, layers=layers, images=images, tags=store.tags.set(name, image.id))


def create_volume(store: Store, name: str) -> Store:
    """``docker volume create``: an empty volume; a volume of that name is kept as it is [STORE-9]."""
    return ensure_volumes(store, [name])


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
        raise Refused("no-such-volume", f"no volume {name!r}")
    if any(volume == name for record in store.containers.values() for _, volume in record.mounts):
        raise Refused("volume-in-use", f"volume {name!r} is in use")
    return replace(store, volumes=_without(store.volumes, name))


def create(store: Store, name: str, image_name: str, mounts: tuple[tuple[str, str], ...] = ()) -> Store:
    """``docker create``: only a writable layer is made, and the volumes are mounted [STORE-3][STORE-9].

    A volume that does not exist is made. An empty volume mounted where the
    image has a directory is first filled with that directory's contents.
    """
    image = store.image(image_name)
    check_new_container(store, name)
    lowers = tuple(store.layers[chain].content for chain in image.chain)
    filesystem, image_view = driver_container(store.config, lowers)
    volumes = store.volumes
    for path, _ in mounts:
        # A volume goes on a directory, or where nothing is yet [STORE-9].
        target = resolve_final(filesystem, path, follow=True)
        if target == "ELOOP":
            raise Refused("volume-on-symlink-loop", f"cannot mount a volume at {path!r}: too many symlinks")
        if target == "ENOTDIR" or (not isinstance(target, str) and not target.is_dir):
            message = f"cannot mount a volume over {path!r}: not a directory in the image"
            raise Refused("volume-on-non-directory", message)
    for path, volume in mounts:
        files = volumes.get(volume) or new_container(())
        if not files.upper.names_in(ROOT):
            found = lookup(filesystem, path)
            if found is not None and found.is_dir:
                files = replace(files, upper=copied_tree(filesystem, found))
        volumes = volumes.set(volume, files)
    record = ContainerRecord(name, image.id, filesystem, mounts, image_view)
    return replace(store, containers=store.containers.set(name, record), volumes=volumes)


def driver_container(config: StoreConfig, lowers: tuple[Layer, ...]) -> tuple[Container, Container | None]:
    """A new container's filesystem under ``config``'s driver, and on a naive driver the image's own
    view it is compared with [DRIVER-3].

    overlay2 and fuse-overlayfs stack the image's layers under an empty
    writable layer (fuse-overlayfs's upper directory holds what the kernel's
    overlay's would); vfs and btrfs give a plain filesystem holding a full
    copy of the image, hardlinks kept.
    """
    if not config.naive:
        return new_container(lowers), None
    if config.plain:
        return plain_container(lowers, symlink_links=config.driver != "vfs"), new_container(lowers)
    return new_container(lowers), new_container(lowers)


def check_new_container(store: Store, name: str) -> None:
    """Refuse a container name Docker does not take, or one in use [STORE-12]."""
    if not CONTAINER_NAME.fullmatch(name):
        raise Refused("invalid-name", f"invalid container name {name!r}: [a-zA-Z0-9][a-zA-Z0-9_.-]+ only")
    if name in store.containers:
        raise Refused("name-in-use", f"a container {name!r} exists already")


def copied_tree(filesystem: Container, directory: Found) -> Layer:
    """The visible tree below ``directory`` as a layer rooted there (a volume's first filling)."""
    if not isinstance(directory.node, Dir):
        raise ModelError(f"{directory.path}: only a directory is copied into a volume")
    layer = empty_layer(replace(directory.node, opaque=False))
    copies: dict[tuple[int, int], int] = {}  # hardlinks between files stay hardlinks, as the copy keeps them
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
            inode = inode_of(filesystem, child)
            if key in copies and isinstance(inode, FileInode):
                # Only regular files stay linked; a symlink is made again per name [STORE-9].
                layer = link(layer, inside, copies[key])
                continue
            layer = new_name(layer, inside, replace(inode, nlink=1, touched=False, origin=None))
            name = layer.get(inside)
            if not isinstance(name, Name):
                raise ModelError(f"{inside}: a name just made is not in the layer")
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


PATH_FIELDS = ("path", "src", "dst")


def routed(record: ContainerRecord, op: Op) -> tuple[str | None, Op] | None:
    """Where ``op`` happens: (volume or None, the op with paths inside it); None if it spans two [STORE-9]."""
    places = {key: route(record, getattr(op, key)) for key in PATH_FIELDS if hasattr(op, key)}
    targets = {volume for volume, _ in places.values()}
    if len(targets) > 1:
        return None
    target = targets.pop()
    if target is None:
        return None, op
    return target, replace(op, **{key: inner for key, (_, inner) in places.items()})  # type: ignore[arg-type]


def run_op(store: Store, name: str, op: Op) -> tuple[Store, Outcome]:
    """``op`` in container ``name``: in its writable layer, or in the volume its path is in [STORE-9].

    A rename or link first meets the container's mounts [STORE-11].
    """
    record = store.container(name)
    if isinstance(op, Rename | Link):
        answer = at_mounts(store, record, op)
        if answer is not None:
            return store, answer
    where = routed(record, op)
    if where is None:
        raise ModelError(f"{op} spans two mounts but no mount rule answered it")
    volume, inner = where
    if volume is None:
        fuse = store.config.driver == "fuse-overlayfs"
        if fuse and any(fuse_name_too_long(record.filesystem, path) for path in op_paths(op)):
            return store, "ENAMETOOLONG"
        transition = driver_step(store.config, record.filesystem, op)
        outcome = transition.outcome
        if fuse and isinstance(op, Stat):
            outcome = fuse_stat(transition.container, op.path, outcome)
        return with_filesystem(store, name, transition.container), outcome
    transition = fs_step(store.volumes[volume], inner)
    return replace(store, volumes=store.volumes.set(volume, transition.container)), transition.outcome


FUSE_NAME_MAX = 251
"""The longest name fuse-overlayfs looks up: it probes ``.wh.NAME`` in every layer, and a longer name makes that
probe too long for the filesystem (255 bytes), so a name that is not there gives ENAMETOOLONG [DRIVER-3]."""


def op_paths(op: Op) -> tuple[str, ...]:
    """The paths ``op`` looks up (a symlink's target is not one)."""
    if isinstance(op, Rename | Link):
        return (op.src, op.dst)
    return (op.path,)


def fuse_name_too_long(filesystem: Container, path: str) -> bool:
    """True if fuse-overlayfs refuses to look ``path`` up: its first name that is not there, under a directory
    that is, is longer than ``FUSE_NAME_MAX`` bytes (and not over NAME_MAX, which every driver refuses) [DRIVER-3]."""
    current = ROOT
    for part in [each for each in fold(path).split("/") if each]:
        here = current.rstrip("/") + "/" + part
        found = lookup(filesystem, here)
        if found is None:
            return FUSE_NAME_MAX < len(part.encode()) <= 255
        if not found.is_dir:
            return False
        current = here
    return False


def fuse_stat(filesystem: Container, path: str, outcome: Outcome) -> Outcome:
    """What fuse-overlayfs's ``lstat`` says of a file: its link count is the number of names the merged tree
    shows of the same object, where a copy fuse-overlayfs made of an image file still counts as that file (it
    keeps the image inode's identity); a name a higher image layer covers is not counted [DRIVER-3]."""
    if not isinstance(outcome, Ok) or not isinstance(outcome.value, StatValue) or outcome.value.nlink is None:
        return outcome
    found = lookup(filesystem, fold(path))
    if found is None or not isinstance(found.node, Name):
        return outcome
    identity = _fuse_identity(filesystem, found)
    if filesystem.index and identity in filesystem.index:
        return outcome
    names = sum(1 for each in _visible_names(filesystem) if _fuse_identity(filesystem, each) == identity)
    return Ok(replace(outcome.value, nlink=max(names, 1)))


def _fuse_identity(filesystem: Container, found: Found) -> tuple[int, int]:
    """The object a visible non-directory is to fuse-overlayfs: (layer from the top, inode), a writable-layer
    copy of an image file standing for that file [DRIVER-3]."""
    if not isinstance(found.node, Name):
        raise ModelError(f"{found.path}: a directory has no inode of its own here")
    if found.layer == 0:
        inode = filesystem.upper.inode(found.node.ino)
        if isinstance(inode, FileInode) and inode.lower is not None:
            return inode.lower
    return (found.layer, found.node.ino)


def driver_step(config: StoreConfig, filesystem: Container, op: Op) -> Transition:
    """``op`` on a container's root filesystem, with what the driver's filesystem does to a file's times:
    btrfs leaves the modification time alone when ``truncate`` keeps the size (ext4, which holds vfs's
    copies here, moves it), so the naive walk finds no change there [DRIVER-2]."""
    transition = fs_step(filesystem, op)
    if config.driver != "btrfs" or not isinstance(op, Truncate) or not isinstance(transition.outcome, Ok):
        return transition
    before = lookup(filesystem, op.path)
    if before is None or not isinstance(before.node, Name) or before.layer != 0:
        return transition
    had = filesystem.upper.inode(before.node.ino)
    after = transition.container.upper.inodes.get(before.node.ino)
    if not isinstance(had, FileInode) or had.touched or len(had.data) != op.size or not isinstance(after, FileInode):
        return transition
    upper = set_inode(transition.container.upper, before.node.ino, replace(after, touched=False))
    return replace(transition, container=replace(transition.container, upper=upper))


def _place(store: Store, record: ContainerRecord, path: str) -> tuple[str | None, Container, str]:
    """The volume ``path`` lies in (None: the root filesystem), its files, and the path inside it [STORE-9]."""
    volume, inner = route(record, path)
    if volume is None:
        return None, record.filesystem, fold(path)
    return volume, store.volumes[volume], inner


def _directory_errno(store: Store, record: ContainerRecord, directory: str) -> Errno | None:
    """The errno of walking to ``directory`` (the one that holds a name), or None when it is one [STORE-11]."""
    _, files, inner = _place(store, record, directory)
    found = resolve_final(files, inner, follow=True)
    if isinstance(found, str):
        return found
    return None if found.is_dir else "ENOTDIR"


def _kind_at(store: Store, record: ContainerRecord, path: str) -> Literal["dir", "other"] | None:
    """What the last name of ``path`` is, not followed: a mount point is a directory [STORE-11]."""
    if any(path == mount for mount, _ in record.mounts):
        return "dir"
    _, files, inner = _place(store, record, path)
    resolved = resolve(files, inner, follow=False)
    if isinstance(resolved, str) or resolved.found is None:
        return None
    return "dir" if resolved.found.is_dir else "other"


def at_mounts(store: Store, record: ContainerRecord, op: Rename | Link) -> Outcome | None:
    """What a rename or link meets at a container's mounts [STORE-11].

    None when it is made in one place, as the filesystem level says; else
    its outcome, in the kernel's order: the walks to the two directories
    (``link`` walks to its source whole, and a mount point there is its
    volume's root), then the new name of a link taken (``EEXIST``), then two
    mounts (``EXDEV``), then a rename of the root or onto it (``EBUSY``),
    then, for a rename that names a mount point, the kernel's own checks
    before ``EBUSY``.
    """
    if not record.mounts:
        return None
    source, target = fold(op.src), fold(op.dst)
    mount_points = {mount for mount, _ in record.mounts}
    target_place = route(record, parent_of(target))[0]
    # RESOLVE
    if isinstance(op, Link):
        source_place, files, inner = _place(store, record, source)
        found = resolve_final(files, inner, follow=False)
        if isinstance(found, str):
            return found
    else:
        source_place = route(record, parent_of(source))[0]
        errno = _directory_errno(store, record, parent_of(source))
        if errno is not None:
            return errno
    errno = _directory_errno(store, record, parent_of(target))
    if errno is not None:
        return errno
    # CHECK: a link's new name taken, a mount point included
    if isinstance(op, Link) and _kind_at(store, record, target) is not None:
        return "EEXIST"
    # CHECK: two mounts
    if source_place != target_place:
        return "EXDEV"
    if isinstance(op, Link):
        return None
    # CHECK: a rename of the root, or onto it (the kernel's "not a last name")
    if ROOT in (source, target):
        return "EBUSY"
    if not {source, target} & mount_points:
        return None
    # CHECK: a rename that names a mount point: the source, the ancestry traps,
    # the same name, the kinds, then the mount point itself
    moving = _kind_at(store, record, source)
    if moving is None:
        return "ENOENT"
    if parent_of(target) == source or is_inside(parent_of(target), source):
        return "EINVAL"
    if parent_of(source) == target or is_inside(parent_of(source), target):
        return "ENOTEMPTY"
    if source == target:
        return Ok()
    replaced = _kind_at(store, record, target)
    if replaced is not None and moving != replaced:
        return "ENOTDIR" if moving == "dir" else "EISDIR"
    return "EBUSY"


FUSE_SESSION = Features(index=True)
"""How fuse-overlayfs behaves within one mount: as the kernel's overlay with ``index`` on, the names of an
image inode stay one inode when one of them is copied up [DRIVER-3][INDEX-1]."""


def fuse_session(filesystem: Container) -> Container:
    """A fuse-overlayfs container as one mount shows it, from what its directories hold [DRIVER-3]."""
    return replace(filesystem, features=FUSE_SESSION)


def fuse_parted(filesystem: Container) -> Container:
    """What a fuse-overlayfs mount leaves in its directories: the upper directory holds each copy under
    the names made there alone, so the next mount sees the other names of an image pair apart again
    [DRIVER-3]. The index goes; a copy no name holds any more goes with it, unless the image inode
    still has a visible name: fuse-overlayfs, unlinking one name of an image file with several, copies
    the file up under a name that stays (which one follows the directory's order on disk; every figure
    is the same whichever); link counts are the names. A symlink fuse-overlayfs copies up gets a new
    modification time (it copies a regular file's times, not a symlink's), so the naive walk finds it
    changed [DRIVER-2]."""
    upper = _kept_copies(filesystem)
    for ino, inode in upper.inodes.items():
        if isinstance(inode, SymlinkInode) and inode.origin is not None and not inode.touched:
            upper = set_inode(upper, ino, replace(inode, touched=True))
    names: dict[int, int] = {}
    for node in upper.entries.values():
        if isinstance(node, Name):
            names[node.ino] = names.get(node.ino, 0) + 1
    inodes = Map({ino: replace(upper.inode(ino), nlink=count) for ino, count in names.items()})
    return replace(filesystem, upper=replace(upper, inodes=inodes), features=DOCKER_OVERLAY2, index=NO_INDEX)


def _visible_names(filesystem: Container) -> list[Found]:
    """Every visible non-directory of ``filesystem``, sorted by path."""
    found: list[Found] = []
    pending = [root_of(filesystem)]
    while pending:
        directory = pending.pop()
        for child in visible_children(filesystem, directory).values():
            (pending if child.is_dir else found).append(child)
    return sorted(found, key=lambda each: each.path)


def _kept_copies(filesystem: Container) -> Layer:
    """The upper layer with each copy that only the index holds put under a name of its image inode
    that is still visible (the last by path), its directories copied up first [DRIVER-3]."""
    upper = filesystem.upper
    named = {node.ino for node in upper.entries.values() if isinstance(node, Name)}
    orphans = {key: entry.ino for key, entry in filesystem.index.items() if entry.ino not in named}
    if not orphans:
        return upper
    remaining: dict[tuple[int, int], Found] = {}
    for found in _visible_names(filesystem):
        if found.layer > 0 and isinstance(found.node, Name) and (found.layer, found.node.ino) in orphans:
            remaining[(found.layer, found.node.ino)] = found
    for key, found in sorted(remaining.items(), key=lambda item: item[1].path):
        for directory in ancestors(found.path):
            if directory != ROOT and not isinstance(upper.entries.get(directory), Dir):
                seen = lookup(filesystem, directory)
                if seen is None or not isinstance(seen.node, Dir):
                    raise ModelError(f"{directory}: the directory of a visible name is not visible")
                upper = put(upper, directory, replace(seen.node, opaque=False, redirect=None))
        upper = link(upper, found.path, orphans[key])
    return upper


def with_filesystem(store: Store, name: str, filesystem: Container) -> Store:
    """``store`` with container ``name``'s filesystem after some ops."""
    record = store.containers[name]
    return replace(store, containers=store.containers.set(name, replace(record, filesystem=filesystem)))


def remove_container(store: Store, name: str) -> Store:
    """``docker rm``: the writable layer goes; the image stays [STORE-3]."""
    return replace(store, containers=_without(store.containers, name))


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
    tags = _without(store.tags, name)
    if image_id in tags.values():
        return replace(store, tags=tags)
    if any(record.image == image_id for record in store.containers.values()):
        raise Refused("image-in-use", f"image {name!r} is used by a container")
    if children(store, image_id):
        # Images were made from it: the tag goes, the image stays, untagged.
        return replace(store, tags=tags)
    images = store.images
    doomed: str | None = image_id
    while doomed is not None:
        parent = images[doomed].parent
        images = _without(images, doomed)
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
    layers = Map({chain: layer for chain, layer in store.layers.items() if chain in kept})
    return replace(store, images=images, tags=tags, layers=layers)


def image_size(store: Store, image_id: str) -> int:
    """An image's size: its chain's own sizes added up [STORE-4]."""
    return sum(store.layers[chain].size for chain in store.images[image_id].chain)


def volume_size(store: Store, name: str) -> int:
    """A volume's size: its files' apparent bytes, each inode once [STORE-9]."""
    return layer_size(store.volumes[name].upper)


def container_size(store: Store, name: str) -> tuple[int, int]:
    """A container's SIZE and virtual size [STORE-4][SIZE-2][SIZE-3]; on a naive driver, SIZE
    counts only what changed [DRIVER-4]."""
    record = store.containers[name]
    if record.image_view is not None:
        size = changes_size(record.image_view, record.filesystem)
    else:
        size = layer_size(record.filesystem.upper)
    return size, size + image_size(store, record.image)


def container_changes(store: Store, name: str) -> tuple[NaiveChange, ...]:
    """``docker diff`` of container ``name``: the changes a tree walk finds, on every driver [DRIVER-2].

    In a store every image file has the same modification time, so a file
    copied up and not written (overlay2) is no change, and neither is a file
    renamed over another of the image with the same size and attributes.
    """
    record = store.containers[name]
    image = record.image_view
    if image is None:
        image = new_container(tuple(store.layers[chain].content for chain in store.images[record.image].chain))
    changes = naive_changes(image, record.filesystem)
    if store.config.driver not in ("overlay2", "fuse-overlayfs"):
        return changes
    return tuple(sorted((*changes, *_hidden_init_entries(record.filesystem, changes)), key=lambda each: each.path))


def _hidden_init_entries(filesystem: Container, changes: tuple[NaiveChange, ...]) -> list[NaiveChange]:
    """The entries of Docker's init layer (STORE-13) that an overlay2 or fuse-overlayfs container's upper
    directory hides (an opaque directory or a whiteout at or above them), which ``docker diff`` finds deleted
    (the init layer lies under the upper directory): ``rmdir /etc`` and ``mkdir /etc`` in the container lose
    ``/etc/hostname`` and the rest [DRIVER-2]."""
    deleted = {change.path for change in changes if change.kind == "D"}
    found: list[NaiveChange] = []
    for path, _, _ in INIT_ENTRIES:
        if lookup(filesystem, path) is not None or any(above in deleted for above in (*ancestors(path), path)):
            continue
        places = [*(above for above in ancestors(path) if above != ROOT), path]
        if any(_hides(filesystem.upper.entries.get(place)) for place in places):
            found.append(NaiveChange("D", path))
            deleted.add(path)
    return found


def _hides(node: object) -> bool:
    """True if a writable-layer entry hides what lies below it: a whiteout, or an opaque directory."""
    return isinstance(node, Whiteout) or (isinstance(node, Dir) and node.opaque)


def layers_allocated(store: Store) -> int:
    """The blocks every stored layer takes as the driver stores it, added up [DRIVER-7]."""
    total = 0
    for layer in store.layers.values():
        lowers: list[Layer] = []
        current: StoredLayer | None = layer
        while current is not None:
            lowers.insert(0, current.content)
            current = store.layers.get(current.parent) if current.parent is not None else None
        total += layer_allocated(store.config, tuple(lowers))
    return total


def container_disk(store: Store, name: str) -> DiskUsage:
    """What container ``name``'s writable layer takes on disk [DRIVER-7]."""
    record = store.containers[name]
    return disk_usage(store.config, record.image_view, record.filesystem)


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
