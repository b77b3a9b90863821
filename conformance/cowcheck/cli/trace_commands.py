"""The trace commands: ``oracle``, ``run`` and ``check`` (see ``cowcheck.cli.main``)."""

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cowcheck.cli.output import EXIT_DIVERGED, EXIT_REJECTED, UsageError, emit
from cowcheck.compare import result_differences, store_differences
from cowcheck.drivers import registry
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
            if len(files) > 1:  # a batch: each line says which trace it answers
                document = {"trace": name, **document}
        except SpecError as error:
            print(f"cowspec: {name}: {error}", file=sys.stderr)
            if len(files) > 1:
                emit({"trace": name, "error": f"{name}: {error}"})
            status = max(status, EXIT_REJECTED)
            continue
        emit(document)
        status = max(status, code)
    return status


def _levels(arguments: argparse.Namespace) -> tuple[registry.Level, ...]:
    """The levels ``--driver`` serves (found once: an exec program starts here)."""
    return registry.levels_of(arguments.driver)


def command_oracle(arguments: argparse.Namespace) -> int:
    def answer(trace: AnyTrace) -> tuple[Entry, int]:
        if isinstance(trace, StoreTrace):
            return run_store_model(trace.steps), 0
        return oracle(trace), 0

    return for_each_trace(arguments.traces, answer)


def run_any(arguments: argparse.Namespace, trace: AnyTrace) -> Entry:
    """The real system's result for ``trace``, with the driver the command line named."""
    if isinstance(trace, StoreTrace):
        if "store" not in _levels(arguments):
            raise UsageError(
                f"a store trace (cowspec-store-trace/1) needs a store driver; --driver {arguments.driver} serves the"
                f" {' and '.join(_levels(arguments))} level"
            )
        return registry.store_driver(arguments.driver).run(trace.steps)
    if "filesystem" not in _levels(arguments):
        raise UsageError(
            f"a trace (cowspec-trace/1) needs a filesystem driver; --driver {arguments.driver} serves the"
            f" {' and '.join(_levels(arguments))} level"
        )
    return run_real(registry.filesystem_driver(arguments.driver), trace)


def command_run(arguments: argparse.Namespace) -> int:
    _levels(arguments)  # an unknown driver is said once, before any trace
    return for_each_trace(arguments.traces, lambda trace: (run_any(arguments, trace), 0))


def command_check(arguments: argparse.Namespace) -> int:
    levels = _levels(arguments)
    if not arguments.traces:
        if "filesystem" in levels:
            from cowcheck.cli.generate import generated_check  # Hypothesis is imported only to generate

            return generated_check(registry.filesystem_driver(arguments.driver), arguments)
        if arguments.driver == "docker":
            from cowcheck.cli.store_check import generated_store_check

            return generated_store_check(arguments)
        raise UsageError(
            f"--driver {arguments.driver} serves the {' and '.join(levels)} level: give it traces or vectors"
            " (generated cases run at the filesystem level, and at the store level on --driver docker)"
        )

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
