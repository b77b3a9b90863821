"""The snapshot trace format: decoding, encoding, the model's answer, and one-line refusals [SNAP-1]."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cowcheck.machines.strategies import ops
from cowspec.errors import SpecError
from cowspec.formats.snapshot_trace import (
    SnapshotTrace,
    decode_snapshot_trace,
    encode_snapshot_outcome,
    encode_snapshot_trace,
    run_snapshot_model,
)
from cowspec.fs.calls import Mkdir, Rename
from cowspec.snapshot.calls import Commit, Perform, Prepare, Remove, SnapshotCall, View
from cowspec.snapshot.state import SNAPSHOTTERS
from cowspec.snapshot.steps import Done, Failed

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats" / "snapshot-trace.md"

EXAMPLE = {
    "format": "cowspec-snapshot-trace/1",
    "snapshotter": "overlayfs",
    "calls": [
        {"call": "prepare", "key": "a", "parent": None},
        {"call": "perform", "key": "a", "op": {"op": "mkdir", "path": "/d", "mode": 493}},
        {"call": "commit", "name": "base", "key": "a"},
        {"call": "prepare", "key": "b", "parent": "base"},
        {"call": "view", "key": "v", "parent": "base"},
        {"call": "perform", "key": "b", "op": {"op": "rename", "src": "/d", "dst": "/e"}},
        {"call": "remove", "key": "base"},
    ],
}


def test_decode_the_example() -> None:
    """[SNAP-1] The documented example decodes to these calls."""
    trace = decode_snapshot_trace(EXAMPLE)
    assert trace == SnapshotTrace(
        "overlayfs",
        (
            Prepare("a", None),
            Perform("a", Mkdir("/d", 0o755)),
            Commit("base", "a"),
            Prepare("b", "base"),
            View("v", "base"),
            Perform("b", Rename("/d", "/e")),
            Remove("base"),
        ),
    )


def test_the_models_answer_is_the_documented_one() -> None:
    """[SNAP-1][SNAP-5][SNAP-7] The result in docs/formats/snapshot-trace.md is what the model gives."""
    text = DOC.read_text()
    documented = json.loads(text.split("```json")[2].split("```")[0])
    assert run_snapshot_model(decode_snapshot_trace(EXAMPLE)) == documented
    assert json.loads(text.split("```json")[1].split("```")[0]) == EXAMPLE


def test_outcomes() -> None:
    """[SNAP-1] ok, a filesystem result item, or the error kind."""
    assert encode_snapshot_outcome(Done(None, ("SNAP-2",))) == {"ok": True}
    assert encode_snapshot_outcome(Done("EXDEV", ("SNAP-7",))) == {"errno": "EXDEV"}
    assert encode_snapshot_outcome(Failed("invalid argument", "SNAP-2")) == {"error": "invalid argument"}


KEYS = st.sampled_from(("a", "b", "base", "c.1", "x_y-z", "0"))


@st.composite
def calls(draw: st.DrawFn) -> SnapshotCall:
    match draw(st.sampled_from(("prepare", "view", "commit", "remove", "perform"))):
        case "prepare":
            return Prepare(draw(KEYS), draw(st.none() | KEYS))
        case "view":
            return View(draw(KEYS), draw(st.none() | KEYS))
        case "commit":
            return Commit(draw(KEYS), draw(KEYS))
        case "remove":
            return Remove(draw(KEYS))
    return Perform(draw(KEYS), draw(ops()))


@given(st.sampled_from(SNAPSHOTTERS), st.lists(calls(), max_size=8))
def test_encode_decode_round_trip(snapshotter: str, drawn: list[SnapshotCall]) -> None:
    """[SNAP-1] Any trace survives JSON both ways."""
    trace = SnapshotTrace(snapshotter, tuple(drawn))  # type: ignore[arg-type]
    document = json.loads(json.dumps(encode_snapshot_trace(trace)))
    assert decode_snapshot_trace(document) == trace


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "snapshot trace: expected a JSON object"),
        ({"format": "cowspec-trace/1"}, "snapshot trace: format must be 'cowspec-snapshot-trace/1'"),
        (
            {"format": "cowspec-snapshot-trace/1", "snapshotter": "btrfs"},
            "snapshot trace: snapshotter must be one of overlayfs, native",
        ),
        ({**EXAMPLE, "extra": 1}, "snapshot trace: unknown field 'extra'"),
        ({**EXAMPLE, "calls": {}}, "snapshot trace: calls must be a list"),
        ({**EXAMPLE, "calls": [7]}, "call 0: expected a JSON object"),
        ({**EXAMPLE, "calls": [{"call": "mount", "key": "a"}]}, "call 0: unknown call 'mount'"),
        ({**EXAMPLE, "calls": [{"call": "remove", "key": "a", "x": 1}]}, "call 0 (remove): unknown field 'x'"),
        ({**EXAMPLE, "calls": [{"call": "remove", "key": ""}]}, "call 0 (remove): field 'key' must be a key"),
        ({**EXAMPLE, "calls": [{"call": "remove", "key": "-rf"}]}, "call 0 (remove): field 'key' must be a key"),
        ({**EXAMPLE, "calls": [{"call": "commit", "key": "a"}]}, "call 0 (commit): field 'name' must be a key"),
        (
            {**EXAMPLE, "calls": [{"call": "prepare", "key": "a", "parent": 3}]},
            "call 0 (prepare): field 'parent' must be",
        ),
        ({**EXAMPLE, "calls": [{"call": "perform", "key": "a"}]}, "call 0 (perform): missing field 'op'"),
        (
            {**EXAMPLE, "calls": [{"call": "perform", "key": "a", "op": {"op": "fly", "path": "/"}}]},
            "call 0 (perform) op: unknown op 'fly'",
        ),
    ],
)
def test_malformed_documents_are_refused_in_one_line(document: object, message: str) -> None:
    """[SNAP-1] A malformed document: a SpecError (a ValueError) naming the place and the problem."""
    with pytest.raises(SpecError) as raised:
        decode_snapshot_trace(document)
    assert isinstance(raised.value, ValueError)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_a_perform_through_what_is_not_active_is_refused() -> None:
    """[SNAP-1] The model cannot answer a perform through a key that is not active: the trace is refused."""
    trace = decode_snapshot_trace(
        {**EXAMPLE, "calls": [{"call": "perform", "key": "a", "op": {"op": "stat", "path": "/"}}]}
    )
    with pytest.raises(SpecError, match=r"^call 0 \(perform\): 'a' is not an active snapshot"):
        run_snapshot_model(trace)
