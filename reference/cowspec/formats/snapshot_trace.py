"""The snapshot trace format ``cowspec-snapshot-trace/1``: calls to one snapshotter.

A snapshot trace names a snapshotter (``overlayfs`` or ``native``) and a
list of calls: prepare, view, commit and remove of snapshots by key, and
filesystem ops made through the mounts of an active snapshot, in the op
vocabulary of ``cowspec-trace/1``. What a call does is
``cowspec.snapshot.steps``'s to say: this module decodes calls and encodes
what they give, and rejects a malformed document with a ``SpecError``
whose message names the place and the problem in one line [SNAP-1].
``docs/formats/snapshot-trace.md`` is the contract.
"""

import re
from dataclasses import dataclass
from typing import cast

from cowspec.errors import SpecError
from cowspec.formats.trace import decode_op, encode_op, encode_outcome
from cowspec.fs.observe import Entry
from cowspec.snapshot.calls import CALL_NAMES, Commit, Perform, Prepare, Remove, SnapshotCall, View
from cowspec.snapshot.observe import infos
from cowspec.snapshot.state import SNAPSHOTTERS, Active, Snapshots, Snapshotter, empty_snapshots
from cowspec.snapshot.steps import Done, Failed, step

SNAPSHOT_TRACE_FORMAT = "cowspec-snapshot-trace/1"
SNAPSHOT_RESULT_FORMAT = "cowspec-snapshot-trace-result/1"
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A key or name: what ``ctr`` takes as one argument on every snapshotter (no empty key, no option-like dash)."""
CALL_FIELDS: dict[str, set[str]] = {
    "prepare": {"key", "parent"},
    "view": {"key", "parent"},
    "commit": {"name", "key"},
    "remove": {"key"},
    "perform": {"key", "op"},
}


@dataclass(frozen=True, slots=True)
class SnapshotTrace:
    """A decoded snapshot trace: the snapshotter and its calls, in order."""

    snapshotter: Snapshotter
    calls: tuple[SnapshotCall, ...]


def _key(fields: dict[str, object], name: str, where: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or KEY.fullmatch(value) is None:
        raise SpecError(
            f"{where}: field {name!r} must be a key: 1 to 64 letters, digits, '.', '_' or '-', the first a letter or"
            " a digit"
        )
    return value


def decode_call(value: object, where: str) -> SnapshotCall:
    """One call of a snapshot trace [SNAP-1]."""
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a JSON object")
    fields = cast(dict[str, object], value)
    name = fields.get("call")
    if not isinstance(name, str) or name not in CALL_FIELDS:
        raise SpecError(f"{where}: unknown call {name!r} (prepare, view, commit, remove, perform)")
    unknown = sorted(set(fields) - CALL_FIELDS[name] - {"call"})
    if unknown:
        raise SpecError(f"{where} ({name}): unknown field {unknown[0]!r}")
    where = f"{where} ({name})"
    key = _key(fields, "key", where)
    match name:
        case "prepare" | "view":
            parent = None if fields.get("parent") is None else _key(fields, "parent", where)
            return Prepare(key, parent) if name == "prepare" else View(key, parent)
        case "commit":
            return Commit(_key(fields, "name", where), key)
        case "remove":
            return Remove(key)
    if "op" not in fields:
        raise SpecError(f"{where}: missing field 'op'")
    return Perform(key, decode_op(fields["op"], f"{where} op"))


def decode_snapshot_trace(document: object) -> SnapshotTrace:
    """A typed ``SnapshotTrace`` from a parsed JSON document [SNAP-1]."""
    if not isinstance(document, dict):
        raise SpecError("snapshot trace: expected a JSON object")
    fields = cast(dict[str, object], document)
    if fields.get("format") != SNAPSHOT_TRACE_FORMAT:
        raise SpecError(f"snapshot trace: format must be {SNAPSHOT_TRACE_FORMAT!r}")
    unknown = sorted(set(fields) - {"format", "snapshotter", "calls"})
    if unknown:
        raise SpecError(f"snapshot trace: unknown field {unknown[0]!r}")
    snapshotter = fields.get("snapshotter")
    if snapshotter not in SNAPSHOTTERS:
        raise SpecError(f"snapshot trace: snapshotter must be one of {', '.join(SNAPSHOTTERS)}")
    calls = fields.get("calls", [])
    if not isinstance(calls, list):
        raise SpecError("snapshot trace: calls must be a list")
    decoded = tuple(decode_call(each, f"call {index}") for index, each in enumerate(calls))
    return SnapshotTrace(snapshotter, decoded)


def encode_call(call: SnapshotCall) -> Entry:
    """A call in its JSON form (``decode_call`` gives it back)."""
    fields: Entry = {"call": CALL_NAMES[type(call)]}
    match call:
        case Prepare() | View():
            fields.update(key=call.key, parent=call.parent)
        case Commit():
            fields.update(name=call.name, key=call.key)
        case Remove():
            fields.update(key=call.key)
        case Perform():
            fields.update(key=call.key, op=encode_op(call.op))
    return fields


def encode_snapshot_trace(trace: SnapshotTrace) -> Entry:
    """A snapshot trace in its JSON form; ``decode_snapshot_trace`` of it gives it back."""
    return {
        "format": SNAPSHOT_TRACE_FORMAT,
        "snapshotter": trace.snapshotter,
        "calls": [encode_call(call) for call in trace.calls],
    }


def encode_snapshot_outcome(outcome: Done | Failed) -> Entry:
    """What became of one call: ``{"ok": true}``, a filesystem result item
    (``cowspec-trace/1``'s, for a perform) or ``{"error": KIND}`` [SNAP-1]."""
    if isinstance(outcome, Failed):
        return {"error": outcome.kind}
    if outcome.result is None:
        return {"ok": True}
    return encode_outcome(outcome.result)


def run_snapshot_model(trace: SnapshotTrace) -> Entry:
    """The model's answer to a trace: each call's outcome, and the snapshots
    that exist at the end as ``ctr snapshots ls`` lists them [SNAP-1]."""
    snapshots: Snapshots = empty_snapshots(trace.snapshotter)
    results: list[Entry] = []
    for index, call in enumerate(trace.calls):
        if isinstance(call, Perform) and not isinstance(snapshots.get(call.key), Active):
            raise SpecError(f"call {index} (perform): {call.key!r} is not an active snapshot at that point")
        snapshots, outcome = step(snapshots, call)
        results.append(encode_snapshot_outcome(outcome))
    listed = {key: {"kind": info.kind, "parent": info.parent} for key, info in infos(snapshots).items()}
    return {"format": SNAPSHOT_RESULT_FORMAT, "results": results, "snapshots": listed}
