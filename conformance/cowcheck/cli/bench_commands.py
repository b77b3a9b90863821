"""``cowspec bench copy-up``: the time of the first change to a file against later changes.

Docker's storage-driver guide says copy-up costs time, and more for large
files, many layers and deep directory trees. Chapter 18 says what a
copy-up copies and creates; this measures how long it takes on this
machine, on each implementation it can run:

- ``overlay``: the kernel's overlayfs as Docker's overlay2 mounts it;
- ``overlay-metacopy``: the same with ``metacopy=on`` (and ``redirect_dir=on``,
  which it needs): a ``chmod`` or a ``rename`` copies the attributes only;
- ``overlay-volatile``: the kernel's overlayfs with ``volatile``, which skips
  the ``fsync`` the kernel makes of every file it copies up;
- ``fuse-overlayfs``: the user-space overlay of rootless Podman;
- ``btrfs``: no overlay at all, as Docker's btrfs driver stores layers: each
  image layer a snapshot of the one below, the container a snapshot of the
  top one, on a btrfs filesystem made in a sparse file under ``--work`` and
  mounted from a loop device (``drivers/loopfs.py``). A change copies only
  the blocks it writes (and the metadata above them), never the file.

Three series, each over one variable: the file's size (1 KiB up, by
powers of 4), the depth of the stack (the file in the bottom of 1 to 128
image layers) and the depth of the tree (the file below 1 to 64
directories that exist only in the image layer, copied up with it). For
each point and each call (write, append, truncate, chmod, rename) a sample
mounts afresh over the same image layers, times the first change, then the
later changes of the same file, and unmounts. The image layers are written
once per point, on the disk under ``--work`` (not a tmpfs); nothing is
dropped from the page cache, so the image file is read from memory after
the first sample.

The JSON names the machine (CPU model and architecture, kernel, the
filesystem under the layers), the date and every sample; the PNGs show the
medians with their interquartile spread. Everything is written under
``--out``. The work directory (``cowspec-bench-PID.START-*`` under
``--work``, named for its owner by ``cleanup.owned_directory``) is removed
at the end, also after an error, a Ctrl-C or a ``SIGTERM``; one a run
killed outright left is removed by the next run (``cleanup.sweep_stale``).
The mounts are made in a private mount namespace the process enters first,
so they go with it whatever happens. A failure of the run (a mount refused,
no space left) is one line and exit status 3.
"""

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from cowcheck.cli.output import UsageError, say
from cowcheck.drivers.cleanup import owned_directory, sweep_stale

OPS = ("write", "append", "truncate", "chmod", "rename")
SERIES = ("size", "layers", "depth")
DRIVERS = ("overlay", "overlay-metacopy", "overlay-volatile", "fuse-overlayfs", "btrfs")
FORMAT = "cowspec-bench-copy-up/1"
JSON_NAME = "copy-up.json"
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
MAX_LAYERS = 500
"""The kernel's limit on lower layers."""
DEFAULT_OUT = os.path.join("docs", "copy-up-cost")
FIXED_SIZE = 1 * MIB
"""The file's size in the layers and depth series."""
UNITS = {"": 1, "K": KIB, "M": MIB, "G": GIB}
WORK_PREFIX = "cowspec-bench-"
"""The work directory's name begins so, then its owner (``cleanup.owned_directory``): a run killed outright leaves
it behind, and the next run removes it (``cleanup.sweep_stale``)."""
SPACE_FACTOR = 3
"""Free space asked of ``--work``, in largest files: the image layer's copy, the upper copy, and room to spare."""
BTRFS_SPACE_FACTOR = 2
"""More largest files asked with btrfs: its image layer and the snapshot's blocks, in the sparse file."""
SPACE_MARGIN = 16 * MIB
"""Free space asked on top: the layers and depth series' files, the directories, the metadata."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What one run measures."""

    sizes: tuple[int, ...]
    layer_counts: tuple[int, ...]
    depths: tuple[int, ...]
    ops: tuple[str, ...]
    drivers: tuple[str, ...]
    series: tuple[str, ...]
    repeat: int
    later: int


@dataclass(frozen=True, slots=True)
class Point:
    """One image: a file of ``size`` bytes in the bottom of ``layers`` layers, below ``depth`` directories."""

    series: str
    size: int
    layers: int
    depth: int

    @property
    def x(self) -> int:
        """The value the series varies."""
        return {"size": self.size, "layers": self.layers, "depth": self.depth}[self.series]

    @property
    def directory(self) -> str:
        """The file's directory inside the container."""
        return "".join("/d" for _ in range(self.depth))


@dataclass
class Sample:
    """One fresh mount: the first change's seconds and the later ones'."""

    driver: str
    series: str
    x: int
    op: str
    size: int
    layers: int
    depth: int
    first: float
    later: list[float] = field(default_factory=list)
    lookup: float = 0.0
    """Seconds of the first ``stat`` of the file on the fresh mount, made before the first change."""
    upper_bytes: int | None = 0
    """Bytes the file's copy takes in the upper directory after the first change (``st_blocks`` * 512); None for
    btrfs, whose snapshot shares the file's blocks with the image layer (its ``st_blocks`` counts them all)."""


