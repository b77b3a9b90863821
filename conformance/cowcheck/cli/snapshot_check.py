"""``cowspec check`` and ``cowspec replay`` at the snapshot level: a snapshotter held to the model.

- ``cowspec check --driver D`` (D a snapshot-level driver, e.g.
  ``containerd-overlayfs``) without traces runs the snapshot machine under a
  profile's budget and reports; the smallest divergence found is saved under
  ``--save DIR`` as a ``cowspec-snapshot-trace/1`` file.
- ``cowspec check --driver D TRACE.json...`` replays snapshot traces as the
  machine runs them and prints one JSON line per trace.
- ``cowspec replay TRACE.json --driver D`` replays one trace call by call and
  prints, for each call, the model's outcome beside the snapshotter's, then
  the differences at the first point that diverges, each with its rule.

Exit statuses as every command's (``cli/output.py``): 1 when the snapshotter
diverges, 2 for a rejected trace or command line, 3 when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter

from hypothesis import settings
from hypothesis.errors import HypothesisException
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.cli.output import EXIT_DIVERGED, EXIT_REJECTED, UsageError, emit, one_line, write_report
from cowcheck.cli.store_check import overridden
from cowcheck.cli.trace_commands import read_json
from cowcheck.compare import Difference
from cowcheck.drivers import registry
from cowcheck.drivers.protocol import DriverError, DriverUnavailable, SnapshotDriver
from cowcheck.machines import profiles
from cowcheck.machines import snapshot_machine as machine
from cowcheck.report import RuleTally, rule_order, started_now
from cowspec import __version__
from cowspec.errors import SpecError
from cowspec.formats.snapshot_trace import SnapshotTrace, decode_snapshot_trace, encode_snapshot_trace

LEVEL = "snapshot"


def is_snapshot_driver(spec: str) -> bool:
    """True if ``--driver spec`` names a driver of the snapshot level (and of no other)."""
    return LEVEL in registry.levels_of(spec)


def load_snapshot_trace(name: str) -> SnapshotTrace:
    """Read and decode one ``cowspec-snapshot-trace/1`` file (``-`` is standard input)."""
    document = read_json(name)
    return decode_snapshot_trace(document)


def _driver_for(spec: str, trace: SnapshotTrace, driver: SnapshotDriver | None = None) -> SnapshotDriver:
    """The driver ``spec`` names (or ``driver``), refused if the trace is another snapshotter's."""
    driver = driver or registry.snapshot_driver(spec)
    if trace.snapshotter != driver.snapshotter:
        raise UsageError(
            f"the trace is for the {trace.snapshotter} snapshotter; --driver {spec} is {driver.snapshotter}"
        )
    return driver


def command_check(arguments: argparse.Namespace) -> int:
    """``cowspec check`` with a snapshot-level driver: traces replayed, or generated cases."""
    _check_report_paths(arguments.report)
    if arguments.workers != 1:
        raise UsageError(
            "--workers: the snapshot machine runs in one process (one containerd, a namespace per example)"
        )
    if arguments.feature:
        raise UsageError(
            "--feature: a snapshot-level driver mounts as its snapshotter does; it takes no overlay feature"
        )
    if not arguments.traces:
        return generated_snapshot_check(arguments)
    driver = registry.snapshot_driver(arguments.driver)
    status = 0
    try:
        for name in arguments.traces:
            try:
                trace = load_snapshot_trace(name)
                _driver_for(arguments.driver, trace, driver)
            except SpecError as error:
                print(f"cowspec: {name}: {one_line(str(error))}", file=sys.stderr)
                if len(arguments.traces) > 1:
                    emit({"trace": name, "error": f"{name}: {error}"})
                status = max(status, EXIT_REJECTED)
                continue
            differences = machine.first_divergence(driver, trace)
            for difference in differences:
                print(f"cowspec: {name}: diverges: {difference.line()}", file=sys.stderr)
            emit(
                {
                    "trace": name,
                    "agrees": not differences,
                    "differences": [difference.to_json() for difference in differences],
                }
            )
            status = max(status, EXIT_DIVERGED if differences else 0)
    finally:
        driver.close()
    return status


