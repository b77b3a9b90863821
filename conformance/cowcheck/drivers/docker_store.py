"""Store traces on a real Docker engine: images, containers and every figure.

Each step is done the way Docker does it: images are loaded from ``docker
save`` tarballs, containers are created with ``docker create``, committed
with ``docker commit`` and removed with ``docker rm`` and ``docker rmi``.
Filesystem ops inside a container are made on the container's own storage
while the container is not running, by a process chrooted into it: the same
system calls as the kernel driver's. Where that storage is depends on the
engine's storage driver (``Dockerd.storage_driver``):

- ``overlay2``: the container's layers (the directories ``docker inspect``
  names), mounted with the kernel's overlayfs as Docker mounts them, in
  cowspec's private mount namespace;
- ``fuse-overlayfs``: the same directories mounted with the very program and
  options Docker runs (``fuse-overlayfs -o lowerdir=...,upperdir=...,
  workdir=...``, ``fuse_overlay.FuseSession``). A process in the container
  sees that program's answers; so do the ops, and no second mount is ever
  made beside Docker's, since the container is not running;
- ``vfs``: the container's directory, a full copy (``<data-root>/vfs/dir/<id>``);
- ``btrfs``: the container's subvolume (``<data-root>/btrfs/subvolumes/<id>``),
  reached through the engine's mount namespace (``Dockerd.host_path``).

Docker's init layer is left out everywhere [STORE-13]: overlay2 and
fuse-overlayfs mount the image's layers without it; vfs and btrfs copy it
into the container's own directory, so what it added there (``/.dockerenv``,
``/dev``, ``/etc/hosts``...) is moved aside for the ops and put back after.

Renames and links in a container that mounts volumes are made by the engine's
container itself, where the volumes are real mounts: the container runs a
small static program, ``cowspec-call`` (``store_call.c``, built here with
``gcc -static`` and bind-mounted under the container's ``/dev``), and
``docker exec`` has it make each call and print its errno (STORE-11). Nothing
of the model decides their answer.

A step the engine refuses says the kind of refusal, read from the engine's
message (STORE-12). The figures are read in bytes from the Engine API.
"""

import contextlib
import errno
import itertools
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from cowcheck.drivers.cleanup import remove_tree
from cowcheck.drivers.engines import DEFAULT_STORAGE_DRIVER, Dockerd, engine_api, first_line, run
from cowcheck.drivers.kernel_overlay import KernelSession
from cowcheck.drivers.protocol import DriverError, DriverUnavailable
from cowcheck.images import docker_archive
from cowspec.formats.store_trace import STORE_RESULT_FORMAT, encode_step_result
from cowspec.fs.build import build_layer
from cowspec.fs.calls import Link, Op, Rename
from cowspec.fs.observe import Entry
from cowspec.fs.paths import ROOT, is_inside, parent_of
from cowspec.fs.stack import new_container
from cowspec.oci.commit import layer_tar_of
from cowspec.oci.layer_tar import encode_layer
from cowspec.store.disk import INIT_ENTRIES
from cowspec.store.drivers import STORAGE_DRIVERS
from cowspec.store.state import ContainerRecord, routed
from cowspec.store.steps import (
    DONE,
    METADATA,
    Build,
    Commit,
    CreateContainer,
    CreateVolume,
    Diff,
    Instruction,
    LoadImage,
    Refusal,
    RemoveContainer,
    RemoveImage,
    RemoveVolume,
    RunOps,
    Step,
)

HELPER_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store_call.c")
HELPER_MOUNT = "/dev/.cowspec"
"""Where the helper is bind-mounted: in the container's own /dev (a tmpfs), so
that its mount point is made in no layer of the container."""
HELPER = HELPER_MOUNT + "/cowspec-call"

REFUSALS = (
    ("no such image", "no-such-image"),
    ("no such container", "no-such-container"),
    ("no such volume", "no-such-volume"),
    ("invalid container name", "invalid-name"),
    ("is already in use by container", "name-in-use"),
    ("is using its referenced image", "image-in-use"),
    ("image is being used by", "image-in-use"),
    ("volume is in use", "volume-in-use"),
    ("is not directory", "volume-on-non-directory"),
    ("not a directory", "volume-on-non-directory"),
    ("too many links", "volume-on-symlink-loop"),
)
"""What the engine says (lower case, anywhere in its message), and the kind of
refusal it means (spec STORE-12), first match first. As Docker 20.10 words them."""


