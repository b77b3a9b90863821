"""Every JSON example of ``docs/formats/`` is what the model says it is.

The format documents are contracts that other programs are written from, so
their examples are tested: a block that holds a trace must be one the
oracle accepts; a block that holds a result must be exactly the model's
result for the trace example before it in the same document; every other
block must at least be JSON (one document, or one per line for the lines of
a protocol).
"""

import json
import re
from pathlib import Path

import pytest

from cowcheck.cli.trace_commands import StoreTrace, load_trace
from cowspec.formats.oracle import oracle
from cowspec.formats.store_trace import run_store_model

DOCS = Path(__file__).resolve().parents[2] / "docs" / "formats"
BLOCK = re.compile(r"^```json\n(.*?)^```", re.MULTILINE | re.DOTALL)
TRACES = {"cowspec-trace/1", "cowspec-store-trace/1"}
RESULTS = {"cowspec-trace-result/1", "cowspec-store-trace-result/1"}
CHECKED_ELSEWHERE = {"driver-protocol.md"}
"""Documents whose results answer requests, not a trace before them: the
exec driver's tests check them against the model
(``tests/cowcheck/test_exec_driver.py::test_every_example_of_the_contract_is_valid``)."""


def documents(block: str) -> list[object]:
    """The JSON of one block: a document, or JSON Lines."""
    try:
        return [json.loads(block)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in block.splitlines() if line.strip()]


def examples() -> list[tuple[str, int, str]]:
    return [
        (document.name, number, block)
        for document in sorted(DOCS.glob("*.md"))
        for number, block in enumerate(BLOCK.findall(document.read_text()))
    ]


def test_the_documents_have_examples() -> None:
    """The folder and its blocks are found (an empty list would make the checks below vacuous)."""
    found = {name for name, _, _ in examples()}
    assert {"trace-format.md", "store-trace-format.md", "inspect-format.md"} <= found


@pytest.mark.parametrize(("document", "number", "block"), examples(), ids=lambda value: str(value)[:40])
def test_every_block_is_json(document: str, number: int, block: str) -> None:
    """[TRACE-1] A block that is not JSON is a broken example."""
    assert documents(block), f"{document} block {number} is empty"


@pytest.mark.parametrize("document", sorted(path.name for path in DOCS.glob("*.md")))
def test_traces_run_and_results_are_the_models(document: str, tmp_path: Path) -> None:
    """[TRACE-4][STORE-5] A trace example is accepted; a result example is the model's answer to the trace before it."""
    last_trace: dict[str, object] | None = None
    checked = 0
    for number, block in enumerate(BLOCK.findall((DOCS / document).read_text())):
        for example in documents(block):
            if not isinstance(example, dict):
                continue
            kind = example.get("format")
            if kind in TRACES:
                path = tmp_path / f"block-{number}.json"
                path.write_text(json.dumps(example))
                trace = load_trace(str(path))  # raises SpecError if the spec rejects the example
                answer = run_store_model(trace.steps) if isinstance(trace, StoreTrace) else oracle(trace)
                last_trace = answer
                checked += 1
            elif kind in RESULTS and document not in CHECKED_ELSEWHERE:
                assert last_trace is not None, f"{document} block {number}: a result with no trace before it"
                assert example == last_trace, f"{document} block {number} is not the model's result"
                checked += 1
    if document in ("trace-format.md", "store-trace-format.md"):
        assert checked >= 2, f"{document}: expected a trace and its result"