def command_replay(arguments: argparse.Namespace) -> int:
    """``cowspec replay TRACE --driver D``: each call's outcome on the model and on the snapshotter, then the
    differences at the first point that diverges, with their rules."""
    try:
        trace = load_snapshot_trace(arguments.trace)
    except SpecError as error:
        raise UsageError(f"{arguments.trace}: {error}") from None
    driver = _driver_for(arguments.driver, trace)
    try:
        session = driver.open_snapshots()
        run = machine.SnapshotRun(session, trace.snapshotter, driver.allocation)
        differences: list[Difference] = []
        try:
            for index, call in enumerate(trace.calls):
                differences = run.call(call)
                model, real = _outcomes(run, differences, index)
                print(f"call {index}: {_describe(call)}: model {model}, {arguments.driver} {real}")
                if not differences:
                    differences = run.state()
                if differences:
                    break
            else:
                differences = run.end()
                print(f"end: usage, mounts and diffs {'differ' if differences else 'agree'}")
        finally:
            session.close()
    finally:
        driver.close()
    if not differences:
        print("the snapshotter agrees with the model all the way")
        return 0
    print(f"diverges ({len(differences)} difference{'s' if len(differences) > 1 else ''}):")
    for difference in differences:
        print(f"  {difference.line()}")
    return EXIT_DIVERGED


def _outcomes(run: machine.SnapshotRun, differences: list[Difference], index: int) -> tuple[str, str]:
    """The model's and the real outcome of call ``index``, as JSON text."""
    result = next((each for each in differences if each.field == "result"), None)
    if result is not None:
        return json.dumps(result.expected, sort_keys=True), json.dumps(result.actual, sort_keys=True)
    same = json.dumps(run.last_outcome, sort_keys=True)
    return same, same


def _describe(call: object) -> str:
    fields = getattr(call, "__dataclass_fields__", {})
    return f"{machine.call_name(call)} " + " ".join(  # type: ignore[arg-type]
        f"{name}={getattr(call, name)!r}" for name in fields
    )


def _check_report_paths(paths: list[str]) -> None:
    for path in paths:
        if not path.endswith((".json", ".md")):
            raise UsageError(f"--report {path}: a snapshot-level report is written as .json or .md")


def _budget(arguments: argparse.Namespace) -> settings:
    return overridden(profiles.snapshot_machine(arguments.profile), arguments)


