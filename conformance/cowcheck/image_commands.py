"""The image commands: ``flatten``, ``layers`` and ``inspect`` (see ``cowcheck.cli``)."""

import argparse
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from json.encoder import encode_basestring_ascii as quoted

from cowspec.apply import ApplyOptions, Rootfs, flatten, flatten_with_stats, rootfs_layer
from cowspec.errors import SpecError
from cowspec.layer_tar import encode_layer

from .cli import EXIT_REJECTED, emit
from .images import ImageLayer, ImageReading, Progress, read_image


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
    third of the time: an image's root filesystem can have 100,000 entries.
    """
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
    try:
        with no_cycle_collection():
            reading = ImageReading(arguments.image, keep_data=arguments.tar is not None, reader=arguments.reader)
            # Layers are applied as they are read; nothing is shown before the
            # last DiffID is checked, which ends the reading.
            rootfs = flatten(reading.values(), options)
    except SpecError as error:
        print(f"cowspec: {error}", file=sys.stderr)
        return EXIT_REJECTED
    if arguments.tar is None:
        sys.stdout.write(rootfs_json(rootfs) + "\n")
        sys.stdout.flush()
        return 0
    archive = encode_layer(rootfs_layer(rootfs))
    try:
        with open(arguments.tar, "wb") as handle:
            handle.write(archive)
    except OSError as error:
        print(f"cowspec: cannot write {arguments.tar}: {error.strerror}", file=sys.stderr)
        return EXIT_REJECTED
    return 0


def read_checked(arguments: argparse.Namespace, on_layer: Progress | None = None) -> list[ImageLayer] | None:
    """The image's checked layers, or None once a one-line reason is printed."""
    try:
        with no_cycle_collection():
            return read_image(arguments.image, on_layer=on_layer, reader=arguments.reader)
    except SpecError as error:
        print(f"cowspec: {error}", file=sys.stderr)
        return None


def command_layers(arguments: argparse.Namespace) -> int:
    layers = read_checked(arguments)
    if layers is None:
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


def command_inspect(arguments: argparse.Namespace) -> int:
    progress = sys.stderr.isatty() or arguments.progress

    def report(index: int, total: int) -> None:
        if progress:
            print(f"cowspec: reading layer {index + 1} of {total}", file=sys.stderr, flush=True)

    layers = read_checked(arguments, on_layer=report)
    if layers is None:
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
