"""The Hypothesis state machine that holds a real implementation to the model.

One machine serves every driver: the system under test is passed in
(``machine_for(driver)``). Each example builds a random stack of 1 to 4
layers, opens a fresh session on it, and applies random ops to the model
and to the real system. Each op's paths are drawn from the model's merged
view as it stands before the op (``strategies.View``): an existing path of
the kind the op needs, a free name for a call that creates one, and less
often a path that leads astray. The rules group the calls as the spec
does (make, change, look, remove, move), so that Hypothesis can leave some
groups out of an example. Every op's result is compared; after every step
the whole merged tree, the writable layer and the sizes are compared (an
invariant). Preconditions, if any, read the model only.

``OpsMachine`` is the model's side alone: the layers and the drawn ops.
``tests/cowcheck/test_levels_agree.py`` runs it to hold the filesystem level to the
layer level, with no real system at all.

Divergences are kept as traces in the ``cowspec-trace/1`` format, so a
failure found here can be replayed with ``cowspec check FILE``.
"""

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cowcheck.compare import tree_differences
from cowcheck.drivers.protocol import Driver, Session
from cowcheck.machines.strategies import View, changing, layer_stacks, looking, making, moving, removing, view_of
from cowspec.errors import SpecError
from cowspec.formats.trace import Trace, build_layers, encode_outcome
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import OP_NAMES, Op
from cowspec.fs.features import DOCKER_OVERLAY2, Features
from cowspec.fs.observe import Entry, layer_tree, merged_tree
from cowspec.fs.operations import step
from cowspec.fs.sizes import container_sizes
from cowspec.fs.stack import Container, new_container


class Divergence(AssertionError):
    """The real system and the model disagree; ``trace`` reproduces it."""

    def __init__(self, message: str, trace: Trace) -> None:
        super().__init__(message)
        self.trace = trace


@dataclass
class Tally:
    """What a run did: examples, ops, and the mix of results."""

    examples: int = 0
    ops: int = 0
    results: Counter[str] = field(default_factory=Counter)
    by_op: Counter[str] = field(default_factory=Counter)
    last_divergence: Divergence | None = None
    diverged_at: int | None = None
    """The number of examples begun when the first divergence showed."""

    def count(self, op: Op, outcome: Entry) -> None:
        """Count one op and what it gave."""
        self.ops += 1
        name = OP_NAMES[type(op)]
        result = str(outcome.get("errno", "ok"))
        self.results[result] += 1
        self.by_op[f"{name} {result}"] += 1


def step_both(container: Container, session: Session, op: Op) -> tuple[Container, Entry, Entry]:
    """Run ``op`` on the model and the real system: new model state, both results."""
    transition = step(container, op)
    return transition.container, encode_outcome(transition.outcome), session.perform(op)


def state_differences(container: Container, session: Session, merged: list[Entry] | None = None) -> list[str]:
    """Where the real system's trees and sizes differ from the model's [OBSERVE-1].

    ``merged`` is the model's merged tree of ``container`` if it is made already.
    """
    model_merged = merged if merged is not None else merged_tree(container)
    lines = tree_differences("merged", model_merged, session.merged())
    lines += tree_differences("upper", layer_tree(container.upper), session.upper())
    model_sizes = container_sizes(container)
    expected_sizes = {"size": model_sizes.size, "virtual_size": model_sizes.virtual_size}
    real_sizes = session.sizes()
    if expected_sizes != real_sizes:
        lines.append(f"sizes: model {expected_sizes}, real {real_sizes}")
    return lines


def first_divergence(driver: Driver, trace: Trace) -> str | None:
    """Replay ``trace`` as the machine does, comparing after every step.

    The first difference, described, or None if the real system agrees all
    the way. A trace the spec rejects counts as agreeing (it shows nothing).
    """
    try:
        lowers = build_layers(trace)
    except SpecError:
        return None
    container = new_container(lowers, trace.features)
    session = driver.open(trace.layers, trace.features)
    try:
        lines = state_differences(container, session)
        if lines:
            return "before any op: " + "; ".join(lines)
        for index, op in enumerate(trace.ops):
            container, expected, observed = step_both(container, session, op)
            if observed != expected:
                return f"op {index} {op}: model {expected}, real {observed}"
            lines = state_differences(container, session)
            if lines:
                return f"after {index + 1} ops: " + "; ".join(lines)
        return None
    finally:
        session.close()


def minimise(driver: Driver, trace: Trace, budget: int = 400) -> tuple[Trace, str]:
    """A smaller trace that still diverges, by removing ops and layer entries.

    Hypothesis shrinks the examples it finds, but against a real system each
    replay costs a mount, and its shrinker gives up early on slow tests; so
    the kept trace is cut down further here, one op or entry at a time,
    keeping each cut that still diverges. At most ``budget`` replays.
    """
    reason = first_divergence(driver, trace)
    if reason is None:
        raise ValueError("the trace does not diverge")
    tries = 0
    changed = True
    while changed and tries < budget:
        changed = False
        for candidate in _smaller(trace):
            if tries >= budget:
                break
            tries += 1
            found = first_divergence(driver, candidate)
            if found is not None:
                trace, reason, changed = candidate, found, True
                break
    return trace, reason