def parse_size(text: str) -> int:
    """Bytes from ``1024``, ``64K``, ``16M``, ``1G``."""
    stripped = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = stripped[-1:] if stripped[-1:] in ("K", "M", "G") else ""
    number = stripped[: len(stripped) - len(unit)]
    if not number.isdigit():
        raise UsageError(f"--max-size {text!r}: not a size (like 1024, 64K, 16M, 1G)")
    return int(number) * UNITS[unit]


def powers(low: int, high: int, factor: int) -> tuple[int, ...]:
    """``low``, ``low * factor``, ... up to ``high``, and ``high`` itself."""
    values = []
    value = low
    while value < high:
        values.append(value)
        value *= factor
    values.append(high)
    return tuple(values)


def chosen(text: str, known: tuple[str, ...], option: str) -> tuple[str, ...]:
    """The comma-separated names of ``text``, each checked against ``known``."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if name not in known:
            raise UsageError(f"{option}: unknown {name!r} (known: {', '.join(known)})")
    if not names:
        raise UsageError(f"{option}: name at least one of {', '.join(known)}")
    return names


def plan_of(arguments: argparse.Namespace) -> Plan:
    """The run the command line asks for, checked: one line and exit 2 for what cannot run."""
    max_size = parse_size(arguments.max_size)
    if not KIB <= max_size <= 16 * GIB:
        raise UsageError(f"--max-size {arguments.max_size}: must be between 1K and 16G")
    if not 1 <= arguments.max_layers <= MAX_LAYERS - 1:
        raise UsageError(f"--max-layers {arguments.max_layers}: must be between 1 and {MAX_LAYERS - 1}")
    if not 1 <= arguments.max_depth <= 256:
        raise UsageError(f"--max-depth {arguments.max_depth}: must be between 1 and 256")
    if not 1 <= arguments.repeat <= 1000:
        raise UsageError(f"--repeat {arguments.repeat}: must be between 1 and 1000")
    if not 1 <= arguments.later <= 1000:
        raise UsageError(f"--later {arguments.later}: must be between 1 and 1000")
    ops = chosen(arguments.ops, OPS, "--ops")
    drivers = chosen(arguments.drivers, DRIVERS, "--drivers")
    series = chosen(arguments.series, SERIES, "--series")
    if arguments.quick:
        return Plan(
            sizes=(KIB, 16 * KIB),
            layer_counts=(1, 4),
            depths=(1, 4),
            ops=ops,
            drivers=drivers,
            series=series,
            repeat=2,
            later=2,
        )
    return Plan(
        sizes=powers(KIB, max_size, 4),
        layer_counts=powers(1, arguments.max_layers, 2),
        depths=powers(1, arguments.max_depth, 2),
        ops=ops,
        drivers=drivers,
        series=series,
        repeat=arguments.repeat,
        later=arguments.later,
    )


def points_of(plan: Plan) -> Iterator[Point]:
    """Every image the plan measures, series by series."""
    if "size" in plan.series:
        for size in plan.sizes:
            yield Point("size", size, 1, 0)
    if "layers" in plan.series:
        for count in plan.layer_counts:
            yield Point("layers", FIXED_SIZE, count, 0)
    if "depth" in plan.series:
        for depth in plan.depths:
            yield Point("depth", FIXED_SIZE, 1, depth)


# -- the image layers on disk ------------------------------------------------------


def write_file(path: str, size: int) -> None:
    """A file of ``size`` bytes of a repeating pattern (not sparse: every block is written)."""
    block = bytes(range(256)) * (MIB // 256)
    with open(path, "wb") as handle:
        left = size
        while left:
            chunk = block[: min(left, len(block))]
            handle.write(chunk)
            left -= len(chunk)


def lay_out_point(base: str, point: Point) -> list[str]:
    """The image layers of ``point`` under ``base`` (``l/0`` the bottom); their names, top first, relative to ``base``.

    Short relative names keep the mount options of 128 layers far below the
    kernel's page-long limit.
    """
    names = [f"l/{index}" for index in range(point.layers)]
    for index, name in enumerate(names):
        os.makedirs(os.path.join(base, name))
        if index:
            write_file(os.path.join(base, name, f"x{index}"), 1)
    bottom = os.path.join(base, names[0]) + point.directory
    os.makedirs(bottom, exist_ok=True)
    write_file(os.path.join(bottom, "f"), point.size)
    return list(reversed(names))


KERNEL_OPTIONS = {
    "overlay": "redirect_dir=off,index=off,metacopy=off",
    "overlay-metacopy": "redirect_dir=on,index=off,metacopy=on",
    "overlay-volatile": "redirect_dir=off,index=off,metacopy=off,volatile",
}
"""The features of each kernel driver: Docker's overlay2 options, and one change each."""


# -- mounts ----------------------------------------------------------------------------


class FuseMount(Protocol):
    """What the benchmark uses of a fuse-overlayfs mount (``fuse_mount``)."""

    def stop(self) -> None:
        """Unmount (if mounted) and see the daemon gone."""


