"""The exec driver: cowspec's side of ``cowspec-driver/1``, and a real program speaking it.

The first half drives tiny fake programs (Python scripts this file writes)
that break the protocol in every way the contract names, and checks that
each failure is one exception with a one-line message, and that no process
the program started is left. The second half runs the example driver
``examples/drivers/overlay_driver.py`` (the kernel's overlayfs, standard
library only) through the protocol against the model: the kept vectors and
a short run of the state machine.
"""

import base64
import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.compare import commit_result, compare_commit, model_commit, result_differences
from cowcheck.drivers import exec_driver
from cowcheck.drivers.exec_driver import ExecProgram
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.layer_tools import Spec, UmociLayers
from cowcheck.drivers.protocol import Driver, DriverError, DriverUnavailable, Refused, committer_of
from cowcheck.drivers.runner import run_real
from cowcheck.machines import profiles
from cowcheck.machines.fs_machine import Tally, first_divergence, machine_for
from cowcheck.matrix import CASES, run_matrix
from cowspec.formats.oracle import model_run, oracle, oracle_following
from cowspec.formats.store_trace import decode_step, decode_store_trace, encode_step, run_store_model
from cowspec.formats.trace import RESULT_FORMAT, decode_entry, decode_op, decode_trace
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Read, Write
from cowspec.fs.features import Features
from cowspec.oci.commit import commit
from cowspec.oci.layer_tar import LayerTar, TarEntry, encode_layer
from tests.fs import every_scenario
from tests.support import Scenario

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "conformance" / "cowcheck" / "vector_set" / "found"
CURATED = ROOT / "conformance" / "cowcheck" / "vector_set" / "curated"


def _features_on(path: Path) -> set[str]:
    return {name for name, on in json.loads(path.read_text()).get("features", {}).items() if on}


COMMITTED = sorted(VECTORS.glob("fs-*.json")) + sorted(
    path
    for path in CURATED.glob("*.json")
    if not path.name.startswith("rejected-") and not {"index", "metacopy"} & _features_on(path)
)
"""Every filesystem vector the set holds that the spec accepts, but those needing ``index`` or ``metacopy``, which
the example does not declare (FEATURE-1): the example's commits are checked on each."""
EXAMPLE = ROOT / "examples" / "drivers" / "overlay_driver.py"
CONTRACT = ROOT / "docs" / "formats" / "driver-protocol.md"
SCENARIOS: list[Scenario] = every_scenario()

# -- fake programs -------------------------------------------------------------------

FAKE = """
import json, os, subprocess, sys, time
HELLO = {"protocol": "cowspec-driver/1", "name": "fake", "levels": ["filesystem"], "features": []}
OBSERVED = {"merged": [], "upper": [], "sizes": {"size": 0, "virtual_size": 0}}
with open(sys.argv[1], "w") as pidfile:
    pidfile.write(str(os.getpid()))
log = open(sys.argv[2], "a")
def reply(answer):
    sys.stdout.write((answer if isinstance(answer, str) else json.dumps(answer)) + "\\n")
    sys.stdout.flush()
def spawn_grandchild():
    child = subprocess.Popen(["sleep", "300"])
    with open(sys.argv[1], "a") as pidfile:
        pidfile.write(" " + str(child.pid))
for line in sys.stdin:
    request = json.loads(line)
    kind = request["request"]
    log.write(line)
    log.flush()
BEHAVIOUR
    if kind == "hello":
        reply(HELLO)
    elif kind == "observe":
        reply(OBSERVED)
    elif kind == "perform":
        reply({"ok": True})
    else:
        reply({"ok": True})
"""


class Fake:
    """A fake driver program: its command line, and what it left to look at."""

    def __init__(self, directory: Path, behaviour: str) -> None:
        self.pidfile = directory / "pids"
        self.logfile = directory / "requests.jsonl"
        body = "\n".join("    " + line for line in behaviour.strip().splitlines())
        self.script = FAKE.replace("BEHAVIOUR", body)
        self.argv = [sys.executable, "-c", self.script, str(self.pidfile), str(self.logfile)]

    def pids(self) -> list[int]:
        """The program's pid and those of the processes it spawned."""
        return [int(each) for each in self.pidfile.read_text().split()] if self.pidfile.exists() else []

    def requests(self) -> list[dict[str, Any]]:
        """Every request the program received, in order."""
        if not self.logfile.exists():
            return []
        return [json.loads(line) for line in self.logfile.read_text().splitlines()]


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return status.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def assert_none_left(fake: Fake) -> None:
    """No process of the fake program is still running (a SIGKILL lands within a moment)."""
    pids = fake.pids()
    assert pids, "the fake program never started"
    deadline = time.monotonic() + 5
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if running(pid)]


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message, repr(message)
    return message


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Any]:
    """``fake(behaviour)``: a fake program, closed at the end of the test."""
    made: list[ExecProgram] = []

    def make(behaviour: str = "pass") -> tuple[Fake, ExecProgram]:
        directory = tmp_path / f"fake{len(made)}"
        directory.mkdir()
        program = Fake(directory, behaviour)
        made.append(ExecProgram(program.argv))
        return program, made[-1]

    yield make
    for each in made:
        each.close()