def generated_snapshot_check(arguments: argparse.Namespace) -> int:
    """The snapshot machine on the driver, under the profile's budget; its report; 1 on a divergence."""
    budget = _budget(arguments)
    driver = registry.snapshot_driver(arguments.driver)
    print(
        f"cowspec check --driver {arguments.driver}: the snapshot machine ({driver.snapshotter}), profile"
        f" {arguments.profile}: {budget.max_examples} examples of up to {budget.stateful_step_count} calls"
        " (every outcome, info and tree compared after every call; usage, mounts and diffs at the end)",
        flush=True,
    )
    tally = RuleTally()
    found: list[machine.SnapshotDivergence] = []
    examples = Counter[str]()
    started, started_at = time.monotonic(), started_now()
    failure: BaseException | None = None

    def counted() -> None:
        examples["examples"] += 1

    results: Counter[str] = Counter()
    try:
        with with_reporter(lambda _message: None):
            machine_class = machine.machine_for(driver, tally, counted, found, results)
            run_state_machine_as_test(machine_class, settings=budget)
    except (DriverUnavailable, DriverError):
        raise
    except (AssertionError, HypothesisException, OSError, RuntimeError) as error:
        failure = error
    except ExceptionGroup as group:  # several distinct failures: the driver's own first, else the divergences
        own = group.subgroup((DriverUnavailable, DriverError))
        if own is not None:
            raise _first(own) from None
        failure = group
    finally:
        driver.close()
    seconds = time.monotonic() - started
    calls = sum(results.values())
    print(f"  {examples['examples']} examples (shrinking's replays included), {calls} calls, {seconds:.1f} s")
    smallest = found[-1] if found else None  # the last one raised is the smallest Hypothesis found
    if failure is not None and smallest is None:
        print(f"  the run stopped with an error: {type(failure).__name__}: {one_line(str(failure))}")
    if smallest is not None:
        smallest = _minimised(driver, smallest)
    document = _report(arguments, driver, examples["examples"], calls, seconds, tally, smallest, started_at, results)
    document["budget"] = f"{budget.max_examples} examples of up to {budget.stateful_step_count} calls"
    for path in arguments.report:
        write_report(path, json.dumps(document, indent=1) + "\n" if path.endswith(".json") else _markdown(document))
    if smallest is None:
        if failure is not None:
            return EXIT_DIVERGED
        print("  divergences: none: every outcome, info, tree, usage, mount and diff agreed")
        return 0
    print(f"  divergence 1 [{smallest.rule}]:")
    for line in str(smallest).splitlines():
        print(f"    {line}")
    try:
        os.makedirs(arguments.save, exist_ok=True)
        path = os.path.join(arguments.save, "snapshot-divergence-1.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(encode_snapshot_trace(smallest.trace), handle, indent=1)
            handle.write("\n")
    except OSError as error:
        print(f"cowspec: --save {arguments.save}: cannot write ({error.strerror})", file=sys.stderr)
        return EXIT_REJECTED
    print(f"    minimal snapshot trace ({len(smallest.trace.calls)} calls) saved to {path}")
    print(f"    replay: cowspec replay {path} --driver {arguments.driver}")
    return EXIT_DIVERGED


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a group, groups within it opened."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _minimised(driver: SnapshotDriver, found: machine.SnapshotDivergence) -> machine.SnapshotDivergence:
    """``found`` with every call taken away that it does not need (``snapshot_machine.minimise``), replayed."""
    try:
        trace = machine.minimise(driver, found.trace, found.rule)
        if trace == found.trace:
            return found
        return machine.SnapshotDivergence(machine.first_divergence(driver, trace), trace)
    finally:
        driver.close()


def _report(
    arguments: argparse.Namespace,
    driver: SnapshotDriver,
    examples: int,
    calls: int,
    seconds: float,
    tally: RuleTally,
    smallest: machine.SnapshotDivergence | None,
    started: str,
    results: Counter[str],
) -> dict[str, object]:
    """The run as one JSON object (the shape of the filesystem level's JSON report, at the snapshot level)."""
    rules = sorted(set(tally.exercised) | set(tally.broken), key=lambda rule: rule_order(rule, {}))
    version = getattr(driver, "version", None)
    return {
        "cowspec": __version__,
        "started": started,
        "driver": arguments.driver,
        "kernel": platform.release(),
        "level": LEVEL,
        "snapshotter": driver.snapshotter,
        "version": version() if callable(version) else "",
        "profile": arguments.profile,
        "examples": examples,
        "ops": calls,
        "seconds": round(seconds, 1),
        "results": dict(results),
        "rules": {rule: {"exercised": tally.exercised[rule], "broken": tally.broken[rule]} for rule in rules},
        "divergences": []
        if smallest is None
        else [
            {
                "source": "generated",
                "rule": smallest.rule,
                "trace": encode_snapshot_trace(smallest.trace),
                "differences": [difference.to_json() for difference in smallest.differences],
            }
        ],
    }


def _markdown(document: dict[str, object]) -> str:
    """The JSON report as a short Markdown page."""
    lines = [
        f"# cowspec check --driver {document['driver']} (snapshot level)",
        "",
        f"Profile {document['profile']}: {document['examples']} examples, {document['ops']} calls,"
        f" {document['seconds']} s; {document['version']}.",
        "",
        "| rule | exercised | broken |",
        "|---|---|---|",
    ]
    rules = document["rules"]
    assert isinstance(rules, dict)
    lines += [f"| {rule} | {row['exercised']} | {row['broken']} |" for rule, row in rules.items()]
    divergences = document["divergences"]
    assert isinstance(divergences, list)
    lines += ["", "## Divergences", ""]
    if not divergences:
        lines.append("None.")
    for each in divergences:
        lines.append(f"- [{each['rule']}] {len(each['trace']['calls'])} calls:")
        lines += [f"  - `{Difference(**item).line()}`" for item in each["differences"]]
        lines += ["", "```json", json.dumps(each["trace"], indent=1), "```"]
    return "\n".join(lines) + "\n"