def refusal_kind(message: str) -> str:
    """The kind of refusal an engine's message says; ``other`` when it is none the spec names [STORE-12]."""
    text = message.lower()
    return next((kind for words, kind in REFUSALS if words in text), "other")


def _done(result: object) -> Entry:
    returncode = getattr(result, "returncode", 1)
    if returncode == 0:
        return encode_step_result(DONE)
    message = getattr(result, "stderr", b"")
    if not isinstance(message, bytes):
        message = b""
    return encode_step_result(Refusal(refusal_kind(message.decode("utf-8", "replace")), first_line(message)))


def helper_directory(docker: Dockerd) -> str:
    """A directory holding ``cowspec-call``, built for this engine's lifetime (removed with it)."""
    directory = os.path.join(docker.base, "helper")
    if os.path.exists(os.path.join(directory, "cowspec-call")):
        return directory
    compiler = shutil.which("gcc")
    if compiler is None:
        raise DriverUnavailable(
            "renames and links in volumes need gcc and a static C library (apt-get install gcc libc6-dev)"
        )
    if not os.path.exists(HELPER_SOURCE):
        raise DriverUnavailable(f"the helper's source {HELPER_SOURCE} is missing from this installation")
    os.makedirs(directory, exist_ok=True)
    program = os.path.join(directory, "cowspec-call")
    built = run([compiler, "-static", "-O2", "-o", program + ".new", HELPER_SOURCE])
    if built.returncode != 0:
        raise DriverUnavailable(f"cannot build the static helper cowspec-call: {first_line(built.stderr)}")
    os.rename(program + ".new", program)
    return directory


def perform_step(docker: Dockerd, step: Step) -> Entry:
    match step:
        case LoadImage():
            archives = [encode_layer(layer_tar_of(build_layer(entries, "layer"))) for entries in step.layers]
            rows = [(row.created_by, row.empty_layer) for row in step.history]
            return _done(docker.docker("load", stdin=docker_archive(archives, step.name, rows)))
        case CreateContainer():
            mounts = [argument for path, volume in step.volumes for argument in ("--volume", f"{volume}:{path}")]
            command = ["/none"]
            if step.volumes:
                # A container that can run, for its renames and links (STORE-11).
                helper = f"type=bind,source={helper_directory(docker)},target={HELPER_MOUNT},readonly"
                mounts += ["--mount", helper, "--entrypoint", HELPER]
                command = ["wait"]
            created = docker.docker(
                "create", "--name", step.container, "--network", "none", "--pull", "never",
                *mounts, step.image, *command,
            )  # fmt: skip
            return _done(created)
        case CreateVolume():
            return _done(docker.docker("volume", "create", step.name))
        case RemoveVolume():
            return _done(docker.docker("volume", "rm", step.name))
        case RunOps():
            return run_ops(docker, step)
        case Commit():
            return _done(docker.docker("commit", step.container, step.name))
        case RemoveContainer():
            return _done(docker.docker("rm", step.container))
        case RemoveImage():
            return _done(docker.docker("rmi", step.name))
        case Build():
            return build(docker, step)
        case Diff():
            return docker_diff(docker, step.container)


def docker_diff(docker: Dockerd, container: str) -> Entry:
    """``docker diff``: each change's kind (``A``, ``C``, ``D``) and path, sorted by path [DRIVER-2]."""
    listed = docker.docker("diff", container)
    if listed.returncode != 0:
        return _done(listed)
    changes = sorted(
        (line.split(" ", 1) for line in listed.stdout.decode("utf-8", "surrogateescape").splitlines() if line),
        key=lambda pair: pair[1],
    )
    return {"ok": True, "changes": [{"kind": kind, "path": path} for kind, path in changes]}


INIT_PATHS = tuple(path for path, _kind, _size in INIT_ENTRIES)
"""What Docker's init layer makes where the image has nothing (moby ``daemon/initlayer``), parents first:
the model's list (``cowspec.store.disk.INIT_ENTRIES``), whose disk figures count the same entries [STORE-13]."""


def layerdb(docker: Dockerd) -> str:
    """The engine's layer database, under the storage driver's name (as the host reaches it)."""
    return docker.host_path(os.path.join(docker.data_root, "image", docker.storage_driver, "layerdb"))


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def snapshot_directory(docker: Dockerd, cache_id: str) -> str:
    """Where a vfs or btrfs layer's full tree is, by its cache ID (as the host reaches it)."""
    parts = ("vfs", "dir") if docker.storage_driver == "vfs" else ("btrfs", "subvolumes")
    return docker.host_path(os.path.join(docker.data_root, *parts, cache_id))


