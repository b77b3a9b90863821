"""The snapshot-level state machine: random graphs of snapshots, a real snapshotter against the model.

Each example opens a fresh snapshotter state (``SnapshotDriver.open_snapshots``)
and takes random calls: ``prepare`` and ``view`` of new keys and of keys that
exist, over a parent that is committed, active, a view, missing or none;
``commit`` of an active (and, less often, of anything else, onto a free name
or one that is taken); ``remove`` of any snapshot or of a missing key; and
filesystem ops made through the mounts of an active snapshot, drawn as the
filesystem machine draws them, against the model's tree of that snapshot.

Every call's outcome is compared with the model's (``ok``, the error kind, or
the filesystem result); after every call, every snapshot's info (name, kind,
parent, as ``ctr snapshots ls`` lists them) and the tree of every active and
view. At the end of an example: every snapshot's usage, every active's and
view's mounts, and the diff of every active and committed snapshot against
its parent, its entries compared (not its digest: a whiteout's mtime varies
from run to run), and applied by the model over the parent's layers to give
the same tree as the model's own diff applied there.

``SnapshotRun`` holds one run's comparisons, so that a trace replays exactly
as the machine ran it (``first_divergence``). A divergence is a list of
``Difference`` values, each naming the rule it breaks, and the calls that
lead to it, kept as a ``cowspec-snapshot-trace/1`` document.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cowcheck.compare import Difference, Diverged
from cowcheck.drivers.protocol import DriverError, SnapshotDriver, SnapshotSession
from cowcheck.machines.strategies import changing, looking, making, moving, removing, view_of
from cowcheck.report import RuleTally
from cowspec.errors import ModelError
from cowspec.formats.snapshot_trace import SnapshotTrace, encode_snapshot_outcome
from cowspec.fs.observe import Entry
from cowspec.oci.apply import flatten, rootfs_entries
from cowspec.oci.layer_tar import LayerTar, decode_layer
from cowspec.snapshot import observe
from cowspec.snapshot.calls import Commit, Perform, Prepare, Remove, SnapshotCall, View
from cowspec.snapshot.state import Snapshots, Snapshotter, empty_snapshots
from cowspec.snapshot.steps import Failed, step

KEYS = ("a", "b", "c", "d", "e", "f")
"""The keys an example uses: few, so that a call often meets a key that exists."""
MISSING = "zz"
"""A key no example makes: a missing parent or key."""

LIVES_BY_KIND = {"active": "SNAP-2", "view": "SNAP-3", "committed": "SNAP-4"}
"""A snapshot the model has and the snapshotter lost breaks the rule that made it live until it is removed."""


def info_rule(expected: Entry | None, actual: Entry | None) -> str:
    """The rule an info difference breaks: a lost snapshot its kind's rule, anything else the listing's."""
    if expected is not None and actual is None:
        return LIVES_BY_KIND.get(str(expected["kind"]), observe.INFO_RULE)
    return observe.INFO_RULE


class SnapshotDivergence(Diverged):
    """The snapshotter and the model disagree: ``differences`` say where, each naming its rule; ``trace``
    reproduces it."""

    def __init__(self, differences: list[Difference], trace: SnapshotTrace) -> None:
        super().__init__(differences)
        self.trace = trace


def call_name(call: SnapshotCall) -> str:
    """The call's name as the trace format writes it."""
    return type(call).__name__.lower()


def info_row(info: observe.Info) -> Entry:
    """A model ``Info`` in the shape ``SnapshotSession.infos`` gives."""
    return {"name": info.name, "kind": info.kind, "parent": info.parent}


def tree_differences(key: str, expected: list[Entry], actual: list[Entry], rule: str) -> list[Difference]:
    """Where two trees of snapshot ``key`` differ, path by path (a few at most)."""
    model = {str(entry["path"]): entry for entry in expected}
    real = {str(entry["path"]): entry for entry in actual}
    found = [
        Difference("tree", f"{key}:{path}", model.get(path), real.get(path), rule)
        for path in sorted(model.keys() | real.keys())
        if model.get(path) != real.get(path)
    ]
    return found[:8]


def layer_differences(key: str, what: str, expected: list[Entry], actual: list[Entry], rule: str) -> list[Difference]:
    """Where two lists of entries (a diff's, or a tree's) differ, by path."""
    model = {str(entry["path"]): entry for entry in expected}
    real = {str(entry["path"]): entry for entry in actual}
    found = [
        Difference(what, f"{key}:{path}", model.get(path), real.get(path), rule)
        for path in sorted(model.keys() | real.keys())
        if model.get(path) != real.get(path)
    ]
    return found[:8]


