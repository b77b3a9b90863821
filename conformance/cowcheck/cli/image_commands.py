"""The image commands: ``flatten``, ``layers`` and ``inspect`` (see ``cowcheck.cli.main``)."""

import argparse
import contextlib
import gc
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from json.encoder import encode_basestring_ascii as quoted

from cowcheck.cli.output import EXIT_REJECTED, UsageError, emit, say
from cowcheck.fastlayer import describe, entries_json
from cowcheck.images import ImageReading, Progress
from cowspec.errors import SpecError
from cowspec.oci.apply import ApplyOptions, Rootfs, flatten, flatten_traced, flatten_with_stats, rootfs_layer
from cowspec.oci.history import layer_history
from cowspec.oci.layer_tar import iter_encoded


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Hundreds of thousands of acyclic values: the cycle collector would only walk them again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def rootfs_json(rootfs: Rootfs) -> str:
    """``json.dumps(rootfs_entries(rootfs), separators=(",", ":"))``, made without the dicts.

    The same text, key for key (the tests hold the two to each other), in a
    tenth of the time with the C extension, a third without it: an image's
    root filesystem can have 100,000 entries, and this is written after the
    last layer, when nothing else is left to run beside it.
    """
    text = entries_json(rootfs.entries, rootfs.inode, rootfs.names)
    return text if text is not None else rootfs_json_python(rootfs)


def rootfs_json_python(rootfs: Rootfs) -> str:
    """``rootfs_json`` where the C extension is not built."""
    inode, names = rootfs.inode, rootfs.names
    parts: list[str] = []
    for entry in rootfs.entries:
        kind = entry.kind
        head = f'{{"path":{quoted(entry.path)},"type":"{kind}","uid":{entry.uid},"gid":{entry.gid}'
        if kind == "file":
            parts.append(
                f'{head},"mode":{entry.mode},"size":{entry.size},"sha256":{quoted(entry.sha256)},'
                f'"nlink":{names[inode[entry.path]]}}}'
            )
        elif kind == "symlink":
            parts.append(f'{head},"target":{quoted(entry.link)}}}')
        elif kind in ("char", "block"):
            parts.append(f'{head},"mode":{entry.mode},"device":[{entry.device[0]},{entry.device[1]}]}}')
        else:
            parts.append(f'{head},"mode":{entry.mode}}}')
    return "[" + ",".join(parts) + "]"


def command_flatten(arguments: argparse.Namespace) -> int:
    options = ApplyOptions(implied_parents=arguments.implied_parents, under_symlink=arguments.under_symlink)
    if arguments.tar is not None and (problem := output_problem(arguments.tar)):
        say(problem)
        return EXIT_REJECTED
    try:
        with no_cycle_collection():
            if arguments.verbose:
                say(describe(arguments.reader))
            reading = ImageReading(
                arguments.image,
                keep_data=arguments.tar is not None,
                reader=arguments.reader,
                ref=arguments.ref,
                platform=arguments.platform,
            )
            # Layers are applied as they are read; nothing is shown before the
            # last DiffID is checked, which ends the reading.
            rootfs = flatten(reading.values(), options)
    except SpecError as error:
        say(str(error))
        return EXIT_REJECTED
    if arguments.tar is None:
        return write_output("-", (rootfs_json(rootfs) + "\n").encode())
    # Written a member at a time: the files' bytes are held once, by the root filesystem.
    return write_output(arguments.tar, iter_encoded(rootfs_layer(rootfs)))


def output_problem(path: str) -> str | None:
    """Why ``--tar PATH`` cannot be written, seen before the image is read; None if nothing is seen."""
    if path == "":
        return "--tar: an empty name; nothing was written"
    if path != "-" and os.path.isdir(path):
        return f"{path}: is a directory; nothing was written"
    return None


