"""containerd's ``overlayfs`` and ``native`` snapshotters as drivers of the snapshot level.

The driver starts a private containerd (Debian's 1.6, installed with
``docker.io``): its own root, state, socket and config file, all under this
process's scratch tmpfs (``namespace.scratch_root``), so that containerd's
root is on a tmpfs and the bytes it allocates follow a rule the model is
given (``tmpfs_allocation``). The daemon runs in a mount namespace of its
own, a copy of this process's, under ``unshare --fork --kill-child``, tied to
cowspec by ``PR_SET_PDEATHSIG``: a cowspec killed outright takes it along,
and whatever it mounted goes with its namespace. It is stopped by PID (its
own ``SIGTERM``, then its whole tree killed) when the driver closes, at exit
at the latest. Only the plugins a snapshotter needs are not disabled.

Every call goes through ``ctr --address SOCKET -n NAMESPACE snapshots
--snapshotter NAME``: ``prepare``, ``view``, ``commit``, ``rm``, ``ls``,
``usage -b``, ``mounts``, ``diff``. Each example gets a containerd namespace
of its own (a fresh, empty snapshotter state, cheap), emptied and removed when
its session closes. A call that fails answers the kind of error containerd
names at the end of its message (``already exists``, ``not found``,
``failed precondition``, ``invalid argument``).

Filesystem ops go through the mounts of an active snapshot: what ``ctr
snapshots mounts`` says is mounted on a directory of the session, in this
process's mount namespace, and a container process of the kernel driver's
(``kernel_overlay.POOL``) ``chroot``s into it and makes the real system call,
exactly as the kernel driver does in a merged directory; the trees of actives
and views are walked there the same way.

Garbage collection: containerd collects after a deletion on its own (its
scheduler reacts to a removal within a fraction of a second). So that a trace
fixes when that happens, the driver turns the mutation-count trigger off (a
count that runs across examples) and, after every removal it makes, waits for
the collection containerd schedules: it asks for one and waits for it, through
a lease removed with ``--sync``. Nothing else is changed: what a collection
deletes is containerd's own decision.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shlex
import signal
import subprocess
import time
from typing import Literal, cast

from cowcheck.drivers.cleanup import OWNER_VARIABLE, die_with_parent, kill_tree, remove_tree, start_time
from cowcheck.drivers.engines import first_child, first_line, log_tail, need, run
from cowcheck.drivers.kernel_overlay import POOL, ContainerProcess
from cowcheck.drivers.namespace import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT, detach, mount, scratch_root
from cowcheck.drivers.protocol import DriverError, DriverUnavailable
from cowspec.formats.trace import encode_op
from cowspec.fs.calls import Op
from cowspec.fs.observe import Entry

Snapshotter = Literal["overlayfs", "native"]
ERROR_KINDS = ("already exists", "not found", "failed precondition", "invalid argument", "unknown")
"""The kinds of error containerd names (its ``errdefs``) that the snapshot level knows, as ``ctr`` prints them."""
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
"""The media type ``ctr snapshots diff`` is asked for: an uncompressed layer tar."""
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SHORT_SYMLINK = 128
"""tmpfs keeps a symlink's target inline in the inode below this length: no page is allocated for it."""
START_TIMEOUT = 30.0
CONNECT_TIMEOUT = 20.0
DIAL_ATTEMPTS = 4
"""How many times ``ctr`` tries to reach containerd before its failure to connect is the driver's."""
STOP_TIMEOUT = 10.0

_counter = itertools.count()


