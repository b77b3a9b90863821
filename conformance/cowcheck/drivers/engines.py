"""Real container tools, started and stopped by cowspec itself.

``Dockerd`` runs a private Docker engine: its own data root, exec root and
socket under a temporary directory, no networking (``--iptables=false
--ip6tables=false --bridge=none``). The engine lives in a mount namespace
and a PID namespace of its own, under a small init (``tini``, shipped with
Docker as ``docker-init``), and is tied to cowspec by the kernel: if
cowspec dies, even by ``kill -9``, ``unshare`` is killed (``PR_SET_PDEATHSIG``),
its child, the namespace's init, is killed in turn (``--kill-child``), and
the death of a PID namespace's init kills every process left in it:
dockerd, containerd, the shims that are meant to outlive containerd, runc,
the containers. The mount namespace goes with its last process, and every
overlay mount with it. What a killed run leaves is then only its directory,
whose name records its owner (``cleanup.owned_directory``) and which the
next engine's start removes (``cleanup.sweep_stale``). Podman runs rootful
with the ``vfs`` storage driver and private root and run directories, each
command in its own mount namespace; umoci needs no daemon. Every tool is
run tied to cowspec's life the same way. Each tool missing from the machine
raises ``DriverUnavailable`` with a one-line reason.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

from cowcheck.drivers.cleanup import (
    OWNER_VARIABLE,
    die_with_parent,
    kill_marked,
    kill_tree,
    owned_directory,
    owner_tag,
    remove_tree,
    start_time,
    sweep_stale,
)
from cowcheck.drivers.protocol import DriverError, DriverUnavailable
from cowspec.store.drivers import DEFAULT_DRIVER, STORAGE_DRIVERS

DEFAULT_STORAGE_DRIVER: str = DEFAULT_DRIVER
"""A private engine runs one of the storage drivers the model states (``STORAGE_DRIVERS``, Docker 20.10's own
graphdrivers), ``overlay2`` unless told."""

DOCKERD_PREFIX = "cowspec-dockerd-"
"""The name of a private engine's directory begins so (then its owner: ``cleanup.owned_directory``)."""
PODMAN_PREFIX = "cowspec-podman-"
"""The same for podman's private storage."""
UMOCI_PREFIX = "cowspec-umoci-"
"""The same for an umoci unpack's work directory (``layer_tools.UmociLayers``)."""


