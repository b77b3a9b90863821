"""The trace commands: ``oracle``, ``run`` and ``check`` (see ``cowcheck.cli.main``)."""

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cowcheck.cli.output import EXIT_DIVERGED, EXIT_REJECTED, UsageError, emit
from cowcheck.compare import result_differences, store_differences
from cowcheck.drivers.protocol import Driver
from cowcheck.drivers.registry import DRIVERS, STORE_DRIVERS
from cowcheck.drivers.runner import run_real
from cowspec.errors import SpecError
from cowspec.formats.oracle import oracle, oracle_following
from cowspec.formats.store_trace import STORE_TRACE_FORMAT, decode_store_trace, run_store_model
from cowspec.formats.trace import Trace, decode_trace
from cowspec.fs.observe import Entry
from cowspec.store.steps import Step


@dataclass(frozen=True)
class StoreTrace:
    """A decoded ``cowspec-store-trace/1`` document."""

    steps: tuple[Step, ...]


AnyTrace = Trace | StoreTrace


def load_trace(name: str) -> AnyTrace:
    """Read and decode one trace file (``-`` is standard input)."""
    try:
        if name == "-":
            text = sys.stdin.read()
        else:
            with open(name, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as error:
        raise SpecError(f"cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise SpecError("not UTF-8 text") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    if isinstance(document, dict) and document.get("format") == STORE_TRACE_FORMAT:
        return StoreTrace(decode_store_trace(document))
    return decode_trace(document)


def for_each_trace(files: Sequence[str], handle: Callable[[AnyTrace], tuple[Entry, int]]) -> int:
    """Run ``handle`` on each trace file; the worst exit status."""
    status = 0
    for name in files:
        try:
            trace = load_trace(name)
            document, code = handle(trace)
        except SpecError as error:
            print(f"cowspec: {name}: {error}", file=sys.stderr)
            if len(files) > 1:
                emit({"error": f"{name}: {error}"})
            status = max(status, EXIT_REJECTED)
            continue
        emit(document)
        status = max(status, code)
    return status


def pick_driver(name: str) -> Driver:
    """The driver called ``name``."""
    if name not in DRIVERS:
        raise UsageError(f"unknown driver {name!r} (known: {', '.join(sorted(DRIVERS))})")
    return DRIVERS[name]()


def command_oracle(arguments: argparse.Namespace) -> int:
    def answer(trace: AnyTrace) -> tuple[Entry, int]:
        if isinstance(trace, StoreTrace):
            return run_store_model(trace.steps), 0
        return oracle(trace), 0

    return for_each_trace(arguments.traces, answer)


def run_any(arguments: argparse.Namespace, trace: AnyTrace) -> Entry:
    """The real system's result for ``trace``, with the driver the command line named."""
    if isinstance(trace, StoreTrace):
        if arguments.driver not in STORE_DRIVERS:
            known = ", ".join(sorted(STORE_DRIVERS))
            raise UsageError(f"store traces run on a store driver ({known}), not {arguments.driver!r}")
        return STORE_DRIVERS[arguments.driver]().run(trace.steps)
    if arguments.driver in STORE_DRIVERS:
        raise UsageError(f"--driver {arguments.driver} runs store traces (cowspec-store-trace/1) only")
    return run_real(pick_driver(arguments.driver), trace)


def command_run(arguments: argparse.Namespace) -> int:
    if arguments.driver not in STORE_DRIVERS:
        pick_driver(arguments.driver)
    return for_each_trace(arguments.traces, lambda trace: (run_any(arguments, trace), 0))


def command_check(arguments: argparse.Namespace) -> int:
    if not arguments.traces:
        from cowcheck.cli.generate import generated_check  # Hypothesis is imported only to generate

        return generated_check(pick_driver(arguments.driver), arguments)
    if arguments.driver not in STORE_DRIVERS:
        pick_driver(arguments.driver)

    def check_one(trace: AnyTrace) -> tuple[Entry, int]:
        observed = run_any(arguments, trace)
        if isinstance(trace, StoreTrace):
            differences = store_differences(run_store_model(trace.steps), observed)
        else:
            # The model follows the real run wherever the spec allows what it did [TRACE-5].
            differences = result_differences(oracle_following(trace, observed), observed)
        for line in differences:
            print(f"cowspec: diverges: {line}", file=sys.stderr)
        return {**observed, "agrees": not differences, "differences": differences}, (
            EXIT_DIVERGED if differences else 0
        )

    return for_each_trace(arguments.traces, check_one)