def fuse_mount(merged_dir: str, lowers_top_first: list[str], upper: str, work: str) -> FuseMount:
    """fuse-overlayfs mounted on ``merged_dir`` by ``FuseSession``'s own code (``_mount``: the daemon tied to this
    process, its standard error kept for the message of a failure; ``_unmount``: unmount, then see the daemon
    gone), without the layers and the container process of a session, which the benchmark does not use.
    (Imported here, not at the top: every ``cowspec`` command loads this module to list its options.)"""
    from cowcheck.drivers.fuse_overlay import FuseSession
    from cowspec.fs.features import Features

    class Mount(FuseSession):
        def __init__(self) -> None:  # no session: FuseSession.__init__ is left out on purpose
            self.merged_dir = merged_dir
            self.mounted = False
            self.daemon = None
            self.errors = None

        def stop(self) -> None:
            self._unmount()
            self.mounted = False

    mount = Mount()
    try:
        mount._mount(lowers_top_first, upper, work, Features())
    except BaseException:
        mount.stop()
        raise
    return mount


class Mounted:
    """One mount of a driver over the image layers, with a fresh upper directory, in ``base``."""

    def __init__(self, driver: str, base: str, lowers_top_first: list[str]) -> None:
        self.driver = driver
        self.base = base
        self.merged = os.path.join(base, "m")
        self.upper = os.path.join(base, "u")
        self.fuse: FuseMount | None = None
        try:
            for name in ("u", "w"):
                os.mkdir(os.path.join(base, name))
            here = os.getcwd()
            os.chdir(self.base)  # the layers are named relative to it (the daemon starts there too)
            try:
                if driver == "fuse-overlayfs":
                    self.fuse = fuse_mount(self.merged, lowers_top_first, "u", "w")
                else:
                    self._mount_kernel(lowers_top_first, KERNEL_OPTIONS[driver])
            finally:
                os.chdir(here)
        except BaseException:
            with contextlib.suppress(Exception):  # the failure to mount is the error to report
                self.close()
            raise

    def _mount_kernel(self, lowers_top_first: list[str], features: str) -> None:
        from cowcheck.drivers.namespace import mount

        options = f"lowerdir={':'.join(lowers_top_first)},upperdir=u,workdir=w,{features}"
        mount("overlay", self.merged, "overlay", options)

    def close(self) -> None:
        """Unmount, see fuse-overlayfs gone, remove the upper and work directories."""
        from cowcheck.drivers.cleanup import mount_points
        from cowcheck.drivers.namespace import umount

        if self.fuse is not None:
            fuse, self.fuse = self.fuse, None
            fuse.stop()
        if self.merged in mount_points():
            umount(self.merged)
        for name in ("u", "w"):
            shutil.rmtree(os.path.join(self.base, name), ignore_errors=True)


