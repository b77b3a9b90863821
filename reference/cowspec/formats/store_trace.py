"""The store trace format ``cowspec-store-trace/1``: steps on images and containers.

A store trace is a list of steps; filesystem ops inside a container use the
op vocabulary of ``cowspec-trace/1``, and layers its layer entries. What a
step does is ``cowspec.store.steps``'s to say: this module only decodes
steps and encodes what they give. The
result gives every image's, container's and the store's figures
(chapter 15), so a real engine's can be compared with the model's
[STORE-5]. ``docs/formats/store-trace-format.md`` is the contract.
"""

from typing import cast

from cowspec.errors import SpecError
from cowspec.formats.trace import decode_entry, decode_op, encode_entry, encode_op, encode_outcome
from cowspec.fs.build import build_layer
from cowspec.fs.observe import Entry
from cowspec.fs.paths import ROOT, is_normalised
from cowspec.store.disk import Bytes, exactly
from cowspec.store.drivers import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_DIRECTORY_SIZE,
    DEFAULT_DRIVER,
    OVERLAY2,
    StoreConfig,
    store_config,
)
from cowspec.store.state import (
    HistoryRow,
    Store,
    container_disk,
    container_size,
    history,
    image_size,
    layers_allocated,
    new_store,
    system_df,
    volume_size,
)
from cowspec.store.steps import (
    METADATA,
    Build,
    Commit,
    CreateContainer,
    CreateVolume,
    Diff,
    Done,
    Instruction,
    LoadImage,
    Refusal,
    Rejected,
    RemoveContainer,
    RemoveImage,
    RemoveVolume,
    RunOps,
    Step,
    StepResult,
    take_step,
)

STORE_TRACE_FORMAT = "cowspec-store-trace/1"
STORE_RESULT_FORMAT = "cowspec-store-trace-result/1"


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
    if kind == "diff":
        return Diff(_text(fields, "container", where))
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


def decode_store_config(document: object) -> StoreConfig:
    """The engine a store trace asks for: ``storage_driver`` (absent: overlay2) and ``directory_size``
    (absent: 4096) [DRIVER-1][DRIVER-7]."""
    if not isinstance(document, dict):
        raise SpecError(f"store trace: format must be {STORE_TRACE_FORMAT!r}")
    fields = cast(dict[str, object], document)
    try:
        return store_config(
            fields.get("storage_driver", DEFAULT_DRIVER),
            fields.get("directory_size", DEFAULT_DIRECTORY_SIZE),
            fields.get("block_size", DEFAULT_BLOCK_SIZE),
        )
    except SpecError as error:
        raise SpecError(f"store trace: {error}") from None


def encode_step(step: Step) -> Entry:
    """A store step in the JSON form of ``cowspec-store-trace/1`` (``decode_step`` gives it back)."""
    match step:
        case LoadImage():
            return {
                "step": "image",
                "name": step.name,
                "layers": [[encode_entry(entry) for entry in layer] for layer in step.layers],
                "history": [_encode_row(row) for row in step.history],
            }
        case CreateContainer():
            fields: Entry = {"step": "create", "container": step.container, "image": step.image}
            if step.volumes:
                fields["volumes"] = dict(step.volumes)
            return fields
        case CreateVolume():
            return {"step": "volume", "name": step.name}
        case RemoveVolume():
            return {"step": "rmvolume", "name": step.name}
        case RunOps():
            return {"step": "ops", "container": step.container, "ops": [encode_op(op) for op in step.ops]}
        case Commit():
            return {"step": "commit", "container": step.container, "name": step.name}
        case RemoveContainer():
            return {"step": "rm", "container": step.container}
        case Diff():
            return {"step": "diff", "container": step.container}
        case RemoveImage():
            return {"step": "rmi", "name": step.name}
        case Build():
            return {
                "step": "build",
                "name": step.name,
                "from": step.base,
                "instructions": [_encode_instruction(each) for each in step.instructions],
            }


def _encode_row(row: HistoryRow) -> object:
    if not row.created_by and not row.empty_layer:
        return None  # a row given as no object decodes to this one
    fields: Entry = {"created_by": row.created_by}
    if row.empty_layer:
        fields["empty_layer"] = True
    return fields


