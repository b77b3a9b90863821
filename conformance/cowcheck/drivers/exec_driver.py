"""Drivers in any language: a program spoken to in ``cowspec-driver/1`` over its standard input and output.

``--driver exec:COMMAND ARGS...`` starts COMMAND once and asks it, one JSON
object per line, what a built-in driver would be asked: to open a session
over layers and perform ops in it (filesystem level), to flatten layer tars
or commit a container after some ops (layer level, as its hello's ``calls``
declare), or to run a store trace (store level).
``docs/formats/driver-protocol.md`` is the contract; this module is
cowspec's side of it.

The program runs in a process group of its own and is sent SIGKILL by the
kernel when the thread that started it ends (``PR_SET_PDEATHSIG``: start it
from a thread that lives as long as it is needed, the main thread); every
request has a deadline, and on a timeout, a death or a reply that breaks the
protocol the whole group is killed and a ``DriverError`` says what happened
in one line. Standard error goes to an unlinked temporary file, so a chatty
program can never block on a full pipe, and its last line is quoted when the
program fails. Every program still running when cowspec exits is stopped.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from typing import IO, NoReturn, cast

from cowcheck.drivers.protocol import Answer, DriverError, DriverUnavailable, Refused
from cowspec import __version__
from cowspec.formats.store_trace import STORE_RESULT_FORMAT, encode_step
from cowspec.formats.trace import encode_entry, encode_op
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Op
from cowspec.fs.features import KNOWN, Features
from cowspec.fs.observe import Entry
from cowspec.store.steps import (
    Step,
)

PROTOCOL = "cowspec-driver/1"
LEVELS = ("filesystem", "layer", "store")
LAYER_CALLS = ("flatten", "commit")
"""The requests of the layer level; a program's hello lists those it answers in ``calls``."""
DEFAULT_CALLS = ("flatten",)
"""What a layer-level program answers when its hello has no ``calls``."""
DEFAULT_TIMEOUT = 60.0
HELLO_TIMEOUT = 30.0
TIMEOUT_VARIABLE = "COWSPEC_DRIVER_TIMEOUT"
GOODBYE_WAIT = 2.0
"""Seconds a program is given to answer ``bye`` and to exit on end of input before its group is killed."""
QUOTE = 200

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def configured_timeout() -> float | None:
    """The per-request timeout ``COWSPEC_DRIVER_TIMEOUT`` sets, or None when it is not set."""
    text = os.environ.get(TIMEOUT_VARIABLE)
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise DriverError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, not {text!r}")
    return value


def _one_line(text: str) -> str:
    """``text`` cut to its first ``QUOTE`` characters, on one line."""
    return " ".join(text[:QUOTE].split()) if text.strip() else repr(text[:QUOTE])


def _die_with_parent(parent: int) -> Callable[[], None]:
    """What the child runs before ``exec``: be killed when cowspec goes, and not outlive a parent already gone."""

    def prepare() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return prepare


def _resolve(argv: list[str]) -> str:
    """The program's path, or a ``DriverError`` saying why it cannot be run."""
    if not argv or not argv[0]:
        raise DriverError("exec driver: no program given (--driver exec:COMMAND [ARGS...])")
    program = argv[0]
    if "/" not in program:
        found = shutil.which(program)
        if found is None:
            raise DriverError(f"exec driver: program {program!r} not found on PATH")
        return found
    if not os.path.exists(program):
        raise DriverError(f"exec driver: program {program!r} not found")
    if os.path.isdir(program) or not os.access(program, os.X_OK):
        raise DriverError(f"exec driver: program {program!r} is not executable")
    return program


_live: weakref.WeakSet[ExecProgram] = weakref.WeakSet()


@atexit.register
def _stop_every_program() -> None:
    """No driver program outlives cowspec."""
    for program in list(_live):
        program.close()


