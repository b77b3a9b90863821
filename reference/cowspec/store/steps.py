"""Steps on a store of images and containers, and what each does [STORE-5].

A step is what a user asks of an engine: load an image, create or remove a
container or a volume, run filesystem ops in a container, commit it, build
an image from a Dockerfile's instructions, remove an image. ``take_step``
gives the store after a step and what became of it: done (with each op's
outcome for ``RunOps``), refused by the engine (a kind of refusal and why,
STORE-12), or rejected by the spec (an input no engine can be held to).
``cowspec.formats.store_trace`` decodes steps and encodes what they give.
"""

from dataclasses import dataclass

from cowspec.errors import SpecError
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import Create, Mkdir, Op, Outcome, Rmdir, Symlink, Unlink, Write
from cowspec.fs.layer import Layer
from cowspec.fs.operations import step as fs_step
from cowspec.fs.paths import ROOT, ancestors, join
from cowspec.fs.stack import Container, lookup, visible_children
from cowspec.oci.commit import layer_tar_of
from cowspec.oci.identity import diff_id, digest
from cowspec.oci.layer_tar import LayerTar, encode_layer
from cowspec.store.naive import changes_layer
from cowspec.store.state import (
    HistoryRow,
    Image,
    Refused,
    Store,
    check_new_container,
    container_changes,
    create,
    create_volume,
    driver_container,
    driver_step,
    ensure_volumes,
    fuse_parted,
    fuse_session,
    load,
    remove_container,
    remove_image,
    remove_volume,
    run_op,
    stamp,
    stamp_second,
    with_filesystem,
)


@dataclass(frozen=True, slots=True)
class LoadImage:
    """Load an image made of ``layers`` (trace layer entries) and ``history``."""

    name: str
    layers: tuple[tuple[LayerEntry, ...], ...]
    history: tuple[HistoryRow, ...]


@dataclass(frozen=True, slots=True)
class CreateContainer:
    """``docker create``: a container on an image, with volumes mounted at paths."""

    container: str
    image: str
    volumes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class CreateVolume:
    """``docker volume create``."""

    name: str


@dataclass(frozen=True, slots=True)
class RemoveVolume:
    """``docker volume rm``."""

    name: str


@dataclass(frozen=True, slots=True)
class RunOps:
    """Filesystem ops inside a container."""

    container: str
    ops: tuple[Op, ...]


@dataclass(frozen=True, slots=True)
class Commit:
    """``docker commit``: a new image from a container."""

    container: str
    name: str


@dataclass(frozen=True, slots=True)
class Diff:
    """``docker diff``: what a container changed against its image [DRIVER-2]."""

    container: str


@dataclass(frozen=True, slots=True)
class RemoveContainer:
    """``docker rm``."""

    container: str


