"""Every outcome of the model names the spec rule that decided it, and the rules it exercised."""

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cowcheck.machines.strategies import changing, layer_stacks, looking, making, moving, removing, view_of
from cowspec.formats.oracle import model_run
from cowspec.formats.trace import build_layers, decode_trace
from cowspec.fs.build import build_layer
from cowspec.fs.calls import Mkdir, Ok, Rename, Stat
from cowspec.fs.observe import merged_tree
from cowspec.fs.operations import Transition, allowed, check, denial, step
from cowspec.fs.resolve import Denied, find, resolve, walk, why_absent
from cowspec.fs.stack import Container, new_container
from tests.support import d, f, h, op, s, w
from tests.test_spec_rules import defined_rules

ROOT = Path(__file__).resolve().parents[2]
RULES = defined_rules(ROOT / "spec")


def run(layers: list[list[dict[str, Any]]], *ops: dict[str, Any]) -> list[Transition]:
    """The transitions the model takes through ``ops`` on ``layers``."""
    trace = decode_trace({"format": "cowspec-trace/1", "layers": layers, "ops": list(ops)})
    return list(model_run(trace).taken)


def last(layers: list[list[dict[str, Any]]], *ops: dict[str, Any]) -> Transition:
    return run(layers, *ops)[-1]


# -- the rule that decides each errno ------------------------------------------------------


def test_a_whited_out_name_is_absent_by_whiteout_1_and_a_missing_one_by_lookup_1() -> None:
    """[WHITEOUT-1][LOOKUP-1] ENOENT names the rule that made the name absent."""
    layers = [[f("/a", "x"), d("/d"), f("/d/k")], [w("/a")]]
    hidden = last(layers, op("stat", path="/a"))
    assert (hidden.outcome, hidden.rule) == ("ENOENT", "WHITEOUT-1")
    missing = last(layers, op("stat", path="/zz"))
    assert (missing.outcome, missing.rule) == ("ENOENT", "LOOKUP-1")
    # a whiteout the container made names the same rule
    removed = run(layers, op("unlink", path="/d/k"), op("read", path="/d/k"))
    assert (removed[1].outcome, removed[1].rule) == ("ENOENT", "WHITEOUT-1")
    assert "WHITEOUT-2" in removed[0].rules


def test_the_walk_names_its_path_rules() -> None:
    """[PATH-3][PATH-4][PATH-5] The walk's errnos carry the walk's rules."""
    layers = [[f("/file"), s("/loop", "/loop"), s("/empty", "x"), s("/dirlink", "/file/")]]
    assert last(layers, op("stat", path="/file/x")).rule == "PATH-5"
    assert last(layers, op("stat", path="/nothing/x")).rule == "PATH-5"
    assert last(layers, op("read", path="/loop")).rule == "PATH-4"
    assert last(layers, op("read", path="/dirlink")).rule == "PATH-3"
    followed = last(layers, op("symlink", path="/via", target="/file"), op("read", path="/via"))
    assert followed.outcome != "ENOENT" and "PATH-3" in followed.rules


def test_each_call_names_its_own_checks() -> None:
    """[OP-3][RMDIR-1][RMDIR-2][UNLINK-1][READLINK-1][TRUNCATE-1][SYMLINK-1][LINK-1][OPEN-1][READ-1]"""
    layers = [[d("/d"), f("/d/x"), d("/e"), f("/a")]]
    cases = {
        "OP-3": op("mkdir", path="/d", mode=0o755),
        "RMDIR-1": op("rmdir", path="/"),
        "RMDIR-2": op("rmdir", path="/d"),
        "UNLINK-1": op("unlink", path="/d"),
        "READLINK-1": op("readlink", path="/a"),
        "TRUNCATE-1": op("truncate", path="/a", size=-1),
        "SYMLINK-1": op("symlink", path="/n", target=""),
        "LINK-1": op("link", src="/d", dst="/n"),
        "OPEN-1": op("open", path="/d", flags="w"),
        "READ-1": op("read", path="/d"),
        "READDIR-1": op("readdir", path="/a"),
    }
    for rule, each in cases.items():
        transition = last(layers, each)
        assert isinstance(transition.outcome, str), (rule, transition.outcome)
        assert transition.rule == rule, (each, transition.rule)
        assert transition.rules[:2] == (rule, "OP-1")


def test_rename_names_its_checks_and_its_late_refusal() -> None:
    """[RENAME-1][RENAME-2][RENAME-3][RENAME-7] ``failed-rename-marks-opaque``'s refusal is RENAME-7."""
    layers = [[d("/x"), d("/low"), f("/a")]]
    assert last(layers, op("rename", src="/", dst="/q")).rule == "RENAME-1"
    assert last(layers, op("rename", src="/x", dst="/x/y")).rule == "RENAME-1"
    assert last(layers, op("rename", src="/a", dst="/x")).rule == "RENAME-2"
    assert last(layers, op("rename", src="/low", dst="/moved")).rule == "RENAME-3"
    document = json.loads((ROOT / "docs/rationale/failed-rename-marks-opaque.json").read_text())
    trace = decode_trace(document)
    refused = model_run(trace).taken[-1]
    assert (refused.outcome, refused.rule) == ("ENOTEMPTY", "RENAME-7")


