"""The observed traces kept in docs/rationale/ still hold, on the model and the kernel."""

import json
from pathlib import Path

import pytest

from cowcheck.compare import result_differences
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.runner import run_real
from cowspec.formats.oracle import oracle
from cowspec.formats.trace import decode_trace

RATIONALE = Path(__file__).resolve().parents[2] / "docs" / "rationale"
TRACES = sorted(RATIONALE.glob("*.json"))

OBSERVED = {
    "readdir-lists-whiteouts.json": [
        {"ok": True, "value": ["gone", "kept"]},
        {"errno": "ENOENT"},
        {"errno": "ENOTEMPTY"},
        {"ok": True},
        {"ok": True},
    ],
    "hardlink-copy-up.json": [
        {"ok": True, "value": {"type": "file", "mode": 420, "uid": 0, "gid": 0, "size": 4, "nlink": 2}},
        {"ok": True},
        {"ok": True, "value": {"type": "file", "mode": 420, "uid": 0, "gid": 0, "size": 6, "nlink": 1}},
        {"ok": True, "value": {"type": "file", "mode": 420, "uid": 0, "gid": 0, "size": 4, "nlink": 2}},
        {"ok": True, "value": "ZGF0YQ=="},
    ],
    "failed-rename-marks-opaque.json": [{"ok": True}, {"ok": True}, {"ok": True}, {"errno": "ENOTEMPTY"}],
    "redirect-dir-mkdir-opaque.json": [{"ok": True}, {"ok": True}, {"ok": True, "value": ["m"]}],
}


def test_every_trace_has_its_observation() -> None:
    assert {each.name for each in TRACES} == set(OBSERVED)


@pytest.mark.parametrize("path", TRACES, ids=[each.stem for each in TRACES])
def test_model_states_the_observation(path: Path) -> None:
    """[READDIR-2][COPYUP-5][RENAME-7][REDIRECT-4] The model gives what the kernel was seen to give."""
    assert oracle(decode_trace(json.loads(path.read_text())))["results"] == OBSERVED[path.name]


@pytest.mark.kernel
@pytest.mark.parametrize("path", TRACES, ids=[each.stem for each in TRACES])
def test_kernel_still_does_it(path: Path, kernel: KernelOverlay) -> None:
    """[READDIR-2][COPYUP-5][RENAME-7]"""
    trace = decode_trace(json.loads(path.read_text()))
    observed = run_real(kernel, trace)
    assert observed["results"] == OBSERVED[path.name]
    assert result_differences(oracle(trace), observed) == []
