"""``cowspec check`` without traces: generated cases, live progress and a readable report.

The run prints its header first (the kernel, the features, the profile and
the budget), then its progress on standard error while it runs, then the
report. ``--workers N`` runs N processes side by side, each with its own
mount namespace (a driver's first session makes one) and its own seed,
the budget split between them; the parent adds up their tallies. The first
divergence any worker meets stops the others, and is minimised once, by
the worker that found it.

Hypothesis's example database keeps every failing example a run finds, so
that the next run, and every worker, replays it first. ``--database`` names
it: a directory, or ``redis://HOST:PORT[/DB]`` for a fleet of machines
(Hypothesis's own ``RedisExampleDatabase``). Without it, a profile with
fresh randomness keeps its examples under ``$XDG_CACHE_HOME/cowspec/examples``
(``~/.cache`` by default), and a derandomized profile (``ci``) keeps none:
its examples are the same on every machine anyway. ``--database none``
turns it off.

``--conformance kernel|portable`` is the profile the machine and the
minimiser compare under (spec chapter 16). The report names the rule each
divergence breaks and, under ``portable``, how many relaxations were
applied under each CONFORM rule; ``--report FILE.md|FILE.html`` also
writes it, per spec rule, as ``cowcheck.report`` renders it. Each worker's
rule counts reach the parent as JSON (``RuleTally.to_json``) and are added
up there.
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from typing import IO, Any

from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
from hypothesis.errors import HypothesisException
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.cli.output import EXIT_DIVERGED, UsageError, write_report
from cowcheck.compare import Difference
from cowcheck.drivers.cleanup import die_with_parent
from cowcheck.drivers.protocol import Driver, DriverError, DriverUnavailable
from cowcheck.machines import profiles
from cowcheck.machines.fs_machine import Divergence, Tally, calling, machine_for, minimise
from cowcheck.report import ReportedDivergence, RuleTally, RunReport, render, report_format, started_now
from cowspec.errors import SpecError
from cowspec.formats.trace import Trace, decode_trace, encode_trace
from cowspec.fs.conformance import Conformance
from cowspec.fs.features import KNOWN, Features, features_from

DERANDOMIZED_SEED = 0x636F77
"""The first worker's seed under a derandomized profile; worker N's is this plus N."""
TICK_TERMINAL = 0.25
TICK_PLAIN = 5.0
"""Seconds between progress lines: redrawn on a terminal, plain lines otherwise."""


@dataclass(frozen=True)
class Budget:
    """What one run may do: examples (all workers together), steps, workers, seed and database."""

    profile: str
    examples: int
    steps: int
    workers: int
    derandomized: bool
    database: str | None
    base: settings

    def worker_settings(self, index: int) -> settings:
        """The settings of worker ``index``: its share of the examples, the database opened in its process."""
        share = self.examples // self.workers + (index < self.examples % self.workers)
        return settings(
            self.base,
            max_examples=max(share, 1),
            stateful_step_count=self.steps,
            derandomize=False,  # each worker is seeded instead (see ``seed``), so the database still works
            database=open_database(self.database),
            print_blob=False,
        )

    def seed(self, index: int) -> int:
        """Worker ``index``'s seed: fixed under a derandomized profile, fresh otherwise."""
        if self.derandomized:
            return DERANDOMIZED_SEED + index
        return int.from_bytes(os.urandom(8), "big")


@dataclass
class Outcome:
    """What one worker ends with: its tally, and the divergence (minimised, with its differences) or error
    that stopped it."""

    tally: Tally = field(default_factory=Tally)
    found: Trace | None = None
    smallest: Trace | None = None
    differences: list[Difference] = field(default_factory=list)
    error: str = ""
    error_kind: str = ""


# -- the budget and the database ---------------------------------------------------