def diff_entries(layer: LayerTar) -> list[Entry]:
    """A diff's entries with what varies run to run (times) left out, as the model compares them."""
    return observe.diff_entries(layer)


@dataclass
class SnapshotRun:
    """One example's comparisons: the model's snapshots and a real session, call by call."""

    session: SnapshotSession
    snapshotter: Snapshotter
    allocation: Callable[[str, int], int]
    tally: RuleTally = field(default_factory=RuleTally)
    calls: list[SnapshotCall] = field(default_factory=list)
    results: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.snapshots: Snapshots = empty_snapshots(self.snapshotter)
        self.exercised: tuple[str, ...] = ()
        self.last_outcome: Entry = {}

    def trace(self) -> SnapshotTrace:
        """The calls so far, as a trace."""
        return SnapshotTrace(self.snapshotter, tuple(self.calls))

    def call(self, call: SnapshotCall) -> list[Difference]:
        """Make ``call`` on both sides; the difference between their outcomes, if any."""
        index = len(self.calls)
        after, outcome = step(self.snapshots, call)
        self.calls.append(call)
        actual = self.real(call)
        expected = encode_snapshot_outcome(outcome)
        self.snapshots = after
        self.last_outcome = actual
        rules = (outcome.rule,) if isinstance(outcome, Failed) else outcome.rules
        self.exercised = rules
        self._count(rules)
        self.results[f"{call_name(call)} {self._result_name(actual)}"] += 1
        if actual == expected:
            return []
        return [Difference("result", f"call {index} ({call_name(call)})", expected, actual, rules[0])]

    def _count(self, rules: Sequence[str]) -> None:
        self.tally.exercised.update(rules)

    @staticmethod
    def _result_name(item: Entry) -> str:
        if "error" in item:
            return str(item["error"])
        return "ok" if item.get("ok") is True else str(item.get("errno", "?"))

    def real(self, call: SnapshotCall) -> Entry:
        """The call on the real snapshotter."""
        match call:
            case Prepare():
                return self.session.prepare(call.key, call.parent)
            case View():
                return self.session.view(call.key, call.parent)
            case Commit():
                return self.session.commit(call.name, call.key)
            case Remove():
                return self.session.remove(call.key)
            case Perform():
                return self.session.perform(call.key, call.op)
        raise DriverError(f"unknown call {call!r}")

    def state(self) -> list[Difference]:
        """Every snapshot's info, then the tree of every active and view."""
        model = {name: info_row(info) for name, info in observe.infos(self.snapshots).items()}
        real = {str(row["name"]): row for row in self.session.infos()}
        self._count((observe.INFO_RULE,))
        found = [
            Difference("info", name, model.get(name), real.get(name), info_rule(model.get(name), real.get(name)))
            for name in sorted(model.keys() | real.keys())
            if model.get(name) != real.get(name)
        ]
        if found:
            return found
        for name, row in model.items():
            if row["kind"] in ("active", "view"):
                rule = observe.TREE_RULES[self.snapshotter]
                self._count((rule,))
                found += tree_differences(name, observe.tree(self.snapshots, name), self.session.tree(name), rule)
                if found:
                    return found
        return found

    def end(self) -> list[Difference]:
        """Usage of every snapshot, mounts of every active and view, diff of every active and committed one."""
        infos = observe.infos(self.snapshots)
        usage = self.session.usage()
        found: list[Difference] = []
        for name in sorted(infos):
            self._count((observe.USAGE_RULE,))
            expected = observe.usage(self.snapshots, name, self.allocation)
            model_usage: Entry = {"size": expected.size, "inodes": expected.inodes}
            if usage.get(name) != model_usage:
                found.append(Difference("usage", name, model_usage, usage.get(name), observe.USAGE_RULE))
        for name, info in sorted(infos.items()):
            if info.kind in ("active", "view"):
                self._count((observe.MOUNTS_RULE,))
                mounts = observe.mounts(self.snapshots, name)
                model_mounts: Entry = {"type": mounts.type, "readonly": mounts.readonly, "lowers": mounts.lowers}
                real_mounts = self.session.mounts(name)
                if real_mounts != model_mounts:
                    found.append(Difference("mounts", name, model_mounts, real_mounts, observe.MOUNTS_RULE))
        if found:
            return found
        for name, info in sorted(infos.items()):
            if info.kind in ("active", "committed"):
                found += self.diff(name)
                if found:
                    return found
        return found

    def diff(self, name: str) -> list[Difference]:
        """The real diff of ``name`` against the model's: its entries, and the tree it gives applied over the
        parent's layers. Paths whose presence in a diff only mtimes decide (``Diff.uncertain``) are left out of
        both comparisons: the differ may write them or not."""
        self._count((observe.DIFF_RULE,))
        model = observe.diff_with_uncertain(self.snapshots, name)
        real_layer = decode_layer(self.session.diff(name))

        def certain(entries: list[Entry]) -> list[Entry]:
            return [entry for entry in entries if str(entry["path"]) not in model.uncertain]

        found = layer_differences(
            name, "diff", certain(diff_entries(model.layer)), certain(diff_entries(real_layer)), observe.DIFF_RULE
        )
        if found:
            return found
        below = [observe.diff(self.snapshots, ancestor) for ancestor in reversed(self.ancestors(name))]
        applied_model = certain(rootfs_entries(flatten([*below, model.layer])))
        applied_real = certain(rootfs_entries(flatten([*below, real_layer])))
        return layer_differences(name, "applied diff", applied_model, applied_real, observe.DIFF_RULE)

    def ancestors(self, name: str) -> list[str]:
        """The committed ancestors of ``name``, its parent first."""
        infos = observe.infos(self.snapshots)
        found: list[str] = []
        parent = infos[name].parent
        while parent is not None:
            found.append(parent)
            parent = infos[parent].parent
        return found


