"""The trace commands: ``oracle``, ``run`` and ``check`` (see ``cowcheck.cli.main``)."""

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cowcheck.cli.output import EXIT_DIVERGED, EXIT_REJECTED, EXIT_UNAVAILABLE, UsageError, emit, say, write_report
from cowcheck.compare import (
    COMMIT_RESULT_FORMAT,
    commit_result,
    compare_commit,
    compare_run,
    model_commit,
)
from cowcheck.drivers import registry
from cowcheck.drivers.protocol import DriverError, committer_of
from cowcheck.drivers.runner import run_real
from cowcheck.report import ReportedDivergence, RuleTally, started_now
from cowspec.errors import SpecError
from cowspec.formats.oracle import model_run, observed_results, oracle
from cowspec.formats.store_trace import STORE_TRACE_FORMAT, decode_store_trace, run_store_model
from cowspec.formats.trace import Trace, build_layers, decode_trace, encode_trace
from cowspec.fs.observe import Entry
from cowspec.store.drivers import OVERLAY2, StoreConfig, storage_driver
from cowspec.store.steps import Step


@dataclass(frozen=True)
class StoreTrace:
    """A decoded ``cowspec-store-trace/1`` document: its steps, the engine it describes, and which of the
    engine's fields it names itself (``store_check.trace_engine``)."""

    steps: tuple[Step, ...]
    config: StoreConfig = OVERLAY2
    named: frozenset[str] = frozenset()


AnyTrace = Trace | StoreTrace


def read_json(name: str) -> object:
    """The JSON document in the file ``name`` (``-`` is standard input); ``SpecError`` in one line if it is none."""
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
    return document


def load_trace(name: str) -> AnyTrace:
    """Read and decode one trace file (``-`` is standard input)."""
    document = read_json(name)
    if isinstance(document, dict) and document.get("format") == STORE_TRACE_FORMAT:
        from cowcheck.cli.store_check import trace_engine

        return StoreTrace(decode_store_trace(document), *trace_engine(document))
    return decode_trace(document)


def for_each_trace(files: Sequence[str], handle: Callable[[str, AnyTrace], tuple[Entry, int]]) -> int:
    """Run ``handle`` on each trace file (its name and the trace); the worst exit status."""
    status = 0
    for name in files:
        try:
            trace = load_trace(name)
            document, code = handle(name, trace)
            if len(files) > 1:  # a batch: each line says which trace it answers
                document = {"trace": name, **document}
        except SpecError as error:
            print(f"cowspec: {name}: {error}", file=sys.stderr)
            if len(files) > 1:
                emit({"trace": name, "error": f"{name}: {error}"})
            status = max(status, EXIT_REJECTED)
            continue
        except DriverError as error:
            if len(files) == 1:
                raise
            # One trace the implementation failed on, in a batch: said, and the others still run.
            print(f"cowspec: {name}: {error}", file=sys.stderr)
            emit({"trace": name, "error": f"{name}: {error}"})
            status = max(status, EXIT_UNAVAILABLE)
            continue
        emit(document)
        status = max(status, code)
    return status


def _levels(arguments: argparse.Namespace) -> tuple[registry.Level, ...]:
    """The levels ``--driver`` serves (found once: an exec program starts here)."""
    return registry.levels_of(arguments.driver)


def oracle_config(arguments: argparse.Namespace, trace: StoreTrace) -> StoreConfig:
    """The engine the oracle answers a store trace for: the trace's, its storage driver ``--storage-driver``'s
    where the trace names none (both, and different: a usage error)."""
    from dataclasses import replace

    from cowcheck.cli.store_check import chosen_storage_driver

    in_trace = trace.config.driver if "storage_driver" in trace.named else None
    name = chosen_storage_driver(in_trace, getattr(arguments, "storage_driver", None))
    return replace(trace.config, driver=storage_driver(name))


def command_oracle(arguments: argparse.Namespace) -> int:
    def answer(_name: str, trace: AnyTrace) -> tuple[Entry, int]:
        if isinstance(trace, StoreTrace):
            return run_store_model(trace.steps, oracle_config(arguments, trace)), 0
        if arguments.commit:
            from cowcheck.compare import COMMIT_RESULT_FORMAT, model_commit

            return {"format": COMMIT_RESULT_FORMAT, "entries": model_commit(trace)}, 0
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
        from cowcheck.cli.store_check import run_config, run_on_engine

        driver = registry.store_driver(arguments.driver)
        config = run_config(driver, trace.config, trace.named, getattr(arguments, "storage_driver", None))
        return run_on_engine(driver, trace.steps, config)
    if "filesystem" not in _levels(arguments):
        committer = committer_of(registry.layer_driver(arguments.driver)) if "layer" in _levels(arguments) else None
        if committer is not None:
            # A layer driver that commits runs the trace's ops and answers the layer it commits [COMMIT-1].
            build_layers(trace)  # a malformed trace is refused by the model before the driver sees it
            return commit_result(committer.commit(trace.layers, trace.features, trace.ops))
        raise UsageError(
            f"a trace (cowspec-trace/1) needs a filesystem driver or a layer driver that commits; --driver"
            f" {arguments.driver} serves the {' and '.join(_levels(arguments))} level"
            + (" and does not commit" if "layer" in _levels(arguments) else "")
        )
    return run_real(registry.filesystem_driver(arguments.driver), trace)


