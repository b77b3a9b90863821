"""Scenarios: small traces that are both model tests and kernel vectors.

A ``Scenario`` is a trace in the JSON form of ``cowspec-trace/1`` with the
facts it must show. ``scenario_tests`` turns a list of them into two
parametrized tests for a module: one asserts the facts on the model, one
runs the same trace on the kernel's overlayfs and requires the whole
result (every op, merged tree, upper layer, sizes) to equal the model's.
The conformance vectors (``cowspec vectors export``) are kept apart, in
``conformance/cowcheck/vector_set/``, so that they ship with the package.
"""

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cowcheck.compare import result_differences
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.runner import run_real
from cowspec.formats.oracle import oracle
from cowspec.formats.trace import decode_trace

Result = dict[str, Any]


def b64(text: str) -> str:
    """Base64 of a short UTF-8 text, for ``data`` fields."""
    return base64.b64encode(text.encode()).decode()


def d(path: str, mode: int = 0o755, **more: Any) -> dict[str, Any]:
    """A directory entry."""
    return {"path": path, "type": "dir", "mode": mode, **more}


def f(path: str, text: str = "", mode: int = 0o644, **more: Any) -> dict[str, Any]:
    """A regular file entry."""
    return {"path": path, "type": "file", "mode": mode, "data": b64(text), **more}


def s(path: str, target: str) -> dict[str, Any]:
    """A symlink entry."""
    return {"path": path, "type": "symlink", "target": target}


def h(path: str, target: str) -> dict[str, Any]:
    """A hardlink entry."""
    return {"path": path, "type": "hardlink", "target": target}


def w(path: str) -> dict[str, Any]:
    """A whiteout entry."""
    return {"path": path, "type": "whiteout"}


def op(name: str, **fields: Any) -> dict[str, Any]:
    """An op; ``data`` given as text is encoded."""
    if isinstance(fields.get("data"), str):
        fields["data"] = b64(fields["data"])
    return {"op": name, **fields}


OK: Result = {"ok": True}


def err(name: str) -> Result:
    """An errno result."""
    return {"errno": name}


def val(value: Any) -> Result:
    """A successful result with a value."""
    return {"ok": True, "value": value}


@dataclass
class Scenario:
    """A named trace and the facts it must show; ``rules`` cites the spec."""

    name: str
    rules: str
    layers: list[list[dict[str, Any]]]
    ops: list[dict[str, Any]]
    results: list[Result] | None = None
    then: Callable[[Result], None] | None = None
    features: dict[str, bool] = field(default_factory=dict)

    def trace(self) -> dict[str, Any]:
        """The scenario as a trace document."""
        return {"format": "cowspec-trace/1", "features": self.features, "layers": self.layers, "ops": self.ops}


def model_result(document: dict[str, Any]) -> Result:
    """What the model says for a trace document."""
    return oracle(decode_trace(document))


def paths(tree: list[Result]) -> dict[str, Result]:
    """A tree keyed by path."""
    return {entry["path"]: entry for entry in tree}


def entry_has(tree: str, path: str, **fields: object) -> Callable[[Result], None]:
    """A check that the entry at ``path`` of ``tree`` ("merged" or "upper") has ``fields``."""

    def check(result: Result) -> None:
        entry = paths(result[tree])[path]
        for key, value in fields.items():
            assert entry[key] == value, (key, entry)

    return check


def scenario_tests(scenarios: list[Scenario]) -> tuple[Callable[..., None], Callable[..., None]]:
    """A model test and a kernel test, both parametrized over ``scenarios``."""
    ids = [each.name for each in scenarios]

    @pytest.mark.parametrize("scenario", scenarios, ids=ids)
    def test_model(scenario: Scenario) -> None:
        result = model_result(scenario.trace())
        if scenario.results is not None:
            assert result["results"] == scenario.results
        if scenario.then is not None:
            scenario.then(result)
        assert scenario.results is not None or scenario.then is not None, "a scenario must state a fact"

    @pytest.mark.kernel
    @pytest.mark.parametrize("scenario", scenarios, ids=ids)
    def test_kernel(scenario: Scenario, kernel: KernelOverlay) -> None:
        trace = decode_trace(scenario.trace())
        expected = oracle(trace)
        observed = run_real(kernel, trace)
        differences = result_differences(expected, observed)
        assert not differences, "\n".join(differences)

    return test_model, test_kernel