def container_directories(docker: Dockerd, container_id: str) -> tuple[str, str]:
    """A vfs or btrfs container's own directory and its image's (the init layer's parent), as the host reaches them."""
    mounts = os.path.join(layerdb(docker), "mounts", container_id)
    own = snapshot_directory(docker, _read(os.path.join(mounts, "mount-id")))
    parent_file = os.path.join(mounts, "parent")
    if not os.path.exists(parent_file):
        return own, ""
    chain = _read(parent_file).split(":", 1)[-1]
    image = snapshot_directory(docker, _read(os.path.join(layerdb(docker), "sha256", chain, "cache-id")))
    return own, image


def real_directory(root: str, path: str) -> bool:
    """True if ``path`` of a tree rooted at ``root`` is a directory reached through directories alone.

    Each name on the way is ``lstat``-ed in turn, so no symlink is followed:
    then ``root + path`` names that very directory, inside the tree. A
    container's ops may have made any name of a path a symlink (to ``/``,
    say), which the host would follow out of the tree.
    """
    current = root
    for name in (part for part in path.split("/") if part):
        current = os.path.join(current, name)
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        except OSError:
            return False
    return True


def entry_at(root: str, path: str) -> bool:
    """True if ``path`` names an entry of the tree at ``root``, every directory above it real (``real_directory``)."""
    return real_directory(root, parent_of(path)) and os.path.lexists(root + path)


class DirectorySession:
    """Ops in a vfs or btrfs container's own directory, Docker's init layer moved aside meanwhile [STORE-13].

    On vfs and btrfs the container's directory is a copy of its init layer
    (moby ``layerStore.CreateRWLayer``: the init layer ``<id>-init`` is made
    on the image, ``initlayer.Setup`` fills it, and the container's layer is
    ``CreateReadWrite(id, initID)``: vfs copies it, btrfs snapshots it), so
    the init entries are plain entries there, which a process in the
    container would see and carry along. The model leaves them out of ops,
    so they are moved aside for the ops: an entry only where the image has
    nothing at its path (the init layer made it); a directory moved takes
    what is under it.

    ``close`` puts each back where it was, through real directories only
    (``entry_at``: never through a symlink the ops made, which would lead out
    of the container). The ops cannot have made those paths, since the
    model's container does not have them either; a path they made there, or
    a directory holding init entries that they removed or replaced (Docker
    would have carried the entries along with it, to where the harness
    cannot tell), is a ``DriverError`` in one line, after the rest is put
    back and the aside removed.
    """

    def __init__(self, own: str, image: str, aside: str) -> None:
        self.own = own
        self.aside = aside
        self.moved: list[str] = []
        self.times: dict[str, tuple[int, int]] = {}
        os.makedirs(aside)
        try:
            for path in INIT_PATHS:
                if any(is_inside(path, done) for done in self.moved):
                    continue
                if entry_at(own, path) and not (image and entry_at(image, path)):
                    self._remember_times(path)
                    os.makedirs(os.path.dirname(aside + path), exist_ok=True)
                    shutil.move(own + path, aside + path)
                    self.moved.append(path)
            self.session = KernelSession.in_directory(own)
        except BaseException:
            with contextlib.suppress(DriverError, OSError):
                self._put_back()
            raise

    def perform(self, op: Op) -> Entry:
        return self.session.perform(op)

    def close(self) -> None:
        try:
            self.session.close()
        finally:
            self._put_back()

    def _remember_times(self, path: str) -> None:
        """The access and modification times of ``path``, of what is under it and of its parent, before it moves."""
        places = [path, parent_of(path)]
        top = self.own + path
        if os.path.isdir(top) and not os.path.islink(top):
            places += [
                path + os.path.join(folder, name)[len(top) :]
                for folder, dirs, files in os.walk(top)
                for name in dirs + files
            ]
        for place in places:
            info = os.lstat(self.own + place)
            self.times.setdefault(place, (info.st_atime_ns, info.st_mtime_ns))

    def _put_back(self) -> None:
        """Each moved entry where it was, with its times as they were; the aside removed, whatever happens.

        Across btrfs subvolumes a move is a copy (a new inode, a new modification
        time): Docker's diff, which compares modification times, would see the
        init layer's files changed. Deepest first, so that a directory's time is
        set after its entries are back.
        """
        made: list[str] = []
        homeless: list[str] = []
        try:
            for path in self.moved:
                if not real_directory(self.own, parent_of(path)):
                    homeless.append(path)
                elif os.path.lexists(self.own + path):
                    made.append(path)
                else:
                    shutil.move(self.aside + path, self.own + path)
            for place in sorted(self.times, key=lambda each: -each.count("/")):
                if place == ROOT or entry_at(self.own, place):
                    os.utime(self.own + place, ns=self.times[place], follow_symlinks=False)
        finally:
            self.moved = []
            self.times = {}
            remove_tree(self.aside)
        if made:
            raise DriverError(f"an op made {', '.join(made)}, where Docker's init layer has an entry")
        if homeless:
            raise DriverError(
                f"the ops removed or replaced the directory holding {', '.join(homeless)} of Docker's init layer,"
                " which a container on this driver carries along; the harness cannot tell where (STORE-13)"
            )


