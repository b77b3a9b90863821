"""``cowspec check`` without traces: generated cases and a readable report."""

import argparse
import json
import os
import sys
import time

from hypothesis import settings
from hypothesis.errors import HypothesisException
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.cli.output import EXIT_DIVERGED, UsageError
from cowcheck.drivers.protocol import Driver, DriverError, DriverUnavailable
from cowcheck.machines import profiles  # noqa: F401  (registers the settings profiles)
from cowcheck.machines.fs_machine import Divergence, Tally, machine_for, minimise
from cowspec.errors import SpecError
from cowspec.formats.trace import Trace, encode_trace
from cowspec.fs.features import features_from


def generated_check(driver: Driver, arguments: argparse.Namespace) -> int:
    """Run the state machine against ``driver``; print a report; 1 on divergence."""

    chosen = settings.get_profile(arguments.profile)
    overrides: dict[str, int] = {}
    for name, key in (("examples", "max_examples"), ("steps", "stateful_step_count")):
        value = getattr(arguments, name)
        if value is not None:
            if value < 1:
                raise UsageError(f"--{name} must be at least 1")
            overrides[key] = value
    try:
        features = features_from(dict.fromkeys(arguments.feature, True))
    except SpecError as error:
        raise UsageError(str(error)) from None
    budget = settings(chosen, database=None, print_blob=False, **overrides)  # type: ignore[arg-type]
    tally = Tally()
    started = time.monotonic()
    failure: BaseException | None = None
    with with_reporter(lambda _message: None):
        try:
            run_state_machine_as_test(machine_for(driver, tally, features), settings=budget)
        except (DriverUnavailable, DriverError):
            raise
        except (AssertionError, HypothesisException, OSError, RuntimeError) as error:
            failure = error
    elapsed = time.monotonic() - started
    out = sys.stdout
    enabled = ", ".join(features.enabled()) or "Docker's overlay2 configuration"
    print(f"cowspec check --driver {driver.name} (profile {arguments.profile}; features: {enabled})", file=out)
    print(
        f"  {tally.examples} examples, {tally.ops} ops, "
        f"{budget.stateful_step_count} ops at most per example, {elapsed:.1f} s",
        file=out,
    )
    print("  results: " + _mix(tally.results, tally.ops), file=out)
    names = sorted({key.split()[0] for key in tally.by_op})
    for name in names:
        row = {key.split()[1]: count for key, count in tally.by_op.items() if key.split()[0] == name}
        print(f"    {name:<9} " + ", ".join(f"{result} {count}" for result, count in sorted(row.items())), file=out)
    divergence = tally.last_divergence
    if failure is None:
        print("  divergences: none: every result, merged tree, upper layer and size agreed", file=out)
        return 0
    if isinstance(failure, Divergence) or divergence is not None:
        found = failure if isinstance(failure, Divergence) else divergence
        assert found is not None
        smallest, reason = minimise(driver, found.trace)
        path = save_trace(arguments.save, "divergence-1.json", smallest)
        entries = sum(len(layer) for layer in smallest.layers)
        print(f"  divergence 1: {reason}", file=out)
        print(
            f"    minimal trace ({len(smallest.ops)} ops, {len(smallest.layers)} layers, {entries} entries;"
            f" Hypothesis had shrunk it to {len(found.trace.ops)} ops) saved to {path}",
            file=out,
        )
        print(f"    replay: cowspec check --driver {driver.name} {path}", file=out)
        return EXIT_DIVERGED
    print(f"  the run stopped with an error: {type(failure).__name__}: {failure}", file=out)
    return EXIT_DIVERGED


def _mix(counter: "dict[str, int]", total: int) -> str:
    if not total:
        return "none"
    ordered = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} {count} ({100 * count / total:.1f}%)" for name, count in ordered)


def save_trace(directory: str, name: str, trace: Trace) -> str:
    """Write ``trace`` as ``directory/name``; the path written."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(encode_trace(trace), handle, indent=1)
        handle.write("\n")
    return path