def _smaller(trace: Trace) -> Iterator[Trace]:
    """Every trace with one op, one layer entry or one empty layer less."""
    for index in range(len(trace.ops)):
        yield replace(trace, ops=trace.ops[:index] + trace.ops[index + 1 :])
    for number, layer in enumerate(trace.layers):
        if not layer and len(trace.layers) > 1:
            yield replace(trace, layers=trace.layers[:number] + trace.layers[number + 1 :])
        for index in range(len(layer)):
            shorter = layer[:index] + layer[index + 1 :]
            yield replace(trace, layers=(*trace.layers[:number], shorter, *trace.layers[number + 1 :]))


class OpsMachine(RuleBasedStateMachine):
    """Random layers, then random ops whose paths are drawn from the model's merged view.

    The model side of every machine over one container: it builds the
    layers, draws each op against ``self.container`` and runs it there.
    A subclass adds the other side: ``started`` when the layers are built,
    ``run`` for each op (calling this one for the model), and its own
    invariants. ``features`` are the overlay features in force.
    """

    features: Features = DOCKER_OVERLAY2

    def __init__(self) -> None:
        super().__init__()
        self.layers: tuple[tuple[LayerEntry, ...], ...] = ()
        self.container: Container = new_container(())
        self.done: list[Op] = []
        self.seen: tuple[Container, list[Entry], View] | None = None
        self.image_tree: list[Entry] = []

    def trace(self) -> Trace:
        """What the example did so far, as a trace."""
        return Trace(self.features, self.layers, tuple(self.done))

    def merged(self) -> list[Entry]:
        """The model's merged tree (made once per state; do not change it)."""
        return self.looked()[1]

    def view(self) -> View:
        """The model's merged view, which the next op's paths are drawn from."""
        return self.looked()[2]

    def looked(self) -> tuple[Container, list[Entry], View]:
        if self.seen is None or self.seen[0] is not self.container:
            tree = merged_tree(self.container)
            self.seen = (self.container, tree, view_of(tree, self.image_tree))
        return self.seen

    def holds_something(self) -> bool:
        """True if the merged view shows more than the root."""
        return len(self.view().everything) > 1

    @initialize(layers=layer_stacks)
    def build(self, layers: tuple[tuple[LayerEntry, ...], ...]) -> None:
        note(f"layers: {layers}")
        self.layers = layers
        lowers = tuple(build_layer(entries, f"layer {index}") for index, entries in enumerate(layers))
        self.container = new_container(lowers, self.features)
        self.image_tree = merged_tree(self.container)
        self.started()

    def started(self) -> None:
        """The layers are built: a subclass opens what it compares with."""

    def run(self, op: Op) -> Entry:
        """Run ``op`` on the model; its result in the trace format."""
        note(f"op {len(self.done)}: {op}")
        transition = step(self.container, op)
        self.container = transition.container
        self.done.append(op)
        return encode_outcome(transition.outcome)

    @rule(data=st.data())
    def make(self, data: st.DataObject) -> None:
        """create, mkdir, symlink or link: mostly a free name."""
        self.run(data.draw(making(self.view()), label="op"))

    @rule(data=st.data())
    def change(self, data: st.DataObject) -> None:
        """open for writing, write, append, truncate, chmod or chown."""
        self.run(data.draw(changing(self.view()), label="op"))

    @rule(data=st.data())
    def look(self, data: st.DataObject) -> None:
        """open for reading, read, stat, readdir or readlink."""
        self.run(data.draw(looking(self.view()), label="op"))

    @precondition(lambda self: self.holds_something())
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        """unlink or rmdir."""
        self.run(data.draw(removing(self.view()), label="op"))

    @precondition(lambda self: self.holds_something())
    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        """rename."""
        self.run(data.draw(moving(self.view()), label="op"))


def machine_for(
    driver: Driver, tally: Tally | None = None, features: Features = DOCKER_OVERLAY2, seed: int | None = None
) -> type:
    """A state machine class testing ``driver`` against the model.

    ``seed`` fixes Hypothesis's randomness without turning its example
    database off (``derandomize`` would): each of several workers draws
    its own examples from its own seed. The examples a database keeps are
    filed under the driver's name and the features, so that a failure is
    replayed against what it failed on.
    """
    record = tally if tally is not None else Tally()
    chosen = features

    class OverlayMachine(OpsMachine):
        """The model and ``driver`` side by side: every result, and every tree after every step."""

        features = chosen

        def __init__(self) -> None:
            super().__init__()
            self.session: Session | None = None

        def diverged(self, message: str) -> None:
            failure = Divergence(message, self.trace())
            if record.diverged_at is None:
                record.diverged_at = record.examples
            record.last_divergence = failure
            raise failure

        def started(self) -> None:
            record.examples += 1
            self.session = driver.open(self.layers, self.features)

        def run(self, op: Op) -> Entry:
            assert self.session is not None
            expected = super().run(op)
            observed = self.session.perform(op)
            record.count(op, observed)
            if observed != expected:
                self.diverged(f"op {len(self.done) - 1} {op}: model {expected}, real {observed}")
            return observed

        @invariant()
        def same_trees(self) -> None:
            if self.session is None:
                return
            lines = state_differences(self.container, self.session, self.merged())
            if lines:
                self.diverged(f"after {len(self.done)} ops: " + "; ".join(lines))

        def teardown(self) -> None:
            if self.session is not None:
                self.session.close()
                self.session = None

    # Hypothesis reads these two attributes of a state machine class: the
    # seed that ``@seed`` would set, and what to add to the digest that
    # names the class's examples in the database.
    OverlayMachine._hypothesis_internal_use_seed = seed
    OverlayMachine._hypothesis_internal_add_digest = f"{driver.name} {features}".encode()
    return OverlayMachine
