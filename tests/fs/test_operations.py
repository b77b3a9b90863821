"""Chapter 6: every operation, its errno and its effect."""

from collections.abc import Callable

from tests.support import OK, Result, Scenario, d, entry_has, err, f, h, op, paths, s, scenario_tests, val, w


def merged_entry(path: str, **fields: object) -> Callable[[Result], None]:
    return entry_has("merged", path, **fields)


def upper_entry(path: str, **fields: object) -> Callable[[Result], None]:
    return entry_has("upper", path, **fields)


def renamed_file(result: dict) -> None:
    upper = paths(result["upper"])
    assert upper["/a"] == {"path": "/a", "type": "whiteout"}
    assert upper["/x/b"]["sha256"] == paths(result["merged"])["/x/b"]["sha256"]


def moved_dir_is_opaque(result: dict) -> None:
    upper = paths(result["upper"])
    assert upper["/x/m"]["opaque"] is True
    assert "/x/m/keep" in upper


SCENARIOS = [
    Scenario(
        "failed-calls-change-nothing",
        "[OP-1]",
        [[d("/x"), f("/x/a")]],
        [op("mkdir", path="/x/a", mode=0o755), op("rmdir", path="/x"), op("unlink", path="/x")],
        results=[err("EEXIST"), err("ENOTEMPTY"), err("EISDIR")],
        then=lambda result: None if result["upper"] == [] else (_ for _ in ()).throw(AssertionError(result)),
    ),
    Scenario(
        "modes-as-given-with-umask-0",
        "[OP-2][CREATE-1][MKDIR-1]",
        [[d("/x")]],
        [
            op("create", path="/x/f", mode=0o4777),
            op("mkdir", path="/x/d", mode=0o7777),
            op("stat", path="/x/f"),
            op("stat", path="/x/d"),
        ],
        results=[
            OK,
            OK,
            val({"type": "file", "mode": 0o4777, "uid": 0, "gid": 0, "size": 0, "nlink": 1}),
            val({"type": "dir", "mode": 0o1777, "uid": 0, "gid": 0}),
        ],
    ),
    Scenario(
        "create-over-dangling-symlink-is-eexist",
        "[OP-3][CREATE-1][SYMLINK-1]",
        [[s("/l", "nowhere")]],
        [
            op("create", path="/l", mode=0o644),
            op("mkdir", path="/l", mode=0o755),
            op("symlink", target="x", path="/l"),
            op("create", path="/", mode=0o644),
            op("create", path="/nowhere/x", mode=0o644),
        ],
        results=[err("EEXIST"), err("EEXIST"), err("EEXIST"), err("EEXIST"), err("ENOENT")],
    ),
    Scenario(
        "setgid-directory-passes-group",
        "[OP-4]",
        [[d("/g", 0o2775, gid=50)]],
        [
            op("create", path="/g/f", mode=0o644),
            op("mkdir", path="/g/d", mode=0o755),
            op("symlink", target="f", path="/g/l"),
        ],
        results=[OK, OK, OK],
        then=lambda result: [
            merged_entry("/g/f", gid=50, mode=0o644)(result),
            merged_entry("/g/d", gid=50, mode=0o2755)(result),
            merged_entry("/g/l", gid=50)(result),
        ][0],
    ),
    Scenario(
        "open-errors",
        "[OPEN-1]",
        [[d("/x"), f("/x/a")]],
        [
            op("open", path="/x", flags="r"),
            op("open", path="/x", flags="rw"),
            op("open", path="/y", flags="r"),
            op("open", path="/x/a/b", flags="r"),
        ],
        results=[OK, err("EISDIR"), err("ENOENT"), err("ENOTDIR")],
    ),
    Scenario(
        "write-past-end-fills-zeros",
        "[WRITE-1]",
        [[f("/a", "ab")]],
        [op("write", path="/a", offset=4, data="z"), op("read", path="/a"), op("write", path="/a", offset=20, data="")],
        results=[OK, val("YWIAAHo="), OK],
        then=merged_entry("/a", size=5),
    ),
    Scenario(
        "append-at-end",
        "[WRITE-2]",
        [[f("/a", "ab")]],
        [op("append", path="/a", data="cd"), op("read", path="/a")],
        results=[OK, val("YWJjZA==")],
    ),
    Scenario(
        "truncate-cuts-extends-and-checks",
        "[TRUNCATE-1]",
        [[d("/x"), f("/x/a", "abcdef")]],
        [
            op("truncate", path="/x/a", size=2),
            op("truncate", path="/x/a", size=4),
            op("read", path="/x/a"),
            op("truncate", path="/x", size=0),
            op("truncate", path="/nothing", size=-1),
        ],
        results=[OK, OK, val("YWIAAA=="), err("EISDIR"), err("EINVAL")],
    ),
    Scenario(
        "read-a-directory",
        "[READ-1]",
        [[d("/x")]],
        [op("read", path="/x"), op("read", path="/y")],
        results=[err("EISDIR"), err("ENOENT")],
    ),
    Scenario(
        "stat-each-kind",
        "[STAT-1]",
        [[d("/x", 0o700), f("/a", "abc", 0o4755, uid=1, gid=2), s("/l", "a/b/c")]],
        [op("stat", path="/x"), op("stat", path="/a"), op("stat", path="/l")],
        results=[
            val({"type": "dir", "mode": 0o700, "uid": 0, "gid": 0}),
            val({"type": "file", "mode": 0o4755, "uid": 1, "gid": 2, "size": 3, "nlink": 1}),
            val({"type": "symlink", "mode": 0o777, "uid": 0, "gid": 0, "size": 5}),
        ],
    ),
    Scenario(
        "readlink",
        "[READLINK-1]",
        [[f("/a"), s("/l", "/a")]],
        [op("readlink", path="/l"), op("readlink", path="/a"), op("readlink", path="/z")],
        results=[val("/a"), err("EINVAL"), err("ENOENT")],
    ),
    Scenario(
        "rmdir-errors",
        "[RMDIR-1][RMDIR-2]",
        [[d("/x"), f("/x/a"), d("/e"), s("/l", "e")]],
        [
            op("rmdir", path="/"),
            op("rmdir", path="/y"),
            op("rmdir", path="/x/a"),
            op("rmdir", path="/l"),
            op("rmdir", path="/x"),
            op("rmdir", path="/e"),
        ],
        results=[err("EBUSY"), err("ENOENT"), err("ENOTDIR"), err("ENOTDIR"), err("ENOTEMPTY"), OK],
    ),
    Scenario(
        "rmdir-counts-whited-out-names-as-empty",
        "[RMDIR-2][WHITEOUT-2]",
        [[d("/x"), f("/x/a")], [d("/x"), w("/x/a")]],
        [op("rmdir", path="/x"), op("stat", path="/x")],
        results=[OK, err("ENOENT")],
    ),
    Scenario(
        "unlink-errors-and-hardlink-count",
        "[UNLINK-1]",
        [[d("/x")]],
        [
            op("unlink", path="/"),
            op("unlink", path="/x"),
            op("unlink", path="/y"),
            op("create", path="/p", mode=0o644),
            op("link", src="/p", dst="/q"),
            op("unlink", path="/p"),
            op("stat", path="/q"),
        ],
        results=[
            err("EISDIR"),
            err("EISDIR"),
            err("ENOENT"),
            OK,
            OK,
            OK,
            val({"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 0, "nlink": 1}),
        ],
    ),
    Scenario(
        "symlink-empty-target-first",
        "[SYMLINK-1]",
        [[f("/a")]],
        [op("symlink", target="", path="/a"), op("symlink", target="a", path="/b"), op("read", path="/b")],
        results=[err("ENOENT"), OK, val("")],
    ),
    Scenario(
        "link-order-of-checks",
        "[LINK-1]",
        [[d("/x"), f("/a", "data")]],
        [
            op("link", src="/none", dst="/x"),
            op("link", src="/x", dst="/a"),
            op("link", src="/x", dst="/n"),
            op("link", src="/a", dst="/x/a2"),
            op("stat", path="/x/a2"),
        ],
        results=[
            err("ENOENT"),
            err("EEXIST"),
            err("EPERM"),
            OK,
            val({"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 4, "nlink": 2}),
        ],
    ),
    Scenario(
        "link-copies-up-lower-hardlink",
        "[LINK-1][COPYUP-5]",
        [[f("/a", "data"), h("/b", "/a")]],
        [op("link", src="/a", dst="/c")],
        results=[OK],
        then=lambda result: [
            merged_entry("/a", nlink=2)(result),
            merged_entry("/b", nlink=2)(result),
            merged_entry("/c", nlink=2)(result),
        ][0],
    ),
    Scenario(
        "chmod-follows-symlink",
        "[CHMOD-1]",
        [[f("/a", mode=0o644), s("/l", "a")]],
        [op("chmod", path="/l", mode=0o600)],
        results=[OK],
        then=upper_entry("/a", mode=0o600),
    ),
    Scenario(
        "chown-clears-setid-on-files",
        "[CHOWN-1]",
        [[f("/a", mode=0o6755), f("/b", mode=0o6745), d("/x", 0o6755)]],
        [
            op("chown", path="/a", uid=1, gid=1),
            op("chown", path="/b", uid=0, gid=0),
            op("chown", path="/x", uid=1, gid=1),
        ],
        results=[OK, OK, OK],
        then=lambda result: [
            merged_entry("/a", mode=0o755, uid=1)(result),
            merged_entry("/b", mode=0o2745)(result),
            merged_entry("/x", mode=0o6755)(result),
        ][0],
    ),
    Scenario(
        "rename-walk-errors",
        "[RENAME-1]",
        [[d("/x"), d("/x/y"), f("/a")]],
        [
            op("rename", src="/", dst="/z"),
            op("rename", src="/a", dst="/"),
            op("rename", src="/n", dst="/z"),
            op("rename", src="/x", dst="/x/y/z"),
            op("rename", src="/x/y", dst="/x"),
            op("rename", src="/a", dst="/n/a"),
        ],
        results=[err("EBUSY"), err("EBUSY"), err("ENOENT"), err("EINVAL"), err("ENOTEMPTY"), err("ENOENT")],
    ),
    Scenario(
        "rename-kind-errors",
        "[RENAME-2]",
        [[f("/a"), d("/e")]],
        [
            op("mkdir", path="/d", mode=0o755),
            op("mkdir", path="/full", mode=0o755),
            op("create", path="/full/f", mode=0o644),
            op("rename", src="/d", dst="/a"),
            op("rename", src="/a", dst="/e"),
            op("rename", src="/d", dst="/full"),
        ],
        results=[OK, OK, OK, err("ENOTDIR"), err("EISDIR"), err("ENOTEMPTY")],
    ),
    Scenario(
        "refused-rename-leaves-source-opaque",
        "[RENAME-7][RENAME-5]",
        [[d("/x")]],
        [
            op("mkdir", path="/x/m", mode=0o755),
            op("mkdir", path="/x/full", mode=0o755),
            op("create", path="/x/full/f", mode=0o644),
            op("rename", src="/x/m", dst="/x/full"),
        ],
        results=[OK, OK, OK, err("ENOTEMPTY")],
        then=upper_entry("/x/m", opaque=True),
    ),
    Scenario(
        "rename-lower-directory-is-exdev",
        "[RENAME-3]",
        [[d("/x"), f("/x/a")]],
        [op("rename", src="/x", dst="/y"), op("mkdir", path="/u", mode=0o755), op("rename", src="/u", dst="/v")],
        results=[err("EXDEV"), OK, OK],
    ),
    Scenario(
        "rename-same-inode-is-noop",
        "[RENAME-4]",
        [[f("/a", "data"), h("/b", "/a")]],
        [
            op("rename", src="/a", dst="/a"),
            op("create", path="/p", mode=0o644),
            op("link", src="/p", dst="/q"),
            op("rename", src="/p", dst="/q"),
            op("stat", path="/p"),
            op("rename", src="/a", dst="/b"),
            op("stat", path="/a"),
        ],
        results=[
            OK,
            OK,
            OK,
            OK,
            val({"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 0, "nlink": 2}),
            OK,
            err("ENOENT"),
        ],
    ),
    Scenario(
        "moved-directory-becomes-opaque",
        "[RENAME-5]",
        [[d("/x"), f("/x/old")]],
        [
            op("mkdir", path="/m", mode=0o755),
            op("create", path="/m/keep", mode=0o644),
            op("rename", src="/m", dst="/x/m"),
        ],
        results=[OK, OK, OK],
        then=moved_dir_is_opaque,
    ),
    Scenario(
        "rename-lower-file-leaves-whiteout",
        "[RENAME-6][WHITEOUT-2][COPYUP-6]",
        [[f("/a", "data"), d("/x")]],
        [op("rename", src="/a", dst="/x/b"), op("read", path="/x/b")],
        results=[OK, val("ZGF0YQ==")],
        then=renamed_file,
    ),
]

test_model, test_kernel = scenario_tests(SCENARIOS)
