"""Chapter 16: the points of legitimate variation, as the model states them."""

import json
from pathlib import Path
from typing import Any, cast

from cowspec.formats.oracle import model_run, oracle, oracle_following
from cowspec.formats.trace import build_layers, decode_trace, encode_outcome
from cowspec.fs.calls import Ok, Readdir, Stat, StatValue
from cowspec.fs.conformance import CONFORMANCES, LinkBound, broken_links, link_bounds, nlink_bounds
from cowspec.fs.operations import allowed, step
from cowspec.fs.stack import Container, new_container
from tests.support import d, f, h, op, w

ROOT = Path(__file__).resolve().parents[2]


def trace_of(layers: list[list[dict[str, Any]]], *ops: dict[str, Any]) -> Any:
    return decode_trace({"format": "cowspec-trace/1", "layers": layers, "ops": list(ops)})


def container_after(layers: list[list[dict[str, Any]]], *ops: dict[str, Any]) -> Container:
    return model_run(trace_of(layers, *ops)).container


def test_the_profiles() -> None:
    """[CONFORM-1] Two profiles; ``kernel`` is ``allowed``'s default and allows one outcome."""
    assert CONFORMANCES == ("kernel", "portable")
    container = container_after([[d("/x"), f("/x/k"), w("/x/gone")]])
    kernel = allowed(container, Readdir("/x"))
    assert len(kernel.transitions) == 1 and kernel.transitions[0].outcome == step(container, Readdir("/x")).outcome


def test_readdir_of_a_plain_directory_may_leave_its_whiteouts_out() -> None:
    """[CONFORM-5][READDIR-2] Under ``portable`` both listings are allowed; under ``kernel`` only the kernel's."""
    container = container_after([[d("/x"), f("/x/kept"), w("/x/gone")]])
    portable = allowed(container, Readdir("/x"), "portable")
    assert [each.outcome for each in portable.transitions] == [Ok(("gone", "kept")), Ok(("kept",))]
    assert [each.rule for each in portable.transitions] == ["READDIR-2", "CONFORM-5"]
    assert "CONFORM-5" in portable.transitions[1].rules
    # a merged directory, or a plain one without whiteouts, has one listing under both
    merged = container_after([[d("/m"), f("/m/a")], [d("/m"), w("/m/a"), f("/m/b")]])
    assert len(allowed(merged, Readdir("/m"), "portable").transitions) == 1
    clean = container_after([[d("/c"), f("/c/a")]])
    assert len(allowed(clean, Readdir("/c"), "portable").transitions) == 1


def test_the_oracle_writes_the_portable_set_and_keeps_the_kernel_default() -> None:
    """[CONFORM-5][TRACE-5] The portable oracle writes ``any_of``; the default oracle is the kernel's, unchanged."""
    trace = trace_of([[d("/x"), f("/x/kept"), w("/x/gone")]], op("readdir", path="/x"))
    assert oracle(trace)["results"] == [{"ok": True, "value": ["gone", "kept"]}]
    assert oracle(trace, "portable")["results"] == [
        {"any_of": [{"ok": True, "value": ["gone", "kept"]}, {"ok": True, "value": ["kept"]}]}
    ]
    followed = model_run(trace, [{"ok": True, "value": ["kept"]}], "portable")
    assert followed.taken[0].rule == "CONFORM-5"
    observed: dict[str, object] = {"results": [{"ok": True, "value": ["kept"]}]}
    assert oracle_following(trace, observed, "portable")["results"] == oracle(trace, "portable")["results"]


HARDLINKED = [[f("/a", "data"), h("/b", "/a"), f("/single")]]


