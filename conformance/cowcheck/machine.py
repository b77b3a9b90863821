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
from dataclasses import dataclass, field

from hypothesis import note
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cowspec.features import DOCKER_OVERLAY2, Features
from cowspec.observe import Entry, layer_tree, merged_tree
from cowspec.operations import step
from cowspec.ops import OP_NAMES, Op
from cowspec.sizes import container_sizes
from cowspec.stack import Container, new_container
from cowspec.trace import LayerEntry, Trace, build_layer, encode_outcome

from .compare import tree_differences
from .driver import Driver, Session
from .strategies import fill_known, layer_stacks, ops


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
            transition = step(self.container, op)
            expected = encode_outcome(transition.outcome)
            observed = self.session.perform(op)
            self.done.append(op)
            self.container = transition.container
            record.count(op, observed)
            if observed != expected:
                self.diverged(f"op {len(self.done) - 1} {op}: model {expected}, real {observed}")

        @invariant()
        def same_trees(self) -> None:
            if self.session is None:
                return
            lines = tree_differences("merged", merged_tree(self.container), self.session.merged())
            lines += tree_differences("upper", layer_tree(self.container.upper), self.session.upper())
            model_sizes = container_sizes(self.container)
            expected_sizes = {"size": model_sizes.size, "virtual_size": model_sizes.virtual_size}
            real_sizes = self.session.sizes()
            if expected_sizes != real_sizes:
                lines.append(f"sizes: model {expected_sizes}, real {real_sizes}")
            if lines:
                self.diverged(f"after {len(self.done)} ops: " + "; ".join(lines))

        def teardown(self) -> None:
            if self.session is not None:
                self.session.close()
                self.session = None

    return OverlayMachine