def write_output(path: str, data: bytes | Iterable[bytes]) -> int:
    """Write ``data`` (bytes, or pieces) to ``path`` (``-``: standard output) whole or not at all; the exit status.

    A file is written under a temporary name in the directory of the final
    file (a symlink's target) and renamed into place once complete: a
    failure (a full disk) leaves nothing behind, and says so on one line. A
    file replaced keeps its permission bits, as the shell's ``>`` keeps them.
    """
    pieces = [data] if isinstance(data, bytes) else data
    if path == "-":
        try:
            sys.stdout.flush()
            for piece in pieces:
                sys.stdout.buffer.write(piece)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            raise
        except OSError as error:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            say(f"standard output: cannot write ({error.strerror}); the output is incomplete")
            return EXIT_REJECTED
        return 0
    if problem := output_problem(path):
        say(problem)
        return EXIT_REJECTED
    real = os.path.realpath(path)
    if os.path.exists(path) and not os.path.isfile(path):
        # A device or a FIFO (/dev/stdout, a named pipe): written in place, as nothing can be renamed onto it.
        try:
            with open(path, "wb") as output:
                for piece in pieces:
                    output.write(piece)
        except OSError as error:
            say(f"{path}: cannot write ({error.strerror}); the output is incomplete")
            return EXIT_REJECTED
        return 0
    directory, name = os.path.split(real)
    temporary = ""
    try:
        mode = stat.S_IMODE(os.stat(real).st_mode) if os.path.isfile(real) else 0o666 & ~_umask()
        handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        with os.fdopen(handle, "wb") as output:
            for piece in pieces:
                output.write(piece)
            output.flush()
            os.fsync(output.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, real)
    except BaseException as error:
        if temporary:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        if not isinstance(error, OSError):
            raise
        say(f"{path}: cannot write ({error.strerror}); nothing was written")
        return EXIT_REJECTED
    return 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_checked(arguments: argparse.Namespace, on_layer: Progress | None = None) -> ImageReading | None:
    """The image read whole, every layer checked; or None once a one-line reason is printed."""
    try:
        with no_cycle_collection():
            reading = ImageReading(
                arguments.image, on_layer, reader=arguments.reader, ref=arguments.ref, platform=arguments.platform
            )
            for _ in reading.values():
                pass
            return reading
    except SpecError as error:
        say(str(error))
        return None


def command_layers(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.inspect_report import exact_size, human_size, layer_rows, layers_table

    reading = read_checked(arguments)
    if reading is None:
        return EXIT_REJECTED
    layers = reading.layers
    values = [each.layer for each in layers]
    traces = None
    if arguments.files:
        _, stats, traces = flatten_traced(values)
    else:
        _, stats = flatten_with_stats(values)
    history = layer_history(reading.config, len(layers))
    rows = layer_rows(layers, stats, history, traces)
    if arguments.json:
        emit(rows)
        return 0
    lines = layers_table(rows, history, exact_size if arguments.bytes else human_size)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


EXIT_GATE_FAILED = 1
"""``inspect --ci``: a threshold failed [APPLY-10]."""


def command_inspect(arguments: argparse.Namespace) -> int:
    from cowcheck.cli.inspect_report import (
        exact_size,
        gate_lines,
        human_size,
        inspect_document,
        inspect_report,
        layer_rows,
    )
    from cowcheck.cli.inspect_report import thresholds as given_thresholds
    from cowspec.oci.waste import image_waste, judge

    given = [arguments.lowest_efficiency, arguments.highest_wasted_bytes, arguments.highest_user_wasted_percent]
    if not arguments.ci and any(each is not None for each in given):
        raise UsageError("the thresholds hold only with --ci")
    try:
        limits = given_thresholds(*given)
    except ValueError as error:
        raise UsageError(str(error)) from None
    progress = sys.stderr.isatty() or arguments.progress

    def report(index: int, total: int) -> None:
        if progress:
            print(f"cowspec: reading layer {index} ({index + 1} of {total})", file=sys.stderr, flush=True)

    reading = read_checked(arguments, on_layer=report)
    if reading is None:
        return EXIT_REJECTED
    layers = reading.layers
    _, stats, traces = flatten_traced([each.layer for each in layers])
    history = layer_history(reading.config, len(layers))
    waste = image_waste(stats, traces)
    verdicts = judge(waste, limits) if arguments.ci else None
    failed = verdicts is not None and any(each.status == "fail" for each in verdicts)
    rows = layer_rows(layers, stats, history)
    if arguments.json:
        emit(inspect_document(arguments.image, rows, waste, history, verdicts))
        return EXIT_GATE_FAILED if failed else 0
    size = exact_size if arguments.bytes else human_size
    lines = inspect_report(rows, waste, history, size)
    if verdicts is not None:
        lines += gate_lines(verdicts, size)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return EXIT_GATE_FAILED if failed else 0