def btrfs(*arguments: str) -> None:
    """Run ``btrfs ARGUMENTS`` (quietly); a failure is a ``RuntimeError`` with its last line."""
    from cowcheck.drivers.loopfs import program

    done = subprocess.run([program("btrfs"), *arguments], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise RuntimeError(f"btrfs {' '.join(arguments)}: {said[-1] if said else done.returncode}")


class BtrfsImage:
    """The image of one point as Docker's btrfs driver keeps it: subvolume ``l0`` holds the file, and each layer
    above is a snapshot of the one below with a small file of its own."""

    def __init__(self, root: str, point: Point) -> None:
        self.root = root
        self.layers: list[str] = []
        try:
            self._make(point)
        except BaseException:
            with contextlib.suppress(Exception):  # the failure to make it is the error to report
                self.close()
            raise

    def _make(self, point: Point) -> None:
        for index in range(point.layers):
            here = os.path.join(self.root, f"l{index}")
            if index == 0:
                btrfs("subvolume", "create", here)
                os.makedirs(here + point.directory, exist_ok=True)
                write_file(os.path.join(here + point.directory, "f"), point.size)
            else:
                btrfs("subvolume", "snapshot", self.layers[-1], here)
                write_file(os.path.join(here, f"x{index}"), 1)
            self.layers.append(here)

    def close(self) -> None:
        """Delete every layer's subvolume, the top first."""
        while self.layers:
            btrfs("subvolume", "delete", self.layers.pop())


@contextmanager
def cleaning_up(*cleanups: Callable[[], None]) -> Iterator[None]:
    """Run ``cleanups`` in order when the block ends. When the block raised, a cleanup that fails too is passed
    over (the block's error is the one to report); when it did not, a failing cleanup raises."""
    try:
        yield
    except BaseException:
        for cleanup in cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        raise
    for cleanup in cleanups:
        cleanup()


class Snapshot:
    """A container on btrfs: a writable snapshot of the image's top layer, deleted at ``close``."""

    def __init__(self, image: BtrfsImage) -> None:
        self.merged = os.path.join(image.root, "c")
        self.upper = self.merged
        btrfs("subvolume", "snapshot", image.layers[-1], self.merged)

    def close(self) -> None:
        btrfs("subvolume", "delete", self.merged)


# -- the calls timed -------------------------------------------------------------------


def change(op: str, directory: str, size: int, number: int) -> Callable[[], None]:
    """Change ``number`` (0 the first) of the file in ``directory`` by ``op``, as a call to time."""
    path = os.path.join(directory, "f")

    def write() -> None:
        descriptor = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(descriptor, b"w", number)
        finally:
            os.close(descriptor)

    def append() -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(descriptor, b"a")
        finally:
            os.close(descriptor)

    def truncate() -> None:
        os.truncate(path, max(size - 1 - number, 0))

    def chmod() -> None:
        os.chmod(path, 0o600 if number % 2 == 0 else 0o644)

    def rename() -> None:
        # The file moves to g and back: every even change finds it at f.
        source, target = (path, path[:-1] + "g") if number % 2 == 0 else (path[:-1] + "g", path)
        os.rename(source, target)

    calls: dict[str, Callable[[], None]] = {
        "write": write,
        "append": append,
        "truncate": truncate,
        "chmod": chmod,
        "rename": rename,
    }
    return calls[op]


def look_up(path: str) -> Callable[[], None]:
    """A ``stat`` of ``path``, as a call to time: the walk from the root, no change."""

    def stat() -> None:
        os.stat(path)

    return stat


def timed(call: Callable[[], None]) -> float:
    """Seconds ``call`` took."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure_point(base: str, btrfs_root: str | None, point: Point, plan: Plan, drivers: Sequence[str]) -> list[Sample]:
    """Every sample of one image: for each driver and call, ``plan.repeat`` fresh mounts (or snapshots)."""
    overlays = [driver for driver in drivers if driver != "btrfs"]
    images: list[BtrfsImage] = []

    def remove_image() -> None:
        shutil.rmtree(os.path.join(base, "l"), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(os.path.join(base, "m"))
        while images:
            images.pop().close()

    samples: list[Sample] = []
    with cleaning_up(remove_image):
        lowers = lay_out_point(base, point) if overlays else []
        os.mkdir(os.path.join(base, "m"))
        if btrfs_root is not None and "btrfs" in drivers:
            images.append(BtrfsImage(btrfs_root, point))
        for _ in range(plan.repeat):
            for driver in drivers:
                for op in plan.ops:
                    samples.append(measure_once(driver, op, point, plan, base, lowers, images))
    return samples


def measure_once(
    driver: str, op: str, point: Point, plan: Plan, base: str, lowers: list[str], images: list[BtrfsImage]
) -> Sample:
    """One sample: a fresh mount (or snapshot), the first change timed, then the later ones, and away again."""
    container: Mounted | Snapshot
    container = Snapshot(images[0]) if driver == "btrfs" else Mounted(driver, base, lowers)
    directory = container.merged + point.directory
    with cleaning_up(container.close):
        # The path is looked up once first: the first change then times its copy-up, not the walk.
        lookup = timed(look_up(os.path.join(directory, "f")))
        first = timed(change(op, directory, point.size, 0))
        copy = os.lstat(os.path.join(container.upper + point.directory, "g" if op == "rename" else "f"))
        later = [timed(change(op, directory, point.size, number)) for number in range(1, plan.later + 1)]
    os.sync()
    sample = Sample(driver, point.series, point.x, op, point.size, point.layers, point.depth, round(first, 9))
    sample.later = [round(seconds, 9) for seconds in later]
    sample.lookup = round(lookup, 9)
    # A btrfs snapshot shares the image's blocks: st_blocks counts them all, not what the change copied.
    sample.upper_bytes = None if driver == "btrfs" else copy.st_blocks * 512
    return sample


# -- the machine --------------------------------------------------------------------------


ARM_IMPLEMENTERS = {
    "0x41": "ARM",
    "0x42": "Broadcom",
    "0x43": "Cavium",
    "0x46": "Fujitsu",
    "0x48": "HiSilicon",
    "0x4e": "NVIDIA",
    "0x50": "APM",
    "0x51": "Qualcomm",
    "0x61": "Apple",
    "0xc0": "Ampere",
}
"""The ``CPU implementer`` codes of ``/proc/cpuinfo`` on ARM (the MIDR's implementer field), for a CPU without a
``model name``."""


def fields_of(text: str) -> dict[str, str]:
    """The first value of each ``Key: value`` line of ``/proc/cpuinfo`` or ``lscpu``'s output."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() not in fields and value.strip():
            fields[key.strip()] = value.strip()
    return fields


def cpu_name(cpuinfo: str, lscpu: str = "") -> str:
    """The CPU's model, from ``/proc/cpuinfo`` (x86's ``model name``), else ``lscpu``'s ``Vendor ID`` and ``Model
    name`` (which name ARM parts), else ARM's ``CPU implementer`` and ``CPU part`` codes; ``unknown`` if none."""
    info, listed = fields_of(cpuinfo), fields_of(lscpu)
    if "model name" in info:
        return info["model name"]
    model, vendor = listed.get("Model name", "-"), listed.get("Vendor ID", "")
    if model not in ("-", ""):
        return model if not vendor or vendor in model else f"{vendor} {model}"
    if "CPU implementer" in info:
        implementer = info["CPU implementer"].lower()
        name = ARM_IMPLEMENTERS.get(implementer, f"implementer {implementer}")
        return f"{name} part {info.get('CPU part', '?')}"
    return info.get("Hardware") or info.get("Processor") or "unknown"


def cpu_model() -> str:
    """This machine's CPU model (``cpu_name`` of ``/proc/cpuinfo`` and of ``lscpu``, when it is there)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as table:
            cpuinfo = table.read()
    except OSError:
        cpuinfo = ""
    lscpu = ""
    if "model name" not in cpuinfo:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            done = subprocess.run(
                ["lscpu"], capture_output=True, text=True, timeout=10, check=False, env={**os.environ, "LC_ALL": "C"}
            )
            lscpu = done.stdout
    return cpu_name(cpuinfo, lscpu)


def filesystem_of(path: str) -> str:
    """The type of the filesystem ``path`` is on (the longest mount point above it), with its source."""
    real = os.path.realpath(path)
    best, found = "", "unknown"
    with open("/proc/self/mounts", encoding="utf-8") as table:
        for line in table:
            source, point, kind = line.split()[:3]
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, found = point, f"{kind} ({source} on {point})"
    return found


def fuse_version() -> str | None:
    """fuse-overlayfs's version line, or None if it is not there."""
    from cowcheck.drivers.fuse_overlay import PROGRAM

    try:
        done = subprocess.run([PROGRAM, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("fuse-overlayfs")]
    return lines[0].strip() if lines else None


# -- the summary and the plots ---------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles, least and most of ``values``."""
    ordered = sorted(values)
    if len(ordered) > 1:
        low, _, high = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        low = high = ordered[0]
    return {"median": statistics.median(ordered), "q1": low, "q3": high, "min": ordered[0], "max": ordered[-1]}


def summarise(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (driver, series, x, op): the first change and the later ones, and the ratio of their medians."""
    groups: dict[tuple[str, str, int, str], list[dict[str, Any]]] = {}
    for sample in samples:
        groups.setdefault((sample["driver"], sample["series"], sample["x"], sample["op"]), []).append(sample)
    rows = []
    for (driver, series, x, op), members in sorted(groups.items()):
        first = spread([member["first"] for member in members])
        later = spread([value for member in members for value in member["later"]])
        ratio = first["median"] / later["median"] if later["median"] > 0 else float("inf")
        lookup = spread([member.get("lookup", 0.0) for member in members])
        rows.append(
            {"driver": driver, "series": series, "x": x, "op": op, "samples": len(members)}
            | {"first": first, "later": later, "ratio": ratio, "lookup": lookup}
        )
    return rows


LABELS = {"size": "file size (bytes)", "layers": "image layers", "depth": "directories above the file"}
TITLES = {
    "size": "first change vs later changes, by file size (file in one image layer)",
    "layers": "first change vs later changes, by stack depth (1 MiB file in the bottom layer)",
    "depth": "first change vs later changes, by tree depth (1 MiB file below the directories)",
}


def human(value: float) -> str:
    """``value`` bytes in K, M or G, as the size axis shows it."""
    for unit, scale in (("G", GIB), ("M", MIB), ("K", KIB)):
        if value >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def plot(rows: list[dict[str, Any]], series: str, path: str, machine: str) -> None:
    """One PNG for ``series``: a panel per call, the first and the later changes of each driver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    from matplotlib.ticker import FuncFormatter

    ops = [op for op in OPS if any(row["op"] == op and row["series"] == series for row in rows)]
    figure, axes = pyplot.subplots(2, 3, figsize=(13, 8), squeeze=False)
    panels = [axis for line in axes for axis in line]
    colours = {
        "overlay": "tab:blue",
        "overlay-metacopy": "tab:orange",
        "overlay-volatile": "tab:purple",
        "fuse-overlayfs": "tab:green",
        "btrfs": "tab:red",
    }
    handles: list[Any] = []
    for axis, op in zip(panels, ops, strict=False):
        for driver in DRIVERS:
            key = (series, op, driver)
            mine = sorted((row for row in rows if (row["series"], row["op"], row["driver"]) == key), key=by_x)
            if not mine:
                continue
            xs = [row["x"] for row in mine]
            for which, style in (("first", "-o"), ("later", "--x")):
                medians = [row[which]["median"] * 1000 for row in mine]
                below = [max(row[which]["median"] - row[which]["q1"], 0) * 1000 for row in mine]
                above = [max(row[which]["q3"] - row[which]["median"], 0) * 1000 for row in mine]
                drawn = axis.errorbar(
                    xs,
                    medians,
                    yerr=[below, above],
                    fmt=style,
                    color=colours[driver],
                    capsize=2,
                    markersize=4,
                    label=f"{driver}: {which} change",
                )
                if op == ops[0]:
                    handles.append(drawn)
        axis.set_xscale("log", base=4 if series == "size" else 2)
        if series == "size":
            axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: human(value)))
        axis.set_yscale("log")
        axis.set_title(op)
        axis.set_xlabel(LABELS[series])
        axis.set_ylabel("milliseconds (median, quartiles)")
        axis.grid(True, which="both", alpha=0.3)
    for axis in panels[len(ops) :]:
        axis.axis("off")
    panels[-1].legend(handles=handles, loc="center", fontsize=9)
    figure.suptitle(f"{TITLES[series]}\n{machine}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def by_x(row: dict[str, Any]) -> int:
    """A summary row's place along its series."""
    return int(row["x"])


def figure(value: float) -> str:
    """``value`` with three significant digits, or as a whole number with separators from 100 up."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def milliseconds(seconds: float) -> str:
    """``seconds`` in milliseconds, as ``figure`` writes numbers."""
    return figure(seconds * 1000)


def ratio_tables(document: dict[str, Any]) -> str:
    """The markdown tables docs/copy-up-cost.md quotes: for each series, each driver and call, the first
    change at the series' two ends, the later changes at its far end, and the two ratios."""
    rows: list[dict[str, Any]] = document["summary"]
    lines: list[str] = []
    for series in SERIES:
        mine = [row for row in rows if row["series"] == series]
        if not mine:
            continue
        low, high = min(row["x"] for row in mine), max(row["x"] for row in mine)
        show = human if series == "size" else str
        lines += [
            f"**{series}** ({LABELS[series]}, {show(low)} to {show(high)}; times in ms, medians)",
            "",
            f"| driver | call | first at {show(low)} | first at {show(high)} | later at {show(high)}"
            f" | first / later at {show(high)} | first at {show(high)} / first at {show(low)} |",
            "|---|---|--:|--:|--:|--:|--:|",
        ]
        for driver in DRIVERS:
            for op in OPS:
                ends = {row["x"]: row for row in mine if (row["driver"], row["op"]) == (driver, op)}
                if low not in ends or high not in ends:
                    continue
                first_low, far = ends[low]["first"]["median"], ends[high]
                lines.append(
                    f"| {driver} | {op} | {milliseconds(first_low)} | {milliseconds(far['first']['median'])}"
                    f" | {milliseconds(far['later']['median'])} | {figure(far['ratio'])}"
                    f" | {figure(far['first']['median'] / first_low)} |"
                )
        lines.append("")
        if series != "size":
            lines += lookup_table(mine, series, low, high)
    return "\n".join(lines)


def lookup_table(rows: list[dict[str, Any]], series: str, low: int, high: int) -> list[str]:
    """The first ``stat`` of the file on a fresh mount (before any change), at the series' two ends, per driver."""
    lines = [
        f"First `stat` of the file on a fresh mount, before the first change ({series}; ms, medians of every call's"
        " samples):",
        "",
        f"| driver | at {low} | at {high} | at {high} / at {low} |",
        "|---|--:|--:|--:|",
    ]
    for driver in DRIVERS:
        ends = {
            x: statistics.median(row["lookup"]["median"] for row in rows if (row["driver"], row["x"]) == (driver, x))
            for x in (low, high)
            if any((row["driver"], row["x"]) == (driver, x) for row in rows)
        }
        if len(ends) == 2 and ends[low] > 0:
            lines.append(
                f"| {driver} | {milliseconds(ends[low])} | {milliseconds(ends[high])}"
                f" | {figure(ends[high] / ends[low])} |"
            )
    return [*lines, ""]


# -- the command ------------------------------------------------------------------------------


def check_out(out: str) -> bool:
    """Make ``out`` if needed and make sure a file can be written there (one line, exit 2, if not); True if this
    made it (a command that then refuses to run removes it again)."""
    made = not os.path.lexists(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {out}: cannot make the directory ({error.strerror})") from None
    if not os.path.isdir(out) or not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: not a writable directory")
    return made


def available(drivers: tuple[str, ...], explicit: bool) -> tuple[str, ...]:
    """The drivers of the plan that can run here; one asked for by name that cannot is an error."""
    from cowcheck.drivers.fuse_overlay import unavailable_reason

    kept = []
    for driver in drivers:
        if driver == "fuse-overlayfs":
            reason = unavailable_reason()
        elif driver == "btrfs":
            from cowcheck.drivers.loopfs import unavailable_reason as btrfs_reason

            reason = btrfs_reason()
        else:
            reason = None
        if reason is None:
            kept.append(driver)
        elif explicit:
            raise UsageError(f"--drivers {driver}: cannot run here: {reason}")
        else:
            say(f"bench copy-up: leaving out {driver}: {reason}")
    return tuple(kept)


def previous_runs(path: str, keep: bool, machine: dict[str, Any]) -> dict[str, Any] | None:
    """With ``--add``, the document already at ``path`` (None if there is none); it must come from this machine."""
    if not keep or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as error:
        raise UsageError(f"--add: cannot read {path} ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise UsageError(f"--add: {path} is not a {FORMAT} document")
    # The architecture is compared when the earlier run named it (older documents do not).
    keys = ("cpu", "kernel", "filesystem", *(("arch",) if "arch" in document["machine"] else ()))
    theirs = {key: document["machine"].get(key) for key in keys}
    if theirs != {key: machine[key] for key in theirs}:
        raise UsageError(f"--add: {path} was measured on another machine ({theirs})")
    return document


@contextmanager
def btrfs_root(base: str, wanted: bool, largest: int) -> Iterator[str | None]:
    """A directory on a fresh btrfs filesystem (a sparse file in ``base``) for the run, if ``wanted``."""
    if not wanted:
        yield None
        return
    from cowcheck.drivers.loopfs import LoopFilesystem

    with LoopFilesystem(size=max(4 * largest, 2 * GIB), parent=base) as filesystem:
        yield filesystem.mount_point


def enter_private_mount_namespace() -> None:
    """Move this process into a mount namespace of its own, propagation private: the mounts of the run are seen
    by no one else, and go with the process if it is killed (without the scratch tmpfs ``namespace.scratch_root``
    adds: the benchmark's layers belong on a disk)."""
    from cowcheck.drivers.namespace import private_namespace

    private_namespace()


def space_needed(plan: Plan, drivers: Sequence[str]) -> int:
    """Bytes of free space the run needs under ``--work`` (``SPACE_FACTOR``, ``BTRFS_SPACE_FACTOR``)."""
    largest = max(point.size for point in points_of(plan))
    factor = SPACE_FACTOR + (BTRFS_SPACE_FACTOR if "btrfs" in drivers else 0)
    return factor * largest + SPACE_MARGIN


def free_space(path: str) -> int:
    """Bytes an unprivileged writer could still put in the filesystem of ``path``."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def reason_of(error: BaseException) -> str:
    """One line for a failure of the run: the OS's words and the file, or the error's own message."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error)


def command_bench_copy_up(arguments: argparse.Namespace) -> int:
    """Run the benchmark the command line asks for; write the JSON and the PNGs into ``--out``."""
    plan = plan_of(arguments)
    if importlib.util.find_spec("matplotlib") is None:  # said before anything is measured
        raise UsageError("bench copy-up draws its plots with matplotlib: pip install 'cowspec[bench]'")
    made_out = check_out(arguments.out)
    try:
        status = run_bench(arguments, plan)
    except BaseException:
        remove_if_empty(arguments.out, made_out)
        raise
    if status != 0:
        remove_if_empty(arguments.out, made_out)
    return status


def remove_if_empty(path: str, made: bool) -> None:
    """Remove the directory ``path`` if this command made it and left it empty."""
    if made:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def run_bench(arguments: argparse.Namespace, plan: Plan) -> int:
    """The run itself, once the command line is checked and ``--out`` is there; the exit status."""
    from cowcheck.drivers.protocol import DriverUnavailable

    work_parent = arguments.work or "/var/tmp"
    if not os.path.isdir(work_parent) or not os.access(work_parent, os.W_OK):
        raise UsageError(f"--work {work_parent}: not a writable directory")
    filesystem = filesystem_of(work_parent)
    if filesystem.split()[0] == "tmpfs":
        say(f"bench copy-up: warning: --work {work_parent} is on a tmpfs: the layers are in memory, not on a disk")
    try:
        enter_private_mount_namespace()
    except DriverUnavailable as error:
        say(f"bench copy-up: cannot mount here: {error}")
        return 3
    drivers = available(plan.drivers, explicit=arguments.drivers != ",".join(DRIVERS))
    needed, free = space_needed(plan, drivers), free_space(work_parent)
    if free < needed:
        say(
            f"bench copy-up: --work {work_parent} has {free // MIB} MiB free, the run needs about {needed // MIB} MiB"
            " (lower --max-size or choose another --work)"
        )
        return 3
    machine = {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "filesystem": filesystem,
        "fuse_overlayfs": fuse_version() if "fuse-overlayfs" in drivers else None,
        "python": platform.python_version(),
    }
    json_path = os.path.join(arguments.out, JSON_NAME)
    earlier = previous_runs(json_path, arguments.add, machine)
    sweep_stale(WORK_PREFIX, work_parent)  # what runs killed outright (SIGKILL) left
    base = owned_directory(WORK_PREFIX, work_parent)
    # A SIGTERM ends the run as a Ctrl-C does: through the ``finally`` below, which removes the work directory.
    old_handler = signal.signal(signal.SIGTERM, interrupt)
    old_config = os.environ.get("MPLCONFIGDIR")
    os.environ["MPLCONFIGDIR"] = os.path.join(base, "matplotlib")  # no cache of matplotlib's left in ~/.cache
    started = time.monotonic()
    samples: list[Sample] = []
    try:
        try:
            with btrfs_root(base, "btrfs" in drivers, max(point.size for point in points_of(plan))) as root:
                if root is not None:
                    machine["btrfs"] = "btrfs in a sparse file under the work directory, on a loop device"
                for point in points_of(plan):
                    samples += measure_point(base, root, point, plan, drivers)
        except (DriverUnavailable, RuntimeError, OSError) as error:
            say(f"bench copy-up: {reason_of(error)} (--work {work_parent})")
            return 3
        seconds = round(time.monotonic() - started, 1)
        written = report(arguments, plan, drivers, machine, earlier, samples, seconds)
    except OSError as error:
        say(f"bench copy-up: cannot write the results: {reason_of(error)} (--out {arguments.out})")
        return 3
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        if old_config is None:
            os.environ.pop("MPLCONFIGDIR", None)
        else:
            os.environ["MPLCONFIGDIR"] = old_config
        from cowcheck.drivers.cleanup import remove_tree

        with contextlib.suppress(OSError):
            remove_tree(base)
    print(f"cowspec bench copy-up: {len(samples)} samples in {seconds} s: {', '.join(written)}")
    return 0


def interrupt(number: int, _frame: object) -> None:
    """A signal handler that ends the run like a Ctrl-C (``KeyboardInterrupt``)."""
    raise KeyboardInterrupt(f"signal {number}")


def report(
    arguments: argparse.Namespace,
    plan: Plan,
    drivers: tuple[str, ...],
    machine: dict[str, Any],
    earlier: dict[str, Any] | None,
    samples: list[Sample],
    seconds: float,
) -> list[str]:
    """Write the JSON (with ``--add``, merged with ``earlier``) and the PNGs into ``--out``; their paths."""
    measured = {(driver, series) for driver in drivers for series in plan.series}
    kept = [] if earlier is None else earlier["samples"]
    all_samples = [sample for sample in kept if (sample["driver"], sample["series"]) not in measured]
    all_samples += [asdict(sample) for sample in samples]
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    run = {
        "date": date,
        "plan": asdict(plan) | {"drivers": list(drivers), "quick": arguments.quick, "fixed_size": FIXED_SIZE},
        "seconds": seconds,
    }
    if earlier is not None:  # what an earlier run found out and this one did not ask (fuse-overlayfs's version)
        machine = earlier["machine"] | {key: value for key, value in machine.items() if value is not None}
    rows = summarise(all_samples)
    document: dict[str, Any] = {
        "format": FORMAT,
        "date": date,
        "machine": machine,
        "runs": ([] if earlier is None else earlier["runs"]) + [run],
        "summary": rows,
        "samples": all_samples,
    }
    json_path = os.path.join(arguments.out, JSON_NAME)
    write_document(json_path, document)
    arch = f" ({machine['arch']})" if machine.get("arch") else ""
    label = f"{machine['cpu']}{arch}, Linux {machine['kernel']}, overlay layers on {machine['filesystem'].split()[0]}"
    if any(sample["driver"] == "btrfs" for sample in all_samples):
        label += ", btrfs on a loop device"
    written = [json_path]
    for series in SERIES:
        if any(row["series"] == series for row in rows):
            path = os.path.join(arguments.out, f"copy-up-{series}.png")
            plot(rows, series, path, label)
            written.append(path)
    return written


def write_document(path: str, document: dict[str, Any]) -> None:
    """The JSON at ``path``: its header indented, then one line per summary row and per sample (a diff shows
    which changed, and thousands of samples stay small)."""
    head = {key: value for key, value in document.items() if key not in ("summary", "samples")}
    text = json.dumps(head, indent=1)[:-2]
    for key in ("summary", "samples"):
        lines = ",\n".join("  " + json.dumps(item, separators=(",", ":")) for item in document[key])
        text += f',\n "{key}": [\n{lines}\n ]'
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n}\n")


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``bench`` and its ``copy-up`` subcommand to the ``cowspec`` command line."""
    summary = "benchmarks on the real kernel"
    bench = commands.add_parser("bench", help=summary, description=summary)
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    summary = "the time of the first change to a file (its copy-up) against later changes, by size, layers, depth"
    details = (
        "Each sample mounts afresh over image layers written on disk (under --work), times the first change of a"
        " file, then later changes of it; the JSON of every sample and a PNG per series go into --out."
    )
    sub = kinds.add_parser("copy-up", help=summary, description=f"{summary}. {details}")
    sub.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"where the JSON and PNGs go (default {DEFAULT_OUT})"
    )
    sub.add_argument("--work", metavar="DIR", help="where the image layers are written, on disk (default /var/tmp)")
    sub.add_argument(
        "--quick", action="store_true", help="a small run, two points a series (about ten seconds, most of it plotting)"
    )
    sub.add_argument("--ops", default=",".join(OPS), help=f"calls to time, comma-separated (default {','.join(OPS)})")
    sub.add_argument(
        "--drivers",
        default=",".join(DRIVERS),
        help=f"implementations (default: those of {','.join(DRIVERS)} that run here)",
    )
    sub.add_argument("--series", default=",".join(SERIES), help=f"series to run (default {','.join(SERIES)})")
    sub.add_argument("--max-size", default="1G", metavar="SIZE", help="largest file of the size series (default 1G)")
    sub.add_argument("--max-layers", type=int, default=128, metavar="N", help="deepest stack (default 128)")
    sub.add_argument("--max-depth", type=int, default=64, metavar="N", help="deepest tree (default 64)")
    sub.add_argument("--repeat", type=int, default=5, metavar="N", help="fresh mounts per point and call (default 5)")
    sub.add_argument("--later", type=int, default=5, metavar="N", help="later changes timed per mount (default 5)")
    sub.add_argument(
        "--add",
        action="store_true",
        help="keep the samples of the JSON in --out of the drivers and series this run does not measure",
    )
    sub.set_defaults(handler=command_bench_copy_up, driver="")
