"""The trace format ``cowspec-trace/1``: decoding input, encoding results.

This module turns an already-parsed JSON document into typed values and
back, and rejects what the format does not allow with a ``SpecError`` whose
message names the place and the problem in one line [TRACE-1]. Reading
files is the caller's business.
"""

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from cowspec.errors import ModelError, SpecError
from cowspec.fs.build import ENTRY_TYPES, EntryType, LayerEntry, build_layer
from cowspec.fs.calls import (
    Append,
    Chmod,
    Chown,
    Create,
    Link,
    Mkdir,
    Op,
    Open,
    Outcome,
    Read,
    Readdir,
    Readlink,
    Rename,
    Rmdir,
    Stat,
    StatValue,
    Symlink,
    Truncate,
    Unlink,
    Write,
)
from cowspec.fs.entries import (
    DEFAULT_DIR_MODE,
    DEFAULT_FILE_MODE,
)
from cowspec.fs.features import Features, features_from
from cowspec.fs.layer import Layer
from cowspec.fs.observe import Entry, layer_tree, merged_tree
from cowspec.fs.paths import ROOT, is_normalised
from cowspec.fs.sizes import container_sizes
from cowspec.fs.stack import Container

TRACE_FORMAT = "cowspec-trace/1"
RESULT_FORMAT = "cowspec-trace-result/1"
MAX_ID = 2**32 - 2


@dataclass(frozen=True, slots=True)
class Trace:
    """A decoded trace: features, layers (bottom first) and ops."""

    features: Features
    layers: tuple[tuple[LayerEntry, ...], ...]
    ops: tuple[Op, ...]


# -- small typed readers --------------------------------------------------------


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a JSON object")
    return cast(dict[str, object], value)


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise SpecError(f"{where}: expected a JSON array")
    return value


def _int(fields: dict[str, object], key: str, where: str, low: int, high: int, default: int | None = None) -> int:
    value = fields.get(key, default)
    if value is None:
        raise SpecError(f"{where}: missing field {key!r}")
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(f"{where}: field {key!r} must be an integer from {low} to {high}")
    return value


