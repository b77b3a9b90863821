"""The ``cowspec`` command: the oracle, real runs, and conformance checks.

    cowspec oracle TRACE.json...                 what the model says must happen
    cowspec run --driver NAME TRACE.json...      what a real implementation did
    cowspec check --driver NAME [TRACE.json...]  both, compared
    cowspec replay TRACE.json --driver NAME      a snapshot trace, call by call, model beside snapshotter
    cowspec flatten IMAGE                        an image's root filesystem
    cowspec layers IMAGE                         its layers, checked and counted
    cowspec inspect IMAGE                        what each layer wastes
    cowspec matrix [--out FILE]                  layer cases through docker, umoci, podman
    cowspec demo [--engine]                      the seed's walk-through, with Docker's tables
    cowspec conformance-report [--out DIR]       every implementation from real runs, into docs/conformance/

With several traces each prints one JSON result per line. A trace the spec
rejects gives a one-line reason on stderr and exit status 2; with several,
its line is ``{"error": ...}`` and the others still run. ``check`` exits 1
when the real system diverges from the model. ``check`` without traces
generates cases with the state machine and prints a report.
"""

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from cowcheck.cli.output import (
    EXIT_REJECTED,
    EXIT_UNAVAILABLE,
    WRITE_FAILURES,
    UsageError,
    say,
)
from cowcheck.drivers.protocol import DriverError, DriverUnavailable
from cowcheck.drivers.registry import DriverNotFound

PROFILES = ("quick", "dev", "ci", "nightly")
DEFAULT_PROFILE = "quick"


