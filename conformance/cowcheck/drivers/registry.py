"""The drivers ``--driver`` can name, at each of the three levels, from three sources.

A driver is found by what ``--driver`` says (at the three levels and at the
snapshot level):

- ``NAME``: an installed driver, registered under the entry point group
  ``cowspec.drivers`` by any installed package. cowspec's own drivers
  register the same way (``pyproject.toml``), so an implementer's package
  adds ``[project.entry-points."cowspec.drivers"] my-overlay =
  "my_package.driver:MyOverlay"`` and ``--driver my-overlay`` finds it;
- ``module:attr``: a driver importable from ``sys.path`` (the current
  directory included), without installing anything;
- ``exec:COMMAND [ARGS...]``: a program in any language that speaks the
  protocol of ``docs/formats/driver-protocol.md`` on its standard input and
  output.

What an entry point or ``module:attr`` names is a driver class (called with
no arguments) or a driver instance. Its level is its ``level`` attribute
(``"filesystem"``, ``"layer"``, ``"store"`` or ``"snapshot"``) or, failing
that, the method it has: ``open`` (``Driver``), ``flatten``
(``LayerDriver``), ``run`` (``StoreDriver``), ``open_snapshots``
(``SnapshotDriver``). Its optional overlay features are its ``features``
attribute (``redirect_dir``, ...); Docker's overlay2 configuration is
always supported. An exec program says both in its handshake.
"""

from __future__ import annotations

import atexit
import importlib
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Literal, cast

from cowcheck.drivers.protocol import Driver, LayerDriver, SnapshotDriver, StoreDriver

if TYPE_CHECKING:
    from cowcheck.drivers.exec_driver import ExecProgram

Level = Literal["filesystem", "layer", "store", "snapshot"]
LEVELS: tuple[Level, ...] = ("filesystem", "layer", "store", "snapshot")
GROUP = "cowspec.drivers"
"""The entry point group drivers register under."""
_METHOD_OF_LEVEL: dict[Level, str] = {
    "filesystem": "open",
    "layer": "flatten",
    "store": "run",
    "snapshot": "open_snapshots",
}


class DriverNotFound(LookupError):
    """``--driver`` names nothing that can run at the level asked for; the message is one line."""


@dataclass(frozen=True)
class Registered:
    """A driver that ``--driver`` can name: where it comes from, its levels and features, how to make it."""

    name: str
    origin: str
    levels: tuple[Level, ...]
    features: frozenset[str]
    make: Callable[[Level], object]
    """The driver at one of ``levels``, ready to use."""


def level_of(target: object) -> tuple[Level, ...]:
    """The levels a driver class or instance serves: its ``level`` attribute, else the methods it has."""
    declared = getattr(target, "level", None)
    if declared is not None:
        if declared not in LEVELS:
            raise DriverNotFound(f"its level {declared!r} is none of {', '.join(LEVELS)}")
        return (cast(Level, declared),)
    found = tuple(level for level in LEVELS if callable(getattr(target, _METHOD_OF_LEVEL[level], None)))
    if not found:
        raise DriverNotFound("it has no level attribute and none of the methods open, flatten, run, open_snapshots")
    return found


def features_of(target: object) -> frozenset[str]:
    """The optional overlay features a driver class or instance says it supports."""
    declared = getattr(target, "features", ())
    if isinstance(declared, str) or not all(isinstance(name, str) for name in declared):
        raise DriverNotFound("its features attribute must be a collection of feature names")
    return frozenset(declared)


def from_object(name: str, origin: str, target: object) -> Registered:
    """A driver from a class (called with no arguments when used) or an instance."""
    levels = level_of(target)

    def make(_level: Level) -> object:
        return target() if isinstance(target, type) else target

    return Registered(name, origin, levels, features_of(target), make)