def _str(fields: dict[str, object], key: str, where: str) -> str:
    value = fields.get(key)
    if not isinstance(value, str):
        raise SpecError(f"{where}: field {key!r} must be a string")
    if "\0" in value:
        raise SpecError(f"{where}: field {key!r} contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(f"{where}: field {key!r} is not valid Unicode text") from None
    return value


def _data(fields: dict[str, object], key: str, where: str, default: bytes | None = None) -> bytes:
    if key not in fields and default is not None:
        return default
    text = _str(fields, key, where)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SpecError(f"{where}: field {key!r} is not valid base64") from None


def _known_fields(fields: dict[str, object], allowed: set[str], where: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown field {unknown[0]!r}")


# -- layers ---------------------------------------------------------------------


def decode_entry(value: object, where: str) -> LayerEntry:
    """One layer entry [TRACE-2]."""
    fields = _object(value, where)
    path = _str(fields, "path", where)
    if not is_normalised(path):
        raise SpecError(f"{where}: path {path!r} is not absolute and normalised")
    kind = fields.get("type")
    if kind not in ENTRY_TYPES:
        raise SpecError(f"{where}: type must be one of {', '.join(ENTRY_TYPES)}")
    kind = cast(EntryType, kind)
    _known_fields(fields, {"path", "type", "mode", "uid", "gid", "data", "target", "opaque"}, where)
    default_mode = DEFAULT_DIR_MODE if kind == "dir" else DEFAULT_FILE_MODE
    mode = _int(fields, "mode", where, 0, 0o7777, default_mode)
    uid = _int(fields, "uid", where, 0, MAX_ID, 0)
    gid = _int(fields, "gid", where, 0, MAX_ID, 0)
    opaque = fields.get("opaque", False)
    if not isinstance(opaque, bool) or (opaque and kind != "dir"):
        raise SpecError(f"{where}: opaque must be true or false, and only on a directory")
    if path == ROOT and kind != "dir":
        raise SpecError(f"{where}: the root can only be a directory")
    data = _data(fields, "data", where, b"") if kind == "file" else b""
    target = _str(fields, "target", where) if kind in ("symlink", "hardlink") else ""
    if kind == "symlink" and target == "":
        raise SpecError(f"{where}: a symlink needs a non-empty target")
    if kind not in ("dir", "file"):
        mode = 0  # a symlink, hardlink or whiteout has no mode of its own
    if kind in ("hardlink", "whiteout"):
        uid = gid = 0  # a hardlink shares its target's owner; a whiteout has none
    return LayerEntry(path, kind, mode, uid, gid, data, target, opaque)


def _op_path(fields: dict[str, object], key: str, where: str) -> str:
    path = _str(fields, key, where)
    if not path.startswith("/"):
        raise SpecError(f"{where}: {key} {path!r} is not absolute")
    if path != ROOT and (path.endswith("/") or path.rsplit("/", 1)[1] in (".", "..")):
        raise SpecError(f"{where}: {key} {path!r} ends in '/', '.' or '..', which the spec does not cover")
    return path


OP_FIELDS: dict[str, set[str]] = {
    "create": {"path", "mode"},
    "open": {"path", "flags"},
    "write": {"path", "offset", "data"},
    "append": {"path", "data"},
    "truncate": {"path", "size"},
    "read": {"path"},
    "stat": {"path"},
    "readdir": {"path"},
    "readlink": {"path"},
    "mkdir": {"path", "mode"},
    "rmdir": {"path"},
    "unlink": {"path"},
    "rename": {"src", "dst"},
    "symlink": {"target", "path"},
    "link": {"src", "dst"},
    "chmod": {"path", "mode"},
    "chown": {"path", "uid", "gid"},
}
MAX_OFFSET = 2**24
"""The largest offset or size a trace may name (16 MiB): the model keeps a
file's bytes in memory, and a sparse file of gigabytes is outside its scope."""


def decode_op(value: object, where: str) -> Op:
    """One op, with its fields checked [TRACE-3]."""
    fields = _object(value, where)
    name = fields.get("op")
    if not isinstance(name, str) or name not in OP_FIELDS:
        raise SpecError(f"{where}: unknown op {name!r}")
    _known_fields(fields, OP_FIELDS[name] | {"op"}, where)
    where = f"{where} ({name})"
    if name in ("rename", "link"):
        src, dst = _op_path(fields, "src", where), _op_path(fields, "dst", where)
        return Rename(src, dst) if name == "rename" else Link(src, dst)
    path = _op_path(fields, "path", where)
    match name:
        case "create" | "mkdir" | "chmod":
            mode = _int(fields, "mode", where, 0, 0o7777)
            return (
                Create(path, mode) if name == "create" else Mkdir(path, mode) if name == "mkdir" else Chmod(path, mode)
            )
        case "open":
            flags = fields.get("flags")
            if flags not in ("r", "w", "rw"):
                raise SpecError(f'{where}: flags must be "r", "w" or "rw"')
            return Open(path, flags)
        case "write":
            return Write(path, _int(fields, "offset", where, 0, MAX_OFFSET), _data(fields, "data", where))
        case "append":
            return Append(path, _data(fields, "data", where))
        case "truncate":
            return Truncate(path, _int(fields, "size", where, -MAX_OFFSET, MAX_OFFSET))
        case "symlink":
            return Symlink(_str(fields, "target", where), path)
        case "chown":
            return Chown(path, _int(fields, "uid", where, 0, MAX_ID), _int(fields, "gid", where, 0, MAX_ID))
    simple: dict[str, type[Read | Stat | Readdir | Readlink | Rmdir | Unlink]] = {
        "read": Read,
        "stat": Stat,
        "readdir": Readdir,
        "readlink": Readlink,
        "rmdir": Rmdir,
        "unlink": Unlink,
    }
    return simple[name](path)


def decode_trace(document: object) -> Trace:
    """A typed ``Trace`` from a parsed JSON document [TRACE-1]."""
    fields = _object(document, "trace")
    if fields.get("format") != TRACE_FORMAT:
        raise SpecError(f"trace: format must be {TRACE_FORMAT!r}")
    _known_fields(fields, {"format", "features", "layers", "ops"}, "trace")
    flags = _object(fields.get("features", {}), "trace features")
    features = features_from(cast(dict[str, bool], flags))
    layers = tuple(
        tuple(
            decode_entry(entry, f"layer {index} entry {number}")
            for number, entry in enumerate(_list(layer, f"layer {index}"))
        )
        for index, layer in enumerate(_list(fields.get("layers", []), "trace layers"))
    )
    ops = tuple(decode_op(op, f"op {index}") for index, op in enumerate(_list(fields.get("ops", []), "trace ops")))
    return Trace(features, layers, ops)


def build_layers(trace: Trace) -> tuple[Layer, ...]:
    """Every layer of ``trace`` as a ``Layer``, bottom first."""
    return tuple(build_layer(entries, f"layer {index}") for index, entries in enumerate(trace.layers))


# -- encoding -------------------------------------------------------------------


def encode_stat(value: StatValue) -> Entry:
    """``lstat``'s value in JSON form."""
    fields: Entry = {"type": value.type, "mode": value.mode, "uid": value.uid, "gid": value.gid}
    if value.size is not None:
        fields["size"] = value.size
    if value.nlink is not None:
        fields["nlink"] = value.nlink
    return fields


def encode_outcome(outcome: Outcome) -> Entry:
    """One item of ``results`` [TRACE-4]."""
    if isinstance(outcome, str):
        return {"errno": outcome}
    value = outcome.value
    if value is None:
        return {"ok": True}
    if isinstance(value, bytes):
        return {"ok": True, "value": base64.b64encode(value).decode()}
    if isinstance(value, StatValue):
        return {"ok": True, "value": encode_stat(value)}
    if isinstance(value, tuple):
        return {"ok": True, "value": list(value)}
    return {"ok": True, "value": value}


def encode_allowed(outcomes: Sequence[Outcome]) -> Entry:
    """One item of ``results`` for a set of allowed outcomes: the outcome itself if it is one [TRACE-5].

    Several are written ``{"any_of": [...]}``, each member as a single
    outcome is written, in the model's order, the first being the one the
    model goes on from when it runs alone.
    """
    if not outcomes:
        raise ModelError("an op must allow at least one outcome")
    if len(outcomes) == 1:
        return encode_outcome(outcomes[0])
    return {"any_of": [encode_outcome(outcome) for outcome in outcomes]}


def admits(item: object, observed: object) -> bool:
    """Whether a real system's result item is one the model's result item allows [TRACE-5]."""
    if isinstance(item, dict) and "any_of" in item:
        members = item["any_of"]
        return isinstance(members, list) and observed in members
    return item == observed


def encode_result(answers: Sequence[Sequence[Outcome]], container: Container) -> Entry:
    """The result document of a run [TRACE-4][TRACE-5][OBSERVE-1]: each op's allowed outcomes, then the trees.

    A file of ``upper`` carries ``"metacopy": true`` and ``"redirect"`` only
    where the writable layer has them [METACOPY-4], so a result without those
    features is as it always was (a compatible extension of the format).
    """
    sizes = container_sizes(container)
    return {
        "format": RESULT_FORMAT,
        "results": [encode_allowed(outcomes) for outcomes in answers],
        "merged": merged_tree(container),
        "upper": layer_tree(container.upper),
        "sizes": {"size": sizes.size, "virtual_size": sizes.virtual_size},
    }


def encode_entry(entry: LayerEntry) -> Entry:
    """A layer entry back in the trace's JSON form (defaults written out)."""
    fields: Entry = {"path": entry.path, "type": entry.type}
    if entry.type in ("dir", "file"):
        fields.update(mode=entry.mode, uid=entry.uid, gid=entry.gid)
    if entry.type == "symlink":
        fields.update(uid=entry.uid, gid=entry.gid)
    if entry.type == "file":
        fields["data"] = base64.b64encode(entry.data).decode()
    if entry.type in ("symlink", "hardlink"):
        fields["target"] = entry.target
    if entry.opaque:
        fields["opaque"] = True
    return fields


def encode_op(op: Op) -> Entry:
    """An op in the trace's JSON form."""
    from cowspec.fs.calls import OP_NAMES

    fields: Entry = {"op": OP_NAMES[type(op)]}
    for key in op.__dataclass_fields__:
        value = getattr(op, key)
        fields[key] = base64.b64encode(value).decode() if isinstance(value, bytes) else value
    return fields


def encode_trace(trace: Trace) -> Entry:
    """A trace in its JSON form; ``decode_trace`` of it gives it back."""
    return {
        "format": TRACE_FORMAT,
        "features": {name: True for name in trace.features.enabled()},
        "layers": [[encode_entry(entry) for entry in layer] for layer in trace.layers],
        "ops": [encode_op(op) for op in trace.ops],
    }
