"""Chapter 8: ``redirect_dir``, renaming directories that image layers hold."""

from collections.abc import Callable

from tests.support import OK, Result, Scenario, d, entry_has, err, f, op, paths, scenario_tests, val, w

ON = {"redirect_dir": True}


def upper_dir(path: str, opaque: bool) -> Callable[[Result], None]:
    return entry_has("upper", path, opaque=opaque)


SCENARIOS = [
    Scenario(
        "rename-lower-dir-within-its-directory",
        "[REDIRECT-1][REDIRECT-2][REDIRECT-3][RENAME-3]",
        [[d("/x"), f("/x/a", "A"), d("/x/sub"), f("/x/sub/b")]],
        [
            op("rename", src="/x", dst="/y"),
            op("readdir", path="/y"),
            op("read", path="/y/a"),
            op("stat", path="/x"),
            op("readdir", path="/y/sub"),
        ],
        results=[OK, val(["a", "sub"]), val("QQ=="), err("ENOENT"), val(["b"])],
        features=ON,
    ),
    Scenario(
        "rename-lower-dir-across-directories-and-again",
        "[REDIRECT-2][REDIRECT-3]",
        [[d("/p/x"), f("/p/x/a"), d("/q")], [d("/p/x"), f("/p/x/b")]],
        [
            op("rename", src="/p/x", dst="/q/y"),
            op("readdir", path="/q/y"),
            op("rename", src="/q/y", dst="/z"),
            op("readdir", path="/z"),
            op("rename", src="/z", dst="/w"),
            op("readdir", path="/w"),
            op("readdir", path="/p"),
        ],
        results=[OK, val(["a", "b"]), OK, val(["a", "b"]), OK, val(["a", "b"]), val([])],
        features=ON,
    ),
    Scenario(
        "redirected-dir-hides-what-it-lands-on",
        "[REDIRECT-2][RENAME-6]",
        [[d("/x"), f("/x/a"), d("/y"), f("/y/old")], [w("/y/old")]],
        [
            op("rename", src="/x", dst="/y"),
            op("readdir", path="/y"),
            op("create", path="/y/n", mode=0o600),
            op("unlink", path="/y/a"),
            op("readdir", path="/y"),
        ],
        results=[OK, val(["a"]), OK, OK, val(["n"])],
        features=ON,
    ),
    Scenario(
        "renamed-parent-then-child",
        "[REDIRECT-3]",
        [[d("/a"), d("/a/b"), f("/a/b/f"), d("/c")]],
        [
            op("rename", src="/a", dst="/a2"),
            op("rename", src="/a2/b", dst="/c/b2"),
            op("readdir", path="/c/b2"),
            op("rmdir", path="/a2"),
            op("stat", path="/a"),
        ],
        results=[OK, OK, val(["f"]), OK, err("ENOENT")],
        features=ON,
    ),
    Scenario(
        "mkdir-in-merged-directory-is-opaque",
        "[REDIRECT-4][MKDIR-1]",
        [[d("/x"), f("/x/a")]],
        [op("mkdir", path="/x/n", mode=0o755), op("mkdir", path="/x/n/m", mode=0o755)],
        results=[OK, OK],
        then=lambda result: [upper_dir("/x/n", True)(result), upper_dir("/x/n/m", False)(result)][0],
        features=ON,
    ),
    Scenario(
        "failed-rename-still-copies-up",
        "[RENAME-7][REDIRECT-3]",
        [[d("/x"), f("/x/a")]],
        [
            op("mkdir", path="/full", mode=0o755),
            op("create", path="/full/f", mode=0o644),
            op("rename", src="/x", dst="/full"),
        ],
        results=[OK, OK, err("ENOTEMPTY")],
        then=lambda result: None if "/x" in paths(result["upper"]) else (_ for _ in ()).throw(AssertionError()),
        features=ON,
    ),
]

test_model, test_kernel = scenario_tests(SCENARIOS)