def default_database() -> str:
    """Where a run with fresh randomness keeps its examples when ``--database`` is not given."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "cowspec", "examples")


def open_database(spec: str | None) -> ExampleDatabase | None:
    """The example database ``spec`` names: None, a directory, or ``redis://HOST:PORT[/DB]``."""
    if spec is None:
        return None
    if spec.startswith("redis://"):
        try:
            import redis
            from hypothesis.extra.redis import RedisExampleDatabase
        except ImportError:
            raise UsageError("--database redis://...: the redis Python package is not installed") from None
        try:
            client = redis.Redis.from_url(spec)
            client.ping()
        except (ValueError, redis.RedisError) as error:
            raise UsageError(f"--database {spec}: cannot reach the Redis server ({error})") from None
        return RedisExampleDatabase(client)
    if "://" in spec:
        raise UsageError(f"--database {spec}: give a directory or redis://HOST:PORT[/DB]")
    try:
        os.makedirs(spec, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--database {spec}: cannot make the directory ({error.strerror})") from None
    if not os.access(spec, os.W_OK | os.X_OK):
        raise UsageError(f"--database {spec}: the directory is not writable")
    return DirectoryBasedExampleDatabase(spec)


def budget_of(arguments: argparse.Namespace) -> Budget:
    """The run's budget from the command line (``UsageError`` for a bad one)."""
    profile = getattr(arguments, "profile", None) or profiles.DEFAULT
    chosen = settings.get_profile(profile)
    counts: dict[str, int] = {"examples": chosen.max_examples, "steps": chosen.stateful_step_count}
    for name in counts:
        value = getattr(arguments, name, None)
        if value is not None:
            if value < 1:
                raise UsageError(f"--{name} must be at least 1")
            counts[name] = value
    workers = getattr(arguments, "workers", 1)
    if workers is None or workers < 1:
        raise UsageError("--workers must be at least 1")
    database = getattr(arguments, "database", None)
    if database is None and not chosen.derandomize:
        database = default_database()
    if database in ("none", ""):
        database = None
    open_database(database)  # a bad one is refused before anything starts
    return Budget(profile, counts["examples"], counts["steps"], workers, chosen.derandomize, database, chosen)


# -- one worker ------------------------------------------------------------------------


def run_worker(
    driver: Driver,
    features: Features,
    budget: Budget,
    index: int,
    tally: Tally,
    minimising: Callable[[], None],
    conformance: Conformance = "kernel",
) -> Outcome:
    """Run worker ``index``'s share of the examples in this process, comparing under ``conformance``;
    minimise the divergence it finds under the same profile.

    ``minimising`` is called when a divergence has been found and before it is minimised.
    """
    outcome = Outcome(tally)
    machine = machine_for(driver, tally, features, seed=budget.seed(index), conformance=conformance)
    failure: BaseException | None = None
    with with_reporter(lambda _message: None):
        try:
            run_state_machine_as_test(machine, settings=budget.worker_settings(index))
        except DriverUnavailable as error:
            outcome.error, outcome.error_kind = str(error), type(error).__name__
            return outcome
        except DriverError as error:
            outcome.error, outcome.error_kind = str(tally.driver_failure or error), "DriverError"
            return outcome
        except (AssertionError, HypothesisException, OSError, RuntimeError) as error:
            failure = error
        except Exception as error:  # the example database failing (Redis gone away): reported, not a traceback
            failure = error
            if tally.driver_failure is None:
                outcome.error = f"{type(error).__name__}: {error}"
                return outcome
    if tally.driver_failure is not None:
        # The driver failed (Hypothesis may have wrapped its error in a group or called it flaky while shrinking):
        # that, not a divergence, is the run's verdict.
        outcome.error, outcome.error_kind = str(tally.driver_failure), "DriverError"
        return outcome
    if failure is None:
        return outcome
    found = failure if isinstance(failure, Divergence) else tally.last_divergence
    if found is None:
        outcome.error = f"{type(failure).__name__}: {failure}"
        return outcome
    minimising()
    outcome.found = found.trace
    try:
        outcome.smallest, outcome.differences = calling(
            driver, "a replay", lambda: minimise(driver, found.trace, conformance=conformance)
        )
    except (DriverUnavailable, DriverError) as error:
        outcome.error, outcome.error_kind = str(error), type(error).__name__
    except ValueError:  # the divergence did not show again on its own: keep what Hypothesis kept
        outcome.smallest, outcome.differences = found.trace, found.differences
    return outcome


def _snapshot(tally: Tally) -> dict[str, Any]:
    return {
        "examples": tally.examples,
        "ops": tally.ops,
        "results": dict(tally.results),
        "by_op": dict(tally.by_op),
        "diverged": tally.last_divergence is not None,
        "diverged_at": tally.diverged_at,
        "rules": tally.rules.to_json(),
        "driver_failure": str(tally.driver_failure) if tally.driver_failure is not None else None,
    }


def _worker_main(
    driver: Driver,
    features: Features,
    budget: Budget,
    index: int,
    sender: Connection,
    tie: Callable[[], None],
    conformance: Conformance = "kernel",
) -> None:
    """A worker process: its share of the run, its tally sent to the parent twice a second, its outcome at the end.

    Each worker writes to a pipe of its own (a worker stopped in the middle
    of a message breaks no other's). It dies with the parent
    (``PR_SET_PDEATHSIG``), and a ``SIGTERM`` (the parent stopping it, or
    the parent's death) unmounts and removes its scratch space before it
    exits.
    """
    from cowcheck.drivers import namespace

    lock = threading.Lock()

    def stop(_signal: int, _frame: object) -> None:
        namespace.release()
        os._exit(0)

    def send(message: tuple[Any, ...]) -> None:
        with lock, contextlib.suppress(OSError):
            sender.send(message)

    namespace.forget()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops its workers
    tie()  # made by the parent: the signal comes when the parent dies
    tally = Tally()
    done = threading.Event()

    def report() -> None:
        while not done.wait(0.5):
            send(("progress", index, _snapshot(tally)))

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        outcome = run_worker(
            driver, features, budget, index, tally, lambda: send(("progress", index, _snapshot(tally))), conformance
        )
    except BaseException as error:  # sent to the parent, which reports it
        outcome = Outcome(tally, error=f"{type(error).__name__}: {error}")
    if tally.driver_failure is not None:  # the driver's failure is the worker's verdict, whatever came after it
        outcome.error, outcome.error_kind = str(tally.driver_failure), "DriverError"
    done.set()
    reporter.join()
    send(("done", index, _snapshot(tally), _encode_outcome(outcome)))
    sender.close()
    # A forked worker leaves by os._exit, without exit handlers: its scratch space goes now, or it would stay
    # until the next run's sweep.
    namespace.release()


def _encode_outcome(outcome: Outcome) -> dict[str, Any]:
    return {
        "found": encode_trace(outcome.found) if outcome.found else None,
        "smallest": encode_trace(outcome.smallest) if outcome.smallest else None,
        "differences": [difference.to_json() for difference in outcome.differences],
        "error": outcome.error,
        "error_kind": outcome.error_kind,
    }


def _decode_outcome(snapshot: dict[str, Any], document: dict[str, Any]) -> Outcome:
    found, smallest = document["found"], document["smallest"]
    return Outcome(
        _tally_of([snapshot]),
        decode_trace(found) if found else None,
        decode_trace(smallest) if smallest else None,
        [_decode_difference(each) for each in document["differences"]],
        document["error"],
        document["error_kind"],
    )


def _decode_difference(data: dict[str, Any]) -> Difference:
    """A ``Difference`` from its ``to_json`` form."""
    return Difference(
        data["field"], data["path"], data["expected"], data["actual"], data["rule"], data.get("attribute", "")
    )


def _tally_of(snapshots: list[dict[str, Any]]) -> Tally:
    """The workers' tallies added up, their rule counts merged."""
    total = Tally()
    for each in snapshots:
        total.rules.merge(RuleTally.from_json(each["rules"]))
        total.examples += each["examples"]
        total.ops += each["ops"]
        total.results.update(Counter(each["results"]))
        total.by_op.update(Counter(each["by_op"]))
        if each.get("driver_failure") and total.driver_failure is None:
            total.driver_failure = DriverError(each["driver_failure"])
        if each.get("diverged_at") is not None and (
            total.diverged_at is None or each["diverged_at"] < total.diverged_at
        ):
            total.diverged_at = each["diverged_at"]
    return total


# -- progress --------------------------------------------------------------------------


class Progress:
    """Live progress on standard error: one line redrawn on a terminal, a plain line every few seconds otherwise.

    ``mode`` is ``--progress``: ``auto`` as above, ``always`` redraws the
    line even when standard error is not a terminal, ``never`` shows none.
    """

    def __init__(self, mode: str, total: int, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = mode != "never"
        self.redraw = mode == "always" or (mode == "auto" and self.stream.isatty())
        self.total = total
        self.started = time.monotonic()
        self.last = 0.0
        self.drawn = False

    def line(self, examples: int, ops: int, divergences: int) -> str:
        """The progress line: examples, ops, rate, divergences, time left."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = examples / elapsed
        head = f"cowspec: {examples} examples (budget {self.total}), {ops} ops, {rate:.1f} examples/s,"
        if divergences:
            # Hypothesis is shrinking what it found now: the budget's time left no longer says anything.
            return f"{head} {divergences} divergence{'s' if divergences != 1 else ''} found, shrinking it"
        left = f"about {max(self.total - examples, 0) / rate:.0f} s left" if rate > 0 else "starting"
        return f"{head} 0 divergences, {left}"

    def show(self, examples: int, ops: int, divergences: int, *, force: bool = False) -> None:
        """Show the progress if it is time to."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (TICK_TERMINAL if self.redraw else TICK_PLAIN):
            return
        self.last = now
        text = self.line(examples, ops, divergences)
        with contextlib.suppress(OSError, ValueError):
            if self.redraw:
                self.stream.write("\r\x1b[K" + text)
                self.drawn = True
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def finish(self) -> None:
        """Clear the redrawn line, so that the report starts on a clean one."""
        if self.drawn:
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            self.drawn = False


def _run_here(
    driver: Driver, features: Features, budget: Budget, progress: Progress, conformance: Conformance = "kernel"
) -> Outcome:
    """One worker, in this process; a thread draws the progress."""
    tally = Tally()
    done = threading.Event()

    def draw() -> None:
        while not done.wait(0.1):
            progress.show(tally.examples, tally.ops, int(tally.last_divergence is not None))

    drawer = threading.Thread(target=draw, daemon=True)
    drawer.start()
    try:
        return run_worker(driver, features, budget, 0, tally, lambda: None, conformance)
    finally:
        done.set()
        drawer.join()


def _run_workers(
    driver: Driver, features: Features, budget: Budget, progress: Progress, conformance: Conformance = "kernel"
) -> Outcome:
    """``budget.workers`` processes; their tallies added up, the first divergence stopping the others."""
    context = multiprocessing.get_context("fork")
    workers: list[multiprocessing.process.BaseProcess] = []
    receivers: dict[Connection, int] = {}
    tie = die_with_parent(signal.SIGTERM)
    for index in range(budget.workers):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker_main, args=(driver, features, budget, index, sender, tie, conformance), daemon=True
        )
        process.start()
        sender.close()
        workers.append(process)
        receivers[receiver] = index
    snapshots: dict[int, dict[str, Any]] = {}
    outcomes: dict[int, Outcome] = {}
    stopped = False
    try:
        while receivers:
            for ready in connection_wait(list(receivers), timeout=0.1):
                assert isinstance(ready, Connection)
                try:
                    message = ready.recv()
                except (EOFError, OSError):  # the worker ended (or was stopped): what it said stands
                    del receivers[ready]
                    continue
                kind, index, snapshot = message[0], message[1], message[2]
                snapshots[index] = snapshot
                if kind == "done":
                    outcomes[index] = _decode_outcome(snapshot, message[3])
                failing = (
                    snapshot["diverged"] or snapshot.get("driver_failure") or (kind == "done" and outcomes[index].error)
                )
                if failing and not stopped:
                    stopped = True  # the first divergence (or error) stops the others
                    for other, worker in enumerate(workers):
                        if other != index and worker.is_alive():
                            worker.terminate()
            total = _tally_of(list(snapshots.values()))
            divergences = sum(1 for each in snapshots.values() if each["diverged"])
            progress.show(total.examples, total.ops, divergences)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            worker.join(timeout=10)
        for receiver in receivers:
            receiver.close()
    total = _tally_of(list(snapshots.values()))
    for outcome in outcomes.values():
        if outcome.found is not None or outcome.error:
            outcome.tally = total
            return outcome
    missing = [index for index in range(len(workers)) if index not in outcomes]
    if missing and not stopped:
        return Outcome(
            total, error=f"worker {missing[0]} ended without a report (exit status {workers[missing[0]].exitcode})"
        )
    return Outcome(total)


# -- the command -------------------------------------------------------------------------


def generated_check(driver: Driver, arguments: argparse.Namespace) -> int:
    """Run the state machine against ``driver``; print the header, progress, then a report; 1 on divergence.

    The report files ``--report`` names and the ``--save`` directory are
    checked before anything runs (a name that is neither .md nor .html, a
    report's directory that is missing or not writable, a save directory
    that could not be made or written: a usage error), so that a long run
    is not spent to lose its report or its trace at the end. The report is
    written after it is printed (one that still cannot be written is a
    usage error too, the printed report standing).
    """
    try:
        features = features_from(dict.fromkeys(getattr(arguments, "feature", []), True))
    except SpecError as error:
        raise UsageError(str(error)) from None
    conformance: Conformance = getattr(arguments, "conformance", "kernel")
    reports: list[str] = list(getattr(arguments, "report", None) or [])
    for path in reports:
        try:
            report_format(path)
        except ValueError as error:
            raise UsageError(f"--report {path}: {error}") from None
        check_report_target(path)
    save = getattr(arguments, "save", None)
    if save:
        check_save_directory(save)
    budget = budget_of(arguments)
    out = sys.stdout
    enabled = ", ".join(features.enabled()) or "Docker's overlay2 configuration"
    print(
        f"cowspec check --driver {driver.name} (profile {budget.profile}; conformance {conformance};"
        f" features: {enabled})",
        file=out,
    )
    uname = os.uname()
    print(f"  kernel: {uname.sysname} {uname.release} ({uname.machine})", file=out)
    workers = f"{budget.workers} workers" if budget.workers > 1 else "1 worker"
    seeds = "derandomized" if budget.derandomized else "fresh randomness"
    database = budget.database or "none"
    print(
        f"  budget: {budget.examples} examples of up to {budget.steps} ops, {workers}, {seeds}; database: {database}",
        file=out,
        flush=True,
    )
    progress = Progress(getattr(arguments, "progress", "auto"), budget.examples)
    started = time.monotonic()
    started_at = started_now()
    try:
        if budget.workers == 1:
            outcome = _run_here(driver, features, budget, progress, conformance)
        else:
            outcome = _run_workers(driver, features, budget, progress, conformance)
    finally:
        progress.finish()
    elapsed = time.monotonic() - started
    if outcome.error_kind == "DriverUnavailable":
        raise DriverUnavailable(outcome.error)
    if outcome.error_kind == "DriverError":
        raise DriverError(outcome.error)
    if outcome.tally.driver_failure is not None:  # the driver failed, whatever else the run ended with
        raise DriverError(str(outcome.tally.driver_failure))
    tally = outcome.tally
    rate = tally.examples / elapsed if elapsed > 0 else 0.0
    print(
        f"  {tally.examples} examples, {tally.ops} ops, {budget.steps} ops at most per example,"
        f" {elapsed:.1f} s ({rate:.1f} examples/s)",
        file=out,
    )
    print("  results: " + _mix(tally.results, tally.ops), file=out)
    names = sorted({key.split()[0] for key in tally.by_op})
    for name in names:
        row = {key.split()[1]: count for key, count in tally.by_op.items() if key.split()[0] == name}
        print(f"    {name:<9} " + ", ".join(f"{result} {count}" for result, count in sorted(row.items())), file=out)
    print(f"  rules: {len(tally.rules.exercised)} exercised", file=out)
    if conformance != "kernel":
        print(f"  relaxations applied ({conformance}): {_relaxations(tally.rules)}", file=out)
    found: tuple[ReportedDivergence, ...] = ()
    if outcome.found is not None and outcome.smallest is not None:
        smallest = outcome.smallest
        found = (ReportedDivergence("generated", encode_trace(smallest), tuple(outcome.differences)),)
        path = save_trace(arguments.save, "divergence-1.json", smallest)
        entries = sum(len(layer) for layer in smallest.layers)
        print("  " + _divergence_lines(1, outcome.differences)[0], file=out)
        for line in _divergence_lines(1, outcome.differences)[1:]:
            print(f"    {line}", file=out)
        if tally.diverged_at is not None:
            print(f"    first seen in example {tally.diverged_at} of its worker", file=out)
        print(
            f"    minimal trace ({len(smallest.ops)} ops, {len(smallest.layers)} layers, {entries} entries;"
            f" Hypothesis had shrunk it to {len(outcome.found.ops)} ops) saved to {path}",
            file=out,
        )
        profile = "" if conformance == "kernel" else f" --conformance {conformance}"
        print(f"    replay: cowspec check --driver {driver.name}{profile} {path}", file=out)
        status = EXIT_DIVERGED
    elif outcome.error:
        print(f"  the run stopped with an error: {outcome.error}", file=out)
        if reports:
            print("  no report file written: the run did not finish", file=out)
        return EXIT_DIVERGED
    else:
        agreed = "every result, merged tree, upper layer and size agreed"
        if conformance != "kernel":
            agreed = "every result and merged tree agreed (the upper layer and sizes are not compared under portable)"
        print(f"  divergences: none: {agreed}", file=out)
        status = 0
    out.flush()
    if reports:
        report = RunReport(
            driver=driver.name,
            conformance=conformance,
            kernel=uname.release,
            features={name: getattr(features, name) for name in KNOWN},
            profile=budget.profile,
            budget=f"{budget.examples} examples of up to {budget.steps} ops, {workers}, {seeds}",
            examples=tally.examples,
            ops=tally.ops,
            seconds=elapsed,
            results=dict(tally.results),
            tally=tally.rules,
            divergences=found,
            started=started_at,
        )
        for path in reports:
            write_report(path, render(report, path))
    return status


def _divergence_lines(number: int, differences: list[Difference]) -> list[str]:
    """The divergence for people: the rule its first difference breaks and that difference, then any others,
    each with its own rule."""
    if not differences:
        return [f"divergence {number}: (no difference kept)"]
    first = differences[0]
    said = first.line().removesuffix(f" [{first.rule}]")
    return [f"divergence {number} breaks {first.rule}: {said}", *(f"and {each.line()}" for each in differences[1:])]


def _relaxations(rules: RuleTally) -> str:
    """How many relaxations a profile applied, in all and per CONFORM rule."""
    total = sum(rules.relaxed.values())
    if not total:
        return "none"
    each = ", ".join(f"{rule} {count}" for rule, count in sorted(rules.relaxed.items()))
    return f"{total} ({each})"


def _mix(counter: "dict[str, int]", total: int) -> str:
    if not total:
        return "none"
    ordered = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} {count} ({100 * count / total:.1f}%)" for name, count in ordered)