def _encode_instruction(instruction: Instruction) -> Entry:
    if instruction.command == "COPY":
        return {"instruction": "COPY", "entries": [encode_entry(entry) for entry in instruction.entries]}
    if instruction.command == "RUN":
        return {"instruction": "RUN", "ops": [encode_op(op) for op in instruction.ops]}
    return {"instruction": instruction.command, "text": instruction.text}


def encode_store_trace(steps: tuple[Step, ...], config: StoreConfig = OVERLAY2) -> Entry:
    """A whole store trace document; ``decode_store_trace`` gives ``steps`` back, and
    ``decode_store_config`` ``config`` (written only where it is not the default)."""
    document: Entry = {"format": STORE_TRACE_FORMAT}
    if config.driver != DEFAULT_DRIVER:
        document["storage_driver"] = config.driver
    if config.directory_size != DEFAULT_DIRECTORY_SIZE:
        document["directory_size"] = config.directory_size
    if config.block_size != DEFAULT_BLOCK_SIZE:
        document["block_size"] = config.block_size
    document["steps"] = [encode_step(step) for step in steps]
    return document


def apply_step(store: Store, step: Step) -> tuple[Store, Entry]:
    """The store after ``step``, and the step's result item [STORE-5][STORE-12]."""
    store, result = take_step(store, step)
    return store, encode_step_result(result)


def encode_step_result(result: StepResult) -> Entry:
    """A step's result item: done (with each op's outcome for ``run``), refused by the engine, or rejected."""
    match result:
        case Done():
            item: Entry = {"ok": True}
            if result.results is not None:
                item["results"] = [encode_outcome(outcome) for outcome in result.results]
            if result.changes is not None:
                item["changes"] = [{"kind": kind, "path": path} for kind, path in result.changes]
            return item
        case Refusal():
            return {"ok": False, "refusal": result.kind, "reason": result.reason}
        case Rejected():
            return {"ok": False, "rejected": True, "reason": result.reason}


def store_result(store: Store, items: list[Entry]) -> Entry:
    """The result document of a store trace [STORE-5]."""
    result: Entry = {"format": STORE_RESULT_FORMAT}
    if store.config.driver != DEFAULT_DRIVER:
        result["storage_driver"] = store.config.driver
    result["steps"] = items
    result.update(store_figures(store))
    return result


FIGURES = ("layers", "images", "containers", "images_total", "reclaimable", "volumes", "disk")
"""The keys of a store result that hold figures; an alternative gives them all [DRIVER-6]."""


def _range(figure: Bytes) -> Entry:
    return {"min": figure.min, "max": figure.max}


def store_figures(store: Store) -> Entry:
    """Every figure of a store result [STORE-5][DRIVER-7]."""
    usage, total, reclaimable = system_df(store)
    disks = {name: container_disk(store, name) for name in sorted(store.containers)}
    return {
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
        "disk": {
            "containers": {
                name: {
                    "apparent": _range(disk.apparent),
                    "exclusive": _range(disk.exclusive),
                    "allocated": _range(disk.allocated),
                }
                for name, disk in disks.items()
            },
            "layers": {"allocated": _range(exactly(layers_allocated(store)))},
        },
    }


MAX_CLOCK_CHOICES = 10
"""How many gaps between stamped archives the oracle tries both ways (2**10 runs at most) [DRIVER-6]: only
gaps between two archives of the same changes on the same parent are tried, the first ten of them."""


def _run(steps: tuple[Step, ...], config: StoreConfig, stamps: tuple[int, ...]) -> tuple[Store, list[Entry]]:
    store = new_store(config, stamps)
    items: list[Entry] = []
    for each in steps:
        store, item = apply_step(store, each)
        items.append(item)
    return store, items


