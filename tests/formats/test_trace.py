"""Chapter 10: the trace format: rejection, defaults, results, round trips."""

from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowcheck.machines.strategies import layer_stacks, ops
from cowspec.errors import SpecError
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Op
from cowspec.fs.observe import Entry
from cowspec.formats.oracle import oracle
from cowspec.formats.trace import Trace, decode_trace, encode_trace
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
        ({"features": {"index": True}}, "not modelled"),
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
