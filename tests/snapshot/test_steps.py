"""Chapter 17: the calls of a snapshotter and their error kinds, as containerd 1.6.20 gave them."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cowspec.errors import ModelError
from cowspec.fs.calls import Mkdir, Ok
from cowspec.snapshot.calls import Commit, Perform, Prepare, Remove, SnapshotCall, View
from cowspec.snapshot.observe import Info, infos
from cowspec.snapshot.state import SNAPSHOTTERS, Snapshotter, empty_snapshots
from cowspec.snapshot.steps import Done, Failed, step
from tests.snapshot.support import refused, run

BOTH = pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)


@BOTH
def test_prepare_commit_and_list(snapshotter: Snapshotter) -> None:
    """[SNAP-1][SNAP-2][SNAP-4] A prepared key is active; commit replaces it by its name, with its parent."""
    snapshots = run(snapshotter, Prepare("a", None), Commit("base", "a"), Prepare("b", "base"), View("v", "base"))
    assert infos(snapshots) == {
        "b": Info("b", "active", "base"),
        "base": Info("base", "committed", None),
        "v": Info("v", "view", "base"),
    }
    after, outcome = step(snapshots, Commit("top", "b"))
    assert outcome == Done(None, ("SNAP-4", "SNAP-1"))
    assert infos(after)["top"] == Info("top", "committed", "base")
    assert "b" not in infos(after)


@BOTH
def test_prepare_and_view_refusals_in_containerds_order(snapshotter: Snapshotter) -> None:
    """[SNAP-2][SNAP-3] Key taken (any kind): already exists; parent missing: not found; parent not
    committed: invalid argument. The key is checked before the parent."""
    snapshots = run(snapshotter, Prepare("a", None), View("v", None), Prepare("c", None), Commit("base", "c"))
    for make, rule in ((Prepare, "SNAP-2"), (View, "SNAP-3")):
        for taken in ("a", "v", "base"):
            assert refused(snapshots, make(taken, "nosuch")).kind == "already exists"
        assert refused(snapshots, make("new", "nosuch")).kind == "not found"
        assert refused(snapshots, make("new", "new")).kind == "not found"
        assert refused(snapshots, make("new", "a")).kind == "invalid argument"
        failure = refused(snapshots, make("new", "v"))
        assert (failure.kind, failure.rule) == ("invalid argument", rule)
        after, outcome = step(snapshots, make("new", "base"))
        assert isinstance(outcome, Done)
        assert infos(after)["new"].parent == "base"


@BOTH
def test_commit_refusals_in_containerds_order(snapshotter: Snapshotter) -> None:
    """[SNAP-4] The name first (even when the key is missing, and the key itself), then the key,
    then its kind."""
    snapshots = run(snapshotter, Prepare("a", None), View("v", None), Prepare("c", None), Commit("base", "c"))
    assert refused(snapshots, Commit("base", "nosuch")).kind == "already exists"
    assert refused(snapshots, Commit("a", "a")).kind == "already exists"
    assert refused(snapshots, Commit("v", "a")).kind == "already exists"
    assert refused(snapshots, Commit("new", "nosuch")).kind == "not found"
    assert refused(snapshots, Commit("new", "base")).kind == "failed precondition"
    failure = refused(snapshots, Commit("new", "v"))  # a view without parent has a directory
    assert (failure.kind, failure.rule) == ("failed precondition", "SNAP-4")


def test_a_view_of_a_parent_cannot_be_committed_with_an_error_kind_per_snapshotter() -> None:
    """[SNAP-4] Observed: native measures the view's directory first, and a view of a parent has none."""
    calls = (Prepare("c", None), Commit("base", "c"), View("v", "base"))
    assert refused(run("overlayfs", *calls), Commit("new", "v")).kind == "failed precondition"
    assert refused(run("native", *calls), Commit("new", "v")).kind == "unknown"


