"""A driver that fails during generated checks: one line naming the driver, the call and the error, exit 3.

The same driver failing on a trace file has always said so in one line
(``cowspec: driver ... failed: ...``) and exited 3; a failure met by the
state machine must not read otherwise, whatever Hypothesis made of it
while shrinking (an exception group, a flaky failure) and with workers
too. The drivers here are the model itself, spoken to as an exec program
(``MODEL``, a Python script this file writes) or as a Python class, made
to fail at their third op in each way a driver can: an ``error`` reply, a
reply out of protocol, no reply in time, an exception of the class's own.

The model as an exec program also shows that each worker of ``--workers``
speaks to a program of its own (``test_each_worker_has_a_program_of_its_own``).
"""

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from cowcheck.cli.main import main
from cowcheck.cli.output import EXIT_UNAVAILABLE
from cowcheck.drivers.protocol import DriverError
from cowcheck.machines.fs_machine import Tally, calling
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Op, Stat
from cowspec.fs.features import Features
from tests.cowcheck.test_compare import OtherDriver, OtherSession

ROOT = Path(__file__).resolve().parents[2]

MODEL = """
import json, os, sys, time
sys.path.insert(0, ROOT)
from cowspec.formats.trace import decode_entry, decode_op
from cowspec.fs.features import features_from
from tests.cowcheck.test_compare import OtherSession
HELLO = {"protocol": "cowspec-driver/1", "name": "model", "levels": ["filesystem"], "features": []}
log = open(LOG, "a")
session = None
performed = 0
def reply(answer):
    sys.stdout.write((answer if isinstance(answer, str) else json.dumps(answer)) + "\\n")
    sys.stdout.flush()
for line in sys.stdin:
    request = json.loads(line)
    kind = request["request"]
    log.write(f"{os.getpid()} {kind}\\n")
    log.flush()
    if kind == "hello":
        reply(HELLO)
    elif kind == "open":
        layers = tuple(tuple(decode_entry(entry, "open") for entry in layer) for layer in request["layers"])
        session = OtherSession(layers, features_from(request["features"]), frozenset())
        reply({"ok": True})
    elif kind == "perform":
        performed += 1
        if performed == 3:
            FAILURE
        reply(session.perform(decode_op(request["op"], "perform")))
    elif kind == "observe":
        reply({"merged": session.merged(), "upper": session.upper(), "sizes": session.sizes()})
    else:
        reply({"ok": True})
"""

FAILURES = {
    "error": ('reply({"error": "the disk is on fire"})\n            continue', "the disk is on fire (on perform)"),
    "out of protocol": ('reply("bonjour")\n            continue', "out of protocol: its reply to perform"),
    "timeout": ("time.sleep(60)", "no reply to perform within 5 s"),
}


def model_program(tmp_path: Path, failure: str = "pass") -> tuple[str, Path]:
    """The ``--driver`` of the model as an exec program that does ``failure`` at its third op, and its log
    (one line per request: the program's pid and the request)."""
    log = tmp_path / "requests.log"
    script = tmp_path / "model_driver.py"
    text = MODEL.replace("FAILURE", failure).replace("ROOT", repr(str(ROOT))).replace("LOG", repr(str(log)))
    script.write_text(text)
    return f"exec:{sys.executable} {script}", log


def check(driver: str, tmp_path: Path, *more: str) -> int:
    """``cowspec check --driver driver``: a short generated run with nothing kept."""
    return main(
        [
            "check",
            "--driver",
            driver,
            "--profile",
            "dev",
            "--examples",
            "30",
            "--steps",
            "6",
            "--database",
            "none",
            "--progress",
            "never",
            "--save",
            str(tmp_path / "saved"),
            *more,
        ]
    )


