"""The ``cowspec`` command: the oracle, real runs, and conformance checks.

    cowspec oracle TRACE.json...                 what the model says must happen
    cowspec run --driver NAME TRACE.json...      what a real implementation did
    cowspec check --driver NAME [TRACE.json...]  both, compared
    cowspec flatten IMAGE                        an image's root filesystem
    cowspec layers IMAGE                         its layers, checked and counted
    cowspec inspect IMAGE                        what each layer wastes
    cowspec matrix [--out FILE]                  layer cases through docker, umoci, podman
    cowspec demo [--engine]                      the seed's walk-through, with Docker's tables

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


def command_oracle(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.trace_commands import command_oracle

    return command_oracle(arguments)


def command_run(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.trace_commands import command_run

    return command_run(arguments)


def command_check(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.trace_commands import command_check

    return command_check(arguments)


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


def command_demo(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.demo import run_demo

    return run_demo(arguments.engine)


def image_command(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
    name: str,
    summary: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """A command that reads an image: its IMAGE argument and ``--reader``."""
    sub = commands.add_parser(name, help=summary)
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


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog="cowspec", description="Executable spec of layered copy-on-write storage.")
    commands = top.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("oracle", help="what the reference model says a trace must give")
    sub.add_argument("traces", nargs="+", metavar="TRACE.json")
    sub.set_defaults(handler=command_oracle)
    sub = commands.add_parser("run", help="run traces on a real implementation")
    sub.add_argument("--driver", required=True)
    sub.add_argument("traces", nargs="+", metavar="TRACE.json")
    sub.set_defaults(handler=command_run)
    sub = commands.add_parser("check", help="run traces on a real implementation and on the model, and compare")
    sub.add_argument("--driver", required=True)
    sub.add_argument("traces", nargs="*", metavar="TRACE.json")
    sub.add_argument("--profile", choices=("dev", "ci", "nightly"), default="ci", help="budget of generated cases")
    sub.add_argument("--examples", type=int, help="override the profile's number of examples")
    sub.add_argument("--steps", type=int, help="override the profile's ops per example")
    sub.add_argument("--save", default="cowspec-divergences", help="directory for minimal traces of divergences")
    sub.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME",
        help="an overlay feature to turn on for generated cases (redirect_dir)",
    )
    sub.set_defaults(handler=command_check)
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
    sub = commands.add_parser("demo", help="the seed's walk-through: two images, five containers, their sizes")
    sub.add_argument("--engine", action="store_true", help="also run it on a private Docker engine, side by side")
    sub.set_defaults(handler=command_demo, driver="docker")
    sub = commands.add_parser("matrix", help="run the layer cases through docker, umoci and podman")
    sub.add_argument("--out", default="-", help="where to write the Markdown matrix (default: standard output)")
    sub.set_defaults(handler=command_matrix, driver="matrix")
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


def main(argv: Sequence[str] | None = None, arguments: argparse.Namespace | None = None) -> int:
    """Entry point of the ``cowspec`` command: its exit status."""
    if arguments is None:
        arguments = parser().parse_args(argv)
    if sys.stdout is None and not _stdout_optional(arguments):
        say("standard output: closed; nothing was written")
        return EXIT_REJECTED
    try:
        status: int = arguments.handler(arguments)
    except UsageError as error:
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
