"""The layer level against real tools: Docker, umoci and podman, started by the tests.

These tests start a private dockerd (its own data root, exec root and socket,
no networking, in its own mount namespace) and stop it by PID; podman runs
with private vfs storage. Without the tools they are skipped on a developer's
machine and fail in CI (``CI=true``).
"""

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowcheck.cli.main import main
from cowcheck.drivers.engines import Dockerd, Podman, need
from cowcheck.drivers.kernel_overlay import tree
from cowcheck.drivers.layer_tools import (
    DOCKER_INIT,
    DockerLayers,
    PodmanLayers,
    Spec,
    UmociLayers,
    export_entries,
)
from cowcheck.drivers.protocol import DriverUnavailable, LayerDriver
from cowcheck.images import read_image, write_oci_layout
from cowcheck.matrix import CASES, run_matrix
from cowspec.oci.apply import flatten, rootfs_entries
from cowspec.oci.layer_tar import LayerTar, TarEntry, encode_layer


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"engine tests cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def docker() -> Iterator[Dockerd]:
    try:
        with Dockerd() as engine:
            yield engine
    except DriverUnavailable as error:
        unavailable(str(error))


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    try:
        with Podman() as engine:
            yield engine
    except DriverUnavailable as error:
        unavailable(str(error))


def test_matrix_through_docker_umoci_and_podman(docker: Dockerd, podman: Podman) -> None:
    """[APPLY-2][APPLY-3][APPLY-5][TAR-3][TAR-6] Every case through every tool; the drivers work."""
    try:
        drivers: list[LayerDriver] = [DockerLayers(docker), UmociLayers(), PodmanLayers(podman)]
    except DriverUnavailable as error:
        unavailable(str(error))
    rows = {case.name: (expected, cells) for case, expected, cells in run_matrix(drivers, Spec())}
    assert len(rows) == len(CASES)
    # Where the spec is plain and old, every tool agrees: the drivers read real results.
    for name in (
        "opaque-marker-last",
        "opaque-marker-first",
        "directory-whiteout-then-recreate",
        "symlink-over-directory",
        "hardlinks-in-one-layer",
        "absolute-names",
    ):
        assert rows[name][1] == ["agrees"] * 3, (name, rows[name][1])
    # The known divergence of overlay-native apply (kaniko#1636's error): Docker refuses.
    assert "mknod" in rows["same-layer-entry-then-whiteout"][1][0]
    # Docker shows a layer's implied parents with default attributes, as overlay2 stores them.
    assert rows["implied-parent-attributes"][1][0].startswith("diverges")
    # An entry below a symlink of its own layer: Docker refuses it too (TAR-6).
    assert rows["entry-under-same-layer-symlink"][1][0] == "agrees (refused)"


SETUP = (
    "mkdir -p /data/keep /data/gone /data/swap /opt && echo one > /data/keep/a && echo two > /data/gone/b"
    " && ln /data/keep/a /data/keep/hard && ln -s keep/a /data/link && echo f > /data/swap/f && echo x > /data/file"
)
CHANGE = (
    "rm -rf /data/gone && rm /data/keep/hard && mkdir /data/gone && echo new > /data/gone/c && rm -rf /data/swap"
    " && ln -s /opt /data/swap && rm /data/file && mkdir /data/file && chmod 700 /data/keep && ln /data/keep/a /opt/a2"
)
DOCKERFILE = f"""\
FROM cowspec/busybox:1
RUN ["/bin/sh", "-c", "{SETUP}"]
RUN ["/bin/sh", "-c", "{CHANGE}"]
CMD ["/bin/sh"]
"""


