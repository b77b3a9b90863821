"""``cowspec bench copy-up``: a quick run makes the JSON and the plots with sane values; bad input is refused
in one line; docs/copy-up-cost.md quotes the committed JSON."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cowcheck.cli.bench_commands import (
    DRIVERS,
    FORMAT,
    JSON_NAME,
    OPS,
    SERIES,
    WORK_PREFIX,
    Mounted,
    cpu_name,
    parse_size,
    powers,
    ratio_tables,
)
from cowcheck.cli.output import UsageError
from cowcheck.drivers.cleanup import owner_tag
from cowcheck.drivers.fuse_overlay import unavailable_reason as fuse_unavailable
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.protocol import DriverUnavailable

ROOT = Path(__file__).resolve().parent.parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``cowspec bench copy-up ARGUMENTS`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "cowcheck.cli", "bench", "copy-up", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def leftovers() -> set[str]:
    """The benchmark's work directories under /var/tmp."""
    return {name for name in os.listdir("/var/tmp") if name.startswith(WORK_PREFIX)}


def dead_owner_directory(parent: str) -> str:
    """A work directory (with a file in it) as a run killed outright leaves it: named for a process now gone."""
    child = subprocess.Popen(["sleep", "5"])
    tag = owner_tag(child.pid)
    child.kill()
    child.wait()
    path = os.path.join(parent, f"{WORK_PREFIX}{tag}-killed")
    os.makedirs(os.path.join(path, "l", "0"))
    Path(path, "l", "0", "f").write_bytes(b"x" * 4096)
    return path


@pytest.fixture(scope="module")
def quick_run(
    kernel: KernelOverlay, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any], str, bool]:
    """One ``--quick`` run, shared by the checks of its output (after the kernel check: without root it skips,
    and fails under ``CI=true``); a killed run's work directory was left in /var/tmp before it."""
    out = tmp_path_factory.mktemp("bench") / "out"
    before = leftovers()
    stale = dead_owner_directory("/var/tmp")
    try:
        done = bench("--quick", "--out", str(out))
        swept = not os.path.exists(stale)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(stale)
    assert done.returncode == 0, done.stderr
    assert leftovers() == before, "the work directory must be removed"
    with open(out / JSON_NAME, encoding="utf-8") as handle:
        return out, json.load(handle), done.stderr, swept


@pytest.mark.kernel
def test_quick_run_writes_json_and_one_png_per_series(
    kernel: KernelOverlay, quick_run: tuple[Path, dict[str, Any], str, bool]
) -> None:
    out, document, _, _ = quick_run
    assert document["format"] == FORMAT
    machine = document["machine"]
    assert machine["cpu"] not in ("", "unknown") and machine["kernel"] == os.uname().release
    assert machine["arch"] == os.uname().machine
    assert machine["filesystem"].split()[0] not in ("tmpfs", "unknown"), "the layers must be on a disk"
    assert sorted(os.listdir(out)) == sorted([JSON_NAME, *(f"copy-up-{series}.png" for series in SERIES)])
    for series in SERIES:
        assert (out / f"copy-up-{series}.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.kernel
def test_quick_run_samples_are_sane(kernel: KernelOverlay, quick_run: tuple[Path, dict[str, Any], str, bool]) -> None:
    """Every point, call, driver and repetition has a sample; times are positive and below a second."""
    _, document, _, _ = quick_run
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
    kernel: KernelOverlay, quick_run: tuple[Path, dict[str, Any], str, bool]
) -> None:
    """[COST-2][COST-3] A chmod of the 16 KiB file copies 16 KiB of data with Docker's options, none with metacopy."""
    _, document, _, _ = quick_run
    big = [sample for sample in document["samples"] if sample["series"] == "size" and sample["x"] == 16 * 1024]
    for sample in big:
        if sample["op"] != "chmod":
            continue
        if sample["driver"] == "overlay":
            assert sample["upper_bytes"] >= 16 * 1024
        if sample["driver"] == "overlay-metacopy":
            assert sample["upper_bytes"] < 16 * 1024


@pytest.mark.kernel
def test_a_killed_runs_work_directory_is_swept(
    kernel: KernelOverlay, quick_run: tuple[Path, dict[str, Any], str, bool]
) -> None:
    """The quick run removed the work directory a dead run left in /var/tmp (its name records its owner), and
    wrote no warning (/var/tmp is on a disk here)."""
    _, _, said, swept = quick_run
    assert swept, "the dead run's directory must be removed by the next run"
    assert "warning" not in said


@pytest.mark.kernel
def test_btrfs_samples_have_no_upper_bytes(
    kernel: KernelOverlay, quick_run: tuple[Path, dict[str, Any], str, bool]
) -> None:
    """A btrfs snapshot shares the image's blocks: ``upper_bytes`` is null there, a number for the overlays."""
    _, document, _, _ = quick_run
    for sample in document["samples"]:
        if sample["driver"] == "btrfs":
            assert sample["upper_bytes"] is None
        else:
            assert isinstance(sample["upper_bytes"], int) and sample["upper_bytes"] > 0