class ExecProgram:
    """One driver program, started on first use and spoken to in ``cowspec-driver/1``.

    ``name``, ``levels`` and ``features`` are what the program declared in
    its handshake; ``filesystem()``, ``layer()`` and ``store()`` are drivers
    of the built-in kinds (``protocol.py``) backed by it. One process serves
    them all, one request at a time.
    """

    def __init__(self, argv: list[str], timeout: float | None = None) -> None:
        self.argv = list(argv)
        # Until the program names itself, it is called by its command line, as the user wrote it.
        command = _one_line(shlex.join(self.argv))
        self._label = "exec:" + (command if len(command) <= 60 else command[:59] + "…")
        self._explicit_timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._stderr: IO[bytes] | None = None
        self._buffer = bytearray()
        self._scanned = 0
        self._broken: str | None = None
        self._unavailable: str | None = None
        self._declared: Entry | None = None
        self._session_open = False
        self._closed = False
        self._owner: int | None = None
        """The PID of the process that started the program: only it speaks to it, only it stops it."""

    # -- what the program declared --------------------------------------------

    @property
    def name(self) -> str:
        """The name the program gave itself in the handshake."""
        return str(self._hello()["name"])

    @property
    def levels(self) -> frozenset[str]:
        """The levels the program serves: some of ``filesystem``, ``layer``, ``store``."""
        return cast(frozenset[str], self._hello()["levels"])

    @property
    def features(self) -> frozenset[str]:
        """The optional overlay features its filesystem level supports (Docker's configuration always is)."""
        return cast(frozenset[str], self._hello()["features"])

    @property
    def calls(self) -> frozenset[str]:
        """The layer level's requests the program answers: ``flatten``, and ``commit`` if it declared it."""
        return cast(frozenset[str], self._hello()["calls"])

    @property
    def version(self) -> str | None:
        """The program's own version, if it gave one."""
        version = self._hello().get("version")
        return version if isinstance(version, str) else None

    def filesystem(self) -> ExecFilesystem:
        """The filesystem-level driver this program is."""
        self._require_level("filesystem")
        return ExecFilesystem(self)

    def layer(self) -> ExecLayers:
        """The layer-level driver this program is."""
        self._require_level("layer")
        return ExecLayers(self)

    def store(self) -> ExecStore:
        """The store-level driver this program is."""
        self._require_level("store")
        return ExecStore(self)

    def _require_level(self, level: str) -> None:
        if level not in self.levels:
            offered = ", ".join(sorted(self.levels))
            raise DriverUnavailable(f"{self._label} serves the {offered} level, not the {level} level")

    # -- lifetime -------------------------------------------------------------

    def _timeout(self) -> float:
        if self._explicit_timeout is not None:
            return self._explicit_timeout
        return configured_timeout() or DEFAULT_TIMEOUT

    def _hello_timeout(self) -> float:
        """30 s unless a timeout was set (by argument or environment): a slow starter can be given longer."""
        if self._explicit_timeout is not None:
            return self._explicit_timeout
        return configured_timeout() or HELLO_TIMEOUT

    def _inherited(self) -> bool:
        """True if the program was started by another process, this one a fork of it (a worker)."""
        return self._process is not None and self._owner != os.getpid()

    def _leave_inherited(self) -> None:
        """In a forked process, let go of the parent's program without a word to it and without killing it.

        The pipes, the standard error file and the pidfd are the parent's
        too: only this process's copies of their descriptors are closed.
        What the handshake declared is forgotten, so that this process
        starts a program of its own and shakes hands with it; a failure
        of the parent's program is not this process's.
        """
        process = self._process
        assert process is not None
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._stderr is not None:
            with contextlib.suppress(OSError):
                self._stderr.close()
            self._stderr = None
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None
        process.returncode = 0  # not this process's child: never waited for here
        self._process = None
        self._owner = None
        self._buffer = bytearray()
        self._scanned = 0
        self._broken = None
        self._declared = None
        self._session_open = False
        _live.discard(self)

    def _start(self) -> None:
        if self._closed:
            raise DriverError(f"driver {self._label} was closed")
        path = _resolve(self.argv)
        # Kept open for the program's life and closed by _kill, so not a with block.
        self._stderr = tempfile.TemporaryFile(prefix="cowspec-driver-stderr-")  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                [path, *self.argv[1:]],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                bufsize=0,
                process_group=0,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as error:
            self._stderr.close()
            self._stderr = None
            raise DriverError(f"exec driver: cannot start {self.argv[0]!r}: {error.strerror}") from None
        self._owner = os.getpid()
        _live.add(self)
        # A descriptor that polls readable when the program exits: its death is seen even when a process
        # it started still holds its standard output open.
        try:
            self._pidfd = os.pidfd_open(self._process.pid)
        except OSError:
            self._pidfd = None
        assert self._process.stdin is not None
        os.set_blocking(self._process.stdin.fileno(), False)

    def _hello(self) -> Entry:
        """The handshake's declarations, asked for once per process; a handshake that fails leaves no program
        behind."""
        if self._inherited():
            self._leave_inherited()
        if self._declared is not None:
            return self._declared
        if self._unavailable is not None:
            raise DriverUnavailable(self._unavailable)
        if self._broken is not None:
            raise DriverError(self._broken)
        timeout = self._hello_timeout()
        self._start()
        request: Entry = {"request": "hello", "protocol": PROTOCOL, "cowspec": __version__}
        try:
            self._declared = self._check_hello(self._exchange(request, timeout))
        except BaseException as error:
            if self._broken is None:
                self._broken = str(error) if isinstance(error, DriverError) else f"driver {self._label}: no handshake"
            self._kill(wait=GOODBYE_WAIT)
            raise
        self._label = f"exec:{self._declared['name']}"
        return self._declared

    def _check_hello(self, reply: Entry) -> Entry:
        protocol = reply.get("protocol")
        if protocol != PROTOCOL:
            if isinstance(protocol, str):
                self.fail(f"speaks {protocol!r}, but cowspec speaks {PROTOCOL!r}")
            self.out_of_protocol("hello", reply, 'no "protocol" field')
        if "unavailable" in reply:
            self._unavailable = _one_line(str(reply["unavailable"]))
            raise DriverUnavailable(self._unavailable)
        name = reply.get("name")
        levels = reply.get("levels")
        features = reply.get("features", [])
        if not isinstance(name, str) or not name.strip() or "\n" in name:
            self.out_of_protocol("hello", reply, 'no one-line "name"')
        if not isinstance(levels, list) or not all(isinstance(each, str) for each in levels):
            self.out_of_protocol("hello", reply, '"levels" is not a list of names')
        if not isinstance(features, list) or not all(isinstance(each, str) for each in features):
            self.out_of_protocol("hello", reply, '"features" is not a list of names')
        calls = reply.get("calls", list(DEFAULT_CALLS))
        if not isinstance(calls, list) or not all(isinstance(each, str) for each in calls):
            self.out_of_protocol("hello", reply, '"calls" is not a list of names')
        # Names a later protocol may add are ignored; at least one level must be one cowspec knows.
        known_levels = frozenset(levels) & frozenset(LEVELS)
        if not known_levels:
            self.out_of_protocol("hello", reply, f"no level of {', '.join(LEVELS)}")
        return {
            **reply,
            "name": name,
            "levels": known_levels,
            "features": frozenset(features) & frozenset(KNOWN),
            "calls": frozenset(calls) & frozenset(LAYER_CALLS),
        }

    def close(self) -> None:
        """Say goodbye, close its input, give it a moment to exit, then kill its process group."""
        if self._closed:
            return
        if self._inherited():  # a forked worker closing: the parent's program is the parent's to stop
            self._leave_inherited()
        self._closed = True
        process = self._process
        if process is None:
            return
        if self._broken is None and self._declared is not None:
            with contextlib.suppress(DriverError, DriverUnavailable):
                self._exchange({"request": "bye"}, min(GOODBYE_WAIT, self._timeout()))
        self._kill(wait=GOODBYE_WAIT)

    def _kill(self, wait: float = 0.0) -> None:
        """Close its input, wait up to ``wait`` seconds for it to exit, kill its group, reap it."""
        process = self._process
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if wait:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # what it started in its group goes too
        process.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._process = None
        _live.discard(self)

    def __enter__(self) -> ExecProgram:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- one request, one reply -------------------------------------------------

    def ask(self, request: Entry) -> Entry:
        """Send ``request`` and return its reply (a JSON object that is not an ``error``).

        Asked in a process forked from the one that started the program, it
        starts a program of that process's own first (``_hello``).
        """
        self._hello()
        return self._exchange(request, self._timeout())

    def _exchange(self, request: Entry, timeout: float) -> Entry:
        if self._broken is not None:
            raise DriverError(self._broken)
        if self._process is None:
            raise DriverError(f"driver {self._label} was closed")
        what = str(request["request"])
        deadline = time.monotonic() + timeout
        self._send(json.dumps(request, separators=(",", ":")).encode() + b"\n", what, deadline, timeout)
        line = self._receive(what, deadline, timeout)
        try:
            reply = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            reply = None
        if not isinstance(reply, dict):
            self.out_of_protocol(what, line.decode("utf-8", "replace"), "not one JSON object")
        if "error" in reply:
            raise DriverError(f"driver {self._label} failed: {_one_line(str(reply['error']))} (on {what})")
        return cast(Entry, reply)

    def _poller(self, fd: int, events: int) -> select.poll:
        """A poll of ``fd`` for ``events``, and of the program's exit."""
        poller = select.poll()
        poller.register(fd, events)
        if self._pidfd is not None:
            poller.register(self._pidfd, select.POLLIN)
        return poller

    def _wait_for(self, poller: select.poll, fd: int, what: str, deadline: float, timeout: float) -> None:
        """Return when ``fd`` is ready; fail on the deadline, or when the program has exited and ``fd`` is not."""
        remaining = deadline - time.monotonic()
        events = dict(poller.poll(max(remaining, 0) * 1000)) if remaining > 0 else {}
        if not events:
            self._timed_out(what, timeout)
        if fd not in events:
            self._died(what)

    def _send(self, data: bytes, what: str, deadline: float, timeout: float) -> None:
        process = self._process
        assert process is not None and process.stdin is not None
        fd = process.stdin.fileno()
        view = memoryview(data)
        poller = self._poller(fd, select.POLLOUT)
        while view:
            self._wait_for(poller, fd, what, deadline, timeout)
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                continue
            except BrokenPipeError:
                self._died(what)
            view = view[written:]

    def _receive(self, what: str, deadline: float, timeout: float) -> bytes:
        process = self._process
        assert process is not None and process.stdout is not None
        fd = process.stdout.fileno()
        poller = self._poller(fd, select.POLLIN)
        while (end := self._buffer.find(b"\n", self._scanned)) < 0:
            self._scanned = len(self._buffer)
            self._wait_for(poller, fd, what, deadline, timeout)
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self._died(what)
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        return line

    # -- failures ---------------------------------------------------------------

    def fail(self, message: str) -> NoReturn:
        """Kill the program and raise ``DriverError`` (every later request raises it too)."""
        self._broken = f"driver {self._label} failed: {message}"
        self._kill()
        raise DriverError(self._broken)

    def out_of_protocol(self, what: str, reply: object, why: str) -> NoReturn:
        text = reply if isinstance(reply, str) else json.dumps(reply)
        self.fail(f"out of protocol: its reply to {what} is {why}: {text[:QUOTE]!r}")

    def _timed_out(self, what: str, timeout: float) -> NoReturn:
        self.fail(
            f"no reply to {what} within {timeout:g} s ({TIMEOUT_VARIABLE} sets the limit); its process group was killed"
        )

    def _died(self, what: str) -> NoReturn:
        process = self._process
        assert process is not None
        try:
            status = process.wait(GOODBYE_WAIT)
        except subprocess.TimeoutExpired:
            self.fail(f"it closed its standard output during {what}")
        how = f"was killed by signal {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
        last = self._last_stderr_line()
        self.fail(f"the program {how} during {what}" + (f"; its last words: {last}" if last else ""))

    def _last_stderr_line(self) -> str:
        if self._stderr is None:
            return ""
        size = self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, size - 4096))
        lines = [line for line in self._stderr.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return _one_line(lines[-1]) if lines else ""

    # -- the session, for ExecSession -------------------------------------------

    def begin_session(self) -> None:
        if self._session_open:
            raise DriverError(f"driver {self._label}: a session is already open (one at a time)")
        self._session_open = True

    def end_session(self) -> None:
        self._session_open = False

    @property
    def alive(self) -> bool:
        """Whether requests can still be sent (not failed, not closed, not a program this process inherited)."""
        return self._broken is None and self._process is not None and not self._inherited()


# -- the filesystem level --------------------------------------------------------


def _entries(reply: Entry, key: str, program: ExecProgram, what: str) -> list[Entry]:
    """``reply[key]`` checked to be a list of entries with a path."""
    value = reply.get(key)
    if not isinstance(value, list) or not all(
        isinstance(each, dict) and isinstance(each.get("path"), str) for each in value
    ):
        program.out_of_protocol(what, reply, f'"{key}" is not a list of entries with a path')
    return cast(list[Entry], value)


class ExecSession:
    """One session of a driver program: its layers mounted, ops performed, trees observed.

    The trees and sizes come in one ``observe`` reply, kept until the next
    op, so ``merged``, ``upper`` and ``sizes`` after a step cost one round trip.
    """

    def __init__(self, program: ExecProgram, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> None:
        self.program = program
        self._observed: Entry | None = None
        program.begin_session()
        request: Entry = {
            "request": "open",
            "features": {name: getattr(features, name) for name in KNOWN},
            "layers": [[encode_entry(entry) for entry in layer] for layer in layers],
        }
        try:
            program.ask(request)
        except BaseException:
            program.end_session()
            raise

    def perform(self, op: Op) -> Entry:
        """Run ``op``; its result item (``ok`` with an optional ``value``, or ``errno``)."""
        self._observed = None
        reply = self.program.ask({"request": "perform", "op": encode_op(op)})
        if reply.get("ok") is True:
            return {"ok": True, "value": reply["value"]} if "value" in reply else {"ok": True}
        if isinstance(reply.get("errno"), str):
            return {"errno": reply["errno"]}
        self.program.out_of_protocol("perform", reply, 'neither {"ok": true} nor an "errno"')

    def _observe(self) -> Entry:
        if self._observed is None:
            reply = self.program.ask({"request": "observe"})
            merged = _entries(reply, "merged", self.program, "observe")
            upper = _entries(reply, "upper", self.program, "observe")
            sizes = reply.get("sizes")
            if not isinstance(sizes, dict) or not all(
                isinstance(sizes.get(key), int) and not isinstance(sizes.get(key), bool)
                for key in ("size", "virtual_size")
            ):
                self.program.out_of_protocol("observe", reply, '"sizes" lacks integer "size" and "virtual_size"')
            self._observed = {
                "merged": merged,
                "upper": upper,
                "sizes": {"size": sizes["size"], "virtual_size": sizes["virtual_size"]},
            }
        return self._observed

    def merged(self) -> list[Entry]:
        """The merged tree, as the program observed it."""
        return cast(list[Entry], self._observe()["merged"])

    def upper(self) -> list[Entry]:
        """The writable layer, as the program observed it."""
        return cast(list[Entry], self._observe()["upper"])

    def sizes(self) -> Entry:
        """SIZE and virtual size, as the program measured them."""
        return cast(Entry, self._observe()["sizes"])

    def close(self) -> None:
        """Ask the program to tear the session down; nothing to do if it already failed."""
        try:
            if self.program.alive:
                self.program.ask({"request": "close"})
        finally:
            self.program.end_session()


class ExecFilesystem:
    """The filesystem level of a driver program (a ``Driver``)."""

    def __init__(self, program: ExecProgram) -> None:
        self.program = program
        self.name = f"exec:{program.name}"
        self.features = program.features

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> ExecSession:
        """A fresh session of the program over ``layers`` (bottom first)."""
        missing = [name for name in features.enabled() if name not in self.features]
        if missing:
            declared = ", ".join(sorted(self.features)) or "none"
            raise DriverUnavailable(
                f"{self.name} does not support the overlay feature {missing[0]} (it declares: {declared})"
            )
        return ExecSession(self.program, layers, features)


# -- the layer and store levels ----------------------------------------------------


class ExecLayers:
    """The layer level of a driver program (a ``LayerDriver``, and a ``Committer`` if it declared ``commit``)."""

    def __init__(self, program: ExecProgram) -> None:
        self.program = program
        self.name = f"exec:{program.name}"
        self.commits = "commit" in program.calls
        self.flattens = "flatten" in program.calls
        self.features = program.features

    def flatten(self, archives: list[bytes]) -> Answer:
        """The root filesystem the program makes of ``archives`` (bottom first), or its refusal.

        A program whose hello declared ``calls`` without ``flatten`` is not asked (``DriverUnavailable``).
        """
        if not self.flattens:
            raise DriverUnavailable(
                f"{self.name} does not flatten (its hello declares the layer level's calls: "
                f"{', '.join(sorted(self.program.calls)) or 'none'})"
            )
        layers = [base64.b64encode(archive).decode() for archive in archives]
        reply = self.program.ask({"request": "flatten", "layers": layers})
        if "refused" in reply:
            return Refused(_one_line(str(reply["refused"])))
        return _entries(reply, "entries", self.program, "flatten")

    def commit(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features, ops: tuple[Op, ...]) -> bytes:
        """The layer tar the program's commit of a container over ``layers`` gives after ``ops`` [COMMIT-1].

        A program whose hello did not declare ``commit`` is not asked
        (``DriverUnavailable``), nor is one asked for a feature it did not
        declare. A reply without a ``tar`` that is valid base64 is out of
        protocol. The bytes are not judged here: a tar that does not decode
        is the implementation's divergence, found by the comparison.
        """
        if not self.commits:
            raise DriverUnavailable(
                f"{self.name} does not commit (its hello declares the layer level's calls: "
                f"{', '.join(sorted(self.program.calls)) or 'none'})"
            )
        missing = [name for name in features.enabled() if name not in self.features]
        if missing:
            declared = ", ".join(sorted(self.features)) or "none"
            raise DriverUnavailable(
                f"{self.name} does not support the overlay feature {missing[0]} (it declares: {declared})"
            )
        request: Entry = {
            "request": "commit",
            "features": {name: getattr(features, name) for name in KNOWN},
            "layers": [[encode_entry(entry) for entry in layer] for layer in layers],
            "ops": [encode_op(op) for op in ops],
        }
        reply = self.program.ask(request)
        text = reply.get("tar")
        if not isinstance(text, str):
            self.program.out_of_protocol("commit", reply, 'without a "tar" string')
        try:
            return base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            self.program.out_of_protocol("commit", reply, '"tar" is not valid base64')


class ExecStore:
    """The store level of a driver program (a ``StoreDriver``)."""

    def __init__(self, program: ExecProgram) -> None:
        self.program = program
        self.name = f"exec:{program.name}"

    def run(self, steps: tuple[Step, ...]) -> Entry:
        """The store trace result the program gives for ``steps``."""
        reply = self.program.ask({"request": "run", "steps": [encode_step(step) for step in steps]})
        items = reply.get("steps")
        if reply.get("format") != STORE_RESULT_FORMAT or not isinstance(items, list):
            self.program.out_of_protocol("run", reply, f"not a {STORE_RESULT_FORMAT} document")
        if len(items) != len(steps) or not all(isinstance(item, dict) for item in items):
            self.program.out_of_protocol("run", reply, f"not one step item per step ({len(steps)})")
        return reply
