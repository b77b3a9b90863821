"""Chapter 10: the trace format: rejection, defaults, results, round trips."""

from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowcheck.compare import result_differences
from cowcheck.machines.strategies import layer_stacks, ops
from cowspec.errors import ModelError, SpecError
from cowspec.formats import oracle as oracle_module
from cowspec.formats.oracle import oracle, oracle_following
from cowspec.formats.trace import Trace, admits, decode_trace, encode_allowed, encode_trace
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Ok, Op
from cowspec.fs.observe import Entry
from cowspec.fs.operations import Allowed, Transition, step
from cowspec.fs.stack import Container
from tests.support import d, f, op

BASE: dict[str, object] = {"format": "cowspec-trace/1", "layers": [], "ops": []}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "cowspec-trace/9"}, "format must be"),
        ({"layers": {}}, "expected a JSON array"),
        ({"ops": [{"op": "frob", "path": "/a"}]}, "unknown op 'frob'"),
        ({"ops": [{"op": "stat"}]}, "field 'path' must be a string"),
        ({"ops": [{"op": "stat", "path": "/a", "extra": 1}]}, "unknown field 'extra'"),
        ({"ops": [{"op": "chmod", "path": "/a", "mode": 0o10000}]}, "'mode' must be an integer"),
        ({"ops": [{"op": "write", "path": "/a", "offset": -1, "data": ""}]}, "'offset' must be an integer"),
        ({"ops": [{"op": "write", "path": "/a", "offset": 0, "data": "!!"}]}, "not valid base64"),
        ({"ops": [{"op": "open", "path": "/a", "flags": "x"}]}, "flags must be"),
        ({"ops": [{"op": "stat", "path": "/a\u0000"}]}, "NUL byte"),
        ({"ops": [{"op": "stat", "path": "/a\ud800"}]}, "not valid Unicode"),
        ({"ops": [{"op": "truncate", "path": "/a", "size": 2**24 + 1}]}, "'size' must be an integer"),
        ({"layers": [[{"path": "/a", "type": "file"}, {"path": "/a", "type": "dir"}]]}, "duplicate path"),
        ({"layers": [[{"path": "a", "type": "file"}]]}, "not absolute and normalised"),
        ({"layers": [[{"path": "/a", "type": "fifo"}]]}, "type must be one of"),
        ({"layers": [[{"path": "/a", "type": "file", "opaque": True}]]}, "only on a directory"),
        ({"layers": [[{"path": "/a", "type": "hardlink", "target": "/b"}]]}, "must name a file or symlink"),
        ({"layers": [[{"path": "/a", "type": "symlink", "target": ""}]]}, "non-empty target"),
        ({"layers": [[{"path": "/", "type": "file"}]]}, "root can only be a directory"),
        ({"features": {"metacopy": True}}, "conflicting options: metacopy=on,redirect_dir=follow"),
    ],
)
def test_rejected_traces_name_the_problem(change: dict[str, object], message: str) -> None:
    """[TRACE-1][TRACE-2][TRACE-3]"""
    with pytest.raises(SpecError, match=message) as raised:
        oracle(decode_trace({**BASE, **change}))
    assert "\n" not in str(raised.value)


def test_defaults() -> None:
    """[TRACE-2] mode 0o644 for files, 0o755 for directories, owner 0:0."""
    result = oracle(
        decode_trace({**BASE, "layers": [[{"path": "/x", "type": "dir"}, {"path": "/x/a", "type": "file"}]]})
    )
    merged = cast(list[Entry], result["merged"])
    assert merged[0] == {"path": "/x", "type": "dir", "mode": 0o755, "uid": 0, "gid": 0}
    assert merged[1]["mode"] == 0o644 and merged[1]["uid"] == 0


