"""Chapter 8: ``index``, the hardlinks of image layers kept together.

Each scenario is a kernel experiment of Linux 6.18 written down as a trace
(``tests/cowcheck/test_features_kernel.py`` replays them on the kernel):
a lower file ``/a`` with the names ``/b``, ``/c`` and ``/d/e``.
"""

import hashlib
from typing import Any

from tests.support import OK, Result, Scenario, b64, d, entry_has, err, f, h, op, paths, s, scenario_tests, val

INDEX = {"index": True}
REDIRECT_INDEX = {"redirect_dir": True, "index": True}
FOUR_NAMES = [[f("/a", "hello"), h("/b", "/a"), h("/c", "/a"), d("/d"), h("/d/e", "/a")]]


def stat_file(mode: int, size: int, nlink: int, uid: int = 0, gid: int = 0) -> Result:
    return val({"type": "file", "mode": mode, "uid": uid, "gid": gid, "size": size, "nlink": nlink})


def upper_paths(result: Result) -> dict[str, Any]:
    return {path: entry["type"] for path, entry in paths(result["upper"]).items()}


def check_copy_up_keeps_names(result: Result) -> None:
    # Only the names copied up are in the writable layer; /c and /d/e show the copy from below.
    assert upper_paths(result) == {"/a": "file", "/b": "file"}
    merged = paths(result["merged"])
    for name in ("/a", "/b", "/c", "/d/e"):
        assert merged[name]["mode"] == 0o600 and merged[name]["nlink"] == 4, merged[name]
        assert merged[name]["sha256"] == hashlib.sha256(b"hello!").hexdigest()


def check_count_follows_links(result: Result) -> None:
    assert upper_paths(result) == {"/a": "file", "/b": "file", "/c": "whiteout", "/d": "dir", "/d/e": "whiteout"}
    assert paths(result["merged"])["/b"]["nlink"] == 2


def check_index_only_copy(result: Result) -> None:
    # The copy the unlink made lives in the index alone: no entry, no SIZE [INDEX-3].
    assert upper_paths(result) == {"/y": "whiteout"}
    assert result["sizes"]["size"] == 0