def run_store_model(steps: tuple[Step, ...], config: StoreConfig = OVERLAY2) -> Entry:
    """What the model says a store trace gives [STORE-5].

    On a naive-diff driver, where two archives of the same deletions on the
    same parent are one layer or two as the clock has it, the result holds
    the figures of the run where every archive takes a second of its own, and
    ``alternatives`` the other figures the clock allows [DRIVER-6].
    """
    store, items = _run(steps, config, ())
    result = store_result(store, items)
    keys = store.stamped
    if len(set(keys)) == len(keys):
        return result  # no two archives could be the same layer: the clock changes nothing
    # Only a gap between two archives of the same changes on the same parent can make them one layer: the
    # seconds never go back, so those two share one only if every gap between them is none. Other gaps tick.
    spanned = sorted(
        {gap for first in range(len(keys)) for last in range(first + 1, len(keys)) if keys[first] == keys[last]
         for gap in range(first, last)}
    )  # fmt: skip
    choices = spanned[:MAX_CLOCK_CHOICES]
    seen = [store_figures(store)]
    for pattern in range(2 ** len(choices)):
        same = {gap for bit, gap in enumerate(choices) if not pattern >> bit & 1}
        stamps = [0]
        for gap in range(len(keys) - 1):
            stamps.append(stamps[-1] + (gap not in same))
        later, _ = _run(steps, config, tuple(stamps))
        figures = store_figures(later)
        if figures not in seen:
            seen.append(figures)
    if len(seen) > 1:
        result["alternatives"] = seen[1:]
    return result


def allowed_figures(expected: Entry) -> list[Entry]:
    """Each set of figures a model result allows: its own, then each alternative's [DRIVER-6]."""
    own = {key: expected[key] for key in FIGURES if key in expected}
    others = expected.get("alternatives", [])
    return [own, *(cast(Entry, each) for each in others)] if isinstance(others, list) else [own]


def disk_differences(expected: object, observed: object) -> list[str]:
    """One line per disk figure an engine gives outside the model's range, or does not give [DRIVER-7].

    ``expected`` is a model result's ``disk``; ``observed`` an engine's,
    which gives each figure as ``{"min": n, "max": n}`` (both ends must lie
    in the model's range) or as a plain number. Once an engine gives
    ``disk`` at all, every container and figure the model states must be
    there: one missing is a difference, never a pass. An engine's ``disk``
    that is not made of objects and numbers is rejected (``SpecError``).
    """
    want = _disk_owners(expected, "the model's disk")
    got = _disk_owners(observed, "the engine's disk")
    lines: list[str] = []
    for name, figures in sorted(want.items()):
        for key, bounds in sorted(figures.items()):
            low, high = _disk_bounds(bounds, f"the model's disk {name} {key}")
            given = got.get(name, {}).get(key)
            if given is None:
                lines.append(f"disk {name} {key}: model {low}..{high}, real (none)")
                continue
            first, last = _disk_bounds(given, f"the engine's disk {name} {key}")
            if not (low <= first and last <= high):
                real = str(first) if first == last else f"{first}..{last}"
                lines.append(f"disk {name} {key}: model {low}..{high}, real {real}")
    return lines


def _disk_owners(disk: object, what: str) -> dict[str, dict[str, object]]:
    """A result's ``disk`` as owner to figures: each container, and the store's layers as ``(layers)``."""
    if disk is None:
        return {}
    if not isinstance(disk, dict):
        raise SpecError(f"{what} is not an object")
    owners: dict[str, dict[str, object]] = {}
    containers = disk.get("containers", {})
    if not isinstance(containers, dict):
        raise SpecError(f"{what}'s containers is not an object")
    for name, figures in containers.items():
        if not isinstance(figures, dict):
            raise SpecError(f"{what} of container {name!r} is not an object")
        owners[str(name)] = figures
    layers = disk.get("layers")
    if layers is not None:
        if not isinstance(layers, dict):
            raise SpecError(f"{what}'s layers is not an object")
        owners["(layers)"] = layers
    return owners


def _disk_bounds(figure: object, what: str) -> tuple[int, int]:
    """A disk figure's (min, max): a number of bytes is both."""
    if isinstance(figure, int) and not isinstance(figure, bool):
        return figure, figure
    if isinstance(figure, dict):
        low, high = figure.get("min"), figure.get("max")
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool) and not isinstance(high, bool):
            return low, high
    raise SpecError(f'{what} is neither a number of bytes nor {{"min", "max"}}')