def tmpfs_allocation(kind: str, size: int) -> int:
    """The bytes a tmpfs allocates for one inode (``st_blocks * 512``): what containerd's usage counts.

    A regular file takes whole pages for its apparent size; a directory, a
    whiteout (a character device) and a short symlink take none; a symlink
    whose target is ``SHORT_SYMLINK`` bytes or longer takes one page.
    """
    if kind == "file":
        return -(-size // PAGE_SIZE) * PAGE_SIZE
    if kind == "symlink":
        return PAGE_SIZE if size >= SHORT_SYMLINK else 0
    return 0


def error_kind(message: str) -> str:
    """The kind of error ``ctr``'s message names (its last words), or ``other: MESSAGE``."""
    text = message.strip().splitlines()[-1] if message.strip() else ""
    for kind in ERROR_KINDS:
        if text.endswith(kind):
            return kind
    return f"other: {text[:200]}"


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    try:
        mount(source, target, fstype, data, flags)
    except OSError as error:
        raise DriverError(str(error)) from None


def _unmount(target: str) -> None:
    try:
        detach(target)
    except OSError as error:
        raise DriverError(str(error)) from None


def mount_lines(text: str) -> list[tuple[str, str, list[str]]]:
    """``ctr snapshots mounts``'s lines as (type, source, options): ``mount -t TYPE SOURCE TARGET -o OPTIONS``."""
    found: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        words = shlex.split(line)
        if not words:
            continue
        if len(words) != 7 or words[0] != "mount" or words[1] != "-t" or words[5] != "-o":
            raise DriverError(f"ctr snapshots mounts printed an unexpected line: {line[:200]}")
        found.append((words[2], words[3], words[6].split(",")))
    return found


def mount_all(mounts: list[tuple[str, str, list[str]]], target: str) -> None:
    """Mount what ``ctr snapshots mounts`` says on ``target``, as containerd's own mount package does."""
    for fstype, source, options in mounts:
        readonly = "ro" in options
        if fstype == "bind":
            recursive = MS_REC if "rbind" in options else 0
            _mount(source, target, None, MS_BIND | recursive, None)
            if readonly:
                _mount("", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | recursive, None)
        else:
            data = ",".join(option for option in options if option not in ("ro", "rw"))
            _mount(source, target, fstype, MS_RDONLY if readonly else 0, data)


def describe_mounts(mounts: list[tuple[str, str, list[str]]]) -> Entry:
    """What the model says of a snapshot's mounts: ``{"type", "readonly", "lowers"}``."""
    if len(mounts) != 1:
        return {"type": "several", "readonly": False, "lowers": len(mounts)}
    fstype, _, options = mounts[0]
    lowers = next((option for option in options if option.startswith("lowerdir=")), "")
    return {
        "type": fstype,
        "readonly": "ro" in options or (fstype == "overlay" and not any(o.startswith("upperdir=") for o in options)),
        "lowers": len(lowers[len("lowerdir=") :].split(":")) if lowers else 0,
    }


class Containerd:
    """A private containerd under this process's scratch tmpfs, for as long as a driver needs it."""

    def __init__(self) -> None:
        self.containerd = need("containerd")
        self.ctr = need("ctr")
        self.unshare = need("unshare")
        self.base = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.daemon_pid = 0

    @property
    def socket(self) -> str:
        return os.path.join(self.base, "containerd.sock")

    def config(self) -> str:
        """The config file: version 2, everything under ``base``, the CRI plugin and what it pulls in disabled."""
        root, state = os.path.join(self.base, "root"), os.path.join(self.base, "state")
        disabled = [
            "io.containerd.grpc.v1.cri",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.internal.v1.tracing",
            "io.containerd.tracing.processor.v1.otlp",
        ]
        return "\n".join(
            [
                "version = 2",
                f'root = "{root}"',
                f'state = "{state}"',
                "disabled_plugins = [" + ", ".join(f'"{name}"' for name in disabled) + "]",
                "[grpc]",
                f'  address = "{self.socket}"',
                "[ttrpc]",
                f'  address = "{self.socket}.ttrpc"',
                "[debug]",
                '  address = ""',
                "[metrics]",
                '  address = ""',
                '[plugins."io.containerd.gc.v1.scheduler"]',
                "  mutation_threshold = 0",
                "",
            ]
        )

    def start(self) -> None:
        """Start the daemon and wait till it answers; ``DriverUnavailable`` naming the cause if it does not."""
        self.base = os.path.join(scratch_root(), f"containerd-{next(_counter)}")
        os.makedirs(os.path.join(self.base, "tmp"))
        config = os.path.join(self.base, "config.toml")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(self.config())
        command = [
            self.unshare, "--mount", "--propagation", "private", "--fork", "--kill-child=SIGKILL",
            self.containerd, "--config", config,
        ]  # fmt: skip
        environment = {**os.environ, OWNER_VARIABLE: self.base, "TMPDIR": os.path.join(self.base, "tmp")}
        with open(os.path.join(self.base, "containerd.log"), "wb") as log:
            # start_new_session: a Ctrl-C reaches cowspec, which stops the daemon; die_with_parent: cowspec
            # killed outright takes it along (``unshare --kill-child`` then kills containerd).
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),
                env=environment,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if os.path.exists(self.socket) and self.command("version", timeout=10).returncode == 0:
                self.daemon_pid = self._child()
                # The collection containerd runs shortly after it starts is run now, and waited for.
                self.collect()
                return
            time.sleep(0.05)
        cause = "it exited" if self.process.poll() is not None else f"no answer within {START_TIMEOUT:.0f} s"
        tail = self._log_tail()
        self.stop()
        raise DriverUnavailable(f"containerd did not start ({cause}): {tail}")

    def _child(self) -> int:
        """containerd's PID: ``unshare``'s child (0 if it is gone)."""
        assert self.process is not None
        return first_child(self.process.pid)

    def _log_tail(self) -> str:
        return log_tail(os.path.join(self.base, "containerd.log"), 600)

    def command(
        self, *args: str, namespace: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``ctr`` against this daemon (in ``namespace`` if given); never raises on a non-zero exit."""
        # ctr gives up connecting after 10 s by default: short on a loaded machine; a dial that fails is retried.
        prefix = [self.ctr, "--address", self.socket, "--connect-timeout", f"{min(timeout, CONNECT_TIMEOUT):.0f}s"]
        if namespace is not None:
            prefix += ["--namespace", namespace]
        for attempt in range(DIAL_ATTEMPTS):
            try:
                done = run([*prefix, *args], timeout=timeout)
            except subprocess.TimeoutExpired:
                raise DriverError(f"ctr {' '.join(args)} did not answer within {timeout:.0f} s") from None
            # A failed dial sent nothing: the call can be made again. (On a loaded machine, containerd now and
            # then does not complete gRPC's handshake in time.)
            if done.returncode == 0 or b"failed to dial" not in done.stderr or not self.running:
                return done
            time.sleep(0.2 * (attempt + 1))
        return done

    def collect(self) -> None:
        """Have containerd collect garbage now and wait till it has (a lease removed with ``--sync``)."""
        created = self.command("leases", "create")
        if created.returncode != 0:
            raise DriverError(f"ctr leases create: {first_line(created.stderr)}")
        lease = created.stdout.decode().split()[0]
        removed = self.command("leases", "rm", "--sync", lease)
        if removed.returncode != 0:
            raise DriverError(f"ctr leases rm --sync: {first_line(removed.stderr)}")

    def stop(self) -> None:
        """``SIGTERM`` to containerd, then its whole tree killed; its directory unmounted and removed."""
        if self.process is not None:
            if self.process.poll() is None:
                pid = self.daemon_pid or self._child()
                if pid and start_time(pid) is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=STOP_TIMEOUT)
            kill_tree(self.process.pid, self.base or None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None
        self.daemon_pid = 0
        if self.base:
            with contextlib.suppress(OSError):
                remove_tree(self.base)
            self.base = ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ContainerdSession:
    """One example's snapshots: a containerd namespace of its own, and the mounts made of them here."""

    def __init__(self, daemon: Containerd, snapshotter: Snapshotter) -> None:
        self.daemon = daemon
        self.snapshotter = snapshotter
        self.namespace = f"cowspec-{next(_counter)}"
        self.home = os.path.join(daemon.base, "sessions", self.namespace)
        os.makedirs(self.home)
        self.mounted: dict[str, str] = {}
        """Key -> the directory its mounts are mounted on."""
        self.process: ContainerProcess | None = None
        self.entered = ""
        self.calls = 0

    # -- the calls ------------------------------------------------------------------------------------------

    def snapshots(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """``ctr snapshots --snapshotter NAME ARGS`` in this session's namespace."""
        self.calls += 1
        return self.daemon.command("snapshots", "--snapshotter", self.snapshotter, *args, namespace=self.namespace)

    def _answer(self, done: subprocess.CompletedProcess[bytes]) -> Entry:
        if done.returncode == 0:
            return {"ok": True}
        kind = error_kind(done.stderr.decode("utf-8", "replace"))
        if kind.startswith("other: "):
            raise DriverError(f"ctr failed in a way the snapshot level does not know: {kind[len('other: ') :]}")
        return {"error": kind}

    def prepare(self, key: str, parent: str | None) -> Entry:
        """``ctr snapshots prepare KEY PARENT``: ``{"ok": true}`` or ``{"error": KIND}``; a new active is mounted
        here at once, and stays mounted until it is committed or removed (one mount for its life)."""
        answer = self._answer(self.snapshots("prepare", key, parent or ""))
        if answer.get("ok"):
            self._directory(key)
        return answer

    def view(self, key: str, parent: str | None) -> Entry:
        """``ctr snapshots view KEY PARENT``; a new view is mounted here at once, as an active is."""
        answer = self._answer(self.snapshots("view", key, parent or ""))
        if answer.get("ok"):
            self._directory(key)
        return answer

    def commit(self, name: str, key: str) -> Entry:
        """``ctr snapshots commit NAME KEY``; the active's mount here is taken down once the commit is made (the
        key is gone), and kept if the commit fails."""
        answer = self._answer(self.snapshots("commit", name, key))
        if answer.get("ok"):
            self.release(key)
        return answer

    def remove(self, key: str) -> Entry:
        """``ctr snapshots rm KEY``, its mount here taken down first; then the garbage collection containerd
        schedules after a deletion, waited for."""
        self.release(key)
        answer = self._answer(self.snapshots("rm", key))
        if answer.get("ok"):
            self.daemon.collect()
        return answer

    def perform(self, key: str, op: Op) -> Entry:
        """``op`` made in the mounts of active ``key`` by a process chrooted there: the kernel driver's result item."""
        process = self._enter(key)
        process.send(encode_op(op))
        reply = cast(Entry, process.receive())
        if "driver_error" in reply:
            raise DriverError(f"the container process failed on {encode_op(op)}: {reply['driver_error']}")
        return reply

    # -- what is observed -----------------------------------------------------------------------------------

    def infos(self) -> list[Entry]:
        """Every snapshot ``ctr snapshots ls`` lists: ``{"name", "kind", "parent"}``, sorted by name."""
        done = self.snapshots("ls")
        if done.returncode != 0:
            raise DriverError(f"ctr snapshots ls: {first_line(done.stderr)}")
        rows: list[Entry] = []
        for line in done.stdout.decode().splitlines()[1:]:
            words = line.split()
            if len(words) == 3:
                name, parent, kind = words
            elif len(words) == 2:
                (name, kind), parent = words, ""
            else:
                raise DriverError(f"ctr snapshots ls printed an unexpected line: {line[:200]}")
            rows.append({"name": name, "kind": kind.lower(), "parent": parent or None})
        return sorted(rows, key=lambda row: str(row["name"]))

    def tree(self, key: str) -> list[Entry]:
        """The tree of active or view ``key``, walked through its mounts as the kernel driver walks a merged dir."""
        return cast(list[Entry], self._enter(key).ask("merged"))

    def usage(self) -> dict[str, Entry]:
        """``ctr snapshots usage -b``: ``{key: {"size", "inodes"}}`` for every snapshot."""
        done = self.snapshots("usage", "-b")
        if done.returncode != 0:
            raise DriverError(f"ctr snapshots usage: {first_line(done.stderr)}")
        found: dict[str, Entry] = {}
        for line in done.stdout.decode().splitlines()[1:]:
            words = line.split()
            if len(words) != 3 or not words[1].isdigit() or not words[2].isdigit():
                raise DriverError(f"ctr snapshots usage printed an unexpected line: {line[:200]}")
            found[words[0]] = {"size": int(words[1]), "inodes": int(words[2])}
        return found

    def mounts(self, key: str) -> Entry:
        """What ``ctr snapshots mounts`` gives for ``key``: ``{"type", "readonly", "lowers"}``."""
        return describe_mounts(self._mount_lines(key))

    def diff(self, key: str) -> bytes:
        """``ctr snapshots diff`` of ``key`` against its parent: an uncompressed layer tar.

        The snapshot's mount here is taken down first (containerd mounts it
        itself to walk it). The differ removes the views it made, a deletion
        after which containerd collects: waited for, as after a removal.
        """
        self.release(key)
        done = self.snapshots("diff", "--media-type", LAYER_MEDIA_TYPE, key)
        self.daemon.collect()
        if done.returncode != 0:
            raise DriverError(f"ctr snapshots diff {key}: {first_line(done.stderr)}")
        return done.stdout

    # -- mounts ---------------------------------------------------------------------------------------------

    def _mount_lines(self, key: str) -> list[tuple[str, str, list[str]]]:
        done = self.snapshots("mounts", "/", key)
        if done.returncode != 0:
            raise DriverError(f"ctr snapshots mounts {key}: {first_line(done.stderr)}")
        return mount_lines(done.stdout.decode())

    def _directory(self, key: str) -> str:
        """``key`` mounted on a directory of the session (once)."""
        if key not in self.mounted:
            lines = self._mount_lines(key)
            directory = os.path.join(self.home, f"m{next(_counter)}")
            os.mkdir(directory)
            try:
                mount_all(lines, directory)
            except DriverError:
                with contextlib.suppress(DriverError):
                    _unmount(directory)
                raise
            self.mounted[key] = directory
        return self.mounted[key]

    def _enter(self, key: str) -> ContainerProcess:
        """The container process, its root the mounts of ``key``."""
        directory = self._directory(key)
        if self.process is None:
            self.process = POOL.take()
            self.entered = ""
        if self.entered != directory:
            if self.process.ask({"enter": directory}) != "ok":
                raise DriverError(f"the container process could not enter the mounts of {key}")
            self.entered = directory
        return self.process

    def _leave(self) -> None:
        if self.process is not None and self.entered:
            if self.process.ask("leave") != "ok":
                raise DriverError("the container process did not leave its root")
            self.entered = ""

    def release(self, key: str) -> None:
        """Take down this session's mount of ``key``, if any (the container process leaves it first)."""
        directory = self.mounted.pop(key, None)
        if directory is None:
            return
        if self.entered == directory:
            self._leave()
        for _ in range(8):  # a stacked mount: every layer of it
            try:
                detach(directory)
            except OSError:
                break
        with contextlib.suppress(OSError):
            os.rmdir(directory)

    def close(self) -> None:
        """Leave, unmount, remove every snapshot of the namespace, the namespace, and the session's directory."""
        try:
            process, self.process = self.process, None
            if process is not None:
                try:
                    if self.entered and process.ask("leave") != "ok":
                        raise DriverError("the container process did not leave its root")
                except DriverError:
                    process.stop()
                else:
                    POOL.give_back(process)
                self.entered = ""
            for key in list(self.mounted):
                self.release(key)
            if self.daemon.running:
                self._empty()
        finally:
            with contextlib.suppress(OSError):
                remove_tree(self.home)

    def _empty(self) -> None:
        """Remove the namespace's snapshots, children first, then the namespace, then collect (best effort:
        what containerd refuses to remove stays in its namespace until the daemon stops)."""
        for _ in range(64):
            try:
                rows = self.infos()
            except DriverError:
                break
            if not rows:
                break
            parents = {row["parent"] for row in rows}
            leaves = [str(row["name"]) for row in rows if row["name"] not in parents]
            removed = [key for key in leaves if self.snapshots("rm", key).returncode == 0]
            if not removed:
                break
        self.daemon.command("namespaces", "rm", self.namespace)
        with contextlib.suppress(DriverError):
            self.daemon.collect()


class ContainerdSnapshots:
    """A containerd snapshotter, held to the snapshot level: one private daemon per driver, started on first use."""

    level = "snapshot"
    name = "containerd"
    snapshotter: Snapshotter = "overlayfs"

    def __init__(self) -> None:
        self.daemon: Containerd | None = None

    def allocation(self, kind: str, size: int) -> int:
        """The bytes containerd's root filesystem (a tmpfs) allocates for one inode [see ``tmpfs_allocation``]."""
        return tmpfs_allocation(kind, size)

    def version(self) -> str:
        """containerd's version, as it prints it."""
        done = run([need("containerd"), "--version"], timeout=30)
        return done.stdout.decode("utf-8", "replace").strip() or "?"

    def open_snapshots(self) -> ContainerdSession:
        """A fresh, empty snapshotter state: a new containerd namespace (the daemon started if it is not)."""
        if self.daemon is None or not self.daemon.running:
            if self.daemon is not None:
                self.daemon.stop()
            self.daemon = Containerd()
            try:
                self.daemon.start()
            except BaseException:
                self.daemon.stop()
                self.daemon = None
                raise
        return ContainerdSession(self.daemon, self.snapshotter)

    def close(self) -> None:
        """Stop the daemon (it is started again by the next ``open_snapshots``)."""
        if self.daemon is not None:
            daemon, self.daemon = self.daemon, None
            daemon.stop()


class ContainerdOverlayfs(ContainerdSnapshots):
    """containerd's ``overlayfs`` snapshotter."""

    name = "containerd-overlayfs"
    snapshotter: Snapshotter = "overlayfs"


class ContainerdNative(ContainerdSnapshots):
    """containerd's ``native`` snapshotter."""

    name = "containerd-native"
    snapshotter: Snapshotter = "native"