Session = KernelSession | DirectorySession


def container_rootfs(docker: Dockerd, details: Entry) -> Session:
    """A session making ops on a stopped container's own storage, as its storage driver keeps it (see the module)."""
    if docker.storage_driver in ("vfs", "btrfs"):
        own, image = container_directories(docker, str(details["Id"]))
        aside = os.path.join(docker.host_path(docker.data_root), f"cowspec-aside-{details['Id']}")
        return DirectorySession(own, image, aside)
    data = cast(dict[str, str], cast(dict[str, object], details["GraphDriver"])["Data"])
    lowers = image_lowers(data["LowerDir"])
    if docker.storage_driver == "fuse-overlayfs":
        from cowcheck.drivers.fuse_overlay import FuseSession

        return FuseSession.attach(lowers, data["UpperDir"], data["WorkDir"])
    return KernelSession.attach(lowers, data["UpperDir"], data["WorkDir"])


def writable_directory(docker: Dockerd, details: Entry) -> str:
    """Where a container's own writes land (overlay: its upper directory; vfs, btrfs: its directory)."""
    if docker.storage_driver in ("vfs", "btrfs"):
        return container_directories(docker, str(details["Id"]))[0]
    return str(cast(dict[str, dict[str, str]], details["GraphDriver"])["Data"]["UpperDir"])


def run_ops(docker: Dockerd, step: RunOps) -> Entry:
    """Ops in a container: its own layers mounted as Docker mounts them, volumes as their directories.

    Each op goes where its path lives (STORE-9). In a container that mounts
    volumes, renames and links are made by the running container itself,
    consecutive ones in one start (STORE-11).
    """
    inspected = docker.docker("container", "inspect", "--format", "{{json .}}", step.container)
    if inspected.returncode != 0:
        return _done(inspected)
    details = json.loads(inspected.stdout)
    volumes = [mount for mount in details.get("Mounts") or [] if mount.get("Type") == "volume"]
    record = ContainerRecord(
        step.container, "", new_container(()), tuple((mount["Destination"], mount["Name"]) for mount in volumes)
    )
    sources = {mount["Destination"]: docker.host_path(mount["Source"]) for mount in volumes}
    sessions: dict[str | None, Session] = {}
    try:
        results: list[Entry] = []
        for by_engine, group in itertools.groupby(
            step.ops, key=lambda op: bool(volumes) and isinstance(op, Rename | Link)
        ):
            if by_engine:
                rootfs = sessions.pop(None, None)
                if rootfs is not None:
                    rootfs.close()  # Docker mounts these layers itself to start the container
                calls = [op for op in group if isinstance(op, Rename | Link)]
                results += engine_calls(docker, step.container, writable_directory(docker, details), sources, calls)
                continue
            for op in group:
                where = routed(record, op)
                if where is None:
                    raise DriverError(f"{step.container}: {op} spans two places with no volume mounted")
                volume, inner = where
                if volume not in sessions:
                    if volume is None:
                        sessions[None] = container_rootfs(docker, details)
                    else:
                        place = next(mount["Source"] for mount in volumes if mount.get("Name") == volume)
                        sessions[volume] = KernelSession.in_directory(docker.host_path(place))
                results.append(sessions[volume].perform(inner))
        return {"ok": True, "results": results}
    finally:
        for session in sessions.values():
            session.close()


