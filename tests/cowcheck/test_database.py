"""Hypothesis's example database: a failure one run finds, the next run (and every worker) replays first.

``--database DIR`` keeps the examples in a directory; ``--database
redis://HOST:PORT/DB`` in a Redis server that a fleet of machines shares,
tested here against a real ``redis-server`` that the test starts on a free
port and stops.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowcheck.cli.generate import generated_check
from cowcheck.cli.main import main
from cowcheck.drivers.kernel_overlay import KernelOverlay
from tests.cowcheck.test_workers import LyingKernel, check_arguments


def first_seen(report: str) -> int:
    """The example in which the report says the divergence first showed."""
    found = re.search(r"first seen in example (\d+)", report)
    assert found is not None, report
    return int(found.group(1))


def find_then_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str], database: str) -> tuple[int, int]:
    """Run the liar's search twice against ``database`` (one worker, then two); where each first saw it."""
    seen = []
    for workers in (1, 2):
        arguments: argparse.Namespace = check_arguments(
            tmp_path, examples=300, steps=10, workers=workers, database=database, save=str(tmp_path / f"out{workers}")
        )
        status = generated_check(LyingKernel(), arguments)
        report = capsys.readouterr().out
        assert status == 1, report
        assert f"database: {database}" in report
        seen.append(first_seen(report))
    return seen[0], seen[1]


@pytest.mark.kernel
def test_a_directory_database_replays_the_failure_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kernel: KernelOverlay
) -> None:
    """[WHITEOUT-2] The second run, with two workers, meets the liar in its first example."""
    database = tmp_path / "examples"
    first, again = find_then_replay(tmp_path, capsys, str(database))
    assert any(database.rglob("*")), "nothing was kept"
    assert again == 1
    assert first > 1  # the first run had to search: what the second did in one example, the database did


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[str]:
    """A ``redis-server`` of this test's own, on a free port, persisting nothing; its URL."""
    program = shutil.which("redis-server")
    if program is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (Debian's redis-server package)")
        pytest.skip("redis-server is not installed")
    port = free_port()
    server = subprocess.Popen(
        [
            program,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.kernel
def test_a_redis_database_replays_the_failure_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kernel: KernelOverlay, redis_server: str
) -> None:
    """[WHITEOUT-2] Through a real Redis server: the failure is kept there and replayed first."""
    import redis

    first, again = find_then_replay(tmp_path, capsys, redis_server)
    assert first > 1 and again == 1
    client = redis.Redis.from_url(redis_server)
    assert client.keys("hypothesis-example:*"), "nothing was kept in Redis"


def test_a_database_that_cannot_be_used_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable Redis, an unknown scheme, a directory that cannot be made: one line each, exit 2."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    for database, message in (
        (f"redis://127.0.0.1:{free_port()}/0", "cannot reach the Redis server"),
        ("s3://bucket/examples", "give a directory or redis://HOST:PORT[/DB]"),
        (str(blocker / "below"), "cannot make the directory"),
    ):
        status = main(
            ["check", "--driver", "kernel-overlay", "--profile", "dev", "--examples", "1", "--database", database]
        )
        captured = capsys.readouterr()
        assert status == 2, captured
        assert captured.err.count("\n") == 1 and message in captured.err and captured.err.startswith("cowspec: ")
        assert captured.out == ""
