"""Chapter 2: paths and their resolution."""

import pytest

from cowspec.errors import SpecError
from cowspec.formats.trace import decode_op
from cowspec.fs.paths import ancestors, fold, is_inside, is_normalised, join, name_of, parent_of, rebase
from tests.support import OK, Scenario, d, err, f, op, s, scenario_tests, val


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/", True), ("/a/b", True), ("a", False), ("/a/", False), ("/a//b", False), ("/a/./b", False), ("/..", False)],
)
def test_normalised(path: str, expected: bool) -> None:
    """[PATH-1]"""
    assert is_normalised(path) is expected


def test_path_helpers() -> None:
    """[PATH-1]"""
    assert join("/", "a") == "/a" and join("/a", "b") == "/a/b"
    assert parent_of("/a/b") == "/a" and parent_of("/a") == "/" and parent_of("/") == "/"
    assert name_of("/a/b") == "b"
    assert ancestors("/a/b/c") == ("/", "/a", "/a/b") and ancestors("/") == ()
    assert is_inside("/a/b", "/a") and not is_inside("/ab", "/a") and not is_inside("/a", "/a")
    assert rebase("/a/b/c", "/a", "/x") == "/x/b/c" and rebase("/a", "/a", "/x/y") == "/x/y"
    assert fold("/a/./b//../c") == "/a/c" and fold("/../..") == "/" and fold("x/y/") == "/x/y"


@pytest.mark.parametrize("path", ["/a/", "/a/.", "/a/..", "a/b", ""])
def test_op_paths_outside_the_spec_are_rejected(path: str) -> None:
    """[PATH-1][TRACE-3]"""
    with pytest.raises(SpecError, match="path"):
        decode_op({"op": "stat", "path": path}, "op 0")


SCENARIOS = [
    Scenario(
        "dot-and-dotdot-in-the-middle",
        "[PATH-2]",
        [[d("/x"), d("/x/y"), f("/x/a", "A")]],
        [
            op("read", path="/x/y/../a"),
            op("read", path="/x/./a"),
            op("read", path="/../x/a"),
            op("read", path="//x//a"),
        ],
        results=[val("QQ=="), val("QQ=="), val("QQ=="), val("QQ==")],
    ),
    Scenario(
        "symlinks-resolve-inside-the-root",
        "[PATH-3]",
        [
            [
                d("/etc"),
                f("/etc/hosts", "H"),
                s("/abs", "/etc"),
                s("/rel", "etc"),
                s("/up", "../../../etc"),
                s("/empty-ish", "/"),
                s("/slash", "etc/hosts/"),
            ]
        ],
        [
            op("read", path="/abs/hosts"),
            op("read", path="/rel/hosts"),
            op("read", path="/up/hosts"),
            op("read", path="/empty-ish/etc/hosts"),
            op("read", path="/slash"),
        ],
        results=[val("SA=="), val("SA=="), val("SA=="), val("SA=="), err("ENOTDIR")],
    ),
    Scenario(
        "trailing-slash-survives-a-chain-of-links",
        "[PATH-3]",
        [[d("/a"), f("/a/a", "A"), s("/a/b", "a"), s("/c", "a/b/")]],
        [
            op("write", path="//c", offset=0, data="x"),
            op("read", path="/c"),
            op("read", path="/a/b"),
            op("readlink", path="/c"),
        ],
        results=[err("ENOTDIR"), err("ENOTDIR"), val("QQ=="), val("a/b/")],
    ),
    Scenario(
        "symlink-loops",
        "[PATH-4]",
        [[s("/a", "b"), s("/b", "a"), s("/self", "self/x")]],
        [op("read", path="/a"), op("stat", path="/a"), op("stat", path="/self/y")],
        results=[err("ELOOP"), val({"type": "symlink", "mode": 0o777, "uid": 0, "gid": 0, "size": 1}), err("ELOOP")],
    ),
    Scenario(
        "forty-links-resolve-forty-one-loop",
        "[PATH-4]",
        [
            [
                f("/f", "F"),
                *[s(f"/l{i}", f"l{i + 1}") for i in range(40)],
                s("/l40", "f"),
                d("/dir"),
                s("/m0", "dir"),
                *[s(f"/m{i}", f"m{i - 1}/") for i in range(1, 41)],
            ]
        ],
        [
            op("read", path="/l1"),
            op("read", path="/l0"),
            op("stat", path="/l0"),
            op("readdir", path="/m39"),
            op("readdir", path="/m40"),
            op("mkdir", path="/m39/x", mode=0o755),
            op("mkdir", path="/m40/x", mode=0o755),
        ],
        results=[
            val("Rg=="),
            err("ELOOP"),
            val({"type": "symlink", "mode": 0o777, "uid": 0, "gid": 0, "size": 2}),
            val([]),
            err("ELOOP"),
            OK,
            err("ELOOP"),
        ],
    ),
    Scenario(
        "missing-and-non-directory-components",
        "[PATH-5]",
        [[f("/f"), s("/dangling", "nowhere")]],
        [
            op("stat", path="/none/x"),
            op("stat", path="/f/x"),
            op("stat", path="/dangling/x"),
            op("mkdir", path="/f/d", mode=0o755),
        ],
        results=[err("ENOENT"), err("ENOTDIR"), err("ENOENT"), err("ENOTDIR")],
    ),
    Scenario(
        "last-component-follow-rules",
        "[PATH-6]",
        [[d("/x"), f("/x/a", "A"), s("/l", "x/a"), s("/ld", "x")]],
        [
            op("stat", path="/l"),
            op("chmod", path="/l", mode=0o600),
            op("stat", path="/x/a"),
            op("chown", path="/l", uid=7, gid=7),
            op("stat", path="/l"),
            op("unlink", path="/l"),
            op("stat", path="/x/a"),
            op("rmdir", path="/ld"),
            op("readdir", path="/ld"),
        ],
        results=[
            val({"type": "symlink", "mode": 0o777, "uid": 0, "gid": 0, "size": 3}),
            OK,
            val({"type": "file", "mode": 0o600, "uid": 0, "gid": 0, "size": 1, "nlink": 1}),
            OK,
            val({"type": "symlink", "mode": 0o777, "uid": 7, "gid": 7, "size": 3}),
            OK,
            val({"type": "file", "mode": 0o600, "uid": 0, "gid": 0, "size": 1, "nlink": 1}),
            err("ENOTDIR"),
            val(["a"]),
        ],
    ),
]

test_model, test_kernel = scenario_tests(SCENARIOS)