def image_lowers(lower_dir: str) -> list[str]:
    """A container's lower directories without Docker's init layer, which the store level leaves out [STORE-13].

    overlay2 puts a layer of its own (``<id>-init``: ``/.dockerenv``, ``/dev``,
    ``/etc/hosts``, ``/proc``, ``/sys`` and a few more) between the image and
    the writable layer; ops are made on the image's layers and the writable
    layer, as the model holds them.
    """
    return [each for each in lower_dir.split(":") if not os.path.dirname(each).endswith("-init")]


def mount_point_places(upper: str, sources: dict[str, str]) -> list[str]:
    """Where starting a container may make directories, deepest first.

    Docker makes each volume's path and the directories above it that are
    missing, in the writable layer or in the volume mounted above it. The
    model's container never ran, so they are removed again after the calls.
    """
    places: set[str] = set()
    for destination in sources:
        path = destination
        while path != ROOT:
            outer = [mount for mount in sources if is_inside(path, mount)]
            if outer:
                mount = max(outer, key=len)
                places.add(sources[mount] + path[len(mount) :])
            else:
                places.add(upper + path)
            path = parent_of(path)
    return sorted(places, key=lambda place: (-place.count("/"), place))


def engine_calls(
    docker: Dockerd, container: str, upper: str, sources: dict[str, str], calls: list[Rename | Link]
) -> list[Entry]:
    """Renames and links made by the running container itself, each call's outcome [STORE-11]."""
    places = mount_point_places(upper, sources)
    missing = [place for place in places if not os.path.lexists(place)]
    started = docker.docker("start", container)
    if started.returncode != 0:
        raise DriverError(f"cannot start {container} for its renames and links: {first_line(started.stderr)}")
    try:
        arguments = [word for call in calls for word in (type(call).__name__.lower(), call.src, call.dst)]
        done = docker.docker("exec", container, HELPER, *arguments)
    finally:
        stopped = docker.docker("stop", "--time", "10", container)
        for place in missing:
            if os.path.isdir(place) and not os.path.islink(place) and not os.listdir(place):
                os.rmdir(place)
    if stopped.returncode != 0:
        raise DriverError(f"cannot stop {container}: {first_line(stopped.stderr)}")
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    if done.returncode != 0 or len(lines) != len(calls):
        raise DriverError(f"cowspec-call in {container} answered {len(lines)} of {len(calls)} calls: "
                          f"{first_line(done.stderr)}")  # fmt: skip
    return [_call_outcome(line) for line in lines]


def _call_outcome(line: str) -> Entry:
    """``ok``, or the errno a line of cowspec-call names by number, named as the kernel driver names it."""
    if line == "ok":
        return {"ok": True}
    words = line.split()
    if len(words) != 2 or not words[1].isdigit():
        raise DriverError(f"cowspec-call printed {line!r}")
    number = int(words[1])
    return {"errno": errno.errorcode.get(number, f"E{number}")}


def _docker_build(docker: Dockerd, base: str, lines: list[str], context: str) -> str | Entry:
    """Run the legacy builder on a Dockerfile; the new image's ID, or a failed step."""
    with open(os.path.join(context, "Dockerfile"), "w") as handle:
        handle.write("\n".join([f"FROM {base}", *lines]) + "\n")
    with open(os.path.join(context, ".dockerignore"), "w") as handle:
        handle.write("Dockerfile\n.dockerignore\n")
    built = run(docker.docker_command("build", "-q", context), env={**os.environ, "DOCKER_BUILDKIT": "0"})
    if built.returncode != 0:
        return _done(built)
    return built.stdout.decode().strip().splitlines()[-1]


def _write_context(context: str, instruction: Instruction) -> None:
    """A ``COPY``'s entries as a build context, every one of them (and the directories made for them) with
    modification time 0, as the image layers cowspec loads have them.

    ``COPY`` keeps a context file's modification time in the layer it makes:
    two copies of the same entries written a moment apart would otherwise be
    two different layers, where the model, which has no clock for files,
    has one [STORE-8].
    """
    for entry in sorted(instruction.entries, key=lambda each: each.path.count("/")):
        real = context + entry.path
        os.makedirs(os.path.dirname(real), exist_ok=True)
        if entry.type == "dir":
            os.makedirs(real, exist_ok=True)
            os.chmod(real, entry.mode)
        elif entry.type == "file":
            with open(real, "wb") as handle:
                handle.write(entry.data)
            os.chmod(real, entry.mode)
        else:
            os.symlink(entry.target, real)
    for folder, directories, names in os.walk(context, topdown=False):
        for name in names + directories:
            os.utime(os.path.join(folder, name), ns=(0, 0), follow_symlinks=False)
    os.utime(context, ns=(0, 0))


