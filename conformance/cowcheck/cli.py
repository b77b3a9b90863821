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
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cowspec.errors import SpecError
from cowspec.observe import Entry
from cowspec.oracle import oracle
from cowspec.store_trace import STORE_TRACE_FORMAT, Step, decode_store_trace, run_store_model
from cowspec.trace import Trace, decode_trace, encode_trace

from .compare import result_differences, store_differences
from .driver import Driver, DriverError, DriverUnavailable
from .drivers import DRIVERS
from .runner import run_real

EXIT_DIVERGED, EXIT_REJECTED, EXIT_UNAVAILABLE = 1, 2, 3


class UsageError(Exception):
    """A command line that cannot run; the message is one line."""


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


def emit(document: object) -> None:
    """Print one JSON document on one line."""
    sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
    sys.stdout.flush()


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
        if arguments.driver != "docker":
            raise UsageError(f"store traces run on --driver docker, not {arguments.driver!r}")
        from .store_docker import run_store_docker

        return run_store_docker(trace.steps)
    if arguments.driver == "docker":
        raise UsageError("--driver docker runs store traces (cowspec-store-trace/1) only")
    return run_real(pick_driver(arguments.driver), trace)


def command_run(arguments: argparse.Namespace) -> int:
    if arguments.driver != "docker":
        pick_driver(arguments.driver)
    return for_each_trace(arguments.traces, lambda trace: (run_any(arguments, trace), 0))


def command_check(arguments: argparse.Namespace) -> int:
    if not arguments.traces:
        from .generate import generated_check

        return generated_check(pick_driver(arguments.driver), arguments)
    if arguments.driver != "docker":
        pick_driver(arguments.driver)

    def check_one(trace: AnyTrace) -> tuple[Entry, int]:
        expected = run_store_model(trace.steps) if isinstance(trace, StoreTrace) else oracle(trace)
        observed = run_any(arguments, trace)
        if isinstance(trace, StoreTrace):
            differences = store_differences(expected, observed)
        else:
            differences = result_differences(expected, observed)
        for line in differences:
            print(f"cowspec: diverges: {line}", file=sys.stderr)
        return {**observed, "agrees": not differences, "differences": differences}, (
            EXIT_DIVERGED if differences else 0
        )

    return for_each_trace(arguments.traces, check_one)


def command_flatten(arguments: argparse.Namespace) -> int:
    from cowspec.apply import ApplyOptions, flatten, rootfs_entries, rootfs_layer
    from cowspec.layer_tar import encode_layer

    from .images import read_image

    options = ApplyOptions(implied_parents=arguments.implied_parents, under_symlink=arguments.under_symlink)
    try:
        layers = read_image(arguments.image, keep_data=arguments.tar is not None)
    except SpecError as error:
        print(f"cowspec: {error}", file=sys.stderr)
        return EXIT_REJECTED
    rootfs = flatten([each.layer for each in layers], options)
    if arguments.tar is None:
        emit(rootfs_entries(rootfs))
        return 0
    archive = encode_layer(rootfs_layer(rootfs))
    try:
        with open(arguments.tar, "wb") as handle:
            handle.write(archive)
    except OSError as error:
        print(f"cowspec: cannot write {arguments.tar}: {error.strerror}", file=sys.stderr)
        return EXIT_REJECTED
    return 0


def command_layers(arguments: argparse.Namespace) -> int:
    from cowspec.apply import flatten_with_stats

    from .images import read_image

    try:
        layers = read_image(arguments.image)
    except SpecError as error:
        print(f"cowspec: {error}", file=sys.stderr)
        return EXIT_REJECTED
    _, stats = flatten_with_stats([each.layer for each in layers])
    rows = [
        {
            "index": index,
            "diff_id": layer.diff_id,
            "chain_id": layer.chain_id,
            "media_type": layer.media_type,
            "size": stat.size,
            "adds": stat.adds,
            "changes": stat.changes,
            "deletes": stat.deletes,
        }
        for index, (layer, stat) in enumerate(zip(layers, stats, strict=True))
    ]
    if arguments.json:
        emit(rows)
        return 0
    print(f"{'#':>3}  {'DIFF ID':<19}  {'CHAIN ID':<19}  {'SIZE':>12}  {'ADDS':>7}  {'CHANGES':>7}  {'DELETES':>7}")
    for row in rows:
        print(
            f"{row['index']:>3}  {str(row['diff_id'])[:19]:<19}  {str(row['chain_id'])[:19]:<19}  {row['size']:>12}"
            f"  {row['adds']:>7}  {row['changes']:>7}  {row['deletes']:>7}"
        )
    return 0


