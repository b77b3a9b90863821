"""cowspec's pytest plugin: an implementation's conformance as ordinary tests.

Installed with cowspec (entry point group ``pytest11``), so an implementer
runs, in their own repository::

    pytest --cowspec-driver my-overlay [--cowspec-profile ci]

The plugin does nothing unless ``--cowspec-driver`` is given; then, beside
the tests pytest collected, it adds:

- ``cowspec::vector::NAME``: one test per conformance vector of each level
  the driver serves (``cowcheck.vectors``): a filesystem trace run on the
  driver and compared with the model as ``cowspec check`` compares (under
  ``--cowspec-conformance kernel`` or ``portable``), a layer stack
  flattened, a store scenario run. The set is the one
  ``cowspec vectors export`` would write, built from the installed cowspec,
  or an exported set (``--cowspec-vectors DIR``). Traces the spec rejects
  test cowspec's decoder, not the driver, and are left out;
- ``cowspec::machine::filesystem`` for a filesystem driver: the state
  machine of ``cowcheck.machines.fs_machine``, under the budget of a
  Hypothesis profile (``cowcheck.machines.profiles``), comparing under the
  same conformance profile as the vectors.

Every added test carries the marker ``cowspec`` (``-m cowspec``,
``-m "not cowspec"``) and matches ``-k cowspec``. A failing vector lists
its differences one per line, each naming the spec rule it breaks, and
where its trace is; a failing machine names the rule its divergence breaks,
minimises it under the same profile, lists the minimal trace's differences,
saves the trace (``--cowspec-save``) and names the command that replays it. A driver that cannot run here (not root,
no overlay, an engine missing) makes the tests skip with its reason, and
fail instead where ``CI=true``, so that a green CI means the driver ran.

The driver is named as ``cowspec --driver`` names one (``NAME``,
``module:attr`` or ``exec:COMMAND``; ``cowcheck.drivers.registry``), and a
name that finds nothing is a usage error before any test runs.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import pytest

if TYPE_CHECKING:  # the plugin is loaded by every pytest run: the harness is imported only when asked for
    from cowcheck.drivers.protocol import Answer, Driver, LayerDriver, StoreDriver
    from cowcheck.drivers.registry import Level, Registered
    from cowcheck.machines.fs_machine import Tally
    from cowspec.formats.trace import Trace
    from cowspec.fs.conformance import Conformance
    from cowspec.fs.features import Features

MARKER = "cowspec"
ROOT_NAME = "cowspec"
"""The collector every added test hangs from: its node ids are ``cowspec::vector::NAME`` and the like."""
DEFAULT_SAVE = "cowspec-divergences"
SET_LEVELS: dict[str, Level] = {"fs": "filesystem", "layer": "layer", "store": "store"}
"""A vector set's directory for each driver level."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--cowspec-*`` options, in a group of their own in ``pytest --help``."""
    group = parser.getgroup("cowspec", "conformance to the cowspec model (tests added only with --cowspec-driver)")
    group.addoption(
        "--cowspec-driver",
        metavar="DRIVER",
        help="the implementation to test: an installed driver NAME (entry point group cowspec.drivers),"
        " module:attr, or exec:COMMAND; adds the tests cowspec::vector::* and cowspec::machine::*",
    )
    group.addoption(
        "--cowspec-profile",
        metavar="NAME",
        help="budget of the state machine: a Hypothesis profile of cowcheck.machines.profiles"
        " (quick, dev, ci, nightly; default: cowspec check's default)",
    )
    group.addoption("--cowspec-examples", type=int, metavar="N", help="override the profile's number of examples")
    group.addoption("--cowspec-steps", type=int, metavar="N", help="override the profile's ops per example")
    group.addoption(
        "--cowspec-features",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="overlay features to turn on in the state machine (redirect_dir); the driver must declare them",
    )
    group.addoption(
        "--cowspec-save",
        metavar="DIR",
        help=f"directory for the minimal traces of divergences (default {DEFAULT_SAVE} under the rootdir)",
    )
    group.addoption(
        "--cowspec-conformance",
        choices=("kernel", "portable"),
        default="kernel",
        help="kernel: exactly as Linux overlayfs mounted by Docker's overlay2; portable: the spec's points of"
        " legitimate variation relaxed (spec chapter 16), for the vectors and the state machine (default kernel)",
    )
    group.addoption(
        "--cowspec-vectors",
        metavar="DIR",
        help="an exported vector set (cowspec vectors export DIR) to run instead of the one built in",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; with ``--cowspec-driver``, find the driver and register the tests' source."""
    config.addinivalue_line("markers", f"{MARKER}: a conformance test added by cowspec's plugin (--cowspec-driver)")
    spec = config.getoption("cowspec_driver")
    if spec is None:
        return
    config.pluginmanager.register(CowspecTests(plan_of(config, spec)), "cowspec-tests")


# -- what to run -----------------------------------------------------------------------


@dataclass
class Plan:
    """What the command line asked for, checked, and the driver it names."""

    spec: str
    profile: str
    conformance: Conformance
    examples: int | None
    steps: int | None
    features: Features
    save: Path
    vectors: Path | None
    registered: Registered | None
    """None when the driver cannot run here (``unavailable`` says why)."""
    unavailable: str | None = None
    made: dict[str, object] = field(default_factory=dict)
    """Each level's driver once made, or the reason it cannot run (a ``str``)."""

    def levels(self) -> tuple[Level, ...]:
        return self.registered.levels if self.registered is not None else ()

    def declared_features(self) -> frozenset[str]:
        return self.registered.features if self.registered is not None else frozenset()

    def driver(self, level: Level) -> object:
        """The driver at ``level``, made once; a driver that cannot run skips the test (fails it in CI)."""
        from cowcheck.drivers.protocol import DriverUnavailable
        from cowcheck.drivers.registry import DriverNotFound

        if self.registered is None:
            cannot_run(self.unavailable or "unknown reason")
        if level not in self.made:
            try:
                self.made[level] = self.registered.make(level)
            except (DriverUnavailable, DriverNotFound) as error:
                self.made[level] = str(error)
        made = self.made[level]
        if isinstance(made, str):
            cannot_run(made)
        return made

    def replay(self, path: Path) -> str:
        """The command that replays a saved trace, under the same conformance profile."""
        profile = "" if self.conformance == "kernel" else f" --conformance {self.conformance}"
        return f"cowspec check --driver {shlex.quote(self.spec)}{profile} {shlex.quote(str(path))}"


def plan_of(config: pytest.Config, spec: str) -> Plan:
    """The checked options; anything wrong is a usage error, said in one line, before any test runs."""
    from hypothesis import settings
    from hypothesis.errors import InvalidArgument

    from cowcheck.drivers.protocol import DriverError, DriverUnavailable
    from cowcheck.drivers.registry import DriverNotFound, find
    from cowcheck.machines import profiles
    from cowspec.errors import SpecError
    from cowspec.fs.features import features_from

    profile = config.getoption("cowspec_profile") or profiles.DEFAULT
    try:
        settings.get_profile(profile)
    except InvalidArgument:
        raise pytest.UsageError(
            f"cowspec: --cowspec-profile {profile!r} is none of {', '.join(profiles.PROFILES)}"
        ) from None
    counts: dict[str, int | None] = {}
    for name in ("examples", "steps"):
        value = config.getoption(f"cowspec_{name}")
        if value is not None and value < 1:
            raise pytest.UsageError(f"cowspec: --cowspec-{name} must be at least 1")
        counts[name] = value
    names = [name.strip() for value in config.getoption("cowspec_features") for name in value.split(",")]
    try:
        features = features_from(dict.fromkeys((name for name in names if name), True))
    except SpecError as error:
        raise pytest.UsageError(f"cowspec: --cowspec-features: {error}") from None
    save = config.getoption("cowspec_save")
    vectors = config.getoption("cowspec_vectors")
    registered: Registered | None = None
    unavailable: str | None = None
    try:
        registered = find(spec)
    except DriverNotFound as error:
        raise pytest.UsageError(f"cowspec: {error}") from None
    except DriverUnavailable as error:  # an exec program that says it cannot run here
        unavailable = str(error)
    except DriverError as error:
        raise pytest.UsageError(driver_failed(spec, error)) from None
    if registered is not None:
        missing = sorted(set(features.enabled()) - registered.features)
        if missing:
            declared = ", ".join(sorted(registered.features)) or "none"
            raise pytest.UsageError(
                f"cowspec: driver {spec} does not declare the feature {', '.join(missing)} (it declares: {declared})"
            )
    return Plan(
        spec=spec,
        profile=profile,
        conformance=config.getoption("cowspec_conformance"),
        examples=counts["examples"],
        steps=counts["steps"],
        features=features,
        save=Path(save).absolute() if save else config.rootpath / DEFAULT_SAVE,
        vectors=Path(vectors).absolute() if vectors else None,
        registered=registered,
        unavailable=unavailable,
    )


def cannot_run(reason: str) -> NoReturn:
    """Skip the test: the driver cannot run here; in CI (``CI=true``) fail it, so that a green run means it ran."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"cowspec: the driver cannot run here, and CI=true requires it to: {reason}", pytrace=False)
    pytest.skip(f"cowspec: the driver cannot run here: {reason}")


@dataclass(frozen=True)
class VectorSet:
    """The vector files by relative path, where they come from, and each level's vector names."""

    files: Mapping[str, bytes]
    origin: str
    directory: Path | None
    names: Mapping[str, tuple[str, ...]]


def vector_set(plan: Plan) -> VectorSet | str:
    """The set to run: ``--cowspec-vectors DIR`` checked against its manifest, or the one built in; or why none."""
    from cowcheck import vectors
    from cowspec.errors import SpecError

    if plan.vectors is not None:
        try:
            files = vectors.read_set(plan.vectors)
        except (SpecError, OSError) as error:
            raise pytest.UsageError(f"cowspec: --cowspec-vectors: {error}") from None
        origin, directory = f"the set in {plan.vectors}", plan.vectors
    else:
        try:
            files = vectors.build_set(vectors.load_sources())
        except SpecError as error:
            return f"{error}; export a set with `cowspec vectors export DIR` and pass --cowspec-vectors DIR"
        origin, directory = f"the set of cowspec {vectors.set_version()}", None
    manifest, problems = vectors.check_manifest(files)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise pytest.UsageError(f"cowspec: --cowspec-vectors {plan.vectors}: {problems[0]}{more}")
    listed = manifest.get("vectors")
    names: dict[str, tuple[str, ...]] = {}
    for level in SET_LEVELS:
        found = listed.get(level, []) if isinstance(listed, dict) else []
        names[level] = tuple(str(name) for name in found)
    return VectorSet(files, origin, directory, names)


# -- the tests ----------------------------------------------------------------------


class CowspecTests:
    """The plugin's side once a driver is named: it adds the tests and says what it runs."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.vectors = vector_set(plan)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        plan = self.plan
        levels = " and ".join(plan.levels()) or "unknown level"
        enabled = ", ".join(plan.features.enabled()) or "Docker's overlay2 configuration"
        vectors = self.vectors if isinstance(self.vectors, str) else self.vectors.origin
        return [
            f"cowspec: driver {plan.spec} ({levels}), conformance {plan.conformance}, profile {plan.profile},"
            f" features: {enabled}",
            f"cowspec: vectors: {vectors}; divergences saved to {plan.save}",
        ]

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        """The session's own collection gains the node ``cowspec``: its tests are collected, counted,
        selected by ``-k`` and ``-m`` and reported as any others are."""
        report = yield
        if isinstance(collector, pytest.Session) and report.passed:
            root = Group.from_parent(collector, name=ROOT_NAME, nodeid=ROOT_NAME, make=self.groups)
            root.add_marker(MARKER)
            report.result.append(root)
        return report

    def groups(self, root: Group) -> list[pytest.Item | pytest.Collector]:
        plan = self.plan
        if plan.registered is None:
            return [UnavailableTest.from_parent(root, name="driver", plan=plan)]
        made: list[pytest.Item | pytest.Collector] = [Group.from_parent(root, name="vector", make=self.vector_tests)]
        if "filesystem" in plan.levels():
            made.append(Group.from_parent(root, name="machine", make=self.machine_tests))
        return made

    def vector_tests(self, group: Group) -> list[pytest.Item | pytest.Collector]:
        plan, found = self.plan, self.vectors
        if isinstance(found, str):
            return [MissingVectors.from_parent(group, name="set", reason=found)]
        made: list[pytest.Item | pytest.Collector] = []
        for directory, level in SET_LEVELS.items():
            if level not in plan.levels():
                continue
            if level == "layer" and not _flattens(plan):
                continue  # a layer driver that only commits (cowspec-driver/1 "calls"): no image to flatten
            for name in found.names[directory]:
                if directory == "fs" and _rejected(found, name):
                    continue  # the spec rejects the trace: cowspec refuses it before any driver sees it
                made.append(VectorTest.from_parent(group, name=name, plan=plan, vectors=found, directory=directory))
        return made

    def machine_tests(self, group: Group) -> list[pytest.Item | pytest.Collector]:
        return [MachineTest.from_parent(group, name="filesystem", plan=self.plan)]


def _flattens(plan: Plan) -> bool:
    """Whether the driver's layer level flattens: an exec program may declare that it commits alone."""
    registered = plan.registered
    if registered is None:
        return True
    try:
        made = registered.make("layer")
    except Exception:  # a driver that cannot be made here: its tests say why when they run
        return True
    return getattr(made, "flattens", True) is not False


def _rejected(found: VectorSet, name: str) -> bool:
    answer = json.loads(found.files.get(f"fs/{name}.result.json", b"{}"))
    return isinstance(answer, dict) and "rejected" in answer


class Group(pytest.Collector):
    """A node the added tests hang from (``cowspec``, ``cowspec::vector``, ``cowspec::machine``);
    ``make`` makes its children."""

    def __init__(self, *, make: Callable[[Group], list[pytest.Item | pytest.Collector]], **keywords: Any) -> None:
        super().__init__(**keywords)
        self.make = make

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        return self.make(self)


class CowspecTest(pytest.Item):
    """A test the plugin added: marked ``cowspec``; its failures say what they say, without a traceback."""

    def __init__(self, *, plan: Plan | None = None, **keywords: Any) -> None:
        super().__init__(**keywords)
        self.plan = plan
        self.add_marker(MARKER)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"cowspec {self.nodeid.removeprefix(ROOT_NAME + '::')}"

    def the_plan(self) -> Plan:
        assert self.plan is not None
        return self.plan


class UnavailableTest(CowspecTest):
    """Stands for every test when the driver said at once that it cannot run (an exec program's handshake)."""

    def runtest(self) -> None:
        cannot_run(self.the_plan().unavailable or "unknown reason")


class MissingVectors(CowspecTest):
    """Stands for the vectors when there is no set to run: it skips, saying how to get one."""

    def __init__(self, *, reason: str, **keywords: Any) -> None:
        super().__init__(**keywords)
        self.reason = reason

    def runtest(self) -> None:
        pytest.skip(f"cowspec: no vector set: {self.reason}")


class VectorTest(CowspecTest):
    """One vector on the driver, compared with the model."""

    def __init__(self, *, vectors: VectorSet, directory: str, **keywords: Any) -> None:
        super().__init__(**keywords)
        self.vectors = vectors
        self.directory = directory

    def runtest(self) -> None:
        from cowcheck.drivers.protocol import DriverError, DriverUnavailable
        from cowspec.errors import SpecError

        # Each failure is said outside the ``except`` that caught it, so that it shows alone, not chained.
        problem: str | None = None
        try:
            differences, where = self.compare()
        except DriverUnavailable as error:
            unavailable, problem = True, str(error)
        except DriverError as error:
            unavailable, problem = False, driver_failed(self.the_plan().spec, error)
        except SpecError as error:
            unavailable, problem = False, f"cowspec: the vector {self.name} is not one cowspec reads: {error}"
        if problem is not None:
            if unavailable:
                cannot_run(problem)
            pytest.fail(problem, pytrace=False)
        if differences:
            lines = [f"cowspec: the driver diverges from the model on the vector {self.name}:"]
            lines += [f"  {line}" for line in differences]
            lines += where()
            pytest.fail("\n".join(lines), pytrace=False)

    def document(self, suffix: str) -> object:
        return json.loads(self.vectors.files[f"{self.directory}/{self.name}.{suffix}.json"])

    def compare(self) -> tuple[list[str], Callable[[], list[str]]]:
        """The differences, and how to say where the vector is (called only on a failure)."""
        if self.directory == "fs":
            return self.compare_trace(), lambda: self.where_trace("filesystem")
        if self.directory == "store":
            return self.compare_store(), lambda: self.where_trace("store")
        return self.compare_layers(), self.where_layers

    def compare_trace(self) -> list[str]:
        from cowcheck import vectors
        from cowcheck.compare import difference_lines
        from cowspec.formats.trace import decode_trace

        trace = decode_trace(self.document("trace"))
        missing = sorted(set(trace.features.enabled()) - self.the_plan().declared_features())
        if missing:
            pytest.skip(f"cowspec: the vector needs {', '.join(missing)}, which the driver does not declare")
        plan = self.the_plan()
        # As ``cowspec vectors verify`` and ``cowspec check`` compare, under the conformance profile asked for.
        driver = cast("Driver", plan.driver("filesystem"))
        return difference_lines(vectors.verify_fs(self.vectors.files, self.name, driver, plan.conformance))

    def compare_store(self) -> list[str]:
        from cowcheck import vectors
        from cowcheck.compare import difference_lines

        driver = cast("StoreDriver", self.the_plan().driver("store"))
        return difference_lines(vectors.verify_store(self.vectors.files, self.name, driver))

    def compare_layers(self) -> list[str]:
        from cowcheck import vectors

        archives = vectors.layout_layers(self.vectors.files, f"layer/{self.name}/")
        expected = vectors.decode_answer(self.document("rootfs"))
        observed = cast("LayerDriver", self.the_plan().driver("layer")).flatten(archives)
        return layer_differences(expected, observed)

    def where_trace(self, level: str) -> list[str]:
        """Where the trace is (the set's file, or a copy saved for the purpose) and how to replay it."""
        plan = self.the_plan()
        relative = f"{self.directory}/{self.name}.trace.json"
        if self.vectors.directory is not None:
            path = self.vectors.directory / relative
        else:
            path = plan.save / f"vector-{self.name}.json"
            try:
                plan.save.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.vectors.files[relative])
            except OSError as error:
                return [f"  the {level} trace could not be saved to {plan.save}: {error.strerror}"]
        return [f"  the {level} trace: {path}", f"  replay: {plan.replay(path)}"]

    def where_layers(self) -> list[str]:
        """Where the image is (an OCI layout, the set's or a copy saved for the purpose)."""
        plan = self.the_plan()
        prefix = f"layer/{self.name}/"
        if self.vectors.directory is not None:
            path = self.vectors.directory / prefix
        else:
            path = plan.save / f"vector-{self.name}"
            try:
                for relative, data in self.vectors.files.items():
                    if relative.startswith(prefix):
                        target = path / relative.removeprefix(prefix)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(data)
            except OSError as error:
                return [f"  the image could not be saved to {plan.save}: {error.strerror}"]
        return [f"  the image (an OCI layout): {path}", f"  the spec's root filesystem: cowspec flatten {path}"]