def assert_one_line_failure(capsys: pytest.CaptureFixture[str], status: int, driver: str, said: str) -> None:
    """Exit 3 and one line that names the driver and says ``said``; no Hypothesis word, no traceback."""
    captured = capsys.readouterr()
    assert status == EXIT_UNAVAILABLE, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"cowspec: driver {driver} failed: "), lines[0]
    assert said in lines[0], lines[0]
    assert lines[0].count("failed:") == 1
    everything = captured.out + captured.err
    for jargon in ("ExceptionGroup", "Flaky", "Traceback", "the run stopped with an error", "Hypothesis"):
        assert jargon not in everything, everything


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_an_exec_program_failing_during_generated_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, failure: str, workers: str
) -> None:
    """An ``error`` reply, a reply out of protocol, no reply in time: one line, exit 3, with workers too."""
    monkeypatch.setenv("COWSPEC_DRIVER_TIMEOUT", "5")
    behaviour, said = FAILURES[failure]
    driver, _ = model_program(tmp_path, behaviour)
    status = check(driver, tmp_path, "--workers", workers)
    assert_one_line_failure(capsys, status, "exec:model", said)
    assert not (tmp_path / "saved").exists()


def test_the_model_as_an_exec_program_agrees(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The fake program the failures above start from is a correct driver: its failures are the only ones."""
    driver, _ = model_program(tmp_path)
    status = check(driver, tmp_path)
    assert status == 0, capsys.readouterr()


class ExplodingSession(OtherSession):
    """The model, with a bug of the driver's own: its third op raises ``TypeError``."""

    def perform(self, operation: Op) -> dict[str, object]:
        self.performed = getattr(self, "performed", 0) + 1
        if self.performed == 3:
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
        return super().perform(operation)


class ExplodingDriver(OtherDriver):
    """A Python driver class whose sessions raise at their third op."""

    name = "exploding"

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> ExplodingSession:
        return ExplodingSession(layers, features, self.vary)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_python_driver_raising_during_generated_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    """A Python class's own exception: one line naming the driver, the call and the error, exit 3."""
    status = check(f"{__name__}:ExplodingDriver", tmp_path, "--workers", workers)
    assert_one_line_failure(
        capsys, status, "exploding", "TypeError: unsupported operand type(s) for +: 'int' and 'str' (on perform)"
    )


def test_a_call_that_fails_becomes_one_driver_error() -> None:
    """``calling``: any exception but a divergence or an unavailable driver names the driver and the call; an
    error that already names the driver is kept as it is."""
    driver = OtherDriver()

    def broken() -> None:
        raise KeyError("/a")

    with pytest.raises(DriverError) as raised:
        calling(driver, "merged", broken)
    assert str(raised.value) == "driver other failed: KeyError: '/a' (on merged)"

    def named() -> None:
        raise DriverError("driver other failed: it exited with status 1 during observe")

    with pytest.raises(DriverError) as kept:
        calling(driver, "merged", named)
    assert str(kept.value) == "driver other failed: it exited with status 1 during observe"
    assert calling(driver, "sizes", lambda: 7) == 7


def test_each_worker_has_a_program_of_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With ``--workers 2``, the program the parent shook hands with serves no worker: each worker starts its
    own, and the run agrees (one program serving both would interleave their requests)."""
    driver, log = model_program(tmp_path)
    status = check(driver, tmp_path, "--workers", "2")
    assert status == 0, capsys.readouterr()
    requests = [line.split() for line in log.read_text().splitlines()]
    parent = requests[0][0]  # the handshake cowspec makes before the run, in its own process
    assert requests[0][1] == "hello"
    assert not [pid for pid, kind in requests if pid == parent and kind != "hello" and kind != "bye"]
    served = {pid for pid, kind in requests if kind == "open"}
    assert len(served) == 2 and parent not in served
    hellos = Counter(pid for pid, kind in requests if kind == "hello")
    assert all(hellos[pid] == 1 for pid in served)  # each worker shook hands with its own program
    assert str(os.getpid()) not in served


def test_the_results_mix_counts_an_ok_with_a_null_errno_as_ok() -> None:
    """A reply of ``"ok": true`` beside ``"errno": null`` is an ok, not an errno named None."""
    tally = Tally()
    tally.count(Stat("/a"), {"ok": True, "errno": None, "value": {}})
    tally.count(Stat("/b"), {"errno": "ENOENT"})
    assert tally.results == {"ok": 1, "ENOENT": 1}
    assert tally.by_op == {"stat ok": 1, "stat ENOENT": 1}
