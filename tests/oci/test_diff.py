"""Chapter 14: ``docker diff`` in the model (the real one is checked in test_commit.py)."""

from cowspec.formats.oracle import run_model
from cowspec.formats.trace import decode_trace
from cowspec.oci.diff import Change, docker_diff
from tests.oci.test_commit import model_container
from tests.support import d, f, op


def test_docker_diff_in_the_model() -> None:
    """[DIFF-1][DIFF-2] A, C, D by Docker's rules; a chmod alone is C, a rename over nothing is D and A."""
    changes = {(change.kind, change.path, change.certain) for change in docker_diff(model_container())}
    assert changes == {
        ("C", "/data", True), ("C", "/data/gone", True), ("D", "/data/gone/b", True), ("C", "/data/keep", True),
        ("C", "/data/keep/a", True), ("C", "/data/keep/b", True), ("D", "/data/keep/c", True),
        ("A", "/data/new", True), ("A", "/data/new/c", True), ("A", "/data/new/empty", True),
        ("A", "/data/new/hard", True), ("A", "/data/new/sym", True),
    }  # fmt: skip


def test_docker_diff_renamed_over_and_copied_in_place() -> None:
    """[DIFF-2] A file renamed over another: C only if the real mtimes differ; a copy-up in place: nothing."""
    trace = decode_trace(
        {
            "format": "cowspec-trace/1",
            "layers": [[d("/x"), f("/x/a", "same"), f("/x/b", "same"), f("/x/c", "c")]],
            "ops": [op("rename", src="/x/a", dst="/x/b"), op("open", path="/x/c", flags="w")],
        }
    )
    _, container = run_model(trace)
    assert docker_diff(container) == (
        Change("C", "/x"), Change("D", "/x/a"), Change("C", "/x/b", certain=False),
    )  # fmt: skip