@BOTH
def test_remove(snapshotter: Snapshotter) -> None:
    """[SNAP-5] Missing: not found; a parent of any kind of snapshot: failed precondition; else gone."""
    snapshots = run(snapshotter, Prepare("c", None), Commit("base", "c"), Prepare("b", "base"))
    assert refused(snapshots, Remove("nosuch")).kind == "not found"
    assert refused(snapshots, Remove("base")) == refused(snapshots, Remove("base"))
    assert refused(snapshots, Remove("base")).kind == "failed precondition"
    only_view = run(snapshotter, Prepare("c", None), Commit("base", "c"), View("v", "base"))
    assert refused(only_view, Remove("base")).kind == "failed precondition"
    after, outcome = step(only_view, Remove("v"))
    assert isinstance(outcome, Done)
    after, outcome = step(after, Remove("base"))
    assert isinstance(outcome, Done)
    assert infos(after) == {}
    after, outcome = step(snapshots, Remove("b"))
    assert isinstance(outcome, Done) and list(infos(after)) == ["base"]


@BOTH
def test_a_filesystem_call_goes_through_an_active_snapshot_only(snapshotter: Snapshotter) -> None:
    """[SNAP-7][SNAP-8] A perform's result is the filesystem level's; through anything else it is a model bug."""
    snapshots = run(snapshotter, Prepare("a", None))
    after, outcome = step(snapshots, Perform("a", Mkdir("/d", 0o755)))
    assert isinstance(outcome, Done) and outcome.result == Ok()
    assert outcome.rules[:2] == ("SNAP-7" if snapshotter == "overlayfs" else "SNAP-8", "MKDIR-1")
    committed, _ = step(after, Commit("base", "a"))
    for key in ("a", "base", "nosuch"):
        with pytest.raises(ModelError):
            step(committed, Perform(key, Mkdir("/e", 0o755)))


def test_an_unknown_snapshotter_is_a_model_bug() -> None:
    """[SNAP-1] Only the two snapshotters the chapter states."""
    with pytest.raises(ModelError):
        empty_snapshots("btrfs")  # type: ignore[arg-type]


KEYS = ("a", "b", "c", "d")


@st.composite
def snapshot_calls(draw: st.DrawFn) -> SnapshotCall:
    key = draw(st.sampled_from(KEYS))
    parent = draw(st.none() | st.sampled_from(KEYS))
    choices: tuple[SnapshotCall, ...] = (
        Prepare(key, parent),
        View(key, parent),
        Commit(draw(st.sampled_from(KEYS)), key),
        Remove(key),
    )
    return draw(st.sampled_from(choices))


@given(st.sampled_from(SNAPSHOTTERS), st.lists(snapshot_calls(), max_size=30))
def test_the_graph_stays_a_forest_of_committed_parents(snapshotter: Snapshotter, calls: list[SnapshotCall]) -> None:
    """[SNAP-1][SNAP-2][SNAP-3][SNAP-4][SNAP-5] Whatever the calls: every parent exists and is committed, a
    refusal changes nothing, and each call succeeds exactly when containerd's conditions hold."""
    snapshots = empty_snapshots(snapshotter)
    for call in calls:
        before = infos(snapshots)
        after, outcome = step(snapshots, call)
        if isinstance(outcome, Failed):
            assert after is snapshots
        match call:
            case Prepare() | View():
                parent = before.get(call.parent) if call.parent is not None else None
                fine = call.key not in before and (
                    call.parent is None or (parent is not None and parent.kind == "committed")
                )
            case Commit():
                fine = call.name not in before and call.key in before and before[call.key].kind == "active"
            case Remove():
                fine = call.key in before and all(info.parent != call.key for info in before.values())
        assert isinstance(outcome, Done) == fine, (call, outcome)
        snapshots = after
        for info in infos(snapshots).values():
            if info.parent is not None:
                assert infos(snapshots)[info.parent].kind == "committed"
