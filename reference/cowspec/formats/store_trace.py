"""The store trace format ``cowspec-store-trace/1``: steps on images and containers.

A store trace is a list of steps; filesystem ops inside a container use the
op vocabulary of ``cowspec-trace/1``, and layers its layer entries. The
result gives every image's, container's and the store's figures
(chapter 15), so a real engine's can be compared with the model's
[STORE-5]. ``docs/formats/store-trace-format.md`` is the contract.
"""

from dataclasses import dataclass
from typing import cast

from cowspec.errors import SpecError
from cowspec.formats.trace import decode_entry, decode_op, encode_outcome
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import Create, Mkdir, Op, Rmdir, Symlink, Unlink, Write
from cowspec.fs.observe import Entry
from cowspec.fs.operations import step as fs_step
from cowspec.fs.paths import ROOT, ancestors, is_normalised, join
from cowspec.fs.stack import Container, lookup, new_container, visible_children
from cowspec.oci.commit import commit, layer_tar_of
from cowspec.oci.identity import diff_id
from cowspec.oci.layer_tar import encode_layer
from cowspec.store.state import (
    HistoryRow,
    Image,
    Refused,
    Store,
    check_new_container,
    container_size,
    create,
    create_volume,
    ensure_volumes,
    history,
    image_size,
    load,
    remove_container,
    remove_image,
    remove_volume,
    run_op,
    system_df,
    volume_size,
)  # fmt: skip

STORE_TRACE_FORMAT = "cowspec-store-trace/1"
STORE_RESULT_FORMAT = "cowspec-store-trace-result/1"


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
    LoadImage | CreateContainer | RunOps | Commit | RemoveContainer | RemoveImage | Build | CreateVolume | RemoveVolume
)
METADATA = ("CMD", "ENV", "LABEL")


def _text(fields: dict[str, object], key: str, where: str) -> str:
    value = fields.get(key)
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}: field {key!r} must be a non-empty string")
    return value


def _image_name(fields: dict[str, object], key: str, where: str) -> str:
    """An image reference as Docker lists it: ``repo:tag`` (``:latest`` when no tag is given)."""
    name = _text(fields, key, where)
    if name != name.lower() or any(char in name for char in " @"):
        raise SpecError(f"{where}: {name!r} is not a lower-case repo[:tag] name")
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def decode_step(value: object, where: str) -> Step:
    """One step of a store trace [STORE-5]."""
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a JSON object")
    fields = cast(dict[str, object], value)
    kind = fields.get("step")
    if kind == "image":
        layers = fields.get("layers", [])
        if not isinstance(layers, list) or not all(isinstance(each, list) for each in layers):
            raise SpecError(f"{where}: layers must be a list of lists of entries")
        decoded = tuple(
            tuple(decode_entry(entry, f"{where} layer {index} entry {number}") for number, entry in enumerate(layer))
            for index, layer in enumerate(layers)
        )
        rows = fields.get("history")
        if rows is None:
            history_rows = tuple(HistoryRow(f"layer {index}") for index in range(len(decoded)))
        else:
            if not isinstance(rows, list):
                raise SpecError(f"{where}: history must be a list")
            history_rows = tuple(
                HistoryRow(_text(cast(dict[str, object], row), "created_by", f"{where} history"),
                           bool(cast(dict[str, object], row).get("empty_layer", False)))
                if isinstance(row, dict) else HistoryRow("")
                for row in rows
            )  # fmt: skip
        # The spec rejects a malformed image here, before a model or an engine sees it [STORE-2].
        for index, layer in enumerate(decoded):
            build_layer(layer, f"{where} layer {index}")
        made = sum(not row.empty_layer for row in history_rows)
        if made != len(decoded):
            raise SpecError(f"{where}: {made} history rows made a layer, but there are {len(decoded)} layers [STORE-2]")
        return LoadImage(_image_name(fields, "name", where), decoded, history_rows)
    if kind == "create":
        volumes = fields.get("volumes", {})
        if not isinstance(volumes, dict):
            raise SpecError(f"{where}: volumes must map paths to volume names")
        mounts = []
        for path, volume in sorted(volumes.items()):
            if not isinstance(path, str) or not is_normalised(path) or path == ROOT or not isinstance(volume, str):
                raise SpecError(f"{where}: volume mount {path!r} must be a normalised path below the root")
            if not volume or not all(char.isalnum() or char in "_.-" for char in volume):
                raise SpecError(f"{where}: volume name {volume!r} is not [A-Za-z0-9_.-]+")
            mounts.append((path, volume))
        return CreateContainer(_text(fields, "container", where), _image_name(fields, "image", where), tuple(mounts))
    if kind in ("volume", "rmvolume"):
        name = _text(fields, "name", where)
        if not all(char.isalnum() or char in "_.-" for char in name):
            raise SpecError(f"{where}: volume name {name!r} is not [A-Za-z0-9_.-]+")
        return CreateVolume(name) if kind == "volume" else RemoveVolume(name)
    if kind == "ops":
        ops = fields.get("ops")
        if not isinstance(ops, list):
            raise SpecError(f"{where}: ops must be a list")
        return RunOps(
            _text(fields, "container", where), tuple(decode_op(op, f"{where} op {n}") for n, op in enumerate(ops))
        )
    if kind == "commit":
        return Commit(_text(fields, "container", where), _image_name(fields, "name", where))
    if kind == "rm":
        return RemoveContainer(_text(fields, "container", where))
    if kind == "rmi":
        return RemoveImage(_image_name(fields, "name", where))
    if kind == "build":
        instructions = fields.get("instructions")
        if not isinstance(instructions, list) or not instructions:
            raise SpecError(f"{where}: instructions must be a non-empty list")
        return Build(
            _image_name(fields, "name", where),
            _image_name(fields, "from", where),
            tuple(decode_instruction(each, f"{where} instruction {n}") for n, each in enumerate(instructions)),
        )
    raise SpecError(f"{where}: unknown step {kind!r}")


