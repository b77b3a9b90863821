"""The oracle: what the reference model says a trace must give.

For each op the model gives the set of outcomes the spec allows (one, in
every case the spec states today under the ``kernel`` profile) [TRACE-5]. A
result document writes a single outcome as it always has, and a set of
several as ``{"any_of": [...]}``. Where a real run is at hand,
``oracle_following`` follows the outcome the real system gave whenever it is
allowed, so that the trees at the end are those the spec allows after that
very run.

Under the ``portable`` profile an op may allow more outcomes, where spec
chapter 16 names a point of legitimate variation [CONFORM-1]. ``model_run``
keeps, besides the result document, the transition the model went on from
after each op: the rule that decided it and every rule it exercised, which a
checker tallies and names when the real system gives another outcome.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from cowspec.formats.trace import Trace, build_layers, encode_outcome, encode_result
from cowspec.fs.calls import Outcome
from cowspec.fs.conformance import Conformance
from cowspec.fs.layer import Layer
from cowspec.fs.observe import Entry
from cowspec.fs.operations import Transition, allowed
from cowspec.fs.stack import Container, new_container


@dataclass(frozen=True, slots=True)
class ModelRun:
    """A trace run on the model.

    ``answers`` are each op's allowed outcomes, ``taken`` the transition the
    run went on from after each op (the real system's outcome where it was
    allowed, else the first), ``container`` the state at the end.
    """

    answers: tuple[tuple[Outcome, ...], ...]
    taken: tuple[Transition, ...]
    container: Container

    @property
    def result(self) -> Entry:
        """The result document of the run [TRACE-4][TRACE-5]."""
        return encode_result(self.answers, self.container)


def model_run(trace: Trace, observed: Sequence[object] = (), conformance: Conformance = "kernel") -> ModelRun:
    """Run every op of ``trace`` on the model under ``conformance``.

    Where ``observed`` gives a real system's result item for an op and the
    spec allows it, the run goes on from the state after that outcome;
    otherwise from the first allowed one.
    """
    lowers: tuple[Layer, ...] = build_layers(trace)
    container = new_container(lowers, trace.features)
    answers: list[tuple[Outcome, ...]] = []
    taken: list[Transition] = []
    for index, op in enumerate(trace.ops):
        # The kernel profile is ``allowed``'s own default.
        choices = (
            allowed(container, op) if conformance == "kernel" else allowed(container, op, conformance)
        ).transitions
        answers.append(tuple(transition.outcome for transition in choices))
        chosen = choices[0]
        if index < len(observed):
            chosen = next(
                (each for each in choices if encode_outcome(each.outcome) == observed[index]),
                chosen,
            )
        taken.append(chosen)
        container = chosen.container
    return ModelRun(tuple(answers), tuple(taken), container)


def run_model(
    trace: Trace, observed: Sequence[object] = (), conformance: Conformance = "kernel"
) -> tuple[list[tuple[Outcome, ...]], Container]:
    """Each op's allowed outcomes and the final state (``model_run``, without the transitions)."""
    run = model_run(trace, observed, conformance)
    return list(run.answers), run.container


def oracle(trace: Trace, conformance: Conformance = "kernel") -> Entry:
    """The result document the model gives for ``trace`` [TRACE-4][TRACE-5]."""
    return model_run(trace, (), conformance).result


def observed_results(observed: Entry) -> list[object]:
    """The result items of a real system's result document (none if it has none)."""
    results = observed.get("results", [])
    return results if isinstance(results, list) else []


def oracle_following(trace: Trace, observed: Entry, conformance: Conformance = "kernel") -> Entry:
    """The model's result for ``trace``, going on after each op from the outcome ``observed`` gave, if allowed."""
    return model_run(trace, observed_results(observed), conformance).result
