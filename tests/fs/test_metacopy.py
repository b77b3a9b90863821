"""Chapter 8: ``metacopy``, copying up the metadata alone.

Each scenario is a kernel experiment of Linux 6.18 written down as a trace
(``tests/cowcheck/test_features_kernel.py`` replays them on the kernel).
"""

import hashlib
from collections.abc import Callable

from cowspec.formats.trace import build_layers, decode_trace
from cowspec.fs.calls import Chmod, Open
from cowspec.fs.entries import Name, is_metacopy
from cowspec.fs.layer import metacopy_at
from cowspec.fs.operations import step
from cowspec.fs.stack import new_container
from tests.support import OK, Result, Scenario, b64, d, entry_has, f, h, op, paths, scenario_tests, val

METACOPY = {"redirect_dir": True, "metacopy": True}
EVERYTHING = {"redirect_dir": True, "index": True, "metacopy": True}
DATA = "data-" + "a" * 3000


def zeros(size: int) -> str:
    return hashlib.sha256(bytes(size)).hexdigest()


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def metacopy(path: str, size: int, **more: object) -> Callable[[Result], None]:
    """The upper entry at ``path`` holds no data: zeros of the file's size, marked."""
    return entry_has("upper", path, metacopy=True, size=size, sha256=zeros(size), **more)


def data_copy(path: str, text: str) -> Callable[[Result], None]:
    """The upper entry at ``path`` holds the data and no mark."""

    def check(result: Result) -> None:
        entry = paths(result["upper"])[path]
        assert "metacopy" not in entry and entry["sha256"] == digest(text), entry

    return check


def no_redirect(path: str) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        assert "redirect" not in paths(result["upper"])[path]

    return check


def all_of(*checks: Callable[[Result], None]) -> Callable[[Result], None]:
    def check(result: Result) -> None:
        for each in checks:
            each(result)

    return check


def merged_data(path: str, text: str) -> Callable[[Result], None]:
    return entry_has("merged", path, sha256=digest(text), size=len(text.encode()))


