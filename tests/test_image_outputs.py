"""What ``flatten`` writes, and where: closed standard streams, ``--tar`` files, the tar's bytes and its memory."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cowspec.layer_tar import decode_layer

from .test_image_layouts import docker_save, layer


def run(*arguments: str, setup: Callable[[], None] | None = None, cwd: str | None = None) -> tuple[int, list[str]]:
    """Exit status and standard error lines of ``cowspec ARGUMENTS``, ``setup`` run in the child first."""
    done = subprocess.run(
        [sys.executable, "-m", "cowcheck.cli", *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=setup,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
        check=False,
    )
    return done.returncode, done.stderr.decode().splitlines()


def image(tmp_path: Path) -> Path:
    saved = tmp_path / "image.tar"
    saved.write_bytes(docker_save({"x:1": [layer(("/a", b"a" * 3000), ("/b", b"b"))]}))
    return saved


def test_closed_standard_input_and_output(tmp_path: Path) -> None:
    """``<&-`` and ``>&-``: one line, exit 2, no traceback."""
    saved = str(image(tmp_path))
    closed_in, closed_out = (lambda: os.close(0)), (lambda: os.close(1))
    assert run("flatten", "-", setup=closed_in) == (2, ["cowspec: <stdin>: standard input is closed"])
    line = "cowspec: standard output: closed; nothing was written"
    assert run("flatten", saved, setup=closed_out) == (2, [line])
    assert run("flatten", "--tar", "-", saved, setup=closed_out) == (2, [line])
    assert run("layers", saved, setup=closed_out) == (2, [line])
    assert run("inspect", saved, setup=closed_out) == (2, [line])
    out = tmp_path / "out.tar"
    assert run("flatten", "--tar", str(out), saved, setup=closed_out) == (0, [])
    assert sorted(entry.path for entry in decode_layer(out.read_bytes()).entries) == ["/a", "/b"]