SCENARIOS = [
    Scenario(
        "copy-up-of-one-name-keeps-every-name",
        "[INDEX-1][INDEX-2]",
        FOUR_NAMES,
        [
            op("append", path="/a", data="!"),
            op("read", path="/b"),
            op("read", path="/d/e"),
            op("stat", path="/c"),
            op("chmod", path="/b", mode=0o600),
            op("stat", path="/d/e"),
        ],
        results=[OK, val(b64("hello!")), val(b64("hello!")), stat_file(0o644, 6, 4), OK, stat_file(0o600, 6, 4)],
        then=check_copy_up_keeps_names,
        features=INDEX,
    ),
    Scenario(
        "link-unlink-rename-move-the-overlay-count",
        "[INDEX-2][INDEX-1]",
        FOUR_NAMES,
        [
            op("append", path="/a", data="!"),
            op("chmod", path="/b", mode=0o600),
            op("link", src="/c", dst="/n"),
            op("stat", path="/a"),
            op("unlink", path="/c"),
            op("stat", path="/n"),
            op("rename", src="/d/e", dst="/z"),
            op("stat", path="/z"),
            op("unlink", path="/n"),
            op("unlink", path="/z"),
            op("stat", path="/a"),
        ],
        results=[
            OK,
            OK,
            OK,
            stat_file(0o600, 6, 5),
            OK,
            stat_file(0o600, 6, 4),
            OK,
            stat_file(0o600, 6, 4),
            OK,
            OK,
            stat_file(0o600, 6, 2),
        ],
        then=check_count_follows_links,
        features=INDEX,
    ),
    Scenario(
        "rename-between-two-names-is-a-no-op",
        "[INDEX-2][RENAME-4]",
        [[f("/a", "A"), h("/b", "/a"), f("/g", "G"), h("/h", "/g")]],
        [
            op("rename", src="/a", dst="/b"),
            op("readdir", path="/"),
            op("stat", path="/a"),
            op("rename", src="/g", dst="/h2"),
            op("rename", src="/h", dst="/h2"),
            op("readdir", path="/"),
            op("stat", path="/h2"),
        ],
        results=[
            OK,
            val(["a", "b", "g", "h"]),
            stat_file(0o644, 1, 2),
            OK,
            OK,
            val(["a", "b", "h", "h2"]),
            stat_file(0o644, 1, 2),
        ],
        then=lambda result: None if "/a" not in paths(result["upper"]) else (_ for _ in ()).throw(AssertionError()),
        features=INDEX,
    ),
    Scenario(
        "unlink-of-a-name-not-copied-copies-into-the-index",
        "[INDEX-3][INDEX-2]",
        [[f("/x", "xx"), h("/y", "/x")]],
        [op("unlink", path="/y"), op("stat", path="/x"), op("read", path="/x")],
        results=[OK, stat_file(0o644, 2, 1), val(b64("xx"))],
        then=check_index_only_copy,
        features=INDEX,
    ),
    Scenario(
        "index-copy-then-a-name-copied-up",
        "[INDEX-3][INDEX-1]",
        [[f("/x", "xx"), h("/y", "/x")]],
        [op("unlink", path="/y"), op("chmod", path="/x", mode=0o600), op("stat", path="/x")],
        results=[OK, OK, stat_file(0o600, 2, 1)],
        then=lambda result: None if result["sizes"]["size"] == 2 else (_ for _ in ()).throw(AssertionError(result)),
        features=INDEX,
    ),
    Scenario(
        "symlink-hardlinks-are-indexed-too",
        "[INDEX-1]",
        [[s("/s", "tgt"), h("/t", "/s")]],
        [op("chown", path="/s", uid=7, gid=7), op("stat", path="/t"), op("readlink", path="/t")],
        results=[OK, val({"type": "symlink", "mode": 0o777, "uid": 7, "gid": 7, "size": 3}), val("tgt")],
        features=INDEX,
    ),
    Scenario(
        "rename-over-a-name-of-an-indexed-inode",
        "[INDEX-2][INDEX-3][RENAME-6]",
        [[f("/a", "A"), h("/b", "/a"), h("/c", "/a"), f("/o", "O")]],
        [op("rename", src="/o", dst="/b"), op("stat", path="/a"), op("read", path="/b")],
        results=[OK, stat_file(0o644, 1, 2), val(b64("O"))],
        features=REDIRECT_INDEX,
    ),
    Scenario(
        "a-name-hidden-by-an-image-layer-still-counts",
        "[INDEX-2]",
        [[f("/a", "A"), h("/b", "/a"), h("/c", "/a")], [{"path": "/c", "type": "whiteout"}]],
        [op("stat", path="/a"), op("unlink", path="/b"), op("stat", path="/a"), op("unlink", path="/a")],
        results=[stat_file(0o644, 1, 3), OK, stat_file(0o644, 1, 2), OK],
        then=lambda result: None if result["merged"] == [] else (_ for _ in ()).throw(AssertionError(result)),
        features=INDEX,
    ),
    Scenario(
        "without-index-the-copy-breaks-the-link",
        "[COPYUP-5][RENAME-4]",
        [[f("/a", "A"), h("/b", "/a")]],
        [op("rename", src="/a", dst="/b"), op("stat", path="/b"), op("readdir", path="/")],
        results=[OK, stat_file(0o644, 1, 1), val(["b"])],
    ),
    Scenario(
        "new-directory-in-a-merged-one-is-opaque",
        "[REDIRECT-4]",
        [[]],
        [op("mkdir", path="/a", mode=0o755)],
        results=[OK],
        then=entry_has("upper", "/a", opaque=True),
        features=INDEX,
    ),
    Scenario(
        "a-failed-link-changes-no-count",
        "[INDEX-2][OP-1]",
        FOUR_NAMES,
        [op("link", src="/a", dst="/b"), op("stat", path="/a")],
        results=[err("EEXIST"), stat_file(0o644, 5, 4)],
        features=INDEX,
    ),
]

test_model, _ = scenario_tests(SCENARIOS)
