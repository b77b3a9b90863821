"""The oracle: what the reference model says a trace must give."""

from cowspec.formats.trace import Trace, build_layers, encode_result
from cowspec.fs.calls import Outcome
from cowspec.fs.layer import Layer
from cowspec.fs.observe import Entry
from cowspec.fs.operations import step
from cowspec.fs.stack import Container, new_container


def run_model(trace: Trace) -> tuple[list[Outcome], Container]:
    """Run every op of ``trace`` on the model; the outcomes and final state."""
    lowers: tuple[Layer, ...] = build_layers(trace)
    container = new_container(lowers, trace.features)
    outcomes: list[Outcome] = []
    for op in trace.ops:
        transition = step(container, op)
        container = transition.container
        outcomes.append(transition.outcome)
    return outcomes, container


def oracle(trace: Trace) -> Entry:
    """The result document the model gives for ``trace``."""
    outcomes, container = run_model(trace)
    return encode_result(outcomes, container)
