"""Layer-level drivers: real tools asked to turn a stack of layer tars into a
root filesystem, and their answers in one comparable shape.

Each driver's ``flatten`` takes uncompressed layer archives, bottom first,
and returns either the root filesystem as entries in the shape of
``cowspec.oci.apply.rootfs_entries`` or, when the tool refuses the image, a
``Refused`` with the tool's first line of complaint.
"""

import contextlib
import os
import stat
import subprocess
from collections.abc import Callable

from cowcheck.drivers.cleanup import owned_directory, remove_tree
from cowcheck.drivers.engines import UMOCI_PREFIX, Dockerd, Podman, first_line, need, run, sweep_leftovers
from cowcheck.drivers.kernel_overlay import tree
from cowcheck.drivers.protocol import Answer, Entries, Refused
from cowcheck.images import docker_archive, write_oci_layout
from cowspec.errors import SpecError
from cowspec.oci.apply import flatten, rootfs_entries
from cowspec.oci.layer_tar import decode_layer

# What Docker's init layer adds to every container (research notes, section 2.1).
DOCKER_INIT = frozenset(
    {"/.dockerenv", "/dev", "/dev/console", "/dev/pts", "/dev/shm", "/etc", "/etc/hostname", "/etc/hosts",
     "/etc/mtab", "/etc/resolv.conf", "/proc", "/sys"}
)  # fmt: skip


class Spec:
    """cowspec's own verdict (the reference)."""

    name = "cowspec"

    def flatten(self, archives: list[bytes]) -> Answer:
        try:
            return rootfs_entries(flatten([decode_layer(each) for each in archives]))
        except SpecError as error:
            return Refused(str(error))


def export_entries(exported: bytes) -> Entries:
    """The entries of an exported root filesystem tar."""
    return rootfs_entries(flatten([decode_layer(exported)]))


Tool = Callable[..., subprocess.CompletedProcess[bytes]]


def load_create_export(tool: Tool, archives: list[bytes], tag: str) -> Answer:
    """Load ``archives`` as image ``tag``, create a container, export it, clean up.

    The same four commands for Docker and podman, whose clients agree on them.
    """
    loaded = tool("load", stdin=docker_archive(archives, tag))
    if loaded.returncode != 0:
        return Refused(first_line(loaded.stderr))
    created = tool("create", "--network", "none", tag, "/none")
    if created.returncode != 0:
        tool("rmi", tag)
        return Refused(first_line(created.stderr))
    container = created.stdout.decode().strip().splitlines()[-1]
    try:
        exported = tool("export", container)
        if exported.returncode != 0:
            return Refused(first_line(exported.stderr))
        return export_entries(exported.stdout)
    finally:
        tool("rm", container)
        tool("rmi", tag)


class DockerLayers:
    """``docker load`` of a ``docker save`` tarball, ``docker create``, ``docker export``.

    The init layer's placeholders are taken out of the export, so cases
    should not touch /etc, /dev, /proc or /sys.
    """

    name = "docker"

    def __init__(self, engine: Dockerd) -> None:
        self.engine = engine
        self.count = 0

    def flatten(self, archives: list[bytes]) -> Answer:
        self.count += 1
        answer = load_create_export(self.engine.docker, archives, f"cowspec/matrix:{self.count}")
        if isinstance(answer, Refused):
            return answer
        return [entry for entry in answer if entry["path"] not in DOCKER_INIT]


class PodmanLayers:
    """``podman load``, ``podman create``, ``podman export`` (vfs storage)."""

    name = "podman"

    def __init__(self, engine: Podman) -> None:
        self.engine = engine
        self.count = 0

    def flatten(self, archives: list[bytes]) -> Answer:
        self.count += 1
        answer = load_create_export(self.engine.command, archives, f"localhost/cowspec/matrix:{self.count}")
        if isinstance(answer, Refused):
            return Refused(answer.reason.replace(self.engine.base, "<storage>"))
        return answer


class UmociLayers:
    """``umoci unpack`` of an OCI layout, read back from the bundle's rootfs."""

    name = "umoci"

    def __init__(self) -> None:
        self.umoci = need("umoci")

    def flatten(self, archives: list[bytes]) -> Answer:
        sweep_leftovers()
        work = owned_directory(UMOCI_PREFIX)
        try:
            write_oci_layout(os.path.join(work, "image"), archives, tag="t")
            done = run([self.umoci, "unpack", "--image", os.path.join(work, "image") + ":t", os.path.join(work, "b")])
            if done.returncode != 0:
                return Refused(first_line(done.stderr).replace(work, "<work>"))
            rootfs = os.path.join(work, "b", "rootfs")
            entries = tree(rootfs, upper=False)
            for entry in entries:
                if entry["type"] == "other":
                    info = os.lstat(rootfs + str(entry["path"]))
                    entry["type"] = "char" if stat.S_ISCHR(info.st_mode) else "fifo"
            return entries
        finally:
            with contextlib.suppress(OSError):
                remove_tree(work)