def decode_instruction(value: object, where: str) -> Instruction:
    """One build instruction [STORE-8]."""
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a JSON object")
    fields = cast(dict[str, object], value)
    command = fields.get("instruction")
    if command == "COPY":
        entries = fields.get("entries")
        if not isinstance(entries, list):
            raise SpecError(f"{where}: COPY needs a list of entries")
        decoded = tuple(decode_entry(each, f"{where} entry {n}") for n, each in enumerate(entries))
        if not decoded:
            raise SpecError(f"{where}: COPY needs at least one entry")
        for entry in decoded:
            if entry.type not in ("file", "dir", "symlink"):
                raise SpecError(f"{where}: COPY takes files, directories and symlinks, not a {entry.type}")
        return Instruction("COPY", entries=decoded)
    if command == "RUN":
        ops = fields.get("ops")
        if not isinstance(ops, list):
            raise SpecError(f"{where}: RUN needs a list of ops")
        return Instruction("RUN", ops=tuple(decode_op(op, f"{where} op {n}") for n, op in enumerate(ops)))
    if command in METADATA:
        text = fields.get("text", "")
        if not isinstance(text, str) or "\n" in text:
            raise SpecError(f"{where}: {command} text must be one line")
        return Instruction(str(command), text=text)
    raise SpecError(f"{where}: unknown instruction {command!r} (COPY, RUN, CMD, ENV, LABEL)")


def decode_store_trace(document: object) -> tuple[Step, ...]:
    """The steps of a store trace document [STORE-5]."""
    if not isinstance(document, dict) or document.get("format") != STORE_TRACE_FORMAT:
        raise SpecError(f"store trace: format must be {STORE_TRACE_FORMAT!r}")
    steps = document.get("steps")
    if not isinstance(steps, list):
        raise SpecError("store trace: steps must be a list")
    return tuple(decode_step(each, f"step {index}") for index, each in enumerate(steps))


def apply_step(store: Store, step: Step) -> tuple[Store, Entry]:
    """The store after ``step``, and the step's result item [STORE-5].

    A step the engine refuses leaves the store as it was and says the kind
    of refusal [STORE-12]; a step whose input the spec rejects says so
    (``rejected``), since the spec cannot tell what an engine does with it.
    """
    try:
        return perform(store, step)
    except Refused as refusal:
        return store, refused(refusal)
    except SpecError as error:
        return store, {"ok": False, "rejected": True, "reason": str(error)}


def refused(refusal: Refused) -> Entry:
    """The result item of a step the engine refuses [STORE-12]."""
    return {"ok": False, "refusal": refusal.kind, "reason": refusal.reason}