def first_divergence(driver: SnapshotDriver, trace: SnapshotTrace) -> list[Difference]:
    """Replay ``trace`` as the machine runs it, comparing after every call and at the end; the differences at
    the first point that diverges (none if the snapshotter agrees all the way)."""
    session = driver.open_snapshots()
    run = SnapshotRun(session, trace.snapshotter, driver.allocation)
    try:
        for call in trace.calls:
            found = run.call(call)
            if found:
                return found
            found = run.state()
            if found:
                return found
        return run.end()
    finally:
        session.close()


def minimise(driver: SnapshotDriver, trace: SnapshotTrace, rule: str, budget: int = 60) -> SnapshotTrace:
    """A shorter trace that still diverges under ``rule``, one call taken away at a time (at most ``budget``
    replays): Hypothesis shrinks an example, but may leave a call that plays no part in it (a stateful rule's
    draws are shrunk one by one). When the budget is not spent, no single call can be taken away."""
    tries = 0
    changed = True
    while changed and tries < budget:
        changed = False
        for index in range(len(trace.calls)):
            if tries >= budget:
                break
            tries += 1
            shorter = SnapshotTrace(trace.snapshotter, trace.calls[:index] + trace.calls[index + 1 :])
            try:
                found = first_divergence(driver, shorter)
            except ModelError:
                continue  # a call through a key that is no longer active: not a trace the machine makes
            if found and found[0].rule == rule:
                trace, changed = shorter, True
                break
    return trace


def parent_choices(snapshots: Snapshots) -> list[str | None]:
    """Parents to draw from: committed ones most often, then none, actives, views and a missing key."""
    infos = observe.infos(snapshots)
    committed = sorted(name for name, info in infos.items() if info.kind == "committed")
    others = sorted(name for name, info in infos.items() if info.kind != "committed")
    return [*committed, *committed, None, None, None, *others, MISSING]


def key_choices(snapshots: Snapshots) -> list[str]:
    """Keys for a call that makes one: mostly free, sometimes taken."""
    taken = sorted(observe.infos(snapshots))
    free = [key for key in KEYS if key not in taken]
    return [*free, *free, *taken] if free else taken


