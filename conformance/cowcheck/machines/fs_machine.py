"""The Hypothesis state machine that holds a real implementation to the model.

One machine serves every driver: the system under test is passed in
(``machine_for(driver)``). Each example builds a random stack of 1 to 4
layers, opens a fresh session on it, and applies random ops to the model
and to the real system. Every op's result is compared; after every step the
whole merged tree, the writable layer and the sizes are compared (an
invariant). Preconditions, if any, read the model only.

Divergences are kept as traces in the ``cowspec-trace/1`` format, so a
failure found here can be replayed with ``cowspec check FILE``.
"""

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from hypothesis import note
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cowcheck.compare import tree_differences
from cowcheck.drivers.protocol import Driver, Session
from cowcheck.machines.strategies import fill_known, layer_stacks, ops
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


def state_differences(container: Container, session: Session) -> list[str]:
    """Where the real system's trees and sizes differ from the model's [OBSERVE-1]."""
    lines = tree_differences("merged", merged_tree(container), session.merged())
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


def machine_for(driver: Driver, tally: Tally | None = None, features: Features = DOCKER_OVERLAY2) -> type:
    """A state machine class testing ``driver`` against the model."""
    record = tally if tally is not None else Tally()

    class OverlayMachine(RuleBasedStateMachine):
        """Random layers, random ops, the model and ``driver`` side by side."""

        def __init__(self) -> None:
            super().__init__()
            self.session: Session | None = None
            self.layers: tuple[tuple[LayerEntry, ...], ...] = ()
            self.container: Container = new_container(())
            self.done: list[Op] = []

        def trace(self) -> Trace:
            return Trace(features, self.layers, tuple(self.done))

        def diverged(self, message: str) -> None:
            failure = Divergence(message, self.trace())
            record.last_divergence = failure
            raise failure

        @initialize(layers=layer_stacks)
        def build(self, layers: tuple[tuple[LayerEntry, ...], ...]) -> None:
            record.examples += 1
            self.layers = layers
            lowers = tuple(build_layer(entries, f"layer {index}") for index, entries in enumerate(layers))
            self.container = new_container(lowers, features)
            note(f"layers: {layers}")
            self.session = driver.open(layers, features)

        @rule(drawn=ops())
        def act(self, drawn: Op) -> None:
            assert self.session is not None
            tree = merged_tree(self.container)
            known = tuple(str(entry["path"]) for entry in tree)
            dirs = ("/", *(str(entry["path"]) for entry in tree if entry["type"] == "dir"))
            op = fill_known(drawn, known, dirs)
            note(f"op {len(self.done)}: {op}")
            self.container, expected, observed = step_both(self.container, self.session, op)
            self.done.append(op)
            record.count(op, observed)
            if observed != expected:
                self.diverged(f"op {len(self.done) - 1} {op}: model {expected}, real {observed}")

        @invariant()
        def same_trees(self) -> None:
            if self.session is None:
                return
            lines = state_differences(self.container, self.session)
            if lines:
                self.diverged(f"after {len(self.done)} ops: " + "; ".join(lines))

        def teardown(self) -> None:
            if self.session is not None:
                self.session.close()
                self.session = None

    return OverlayMachine