def test_result_shape() -> None:
    """[TRACE-4]"""
    result = oracle(
        decode_trace(
            {
                **BASE,
                "layers": [[d("/x"), f("/x/a", "hi")]],
                "ops": [
                    op("read", path="/x/a"),
                    op("readdir", path="/x"),
                    op("unlink", path="/x"),
                    op("open", path="/x", flags="r"),
                ],
            }
        )
    )
    assert result["format"] == "cowspec-trace-result/1"
    assert result["results"] == [
        {"ok": True, "value": "aGk="},
        {"ok": True, "value": ["a"]},
        {"errno": "EISDIR"},
        {"ok": True},
    ]
    assert set(result) == {"format", "results", "merged", "upper", "sizes"}


@settings(max_examples=200)
@given(layers=layer_stacks, trace_ops=st.lists(ops(), max_size=8))
def test_encode_decode_round_trip(layers: tuple[tuple[LayerEntry, ...], ...], trace_ops: list[Op]) -> None:
    """[TRACE-2][TRACE-3] Every generated trace survives encoding."""
    plain = [
        each
        for each in trace_ops
        if not any(str(getattr(each, key, "")).startswith("\0") for key in ("path", "src", "dst"))
    ]
    trace = Trace(decode_trace(BASE).features, layers, tuple(plain))
    assert decode_trace(encode_trace(trace)) == trace


# -- allowed outcomes [TRACE-5] ------------------------------------------------


def _one_mkdir() -> Trace:
    return decode_trace(
        {"format": "cowspec-trace/1", "layers": [[]], "ops": [{"op": "mkdir", "path": "/x", "mode": 493}]}
    )


def test_a_single_allowed_outcome_is_written_as_before() -> None:
    """[TRACE-5][TRACE-4] One allowed outcome: the item of TRACE-4, with nothing added."""
    assert encode_allowed([Ok()]) == {"ok": True}
    assert encode_allowed(["ENOENT"]) == {"errno": "ENOENT"}
    assert oracle(_one_mkdir())["results"] == [{"ok": True}]
    with pytest.raises(ModelError):
        encode_allowed([])


def test_several_allowed_outcomes_admit_each_member_and_nothing_else() -> None:
    """[TRACE-5] ``any_of`` admits each member, and only them; a single item admits itself only."""
    item = encode_allowed([Ok(), "EPERM"])
    assert item == {"any_of": [{"ok": True}, {"errno": "EPERM"}]}
    assert admits(item, {"ok": True}) and admits(item, {"errno": "EPERM"})
    assert not admits(item, {"errno": "EACCES"})
    assert not admits(item, item)  # a real system gives one outcome, never a set
    assert admits({"errno": "EPERM"}, {"errno": "EPERM"}) and not admits({"errno": "EPERM"}, {"ok": True})


def test_a_checker_follows_the_allowed_outcome_the_real_system_gave(monkeypatch: pytest.MonkeyPatch) -> None:
    """[TRACE-5] Where ``mkdir`` may succeed or fail, either real answer agrees, and the trees follow it.

    No op of the spec allows two outcomes today, so the model's ``allowed``
    is stood in for by one that also allows ``EPERM`` with nothing changed.
    """

    def two(container: Container, op: Op) -> Allowed:
        done = step(container, op)
        return Allowed((done, Transition(container, "EPERM")))

    monkeypatch.setattr(oracle_module, "allowed", two)
    trace = _one_mkdir()
    expected = oracle(trace)
    assert expected["results"] == [{"any_of": [{"ok": True}, {"errno": "EPERM"}]}]
    assert [entry["path"] for entry in cast(list[Entry], expected["merged"])] == ["/x"]
    refused = {**expected, "results": [{"errno": "EPERM"}], "merged": [], "upper": []}
    assert result_differences(expected, refused) != []  # the trees of the first outcome are not those of EPERM
    following = oracle_following(trace, refused)
    assert following["merged"] == [] and following["upper"] == []
    assert result_differences(following, refused) == []
    wrong = {**refused, "results": [{"errno": "EACCES"}]}
    lines = result_differences(oracle_following(trace, wrong), wrong)
    assert any(line.startswith("op 0:") and "EACCES" in line for line in lines), lines
