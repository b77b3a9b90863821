"""Chapter 5: copy-up."""

from collections.abc import Callable

import pytest

from cowspec.errors import ModelError
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.copy_up import copy_up_parents
from cowspec.fs.stack import new_container
from tests.support import OK, Result, Scenario, d, f, h, op, paths, scenario_tests, val


def upper_paths(expected: set[str]) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        assert set(paths(result["upper"])) == expected

    return check


def after_chmod(result: Result) -> None:
    upper = paths(result["upper"])
    assert upper["/x"] == {"path": "/x", "type": "dir", "mode": 0o700, "uid": 3, "gid": 0, "opaque": False}
    assert "/x/a" not in upper and "/x/b" not in upper


def broken_link(result: Result) -> None:
    merged = paths(result["merged"])
    assert merged["/a"]["nlink"] == 1 and merged["/b"]["nlink"] == 2
    assert merged["/a"]["size"] == 7 and merged["/b"]["size"] == 4


SCENARIOS = [
    Scenario(
        "read-never-copies-up",
        "[COPYUP-6][COPYUP-1]",
        [[d("/x"), f("/x/a", "data")]],
        [
            op("open", path="/x/a", flags="r"),
            op("read", path="/x/a"),
            op("stat", path="/x/a"),
            op("readdir", path="/x"),
        ],
        then=upper_paths(set()),
    ),
    Scenario(
        "open-for-write-copies-up-parents-first",
        "[COPYUP-2][COPYUP-4][COPYUP-6][OPEN-2]",
        [[d("/x", 0o751), d("/x/y", 0o700), f("/x/y/a", "data", 0o640)]],
        [op("open", path="/x/y/a", flags="w")],
        results=[OK],
        then=upper_paths({"/x", "/x/y", "/x/y/a"}),
    ),
    Scenario(
        "directory-copy-has-no-entries-and-is-not-opaque",
        "[COPYUP-3][CHMOD-1]",
        [[d("/x", opaque=True, uid=3), f("/x/a"), f("/x/b")]],
        [op("chmod", path="/x", mode=0o700), op("readdir", path="/x")],
        results=[OK, val(["a", "b"])],
        then=after_chmod,
    ),
    Scenario(
        "copy-up-breaks-hardlink",
        "[COPYUP-5][STAT-1]",
        [[f("/a", "data"), h("/b", "/a")]],
        [op("append", path="/a", data="+++"), op("read", path="/b")],
        results=[OK, val("ZGF0YQ==")],
        then=broken_link,
    ),
    Scenario(
        "failed-call-copies-nothing",
        "[COPYUP-6][OP-1]",
        [[d("/x"), f("/x/a")]],
        [op("open", path="/x", flags="w"), op("truncate", path="/x/a", size=-1), op("mkdir", path="/x/a", mode=0o755)],
        then=upper_paths(set()),
    ),
]

test_model, test_kernel = scenario_tests(SCENARIOS)


def test_copying_up_parents_that_are_no_directories_is_a_model_error() -> None:
    """[COPYUP-2] Every directory above a path is copied up; a path whose parent is a file has none
    to copy, and asking is a model bug (``ModelError``, which ``python -O`` keeps)."""
    container = new_container((build_layer((LayerEntry("/x", "file", 0o644),), "layer 0"),))
    with pytest.raises(ModelError, match="/x"):
        copy_up_parents(container, "/x/y")
    assert copy_up_parents(container, "/y").upper is container.upper
