"""``--storage-driver`` on the command line: the names the parser offers are the model's, and the oracle uses it."""

import json
import subprocess
import sys
from pathlib import Path
from typing import cast

from cowcheck.cli.main import STORAGE_DRIVERS, parser
from cowspec.store import drivers

SEED: dict[str, object] = {
    "format": "cowspec-store-trace/1",
    "steps": [
        {
            "step": "image",
            "name": "base:1",
            "layers": [
                [{"path": "/a", "type": "file", "data": "aGk="}, {"path": "/s", "type": "symlink", "target": "a"}],
            ],
        },
    ],
}


def test_the_parser_offers_the_models_storage_drivers() -> None:
    assert STORAGE_DRIVERS == drivers.STORAGE_DRIVERS


def test_demo_takes_several_storage_drivers_and_all() -> None:
    arguments = parser().parse_args(["demo", "--storage-driver", "vfs", "--storage-driver", "all"])
    assert arguments.storage_driver == ["vfs", "all"]
    assert parser().parse_args(["demo"]).storage_driver is None


def oracle(tmp_path: object, *options: str, trace: dict[str, object] = SEED) -> subprocess.CompletedProcess[str]:
    path = f"{tmp_path}/trace.json"
    with open(path, "w") as handle:
        json.dump(trace, handle)
    command = [sys.executable, "-m", "cowcheck.cli", "oracle", *options, path]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_the_oracle_answers_for_the_storage_driver_named(tmp_path: object) -> None:
    # DRIVER: a symlink counts its target's length in an overlay2 layer, nothing on vfs.
    overlay2 = json.loads(oracle(tmp_path).stdout)
    vfs = json.loads(oracle(tmp_path, "--storage-driver", "vfs").stdout)
    assert overlay2["images"]["base:1"]["size"] == 3
    assert vfs["images"]["base:1"]["size"] == 2
    assert vfs["storage_driver"] == "vfs"


def test_a_trace_naming_another_storage_driver_is_refused_in_one_line(tmp_path: object) -> None:
    done = oracle(tmp_path, "--storage-driver", "vfs", trace={**SEED, "storage_driver": "btrfs"})
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "btrfs" in done.stderr and "vfs" in done.stderr


def test_an_unknown_storage_driver_is_refused_by_the_parser(tmp_path: object) -> None:
    done = oracle(tmp_path, "--storage-driver", "zfs")
    assert done.returncode == 2
    assert "zfs" in done.stderr


class FailingStore:
    """A store driver that fails on a trace loading an image named ``boom:1`` and runs the model on the others."""

    name = "failing"
    level = "store"

    def run(self, steps: tuple[object, ...]) -> dict[str, object]:
        from cowcheck.drivers.protocol import DriverError
        from cowspec.formats.store_trace import run_store_model
        from cowspec.store.steps import LoadImage, Step

        if any(isinstance(step, LoadImage) and step.name == "boom:1" for step in steps):
            raise DriverError("the engine fell over")
        return run_store_model(cast(tuple[Step, ...], steps))


def test_a_trace_the_driver_fails_on_in_a_batch_is_said_and_the_others_run(tmp_path: Path) -> None:
    """One store trace an implementation fails on is one line and one ``error`` item; the batch goes on (exit 3)."""
    failing = tmp_path / "failing.json"
    fine = tmp_path / "fine.json"
    steps = cast(list[dict[str, object]], SEED["steps"])
    failing.write_text(json.dumps({**SEED, "steps": [{**steps[0], "name": "boom:1"}]}))
    fine.write_text(json.dumps(SEED))
    driver = f"{__name__}:FailingStore"
    command = [sys.executable, "-m", "cowcheck.cli", "check", "--driver", driver, str(failing), str(fine)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=Path(__file__).parents[2])
    assert done.returncode == 3, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0] == {"trace": str(failing), "error": f"{failing}: the engine fell over"}
    assert lines[1]["trace"] == str(fine) and lines[1]["agrees"] is True
    assert done.stderr.strip().splitlines()[0] == f"cowspec: {failing}: the engine fell over"