LAYERS: tuple[tuple[LayerEntry, ...], ...] = (
    (decode_entry({"path": "/a", "type": "file", "mode": 420, "data": "aGkK"}, "test"),),
)


def test_a_program_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(DriverError) as missing:
        _ = ExecProgram([str(tmp_path / "no-such-driver")]).levels
    assert "not found" in one_line(missing.value)
    with pytest.raises(DriverError) as off_path:
        _ = ExecProgram(["cowspec-no-such-driver-program"]).levels
    assert "not found on PATH" in one_line(off_path.value)
    plain = tmp_path / "plain.py"
    plain.write_text("print()\n")
    with pytest.raises(DriverError) as not_executable:
        _ = ExecProgram([str(plain)]).levels
    assert "not executable" in one_line(not_executable.value)


def test_the_handshake_declares_name_levels_and_features(fake: Any) -> None:
    script, program = fake(
        """if kind == "hello":
    reply({**HELLO, "name": "mine", "levels": ["filesystem", "store", "teleport"],
           "features": ["redirect_dir", "warp"], "version": "2.1", "later": {"added": True}})
    continue"""
    )
    assert program.name == "mine"
    assert program.levels == {"filesystem", "store"}  # names a later protocol may add are ignored
    assert program.features == {"redirect_dir"}
    assert program.version == "2.1"
    assert program.filesystem().name == "exec:mine"
    hello = script.requests()[0]
    assert hello["request"] == "hello" and hello["protocol"] == "cowspec-driver/1" and hello["cowspec"]
    with pytest.raises(DriverUnavailable) as layer:
        program.layer()
    assert "layer" in one_line(layer.value)
    program.close()
    assert [each["request"] for each in script.requests()] == ["hello", "bye"]
    assert_none_left(script)


PING = """if kind == "ping":
    reply({"ok": True, "pid": os.getpid()})
    continue"""


def test_a_forked_worker_starts_a_program_of_its_own(fake: Any) -> None:
    """A process forked after the handshake (a worker of ``--workers``) never speaks to the parent's program:
    it starts its own, with its own handshake; closing it, and cowspec's exit handler, leave the parent's be."""
    script, program = fake(PING)
    parent = program.ask({"request": "ping"})["pid"]
    context = multiprocessing.get_context("fork")

    def worker(sender: Any) -> None:
        first = program.ask({"request": "ping"})["pid"]
        second = program.ask({"request": "ping"})["pid"]
        program.close()
        exec_driver._stop_every_program()  # what runs at exit
        sender.send((first, second, running(first)))

    children = []
    for _ in range(2):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=worker, args=(sender,))
        process.start()
        sender.close()
        children.append((process, receiver))
    # A worker that failed sends nothing: its pipe's end is seen within the wait, not waited on forever.
    answers = []
    for _, receiver in children:
        assert receiver.poll(30), "a worker said nothing in 30 s"
        try:
            answers.append(receiver.recv())
        except EOFError:
            pytest.fail("a worker ended without an answer")
    for process, _ in children:
        process.join(10)
        assert process.exitcode == 0
    for first, second, still_running in answers:
        assert first == second != parent and not still_running  # its own program, which it stopped
    assert answers[0][0] != answers[1][0]
    # The parent's program still answers, and heard nothing from the workers.
    assert program.ask({"request": "ping"})["pid"] == parent
    heard = [each["request"] for each in script.requests()]
    assert heard.count("hello") == 3 and heard.count("ping") == 2 * 2 + 2
    program.close()
    assert not running(parent)


def test_a_program_that_dies_at_hello(fake: Any) -> None:
    script, program = fake('print("cannot find my config", file=sys.stderr)\nsys.exit(7)')
    with pytest.raises(DriverError) as raised:
        _ = program.levels
    message = one_line(raised.value)
    assert "exited with status 7" in message and "hello" in message and "cannot find my config" in message
    assert_none_left(script)
    with pytest.raises(DriverError):  # it stays failed, and is not started again
        _ = program.name
    assert len(script.requests()) == 1


