"""The ``vectors`` commands: ``vectors export DIR`` and ``vectors verify --driver NAME DIR``.

    cowspec vectors export DIR                  write the conformance vectors into a new or empty DIR
    cowspec vectors verify --driver NAME DIR    check the digests, then run every vector of NAME's level

``verify`` first says on standard error the SHA-256 of the set's
``MANIFEST.json`` (to compare with a release's), checks every digest, then
holds the set to this cowspec: its version must be this cowspec's and each
expected answer the one the model gives, so that an answer changed along
with its digest is refused. It then prints one JSON line per vector
(``vector``, ``agrees``, ``differences`` as ``cowspec check`` gives them,
each with its rule), or ``skipped`` for a vector that needs an overlay
feature the driver does not declare, and a summary on standard error. It
exits 1 when a vector diverged, 2 when the set is not intact or not this
cowspec's, or the command line is wrong, 3 when the driver cannot run here
or fails while running a vector.
"""

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

from cowcheck.cli.output import EXIT_DIVERGED, UsageError, emit, say
from cowspec.errors import SpecError


def _resolve(name: str) -> dict[str, Callable[[], object]]:
    """The driver ``--driver NAME`` names, as a maker per level it serves (``filesystem``, ``layer``, ``store``)."""
    from cowcheck.drivers import registry

    found = registry.find(name)  # DriverNotFound: one line and exit 2, from cowcheck.cli.main
    if not found.levels:
        found.make("filesystem")  # a driver that failed to load raises its reason
    return {level: functools.partial(found.make, level) for level in found.levels}


def _features(name: str) -> frozenset[str]:
    """The optional overlay features the driver ``--driver NAME`` declares; a vector needing another is skipped."""
    from cowcheck.drivers import registry

    return frozenset(registry.find(name).features)


def command_export(arguments: argparse.Namespace) -> int:
    from cowcheck.vectors import build_set, load_sources, write_set

    directory = Path(arguments.directory)
    try:
        files = build_set(load_sources())
        write_set(directory, files)
    except SpecError as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"{directory}: cannot write ({error.strerror})") from None
    vectors = sum(name.endswith((".trace.json", ".rootfs.json")) for name in files)
    say(f"vectors export: {vectors} vectors, {len(files)} files in {directory}")
    return 0


def _served(drivers: dict[str, Callable[[], object]], levels: dict[str, str]) -> list[str]:
    """The set's directories the driver runs: each of its levels', and ``fs`` too (as commits) when its layer
    level commits; ``layer`` only when it flattens (an exec program may declare that it commits alone)."""
    from cowcheck.drivers.protocol import committer_of

    layer = drivers["layer"]() if "layer" in drivers else None
    served = []
    for directory, level in levels.items():
        if level == "layer":
            runs = layer is not None and getattr(layer, "flattens", True) is not False
        elif level == "filesystem":
            runs = "filesystem" in drivers or (layer is not None and committer_of(layer) is not None)
        else:
            runs = level in drivers
        if runs:
            served.append(directory)
    return served


def command_verify(arguments: argparse.Namespace) -> int:
    from cowcheck.vectors import (
        LEVEL_OF_DIRECTORY,
        MANIFEST,
        check_answers,
        check_manifest,
        chosen,
        manifest_digest,
        read_set,
        verify_set,
    )

    directory = Path(arguments.directory)
    try:
        files = read_set(directory)
    except SpecError as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"{directory}: cannot read ({error.strerror})") from None
    if MANIFEST in files:
        say(f"vectors verify: {directory}/{MANIFEST} is {manifest_digest(files)}")
    manifest, problems = check_manifest(files)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"{directory}: the set is not intact: {problems[0]}{more}")
    try:
        problems = check_answers(files, manifest)
    except SpecError as error:
        raise UsageError(f"{directory}: {error}") from None
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"{directory}: {problems[0]}{more}")
    drivers = _resolve(arguments.driver)
    features = _features(arguments.driver)
    served = _served(drivers, LEVEL_OF_DIRECTORY)
    try:
        if not any(chosen(manifest, each, arguments.only) for each in served):
            levels = " and ".join(drivers) or "no level"
            raise UsageError(f"no vector of the {levels} level in {directory} matches what was asked")
        agreeing = diverging = skipped = 0
        for line in verify_set(files, manifest, drivers, arguments.only, features):
            emit(line)
            if "skipped" in line:
                skipped += 1
            elif line["agrees"]:
                agreeing += 1
            else:
                diverging += 1
    except SpecError as error:
        raise UsageError(f"{directory}: {error}") from None
    more = f", {skipped} skipped" if skipped else ""
    say(
        f"vectors verify: {agreeing + diverging + skipped} vectors ({', '.join(served)}) on {arguments.driver}:"
        f" {agreeing} agree, {diverging} diverge{more}"
    )
    return EXIT_DIVERGED if diverging else 0


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``vectors export`` and ``vectors verify`` to the ``cowspec`` command line."""
    vectors = commands.add_parser(
        "vectors",
        help="export the conformance vectors, or run them against an implementation",
        description="The conformance vectors: traces, layer stacks and store scenarios with the spec's answers."
        " Exit status: 0 all agreed (or the set was written), 1 a vector diverged, 2 bad input or a set that"
        " is not intact, 3 the driver cannot run here.",
    )
    actions = vectors.add_subparsers(dest="vectors_command", required=True, metavar="{export,verify}")
    export = actions.add_parser(
        "export",
        help="write the vector set into DIR",
        description="Write the versioned vector set into DIR: the same cowspec always writes the same bytes.",
    )
    export.add_argument("directory", metavar="DIR", help="where to write the set: a new or empty directory")
    export.set_defaults(handler=command_export, driver="")
    verify = actions.add_parser(
        "verify",
        help="check a set's digests, then run its vectors on a driver",
        description="Say the SHA-256 of MANIFEST.json, check every digest, check that each expected answer is"
        " the one this cowspec's model gives, then run each vector of the levels the driver serves, printing one"
        " JSON line per vector (differences with their rules; vectors needing an overlay feature the driver does"
        " not declare are skipped) and a summary on standard error.",
        epilog="Exit status: 0 every vector agreed, 1 a vector diverged, 2 a set that is not intact or not made"
        " by this cowspec, or a bad command line, 3 the driver cannot run here or failed on a vector.",
    )
    verify.add_argument(
        "--driver",
        required=True,
        metavar="NAME",
        help="the implementation to run: an installed driver's name (kernel-overlay: filesystem vectors;"
        " docker: store vectors; umoci: layer vectors), module:attr, or exec:COMMAND",
    )
    verify.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only the vectors whose name matches this glob, such as 'fs/rename-*' or 'store/volumes'"
        " (repeatable; default: every vector of the driver's levels)",
    )
    verify.add_argument("directory", metavar="DIR", help="a set written by 'cowspec vectors export'")
    verify.set_defaults(handler=command_verify)