def test_successes_name_the_call_and_what_it_did() -> None:
    """[COPYUP-5][COPYUP-4][COPYUP-2][WHITEOUT-4][READDIR-2][LOOKUP-3][RENAME-4]"""
    layers = [[f("/a", "data"), h("/b", "/a"), d("/p"), d("/p/q"), f("/p/q/f")], [d("/p"), w("/gone")]]
    append = last(layers, op("append", path="/a", data="++"))
    assert append.outcome == Ok()
    assert append.rule == "WRITE-2"
    assert {"COPYUP-1", "COPYUP-4", "COPYUP-5", "COPYUP-6"} <= set(append.rules)
    deep = last(layers, op("chmod", path="/p/q/f", mode=0o600))
    assert deep.rule == "CHMOD-1" and {"COPYUP-2", "COPYUP-4", "LOOKUP-1"} <= set(deep.rules)
    over = run(layers, op("unlink", path="/a"), op("mkdir", path="/a", mode=0o755))
    assert over[1].rule == "MKDIR-1" and "WHITEOUT-4" in over[1].rules
    assert last(layers, op("readdir", path="/p")).rule == "READDIR-1"
    assert "LOOKUP-3" in last(layers, op("readdir", path="/p")).rules
    assert last(layers, op("readdir", path="/p/q")).rule == "READDIR-2"
    assert last(layers, op("link", src="/a", dst="/c"), op("rename", src="/a", dst="/c")).rule == "RENAME-4"


def test_check_still_gives_the_errno_alone() -> None:
    """The errno-only API is unchanged: ``check``, ``resolve``, ``resolve_final`` give strings."""
    trace = decode_trace({"format": "cowspec-trace/1", "layers": [[f("/f")]], "ops": []})
    container = new_container(build_layers(trace))
    assert check(container, Stat("/f/x")) == "ENOTDIR"
    assert denial(container, Stat("/f/x")) == Denied("ENOTDIR", "PATH-5")
    assert resolve(container, "/f/x/y", follow=False) == "ENOTDIR"
    assert walk(container, "/f/x/y", follow=False) == Denied("ENOTDIR", "PATH-5")
    assert find(container, "/nothing", follow=False) == Denied("ENOENT", "LOOKUP-1")
    assert check(container, Mkdir("/n", 0o755)) is None
    assert check(container, Rename("/", "/x")) == "EBUSY"


# -- every outcome, on random stacks ---------------------------------------------------------


@st.composite
def stacks_and_ops(draw: st.DrawFn) -> tuple[Container, list[Transition]]:
    """A random stack and up to 25 ops drawn against the model's view, as the machine draws them."""
    layers = draw(layer_stacks)
    lowers = tuple(build_layer(entries, f"layer {index}") for index, entries in enumerate(layers))
    container = new_container(lowers)
    image = merged_tree(container)
    taken: list[Transition] = []
    for _ in range(draw(st.integers(1, 25))):
        view = view_of(merged_tree(container), image)
        groups = [making, changing, looking] + ([removing, moving] if len(view.everything) > 1 else [])
        group = draw(st.sampled_from(groups))
        each = draw(group(view))
        transition = step(container, each)
        for choice in allowed(container, each, "portable").transitions:
            assert choice.rule in RULES and set(choice.rules) <= set(RULES), choice.rules
        taken.append(transition)
        container = transition.container
    return container, taken


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stacks_and_ops())
def test_every_outcome_names_a_rule_the_spec_defines(drawn: tuple[Container, list[Transition]]) -> None:
    """Random stacks and ops: each transition names its deciding rule first, and every rule exists in spec/."""
    _, taken = drawn
    for transition in taken:
        assert transition.rule, transition
        assert transition.rules[0] == transition.rule
        assert transition.rule in RULES, transition.rule
        assert set(transition.rules) <= set(RULES), transition.rules
        assert len(set(transition.rules)) == len(transition.rules)
        if isinstance(transition.outcome, str):
            assert "OP-1" in transition.rules


def test_why_a_path_is_absent() -> None:
    """[WHITEOUT-1][OPAQUE-1][LOOKUP-2][LOOKUP-1] The rule a checker names when a real system shows a hidden path."""
    layers = [
        [d("/o"), f("/o/old"), d("/w"), f("/w/x"), d("/n"), f("/n/y")],
        [d("/o", opaque=True), w("/w/x"), f("/n")],
    ]
    container = model_run(decode_trace({"format": "cowspec-trace/1", "layers": layers, "ops": []})).container
    assert why_absent(container, "/w/x") == "WHITEOUT-1"
    assert why_absent(container, "/o/old") == "OPAQUE-1"
    assert why_absent(container, "/n/y") == "LOOKUP-2"
    assert why_absent(container, "/nowhere/z") == "LOOKUP-1"