def need(program: str) -> str:
    """The path of ``program``, or ``DriverUnavailable``."""
    for candidate in (f"/usr/bin/{program}", f"/usr/sbin/{program}"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(program)
    if found is None:
        raise DriverUnavailable(f"{program} is not installed (apt-get install docker.io umoci podman)")
    return found


def run(
    command: list[str], stdin: bytes | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``command``, killed if cowspec dies first; its completed process (never raises on a non-zero exit)."""
    return subprocess.run(
        command, input=stdin, capture_output=True, timeout=timeout, check=False, env=env, preexec_fn=die_with_parent()
    )


def first_child(pid: int) -> int:
    """The PID of the first child of process ``pid`` (a daemon ``unshare --fork`` started), 0 if it has none."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            children = handle.read().split()
    except OSError:
        return 0
    return int(children[0]) if children else 0


def log_tail(path: str, size: int) -> str:
    """The first line of the last ``size`` bytes of a daemon's log, to quote when it fails."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - size))
            return first_line(handle.read())
    except OSError:
        return "(no log)"


def first_line(data: bytes) -> str:
    """The line of a tool's message that says what went wrong, for a report.

    The first line that mentions an error, else the last non-empty line
    (progress messages come first).
    """
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    for line in lines:
        if "rror" in line or "\u2a2f" in line:  # umoci marks errors with a cross
            return line[:200]
    return lines[-1][:200] if lines else "(no message)"


def version_of(command: list[str]) -> str:
    """What ``command`` prints of its version, on one line."""
    try:
        done = run(command, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = done.stdout.decode("utf-8", "replace").strip() or done.stderr.decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "?"


def init_program() -> str | None:
    """A minimal init to run as PID 1 of the engine's PID namespace (it reaps the shims), if installed."""
    for program in ("docker-init", "tini"):
        found = shutil.which(program) or next(
            (path for path in (f"/usr/bin/{program}", f"/usr/sbin/{program}") if os.access(path, os.X_OK)), None
        )
        if found is not None:
            return found
    return None


SOCKET_PATH_MAX = 107
"""The longest path a Unix socket may be bound at (``sun_path`` is 108 bytes with its NUL)."""
LONGEST_SOCKET = "/exec/containerd/containerd.sock.ttrpc"
"""The deepest socket the engine makes under its directory."""
SHORT_TEMPORARY = "/tmp"


def sweep_leftovers() -> list[str]:
    """Remove what killed runs left of every tool here (engine, podman and umoci directories); the paths removed.

    Cheap when there is nothing (a listing of the temporary directories):
    each tool calls it as it starts, and a command may call it first thing.
    """
    removed: list[str] = []
    for parent in dict.fromkeys([tempfile.gettempdir(), SHORT_TEMPORARY]):
        for prefix in (DOCKERD_PREFIX, PODMAN_PREFIX, UMOCI_PREFIX):
            removed += sweep_stale(prefix, parent)
    return removed


def engine_parent() -> str:
    """Where the engine's directory goes: the temporary directory, unless its sockets would not fit there.

    containerd binds its sockets under the exec root; a deep ``TMPDIR`` (a
    test's, a CI runner's) makes their paths longer than a socket's may be,
    and the engine would not start. Then ``/tmp`` is used instead.
    """
    parent = tempfile.gettempdir()
    name_length = len(DOCKERD_PREFIX) + len(owner_tag()) + len("-12345678")
    if len(parent) + 1 + name_length + len(LONGEST_SOCKET) > SOCKET_PATH_MAX and os.path.isdir(SHORT_TEMPORARY):
        return SHORT_TEMPORARY
    return parent


def storage_driver_unavailable(storage_driver: str) -> str | None:
    """Why a private engine cannot run ``storage_driver`` here (one line), or None as far as can be told."""
    if storage_driver not in STORAGE_DRIVERS:
        return f"unknown storage driver {storage_driver!r} (known: {', '.join(STORAGE_DRIVERS)})"
    if storage_driver == "fuse-overlayfs":
        from cowcheck.drivers.fuse_overlay import unavailable_reason as fuse_unavailable

        return fuse_unavailable()
    if storage_driver == "btrfs":
        from cowcheck.drivers.loopfs import unavailable_reason as btrfs_unavailable

        return btrfs_unavailable()
    return None


class Dockerd:
    """A private dockerd, for as long as the ``with`` block lasts, and not a moment longer than cowspec.

    ``process`` is ``unshare``, in the host's namespaces; ``init_pid`` is
    the engine namespace's PID 1 as the host sees it (``tini``, or dockerd
    itself where no init is installed), to which a stop is signalled.

    ``storage_driver`` is Docker's graphdriver (``STORAGE_DRIVERS``). For
    ``btrfs`` the data root is a btrfs filesystem in a sparse file of the
    engine's directory (``loopfs``), mounted by the engine namespace's first
    process before it starts the init: the mount is the engine's alone, and
    its loop device (autoclear) detaches itself when that namespace dies,
    however cowspec ends. The harness reaches the engine's files through
    ``host_path``.
    """

    def __init__(self, storage_driver: str = DEFAULT_STORAGE_DRIVER) -> None:
        reason = storage_driver_unavailable(storage_driver)
        if reason is not None:
            raise DriverUnavailable(f"storage driver {storage_driver}: {reason}")
        self.storage_driver = storage_driver
        self.dockerd = need("dockerd")
        self.client = need("docker")
        self.unshare = need("unshare")
        self.init = init_program()
        self.base = ""
        self.image = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    @property
    def data_root(self) -> str:
        """The engine's data root, as the engine sees it."""
        return os.path.join(self.base, "root")

    def host_path(self, path: str) -> str:
        """Where cowspec reaches ``path`` of the engine's mount namespace.

        Itself, but for the btrfs data root, which is mounted in the
        engine's namespace only: there the path goes through the engine
        init's ``/proc/PID/root``, which resolves in that namespace.
        """
        if self.storage_driver == "btrfs" and self.init_pid:
            return f"/proc/{self.init_pid}/root{path}"
        return path

    @property
    def socket(self) -> str:
        return os.path.join(self.base, "docker.sock")

    def command(self) -> list[str]:
        """How the engine is started: in new mount and PID namespaces, killed with ``unshare`` [see module]."""
        init = [self.init, "--"] if self.init else []
        mount: list[str] = []
        if self.image:
            from cowcheck.drivers.loopfs import mount_prefix

            mount = mount_prefix(self.image, self.data_root)
        return [
            self.unshare, "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child=SIGKILL",
            "--mount-proc", *mount, *init, self.dockerd,
            "--data-root", self.data_root, "--exec-root", os.path.join(self.base, "exec"),
            "--pidfile", os.path.join(self.base, "dockerd.pid"), "--host", f"unix://{self.socket}",
            "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver", self.storage_driver,
        ]  # fmt: skip

    def __enter__(self) -> "Dockerd":
        sweep_leftovers()
        self.base = owned_directory(DOCKERD_PREFIX, engine_parent())
        if self.storage_driver == "btrfs":
            from cowcheck.drivers.loopfs import make_image

            try:
                os.mkdir(self.data_root)
                self.image = make_image(os.path.join(self.base, "btrfs.img"))
            except BaseException:
                self.__exit__(None, None, None)
                raise
        log = open(os.path.join(self.base, "dockerd.log"), "wb")
        # start_new_session: a Ctrl-C at the terminal reaches cowspec, whose __exit__ stops the engine
        # cleanly, not the engine itself. die_with_parent: cowspec killed outright takes the engine with it.
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGKILL),
            env=self.environment(),
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if os.path.exists(self.socket) and run(self.docker_command("version"), timeout=10).returncode == 0:
                self.init_pid = self._namespace_init()
                return self
            time.sleep(0.2)
        tail = self._log_tail()
        self.__exit__(None, None, None)
        raise DriverUnavailable(f"dockerd ({self.storage_driver}) did not start: {tail}")

    def environment(self) -> dict[str, str]:
        """The engine's environment: marked as this directory's, its temporary files kept inside it.

        (containerd, for one, writes ``containerd.<pid>.stacks.log`` to the
        temporary directory when it is asked for its stacks.)
        """
        temporary = os.path.join(self.base, "tmp")
        os.makedirs(temporary, exist_ok=True)
        return {**os.environ, OWNER_VARIABLE: self.base, "TMPDIR": temporary}

    def _namespace_init(self) -> int:
        """The host PID of ``unshare``'s child, PID 1 of the engine's namespace (0 if it is gone)."""
        assert self.process is not None
        return first_child(self.process.pid)

    def _log_tail(self) -> str:
        return log_tail(os.path.join(self.base, "dockerd.log"), 400)

    def docker_command(self, *args: str) -> list[str]:
        return [self.client, "--host", f"unix://{self.socket}", *args]

    def docker(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run the docker client against this engine."""
        return run(self.docker_command(*args), stdin)

    def __exit__(self, *exception: object) -> None:
        """Stop the engine: SIGTERM to its init (dockerd stops its containers and containerd), then kill what is left.

        ``unshare`` itself holds SIGTERM blocked while its child runs, so the
        signal goes to the namespace's init. Whatever still runs after 30 s,
        or after a clean stop, is killed with its whole tree; then the
        directory is removed (no mount of the engine is visible here: they
        were in its own namespace, gone with it), whatever happens. A btrfs
        loop device that cannot be checked or detached is a ``DriverError``,
        unless the ``with`` block raised: its error is the one said.
        """
        if self.process is not None:
            if self.process.poll() is None:
                init = self.init_pid or self._namespace_init()
                if init and start_time(init) is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(init, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=30)
            kill_tree(self.process.pid, self.base or None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        self.process = None
        self.init_pid = 0
        try:
            if self.image:
                self._wait_for_loop_device()
        except (DriverError, DriverUnavailable):
            if exception[0] is None:
                raise
        finally:
            self.image = ""
            if self.base:
                with contextlib.suppress(OSError):
                    remove_tree(self.base)
                self.base = ""

    def _wait_for_loop_device(self) -> None:
        """Wait (10 s at most) until the btrfs file's loop device has detached itself, the engine's namespace gone.

        The kernel frees it as the namespace's mounts go; one still attached
        after that is detached here, so that none is ever left behind
        (``DriverError`` if one stays, or if ``losetup`` cannot tell).
        """
        from cowcheck.drivers.loopfs import detach_devices, devices_backed_by

        deadline = time.monotonic() + 10
        while devices_backed_by(self.image) and time.monotonic() < deadline:
            time.sleep(0.1)
        detach_devices(self.image)


class Podman:
    """Rootful podman with private storage (vfs), each call in mount and PID namespaces of its own.

    A command's PID namespace has podman as its init: whatever podman
    leaves running (``conmon`` is made to outlive it) is killed by the
    kernel when the command ends, and the whole command when cowspec dies
    (``unshare --kill-child``, tied to cowspec as every tool is).
    """

    def __init__(self) -> None:
        self.podman = need("podman")
        self.unshare = need("unshare")
        self.base = ""

    def __enter__(self) -> "Podman":
        sweep_leftovers()
        self.base = owned_directory(PODMAN_PREFIX)
        os.makedirs(os.path.join(self.base, "tmp"))
        return self

    def command(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run podman with this instance's storage."""
        command = [
            self.unshare, "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child=SIGKILL",
            "--mount-proc", self.podman,
            "--root", os.path.join(self.base, "root"), "--runroot", os.path.join(self.base, "run"),
            "--tmpdir", os.path.join(self.base, "tmp"), "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args,
        ]  # fmt: skip
        environment = {**os.environ, OWNER_VARIABLE: self.base, "TMPDIR": os.path.join(self.base, "tmp")}
        return run(command, stdin, env=environment)

    def __exit__(self, *_: object) -> None:
        """Kill what a podman command may have left running (``conmon``: marked with the directory), remove it all."""
        if self.base:
            kill_marked(self.base)
            with contextlib.suppress(OSError):
                remove_tree(self.base)
            self.base = ""


def engine_api(engine: Dockerd, path: str) -> object:
    """GET ``path`` from the engine's API over its Unix socket; the decoded JSON."""
    import http.client
    import json
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(engine.socket)

    connection = UnixConnection("localhost", timeout=60)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"engine API {path}: HTTP {response.status}: {first_line(body)}")
        return json.loads(body)
    finally:
        connection.close()
