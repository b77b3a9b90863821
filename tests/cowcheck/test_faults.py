"""Faults leave nothing behind: a killed run, a tree too deep for recursion, an output that cannot be written.

Each run of ``cowspec`` here is a real process with a temporary directory
of its own (``TMPDIR``), so that whatever is left there is its leftover.
A run is killed with ``SIGKILL`` while it works (an overlay mounted, an
engine answering, a container running); then no process it started may
still run, no mount of it may remain in the test's or the host's mount
namespace, and its directories must be gone once the next run has started.
Errors a user can meet (an unwritable ``--save``, a full standard output)
end in one line on standard error and exit 2, never a traceback.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cowcheck.drivers.cleanup import (
    OWNER_VARIABLE,
    all_pids,
    descendants,
    kill_marked,
    kill_tree,
    mounts_under,
    owned_directory,
    remove_tree,
    start_time,
    sweep_stale,
)
from cowcheck.drivers.engines import SHORT_TEMPORARY, Dockerd, need
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.protocol import DriverUnavailable
from tests.cowcheck.test_engines import unavailable

REPOSITORY = Path(__file__).resolve().parents[2]
VECTORS = REPOSITORY / "conformance" / "cowcheck" / "vector_set" / "found"
COWSPEC = [sys.executable, "-m", "cowcheck.cli"]
SMALL_TRACE = VECTORS / "fs-empty-write-past-end.json"

Process = tuple[int, int]
"""A process named for good: its PID and its start time."""
Seen = dict[Process, str]
"""Processes seen, each with its command name (``comm``) as it was then."""


# --- helpers ----------------------------------------------------------------


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return False
    return text[text.rfind(")") + 2 :].split()[:1] != ["Z"]


def name_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")[:160]
    except OSError:
        return "?"


def comm_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def sample(pids: list[int]) -> Seen:
    """``pids`` named for good, with their command names (those already gone are left out)."""
    found: Seen = {}
    for pid in pids:
        started = start_time(pid)
        name = comm_of(pid)
        if started is not None and start_time(pid) == started:
            found[(pid, started)] = name
    return found


def still_running(seen: Seen) -> list[str]:
    """Those of ``seen`` that still run (the same process: same PID, same start time), described."""
    return [f"{pid} {name_of(pid)}" for pid, started in sorted(seen) if start_time(pid) == started and running(pid)]


def marked_under(directory: Path) -> list[str]:
    """Processes marked as owned by a directory under ``directory`` (``COWSPEC_OWNER``), described."""
    prefix = f"{OWNER_VARIABLE}={directory}".encode()
    found = []
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environment = handle.read().split(b"\0")
        except OSError:
            continue
        if any(variable.startswith(prefix) for variable in environment) and running(pid):
            found.append(f"{pid} {name_of(pid)}")
    return found


def mounts_left(directory: Path) -> list[str]:
    """Mount points under ``directory`` in this process's mount namespace and in the host's (PID 1's)."""
    return sorted(
        {
            point
            for table in ("/proc/self/mountinfo", "/proc/1/mountinfo")
            for point in mounts_under(str(directory), table)
        }
    )


def environment(temporary: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(temporary), "PYTHONPATH": _python_path()}


def _python_path() -> str:
    """Where this test imported ``cowcheck`` and ``cowspec`` from, so that the child runs the same code."""
    import cowcheck
    import cowspec

    return os.pathsep.join(
        [*(os.path.dirname(os.path.dirname(os.path.abspath(str(package.__file__)))) for package in (cowcheck, cowspec)),
         str(REPOSITORY)]
    )  # fmt: skip


@contextmanager
def started(command: list[str], temporary: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` run from the repository with ``TMPDIR=temporary``; at the end killed and reaped, come what may."""
    temporary.mkdir(exist_ok=True)
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=REPOSITORY, env=environment(temporary), stdout=output, stderr=output)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def run_processes(process: subprocess.Popen[bytes], temporary: Path) -> list[int]:
    """The processes of a run: its tree, and every process that names the run's ``TMPDIR`` and their trees.

    The second part finds what left the tree (a container engine's shims
    re-parent themselves away from it on purpose), by the engine directory
    that their command lines name.
    """
    needle = str(temporary).encode()
    naming = []
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if needle in handle.read():
                    naming.append(pid)
        except OSError:
            continue
    roots = [process.pid, *naming]
    return list(dict.fromkeys(roots + [child for root in roots for child in descendants(root)]))


def watch_until(
    process: subprocess.Popen[bytes],
    temporary: Path,
    ready: Callable[[list[int]], bool],
    log: Path,
    timeout: float = 120,
) -> Seen:
    """Follow the run's processes until ``ready(them)``; every process of the run seen meanwhile.

    They are sampled often, so that the processes of the moment of the
    kill are all known: once their ancestor is killed they no longer lead to it.
    """
    seen: Seen = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes = run_processes(process, temporary)
        seen |= sample(processes)
        if ready(processes):
            return seen
        if process.poll() is not None:
            pytest.fail(
                f"the run ended (exit {process.returncode}) before it could be killed: {log.read_text()[-2000:]}"
            )
        time.sleep(0.02)
    pytest.fail(f"the run never reached the point to kill it at: {log.read_text()[-2000:]}")


def kill_and_settle(process: subprocess.Popen[bytes], temporary: Path, seen: Seen) -> None:
    """``kill -9`` the run; then wait (a little) for what it started to go, as the kernel takes it down."""
    seen |= sample(run_processes(process, temporary))
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while still_running(seen) and time.monotonic() < deadline:
        time.sleep(0.1)


def assert_nothing_runs_or_is_mounted(seen: Seen, temporary: Path) -> None:
    left = still_running(seen)
    marked = marked_under(temporary)
    mounted = mounts_left(temporary)
    # Clean up before failing, so that one red test leaves nothing behind for the next.
    for described in left + marked:
        pid = int(described.split()[0])
        kill_tree(pid)
    assert not left, f"processes of the killed run still run: {left}"
    assert not marked, f"processes marked as the killed run's still run: {marked}"
    assert not mounted, f"mounts of the killed run remain: {mounted}"


def assert_empty_after(temporary: Path) -> None:
    left = sorted(os.listdir(temporary))
    for name in left:
        remove_tree(str(temporary / name))
    assert not left, f"the next start did not remove the killed run's directories: {left}"


def one_line_error(done: subprocess.CompletedProcess[str]) -> None:
    """Exit 2, one line ``cowspec: ...`` on standard error, no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cowspec: "), done.stderr


# --- the shared cleanup helpers ---------------------------------------------


def deep_tree(top: Path, depth: int, name: str) -> None:
    """``depth`` nested directories named ``name`` under ``top``, each with a file, a symlink and a fifo."""
    descriptor = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=descriptor)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=descriptor)
        os.close(descriptor)
        descriptor = child
        os.close(os.open("file", os.O_CREAT | os.O_WRONLY, 0o000, dir_fd=descriptor))
        os.symlink("/etc", "link", dir_fd=descriptor)
        os.mkfifo("fifo", dir_fd=descriptor)
    os.close(descriptor)


def test_remove_tree_removes_a_tree_deeper_than_recursion_and_path_length_allow(tmp_path: Path) -> None:
    """3,000 levels whose full path is ~60,000 bytes: no RecursionError, no ENAMETOOLONG, nothing left."""
    top = tmp_path / "top"
    top.mkdir()
    deep_tree(top, 3000, "n" * 19)
    assert sys.getrecursionlimit() < 3000
    remove_tree(str(top))
    assert not top.exists()
    assert list(tmp_path.iterdir()) == []


def test_remove_tree_does_not_follow_symlinks_out_of_the_tree(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    top = tmp_path / "top"
    (top / "a").mkdir(parents=True)
    (top / "a" / "to-outside").symlink_to(outside)
    (top / "file-link").symlink_to(outside / "keep")
    remove_tree(str(top))
    assert not top.exists() and (outside / "keep").read_text() == "kept"
    remove_tree(str(top))  # absent is fine
    remove_tree(str(outside / "keep"))  # so is a file
    assert list(outside.iterdir()) == []


def test_remove_tree_opens_up_closed_directories_when_not_root(tmp_path: Path) -> None:
    """Directories without read, write or search permission (which stop a non-root rmtree) are removed.

    Run as an unprivileged user (root passes every permission check): as
    root, the tree is made in a fresh directory of the system's temporary
    directory (pytest's own are closed to other users) and handed to nobody.
    """
    base = Path(tempfile.mkdtemp(prefix="cowspec-test-")) if os.geteuid() == 0 else tmp_path
    try:
        top = base / "top"
        (top / "closed" / "inner").mkdir(parents=True)
        (top / "closed" / "inner" / "file").write_text("x")
        if os.geteuid() == 0:
            for path in (base, top, top / "closed", top / "closed" / "inner", top / "closed" / "inner" / "file"):
                os.chown(path, 65534, 65534)
        (top / "closed" / "inner").chmod(0o000)
        (top / "closed").chmod(0o500)
        # Imported first: the interpreter's own files may be closed to nobody.
        become_nobody = "os.setgid(65534); os.setuid(65534); " if os.geteuid() == 0 else ""
        script = (
            f"import os, sys; from cowcheck.drivers.cleanup import remove_tree; {become_nobody}remove_tree(sys.argv[1])"
        )
        done = subprocess.run([sys.executable, "-c", script, str(top)], env=environment(tmp_path), capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
        assert not top.exists()
    finally:
        if base != tmp_path:
            remove_tree(str(base))


@pytest.mark.kernel
def test_remove_tree_unmounts_what_is_mounted_inside_first(tmp_path: Path, kernel: KernelOverlay) -> None:
    """A tmpfs mounted (twice, stacked) inside the tree is detached, not emptied through, and the tree removed."""
    top = tmp_path / "top"
    (top / "deep" / "mnt").mkdir(parents=True)
    for _ in range(2):
        subprocess.run(["mount", "-t", "tmpfs", "cowspec-test", str(top / "deep" / "mnt")], check=True)
    (top / "deep" / "mnt" / "inside").write_text("on the tmpfs")
    assert mounts_under(str(top))
    remove_tree(str(top))
    assert not top.exists()
    assert mounts_under(str(tmp_path)) == []


def test_sweep_stale_removes_the_directories_of_dead_owners_only(tmp_path: Path) -> None:
    """A killed owner's directory goes; a live owner's, and a name that records no owner, stay."""
    script = (
        "import os, sys; from cowcheck.drivers.cleanup import owned_directory; "
        "path = owned_directory('cowspec-test-', sys.argv[1]); os.makedirs(path + '/a/b'); "
        "print(path, flush=True); os.kill(os.getpid(), 9)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL
    dead = Path(done.stdout.strip())
    assert dead.parent == tmp_path and (dead / "a" / "b").is_dir()
    alive = Path(owned_directory("cowspec-test-", str(tmp_path)))
    foreign = tmp_path / "cowspec-test-no-owner"
    foreign.mkdir()
    other_prefix = tmp_path / "cowspec-other-1.1-x"
    other_prefix.mkdir()
    assert sweep_stale("cowspec-test-", str(tmp_path)) == [str(dead)]
    assert sorted(os.listdir(tmp_path)) == sorted([alive.name, foreign.name, other_prefix.name])


def test_sweep_stale_tells_a_reused_pid_from_its_owner(tmp_path: Path) -> None:
    """A directory whose PID runs again, but as another process (another start time), is stale."""
    reused = tmp_path / f"cowspec-test-{os.getpid()}.{(start_time(os.getpid()) or 0) + 1}-x"
    reused.mkdir()
    assert sweep_stale("cowspec-test-", str(tmp_path)) == [str(reused)]


def test_kill_tree_and_kill_marked_reach_processes_that_left_the_tree(tmp_path: Path) -> None:
    """Children, grandchildren, and a marked process that double-forked away (as a shim does) all end."""
    mark = str(tmp_path / "owner")
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 300 & (sleep 300 &) ; setsid sh -c 'sleep 300 & wait' & wait"],
        env={**os.environ, OWNER_VARIABLE: mark},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            tree = [shell.pid, *descendants(shell.pid)]  # the shell, a sleep, the setsid shell and its sleep
            marked = [pid for pid in all_pids() if pid not in tree and f"{OWNER_VARIABLE}={mark}" in _environ(pid)]
            settled = len(tree) == 4 and [comm_of(pid) for pid in marked] == ["sleep"]
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert settled, ([name_of(pid) for pid in tree], [name_of(pid) for pid in marked])
        seen = sample(tree + marked)
        kill_tree(shell.pid, mark)
        shell.wait(timeout=10)
        assert still_running(seen) == []
        kill_marked(mark)  # nothing left to kill: returns at once
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        kill_marked(mark)


def _environ(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return handle.read().replace(b"\0", b"\n").decode("utf-8", "replace")
    except OSError:
        return ""


# --- a killed run ------------------------------------------------------------


def has_overlay_mounted(tree: list[int]) -> bool:
    """Whether one of ``tree`` sees an overlay mount (in its own mount namespace)."""
    for pid in tree:
        try:
            with open(f"/proc/{pid}/mountinfo") as table:
                if any(" - overlay " in line for line in table):
                    return True
        except OSError:
            continue
    return False


@pytest.mark.kernel
@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_kernel_check_leaves_nothing(tmp_path: Path, kernel: KernelOverlay, workers: int) -> None:
    """``kill -9`` while examples run (in one process, or in workers): no process, no mount; no directory
    once the next run has started."""
    temporary = tmp_path / "tmp"
    command = [*COWSPEC, "check", "--driver", "kernel-overlay", "--examples", "100000", "--progress", "never"]
    with started([*command, "--workers", str(workers)], temporary, tmp_path / "killed.log") as process:
        seen = watch_until(process, temporary, has_overlay_mounted, tmp_path / "killed.log")
        time.sleep(0.5)  # well into the examples
        seen |= sample(run_processes(process, temporary))
        assert len([name for name in seen.values() if name.startswith("python")]) >= workers, seen
        kill_and_settle(process, temporary, seen)
    assert_nothing_runs_or_is_mounted(seen, temporary)
    done = subprocess.run(
        [*COWSPEC, "check", "--driver", "kernel-overlay", str(SMALL_TRACE)],
        cwd=REPOSITORY, env=environment(temporary), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert_empty_after(temporary)


def engine(*tools: str) -> None:
    """Fail in CI, skip elsewhere, when the Docker engine (or one of ``tools``) cannot run here."""
    if os.geteuid() != 0:
        unavailable("the Docker engine needs root")
    try:
        Dockerd()
        for tool in tools:
            need(tool)
    except DriverUnavailable as error:
        unavailable(str(error))


@pytest.fixture
def short_temporary() -> Iterator[Path]:
    """A ``TMPDIR`` short enough for the engine's sockets (pytest's own are too deep: see ``engine_parent``)."""
    path = Path(tempfile.mkdtemp(prefix="cf-", dir=SHORT_TEMPORARY))
    yield path
    remove_tree(str(path))


def named(*names: str) -> Callable[[list[int]], bool]:
    """Ready when a process of one of ``names`` (its ``comm``) is in the tree."""

    def ready(tree: list[int]) -> bool:
        for pid in tree:
            try:
                with open(f"/proc/{pid}/comm") as handle:
                    if handle.read().strip() in names:
                        return True
            except OSError:
                continue
        return False

    return ready


def engine_step(tree: list[int]) -> bool:
    """Ready when a docker client runs a step against the engine (not the ``version`` probe of its start)."""
    for pid in tree:
        if comm_of(pid) != "docker":
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                words = handle.read().split(b"\0")
        except OSError:
            continue
        if b"--host" in words and b"version" not in words:
            return True
    return False


def podman_working(tree: list[int]) -> bool:
    """Ready when podman works on the run's private storage (a command line naming the ``vfs`` driver)."""
    for pid in tree:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"\0--storage-driver\0vfs\0" in handle.read():
                    return True
        except OSError:
            continue
    return False


STORE_BUILD = ["check", "--driver", "docker", str(VECTORS / "store-build.json")]
PODMAN_AND_ENGINE_START = [
    "-c",
    "from cowcheck.drivers.engines import Dockerd, Podman\nwith Podman(), Dockerd():\n    pass",
]
"""What ``cowspec matrix`` does first (its tools' start), without its 40 s of cases."""


@pytest.mark.parametrize(
    ("arguments", "moment", "expected", "next_start"),
    [
        # The engine up and answering a step (a docker client runs against it).
        (STORE_BUILD, engine_step, {"dockerd", "containerd"}, STORE_BUILD),
        # A container running: containerd-shim (made to outlive containerd), runc's child, cowspec-call.
        (
            ["check", "--driver", "docker", str(VECTORS / "store-volume-renames.json")],
            named("cowspec-call"),
            {"dockerd", "containerd", "containerd-shim", "cowspec-call"},
            STORE_BUILD,
        ),
        # The store machine (no traces): the engine answering its generated steps.
        (
            ["check", "--driver", "docker", "--examples", "100000"],
            engine_step,
            {"dockerd", "containerd"},
            STORE_BUILD,
        ),
        # The layer matrix while podman loads, creates or exports, the engine up beside it.
        (["matrix"], podman_working, {"dockerd", "containerd", "podman"}, PODMAN_AND_ENGINE_START),
    ],
    ids=["engine-answering", "container-running", "store-machine", "matrix-podman-working"],
)
def test_a_killed_engine_run_leaves_nothing(
    tmp_path: Path,
    short_temporary: Path,
    arguments: list[str],
    moment: Callable[[list[int]], bool],
    expected: set[str],
    next_start: list[str],
) -> None:
    """``kill -9`` while the tools work: no dockerd, containerd, shim, runc, container or podman; no mount;
    no directory once the next run has started."""
    engine(*(["podman", "umoci"] if arguments[0] == "matrix" else []))
    temporary = short_temporary
    with started([*COWSPEC, *arguments], temporary, tmp_path / "killed.log") as process:
        seen = watch_until(process, temporary, moment, tmp_path / "killed.log")
        kill_and_settle(process, temporary, seen)
    assert expected <= set(seen.values()), seen  # it was killed at the moment meant
    assert_nothing_runs_or_is_mounted(seen, temporary)
    assert os.listdir(temporary), "the killed run should have left its directories for the next start"
    command = [sys.executable, *next_start] if next_start[0] == "-c" else [*COWSPEC, *next_start]
    done = subprocess.run(
        command, cwd=REPOSITORY, env=environment(temporary), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert_empty_after(temporary)


# --- a deep tree, an unwritable --save, a full standard output ---------------


@pytest.mark.kernel
def test_a_thousand_deep_tree_closes_without_recursion_error(tmp_path: Path, kernel: KernelOverlay) -> None:
    """A trace that makes 1,000 nested directories runs, compares and tears down: exit 0, no traceback."""
    paths = ["/d" * depth for depth in range(1, 1001)]
    trace = {
        "format": "cowspec-trace/1",
        "features": {},
        "layers": [],
        "ops": [{"op": "mkdir", "path": path, "mode": 0o755} for path in paths],
    }
    (tmp_path / "deep.json").write_text(json.dumps(trace))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    done = subprocess.run(
        [*COWSPEC, "check", "--driver", "kernel-overlay", str(tmp_path / "deep.json")],
        cwd=REPOSITORY, env=environment(temporary), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr + done.stdout, done.stderr[-3000:]
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert os.listdir(temporary) == []


@pytest.mark.kernel
@pytest.mark.parametrize("where", ["under-a-file", "is-a-file"])
def test_an_unwritable_save_directory_is_one_line_and_exit_2(tmp_path: Path, kernel: KernelOverlay, where: str) -> None:
    """A divergence found, its trace to be saved where no directory can be made: one line, exit 2."""
    (tmp_path / "file").write_text("in the way")
    save = tmp_path / "file" / "out" if where == "under-a-file" else tmp_path / "file"
    lying = "tests.cowcheck.test_cli:LyingKernel"
    command = [*COWSPEC, "check", "--driver", lying, "--profile", "dev", "--examples", "200", "--steps", "10"]
    done = subprocess.run(
        [*command, "--progress", "never", "--save", str(save)],
        cwd=REPOSITORY, env=environment(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    one_line_error(done)
    assert "--save" in done.stderr or str(save) in done.stderr, done.stderr


def test_a_full_standard_output_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """``cowspec oracle`` writing to ``/dev/full`` (ENOSPC on every write): one line, exit 2."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*COWSPEC, "oracle", str(SMALL_TRACE)],
            cwd=REPOSITORY, env=environment(tmp_path), stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    one_line_error(done)


@pytest.mark.kernel
@pytest.mark.parametrize(
    "arguments",
    [[str(SMALL_TRACE)], ["--profile", "dev", "--examples", "3", "--steps", "5", "--progress", "never"]],
    ids=["a-trace", "generated-cases"],
)
def test_a_full_standard_output_of_a_check_is_one_line_and_exit_2(
    tmp_path: Path, kernel: KernelOverlay, arguments: list[str]
) -> None:
    """``cowspec check`` writing its report to ``/dev/full``: one line, exit 2, and its scratch space removed."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*COWSPEC, "check", "--driver", "kernel-overlay", *arguments],
            cwd=REPOSITORY, env=environment(temporary), stdout=full, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
    one_line_error(done)
    assert os.listdir(temporary) == []
