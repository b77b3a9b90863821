"""``cowspec bench copy-up``: a quick run makes the JSON and the plots with sane values; bad input is refused
in one line; docs/copy-up-cost.md quotes the committed JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cowcheck.cli.bench_commands import DRIVERS, FORMAT, JSON_NAME, OPS, SERIES, parse_size, powers, ratio_tables
from cowcheck.cli.output import UsageError
from cowcheck.drivers.kernel_overlay import KernelOverlay

ROOT = Path(__file__).resolve().parent.parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``cowspec bench copy-up ARGUMENTS`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "cowcheck.cli.bench_commands", "copy-up", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def leftovers() -> set[str]:
    """The benchmark's work directories under /var/tmp."""
    return {name for name in os.listdir("/var/tmp") if name.startswith("cowspec-bench-")}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One ``--quick`` run, shared by the checks of its output."""
    out = tmp_path_factory.mktemp("bench") / "out"
    before = leftovers()
    done = bench("--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert leftovers() == before, "the work directory must be removed"
    with open(out / JSON_NAME, encoding="utf-8") as handle:
        return out, json.load(handle)


@pytest.mark.kernel
def test_quick_run_writes_json_and_one_png_per_series(
    kernel: KernelOverlay, quick_run: tuple[Path, dict[str, Any]]
) -> None:
    out, document = quick_run
    assert document["format"] == FORMAT
    machine = document["machine"]
    assert machine["cpu"] and machine["kernel"] == os.uname().release
    assert machine["filesystem"].split()[0] not in ("tmpfs", "unknown"), "the layers must be on a disk"
    assert sorted(os.listdir(out)) == sorted([JSON_NAME, *(f"copy-up-{series}.png" for series in SERIES)])
    for series in SERIES:
        assert (out / f"copy-up-{series}.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.kernel
def test_quick_run_samples_are_sane(kernel: KernelOverlay, quick_run: tuple[Path, dict[str, Any]]) -> None:
    """Every point, call, driver and repetition has a sample; times are positive and below a second."""
    _, document = quick_run
    (run,) = document["runs"]
    plan = run["plan"]
    drivers = plan["drivers"]
    assert {"overlay", "overlay-metacopy"} <= set(drivers) <= set(DRIVERS)
    points = len(plan["sizes"]) + len(plan["layer_counts"]) + len(plan["depths"])
    samples = document["samples"]
    assert len(samples) == points * len(OPS) * len(drivers) * plan["repeat"]
    for sample in samples:
        assert 0 < sample["first"] < 1 and len(sample["later"]) == plan["later"]
        assert all(0 < later < 1 for later in sample["later"])
    assert len(document["summary"]) == points * len(OPS) * len(drivers)


@pytest.mark.kernel
def test_data_copy_fills_the_upper_and_metacopy_does_not(
    kernel: KernelOverlay, quick_run: tuple[Path, dict[str, Any]]
) -> None:
    """[COST-2][COST-3] A chmod of the 16 KiB file copies 16 KiB of data with Docker's options, none with metacopy."""
    _, document = quick_run
    big = [sample for sample in document["samples"] if sample["series"] == "size" and sample["x"] == 16 * 1024]
    for sample in big:
        if sample["op"] != "chmod":
            continue
        if sample["driver"] == "overlay":
            assert sample["upper_bytes"] >= 16 * 1024
        if sample["driver"] == "overlay-metacopy":
            assert sample["upper_bytes"] < 16 * 1024


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["--ops", "write,frobnicate"], "--ops: unknown 'frobnicate'"),
        (["--max-layers", "0"], "--max-layers 0"),
        (["--max-layers", "600"], "--max-layers 600"),
        (["--max-size", "12"], "--max-size 12"),
        (["--max-size", "lots"], "--max-size 'lots'"),
        (["--repeat", "0"], "--repeat 0"),
        (["--series", "width"], "--series: unknown 'width'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(arguments: list[str], complaint: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = bench(*arguments, "--out", str(out))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("cowspec: ") and complaint in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists(), "nothing is written for a refused command line"


def test_unwritable_out_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = bench("--quick", "--out", str(blocker / "out"))
    assert done.returncode == 2 and done.stderr.startswith("cowspec: --out ") and done.stderr.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_sizes_and_ranges() -> None:
    assert parse_size("1G") == 1 << 30 and parse_size("64K") == 65536 and parse_size("16MiB") == 16 << 20
    assert powers(1024, 1 << 30, 4)[-1] == 1 << 30 and len(powers(1024, 1 << 30, 4)) == 11
    assert powers(1, 128, 2) == (1, 2, 4, 8, 16, 32, 64, 128)
    assert powers(1, 100, 2)[-2:] == (64, 100)
    with pytest.raises(UsageError):
        parse_size("1T")


def test_the_doc_quotes_the_committed_json() -> None:
    """docs/copy-up-cost.md holds the tables ``ratio_tables`` makes of the committed JSON, word for word."""
    with open(ROOT / "docs" / "copy-up-cost" / JSON_NAME, encoding="utf-8") as handle:
        document = json.load(handle)
    doc = (ROOT / "docs" / "copy-up-cost.md").read_text(encoding="utf-8")
    assert ratio_tables(document).strip() in doc
    assert document["machine"]["kernel"] in doc and document["machine"]["cpu"] in doc
    for series in SERIES:
        assert f"copy-up-cost/copy-up-{series}.png" in doc
