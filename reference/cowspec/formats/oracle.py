"""The oracle: what the reference model says a trace must give.

For each op the model gives the set of outcomes the spec allows (one, in
every case the spec states today) [TRACE-5]. A result document writes a
single outcome as it always has, and a set of several as
``{"any_of": [...]}``. Where a real run is at hand, ``oracle_following``
follows the outcome the real system gave whenever it is allowed, so that
the trees at the end are those the spec allows after that very run.
"""

from collections.abc import Sequence

from cowspec.formats.trace import Trace, build_layers, encode_outcome, encode_result
from cowspec.fs.calls import Outcome
from cowspec.fs.layer import Layer
from cowspec.fs.observe import Entry
from cowspec.fs.operations import allowed
from cowspec.fs.stack import Container, new_container


def run_model(trace: Trace, observed: Sequence[object] = ()) -> tuple[list[tuple[Outcome, ...]], Container]:
    """Run every op of ``trace`` on the model: each op's allowed outcomes, and the final state.

    Where ``observed`` gives a real system's result item for an op and the
    spec allows it, the run goes on from the state after that outcome;
    otherwise from the first allowed one.
    """
    lowers: tuple[Layer, ...] = build_layers(trace)
    container = new_container(lowers, trace.features)
    answers: list[tuple[Outcome, ...]] = []
    for index, op in enumerate(trace.ops):
        choices = allowed(container, op).transitions
        answers.append(tuple(transition.outcome for transition in choices))
        taken = choices[0]
        if index < len(observed):
            taken = next(
                (each for each in choices if encode_outcome(each.outcome) == observed[index]),
                taken,
            )
        container = taken.container
    return answers, container


def oracle(trace: Trace) -> Entry:
    """The result document the model gives for ``trace`` [TRACE-4][TRACE-5]."""
    return encode_result(*run_model(trace))


def oracle_following(trace: Trace, observed: Entry) -> Entry:
    """The model's result for ``trace``, going on after each op from the outcome ``observed`` gave, if allowed."""
    results = observed.get("results", [])
    return encode_result(*run_model(trace, results if isinstance(results, list) else []))
