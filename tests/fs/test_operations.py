"""Chapter 6: every operation, its errno and its effect."""

import random
from collections.abc import Callable

import pytest

from cowspec.errors import Errno, ModelError
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import (
    Append,
    Chmod,
    Chown,
    Create,
    Link,
    Mkdir,
    Op,
    Open,
    Read,
    Readdir,
    Readlink,
    Rename,
    Rmdir,
    Stat,
    Symlink,
    Truncate,
    Unlink,
    Write,
)
from cowspec.fs.features import Features
from cowspec.fs.observe import layer_tree, merged_tree
from cowspec.fs.operations import Allowed, allowed, apply, change_file, check, inherited, redirect_for, refused, step
from cowspec.fs.stack import Container, lookup, new_container
from tests.fs.test_stack import random_layer, random_op
from tests.support import OK, Result, Scenario, d, entry_has, err, f, h, op, paths, s, scenario_tests, val, w


def merged_entry(path: str, **fields: object) -> Callable[[Result], None]:
    return entry_has("merged", path, **fields)


def upper_entry(path: str, **fields: object) -> Callable[[Result], None]:
    return entry_has("upper", path, **fields)


def renamed_file(result: Result) -> None:
    upper = paths(result["upper"])
    assert upper["/a"] == {"path": "/a", "type": "whiteout"}
    assert upper["/x/b"]["sha256"] == paths(result["merged"])["/x/b"]["sha256"]


def moved_dir_is_opaque(result: Result) -> None:
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


# -- check, then apply ---------------------------------------------------------------


def container_of(*layers: tuple[LayerEntry, ...], redirect_dir: bool = False) -> Container:
    """A container over ``layers`` (bottom first)."""
    lowers = tuple(build_layer(entries, f"layer {index}") for index, entries in enumerate(layers))
    return new_container(lowers, Features(redirect_dir=redirect_dir))


def observed(container: Container) -> tuple[object, object]:
    """The whole-tree observations of ``container`` [OBSERVE-1]."""
    return merged_tree(container), layer_tree(container.upper)


STACK = container_of(
    (
        LayerEntry("/x", "dir", 0o755),
        LayerEntry("/x/a", "file", 0o644, data=b"A"),
        LayerEntry("/x/l", "symlink", 0, target="a"),
        LayerEntry("/x/loop", "symlink", 0, target="loop"),
        LayerEntry("/e", "dir", 0o755),
    ),
)

CHECKS: list[tuple[Op, Errno | None]] = [
    (Create("/x/a", 0o644), "EEXIST"),  # [OP-3][CREATE-1]
    (Create("/", 0o644), "EEXIST"),
    (Create("/no/a", 0o644), "ENOENT"),  # [PATH-5]
    (Create("/x/a/b", 0o644), "ENOTDIR"),
    (Create("/x/loop/b", 0o644), "ELOOP"),  # [PATH-4]
    (Create("/x/n", 0o644), None),
    (Open("/x", "w"), "EISDIR"),  # [OPEN-1]
    (Open("/x", "r"), None),
    (Open("/x/none", "rw"), "ENOENT"),
    (Write("/x", 0, b"z"), "EISDIR"),  # [WRITE-1]
    (Append("/x/l", b"z"), None),  # [WRITE-2]
    (Truncate("/x/none", -1), "EINVAL"),  # [TRUNCATE-1]: the size before the path
    (Truncate("/x", 1), "EISDIR"),
    (Read("/x"), "EISDIR"),  # [READ-1]
    (Read("/x/l"), None),
    (Stat("/x/none"), "ENOENT"),  # [STAT-1]
    (Stat("/x/loop"), None),
    (Readdir("/x/a"), "ENOTDIR"),  # [READDIR-1]
    (Readlink("/x/a"), "EINVAL"),  # [READLINK-1]
    (Readlink("/x/l"), None),
    (Mkdir("/x/l", 0o755), "EEXIST"),  # [MKDIR-1]
    (Rmdir("/"), "EBUSY"),  # [RMDIR-1]
    (Rmdir("/x/a"), "ENOTDIR"),
    (Rmdir("/x"), "ENOTEMPTY"),  # [RMDIR-2]
    (Rmdir("/e"), None),
    (Unlink("/"), "EISDIR"),  # [UNLINK-1]
    (Unlink("/x"), "EISDIR"),
    (Unlink("/x/none"), "ENOENT"),
    (Symlink("", "/x/a"), "ENOENT"),  # [SYMLINK-1]: the empty target first
    (Symlink("t", "/x/a"), "EEXIST"),
    (Link("/x/none", "/x/a"), "ENOENT"),  # [LINK-1]: the source first
    (Link("/x", "/x/a"), "EEXIST"),
    (Link("/x", "/y"), "EPERM"),
    (Chmod("/x/loop", 0o700), "ELOOP"),  # [CHMOD-1]
    (Chown("/x/loop", 1, 1), None),  # [CHOWN-1]
    (Rename("/", "/y"), "EBUSY"),  # [RENAME-1]
    (Rename("/x/none", "/y"), "ENOENT"),
    (Rename("/x", "/x/y"), "EINVAL"),
    (Rename("/x/a", "/x"), "ENOTEMPTY"),
    (Rename("/e", "/x/a"), "ENOTDIR"),  # [RENAME-2]
    (Rename("/x/a", "/e"), "EISDIR"),
    (Rename("/x", "/y"), "EXDEV"),  # [RENAME-3]
    (Rename("/x/a", "/x/a"), None),  # [RENAME-4]
]


