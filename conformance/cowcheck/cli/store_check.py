"""``cowspec check --driver docker`` without traces: the store machine on a private engine, and its report."""

import argparse
import json
import os
import sys
import time

from hypothesis import settings
from hypothesis.errors import HypothesisException
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.cli.output import EXIT_DIVERGED, EXIT_REJECTED, UsageError
from cowcheck.drivers.engines import Dockerd
from cowcheck.drivers.protocol import DriverError, DriverUnavailable
from cowcheck.machines import profiles
from cowcheck.machines import store_machine as machine
from cowspec.formats.store_trace import encode_store_trace


def overridden(budget: settings, arguments: argparse.Namespace) -> settings:
    """A machine's budget with the ``--examples`` and ``--steps`` the command line gives, each at least 1."""
    if arguments.examples is not None:
        if arguments.examples < 1:
            raise UsageError("--examples must be at least 1")
        budget = settings(budget, max_examples=arguments.examples)
    if arguments.steps is not None:
        if arguments.steps < 1:
            raise UsageError("--steps must be at least 1")
        budget = settings(budget, stateful_step_count=arguments.steps)
    return budget


def generated_store_check(arguments: argparse.Namespace) -> int:
    """Random store steps on a private Docker engine, every figure compared after each; 1 on a divergence."""
    budget = overridden(profiles.store_machine(), arguments)
    print(
        f"cowspec check --driver docker: the store machine, {budget.max_examples} examples of up to"
        f" {budget.stateful_step_count} steps on a private engine (every figure compared after every step)",
        flush=True,
    )
    machine.found.clear()
    started = time.monotonic()
    failure: BaseException | None = None
    with Dockerd() as docker, with_reporter(lambda _message: None):
        try:
            run_state_machine_as_test(machine.store_machine_for(docker), settings=budget)
        except (DriverUnavailable, DriverError):
            raise
        except (AssertionError, HypothesisException, OSError, RuntimeError) as error:
            failure = error
    elapsed = time.monotonic() - started
    print(f"  {elapsed:.1f} s")
    if failure is None:
        print("  divergences: none: every step's result and every figure agreed")
        return 0
    if not machine.found:
        print(f"  the run stopped with an error: {type(failure).__name__}: {failure}")
        return EXIT_DIVERGED
    smallest = machine.found[-1]  # the last one raised is the smallest Hypothesis found
    try:
        os.makedirs(arguments.save, exist_ok=True)
        path = os.path.join(arguments.save, "store-divergence-1.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(encode_store_trace(smallest.steps), handle, indent=1)
            handle.write("\n")
    except OSError as error:
        print(f"  divergence 1: {smallest}")
        print(f"cowspec: --save {arguments.save}: cannot write ({error.strerror})", file=sys.stderr)
        return EXIT_REJECTED
    print(f"  divergence 1: {smallest}")
    print(f"    minimal store trace ({len(smallest.steps)} steps) saved to {path}")
    print(f"    replay: cowspec check --driver docker {path}")
    return EXIT_DIVERGED