def check_report_target(path: str) -> None:
    """A ``UsageError`` unless ``--report path`` can be written: its directory exists and is writable, and the
    path is not a directory."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise UsageError(f"--report {path}: the directory {directory} {what}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--report {path}: the directory {directory} is not writable")
    if os.path.isdir(path):
        raise UsageError(f"--report {path}: is a directory")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"--report {path}: the file is not writable")


def check_save_directory(directory: str) -> None:
    """A ``UsageError`` unless ``--save directory`` could be made and written when a divergence is saved.

    Nothing is made now (a run that agrees leaves no directory behind):
    the nearest ancestor that exists must be a writable directory, which
    also means no ancestor is a plain file.
    """
    nearest = os.path.abspath(directory)
    while not os.path.lexists(nearest):
        nearest = os.path.dirname(nearest)
    if not os.path.isdir(nearest):
        where = "" if nearest == os.path.abspath(directory) else f" ({nearest} is a file)"
        raise UsageError(f"--save {directory}: not a directory{where}")
    if not os.access(nearest, os.W_OK | os.X_OK):
        where = "" if nearest == os.path.abspath(directory) else f" ({nearest})"
        raise UsageError(f"--save {directory}: the directory{where} is not writable")


def save_trace(directory: str, name: str, trace: Trace) -> str:
    """Write ``trace`` as ``directory/name``; the path written."""
    try:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(encode_trace(trace), handle, indent=1)
            handle.write("\n")
    except OSError as error:
        raise UsageError(f"--save {directory}: cannot write the trace ({error.strerror})") from None
    return path
