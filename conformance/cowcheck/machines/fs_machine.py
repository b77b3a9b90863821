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

The comparison is made under a conformance profile (spec chapter 16,
``cowcheck.compare``): an op's real outcome is held to every outcome
``allowed(container, op, conformance)`` gives, and the model goes on from
the one the real system took; the trees and sizes are compared as
``compare_state`` compares them, which leaves out what ``portable`` does
not hold a system to. A divergence is a list of ``Difference`` values, each
naming the spec rule it breaks, and the ``Tally`` counts, per rule, every
rule each model transition exercised, every difference and every
relaxation applied (``RuleTally``), for a report.

``OpsMachine`` is the model's side alone: the layers and the drawn ops.
``tests/cowcheck/test_levels_agree.py`` runs it to hold the filesystem level to the
layer level, with no real system at all.

Divergences are kept as traces in the ``cowspec-trace/1`` format, so a
failure found here can be replayed with ``cowspec check FILE``.
"""

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TypeVar

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cowcheck.compare import (
    Difference,
    Diverged,
    compare_outcome,
    compare_state,
    first_differences,
    model_sizes,
)
from cowcheck.drivers.protocol import Driver, DriverError, DriverUnavailable, Session
from cowcheck.machines.strategies import View, changing, layer_stacks, looking, making, moving, removing, view_of
from cowcheck.report import RuleTally
from cowspec.formats.trace import Trace, encode_outcome
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import OP_NAMES, Op
from cowspec.fs.conformance import Conformance
from cowspec.fs.features import DOCKER_OVERLAY2, Features
from cowspec.fs.observe import Entry, layer_tree, merged_tree
from cowspec.fs.operations import allowed, step
from cowspec.fs.stack import Container, new_container

Answer = TypeVar("Answer")

STATE_RULES = ("OBSERVE-1", "SIZE-2", "SIZE-3")
"""The rules every comparison of the trees and sizes exercises under ``kernel``."""
PORTABLE_STATE_RULES = ("OBSERVE-1",)
"""Those it exercises under ``portable``, which leaves the writable layer [CONFORM-2] and the sizes
[CONFORM-3] out."""
PORTABLE_LEAVES_OUT = ("CONFORM-2", "CONFORM-3")


class Divergence(Diverged):
    """The real system and the model disagree: ``differences`` say where, each
    naming the rule it breaks (the message is their lines), and ``trace``
    reproduces it."""

    def __init__(self, differences: list[Difference], trace: Trace) -> None:
        super().__init__(differences)
        self.trace = trace


@dataclass
class Tally:
    """What a run did: examples, ops, the mix of results, and the count of each spec rule.

    ``rules`` counts every rule each model transition taken exercised,
    every difference under the rule it breaks, and every relaxation a
    conformance profile applied (shrinking's replays included, as in
    ``examples`` and ``ops``).
    """

    examples: int = 0
    ops: int = 0
    results: Counter[str] = field(default_factory=Counter)
    by_op: Counter[str] = field(default_factory=Counter)
    rules: RuleTally = field(default_factory=RuleTally)
    last_divergence: Divergence | None = None
    diverged_at: int | None = None
    """The number of examples begun when the first divergence showed."""
    driver_failure: DriverError | None = None
    """The first failure of the driver itself (not a divergence): the run's verdict when there is one."""

    def count(self, op: Op, outcome: Entry) -> None:
        """Count one op and what it gave: ``ok`` when it is ok (an ``"errno": null`` beside it is no errno)."""
        self.ops += 1
        name = OP_NAMES[type(op)]
        result = "ok" if outcome.get("ok") is True else str(outcome.get("errno", "ok"))
        self.results[result] += 1
        self.by_op[f"{name} {result}"] += 1


def calling(driver: Driver, call: str, action: Callable[[], Answer]) -> Answer:
    """``action()``, one call into ``driver``; whatever it raises but a ``Divergence`` or ``DriverUnavailable``
    becomes a ``DriverError`` naming the driver, the call and the error.

    A ``DriverError`` that already names the driver (an exec program's) is
    kept as it is; any other exception, a Python driver's bug included, is
    said in one line.
    """
    try:
        return action()
    except (Divergence, DriverUnavailable):
        raise
    except DriverError as error:
        if str(error).startswith(f"driver {driver.name}"):
            raise
        raise DriverError(f"driver {driver.name} failed: {_one_line(str(error))} (on {call})") from error
    except Exception as error:
        said = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise DriverError(f"driver {driver.name} failed: {_one_line(said)} (on {call})") from error


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def first_divergence(driver: Driver, trace: Trace, conformance: Conformance = "kernel") -> list[Difference] | None:
    """Replay ``trace`` as the machine does, under ``conformance``, comparing after every step.

    The differences at the first point that diverges, each naming the rule
    it breaks, or None if the real system agrees all the way
    (``compare.first_differences``). A trace the spec rejects counts as
    agreeing (it shows nothing).
    """
    return first_differences(driver, trace, conformance=conformance) or None