def machine_for(
    driver: SnapshotDriver,
    tally: RuleTally | None = None,
    on_example: Callable[[], None] | None = None,
    found: list[SnapshotDivergence] | None = None,
    results: Counter[str] | None = None,
) -> type:
    """A state machine class holding ``driver`` to the snapshot model; divergences are appended to ``found``."""
    record = tally if tally is not None else RuleTally()
    divergences = found if found is not None else []
    counts = results if results is not None else Counter()
    snapshotter = cast(Snapshotter, driver.snapshotter)

    class SnapshotMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.run: SnapshotRun | None = None
            self.failed = False

        def diverged(self, differences: list[Difference]) -> None:
            assert self.run is not None
            self.failed = True
            record.record_differences(differences)
            failure = SnapshotDivergence(differences, self.run.trace())
            divergences.append(failure)
            raise failure

        @initialize()
        def start(self) -> None:
            if on_example is not None:
                on_example()
            self.run = SnapshotRun(driver.open_snapshots(), snapshotter, driver.allocation, record, results=counts)

        @property
        def snapshots(self) -> Snapshots:
            assert self.run is not None
            return self.run.snapshots

        def take(self, call: SnapshotCall) -> None:
            assert self.run is not None
            note(f"call {len(self.run.calls)}: {call}")
            found = self.run.call(call)
            if found:
                self.diverged(found)

        def actives(self) -> list[str]:
            return sorted(name for name, info in observe.infos(self.snapshots).items() if info.kind == "active")

        @rule(data=st.data())
        def prepare(self, data: st.DataObject) -> None:
            key = data.draw(st.sampled_from(key_choices(self.snapshots)), label="key")
            parent = data.draw(st.sampled_from(parent_choices(self.snapshots)), label="parent")
            self.take(Prepare(key, parent))

        @rule(data=st.data())
        def view(self, data: st.DataObject) -> None:
            key = data.draw(st.sampled_from(key_choices(self.snapshots)), label="key")
            parent = data.draw(st.sampled_from(parent_choices(self.snapshots)), label="parent")
            self.take(View(key, parent))

        def holds_something(self) -> bool:
            return self.run is not None and bool(observe.infos(self.snapshots))

        @precondition(lambda self: self.holds_something())
        @rule(data=st.data())
        def commit(self, data: st.DataObject) -> None:
            actives = self.actives()
            others = [*sorted(observe.infos(self.snapshots)), MISSING]
            key = data.draw(st.sampled_from([*actives, *actives, *actives, *others]), label="key")
            name = data.draw(st.sampled_from(key_choices(self.snapshots)), label="name")
            self.take(Commit(name, key))

        @precondition(lambda self: self.holds_something())
        @rule(data=st.data())
        def remove(self, data: st.DataObject) -> None:
            key = data.draw(st.sampled_from([*sorted(observe.infos(self.snapshots)), MISSING]), label="key")
            self.take(Remove(key))

        def perform(self, data: st.DataObject, group: str) -> None:
            """A filesystem op of ``group`` through an active snapshot, drawn against the model's tree of it."""
            key = data.draw(st.sampled_from(self.actives()), label="active")
            tree = observe.tree(self.snapshots, key)
            parent = observe.infos(self.snapshots)[key].parent
            view = view_of(tree, observe.tree(self.snapshots, parent) if parent is not None else [])
            if len(view.everything) <= 1 and group in ("remove", "move"):
                group = "make"
            strategy = {"make": making, "change": changing, "look": looking, "remove": removing, "move": moving}
            self.take(Perform(key, data.draw(strategy[group](view), label="op")))

        # One rule per group of ops, as the filesystem machine has: with an active snapshot about, about half
        # the calls are filesystem ops.
        @precondition(lambda self: self.run is not None and bool(self.actives()))
        @rule(data=st.data())
        def make(self, data: st.DataObject) -> None:
            self.perform(data, "make")

        @precondition(lambda self: self.run is not None and bool(self.actives()))
        @rule(data=st.data())
        def change(self, data: st.DataObject) -> None:
            self.perform(data, "change")

        @precondition(lambda self: self.run is not None and bool(self.actives()))
        @rule(data=st.data())
        def look(self, data: st.DataObject) -> None:
            self.perform(data, "look")

        @precondition(lambda self: self.run is not None and bool(self.actives()))
        @rule(data=st.data())
        def unlink_or_rmdir(self, data: st.DataObject) -> None:
            self.perform(data, "remove")

        @precondition(lambda self: self.run is not None and bool(self.actives()))
        @rule(data=st.data())
        def move(self, data: st.DataObject) -> None:
            self.perform(data, "move")

        @invariant()
        def same_state(self) -> None:
            if self.run is None or not self.run.calls:
                return
            found = self.run.state()
            if found:
                self.diverged(found)

        def teardown(self) -> None:
            run, self.run = self.run, None
            if run is None:
                return
            try:
                # An example that diverged already is not held to its end: its first divergence is the one kept.
                found = run.end() if run.calls and not self.failed else []
            finally:
                run.session.close()
            if found:
                record.record_differences(found)
                failure = SnapshotDivergence(found, run.trace())
                divergences.append(failure)
                raise failure

    SnapshotMachine._hypothesis_internal_add_digest = f"{driver.name} snapshot".encode()
    return SnapshotMachine