@dataclass(frozen=True, slots=True)
class RemoveImage:
    """``docker rmi``."""

    name: str


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction of a build [STORE-8].

    ``COPY`` adds ``entries`` (files, directories, symlinks); ``RUN`` makes
    ``ops`` in a container of the image so far; ``CMD``, ``ENV`` and
    ``LABEL`` change only metadata, with ``text``.
    """

    command: str
    entries: tuple[LayerEntry, ...] = ()
    ops: tuple[Op, ...] = ()
    text: str = ""


@dataclass(frozen=True, slots=True)
class Build:
    """``docker build`` of ``name`` from the image ``base``, one instruction at a time."""

    name: str
    base: str
    instructions: tuple[Instruction, ...]


Step = (
    LoadImage
    | CreateContainer
    | RunOps
    | Commit
    | RemoveContainer
    | RemoveImage
    | Build
    | CreateVolume
    | RemoveVolume
    | Diff
)
METADATA = ("CMD", "ENV", "LABEL")


@dataclass(frozen=True, slots=True)
class Done:
    """A step the engine did; ``results`` holds each op's outcome for ``RunOps``, ``changes`` what
    ``docker diff`` lists for ``Diff``: (kind, path) pairs, sorted by path [DRIVER-2]."""

    results: tuple[Outcome, ...] | None = None
    changes: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A step the engine refuses, leaving the store as it was: the kind of refusal, and why [STORE-12]."""

    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A step whose input the spec rejects: nothing can be said of what an engine does with it."""

    reason: str


StepResult = Done | Refusal | Rejected
DONE = Done()


def take_step(store: Store, step: Step) -> tuple[Store, StepResult]:
    """The store after ``step``, and what became of it [STORE-5].

    A step the engine refuses leaves the store as it was and says the kind
    of refusal [STORE-12]; a step whose input the spec rejects says so
    (``rejected``), since the spec cannot tell what an engine does with it.
    """
    try:
        return perform(store, step)
    except Refused as refusal:
        return store, refused(refusal)
    except SpecError as error:
        return store, Rejected(str(error))


def refused(refusal: Refused) -> Refusal:
    """What a step the engine refuses gives: the kind of refusal, and why [STORE-12]."""
    return Refusal(refusal.kind, refusal.reason)


def perform(store: Store, step: Step) -> tuple[Store, StepResult]:
    """The store after ``step`` and what it gave; raises ``Refused`` or ``SpecError``."""
    match step:
        case LoadImage():
            layers = [build_layer(entries, f"image {step.name}") for entries in step.layers]
            ids = tuple(diff_id(encode_layer(layer_tar_of(layer))) for layer in layers)
            return load(store, step.name, Image(ids, step.history), layers), DONE
        case CreateContainer():
            store.image(step.image)
            check_new_container(store, step.container)
            # Docker makes the named volumes before it checks where they go, and
            # keeps them when it then refuses the container [STORE-9].
            store = ensure_volumes(store, [volume for _, volume in step.volumes])
            try:
                return create(store, step.container, step.image, step.volumes), DONE
            except Refused as refusal:
                return store, refused(refusal)
        case CreateVolume():
            return create_volume(store, step.name), DONE
        case RemoveVolume():
            return remove_volume(store, step.name), DONE
        case RunOps():
            record = store.container(step.container)
            fuse = store.config.driver == "fuse-overlayfs"
            if fuse:
                # One mount for the step [DRIVER-3].
                store = with_filesystem(store, step.container, fuse_session(record.filesystem))
            results: list[Outcome] = []
            for op in step.ops:
                store, outcome = run_op(store, step.container, op)
                results.append(outcome)
            if fuse:
                store = with_filesystem(store, step.container, fuse_parted(store.containers[step.container].filesystem))
            return store, Done(tuple(results))
        case Commit():
            record = store.container(step.container)
            base = store.images[record.image]
            contents = [store.layers[chain].content for chain in base.chain]
            layer = written_layer(store, record.filesystem, record.image_view)
            changes = layer_tar_of(layer)
            if not (changes.entries or changes.whiteouts or changes.opaque):
                # Nothing changed: the new image adds a history row and no layer [STORE-6].
                row = HistoryRow(f"commit {step.container}", empty_layer=True)
                same = Image(
                    base.diff_ids, (*base.history, row), unique=f"{step.name} {len(store.images)}", parent=base.id
                )
                return load(store, step.name, same, contents), DONE
            store, identity = archive_id(store, base.chain, changes)
            new = Image(
                (*base.diff_ids, identity),
                (*base.history, HistoryRow(f"commit {step.container}")),
                unique=f"{step.name} {len(store.images)}",  # a commit's config carries its own creation time
                parent=base.id,
            )
            return load(store, step.name, new, [*contents, layer]), DONE
        case RemoveContainer():
            store.container(step.container)
            return remove_container(store, step.container), DONE
        case Diff():
            store.container(step.container)
            listed = tuple((change.kind, change.path) for change in container_changes(store, step.container))
            return store, Done(changes=listed)
        case RemoveImage():
            return remove_image(store, step.name), DONE
        case Build():
            return build(store, step), DONE


def build(store: Store, step: Build) -> Store:
    """``docker build``: each instruction adds a layer or a history row [STORE-8].

    ``COPY`` adds a layer holding its entries; ``RUN`` adds the layer its
    container's changes make, or only a row when it changed nothing (as a
    commit does, STORE-6); ``CMD``, ``ENV`` and ``LABEL`` add a row that made
    no layer. Only the last image is tagged; the ones in between are not
    reported, and their layers are the last one's. The builder's cache makes
    a build of the same instructions on the same base the same image, which
    then has one more tag.
    """
    image = store.image(step.base)
    contents = [store.layers[chain].content for chain in image.chain]
    diff_ids, rows = list(image.diff_ids), list(image.history)
    for instruction in step.instructions:
        if instruction.command in METADATA:
            rows.append(HistoryRow(f"{instruction.command} {instruction.text}", empty_layer=True))
            continue
        filesystem, image_view = driver_container(store.config, tuple(contents))
        if instruction.command == "RUN":
            fuse = store.config.driver == "fuse-overlayfs"
            filesystem = fuse_session(filesystem) if fuse else filesystem
            for op in instruction.ops:
                filesystem = driver_step(store.config, filesystem, op).container
            filesystem = fuse_parted(filesystem) if fuse else filesystem
        else:
            filesystem = copied(filesystem, instruction.entries)
        layer = written_layer(store, filesystem, image_view)
        changes = layer_tar_of(layer)
        if not (changes.entries or changes.whiteouts or changes.opaque):
            rows.append(HistoryRow(instruction.command, empty_layer=True))
            continue
        so_far = Image(tuple(diff_ids), tuple(rows), unique=image.unique).id
        cache_key = digest(repr((so_far, instruction)).encode())
        store, identity = archive_id(store, Image(tuple(diff_ids), ()).chain, changes, cache_key)
        diff_ids.append(identity)
        rows.append(HistoryRow(instruction.command))
        contents.append(layer)
    # The build cache: the same instructions on the same base give the same image again [STORE-8].
    cached = digest(repr((image.id, step.instructions)).encode())
    built = Image(tuple(diff_ids), tuple(rows), unique=f"build {cached}", parent=image.id)
    return load(store, step.name, built, contents)


def written_layer(store: Store, filesystem: Container, image_view: Container | None) -> Layer:
    """The layer a commit (or a build step) of ``filesystem`` archives [COMMIT-1][DRIVER-5].

    overlay2 archives its writable layer as it is; a naive driver, the
    changes a tree walk finds against the image's own view.
    """
    if image_view is None:
        return filesystem.upper
    return changes_layer(image_view, filesystem)


def archive_id(
    store: Store, parent: tuple[str, ...], changes: LayerTar, cached: str | None = None
) -> tuple[Store, str]:
    """The DiffID of a commit's archive, and the store after it [DRIVER-6].

    On a naive driver each deletion marker carries the second the archive
    was made, so an archive holding one is a new layer unless an archive of
    the same changes on the same parent was made in the same second (the
    store's ``stamps`` say which seconds). A build step the builder's cache
    answers (``cached``: the same instruction on the same image, STORE-8)
    makes no archive: it is the layer that step made before.
    """
    plain = diff_id(encode_layer(changes))
    if not (store.config.naive and changes.whiteouts):
        return store, plain
    if cached is not None and f"build {cached}" in store.stamped:
        second = stamp_second(store, store.stamped.index(f"build {cached}"))
        return store, digest(f"{plain} stamped {second}".encode())
    key = f"build {cached}" if cached is not None else f"{parent[-1] if parent else ''} {plain}"
    store, second = stamp(store, key)
    return store, digest(f"{plain} stamped {second}".encode())


def copied(filesystem: Container, entries: tuple[LayerEntry, ...]) -> Container:
    """``filesystem`` after ``COPY`` of ``entries`` into its root [STORE-8].

    ``COPY`` unpacks the build context over the root as a layer is applied
    (APPLY-3): a directory over a directory stays, anything else over
    anything is replaced, subtree included; parent directories missing or
    in the way (a file, a symlink) are made (0o755); files keep their mode
    and everything belongs to root.
    """

    def run(op: Op) -> None:
        nonlocal filesystem
        filesystem = fs_step(filesystem, op).container

    def clear(path: str) -> None:
        found = lookup(filesystem, path)
        if found is None:
            return
        if found.is_dir:
            for child in visible_children(filesystem, found):
                clear(join(path, child))
            run(Rmdir(path))
        else:
            run(Unlink(path))

    def directory(path: str, mode: int) -> None:
        found = lookup(filesystem, path)
        if found is not None and found.is_dir:
            return
        clear(path)
        run(Mkdir(path, mode))

    for entry in sorted(entries, key=lambda each: each.path.count("/")):
        for above in ancestors(entry.path):
            if above != ROOT:
                directory(above, 0o755)
        if entry.type == "dir":
            directory(entry.path, entry.mode)
            continue
        clear(entry.path)
        if entry.type == "file":
            run(Create(entry.path, entry.mode))
            if entry.data:
                run(Write(entry.path, 0, entry.data))
        else:
            run(Symlink(entry.target, entry.path))
    return filesystem
