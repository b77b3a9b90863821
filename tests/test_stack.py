"""Chapter 3: the layer stack, lookup and readdir."""

import pytest

from .support import OK, Scenario, d, err, f, op, paths, s, scenario_tests, val, w


def file_b_is_upper_text(result: dict) -> None:
    assert paths(result["merged"])["/x"]["size"] == 5


SCENARIOS = [
    Scenario(
        "top-layer-decides",
        "[LOOKUP-1][LOOKUP-2]",
        [[f("/x", "lower")], [f("/x", "upper")]],
        [op("read", path="/x")],
        results=[val("dXBwZXI=")],
        then=file_b_is_upper_text,
    ),
    Scenario(
        "file-hides-lower-directory",
        "[LOOKUP-2]",
        [[d("/x"), f("/x/inner")], [f("/x", "top")]],
        [op("stat", path="/x/inner"), op("readdir", path="/x")],
        results=[err("ENOTDIR"), err("ENOTDIR")],
    ),
    Scenario(
        "directories-merge",
        "[LOOKUP-3][READDIR-1]",
        [[d("/x"), f("/x/a")], [d("/x"), f("/x/b")], [d("/x"), f("/x/c")]],
        [op("readdir", path="/x")],
        results=[val(["a", "b", "c"])],
    ),
    Scenario(
        "merge-stops-at-file",
        "[LOOKUP-3]",
        [[d("/x"), f("/x/a")], [f("/x")], [d("/x"), f("/x/c")]],
        [op("readdir", path="/x")],
        results=[val(["c"])],
    ),
    Scenario(
        "merge-stops-after-opaque",
        "[LOOKUP-3][OPAQUE-1]",
        [[d("/x"), f("/x/a")], [d("/x", opaque=True), f("/x/b")], [d("/x"), f("/x/c")]],
        [op("readdir", path="/x")],
        results=[val(["b", "c"])],
    ),
    Scenario(
        "merged-attributes-from-top",
        "[LOOKUP-4]",
        [[d("/x", 0o700, uid=5, gid=6)], [d("/x", 0o751, uid=7, gid=8)]],
        [op("stat", path="/x")],
        results=[val({"type": "dir", "mode": 0o751, "uid": 7, "gid": 8})],
    ),
    Scenario(
        "readdir-hides-whiteouts-of-merged-dir",
        "[READDIR-1][WHITEOUT-1]",
        [[d("/x"), f("/x/a"), f("/x/b")], [d("/x"), w("/x/a")]],
        [op("readdir", path="/x"), op("stat", path="/x/a")],
        results=[val(["b"]), err("ENOENT")],
    ),
    Scenario(
        "readdir-of-plain-dir-lists-whiteouts",
        "[READDIR-2]",
        [[f("/other")], [d("/x"), w("/x/gone"), f("/x/kept")]],
        [op("readdir", path="/x"), op("stat", path="/x/gone")],
        results=[val(["gone", "kept"]), err("ENOENT")],
    ),
    Scenario(
        "readdir-follows-symlink",
        "[READDIR-1][PATH-6]",
        [[d("/x"), f("/x/a"), s("/l", "x")]],
        [op("readdir", path="/l"), op("mkdir", path="/x/n", mode=0o755), op("readdir", path="/x")],
        results=[val(["a"]), OK, val(["a", "n"])],
    ),
]

SCENARIOS.append(
    Scenario(
        "no-layers-is-one-empty-layer",
        "[LOOKUP-4][RENAME-5]",
        [],
        [op("mkdir", path="/a", mode=0o755), op("rename", src="/a", dst="/b"), op("readdir", path="/")],
        results=[OK, OK, val(["b"])],
        then=lambda result: None if result["upper"][0]["opaque"] is True else pytest.fail(str(result["upper"])),
    )
)

test_model, test_kernel = scenario_tests(SCENARIOS)
