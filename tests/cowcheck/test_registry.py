"""Drivers from outside the source tree: entry points, ``module:attr``, and ``cowspec drivers``."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cowcheck.cli.main import main
from cowcheck.drivers import registry
from cowcheck.drivers.kernel_overlay import KernelOverlay

ROOT = Path(__file__).resolve().parents[2]

DRIVER_MODULE = '''
"""A package of an implementer's: three drivers, one per level, and one that is not a driver."""


class Overlay:
    """A filesystem-level driver, told apart by its ``open``."""

    name = "my-overlay"
    features = ("redirect_dir",)

    def open(self, layers, features):
        raise RuntimeError("not used here")


class Unpacker:
    """A layer-level driver that says its level."""

    name = "my-unpacker"
    level = "layer"

    def flatten(self, archives):
        return []


class Engine:
    name = "my-engine"

    def run(self, steps):
        return {}


class Nothing:
    """Neither method nor level."""
'''


def installed_package(tmp_path: Path) -> dict[str, str]:
    """A package with entry points in ``cowspec.drivers``, installed as pip would, on a PYTHONPATH of its own."""
    (tmp_path / "my_drivers.py").write_text(DRIVER_MODULE)
    info = tmp_path / "my_drivers-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-drivers\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [cowspec.drivers]
            my-overlay = my_drivers:Overlay
            my-unpacker = my_drivers:Unpacker
            my-engine = my_drivers:Engine
            not-a-driver = my_drivers:Nothing
            missing = my_drivers:Missing
            """
        )
    )
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}


def cowspec(arguments: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cowcheck.cli", *arguments], capture_output=True, text=True, env=environment
    )


def test_builtin_drivers_register_as_entry_points() -> None:
    """cowspec's own drivers are found the way any package's are: by the entry point group."""
    found = {driver.name: driver for driver in registry.installed()}
    assert found["kernel-overlay"].levels == ("filesystem",)
    assert found["docker"].levels == ("store",)
    assert "cowspec" in found["kernel-overlay"].origin
    assert isinstance(registry.filesystem_driver("kernel-overlay"), KernelOverlay)


def test_entry_points_of_another_package(tmp_path: Path) -> None:
    """An installed package's drivers are listed with their level, features and origin; broken ones say why."""
    done = cowspec(["drivers", "--json"], installed_package(tmp_path))
    assert done.returncode == 0, done.stderr
    listed = {driver["name"]: driver for driver in json.loads(done.stdout)["drivers"]}
    assert listed["my-overlay"]["levels"] == ["filesystem"]
    assert listed["my-overlay"]["features"] == ["redirect_dir"]
    assert listed["my-overlay"]["origin"] == "my-drivers (my_drivers:Overlay)"
    assert listed["my-unpacker"]["levels"] == ["layer"]
    assert listed["my-engine"]["levels"] == ["store"]
    assert listed["not-a-driver"]["levels"] == [] and listed["missing"]["levels"] == []
    assert listed["kernel-overlay"]["levels"] == ["filesystem"]
    table = cowspec(["drivers"], installed_package(tmp_path))
    assert table.returncode == 0
    assert any(line.split()[:2] == ["my-unpacker", "layer"] for line in table.stdout.splitlines())


def test_a_broken_entry_point_is_one_line(tmp_path: Path) -> None:
    """Naming a driver whose entry point cannot load: one line, exit 2, the reason named."""
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"format": "cowspec-trace/1", "layers": [], "ops": []}))
    done = cowspec(["run", "--driver", "missing", str(trace)], installed_package(tmp_path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Missing" in done.stderr and "Traceback" not in done.stderr


def test_level_mismatch_is_named(tmp_path: Path) -> None:
    """A layer driver given a filesystem trace: one line naming both levels, exit 2."""
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"format": "cowspec-trace/1", "layers": [], "ops": []}))
    done = cowspec(["check", "--driver", "my-unpacker", str(trace)], installed_package(tmp_path))
    assert done.returncode == 2
    assert done.stderr == (
        "cowspec: a trace (cowspec-trace/1) needs a filesystem driver or a layer driver that commits;"
        " --driver my-unpacker serves the layer level and does not commit\n"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown driver 'nope' (installed: "),
        ("no_such_module_here:Driver", "cannot import no_such_module_here"),
        ("os:no_such_attribute", "os has no attribute no_such_attribute"),
        ("os:path", "none of the methods open, flatten, run"),
        ("os", "unknown driver 'os'"),
        ("exec:", "exec: names no program"),
    ],
)
def test_unknown_drivers_are_one_line(spec: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every way of naming nothing: exit 2 and one line that says which."""
    assert main(["run", "--driver", spec, "-"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("cowspec: ") and error.count("\n") == 1 and message in error


def test_module_attr_names_a_driver_class(tmp_path: Path) -> None:
    """``--driver module:attr`` imports from the current directory; the class is made with no arguments."""
    (tmp_path / "local_driver.py").write_text(DRIVER_MODULE)
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "cowcheck.cli", "drivers", "--json", "--driver", "local_driver:Overlay"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["drivers"][-1]
    assert listed == {
        "name": "local_driver:Overlay",
        "levels": ["filesystem"],
        "features": ["redirect_dir"],
        "origin": "local_driver:Overlay",
    }


def test_check_docker_without_traces_is_the_store_machine(capsys: pytest.CaptureFixture[str]) -> None:
    """``check --driver docker`` with no traces is not 'unknown driver': it runs generated store cases.

    The engine itself is exercised by tests/formats/test_store_trace.py; here a budget of zero examples is
    refused before any engine starts, which shows the command reached the store machine's options.
    """
    assert main(["check", "--driver", "docker", "--examples", "0"]) == 2
    assert capsys.readouterr().err == "cowspec: --examples must be at least 1\n"


def test_version_and_exit_codes_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    """``--version`` names the package version; ``--help`` of every command lists the exit statuses."""
    from cowspec import __version__

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"cowspec {__version__}\n"
    for command in ([], ["check"], ["flatten"], ["drivers"], ["oracle"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "3  the driver cannot run on this machine" in capsys.readouterr().out


def test_every_option_has_help() -> None:
    """No option or argument of any command, nested commands included, is left without a help text."""
    import argparse

    from cowcheck.cli.main import parser

    missing: list[str] = []

    def visit(command: str, node: argparse.ArgumentParser) -> None:
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    visit(f"{command} {name}".strip(), sub)
            elif action.help is None and action.dest != "help":
                missing.append(f"{command} {'/'.join(action.option_strings) or action.dest}")

    visit("", parser())
    assert missing == []