SCENARIOS = [
    Scenario(
        "chmod-and-chown-copy-the-metadata-only",
        "[METACOPY-1][METACOPY-4]",
        [[f("/a", DATA), f("/b", DATA)]],
        [
            op("chmod", path="/a", mode=0o600),
            op("chown", path="/b", uid=5, gid=6),
            op("read", path="/a"),
            op("stat", path="/b"),
        ],
        results=[
            OK,
            OK,
            val(b64(DATA)),
            val({"type": "file", "mode": 0o644, "uid": 5, "gid": 6, "size": len(DATA), "nlink": 1}),
        ],
        then=all_of(
            metacopy("/a", len(DATA), mode=0o600),
            metacopy("/b", len(DATA), uid=5, gid=6),
            merged_data("/a", DATA),
            lambda result: (
                None if result["sizes"]["size"] == 2 * len(DATA) else (_ for _ in ()).throw(AssertionError())
            ),
        ),
        features=METACOPY,
    ),
    Scenario(
        "opening-for-writing-copies-the-data",
        "[METACOPY-2]",
        [[f("/c", "cc"), f("/d", "dd"), f("/e", "ee"), f("/g", "gg"), f("/k", "kk"), f("/w", "ww"), f("/r", "rr")]],
        [
            op("open", path="/c", flags="w"),
            op("open", path="/d", flags="rw"),
            op("truncate", path="/e", size=2),
            op("append", path="/g", data="G"),
            op("chmod", path="/k", mode=0o600),
            op("append", path="/k", data=""),
            op("chmod", path="/w", mode=0o600),
            op("write", path="/w", offset=0, data=""),
            op("chmod", path="/r", mode=0o600),
            op("open", path="/r", flags="r"),
            op("read", path="/r"),
        ],
        results=[OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, val(b64("rr"))],
        then=all_of(
            data_copy("/c", "cc"),
            data_copy("/d", "dd"),
            data_copy("/e", "ee"),
            data_copy("/g", "ggG"),
            data_copy("/k", "kk"),
            data_copy("/w", "ww"),
            metacopy("/r", 2, mode=0o600),
        ),
        features=METACOPY,
    ),
    Scenario(
        "rename-gives-a-redirect",
        "[METACOPY-3][METACOPY-1][REDIRECT-3]",
        [[f("/i", "ii"), f("/b", "bb"), f("/c", "cc"), d("/dir")]],
        [
            op("rename", src="/i", dst="/i2"),
            op("rename", src="/b", dst="/b2"),
            op("rename", src="/b2", dst="/b3"),
            op("rename", src="/c", dst="/dir/c2"),
            op("rename", src="/dir/c2", dst="/c3"),
            op("read", path="/c3"),
        ],
        results=[OK, OK, OK, OK, OK, val(b64("cc"))],
        then=all_of(
            metacopy("/i2", 2, redirect="i"),
            metacopy("/b3", 2, redirect="b"),
            metacopy("/c3", 2, redirect="/c"),
            entry_has("upper", "/i", type="whiteout"),
        ),
        features=METACOPY,
    ),
    Scenario(
        "link-gives-a-redirect-from-the-root",
        "[METACOPY-3][METACOPY-1]",
        [[f("/h", "hh"), d("/dir")]],
        [op("link", src="/h", dst="/dir/h2"), op("link", src="/h", dst="/h3"), op("stat", path="/h3")],
        results=[OK, OK, val({"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 2, "nlink": 3})],
        then=all_of(
            metacopy("/h", 2, redirect="/h"), metacopy("/dir/h2", 2, redirect="/h"), metacopy("/h3", 2, redirect="/h")
        ),
        features=METACOPY,
    ),
    Scenario(
        "a-redirect-stays-once-the-data-is-in",
        "[METACOPY-3][METACOPY-2]",
        [[f("/a", "data-a"), f("/d", "data-d")]],
        [
            op("rename", src="/a", dst="/a2"),
            op("write", path="/a2", offset=0, data="Z"),
            op("write", path="/d", offset=0, data="Z"),
            op("rename", src="/d", dst="/d2"),
        ],
        results=[OK, OK, OK, OK],
        then=all_of(
            data_copy("/a2", "Zata-a"),
            entry_has("upper", "/a2", redirect="a"),
            data_copy("/d2", "Zata-d"),
            no_redirect("/d2"),
        ),
        features=METACOPY,
    ),
    Scenario(
        "a-redirect-composes-through-a-renamed-directory",
        "[METACOPY-3][REDIRECT-3]",
        [[d("/dir/sub"), f("/dir/sub/f", "ff")]],
        [
            op("rename", src="/dir/sub/f", dst="/dir/sub/g"),
            op("rename", src="/dir/sub", dst="/sub2"),
            op("rename", src="/sub2/g", dst="/sub2/h"),
            op("rename", src="/sub2/h", dst="/top"),
            op("read", path="/top"),
        ],
        results=[OK, OK, OK, OK, val(b64("ff"))],
        then=metacopy("/top", 2, redirect="/dir/sub/f"),
        features=METACOPY,
    ),
    Scenario(
        "metacopy-of-one-name-breaks-the-link-without-index",
        "[METACOPY-1][COPYUP-5]",
        [[f("/p", "pp"), h("/q", "/p")]],
        [op("chmod", path="/p", mode=0o600), op("stat", path="/q")],
        results=[OK, val({"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 2, "nlink": 2})],
        then=metacopy("/p", 2, mode=0o600),
        features=METACOPY,
    ),
    Scenario(
        "index-and-metacopy-together",
        "[METACOPY-1][INDEX-3][INDEX-1][METACOPY-3]",
        [[f("/x", "xx"), h("/y", "/x"), f("/e", "E"), h("/f", "/e"), d("/dd")]],
        [
            op("unlink", path="/y"),
            op("chmod", path="/x", mode=0o600),
            op("rename", src="/e", dst="/dd/e2"),
            op("stat", path="/f"),
            op("append", path="/f", data="!"),
            op("read", path="/dd/e2"),
        ],
        results=[
            OK,
            OK,
            OK,
            val({"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 1, "nlink": 2}),
            OK,
            val(b64("E!")),
        ],
        then=all_of(
            metacopy("/x", 2, mode=0o600), data_copy("/dd/e2", "E!"), entry_has("upper", "/dd/e2", redirect="/e")
        ),
        features=EVERYTHING,
    ),
    Scenario(
        "a-renamed-hardlink-gets-a-redirect-from-the-root",
        "[METACOPY-3][COPYUP-5]",
        [[f("/c", ""), h("/a/a/a", "/c")]],
        [op("rename", src="/c", dst="/d")],
        results=[OK],
        then=metacopy("/d", 0, redirect="/c"),
        features=METACOPY,
    ),
    Scenario(
        "a-name-too-long-is-refused-before-any-copy-up",
        "[PATH-2][METACOPY-1][INDEX-3]",
        [[f("/h", "hh"), h("/g", "/h"), d("/dir")]],
        [
            op("rename", src="/h", dst="/dir/" + "n" * 256),
            op("link", src="/g", dst="/" + "n" * 256),
            op("rename", src="/dir", dst="/" + "m" * 256),
            op("stat", path="/g"),
        ],
        results=[
            {"errno": "ENAMETOOLONG"},
            {"errno": "ENAMETOOLONG"},
            {"errno": "ENAMETOOLONG"},
            val({"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 2, "nlink": 2}),
        ],
        then=lambda result: None if result["upper"] == [] else (_ for _ in ()).throw(AssertionError(result["upper"])),
        features=EVERYTHING,
    ),
    Scenario(
        "chmod-then-truncate-to-the-same-size",
        "[METACOPY-2]",
        [[f("/t", "tt")]],
        [op("chmod", path="/t", mode=0o600), op("truncate", path="/t", size=2)],
        results=[OK, OK],
        then=data_copy("/t", "tt"),
        features=METACOPY,
    ),
]

test_model, _ = scenario_tests(SCENARIOS)


def test_a_cost_predictor_can_ask_which_upper_files_hold_no_data() -> None:
    """[METACOPY-1][METACOPY-2] ``metacopy_at`` and ``is_metacopy`` follow a file from its metadata-only copy to
    the copy of its data; without metacopy, a chmod copies the data at once."""
    trace = decode_trace(Scenario("", "", [[f("/a", "xy")]], [], features=METACOPY).trace())
    lowers = build_layers(trace)
    container = new_container(lowers, trace.features)
    assert not metacopy_at(container.upper, "/a")
    container = step(container, Chmod("/a", 0o600)).container
    assert metacopy_at(container.upper, "/a")
    name = container.upper.get("/a")
    assert isinstance(name, Name) and is_metacopy(container.upper.inode(name.ino))
    container = step(container, Open("/a", "w")).container
    assert not metacopy_at(container.upper, "/a")
    plain = step(new_container(lowers), Chmod("/a", 0o600)).container
    assert not metacopy_at(plain.upper, "/a")