def _load_attribute(reference: str) -> object:
    """``module:attr`` (``attr`` may be dotted), imported with the current directory on the path."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise DriverNotFound(f"{reference!r} is not of the form module:attr")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as error:
        raise DriverNotFound(f"cannot import {module_name}: {error}") from None
    except Exception as error:  # the user's module is the user's code: say what it raised, in one line
        raise DriverNotFound(f"importing {module_name} raised {type(error).__name__}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise DriverNotFound(f"{module_name} has no attribute {attribute}")
        target = getattr(target, part)
    return target


def installed() -> list[Registered]:
    """Every driver registered under the entry point group, sorted by name."""
    found: list[Registered] = []
    for point in sorted(entry_points(group=GROUP), key=lambda point: point.name):
        origin = f"{point.dist.name if point.dist else 'unknown package'} ({point.value})"
        try:
            target = point.load()
        except Exception as error:  # a broken package must not hide the others
            found.append(_broken(point.name, origin, f"cannot load: {type(error).__name__}: {error}"))
            continue
        try:
            found.append(from_object(point.name, origin, target))
        except DriverNotFound as error:
            found.append(_broken(point.name, origin, str(error)))
    return found


def _broken(name: str, origin: str, reason: str) -> Registered:
    def make(_level: Level) -> object:
        raise DriverNotFound(f"driver {name} from {origin}: {reason}")

    return Registered(name, origin, (), frozenset(), make)


_programs: dict[str, ExecProgram] = {}


def _exec_program(command: str) -> Registered:
    """An exec driver: the program is started once, on first use, and ended when cowspec exits."""
    from cowcheck.drivers.exec_driver import ExecProgram

    argv = shlex.split(command)
    if not argv:
        raise DriverNotFound("exec: names no program (use exec:COMMAND [ARGS...])")
    program = _programs.get(command)
    if program is None:
        program = ExecProgram(argv)
        _programs[command] = program
        atexit.register(program.close)
    levels = tuple(level for level in LEVELS if level in program.levels)

    def make(level: Level) -> object:
        if level == "filesystem":
            return program.filesystem()
        if level == "layer":
            return program.layer()
        if level == "store":
            return program.store()
        raise DriverNotFound(f"driver exec:{command}: the exec protocol has no {level} level")

    return Registered(f"exec:{command}", f"program {argv[0]}", levels, program.features, make)


def find(spec: str) -> Registered:
    """The driver ``--driver spec`` names: ``NAME``, ``module:attr`` or ``exec:COMMAND``."""
    if spec.startswith("exec:"):
        return _exec_program(spec[len("exec:") :])
    if ":" in spec:
        try:
            return from_object(spec, spec, _load_attribute(spec))
        except DriverNotFound as error:
            raise DriverNotFound(f"driver {spec}: {error}") from None
    drivers = installed()
    for registered in drivers:
        if registered.name == spec:
            return registered
    known = ", ".join(registered.name for registered in drivers) or "none installed"
    raise DriverNotFound(f"unknown driver {spec!r} (installed: {known}; or module:attr, or exec:COMMAND)")


def _at(spec: str, level: Level) -> object:
    registered = find(spec)
    if not registered.levels:
        return registered.make(level)  # a driver that failed to load: raises, with its reason
    if level not in registered.levels:
        served = " and ".join(registered.levels) or "no level"
        raise DriverNotFound(f"driver {spec} serves the {served} level, not the {level} level")
    return registered.make(level)


def filesystem_driver(spec: str) -> Driver:
    """The filesystem-level driver ``spec`` names (``cowspec-trace/1`` traces, generated cases)."""
    return cast(Driver, _at(spec, "filesystem"))


def layer_driver(spec: str) -> LayerDriver:
    """The layer-level driver ``spec`` names (layer vectors)."""
    return cast(LayerDriver, _at(spec, "layer"))


def store_driver(spec: str) -> StoreDriver:
    """The store-level driver ``spec`` names (``cowspec-store-trace/1`` traces, the store machine)."""
    return cast(StoreDriver, _at(spec, "store"))


def snapshot_driver(spec: str) -> SnapshotDriver:
    """The snapshot-level driver ``spec`` names (``cowspec-snapshot-trace/1`` traces, the snapshot machine)."""
    return cast(SnapshotDriver, _at(spec, "snapshot"))


def levels_of(spec: str) -> tuple[Level, ...]:
    """The levels the driver ``spec`` names serves; a driver that failed to load raises its reason."""
    registered = find(spec)
    if not registered.levels:
        registered.make("filesystem")
    return registered.levels