def command_run(arguments: argparse.Namespace) -> int:
    _levels(arguments)  # an unknown driver is said once, before any trace
    return for_each_trace(arguments.traces, lambda _name, trace: (run_any(arguments, trace), 0))


def command_check(arguments: argparse.Namespace) -> int:
    levels = _levels(arguments)
    if not arguments.traces:
        if "filesystem" in levels:
            from cowcheck.cli.generate import generated_check  # Hypothesis is imported only to generate

            return generated_check(registry.filesystem_driver(arguments.driver), arguments)
        if "store" in levels:
            from cowcheck.drivers.docker_store import DockerStore

            if isinstance(registry.store_driver(arguments.driver), DockerStore):
                from cowcheck.cli.store_check import generated_store_check

                return generated_store_check(arguments)
        raise UsageError(
            f"--driver {arguments.driver} serves the {' and '.join(levels)} level: give it traces or vectors"
            " (generated cases run at the filesystem level, and at the store level on --driver docker and docker-*)"
        )

    if arguments.report:
        from cowcheck.report import report_format

        for path in arguments.report:
            try:
                report_format(path)
            except ValueError as error:
                raise UsageError(f"--report {path}: {error}") from None
    tally = RuleTally()
    found: list[ReportedDivergence] = []
    counted = {"traces": 0, "ops": 0}
    results: Counter[str] = Counter()
    started = time.monotonic()
    started_at = started_now()

    def check_one(name: str, trace: AnyTrace) -> tuple[Entry, int]:
        observed = run_any(arguments, trace)
        if isinstance(trace, StoreTrace):
            from cowcheck.cli.store_check import run_config
            from cowcheck.drivers.docker_store import DockerStore
            from cowcheck.store_compare import compare_store_result

            store_driver = registry.store_driver(arguments.driver)
            config = run_config(store_driver, trace.config, trace.named, getattr(arguments, "storage_driver", None))
            differences = compare_store_result(
                run_store_model(trace.steps, config), observed, disk_required=isinstance(store_driver, DockerStore)
            )
            document: Entry | None = None
        elif observed.get("format") == COMMIT_RESULT_FORMAT:
            # A commit is compared with the model's commit after the same ops, each op's first outcome taken.
            run = model_run(trace, (), arguments.conformance)
            differences = compare_commit(
                model_commit(trace), observed, conformance=arguments.conformance, relaxed=tally.relaxed
            )
            tally.record_all(run.taken)
            tally.exercised["COMMIT-1"] += 1
            counted["ops"] += len(trace.ops)
            document = encode_trace(trace)
        else:
            # The model follows the real run wherever the spec allows what it did [TRACE-5].
            run = model_run(trace, observed_results(observed), arguments.conformance)
            differences = compare_run(run, observed, conformance=arguments.conformance, relaxed=tally.relaxed)
            tally.record_all(run.taken)
            counted["ops"] += len(trace.ops)
            for item in observed_results(observed):
                results[str(item.get("errno", "ok")) if isinstance(item, dict) else "?"] += 1
            document = encode_trace(trace)
        counted["traces"] += 1
        tally.record_differences(differences)
        for difference in differences:
            say(f"{name}: diverges: {difference.line()}")
        if differences:
            found.append(ReportedDivergence(name, document, tuple(differences)))
        return {**observed, "agrees": not differences, "differences": [each.to_json() for each in differences]}, (
            EXIT_DIVERGED if differences else 0
        )

    status = for_each_trace(arguments.traces, check_one)
    if arguments.report:
        from cowcheck.report import RunReport, render

        report = RunReport(
            driver=arguments.driver,
            conformance=arguments.conformance,
            kernel=os.uname().release,
            profile="traces",
            budget=f"{len(arguments.traces)} trace files",
            examples=counted["traces"],
            ops=counted["ops"],
            results=results,
            seconds=time.monotonic() - started,
            tally=tally,
            divergences=tuple(found),
            started=started_at,
        )
        for path in arguments.report:
            write_report(path, render(report, path))
    return status