def test_flatten_equals_docker_export_of_a_built_image(
    docker: Dockerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[APPLY-1][APPLY-2][APPLY-3][IDENTITY-1] ``docker save`` of a real build, flattened, is ``docker export``."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        unavailable("busybox-static is not installed")
    base = tmp_path / "base"
    (base / "bin").mkdir(parents=True)
    shutil.copy(busybox, base / "bin" / "busybox")
    (base / "bin" / "sh").symlink_to("busybox")
    for applet in ("mkdir", "echo", "ln", "rm", "chmod"):
        (base / "bin" / applet).symlink_to("busybox")
    with tarfile.open(tmp_path / "base.tar", "w") as tar:
        tar.add(base / "bin", arcname="bin")
    assert docker.docker("import", str(tmp_path / "base.tar"), "cowspec/busybox:1").returncode == 0
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    built = subprocess.run(
        docker.docker_command("build", "-t", "cowspec/built:1", str(context)),
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        capture_output=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr.decode()
    saved = tmp_path / "built.tar"
    assert docker.docker("save", "-o", str(saved), "cowspec/built:1").returncode == 0
    created = docker.docker("create", "cowspec/built:1")
    container = created.stdout.decode().strip()
    exported = docker.docker("export", container)
    docker.docker("rm", container)
    assert exported.returncode == 0
    theirs = [entry for entry in export_entries(exported.stdout) if entry["path"] not in DOCKER_INIT]
    ours = rootfs_entries(flatten([layer.layer for layer in read_image(str(saved))]))
    assert ours == theirs
    paths = {entry["path"]: entry for entry in ours}
    assert "/data/gone/b" not in paths and paths["/data/gone/c"]["type"] == "file"
    assert paths["/data/swap"]["type"] == "symlink" and paths["/data/file"]["type"] == "dir"
    assert paths["/data/keep"]["mode"] == 0o700 and paths["/opt/a2"]["nlink"] == 2
    # The CLI reads the same tarball.
    assert main(["layers", str(saved)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 3
    need("dockerd")


def test_umoci_repack_round_trip(tmp_path: Path) -> None:
    """[APPLY-1][APPLY-3][TAR-1] umoci unpack, change the rootfs, umoci repack: cowspec flatten gives the rootfs."""
    try:
        umoci = need("umoci")
    except DriverUnavailable as error:
        unavailable(str(error))
    layer = LayerTar(
        (
            TarEntry("/a", "dir", 0o755), TarEntry("/a/f", "file", data=b"1"), TarEntry("/a/g", "file", data=b"2"),
            TarEntry("/d", "dir", 0o755), TarEntry("/d/x", "file", data=b"x"), TarEntry("/h", "file", data=b"h"),
        )
    )  # fmt: skip
    image, bundle = tmp_path / "oci", tmp_path / "bundle"
    write_oci_layout(str(image), [encode_layer(layer)], tag="t")
    assert subprocess.run([umoci, "unpack", "--image", f"{image}:t", str(bundle)], check=False).returncode == 0
    rootfs = bundle / "rootfs"
    (rootfs / "a" / "f").unlink()
    shutil.rmtree(rootfs / "d")
    (rootfs / "d").symlink_to("a")
    (rootfs / "a" / "n").write_bytes(b"new\n")
    (rootfs / "a").chmod(0o700)
    os.link(rootfs / "h", rootfs / "a" / "h2")
    expected = tree(str(rootfs), upper=False)
    assert subprocess.run([umoci, "repack", "--image", f"{image}:t", str(bundle)], check=False).returncode == 0
    layers = read_image(str(image))
    assert len(layers) == 2 and "/a/f" in layers[1].layer.whiteouts
    assert rootfs_entries(flatten([each.layer for each in layers])) == expected


def test_a_dockerd_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A test killed before its ``with`` block ends leaves no daemon behind: dockerd gets SIGTERM and stops."""
    script = (
        "import os\n"
        "from cowcheck.drivers.engines import Dockerd\n"
        "from cowcheck.drivers.protocol import DriverUnavailable\n"
        "try:\n"
        "    engine = Dockerd().__enter__()\n"
        "except DriverUnavailable as error:\n"
        "    print('unavailable', error, flush=True)\n"
        "    os._exit(0)\n"
        "print(engine.process.pid, engine.base, flush=True)\n"
        "os._exit(0)  # as a killed test: no __exit__\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    words = done.stdout.split()
    if words[0] == "unavailable":
        unavailable(done.stdout.strip())
    pid, base = int(words[0]), words[1]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.2)
        assert not os.path.exists(f"/proc/{pid}"), f"dockerd {pid} outlived the process that started it"
    finally:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def losetup_fails(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Make ``losetup`` missing (``program`` raises), failing (``/bin/false``) or hanging (its run times out)."""
    import subprocess as processes

    from cowcheck.drivers import loopfs

    real = loopfs.program

    def program(name: str) -> str:
        if name != "losetup":
            return real(name)
        if how == "missing":
            raise DriverUnavailable("losetup is not installed (apt-get install btrfs-progs mount)")
        return "/bin/false"

    def hanging(command: list[str], **options: object) -> object:
        raise processes.TimeoutExpired(command, 30)

    monkeypatch.setattr(loopfs, "program", program)
    if how == "hanging":
        monkeypatch.setattr(processes, "run", hanging)


@pytest.mark.parametrize("how", ["missing", "failing", "hanging"])
def test_a_losetup_that_cannot_answer_is_not_no_device_left(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """``devices_backed_by`` says in one line that losetup failed; an empty answer would read as "none left"."""
    from cowcheck.drivers.loopfs import devices_backed_by
    from cowcheck.drivers.protocol import DriverError

    losetup_fails(monkeypatch, how)
    with pytest.raises((DriverError, DriverUnavailable), match="losetup") as raised:
        devices_backed_by("/nowhere/btrfs.img")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("how", ["missing", "failing", "hanging"])
@pytest.mark.parametrize("owner", ["engine", "loopfs"])
def test_an_engine_whose_loop_device_cannot_be_checked_still_removes_its_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str, owner: str
) -> None:
    """A btrfs engine's (or a ``LoopFilesystem``'s) exit with losetup missing, failing or hanging.

    Its directory goes whatever happens; the losetup failure is said in one
    line when nothing else went wrong, and does not hide the error of the
    ``with`` block when something did.
    """
    from cowcheck.drivers.cleanup import owned_directory
    from cowcheck.drivers.loopfs import LoopFilesystem
    from cowcheck.drivers.protocol import DriverError

    losetup_fails(monkeypatch, how)
    for first in (None, RuntimeError("the block's own error")):
        holder: Dockerd | LoopFilesystem
        if owner == "engine":
            holder = Dockerd.__new__(Dockerd)
            holder.storage_driver, holder.process, holder.init_pid = "btrfs", None, 0
        else:
            holder = LoopFilesystem()
        holder.base = owned_directory("cowspec-test-", str(tmp_path))
        holder.image = os.path.join(holder.base, "btrfs.img")
        Path(holder.image).write_bytes(b"")
        base = holder.base
        if first is None:
            with pytest.raises((DriverError, DriverUnavailable), match="losetup") as raised:
                holder.__exit__(None, None, None)
            assert "\n" not in str(raised.value)
        else:
            holder.__exit__(RuntimeError, first, None)  # returns: the block's error is the one raised
        assert not os.path.exists(base)
        assert holder.base == "" and holder.image == ""


@pytest.mark.kernel
def test_btrfs_needs_losetup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without losetup (which checks that no loop device is left) btrfs is unavailable, said before anything starts."""
    from cowcheck.drivers.engines import storage_driver_unavailable
    from cowcheck.drivers.loopfs import unavailable_reason

    if (reason := unavailable_reason()) is not None:
        unavailable(reason)
    losetup_fails(monkeypatch, "missing")
    assert storage_driver_unavailable("btrfs") == "losetup is not installed (apt-get install btrfs-progs mount)"
