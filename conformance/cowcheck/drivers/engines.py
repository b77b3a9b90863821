"""Real container tools, started and stopped by cowspec itself.

``Dockerd`` runs a private Docker engine: its own data root, exec root and
socket under a temporary directory, no networking (``--iptables=false
--ip6tables=false --bridge=none``), inside a private mount namespace so
that every overlay mount it makes disappears with it. It is stopped by PID.
Podman runs rootful with the ``vfs`` storage driver and private root and
run directories; umoci needs no daemon. Each tool missing from the machine
raises ``DriverUnavailable`` with a one-line reason.
"""

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time

from cowcheck.drivers.protocol import DriverUnavailable


def need(program: str) -> str:
    """The path of ``program``, or ``DriverUnavailable``."""
    for candidate in (f"/usr/bin/{program}", f"/usr/sbin/{program}"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(program)
    if found is None:
        raise DriverUnavailable(f"{program} is not installed (apt-get install docker.io umoci podman)")
    return found


def run(command: list[str], stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run ``command``; its completed process (never raises on a non-zero exit)."""
    return subprocess.run(command, input=stdin, capture_output=True, timeout=timeout, check=False)


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


def _die_with_parent() -> None:
    """In the child, before exec: have the kernel send SIGTERM when the process that started it dies.

    A test killed by a timeout or a signal never reaches ``__exit__``; without
    this its dockerd (and containerd, which dockerd stops on SIGTERM) would run
    on, orphaned. The setting survives exec, and ``unshare`` execs dockerd in
    the same process. Linux only, as everything here.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


PR_SET_PDEATHSIG = 1


class Dockerd:
    """A private dockerd, for as long as the ``with`` block lasts."""

    def __init__(self) -> None:
        self.dockerd = need("dockerd")
        self.client = need("docker")
        self.unshare = need("unshare")
        self.base = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        return os.path.join(self.base, "docker.sock")

    def __enter__(self) -> "Dockerd":
        self.base = tempfile.mkdtemp(prefix="cowspec-dockerd-")
        log = open(os.path.join(self.base, "dockerd.log"), "wb")
        command = [
            self.unshare, "-m", "--propagation", "private", self.dockerd,
            "--data-root", os.path.join(self.base, "root"), "--exec-root", os.path.join(self.base, "exec"),
            "--pidfile", os.path.join(self.base, "dockerd.pid"), "--host", f"unix://{self.socket}",
            "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver", "overlay2",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if os.path.exists(self.socket) and run(self.docker_command("version"), timeout=10).returncode == 0:
                return self
            time.sleep(0.2)
        tail = self._log_tail()
        self.__exit__(None, None, None)
        raise DriverUnavailable(f"dockerd did not start: {tail}")

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.base, "dockerd.log"), "rb") as handle:
                return first_line(handle.read()[-400:])
        except OSError:
            return "(no log)"

    def docker_command(self, *args: str) -> list[str]:
        return [self.client, "--host", f"unix://{self.socket}", *args]

    def docker(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run the docker client against this engine."""
        return run(self.docker_command(*args), stdin)

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.process = None
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)


class Podman:
    """Rootful podman with private storage (vfs), each call in its own mount namespace."""

    def __init__(self) -> None:
        self.podman = need("podman")
        self.unshare = need("unshare")
        self.base = ""

    def __enter__(self) -> "Podman":
        self.base = tempfile.mkdtemp(prefix="cowspec-podman-")
        os.makedirs(os.path.join(self.base, "tmp"))
        return self

    def command(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run podman with this instance's storage."""
        command = [
            self.unshare, "-m", "--propagation", "private", self.podman,
            "--root", os.path.join(self.base, "root"), "--runroot", os.path.join(self.base, "run"),
            "--tmpdir", os.path.join(self.base, "tmp"), "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args,
        ]  # fmt: skip
        return run(command, stdin)

    def __exit__(self, *_: object) -> None:
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)


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