_RUN_CACHE: dict[tuple[str, str, str], str] = {}
"""The image each ``RUN`` of a build made: (engine, parent image, ops) to image ID, the builder's cache [STORE-8]."""


def build(docker: Dockerd, step: Build) -> Entry:
    """A build, one instruction at a time, as the legacy builder does it [STORE-8].

    ``COPY`` and the metadata instructions go through ``docker build``;
    ``RUN`` is a container of the image so far, whose ops are made as in an
    ``ops`` step, then committed (the images have no shell to run). The
    legacy builder answers a ``RUN`` it made before on the same image from
    its cache, the very image it made then; so does this, while that image
    is still in the engine (``_RUN_CACHE``). Only the last image is tagged.
    """
    # Asked first, so that a missing base is the engine's "No such image", not a pull attempt.
    base = docker.docker("image", "inspect", "--format", "{{.Id}}", step.base)
    if base.returncode != 0:
        return _done(base)
    current = step.base
    for number, instruction in enumerate(step.instructions):
        if instruction.command == "RUN":
            parent = docker.docker("image", "inspect", "--format", "{{.Id}}", current)
            if parent.returncode != 0:
                return _done(parent)
            key = (docker.base, parent.stdout.decode().strip(), repr(instruction.ops))
            cached = _RUN_CACHE.get(key)
            if cached is not None and docker.docker("image", "inspect", "--format", "{{.Id}}", cached).returncode == 0:
                current = cached
                continue
            name = f"cowspec-build-{os.getpid()}-{number}"
            created = docker.docker("create", "--name", name, "--network", "none", current, "/none")
            if created.returncode != 0:
                return _done(created)
            try:
                done = perform_step(docker, RunOps(name, instruction.ops))
                if not done.get("ok"):
                    return done
                committed = docker.docker("commit", name)
                if committed.returncode != 0:
                    return _done(committed)
                current = committed.stdout.decode().strip()
                _RUN_CACHE[key] = current
            finally:
                docker.docker("rm", name)
            continue
        # In the engine's directory, so that a killed run's context goes with the engine's leftovers.
        context = tempfile.mkdtemp(prefix="context-", dir=docker.base)
        try:
            if instruction.command in METADATA:
                line = f"{instruction.command} {instruction.text or 'cowspec'}"
                if instruction.command in ("ENV", "LABEL") and "=" not in instruction.text:
                    line = f"{instruction.command} cowspec={instruction.text or 'x'}"
            else:
                _write_context(context, instruction)
                line = "COPY . /"
            image = _docker_build(docker, current, [line], context)
        finally:
            with contextlib.suppress(OSError):
                remove_tree(context)
        if isinstance(image, dict):
            return image
        current = image
    return _done(docker.docker("tag", current, step.name))


def docker_cli_reclaimable(df: dict[str, Any]) -> int:
    """The images row's reclaimable bytes, as Docker's CLI works it out [STORE-4].

    From the engine's own ``/system/df`` numbers and nothing of the model's
    (docker/cli ``diskUsageImagesContext.Reclaimable``): ``LayersSize``
    less ``Size - SharedSize`` of each image whose ``Containers`` is not 0,
    skipping an image whose ``Size`` or ``SharedSize`` is -1 (unknown).
    """
    in_use: int = sum(
        image["Size"] - image["SharedSize"]
        for image in df["Images"] or []
        if image["Containers"] != 0 and image["Size"] != -1 and image["SharedSize"] != -1
    )
    total: int = df["LayersSize"]
    return total - in_use


class TreeBytes(NamedTuple):
    """The bytes of a directory tree, both ways ``tree_bytes`` counts them [DRIVER-7]."""

    apparent: int
    """``du --apparent-size --bytes -s``: every inode's ``st_size`` once, directories (the top included) too."""
    allocated: int
    """``st_blocks`` x 512 of every non-directory, each inode once: the blocks its data takes."""