def test_a_program_that_dies_in_a_session(fake: Any) -> None:
    script, program = fake('if kind == "perform":\n    spawn_grandchild()\n    os.kill(os.getpid(), 9)')
    session = program.filesystem().open(LAYERS, Features())
    with pytest.raises(DriverError) as raised:
        session.perform(Read("/a"))
    message = one_line(raised.value)
    assert "killed by signal SIGKILL" in message and "during perform" in message
    session.close()  # nothing to close any more, and no second error
    assert_none_left(script)  # the grandchild in its group went with it
    with pytest.raises(DriverError):
        program.filesystem().open(LAYERS, Features())


@pytest.mark.parametrize(
    ("behaviour", "quoted"),
    [
        ('if kind == "hello":\n    reply("Segmentation fault (not JSON)")\n    continue', "Segmentation fault"),
        ('if kind == "hello":\n    reply("[1, 2]")\n    continue', "[1, 2]"),
        ('if kind == "hello":\n    reply({"name": "x", "levels": ["filesystem"]})\n    continue', "protocol"),
        ('if kind == "hello":\n    reply({**HELLO, "levels": []})\n    continue', "levels"),
        ('if kind == "hello":\n    reply({**HELLO, "calls": "commit"})\n    continue', "calls"),
        ('if kind == "perform":\n    reply({"value": "x" * 500})\n    continue', "xxxx"),
        (
            'if kind == "observe":\n    reply({"merged": [], "upper": [{"no": "path"}], "sizes": {}})\n    continue',
            "upper",
        ),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "no-protocol",
        "no-level",
        "calls-not-a-list",
        "perform-without-ok",
        "observe-without-path",
    ],
)
def test_a_reply_out_of_protocol(fake: Any, behaviour: str, quoted: str) -> None:
    script, program = fake(behaviour)
    with pytest.raises(DriverError) as raised:
        session = program.filesystem().open(LAYERS, Features())
        session.perform(Read("/a"))
        session.merged()
    message = one_line(raised.value)
    assert "out of protocol" in message and quoted in message
    assert len(message) < 400  # the reply is quoted, cut short
    assert_none_left(script)


