"""Chapter 2: paths and their resolution."""

import pytest

from cowspec.errors import SpecError
from cowspec.formats.trace import decode_op
from cowspec.fs.paths import ancestors, fold, is_inside, is_normalised, join, name_of, parent_of, rebase
from tests.support import OK, Scenario, d, err, f, model_result, op, s, scenario_tests, val


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


LONG = "n" * 256
"""A name one byte longer than Linux's NAME_MAX."""
DOTTED_4094 = "/" + "./" * 2046 + "a"
DOTTED_4096 = "/" + "./" * 2047 + "a"
"""The path /a written 4094 bytes long, and one of PATH_MAX (4096) bytes, one too many with the closing NUL."""

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
    Scenario(
        "names-and-paths-too-long-for-linux",
        "[PATH-2][PATH-5]",
        [[f("/a", "A"), d("/d"), s("/far", "d/" + LONG)]],
        [
            op("stat", path="/" + LONG),
            op("stat", path="/missing/" + LONG),
            op("stat", path="/a/" + LONG),
            op("create", path="/d/" + LONG, mode=0o644),
            op("create", path="/" + "\u00e9" * 128, mode=0o644),
            op("create", path="/" + "m" * 255, mode=0o644),
            op("mkdir", path="/" + LONG + "/x", mode=0o755),
            op("unlink", path="/" + LONG),
            op("read", path="/far"),
            op("stat", path=DOTTED_4094),
            op("stat", path=DOTTED_4096),
            op("symlink", target="x" * 4095, path="/s"),
            op("symlink", target="x" * 4096, path="/missing/s"),
            op("link", src="/missing", dst=DOTTED_4096),
            op("link", src="/a", dst="/" + LONG),
        ],
        results=[
            err("ENAMETOOLONG"),
            err("ENOENT"),
            err("ENOTDIR"),
            err("ENAMETOOLONG"),
            err("ENAMETOOLONG"),
            OK,
            err("ENAMETOOLONG"),
            err("ENAMETOOLONG"),
            err("ENAMETOOLONG"),
            val({"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 1, "nlink": 1}),
            err("ENAMETOOLONG"),
            OK,
            err("ENAMETOOLONG"),
            err("ENOENT"),
            err("ENAMETOOLONG"),
        ],
    ),
    Scenario(
        "rename-looks-up-both-last-names-after-both-parents",
        "[PATH-2][RENAME-1]",
        [[f("/a", "A"), d("/d")]],
        [
            op("rename", src="/missing", dst="/" + LONG),
            op("rename", src="/a", dst="/" + LONG),
            op("rename", src="/" + LONG, dst="/a"),
            op("rename", src="/" + LONG, dst="/missing/x"),
            op("rename", src="/missing", dst=DOTTED_4096),
            op("rename", src="/d", dst="/d/" + LONG),
        ],
        results=[
            err("ENOENT"),
            err("ENAMETOOLONG"),
            err("ENAMETOOLONG"),
            err("ENOENT"),
            err("ENAMETOOLONG"),
            err("ENAMETOOLONG"),
        ],
    ),
]

test_model, test_kernel = scenario_tests(SCENARIOS)


@pytest.mark.parametrize(
    "entry",
    [f("/" + LONG), d("/d/" + LONG), f("/" + "d/" * 2048 + "f"), s("/l", "x" * 4096)],
    ids=["long-name", "long-dir-name", "long-path", "long-target"],
)
def test_a_layer_no_linux_file_system_holds_is_rejected(entry: dict[str, object]) -> None:
    """[TRACE-2] a name over NAME_MAX, a path or a symlink target of PATH_MAX bytes: one line, no model."""
    with pytest.raises(SpecError, match="layer 0 entry 0"):
        model_result({"format": "cowspec-trace/1", "layers": [[entry]], "ops": []})