def layer_differences(expected: Answer, observed: Answer) -> list[str]:
    """One line per difference between the spec's root filesystem and a tool's (any refusal agrees with one)."""
    from cowcheck.compare import tree_differences
    from cowcheck.drivers.protocol import Refused

    if isinstance(expected, Refused) and isinstance(observed, Refused):
        return []
    if isinstance(expected, Refused):
        return [f"the spec refuses the image ({expected.reason}); the driver accepts it"]
    if isinstance(observed, Refused):
        return [f"the driver refuses the image ({observed.reason}); the spec accepts it"]
    return tree_differences("rootfs", expected, observed)


class MachineTest(CowspecTest):
    """The filesystem state machine against the driver; a divergence fails with its minimal trace saved."""

    def runtest(self) -> None:
        from hypothesis import settings
        from hypothesis.reporting import with_reporter
        from hypothesis.stateful import run_state_machine_as_test

        from cowcheck.drivers.protocol import DriverError, DriverUnavailable
        from cowcheck.machines.fs_machine import Tally, machine_for

        plan = self.the_plan()
        driver = cast("Driver", plan.driver("filesystem"))
        profile = settings.get_profile(plan.profile)
        budget = settings(
            profile,
            max_examples=plan.examples or profile.max_examples,
            stateful_step_count=plan.steps or profile.stateful_step_count,
            database=None,
            print_blob=False,
        )
        tally = Tally()
        stopped: Exception | None = None
        try:
            with with_reporter(lambda _message: None):  # the failure below says all; Hypothesis's notes are noise
                machine = machine_for(driver, tally, plan.features, conformance=plan.conformance)
                run_state_machine_as_test(machine, settings=budget)
        except Exception as error:  # what Hypothesis raised: the divergence, a group of them, or the driver's error
            stopped = error
        if stopped is None:
            return
        unavailable = _first(stopped, DriverUnavailable)
        if unavailable is not None:
            cannot_run(str(unavailable))
        # The driver's first failure, as the machine kept it: Hypothesis may have wrapped it in a group, or
        # called it flaky while shrinking with a driver that fails differently each time.
        failed = tally.driver_failure or _first(stopped, DriverError)
        if failed is not None:
            pytest.fail(driver_failed(plan.spec, failed), pytrace=False)
        self.diverged(driver, tally, stopped)

    def diverged(self, driver: Driver, tally: Tally, error: Exception) -> NoReturn:
        """Minimise the divergence, save it, and fail saying the rule it breaks, what differs and how to replay it."""
        from cowcheck.compare import difference_lines
        from cowcheck.drivers.protocol import DriverError, DriverUnavailable
        from cowcheck.machines.fs_machine import Divergence, calling, minimise

        plan = self.the_plan()
        found = _first(error, Divergence) or tally.last_divergence
        if found is None:
            pytest.fail(f"cowspec: the state machine stopped: {type(error).__name__}: {error}", pytrace=False)
        try:
            smallest, differences = calling(
                driver, "a replay", lambda: minimise(driver, found.trace, conformance=plan.conformance)
            )
            shrunk = f"minimal trace ({_size(smallest)}; Hypothesis had shrunk it to {len(found.trace.ops)} ops)"
        except ValueError:  # replayed alone, the trace agreed: a driver whose answers vary from run to run
            smallest, differences = found.trace, found.differences
            shrunk = "trace (it did not diverge again when replayed alone: does the driver answer the same each time?)"
        except (DriverUnavailable, DriverError) as failure:
            smallest, differences = found.trace, found.differences
            shrunk = f"trace (not minimised: the driver failed while replaying it: {failure})"
        rule = differences[0].rule if differences else "no rule"
        head = (
            f"cowspec: the filesystem state machine found a divergence from the model that breaks {rule}"
            f" (conformance {plan.conformance}, profile {plan.profile}: {tally.examples} examples and"
            f" {tally.ops} ops, shrinking included)"
        )
        lines = [head, *(f"  {line}" for line in difference_lines(differences))]
        try:
            path = save_trace(plan.save, "machine-filesystem.json", smallest)
        except OSError as failure:
            lines.append(f"  the {shrunk} could not be saved to {plan.save}: {failure.strerror}")
        else:
            lines += [f"  {shrunk} saved to {path}", f"  replay: {plan.replay(path)}"]
        pytest.fail("\n".join(lines), pytrace=False)


Wanted = TypeVar("Wanted", bound=BaseException)


def driver_failed(spec: str, error: BaseException) -> str:
    """The one line that says the driver failed: ``error``'s own when it already names a driver, so that the
    prefix is never said twice."""
    said = str(error)
    if said.startswith("driver "):
        return f"cowspec: {said}"
    return f"cowspec: driver {spec} failed: {said}"


def _first(error: BaseException, kind: type[Wanted]) -> Wanted | None:
    """``error`` if it is a ``kind``, else the first ``kind`` an exception group holds, at any depth."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first(inner, kind)
            if found is not None:
                return found
    return None


def _size(trace: Trace) -> str:
    entries = sum(len(layer) for layer in trace.layers)
    return f"{len(trace.ops)} ops, {len(trace.layers)} layers, {entries} entries"


def save_trace(directory: Path, name: str, trace: Trace) -> Path:
    """Write ``trace`` as ``directory/name`` in the ``cowspec-trace/1`` format; the path written."""
    from cowspec.formats.trace import encode_trace

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(encode_trace(trace), indent=1) + "\n", encoding="utf-8")
    return path