def in_own_mounts(script: str) -> subprocess.CompletedProcess[str]:
    """``sh -c SCRIPT`` in a private mount namespace of its own (``unshare``): its mounts go with it."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "BENCH": f"{sys.executable} -m cowcheck.cli bench copy-up"},
    )


def one_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one ``cowspec:`` line of a failed run that is not a warning; it must hold ``words``."""
    lines = [line for line in done.stdout.splitlines() if line.startswith("cowspec: ")]
    errors = [line for line in lines if "warning" not in line]
    assert len(errors) == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert all(word in errors[0] for word in words), errors[0]
    return errors[0]


@pytest.mark.kernel
def test_a_tmpfs_work_is_warned_of_and_too_little_space_refused(kernel: KernelOverlay, tmp_path: Path) -> None:
    """--work on a 40 MiB tmpfs: one warning line; a 16M file needs more room than that: one line, exit 3, and the
    --out the command made is removed again."""
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    done = in_own_mounts(
        f"mount -t tmpfs -o size=40m cowspec-test {work}; status=0;"
        f" $BENCH --series size --drivers overlay --max-size 16M --work {work} --out {out} 2>&1 || status=$?;"
        f" echo left:[$(ls -A {work})] status=$status"
    )
    warnings = [line for line in done.stdout.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "tmpfs" in warnings[0]
    one_error(done, "MiB free", f"--work {work}")
    assert not out.exists()
    assert "left:[] status=3" in done.stdout, "nothing is left in the work directory"


@pytest.mark.kernel
def test_running_out_of_room_is_one_line(kernel: KernelOverlay, tmp_path: Path) -> None:
    """ENOSPC in the middle of the run (a tmpfs with room for 8 inodes): one line naming --work, exit 3, the work
    directory removed."""
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    done = in_own_mounts(
        f"mount -t tmpfs -o size=100m,nr_inodes=8 cowspec-test {work}; status=0;"
        f" $BENCH --quick --series depth --ops chmod --drivers overlay --work {work} --out {out} 2>&1 || status=$?;"
        f" echo left:[$(ls -A {work})] status=$status"
    )
    assert "left:[] status=3" in done.stdout, "the work directory is removed"
    one_error(done, "No space left on device", f"(--work {work})")
    assert not out.exists()


@pytest.mark.kernel
def test_a_work_directory_overlayfs_cannot_use_is_one_line(kernel: KernelOverlay, tmp_path: Path) -> None:
    """--work on an overlay mount (overlayfs refuses an upper directory there): the mount's failure in one line,
    exit 3, no traceback."""
    work = tmp_path / "work"
    for name in ("lower", "upper", "scratch", "merged"):
        (tmp_path / name).mkdir()
    done = in_own_mounts(
        f"mount -t overlay -o lowerdir={tmp_path}/lower,upperdir={tmp_path}/upper,workdir={tmp_path}/scratch"
        f" cowspec-test {tmp_path}/merged; status=0;"
        f" $BENCH --quick --series size --ops chmod --drivers overlay --work {tmp_path}/merged --out {work}/out 2>&1"
        " || status=$?; echo status=$status"
    )
    assert "status=3" in done.stdout
    one_error(done, "mount -t overlay", f"(--work {tmp_path}/merged)")


@pytest.mark.kernel
@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs"])
def test_a_failed_mount_leaves_nothing_for_the_next(driver: str, kernel: KernelOverlay, tmp_path: Path) -> None:
    """A mount that fails (a lower layer missing) removes the upper and work directories it made, so the next
    attempt fails the same way, not on the leftovers; fuse-overlayfs's failure quotes its own complaint."""
    if driver == "fuse-overlayfs" and fuse_unavailable() is not None:
        pytest.skip(f"fuse-overlayfs: {fuse_unavailable()}")
    (tmp_path / "m").mkdir()
    failures = []
    for _ in range(2):
        with pytest.raises((OSError, DriverUnavailable)) as raised:
            Mounted(driver, str(tmp_path), ["l/missing"])
        failures.append(raised.value)
        assert sorted(os.listdir(tmp_path)) == ["m"]
    assert type(failures[0]) is type(failures[1]) and not isinstance(failures[1], FileExistsError)
    if driver == "fuse-overlayfs":
        assert "(nothing on its standard error)" not in str(failures[0]), str(failures[0])


def test_cpu_names_on_x86_and_arm64() -> None:
    """The CPU is named by x86's ``model name``, by lscpu's vendor and model on arm64, or by ARM's codes."""
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse\n"
    assert cpu_name(x86) == "Intel(R) Xeon(R) Processor"
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd0c\n"
    lscpu = "Architecture:        aarch64\nVendor ID:           ARM\nModel name:          Neoverse-N1\n"
    assert cpu_name(arm, lscpu) == "ARM Neoverse-N1"
    assert cpu_name(arm) == "ARM part 0xd0c"
    assert cpu_name(arm, "Vendor ID: Apple\nModel name: -\n") == "ARM part 0xd0c"
    assert cpu_name("processor\t: 0\nCPU implementer\t: 0x99\nCPU part\t: 0x1\n") == "implementer 0x99 part 0x1"
    assert cpu_name("") == "unknown"


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
