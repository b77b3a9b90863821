"""The ``cowspec`` command line: outputs, exit statuses, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cowcheck.cli.main import main
from cowcheck.drivers.kernel_overlay import KernelOverlay
from tests.cowcheck.test_machine import LyingDriver
from tests.support import d, f, op

TRACE = {
    "format": "cowspec-trace/1",
    "layers": [[d("/etc"), f("/etc/hosts", "hello\n")], [{"path": "/etc/hosts", "type": "whiteout"}]],
    "ops": [
        op("create", path="/etc/motd", mode=0o644),
        op("write", path="/etc/motd", offset=0, data="hi\n"),
        op("rename", src="/etc", dst="/usr/etc"),
    ],
}


class LyingKernel(LyingDriver):
    """The lying driver over the kernel, made with no arguments, as ``--driver module:attr`` makes a driver."""

    def __init__(self) -> None:
        super().__init__(KernelOverlay())


def write(tmp_path: Path, name: str, document: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return str(path)


def test_oracle_prints_one_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[TRACE-4]"""
    assert main(["oracle", write(tmp_path, "t.json", TRACE)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["results"] == [{"ok": True}, {"ok": True}, {"errno": "ENOENT"}]
    assert result["sizes"] == {"size": 3, "virtual_size": 9}


def test_several_traces_give_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[TRACE-1] A bad trace gets an error line; the others still run; exit 2; each line names its trace."""
    good = write(tmp_path, "good.json", TRACE)
    bad = write(tmp_path, "bad.json", {**TRACE, "ops": [{"op": "chmod", "path": "/a"}]})
    assert main(["oracle", good, bad, good]) == 2
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 3
    assert json.loads(lines[1]) == {"trace": bad, "error": f"{bad}: op 0 (chmod): missing field 'mode'"}
    assert json.loads(lines[0]) == json.loads(lines[2])
    assert json.loads(lines[0])["trace"] == good and json.loads(lines[0])["format"] == "cowspec-trace-result/1"
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        (
            '{"format": "cowspec-trace/1", "layers": [[{"path": "/a/../b", "type": "file"}]]}',
            "not absolute and normalised",
        ),
        ('{"format": "cowspec-trace/1", "features": {"metacopy": true}}', "feature 'metacopy' needs 'redirect_dir' on"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, content: str, message: str) -> None:
    """[TRACE-1] Through a real process: one line on stderr, no traceback, nothing on stdout."""
    path = write(tmp_path, "t.json", content)
    done = subprocess.run([sys.executable, "-m", "cowcheck.cli", "oracle", path], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_missing_file_and_unknown_driver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[TRACE-1]"""
    assert main(["oracle", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["run", "--driver", "nope", write(tmp_path, "t.json", TRACE)]) == 2
    assert "unknown driver 'nope'" in capsys.readouterr().err


@pytest.mark.kernel
def test_run_and_check_on_the_kernel(tmp_path: Path, capsys: pytest.CaptureFixture[str], kernel: KernelOverlay) -> None:
    """[OBSERVE-1] ``run`` gives the kernel's result and ``check`` finds it equal to the model's."""
    path = write(tmp_path, "t.json", TRACE)
    assert main(["oracle", path]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["run", "--driver", "kernel-overlay", path]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    assert main(["check", "--driver", "kernel-overlay", path, path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["agrees"] for line in lines] == [True, True]


@pytest.mark.kernel
def test_generated_check_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str], kernel: KernelOverlay) -> None:
    """[OBSERVE-1] Generated cases: examples, ops, the mix of results, no divergence."""
    status = main(
        [
            "check",
            "--driver",
            "kernel-overlay",
            "--profile",
            "dev",
            "--examples",
            "20",
            "--steps",
            "10",
            "--save",
            str(tmp_path / "out"),
        ]
    )
    report = capsys.readouterr().out
    assert status == 0, report
    assert "examples" in report and "results: " in report and "divergences: none" in report
    assert not (tmp_path / "out").exists()


@pytest.mark.kernel
def test_generated_check_saves_a_minimal_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kernel: KernelOverlay
) -> None:
    """[WHITEOUT-2] A diverging driver: exit 1, the divergence named, its trace saved and replayable."""
    lying = "tests.cowcheck.test_cli:LyingKernel"  # a driver from outside, named module:attr
    status = main(
        [
            "check",
            "--driver",
            lying,
            "--profile",
            "dev",
            "--examples",
            "200",
            "--steps",
            "10",
            "--save",
            str(tmp_path / "out"),
        ]
    )
    report = capsys.readouterr().out
    assert status == 1, report
    saved = tmp_path / "out" / "divergence-1.json"
    assert "divergence 1 breaks WHITEOUT-2:" in report and str(saved) in report
    assert main(["check", "--driver", lying, str(saved)]) == 1
    assert main(["check", "--driver", "kernel-overlay", str(saved)]) == 0


def test_not_root_is_one_line_and_exit_3(tmp_path: Path) -> None:
    """[TRACE-1] A driver that cannot run says so in one line, exit 3."""
    path = write(tmp_path, "t.json", TRACE)
    script = (
        "import os, sys; os.geteuid = lambda: 1000; from cowcheck.cli.main import main; "
        f"sys.exit(main(['run', '--driver', 'kernel-overlay', {path!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 3
    assert (
        done.stderr
        == "cowspec: driver kernel-overlay cannot run here: the kernel overlay driver needs root (mount -t overlay)\n"
    )


def test_oracle_commit_is_the_committed_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[COMMIT-1] ``oracle --commit``: the layer a commit gives (the new file and the parent copied up for it)."""
    path = write(tmp_path, "t.json", TRACE)
    assert main(["oracle", "--commit", path]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == "cowspec-commit-result/1"
    by_path = {entry["path"]: entry for entry in result["entries"]}
    assert set(by_path) == {"/etc", "/etc/motd"}
    assert by_path["/etc/motd"]["size"] == 3 and by_path["/etc"]["type"] == "dir"
