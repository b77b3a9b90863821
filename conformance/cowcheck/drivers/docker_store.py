"""Store traces on a real Docker engine: images, containers and every figure.

Each step is done the way Docker does it: images are loaded from ``docker
save`` tarballs, containers are created with ``docker create``, committed
with ``docker commit`` and removed with ``docker rm`` and ``docker rmi``.
Filesystem ops inside a container are made on the container's own layers
(the directories ``docker inspect`` names), mounted as Docker mounts them in
cowspec's private mount namespace while the container is not running, by a
process chrooted into them: the same system calls as the kernel driver's.
The figures are read in bytes from the Engine API.
"""

import json
import os
import shutil
import subprocess
import tempfile
from typing import Any

from cowcheck.drivers.engines import Dockerd, engine_api, first_line
from cowcheck.drivers.kernel_overlay import KernelSession
from cowcheck.images import docker_archive
from cowspec.formats.store_trace import (
    METADATA,
    STORE_RESULT_FORMAT,
    Build,
    Commit,
    CreateContainer,
    CreateVolume,
    Instruction,
    LoadImage,
    RemoveContainer,
    RemoveImage,
    RemoveVolume,
    RunOps,
    Step,
    routed,
)  # fmt: skip
from cowspec.fs.build import build_layer
from cowspec.fs.observe import Entry
from cowspec.fs.stack import new_container
from cowspec.oci.commit import layer_tar_of
from cowspec.oci.layer_tar import encode_layer
from cowspec.store.state import ContainerRecord


def _done(result: object) -> Entry:
    returncode = getattr(result, "returncode", 1)
    if returncode == 0:
        return {"ok": True}
    return {"ok": False, "reason": first_line(getattr(result, "stderr", b""))}


def perform_step(docker: Dockerd, step: Step) -> Entry:
    match step:
        case LoadImage():
            archives = [encode_layer(layer_tar_of(build_layer(entries, "layer"))) for entries in step.layers]
            rows = [(row.created_by, row.empty_layer) for row in step.history]
            return _done(docker.docker("load", stdin=docker_archive(archives, step.name, rows)))
        case CreateContainer():
            mounts = [argument for path, volume in step.volumes for argument in ("--volume", f"{volume}:{path}")]
            created = docker.docker(
                "create", "--name", step.container, "--network", "none", *mounts, step.image, "/none"
            )
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

    Each op goes where the model says its path lives (STORE-9); one that
    spans two places is EXDEV without being made.
    """
    inspected = docker.docker("inspect", "--format", "{{json .}}", step.container)
    if inspected.returncode != 0:
        return _done(inspected)
    details = json.loads(inspected.stdout)
    data = details["GraphDriver"]["Data"]
    mounts = tuple(
        (mount["Destination"], mount["Name"]) for mount in details.get("Mounts") or [] if mount.get("Type") == "volume"
    )
    record = ContainerRecord(step.container, "", new_container(()), mounts)
    sessions: dict[str | None, KernelSession] = {}
    try:
        results: list[Entry] = []
        for op in step.ops:
            where = routed(record, op)
            if where is None:
                results.append({"errno": "EXDEV"})
                continue
            volume, inner = where
            if volume not in sessions:
                if volume is None:
                    sessions[None] = KernelSession.attach(
                        data["LowerDir"].split(":"), data["UpperDir"], data["WorkDir"]
                    )
                else:
                    place = next(m["Source"] for m in details["Mounts"] if m.get("Name") == volume)
                    sessions[volume] = KernelSession.in_directory(place)
            results.append(sessions[volume].perform(inner))
        return {"ok": True, "results": results}
    finally:
        for session in sessions.values():
            session.close()


def _docker_build(docker: Dockerd, base: str, lines: list[str], context: str) -> str | Entry:
    """Run the legacy builder on a Dockerfile; the new image's ID, or a failed step."""
    with open(os.path.join(context, "Dockerfile"), "w") as handle:
        handle.write("\n".join([f"FROM {base}", *lines]) + "\n")
    with open(os.path.join(context, ".dockerignore"), "w") as handle:
        handle.write("Dockerfile\n.dockerignore\n")
    built = subprocess.run(
        docker.docker_command("build", "-q", context),
        env={**os.environ, "DOCKER_BUILDKIT": "0"}, capture_output=True, check=False,
    )  # fmt: skip
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
        context = tempfile.mkdtemp(prefix="cowspec-context-")
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
            shutil.rmtree(context, ignore_errors=True)
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
