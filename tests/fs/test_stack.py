"""Chapter 3: the layer stack, lookup and readdir."""

import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace

import pytest
from immutables import Map

from cowspec.errors import ModelError
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import Chmod, Create, Mkdir, Op, Rename, Rmdir, Unlink
from cowspec.fs.entries import Dir, Whiteout
from cowspec.fs.features import Features
from cowspec.fs.layer import empty_layer, put
from cowspec.fs.operations import step
from cowspec.fs.paths import ROOT
from cowspec.fs.stack import Container, Found, child_names, inode_of, lookup_child, new_container, root_of, scan_child
from tests.support import OK, Result, Scenario, d, err, f, op, paths, s, scenario_tests, val, w


def file_b_is_upper_text(result: Result) -> None:
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


# -- lookup through the image view equals the scan the rules state ---------------

NAMES = ("a", "b", "c")


def random_layer(rng: random.Random) -> tuple[LayerEntry, ...]:
    """A small random layer over a few names, never below its own non-directory."""
    chosen: dict[str, LayerEntry] = {}
    blocked: set[str] = set()
    for _ in range(rng.randrange(1, 12)):
        depth = rng.randrange(1, 4)
        path = "/" + "/".join(rng.choice(NAMES) for _ in range(depth))
        if path in chosen or any(path.startswith(each + "/") for each in blocked):
            continue
        roll = rng.random()
        if roll < 0.35:
            entry = LayerEntry(path, "dir", 0o755, opaque=rng.random() < 0.25)
        elif any(each.startswith(path + "/") for each in chosen):
            continue
        elif roll < 0.6:
            entry = LayerEntry(path, "file", 0o644, data=path.encode())
        elif roll < 0.75:
            entry = LayerEntry(path, "symlink", 0, target=rng.choice(NAMES))
        else:
            entry = LayerEntry(path, "whiteout", 0)
        chosen[path] = entry
        if entry.type != "dir":
            blocked.add(path)
    return tuple(chosen.values())


def random_op(rng: random.Random) -> Op:
    def pick() -> str:
        return "/" + "/".join(rng.choice(NAMES) for _ in range(rng.randrange(1, 4)))

    kind = rng.randrange(7)
    if kind < 2:
        return Rename(pick(), pick())
    if kind == 2:
        return Mkdir(pick(), 0o755)
    if kind == 3:
        return Create(pick(), 0o644)
    if kind == 4:
        return Rmdir(pick())
    if kind == 5:
        return Unlink(pick())
    return Chmod(pick(), 0o700)


def tree_of(container: Container, child: Callable[[Container, Found, str], Found | None]) -> dict[str, Found]:
    """Every visible object found by ``child`` from the root, by path."""
    root = root_of(container)
    seen = {ROOT: root}
    pending = [root]
    while pending:
        directory = pending.pop()
        for name in sorted(child_names(container, directory)):
            found = child(container, directory, name)
            if found is not None:
                seen[found.path] = found
                if found.is_dir:
                    pending.append(found)
    return seen


@pytest.mark.parametrize("seed", range(40))
def test_lookup_through_the_image_view_equals_the_scan(seed: int) -> None:
    """[LOOKUP-1][LOOKUP-2][LOOKUP-3][OPAQUE-1][REDIRECT-2] ``lookup_child`` asks the writable
    layer and the image view; ``scan_child`` scans every layer of the parent as the rules say.
    Both find the same objects with the same stacks, on random stacks, before and after random
    renames (with and without redirect_dir), mkdirs and removals."""
    rng = random.Random(seed)
    lowers = tuple(build_layer(random_layer(rng), f"layer {index}") for index in range(rng.randrange(1, 5)))
    container = new_container(lowers, Features(redirect_dir=seed % 2 == 1))
    for _ in range(25):
        fast = tree_of(container, lookup_child)
        scanned = tree_of(container, lambda within, parent, name: scan_child(within.top_down, parent, name))
        assert fast == scanned
        container = step(container, random_op(rng)).container


def test_the_image_view_is_made_once_per_container() -> None:
    """[LOOKUP-1] A step keeps the view of the image layers: only the writable layer changes."""
    container = new_container((build_layer((LayerEntry("/x/a", "file", 0o644),), "layer 0"),))
    after = step(container, Create("/x/b", 0o644)).container
    assert after.image is container.image and after.upper is not container.upper
    assert sorted(container.image.found) == ["/", "/x", "/x/a"]


def test_a_redirect_in_an_image_layer_is_a_model_error() -> None:
    """[REDIRECT-1] Only the writable layer holds redirects; the image view refuses one below."""
    layer = put(empty_layer(), "/x", Dir(0o755, 0, 0, redirect="y"))
    with pytest.raises(ModelError, match="redirect"):
        new_container((layer,))


def test_broken_invariants_raise_model_error_even_under_dash_o() -> None:
    """[LOOKUP-4] A writable layer whose root is not a directory, or the inode of a directory,
    is a model bug: ``ModelError``, which ``python -O`` keeps (an ``assert`` would vanish)."""
    container = new_container(())
    bad_root = replace(container.upper, entries=Map({ROOT: Whiteout()}))
    with pytest.raises(ModelError):
        root_of(replace(container, upper=bad_root))
    with pytest.raises(ModelError):
        inode_of(container, root_of(container))
    script = (
        "from cowspec.fs.stack import new_container, root_of, inode_of\n"
        "from cowspec.errors import ModelError\n"
        "container = new_container(())\n"
        "try:\n"
        "    inode_of(container, root_of(container))\n"
        "except ModelError:\n"
        "    print('raised')\n"
    )
    run = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout == "raised\n"