@pytest.mark.parametrize(
    ("call", "errno"), CHECKS, ids=[f"{type(call).__name__}-{index}" for index, (call, _) in enumerate(CHECKS)]
)
def test_check_gives_the_errno_and_apply_the_state(call: Op, errno: Errno | None) -> None:
    """[OP-1] ``check`` gives the errno in the kernel's order, or None, and changes nothing; ``step``
    fails with it and keeps the container; where the check passes, ``apply`` gives ``step``'s state
    and value."""
    before = observed(STACK)
    assert check(STACK, call) == errno
    assert observed(STACK) == before
    transition = step(STACK, call)
    if errno is not None:
        assert transition.outcome == errno and transition.container is STACK
        return
    applied = apply(STACK, call)
    assert transition.outcome == applied.value
    assert observed(transition.container) == observed(applied.container)


def test_apply_after_a_failed_walk_is_a_model_error() -> None:
    """[OP-1] ``apply`` is only for a call whose check passed: a walk that fails raises ``ModelError``."""
    for call in (
        Write("/x/none", 0, b"z"),
        Stat("/x/none"),
        Rename("/x/none", "/y"),
        Rmdir("/x/none"),
        Unlink("/x/none"),
    ):
        assert check(STACK, call) == "ENOENT"
        with pytest.raises(ModelError):
            apply(STACK, call)


def test_a_refused_rename_can_keep_its_copy_up() -> None:
    """[RENAME-7][RENAME-5] The writable layer refuses a directory onto a non-empty directory of its
    own after the copy-up: ``check`` gives ENOTEMPTY without changing anything, ``step`` keeps the
    marks, and the merged view is the same."""
    container = container_of((LayerEntry("/x", "dir", 0o755), LayerEntry("/x/old", "file", 0o644)))
    for call in (Mkdir("/m", 0o755), Mkdir("/x/t", 0o755), Create("/x/t/keep", 0o644)):
        container = step(container, call).container
    rename = Rename("/m", "/x/t")
    before = observed(container)
    assert check(container, rename) == "ENOTEMPTY"
    assert observed(container) == before
    transition = step(container, rename)
    assert transition.outcome == "ENOTEMPTY"
    assert merged_tree(transition.container) == before[0]
    assert paths(layer_tree(transition.container.upper))["/m"]["opaque"] is True
    assert refused(container, rename) is not container


def test_every_call_allows_one_outcome_today() -> None:
    """[OP-1] ``allowed`` gives the set of outcomes the spec allows, each with the state after it:
    one for every call today, ``step``'s; an outcome outside the set has no state after it."""
    for call, _ in CHECKS:
        choice = allowed(STACK, call)
        transition = step(STACK, call)
        assert choice.outcomes == frozenset({transition.outcome})
        assert choice.admits(transition.outcome)
        after = choice.after(transition.outcome)
        assert after is not None and observed(after) == observed(transition.container)
        assert choice.after("EXDEV" if transition.outcome != "EXDEV" else "ENOENT") is None
    with pytest.raises(ModelError):
        Allowed(())


def test_model_invariants_raise_model_error() -> None:
    """[OP-4][REDIRECT-3] Asking for a new entry's mode in a non-directory, or a redirect for a
    non-directory, is a model bug: ``ModelError``, not an ``assert`` that ``-O`` removes."""
    found = lookup(STACK, "/x/a")
    assert found is not None
    with pytest.raises(ModelError):
        inherited(found, 0o644, is_dir=False)
    with pytest.raises(ModelError):
        redirect_for(STACK, "/x/a", same_dir=True)
    with pytest.raises(ModelError):
        change_file(STACK, found, lambda inode: inode)


@pytest.mark.parametrize("seed", range(20))
def test_step_is_the_check_then_the_apply(seed: int) -> None:
    """[OP-1][RENAME-7] On random stacks and calls: ``step`` fails with ``check``'s errno and keeps
    the merged view (the container too, but for a rename's marks), or gives ``apply``'s state."""
    rng = random.Random(seed)
    container = container_of(*(random_layer(rng) for _ in range(rng.randrange(1, 4))), redirect_dir=seed % 2 == 1)
    for _ in range(30):
        call = random_op(rng)
        errno = check(container, call)
        transition = step(container, call)
        if errno is None:
            applied = apply(container, call)
            assert transition.outcome == applied.value
            assert observed(transition.container) == observed(applied.container)
        else:
            assert transition.outcome == errno
            assert merged_tree(transition.container) == merged_tree(container)
            assert transition.container is container or isinstance(call, Rename)
        container = transition.container