def test_link_counts_vary_only_once_a_copy_up_broke_a_hardlink() -> None:
    """[CONFORM-4][COPYUP-5] ``hardlink-copy-up``: /a's copy and /b may show 1 to 3 links; /single never varies."""
    before = container_after(HARDLINKED)
    assert broken_links(before) == {} and nlink_bounds(before) == {}
    assert len(allowed(before, Stat("/b"), "portable").transitions) == 1
    after = container_after(HARDLINKED, op("append", path="/a", data="++"), op("append", path="/single", data="+"))
    assert nlink_bounds(after) == {"/a": 3, "/b": 3}
    choices = allowed(after, Stat("/b"), "portable").transitions
    kernel = choices[0].outcome
    assert isinstance(kernel, Ok) and isinstance(kernel.value, StatValue) and kernel.value.nlink == 2
    others = [each.outcome for each in choices[1:]]
    assert [each.value.nlink for each in others if isinstance(each, Ok) and isinstance(each.value, StatValue)] == [1, 3]
    assert {each.rule for each in choices[1:]} == {"CONFORM-4"}
    assert len(allowed(after, Stat("/single"), "portable").transitions) == 1
    assert len(allowed(after, Stat("/b"), "kernel").transitions) == 1


def test_a_link_made_to_the_copy_raises_the_bound() -> None:
    """[CONFORM-4] Names the container gives the copy count too, and are covered themselves."""
    after = container_after(HARDLINKED, op("chmod", path="/a", mode=0o600), op("link", src="/a", dst="/c"))
    assert nlink_bounds(after) == {"/a": 4, "/b": 4, "/c": 4}


def test_the_rationale_trace_under_both_profiles() -> None:
    """[CONFORM-4] The portable oracle of ``hardlink-copy-up.json`` allows other counts for the broken link."""
    document = json.loads((ROOT / "docs/rationale/hardlink-copy-up.json").read_text())
    trace = decode_trace(document)
    kernel, portable = oracle(trace), oracle(trace, "portable")
    assert kernel["merged"] == portable["merged"]
    kernel_results, portable_results = cast(list[Any], kernel["results"]), cast(list[Any], portable["results"])
    stat_b = portable_results[3]
    assert isinstance(stat_b, dict) and "any_of" in stat_b
    assert [member["value"]["nlink"] for member in stat_b["any_of"]] == [2, 1, 3]
    assert kernel_results[0] == portable_results[0]  # before the copy-up nothing varies
    assert new_container(build_layers(trace)).upper.entries.get("/a") is None
    assert encode_outcome(step(new_container(build_layers(trace)), Stat("/a")).outcome)["ok"] is True


def test_link_counts_vary_once_a_name_of_an_image_hardlink_is_hidden() -> None:
    """[CONFORM-6] After ``unlink /b``, /a may show 1 (the names left) or 2 (the image inode's count, as the
    kernel says); with three names and one hidden, 2 or 3; a hardlink with all its names shown never varies."""
    kept = container_after(HARDLINKED)
    assert link_bounds(kept) == {}
    after = container_after(HARDLINKED, op("unlink", path="/b"))
    assert link_bounds(after) == {"/a": LinkBound(1, 2, "CONFORM-6")}
    choices = allowed(after, Stat("/a"), "portable").transitions
    counts = [each.outcome.value.nlink for each in choices if isinstance(each.outcome, Ok)]  # type: ignore[union-attr]
    assert counts == [2, 1] and choices[1].rule == "CONFORM-6"
    assert len(allowed(after, Stat("/a"), "kernel").transitions) == 1
    three = [[f("/a", "data"), h("/b", "/a"), h("/c", "/a")]]
    hidden_below = container_after([*three, [w("/c")]])  # hidden by a higher layer's whiteout, before any op
    assert link_bounds(hidden_below) == {"/a": LinkBound(2, 3, "CONFORM-6"), "/b": LinkBound(2, 3, "CONFORM-6")}
    # A rename copies the name up (COPYUP-5): the link is broken, so CONFORM-4 applies, not this rule.
    renamed = container_after(three, op("rename", src="/c", dst="/d"))
    assert {bound.rule for bound in link_bounds(renamed).values()} == {"CONFORM-4"}
    # A copy-up that broke the link takes CONFORM-4's wider range, not CONFORM-6's.
    broken = container_after(HARDLINKED, op("append", path="/a", data="+"), op("unlink", path="/b"))
    assert link_bounds(broken) == {"/a": LinkBound(1, 3, "CONFORM-4")}