def perform(store: Store, step: Step) -> tuple[Store, Entry]:
    """The store after ``step`` and its result item; raises ``Refused`` or ``SpecError``."""
    match step:
        case LoadImage():
            layers = [build_layer(entries, f"image {step.name}") for entries in step.layers]
            ids = tuple(diff_id(encode_layer(layer_tar_of(layer))) for layer in layers)
            return load(store, step.name, Image(ids, step.history), layers), {"ok": True}
        case CreateContainer():
            store.image(step.image)
            check_new_container(store, step.container)
            # Docker makes the named volumes before it checks where they go, and
            # keeps them when it then refuses the container [STORE-9].
            store = ensure_volumes(store, [volume for _, volume in step.volumes])
            try:
                return create(store, step.container, step.image, step.volumes), {"ok": True}
            except Refused as refusal:
                return store, refused(refusal)
        case CreateVolume():
            return create_volume(store, step.name), {"ok": True}
        case RemoveVolume():
            return remove_volume(store, step.name), {"ok": True}
        case RunOps():
            store.container(step.container)
            results = []
            for op in step.ops:
                store, outcome = run_op(store, step.container, op)
                results.append(encode_outcome(outcome))
            return store, {"ok": True, "results": results}
        case Commit():
            record = store.container(step.container)
            base = store.images[record.image]
            changes = commit(record.filesystem)
            contents = [store.layers[chain].content for chain in base.chain]
            if not (changes.entries or changes.whiteouts or changes.opaque):
                # Nothing changed: the new image adds a history row and no layer [STORE-6].
                row = HistoryRow(f"commit {step.container}", empty_layer=True)
                same = Image(
                    base.diff_ids, (*base.history, row), unique=f"{step.name} {len(store.images)}", parent=base.id
                )
                return load(store, step.name, same, contents), {"ok": True}
            new = Image(
                (*base.diff_ids, diff_id(encode_layer(changes))),
                (*base.history, HistoryRow(f"commit {step.container}")),
                unique=f"{step.name} {len(store.images)}",  # a commit's config carries its own creation time
                parent=base.id,
            )
            return load(store, step.name, new, [*contents, record.filesystem.upper]), {"ok": True}
        case RemoveContainer():
            store.container(step.container)
            return remove_container(store, step.container), {"ok": True}
        case RemoveImage():
            return remove_image(store, step.name), {"ok": True}
        case Build():
            return build(store, step), {"ok": True}


def build(store: Store, step: Build) -> Store:
    """``docker build``: each instruction adds a layer or a history row [STORE-8].

    ``COPY`` adds a layer holding its entries; ``RUN`` adds the layer its
    container's changes make, or only a row when it changed nothing (as a
    commit does, STORE-6); ``CMD``, ``ENV`` and ``LABEL`` add a row that made
    no layer. Only the last image is tagged; the ones in between are not
    reported, and their layers are the last one's.
    """
    image = store.image(step.base)
    contents = [store.layers[chain].content for chain in image.chain]
    diff_ids, rows = list(image.diff_ids), list(image.history)
    for instruction in step.instructions:
        if instruction.command in METADATA:
            rows.append(HistoryRow(f"{instruction.command} {instruction.text}", empty_layer=True))
            continue
        filesystem = new_container(tuple(contents))
        if instruction.command == "RUN":
            for op in instruction.ops:
                filesystem = fs_step(filesystem, op).container
        else:
            filesystem = copied(filesystem, instruction.entries)
        layer = filesystem.upper
        changes = layer_tar_of(layer)
        if not (changes.entries or changes.whiteouts or changes.opaque):
            rows.append(HistoryRow(instruction.command, empty_layer=True))
            continue
        diff_ids.append(diff_id(encode_layer(changes)))
        rows.append(HistoryRow(instruction.command))
        contents.append(layer)
    built = Image(tuple(diff_ids), tuple(rows), unique=f"{step.name} {len(store.images)}", parent=image.id)
    return load(store, step.name, built, contents)


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


def store_result(store: Store, items: list[Entry]) -> Entry:
    """The result document of a store trace [STORE-5]."""
    usage, total, reclaimable = system_df(store)
    return {
        "format": STORE_RESULT_FORMAT,
        "steps": items,
        "layers": len(store.layers),
        "images": dict(
            sorted(
                (
                    tag,
                    {
                        "size": image_size(store, each.id),
                        "history": [size for _, size in history(store, each.id)],
                        "shared_size": each.shared,
                        "containers": each.containers,
                    },
                )
                for each in usage
                for tag in each.tags
            )
        ),
        "containers": {
            name: dict(zip(("size", "virtual_size"), container_size(store, name), strict=True))
            for name in sorted(store.containers)
        },
        "images_total": total,
        "reclaimable": reclaimable,
        "volumes": {
            name: {
                "size": volume_size(store, name),
                "containers": sum(
                    any(volume == name for _, volume in record.mounts) for record in store.containers.values()
                ),
            }
            for name in sorted(store.volumes)
        },
    }


def run_store_model(steps: tuple[Step, ...]) -> Entry:
    """What the model says a store trace gives [STORE-5]."""
    store = Store()
    items: list[Entry] = []
    for each in steps:
        store, item = apply_step(store, each)
        items.append(item)
    return store_result(store, items)