def test_a_program_that_does_not_answer_in_time(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COWSPEC_DRIVER_TIMEOUT", "0.5")
    script, program = fake('if kind == "perform":\n    spawn_grandchild()\n    time.sleep(300)')
    session = program.filesystem().open(LAYERS, Features())
    started = time.monotonic()
    with pytest.raises(DriverError) as raised:
        session.perform(Read("/a"))
    assert time.monotonic() - started < 5
    message = one_line(raised.value)
    assert "no reply to perform within 0.5 s" in message and "killed" in message
    assert_none_left(script)


def test_a_program_that_never_says_hello(tmp_path: Path) -> None:
    """The limit given to ExecProgram holds for the handshake too."""
    script = Fake(tmp_path, 'if kind == "hello":\n    time.sleep(300)')
    program = ExecProgram(script.argv, timeout=0.3)
    with pytest.raises(DriverError) as raised:
        _ = program.levels
    assert "no reply to hello within 0.3 s" in one_line(raised.value)
    assert_none_left(script)
    program.close()


def test_a_timeout_that_is_not_a_number(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COWSPEC_DRIVER_TIMEOUT", "soon")
    script, program = fake()
    with pytest.raises(DriverError) as raised:
        _ = program.levels
    assert "COWSPEC_DRIVER_TIMEOUT" in one_line(raised.value) and "'soon'" in str(raised.value)
    assert script.pids() == []  # refused before anything started


def test_an_error_reply(fake: Any) -> None:
    script, program = fake('if kind == "perform":\n    reply({"error": "disk on fire\\nand more"})\n    continue')
    session = program.filesystem().open(LAYERS, Features())
    with pytest.raises(DriverError) as raised:
        session.perform(Read("/a"))
    message = one_line(raised.value)
    assert message == "driver exec:fake failed: disk on fire and more (on perform)"
    session.close()  # the program is still in step: the session is closed in the ordinary way
    program.close()
    assert [each["request"] for each in script.requests()] == ["hello", "open", "perform", "close", "bye"]
    assert_none_left(script)


def test_another_protocol_version(fake: Any) -> None:
    script, program = fake('if kind == "hello":\n    reply({**HELLO, "protocol": "cowspec-driver/2"})\n    continue')
    with pytest.raises(DriverError) as raised:
        _ = program.levels
    message = one_line(raised.value)
    assert "'cowspec-driver/2'" in message and "'cowspec-driver/1'" in message
    assert_none_left(script)


def test_a_program_that_cannot_run_here(fake: Any) -> None:
    behaviour = (
        'if kind == "hello":\n    reply({"protocol": "cowspec-driver/1", "unavailable": "needs root"})\n    continue'
    )
    script, program = fake(behaviour)
    with pytest.raises(DriverUnavailable) as raised:
        program.filesystem()
    assert one_line(raised.value) == "needs root"
    with pytest.raises(DriverUnavailable):  # and it says so again, without starting it again
        _ = program.levels
    assert len(script.requests()) == 1
    assert_none_left(script)


def test_a_feature_the_program_did_not_declare(fake: Any) -> None:
    script, program = fake()
    driver = program.filesystem()
    assert driver.features == frozenset()
    with pytest.raises(DriverUnavailable) as raised:
        driver.open(LAYERS, Features(redirect_dir=True))
    assert "redirect_dir" in one_line(raised.value) and "exec:fake" in str(raised.value)
    assert [each["request"] for each in script.requests()] == ["hello"]  # nothing was asked of it


def test_a_session_speaks_the_protocol(fake: Any) -> None:
    """open, perform and observe carry the trace's own JSON; one observe serves the three views."""
    script, program = fake(
        """if kind == "hello":
    reply({**HELLO, "features": ["redirect_dir"]})
    continue
if kind == "perform":
    reply({"errno": "ENOENT", "later": 1})
    continue
if kind == "observe":
    reply({**OBSERVED, "upper": [{"path": "/a", "type": "whiteout"}], "sizes": {"size": 1, "virtual_size": 3}})
    continue"""
    )
    driver: Driver = program.filesystem()
    session = driver.open(LAYERS, Features(redirect_dir=True))
    assert session.merged() == []
    assert session.upper() == [{"path": "/a", "type": "whiteout"}]
    assert session.perform(Write("/a", 2, b"x")) == {"errno": "ENOENT"}  # unknown fields are left out
    assert session.sizes() == {"size": 1, "virtual_size": 3}
    assert session.merged() == [] and session.upper() != []
    session.close()
    requests = script.requests()
    assert [each["request"] for each in requests] == ["hello", "open", "observe", "perform", "observe", "close"]
    opened = requests[1]
    assert opened["features"] == {"redirect_dir": True, "index": False, "metacopy": False}
    assert [[decode_entry(entry, "sent") for entry in layer] for layer in opened["layers"]] == [list(LAYERS[0])]
    assert decode_op(requests[3]["op"], "sent") == Write("/a", 2, b"x")
    with pytest.raises(DriverError):  # one session at a time
        session = driver.open((), Features())
        driver.open((), Features())


def test_the_layer_and_store_levels(fake: Any) -> None:
    entries = [{"path": "/a", "type": "file", "mode": 420, "uid": 0, "gid": 0, "size": 3, "sha256": "0" * 64}]
    script, program = fake(
        f"""if kind == "hello":
    reply({{**HELLO, "levels": ["layer", "store"]}})
    continue
if kind == "flatten":
    reply({{"refused": "bad tar"}} if len(request["layers"]) > 1 else {{"entries": {entries!r}}})
    continue
if kind == "run":
    reply({{"format": "cowspec-store-trace-result/1", "steps": [{{"ok": True}} for _ in request["steps"]]}})
    continue"""
    )
    layers = program.layer()
    assert layers.name == "exec:fake"
    assert layers.flatten([b"one"]) == entries
    assert layers.flatten([b"one", b"two"]) == Refused("bad tar")
    steps = decode_store_trace(json.loads((VECTORS / "store-build.json").read_text()))
    result = program.store().run(steps)
    assert result["steps"] == [{"ok": True}] * len(steps)
    requests = script.requests()
    assert [base64.b64decode(each) for each in requests[2]["layers"]] == [b"one", b"two"]
    sent = requests[3]["steps"]
    assert tuple(decode_step(each, "sent") for each in sent) == steps


COMMITTED_LAYER = LayerTar(
    (TarEntry("/a", "file", 0o600, 5, 6, data=b"x"), TarEntry("/d", "dir", 0o700)), frozenset({"/b"}), frozenset({"/d"})
)
COMMITTED_TAR = base64.b64encode(encode_layer(COMMITTED_LAYER)).decode()
COMMITTING = f"""if kind == "hello":
    reply({{**HELLO, "levels": ["layer"], "calls": ["commit", "teleport"]}})
    continue
if kind == "commit":
    reply({{"tar": {COMMITTED_TAR!r}}})
    continue"""


def test_a_program_that_commits(fake: Any) -> None:
    """[COMMIT-1] ``calls`` declares ``commit``; the request carries layers, features and ops; the tar comes back."""
    script, program = fake(COMMITTING)
    layers = program.layer()
    assert program.calls == {"commit"}  # a call cowspec does not know is ignored
    assert layers.commits and not layers.flattens
    assert committer_of(layers) is not None
    ops = (Write("/a", 2, b"x"), Read("/a"))
    archive = layers.commit(LAYERS, Features(), ops)
    assert commit_result(archive) == {
        "format": "cowspec-commit-result/1",
        "entries": [
            {"path": "/a", "type": "file", "mode": 0o600, "uid": 5, "gid": 6, "size": 1,
             "sha256": hashlib.sha256(b"x").hexdigest()},
            {"path": "/b", "type": "whiteout"},
            {"path": "/d", "type": "dir", "mode": 0o700, "uid": 0, "gid": 0, "opaque": True},
        ],
    }  # fmt: skip
    sent = script.requests()[-1]
    assert sent["request"] == "commit"
    assert sent["features"] == {"redirect_dir": False, "index": False, "metacopy": False}
    assert [[decode_entry(entry, "sent") for entry in layer] for layer in sent["layers"]] == [list(LAYERS[0])]
    assert tuple(decode_op(op, "sent") for op in sent["ops"]) == ops
    with pytest.raises(DriverUnavailable) as flatten:  # it did not declare flatten: it is not asked
        layers.flatten([b"tar"])
    assert "does not flatten" in one_line(flatten.value)
    with pytest.raises(DriverUnavailable) as feature:
        layers.commit(LAYERS, Features(redirect_dir=True), ops)
    assert "redirect_dir" in one_line(feature.value)
    assert [each["request"] for each in script.requests()] == ["hello", "commit"]


def test_a_program_that_does_not_commit(fake: Any) -> None:
    """Without ``calls`` the layer level is flatten alone: cowspec never asks such a program to commit."""
    script, program = fake('if kind == "hello":\n    reply({**HELLO, "levels": ["layer"]})\n    continue')
    layers = program.layer()
    assert program.calls == {"flatten"} and layers.flattens and not layers.commits
    assert committer_of(layers) is None
    with pytest.raises(DriverUnavailable) as raised:
        layers.commit(LAYERS, Features(), ())
    assert "does not commit" in one_line(raised.value)
    assert [each["request"] for each in script.requests()] == ["hello"]


def answering(answer: str) -> str:
    """A committing program's behaviour, its commit answered with ``answer`` (a Python expression) instead."""
    return COMMITTING.replace(f"{{'tar': {COMMITTED_TAR!r}}}", answer).replace(f'{{"tar": {COMMITTED_TAR!r}}}', answer)


@pytest.mark.parametrize(
    "answer",
    ['{"tar": "not base64!"}', '{"tar": 17}', '{"layer": "AAAA"}', '{"tar": "QUJ"}'],
    ids=["bad-base64", "not-a-string", "no-tar", "bad-padding"],
)
def test_a_commit_reply_out_of_protocol(fake: Any, answer: str) -> None:
    """A reply without a ``tar`` that is valid base64 is out of protocol: one line, the program killed."""
    behaviour = answering(answer)
    assert answer in behaviour
    script, program = fake(behaviour)
    with pytest.raises(DriverError) as raised:
        program.layer().commit(LAYERS, Features(), ())
    message = one_line(raised.value)
    assert "out of protocol" in message and "commit" in message and len(message) < 400
    assert_none_left(script)


def cowspec_command(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``cowspec ARGUMENTS`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "cowcheck.cli", *arguments], capture_output=True, text=True, check=False, timeout=300
    )


def program_file(tmp_path: Path, behaviour: str) -> str:
    """A fake program written to a file: the ``--driver exec:...`` that runs it."""
    tmp_path.mkdir(exist_ok=True)
    fake_program = Fake(tmp_path, behaviour)
    script = tmp_path / "driver.py"
    script.write_text(fake_program.script)
    return f"exec:{sys.executable} {script} {fake_program.pidfile} {fake_program.logfile}"


def test_a_committed_tar_that_does_not_decode_is_a_divergence(tmp_path: Path) -> None:
    """[COMMIT-1] Valid base64 that is no layer tar is what the implementation committed: it diverges, in one line."""
    garbage = base64.b64encode(b"not a tar " * 100).decode()
    driver = program_file(tmp_path, answering(f'{{"tar": "{garbage}"}}'))
    trace = VECTORS / "fs-planted-hidden-whiteout.json"
    done = cowspec_command("check", "--driver", driver, str(trace))
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "COMMIT-1" in done.stderr and "not a layer tar" in done.stderr
    result = json.loads(done.stdout)
    assert result["agrees"] is False and "invalid" in result
    found = [(each["field"], each["path"], each["rule"]) for each in result["differences"]]
    assert found == [("commit", "/", "COMMIT-1")]
    ran = cowspec_command("run", "--driver", driver, str(trace))
    assert ran.returncode == 0 and json.loads(ran.stdout)["format"] == "cowspec-commit-result/1"


def test_a_commit_in_bad_base64_ends_in_one_line(tmp_path: Path) -> None:
    """The CLI: a reply out of protocol is the driver failing, one line and exit 3."""
    driver = program_file(tmp_path, answering('{"tar": "%%%"}'))
    done = cowspec_command("check", "--driver", driver, str(VECTORS / "fs-planted-hidden-whiteout.json"))
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("cowspec: driver exec:fake failed: out of protocol")


def test_a_commit_that_agrees_through_the_cli(tmp_path: Path) -> None:
    """[COMMIT-1] A program that commits what the model commits agrees; a trace needs a layer level that commits."""
    trace = VECTORS / "fs-no-layers-root-is-merged.json"
    decoded = decode_trace(json.loads(trace.read_text()))
    expected = model_commit(decoded)
    assert any(entry.get("opaque") is True for entry in expected)  # the vector exercises an opaque directory
    archive = base64.b64encode(encode_layer(commit(model_run(decoded).container))).decode()
    done = cowspec_command(
        "check", "--driver", program_file(tmp_path, answering(f'{{"tar": "{archive}"}}')), str(trace)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"format": "cowspec-commit-result/1", "entries": expected, "agrees": True,
                                       "differences": []}  # fmt: skip
    flattening = program_file(
        tmp_path / "x", 'if kind == "hello":\n    reply({**HELLO, "levels": ["layer"]})\n    continue'
    )
    refused = cowspec_command("check", "--driver", flattening, str(trace))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "does not commit" in refused.stderr


@pytest.mark.parametrize("path", sorted(VECTORS.glob("store-*.json")), ids=lambda path: path.stem)
def test_store_steps_are_sent_as_the_trace_wrote_them(path: Path) -> None:
    steps = decode_store_trace(json.loads(path.read_text()))
    assert tuple(decode_step(encode_step(step), "again") for step in steps) == steps


def test_a_program_that_ignores_goodbye_is_killed(fake: Any) -> None:
    script, program = fake('if kind == "bye":\n    spawn_grandchild()\n    time.sleep(300)')
    _ = program.levels
    started = time.monotonic()
    program.close()
    assert time.monotonic() - started < 8
    assert_none_left(script)


def cowspec_process(script: Fake, ending: str) -> None:
    """A cowspec process that starts ``script``, handshakes, and ends with ``ending``."""
    code = (
        "import os, sys\nfrom cowcheck.drivers.exec_driver import ExecProgram\n"
        f"program = ExecProgram({script.argv!r})\nassert program.levels\n{ending}\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False, timeout=60)


def test_cowspec_says_goodbye_when_it_exits(tmp_path: Path) -> None:
    """An ordinary exit closes every program still open (atexit): it is told bye."""
    script = Fake(tmp_path, "pass")
    cowspec_process(script, "sys.exit(0)")
    assert [each["request"] for each in script.requests()] == ["hello", "bye"]
    assert_none_left(script)


def test_no_program_outlives_a_killed_cowspec(tmp_path: Path) -> None:
    """A SIGKILL of cowspec takes the program with it (PR_SET_PDEATHSIG), though it never reads on to EOF."""
    script = Fake(tmp_path, 'if kind == "hello":\n    reply(HELLO)\n    time.sleep(300)')
    cowspec_process(script, "os.kill(os.getpid(), 9)")
    assert_none_left(script)


# -- the example driver on the kernel's overlayfs --------------------------------------


@pytest.fixture(scope="module")
def overlay_program(kernel: KernelOverlay) -> Iterator[ExecProgram]:
    """The example driver, started once for the module (``kernel`` makes it fail in CI where it cannot run)."""
    program = ExecProgram([sys.executable, str(EXAMPLE)])
    yield program
    program.close()


@pytest.mark.kernel
@pytest.mark.parametrize("path", sorted(VECTORS.glob("fs-*.json")), ids=lambda path: path.stem)
def test_the_example_driver_agrees_on_the_vectors(overlay_program: ExecProgram, path: Path) -> None:
    """[OBSERVE-1] Through the protocol, the kernel shows what the model says, as a whole run and step by step."""
    driver = overlay_program.filesystem()
    assert driver.name == "exec:python-overlay" and driver.features == {"redirect_dir"}
    trace = decode_trace(json.loads(path.read_text()))
    observed = run_real(driver, trace)
    assert observed["format"] == RESULT_FORMAT and len(cast(list[object], observed["results"])) == len(trace.ops)
    assert result_differences(oracle_following(trace, observed), observed) == []
    assert first_divergence(driver, trace) is None


@pytest.mark.kernel
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[each.name for each in SCENARIOS])
def test_the_example_driver_agrees_on_the_scenarios(
    overlay_program: ExecProgram, kernel: KernelOverlay, scenario: Scenario
) -> None:
    """[OBSERVE-1] Every filesystem scenario: the model allows what it did, and cowspec's own driver did the same."""
    trace = decode_trace(scenario.trace())
    observed = run_real(overlay_program.filesystem(), trace)
    assert result_differences(oracle_following(trace, observed), observed) == []
    assert observed == run_real(kernel, trace)


@pytest.mark.kernel
@pytest.mark.parametrize("features", [Features(), Features(redirect_dir=True)], ids=["docker", "redirect_dir"])
def test_the_example_driver_agrees_in_the_state_machine(overlay_program: ExecProgram, features: Features) -> None:
    """[OBSERVE-1] A short run of the machine: every result, tree and size after every step, over the protocol."""
    tally = Tally()
    # A short derandomized run: the protocol is what is under test here; the kernel's
    # own long run is test_machine's. planted_bug_search() is the suite's derandomized budget.
    budget = settings(profiles.planted_bug_search(), max_examples=40, stateful_step_count=20)
    run_state_machine_as_test(machine_for(overlay_program.filesystem(), tally, features), settings=budget)
    assert tally.examples >= 40 and tally.ops > tally.examples


@pytest.mark.kernel
def test_the_example_driver_leaves_nothing_mounted(overlay_program: ExecProgram) -> None:
    """Its mounts live in its own namespace: none is seen here, even while a session is open."""
    session = overlay_program.filesystem().open(LAYERS, Features())
    try:
        with open("/proc/self/mountinfo") as table:
            assert "overlay-driver" not in table.read()
        assert session.perform(Read("/a")) == {"ok": True, "value": "aGkK"}
    finally:
        session.close()


@pytest.mark.kernel
@pytest.mark.parametrize("path", COMMITTED, ids=lambda path: path.stem)
def test_the_example_driver_commits_as_the_model_does(overlay_program: ExecProgram, path: Path) -> None:
    """[COMMIT-1] The example's commit (its upper directory tarred) holds what the model's commit holds."""
    trace = decode_trace(json.loads(path.read_text()))
    committer = committer_of(overlay_program.layer())
    assert committer is not None
    observed = commit_result(committer.commit(trace.layers, trace.features, trace.ops))
    assert "entries" in observed, observed
    assert compare_commit(model_commit(trace), observed) == []


@pytest.mark.kernel
def test_the_example_driver_commits_the_contracts_example(overlay_program: ExecProgram) -> None:
    """[COMMIT-1] The contract's commit: a hardlink, a whiteout and an opaque directory, as the contract shows them."""
    request = next(each for each in contract_documents() if each.get("request") == "commit")
    shown = next(each for each in contract_documents() if each.get("format") == "cowspec-commit-result/1")
    trace = decode_trace({"format": "cowspec-trace/1", "layers": request["layers"], "ops": request["ops"]})
    archive = overlay_program.layer().commit(trace.layers, trace.features, trace.ops)
    assert commit_result(archive) == shown


@pytest.mark.kernel
def test_a_planted_commit_bug_is_caught(kernel: KernelOverlay) -> None:
    """[COMMIT-1] ``--bug=commit-drops-opaque``: ``cowspec check`` on the layer level diverges, naming COMMIT-1."""
    trace = str(VECTORS / "fs-no-layers-root-is-merged.json")
    example = f"exec:{sys.executable} {EXAMPLE} --levels=layer"
    planted = cowspec_command("check", "--driver", f"{example} --bug=commit-drops-opaque", trace)
    assert planted.returncode == 1, planted.stderr
    assert planted.stderr.count("\n") == 1 and "[COMMIT-1]" in planted.stderr and "opaque" in planted.stderr
    found = json.loads(planted.stdout)["differences"]
    assert [(each["field"], each["rule"], each.get("attribute")) for each in found] == [
        ("commit", "COMMIT-1", "opaque")
    ]
    correct = cowspec_command("check", "--driver", example, trace)
    assert correct.returncode == 0, correct.stderr
    assert json.loads(correct.stdout)["agrees"] is True


# -- the contract ------------------------------------------------------------------------


def contract_documents() -> list[dict[str, Any]]:
    return [json.loads(block) for block in json_blocks()]


def json_blocks() -> list[str]:
    return re.findall(r"```json\n(.*?)```", CONTRACT.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_contract_shows_what_the_model_says() -> None:
    """The session and the store run of the contract's examples are what the model gives for them."""
    documents = [json.loads(block) for block in json_blocks()]
    opened = next(each for each in documents if each.get("request") == "open")
    appended = next(each for each in documents if each.get("request") == "perform")["op"]
    renamed = {"op": "rename", "src": "/etc", "dst": "/var"}
    trace = {"format": "cowspec-trace/1", "layers": opened["layers"], "ops": [appended, renamed]}
    expected = oracle(decode_trace(trace))
    assert expected["results"] == [{"ok": True}, {"errno": "EXDEV"}]
    observed = next(each for each in documents if "merged" in each)
    assert observed == {key: expected[key] for key in ("merged", "upper", "sizes")}
    steps = next(each for each in documents if each.get("request") == "run")["steps"]
    store = decode_store_trace({"format": "cowspec-store-trace/1", "steps": steps})
    shown = next(each for each in documents if each.get("format") == "cowspec-store-trace-result/1")
    assert shown == run_store_model(store)


def test_the_contracts_commit_is_what_the_model_commits() -> None:
    """[COMMIT-1] The entries the contract shows for its commit request are the model's commit of it."""
    documents = contract_documents()
    request = next(each for each in documents if each.get("request") == "commit")
    shown = next(each for each in documents if each.get("format") == "cowspec-commit-result/1")
    trace = {"format": "cowspec-trace/1", "features": request["features"], "layers": request["layers"],
             "ops": request["ops"]}  # fmt: skip
    assert shown["entries"] == model_commit(decode_trace(trace))
    assert {entry["type"] for entry in shown["entries"]} >= {"hardlink", "whiteout", "dir", "file"}
    reply = next(each for each in documents if "tar" in each)
    assert base64.b64decode(reply["tar"], validate=True)
    hello = next(each for each in documents if "calls" in each)
    assert "commit" in hello["calls"] and "layer" in hello["levels"]


def test_every_example_of_the_contract_is_valid() -> None:
    """Each example is one JSON object; the ops and layers in requests are valid cowspec-trace/1."""
    blocks = json_blocks()
    assert len(blocks) >= 8
    for block in blocks:
        document = json.loads(block)
        assert isinstance(document, dict), block
        if document.get("request") == "open":
            for layer in document["layers"]:
                for entry in layer:
                    decode_entry(entry, "contract")
        if document.get("request") == "perform":
            decode_op(document["op"], "contract")
        if document.get("request") == "commit":
            for layer in document["layers"]:
                for entry in layer:
                    decode_entry(entry, "contract")
            for each in document["ops"]:
                decode_op(each, "contract")
            assert set(document["features"]) == {"redirect_dir", "index", "metacopy"}
        if document.get("request") == "run":
            for step in document["steps"]:
                decode_step(step, "contract")


UMOCI_EXAMPLE = ROOT / "examples" / "drivers" / "umoci_layers.py"


def test_the_umoci_example_flattens_as_umoci_does() -> None:
    """[APPLY-1] The layer level through the protocol: every case of the matrix, as the built-in driver sees it."""
    try:
        built_in = UmociLayers()
        program = ExecProgram([sys.executable, str(UMOCI_EXAMPLE)])
        through_protocol = program.layer()
    except DriverUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"umoci tests cannot run in CI: {error}")
        pytest.skip(str(error))
    try:
        assert through_protocol.name == "exec:umoci-layers"
        rows = run_matrix([through_protocol, built_in], Spec())
    finally:
        program.close()
    assert len(rows) == len(CASES)
    for case, _, (exec_cell, built_in_cell) in rows:
        assert exec_cell == built_in_cell, case.name
    assert sum(cells[0].startswith("agrees") for _, _, cells in rows) > len(rows) // 2
    assert any("refused" in cells[0] for _, _, cells in rows)