def tree_bytes(top: str) -> TreeBytes:
    """The apparent and allocated bytes under ``top``, in one walk (``TreeBytes``).

    Apparent: a regular file counts its length, a symlink its target's, a
    whiteout (a character device) 0, a directory its ``st_size`` (the
    backing filesystem's: 4096 on ext4, on btrfs twice its names' lengths).
    Allocated: a non-directory's blocks; a directory's are the backing
    filesystem's, not counted. A hardlinked inode counts once in both. No
    symlink is followed (``os.walk`` would list one that points to a
    directory among the directories): a symlink counts its own size and blocks.
    """
    seen: set[tuple[int, int]] = set()
    apparent, allocated = os.lstat(top).st_size, 0
    pending = [top]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                info = entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    apparent += info.st_size
                elif (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    apparent += info.st_size
                    allocated += info.st_blocks * 512
    return TreeBytes(apparent, allocated)


def btrfs_sync(docker: Dockerd) -> None:
    """Write out what btrfs holds in memory, so that every extent and inline block is counted where it will be."""
    from cowcheck.drivers.loopfs import program

    synced = run([program("btrfs"), "filesystem", "sync", docker.host_path(docker.data_root)])
    if synced.returncode != 0:
        raise DriverError(f"btrfs filesystem sync: {first_line(synced.stderr)}")


def btrfs_exclusive(docker: Dockerd, path: str) -> int:
    """The bytes of data extents only ``path`` (a subvolume) refers to: ``btrfs filesystem du``'s Exclusive column.

    The filesystem must have been synced (``btrfs_sync``): data not yet written has no extent.
    """
    from cowcheck.drivers.loopfs import program

    done = run([program("btrfs"), "filesystem", "du", "-s", "--raw", path])
    lines = done.stdout.decode().split("\n")
    if done.returncode != 0 or len(lines) < 2 or len(lines[1].split()) < 4:
        raise DriverError(f"btrfs filesystem du {path}: {first_line(done.stderr)}")
    return int(lines[1].split()[1])


def own_directory(docker: Dockerd, cache_id: str) -> str:
    """A layer's or container's own directory [DRIVER-7]: the overlay drivers' ``diff``; vfs, btrfs's full tree."""
    if docker.storage_driver in ("vfs", "btrfs"):
        return snapshot_directory(docker, cache_id)
    return docker.host_path(os.path.join(docker.data_root, docker.storage_driver, cache_id, "diff"))


def directory_size(parent: str) -> int:
    """``st_size`` of a new empty directory made in ``parent``: what the backing filesystem gives one [DRIVER-7]."""
    probe = tempfile.mkdtemp(prefix="cowspec-probe-", dir=parent)
    try:
        return os.lstat(probe).st_size
    finally:
        os.rmdir(probe)


def block_size(parent: str) -> int:
    """The block a file's data takes on the filesystem of ``parent`` (``statvfs``'s fragment size) [DRIVER-7]."""
    return os.statvfs(parent).f_frsize


def disk_usage(docker: Dockerd) -> Entry:
    """Bytes on disk [DRIVER-7]: each container's writable layer by name, and every stored layer together.

    A container's figures are of its own directory (``own_directory``):
    ``apparent`` and ``allocated`` (``tree_bytes``), ``exclusive`` (the
    apparent bytes, but on btrfs ``btrfs_exclusive`` of its subvolume, which
    shares with its image every extent it did not rewrite).
    ``layers``: the ``allocated`` bytes of every image layer's own directory,
    summed (commits' DiffIDs are the engine's own, so the sum is what the
    model can name).
    """
    if docker.storage_driver == "btrfs":
        btrfs_sync(docker)
    database = layerdb(docker)
    containers: dict[str, Entry] = {}
    listed = engine_api(docker, "/containers/json?all=1")
    assert isinstance(listed, list)
    for each in listed:
        where = own_directory(docker, _read(os.path.join(database, "mounts", each["Id"], "mount-id")))
        measured = tree_bytes(where)
        exclusive = btrfs_exclusive(docker, where) if docker.storage_driver == "btrfs" else measured.apparent
        containers[each["Names"][0].lstrip("/")] = {
            "apparent": measured.apparent,
            "exclusive": exclusive,
            "allocated": measured.allocated,
        }
    return {
        "containers": dict(sorted(containers.items())),
        "layers": {"allocated": sum(layer_disk_usage(docker).values())},
    }


def layer_disk_usage(docker: Dockerd) -> dict[str, int]:
    """Each stored layer's allocated bytes (``tree_bytes``) of its own directory, by ChainID (two layers of the same
    content on different parents are two)."""
    database = os.path.join(layerdb(docker), "sha256")
    return {
        chain: tree_bytes(own_directory(docker, _read(os.path.join(database, chain, "cache-id")))).allocated
        for chain in (sorted(os.listdir(database)) if os.path.isdir(database) else [])
    }


def figures(docker: Dockerd, items: list[Entry]) -> Entry:
    layers = os.path.join(layerdb(docker), "sha256")
    df = engine_api(docker, "/system/df")
    assert isinstance(df, dict)
    images: dict[str, Entry] = {}
    for image in df["Images"] or []:
        for tag in image.get("RepoTags") or []:
            if "<none>" in tag:
                continue
            rows = engine_api(docker, f"/images/{tag}/history")
            assert isinstance(rows, list)
            images[tag] = {
                "size": image["Size"],
                "history": [row["Size"] for row in rows],
                "shared_size": image["SharedSize"],
                "containers": image["Containers"],
            }
    listed = engine_api(docker, "/containers/json?all=1&size=1")
    assert isinstance(listed, list)
    containers = {
        each["Names"][0].lstrip("/"): {"size": each.get("SizeRw", 0), "virtual_size": each.get("SizeRootFs", 0)}
        for each in listed
    }
    driver: Entry = {} if docker.storage_driver == DEFAULT_STORAGE_DRIVER else {"storage_driver": docker.storage_driver}
    return {
        "format": STORE_RESULT_FORMAT,
        **driver,
        "steps": items,
        "layers": len(os.listdir(layers)) if os.path.isdir(layers) else 0,
        "images": dict(sorted(images.items())),
        "containers": dict(sorted(containers.items())),
        "images_total": df["LayersSize"],
        "reclaimable": docker_cli_reclaimable(df),
        "volumes": {
            volume["Name"]: {"size": volume["UsageData"]["Size"], "containers": volume["UsageData"]["RefCount"]}
            for volume in sorted(df.get("Volumes") or [], key=lambda each: each["Name"])
        },
        "disk": disk_usage(docker),
    }


def run_store_docker(steps: tuple[Step, ...], storage_driver: str = DEFAULT_STORAGE_DRIVER) -> Entry:
    """The result a private Docker engine running ``storage_driver`` gives for a store trace [STORE-5]."""
    with Dockerd(storage_driver) as docker:
        items = [perform_step(docker, each) for each in steps]
        return figures(docker, items)


class DockerStore:
    """A private Docker engine as a store driver: one engine per trace, stopped after it.

    ``storage_driver`` is the engine's graphdriver: the one this class fixes
    (``docker-vfs``...), else the one the run names (``run``'s argument: the
    trace's ``storage_driver``, or ``--storage-driver``), else ``overlay2``.
    """

    name = "docker"
    storage_driver: str | None = None

    def run(self, steps: tuple[Step, ...], storage_driver: str | None = None) -> Entry:
        return run_store_docker(
            steps, chosen_storage_driver([(self.name, self.storage_driver), ("the run", storage_driver)])
        )


def chosen_storage_driver(named: Sequence[tuple[str, str | None]]) -> str:
    """The storage driver a run uses, from the places that may name one (``(where, name)``, first first; a name of
    None names nothing): the one they name, else ``overlay2``.

    Two places naming different drivers, or a name that is not one of
    ``STORAGE_DRIVERS``, is a ``DriverError`` in one line (the command line
    says it as a usage error: ``cli.store_check.chosen_storage_driver``).
    """
    given = [(where, name) for where, name in named if name is not None]
    for where, name in given[1:]:
        if name != given[0][1]:
            raise DriverError(f"{where} names storage driver {name}, but {given[0][0]} names {given[0][1]}")
    chosen = given[0][1] if given else DEFAULT_STORAGE_DRIVER
    if chosen not in STORAGE_DRIVERS:
        raise DriverError(f"storage driver {chosen}: unknown (known: {', '.join(STORAGE_DRIVERS)})")
    return chosen


class DockerVfsStore(DockerStore):
    """``docker-vfs``: a private engine with the vfs storage driver (every layer a full copy)."""

    name = "docker-vfs"
    storage_driver = "vfs"


class DockerBtrfsStore(DockerStore):
    """``docker-btrfs``: a private engine with the btrfs storage driver, on a loop filesystem of its own."""

    name = "docker-btrfs"
    storage_driver = "btrfs"


class DockerFuseOverlayStore(DockerStore):
    """``docker-fuse-overlayfs``: a private engine with Docker 20.10's fuse-overlayfs storage driver."""

    name = "docker-fuse-overlayfs"
    storage_driver = "fuse-overlayfs"