def command_oracle(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.trace_commands import command_oracle

    return command_oracle(arguments)


def command_run(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.trace_commands import command_run

    return command_run(arguments)


def command_check(arguments: argparse.Namespace) -> int:
    from cowcheck.drivers.registry import levels_of

    if "snapshot" in levels_of(arguments.driver):
        from cowcheck.cli.snapshot_check import command_check as snapshot_check

        return snapshot_check(arguments)
    from cowcheck.cli.trace_commands import command_check

    return command_check(arguments)


def command_replay(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.snapshot_check import command_replay

    return command_replay(arguments)


def command_flatten(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.image_commands import command_flatten

    return command_flatten(arguments)


def command_layers(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.image_commands import command_layers

    return command_layers(arguments)


def command_inspect(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.image_commands import command_inspect

    return command_inspect(arguments)


def command_matrix(arguments: argparse.Namespace) -> int:
    from cowcheck.drivers.engines import Dockerd, Podman, need, version_of
    from cowcheck.drivers.layer_tools import DockerLayers, PodmanLayers, Spec, UmociLayers
    from cowcheck.drivers.protocol import LayerDriver
    from cowcheck.matrix import markdown, run_matrix

    versions = {
        "docker": version_of([need("dockerd"), "--version"]),
        "umoci": version_of([need("umoci"), "--version"]),
        "podman": version_of([need("podman"), "--version"]),
    }
    with Dockerd() as docker, Podman() as podman:
        drivers: list[LayerDriver] = [DockerLayers(docker), UmociLayers(), PodmanLayers(podman)]
        rows = run_matrix(drivers, Spec())
    document = markdown(rows, [driver.name for driver in drivers], versions)
    if arguments.out == "-":
        sys.stdout.write(document)
    else:
        with open(arguments.out, "w", encoding="utf-8") as handle:
            handle.write(document)
    cells = [cell for _, _, row in rows for cell in row]
    agreeing = sum(cell.startswith("agrees") for cell in cells)
    print(
        f"cowspec matrix: {len(rows)} cases x {len(drivers)} tools: {agreeing} agree, {len(cells) - agreeing} diverge",
        file=sys.stderr,
    )
    return 0


def command_conformance_report(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.conformance_commands import command_conformance_report

    return command_conformance_report(arguments)


def command_demo(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.demo import run_demo

    return run_demo(arguments.engine, arguments.storage_driver or ())


def image_command(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
    name: str,
    summary: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """A command that reads an image: its IMAGE argument and ``--reader``."""
    sub = commands.add_parser(
        name, help=summary, description=summary, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub.add_argument(
        "image",
        metavar="IMAGE",
        help="an OCI image layout directory or a docker save tarball (plain or compressed), PATH:REF for one of"
        " several images, or - for a docker save stream on standard input",
    )
    sub.add_argument(
        "--ref", help="the image to read of several: a RepoTags entry (docker save) or a ref name (OCI layout)"
    )
    sub.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="the platform to read from an image index (default: this machine's, e.g. linux/amd64)",
    )
    sub.add_argument(
        "--reader",
        choices=("auto", "stream"),
        default="auto",
        help="auto: headers framed and files hashed in C where the module is built (--verbose names the hasher);"
        " stream: the model's own reader",
    )
    sub.set_defaults(handler=handler, driver="")
    return sub


STORAGE_DRIVERS = ("overlay2", "fuse-overlayfs", "vfs", "btrfs")
"""Docker's storage drivers the store model states (``cowspec.store.drivers.STORAGE_DRIVERS``; a test ties them)."""


def storage_driver_option(sub: argparse.ArgumentParser) -> None:
    """``--storage-driver`` of ``oracle``, ``run`` and ``check``: the storage driver for store traces naming none."""
    sub.add_argument(
        "--storage-driver",
        choices=STORAGE_DRIVERS,
        metavar="NAME",
        help="for store traces (and generated store cases): the Docker storage driver the engine runs and the model"
        f" states, where a trace names none ({', '.join(STORAGE_DRIVERS)}; default overlay2); a trace naming"
        " another is refused",
    )


EXIT_CODES = """exit status:
  0  the run agreed with the model (or the command did what it was asked)
  1  a real system diverged from the model (check, vectors verify), or an image failed its --ci thresholds
  2  the input was rejected: a malformed trace, image or command line, an unknown driver, an unwritable output
  3  the driver cannot run on this machine (not root, no overlay, no engine) or failed while running
"""

DRIVER_HELP = (
    "the implementation to run: an installed driver's NAME (see `cowspec drivers`), module:attr for a driver"
    " class importable from here, or exec:COMMAND [ARGS...] for a program that speaks"
    " docs/formats/driver-protocol.md"
)


def command_drivers(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.drivers_command import command_drivers

    return command_drivers(arguments)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    from cowspec import __version__

    top = argparse.ArgumentParser(
        prog="cowspec",
        description="Executable spec of layered copy-on-write storage.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"cowspec {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    trace_help = (
        "a trace file (cowspec-trace/1 or cowspec-store-trace/1; cowspec-snapshot-trace/1 with a snapshot-level"
        " driver); - for standard input"
    )
    sub = command("oracle", "what the reference model says a trace must give")
    sub.add_argument("traces", nargs="+", metavar="TRACE.json", help=trace_help)
    sub.add_argument(
        "--commit",
        action="store_true",
        help="the layer a commit of the container gives after the ops (cowspec-commit-result/1), as a layer"
        " driver that commits must give it",
    )
    storage_driver_option(sub)
    sub.set_defaults(handler=command_oracle, driver="")
    sub = command("run", "run traces on a real implementation")
    sub.add_argument("--driver", required=True, metavar="DRIVER", help=DRIVER_HELP)
    sub.add_argument("traces", nargs="+", metavar="TRACE.json", help=trace_help)
    storage_driver_option(sub)
    sub.set_defaults(handler=command_run)
    sub = command(
        "check",
        "run traces on a real implementation and on the model, and compare; without traces, generate cases",
    )
    sub.add_argument("--driver", required=True, metavar="DRIVER", help=DRIVER_HELP)
    sub.add_argument("traces", nargs="*", metavar="TRACE.json", help=trace_help + " (none: generated cases)")
    storage_driver_option(sub)
    sub.add_argument(
        "--profile",
        choices=PROFILES,
        default=DEFAULT_PROFILE,
        help="budget of generated cases: quick (1,000 examples: under a minute on one worker, about half that with"
        " --workers 2), ci (deeper, derandomized, the same"
        " cases on every machine), nightly (longer, fresh randomness), dev (a few seconds)"
        f" (default {DEFAULT_PROFILE})",
    )
    sub.add_argument("--examples", type=int, metavar="N", help="override the profile's number of examples")
    sub.add_argument("--steps", type=int, metavar="N", help="override the profile's ops per example")
    sub.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes that generate cases side by side, each in its own mount namespace (default 1)",
    )
    sub.add_argument(
        "--database",
        metavar="DIR|redis://HOST:PORT[/DB]",
        help="Hypothesis's example database, shared by the workers and by later runs: a directory, or a Redis"
        " server for a fleet of machines; none turns it off (default: $XDG_CACHE_HOME/cowspec/examples, that is"
        " ~/.cache/cowspec/examples, for quick, dev and nightly; none for ci, which is derandomized)",
    )
    sub.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="live progress on standard error: auto draws it on a terminal and prints a plain line every few"
        " seconds otherwise (default auto)",
    )
    sub.add_argument(
        "--conformance",
        choices=("kernel", "portable"),
        default="kernel",
        help="kernel: exactly as Linux overlayfs mounted by Docker's overlay2; portable: what any correct"
        " implementation must do, the spec's points of legitimate variation relaxed (spec chapter 16)"
        " (default kernel)",
    )
    sub.add_argument(
        "--report",
        action="append",
        default=[],
        metavar="FILE.md|FILE.html|FILE.json",
        help="also write the report as Markdown, HTML or JSON (by the file's extension); may be given twice",
    )
    sub.add_argument(
        "--save",
        default="cowspec-divergences",
        metavar="DIR",
        help="directory for the minimal traces of divergences (default cowspec-divergences)",
    )
    sub.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME",
        help="an overlay feature to turn on for generated cases (redirect_dir, index, metacopy; again for several;"
        " metacopy needs redirect_dir, as the kernel does); the driver must support it",
    )
    sub.set_defaults(handler=command_check)
    sub = command(
        "replay",
        "replay a snapshot trace (cowspec-snapshot-trace/1) on a snapshot-level driver, call by call, the model's"
        " outcome beside the snapshotter's, and the differences with their rules",
    )
    sub.add_argument("trace", metavar="TRACE.json", help="a cowspec-snapshot-trace/1 file; - for standard input")
    sub.add_argument("--driver", required=True, metavar="DRIVER", help=DRIVER_HELP)
    sub.set_defaults(handler=command_replay)
    sub = command("drivers", "the drivers installed: name, level, optional features, where each comes from")
    sub.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    sub.add_argument(
        "--driver",
        action="append",
        default=[],
        metavar="DRIVER",
        help="also describe this driver (module:attr or exec:COMMAND; an exec program is started for its handshake)",
    )
    sub.set_defaults(handler=command_drivers)
    from cowcheck.cli.vectors_commands import add_commands as add_vector_commands

    add_vector_commands(commands)
    sub = image_command(commands, "flatten", "the root filesystem of an image, as JSON entries", command_flatten)
    sub.add_argument(
        "--implied-parents",
        choices=("keep", "default"),
        default="keep",
        help="a parent a layer implies but does not list, where a directory is below: keep its attributes,"
        " or reset them to 0755 root:root (spec APPLY-4, APPLY-5)",
    )
    sub.add_argument(
        "--under-symlink",
        choices=("replace", "follow"),
        default="replace",
        help="an entry whose parent is a symlink: replace the symlink with a directory, or follow it inside the"
        " root (spec APPLY-5)",
    )
    sub.add_argument(
        "--tar",
        metavar="OUT",
        help="write the root filesystem as a tar, whole or not at all; - for standard output (every file's bytes"
        " held in memory, once: the tar is written a member at a time; a file OUT replaced keeps its mode)",
    )
    sub.add_argument("--verbose", action="store_true", help="name the reader and hasher that run, on standard error")
    sub = image_command(
        commands, "layers", "each layer's DiffID, ChainID, size, adds, changes and deletes", command_layers
    )
    sub.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    sub.add_argument("--files", action="store_true", help="each layer's entries: A added, C changed, D deleted")
    sub.add_argument("--bytes", action="store_true", help="sizes in bytes instead of SI units (1 kB = 1000 B)")
    sub = image_command(commands, "inspect", "what each layer wastes, and the image's efficiency", command_inspect)
    sub.add_argument("--progress", action="store_true", help="report each layer read, even when not on a terminal")
    sub.add_argument("--json", action="store_true", help="one JSON document (docs/formats/inspect-format.md)")
    sub.add_argument("--bytes", action="store_true", help="sizes in bytes instead of SI units (1 kB = 1000 B)")
    sub.add_argument("--ci", action="store_true", help="hold the image to the thresholds; exit 1 if one fails")
    for flag, dive_flag, default in (
        ("--lowest-efficiency", "--lowestEfficiency", "0.9"),
        ("--highest-wasted-bytes", "--highestWastedBytes", "disabled"),
        ("--highest-user-wasted-percent", "--highestUserWastedPercent", "0.1"),
    ):
        sub.add_argument(flag, dive_flag, metavar="LIMIT", help=f"with --ci (default {default}, as dive's)")
    sub = command("demo", "the seed's walk-through: two images, five containers, their sizes")
    sub.add_argument("--engine", action="store_true", help="also run it on a private Docker engine, side by side")
    sub.add_argument(
        "--storage-driver",
        action="append",
        choices=(*STORAGE_DRIVERS, "all"),
        metavar="NAME",
        help="run it on a private Docker engine with this storage driver instead, one column a driver (again for"
        f" several; all: every one): {', '.join(STORAGE_DRIVERS)}",
    )
    sub.set_defaults(handler=command_demo, driver="docker")
    sub = command("matrix", "run the layer cases through docker, umoci and podman")
    sub.add_argument("--out", default="-", help="where to write the Markdown matrix (default: standard output)")
    sub.set_defaults(handler=command_matrix, driver="matrix")
    sub = command(
        "conformance-report",
        "run every implementation cowspec drives (each level, each profile), replay the kept divergences, and"
        " write one report from those runs",
    )
    from cowcheck.cli.conformance_commands import add_arguments

    add_arguments(sub)
    sub.set_defaults(handler=command_conformance_report)
    from cowcheck.cli.bench_commands import register as register_bench

    register_bench(commands)
    return top


def run() -> None:
    """The ``cowspec`` program: ``main``, then exit.

    After an image command, the process leaves without taking its hundreds
    of thousands of values apart one by one (a third of a second on a large
    image); those commands hold no other resource.
    """
    arguments = parser().parse_args()
    status = main(arguments=arguments)
    if arguments.handler in (command_flatten, command_layers, command_inspect):
        try:
            if sys.stdout is not None:  # closed (``>&-``): the command said so
                sys.stdout.flush()
        except BrokenPipeError:
            status = 0
        except OSError as error:
            say(f"standard output: cannot write ({error.strerror})")
            status = EXIT_REJECTED
        with contextlib.suppress(OSError):
            sys.stderr.flush()
        os._exit(status)
    try:
        if sys.stdout is not None:  # closed (``>&-``): main said so
            sys.stdout.flush()
    except BrokenPipeError:
        pass
    except OSError as error:
        say(f"standard output: cannot write ({error.strerror})")
        status = EXIT_REJECTED
    sys.exit(status)


def _stdout_optional(arguments: argparse.Namespace) -> bool:
    """Whether the command may run with standard output closed (``>&-``): only where it writes to a file.

    ``flatten --tar FILE`` and ``matrix --out FILE`` need no standard output.
    """
    if arguments.handler is command_flatten:
        return arguments.tar not in (None, "-")
    return arguments.handler is command_matrix and arguments.out != "-"


def sweep_leftovers() -> None:
    """Remove what runs killed before they could clean up left here: engine, podman, umoci and scratch directories.

    Each directory names the process that made it; only those whose process
    is gone are removed. A command that runs a real system sweeps first, so
    that a ``kill -9`` leaves nothing for longer than the next run.
    """
    from cowcheck.drivers import engines
    from cowcheck.drivers.cleanup import sweep_stale
    from cowcheck.drivers.namespace import SCRATCH_PREFIX

    with contextlib.suppress(OSError):
        engines.sweep_leftovers()
        sweep_stale(SCRATCH_PREFIX)


def main(argv: Sequence[str] | None = None, arguments: argparse.Namespace | None = None) -> int:
    """Entry point of the ``cowspec`` command: its exit status."""
    if arguments is None:
        arguments = parser().parse_args(argv)
    if sys.stdout is None and not _stdout_optional(arguments):
        say("standard output: closed; nothing was written")
        return EXIT_REJECTED
    if getattr(arguments, "driver", ""):
        sweep_leftovers()
    try:
        status: int = arguments.handler(arguments)
    except (UsageError, DriverNotFound) as error:
        say(str(error))
        return EXIT_REJECTED
    except DriverUnavailable as error:
        print(f"cowspec: driver {arguments.driver} cannot run here: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except DriverError as error:
        print(f"cowspec: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        print("cowspec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:
        if error.errno not in WRITE_FAILURES:
            raise
        # Standard output is full or broken (``> /dev/full``): one line, no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        say(f"standard output: cannot write ({error.strerror})")
        return EXIT_REJECTED
    return status


if __name__ == "__main__":
    run()