def minimise(
    driver: Driver, trace: Trace, budget: int = 400, conformance: Conformance = "kernel"
) -> tuple[Trace, list[Difference]]:
    """A smaller trace that still diverges under ``conformance``, by removing
    ops and layer entries; with the differences it shows.

    Hypothesis shrinks the examples it finds, but against a real system each
    replay costs a mount, and its shrinker gives up early on slow tests; so
    the kept trace is cut down further here, one op or entry at a time,
    keeping each cut that still diverges. At most ``budget`` replays. When
    the budget is not spent, the result is 1-minimal: no single op, layer
    entry or empty layer can be taken away without losing the divergence.
    Raises ``ValueError`` if ``trace`` does not diverge.
    """
    differences = first_divergence(driver, trace, conformance)
    if differences is None:
        raise ValueError("the trace does not diverge")
    tries = 0
    changed = True
    while changed and tries < budget:
        changed = False
        for candidate in _smaller(trace):
            if tries >= budget:
                break
            tries += 1
            found = first_divergence(driver, candidate, conformance)
            if found is not None:
                trace, differences, changed = candidate, found, True
                break
    return trace, differences


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
    driver: Driver,
    tally: Tally | None = None,
    features: Features = DOCKER_OVERLAY2,
    seed: int | None = None,
    conformance: Conformance = "kernel",
) -> type:
    """A state machine class testing ``driver`` against the model under ``conformance``.

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
            self.exercised: tuple[str, ...] = ()
            """The rules of the last transition taken, that a difference in the trees is blamed on."""

        def diverged(self, differences: list[Difference]) -> None:
            record.rules.record_differences(differences)
            failure = Divergence(differences, self.trace())
            if record.diverged_at is None:
                record.diverged_at = record.examples
            record.last_divergence = failure
            raise failure

        def call(self, call: str, action: Callable[[], Answer]) -> Answer:
            """One call into the driver (``calling``); its first failure is kept on the tally."""
            try:
                return calling(driver, call, action)
            except DriverError as error:
                if record.driver_failure is None:
                    record.driver_failure = error
                raise

        def started(self) -> None:
            record.examples += 1
            self.session = self.call("open", lambda: driver.open(self.layers, self.features))

        def run(self, op: Op) -> Entry:
            """The op on the real system, and on the model along the transition the real system took if the
            profile allows it (the model's own first one if not)."""
            assert self.session is not None
            index = len(self.done)
            note(f"op {index}: {op}")
            # The kernel profile is ``allowed``'s own default.
            choices = (
                allowed(self.container, op) if conformance == "kernel" else allowed(self.container, op, conformance)
            )
            session = self.session
            observed = self.call("perform", lambda: session.perform(op))
            record.count(op, observed)
            taken, difference = compare_outcome(index, choices.transitions, observed, record.rules.relaxed)
            record.rules.record(taken)
            self.container = taken.container
            self.exercised = taken.rules
            self.done.append(op)
            if difference is not None:
                self.diverged([difference])
            return observed

        @invariant()
        def same_trees(self) -> None:
            if self.session is None:
                return
            session = self.session
            merged = self.call("merged", session.merged)
            upper = self.call("upper", session.upper)
            sizes = self.call("sizes", session.sizes)
            # Every comparison exercises OBSERVE-1 and, under kernel, the size rules; portable leaves the
            # writable layer and the sizes out, a relaxation each time [CONFORM-2][CONFORM-3].
            if conformance == "portable":
                record.rules.exercised.update(PORTABLE_STATE_RULES)
                record.rules.relaxed.update(PORTABLE_LEAVES_OUT)
            else:
                record.rules.exercised.update(STATE_RULES)
            # The common case, the very trees and sizes of the model, needs no comparison by path (nor a
            # second merged tree of the model): nothing differs, so nothing is relaxed either.
            model_upper = layer_tree(self.container.upper)
            if merged == self.merged() and upper == model_upper and sizes == model_sizes(self.container):
                return
            relaxed: Counter[str] = Counter()
            differences = compare_state(
                self.container,
                merged,
                upper,
                sizes,
                conformance=conformance,
                exercised=self.exercised,
                relaxed=relaxed,
            )
            # Portable's leaving the upper layer and the sizes out is counted above, each time, not only when
            # they differed.
            record.rules.relaxed.update(
                {rule: count for rule, count in relaxed.items() if rule not in PORTABLE_LEAVES_OUT}
            )
            if differences:
                self.diverged(differences)

        def teardown(self) -> None:
            if self.session is not None:
                session, self.session = self.session, None
                self.call("close", session.close)

    # Hypothesis reads these two attributes of a state machine class: the
    # seed that ``@seed`` would set, and what to add to the digest that
    # names the class's examples in the database (a profile other than
    # kernel files its own: what fails under kernel may pass under it).
    OverlayMachine._hypothesis_internal_use_seed = seed
    named = f"{driver.name} {features}" + ("" if conformance == "kernel" else f" {conformance}")
    OverlayMachine._hypothesis_internal_add_digest = named.encode()
    return OverlayMachine
