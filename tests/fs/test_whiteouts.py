"""Chapter 4: whiteouts and opaque directories."""

from collections.abc import Callable

from tests.support import OK, Result, Scenario, d, err, f, op, paths, scenario_tests, val, w


def upper_has_whiteout(path: str) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        assert paths(result["upper"])[path] == {"path": path, "type": "whiteout"}

    return check


def upper_lacks(path: str) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        assert path not in paths(result["upper"])

    return check


def opaque_upper_dir(path: str, opaque: bool) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        assert paths(result["upper"])[path]["opaque"] is opaque
        assert path in paths(result["merged"])

    return check


SCENARIOS = [
    Scenario(
        "whiteout-hides-lower-directory",
        "[WHITEOUT-1]",
        [[d("/x"), f("/x/a")], [w("/x")]],
        [op("stat", path="/x"), op("stat", path="/x/a"), op("readdir", path="/")],
        results=[err("ENOENT"), err("ENOENT"), val([])],
    ),
    Scenario(
        "unlink-lower-file-leaves-whiteout",
        "[WHITEOUT-2][UNLINK-1]",
        [[f("/a", "data")]],
        [op("unlink", path="/a"), op("stat", path="/a")],
        results=[OK, err("ENOENT")],
        then=upper_has_whiteout("/a"),
    ),
    Scenario(
        "unlink-upper-only-file-leaves-nothing",
        "[WHITEOUT-2]",
        [[d("/x")]],
        [op("create", path="/x/n", mode=0o644), op("unlink", path="/x/n")],
        results=[OK, OK],
        then=upper_lacks("/x/n"),
    ),
    Scenario(
        "recreated-over-lower-whiteout-then-unlinked",
        "[WHITEOUT-2][WHITEOUT-3]",
        [[f("/a", "old")], [w("/a")]],
        [op("create", path="/a", mode=0o600), op("unlink", path="/a"), op("stat", path="/a")],
        results=[OK, OK, err("ENOENT")],
        then=upper_lacks("/a"),
    ),
    Scenario(
        "create-replaces-upper-whiteout",
        "[WHITEOUT-3]",
        [[f("/a", "old")]],
        [op("unlink", path="/a"), op("create", path="/a", mode=0o600), op("read", path="/a")],
        results=[OK, OK, val("")],
    ),
    Scenario(
        "mkdir-over-upper-whiteout-is-opaque",
        "[WHITEOUT-4][MKDIR-1]",
        [[d("/x"), f("/x/old")]],
        [
            op("unlink", path="/x/old"),
            op("rmdir", path="/x"),
            op("mkdir", path="/x", mode=0o755),
            op("readdir", path="/x"),
        ],
        results=[OK, OK, OK, val([])],
        then=opaque_upper_dir("/x", True),
    ),
    Scenario(
        "mkdir-over-lower-whiteout-is-not-opaque",
        "[WHITEOUT-4]",
        [[d("/x"), f("/x/old")], [w("/x")]],
        [op("mkdir", path="/x", mode=0o755), op("readdir", path="/x")],
        results=[OK, val([])],
        then=opaque_upper_dir("/x", False),
    ),
    Scenario(
        "opaque-directory-in-image-layer",
        "[OPAQUE-1]",
        [[d("/x"), f("/x/a")], [d("/x", opaque=True), f("/x/b")]],
        [op("stat", path="/x/a"), op("readdir", path="/x")],
        results=[err("ENOENT"), val(["b"])],
    ),
]

test_model, test_kernel = scenario_tests(SCENARIOS)