def command_matrix(arguments: argparse.Namespace) -> int:
    from .engines import Dockerd, Podman, need, version_of
    from .layer_drivers import DockerLayers, LayerDriver, PodmanLayers, Spec, UmociLayers
    from .matrix import markdown, run_matrix

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


def command_inspect(arguments: argparse.Namespace) -> int:
    from cowspec.apply import flatten_with_stats

    from .images import read_image

    progress = sys.stderr.isatty() or arguments.progress

    def report(index: int, total: int) -> None:
        if progress:
            print(f"cowspec: reading layer {index + 1} of {total}", file=sys.stderr, flush=True)

    try:
        layers = read_image(arguments.image, on_layer=report)
    except SpecError as error:
        print(f"cowspec: {error}", file=sys.stderr)
        return EXIT_REJECTED
    _, stats = flatten_with_stats([each.layer for each in layers])
    stored = sum(each.size for each in stats)
    kept = sum(each.kept for each in stats)
    print(f"{'#':>3}  {'DIFF ID':<19}  {'SIZE':>12}  {'KEPT':>12}  {'WASTED':>12}")
    for index, (layer, stat) in enumerate(zip(layers, stats, strict=True)):
        print(f"{index:>3}  {layer.diff_id[:19]:<19}  {stat.size:>12}  {stat.kept:>12}  {stat.wasted:>12}")
    efficiency = 100.0 * kept / stored if stored else 100.0
    print(f"image: {stored} bytes stored, {kept} kept, {stored - kept} wasted; efficiency {efficiency:.1f}%")
    return 0


def command_demo(arguments: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(arguments.engine)


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
    sub = commands.add_parser("flatten", help="the root filesystem of an image, as JSON entries")
    sub.add_argument("image", metavar="IMAGE", help="an OCI image layout directory or a docker save tarball")
    sub.add_argument("--implied-parents", choices=("keep", "default"), default="keep")
    sub.add_argument("--under-symlink", choices=("replace", "follow"), default="replace")
    sub.add_argument("--tar", metavar="OUT", help="write the root filesystem as a tar (file bytes are held in memory)")
    sub.set_defaults(handler=command_flatten, driver="")
    sub = commands.add_parser("layers", help="each layer's DiffID, ChainID, size, adds, changes and deletes")
    sub.add_argument("image", metavar="IMAGE", help="an OCI image layout directory or a docker save tarball")
    sub.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    sub.set_defaults(handler=command_layers, driver="")
    sub = commands.add_parser("inspect", help="what each layer wastes, and the image's efficiency")
    sub.add_argument("image", metavar="IMAGE", help="an OCI image layout directory or a docker save tarball")
    sub.add_argument("--progress", action="store_true", help="report each layer read, even when not on a terminal")
    sub.set_defaults(handler=command_inspect, driver="")
    sub = commands.add_parser("demo", help="the seed's walk-through: two images, five containers, their sizes")
    sub.add_argument("--engine", action="store_true", help="also run it on a private Docker engine, side by side")
    sub.set_defaults(handler=command_demo, driver="docker")
    sub = commands.add_parser("matrix", help="run the layer cases through docker, umoci and podman")
    sub.add_argument("--out", default="-", help="where to write the Markdown matrix (default: standard output)")
    sub.set_defaults(handler=command_matrix, driver="matrix")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cowspec`` command."""
    arguments = parser().parse_args(argv)
    try:
        status: int = arguments.handler(arguments)
    except UsageError as error:
        print(f"cowspec: {error}", file=sys.stderr)
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
    return status


def save_trace(directory: str, name: str, trace: Trace) -> str:
    """Write ``trace`` as ``directory/name``; the path written."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(encode_trace(trace), handle, indent=1)
        handle.write("\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
