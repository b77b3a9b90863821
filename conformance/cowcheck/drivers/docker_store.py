"""Store traces on a real Docker engine: images, containers and every figure.

Each step is done the way Docker does it: images are loaded from ``docker
save`` tarballs, containers are created with ``docker create``, committed
with ``docker commit`` and removed with ``docker rm`` and ``docker rmi``.
Filesystem ops inside a container are made on the container's own layers
(the directories ``docker inspect`` names), mounted as Docker mounts them in
cowspec's private mount namespace while the container is not running, by a
process chrooted into them: the same system calls as the kernel driver's.

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
import tempfile
from typing import Any

from cowcheck.drivers.cleanup import remove_tree
from cowcheck.drivers.engines import Dockerd, engine_api, first_line, run
from cowcheck.drivers.kernel_overlay import KernelSession
from cowcheck.drivers.protocol import DriverError, DriverUnavailable
from cowcheck.images import docker_archive
from cowspec.formats.store_trace import STORE_RESULT_FORMAT, encode_step_result
from cowspec.fs.build import build_layer
from cowspec.fs.calls import Link, Rename
from cowspec.fs.observe import Entry
from cowspec.fs.paths import ROOT, is_inside, parent_of
from cowspec.fs.stack import new_container
from cowspec.oci.commit import layer_tar_of
from cowspec.oci.layer_tar import encode_layer
from cowspec.store.state import ContainerRecord, routed
from cowspec.store.steps import (
    DONE,
    METADATA,
    Build,
    Commit,
    CreateContainer,
    CreateVolume,
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
    data = details["GraphDriver"]["Data"]
    volumes = [mount for mount in details.get("Mounts") or [] if mount.get("Type") == "volume"]
    record = ContainerRecord(
        step.container, "", new_container(()), tuple((mount["Destination"], mount["Name"]) for mount in volumes)
    )
    sources = {mount["Destination"]: mount["Source"] for mount in volumes}
    sessions: dict[str | None, KernelSession] = {}
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
                results += engine_calls(docker, step.container, data["UpperDir"], sources, calls)
                continue
            for op in group:
                where = routed(record, op)
                if where is None:
                    raise DriverError(f"{step.container}: {op} spans two places with no volume mounted")
                volume, inner = where
                if volume not in sessions:
                    if volume is None:
                        sessions[None] = KernelSession.attach(
                            image_lowers(data["LowerDir"]), data["UpperDir"], data["WorkDir"]
                        )
                    else:
                        place = next(mount["Source"] for mount in volumes if mount.get("Name") == volume)
                        sessions[volume] = KernelSession.in_directory(place)
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


def build(docker: Dockerd, step: Build) -> Entry:
    """A build, one instruction at a time, as the legacy builder does it [STORE-8].

    ``COPY`` and the metadata instructions go through ``docker build``;
    ``RUN`` is a container of the image so far, whose ops are made as in an
    ``ops`` step, then committed. Only the last image is tagged.
    """
    # Asked first, so that a missing base is the engine's "No such image", not a pull attempt.
    base = docker.docker("image", "inspect", "--format", "{{.Id}}", step.base)
    if base.returncode != 0:
        return _done(base)
    current = step.base
    for number, instruction in enumerate(step.instructions):
        if instruction.command == "RUN":
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


def figures(docker: Dockerd, items: list[Entry]) -> Entry:
    layerdb = os.path.join(docker.base, "root", "image", "overlay2", "layerdb", "sha256")
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
    return {
        "format": STORE_RESULT_FORMAT,
        "steps": items,
        "layers": len(os.listdir(layerdb)) if os.path.isdir(layerdb) else 0,
        "images": dict(sorted(images.items())),
        "containers": dict(sorted(containers.items())),
        "images_total": df["LayersSize"],
        "reclaimable": docker_cli_reclaimable(df),
        "volumes": {
            volume["Name"]: {"size": volume["UsageData"]["Size"], "containers": volume["UsageData"]["RefCount"]}
            for volume in sorted(df.get("Volumes") or [], key=lambda each: each["Name"])
        },
    }


def run_store_docker(steps: tuple[Step, ...]) -> Entry:
    """The result a private Docker engine gives for a store trace [STORE-5]."""
    with Dockerd() as docker:
        items = [perform_step(docker, each) for each in steps]
        return figures(docker, items)


class DockerStore:
    """A private Docker engine as a store driver: one engine per trace, stopped after it."""

    name = "docker"

    def run(self, steps: tuple[Step, ...]) -> Entry:
        return run_store_docker(steps)
