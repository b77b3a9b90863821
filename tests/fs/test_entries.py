"""Chapter 1: entries and layers, and the model's immutability."""

import pytest

from cowspec.errors import ModelError, SpecError
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.entries import Dir, FileInode, Name, Whiteout
from cowspec.fs.layer import empty_layer, link, move, new_name, put, remove, subtree
from tests.support import Scenario, d, f, h, op, paths, s, scenario_tests, val


def test_layer_updates_are_persistent() -> None:
    """[ENTRY-1] An update gives a new layer and leaves the old one as it was."""
    base = put(empty_layer(), "/x", Dir(0o755, 0, 0))
    with_file = new_name(base, "/x/a", FileInode(b"data", 0o644, 0, 0))
    assert base.get("/x/a") is None and isinstance(with_file.get("/x/a"), Name)
    whited = put(with_file, "/x/a", Whiteout())
    assert isinstance(with_file.get("/x/a"), Name) and isinstance(whited.get("/x/a"), Whiteout)
    assert len(with_file.inodes) == 1 and len(whited.inodes) == 0


def test_hardlinks_share_an_inode() -> None:
    """[ENTRY-2]"""
    layer = new_name(put(empty_layer(), "/x", Dir(0o755, 0, 0)), "/x/a", FileInode(b"d", 0o644, 0, 0))
    node = layer.get("/x/a")
    assert isinstance(node, Name)
    linked = link(layer, "/b", node.ino)
    assert linked.inode(node.ino).nlink == 2 and linked.get("/b") == node
    assert remove(linked, "/x").inode(node.ino).nlink == 1


def test_subtree_and_move() -> None:
    """[ENTRY-4] Subtrees move whole, and nothing is left behind."""
    layer = empty_layer()
    for path in ("/a", "/a/b", "/a/b/c", "/z"):
        layer = put(layer, path, Dir(0o755, 0, 0))
    moved = move(layer, "/a", "/z/n")
    assert sorted(subtree(moved, "/z")) == ["/z", "/z/n", "/z/n/b", "/z/n/b/c"]
    assert moved.get("/a") is None and moved.names_in("/") == {"z"}


def test_model_refuses_impossible_states() -> None:
    """[ENTRY-4] A node under a non-directory is a model bug, not a state."""
    layer = new_name(empty_layer(), "/f", FileInode(b"", 0o644, 0, 0))
    with pytest.raises(ModelError):
        put(layer, "/f/x", Dir(0o755, 0, 0))
    with pytest.raises(ModelError):
        remove(layer, "/")


def test_layer_below_a_non_directory_is_rejected() -> None:
    """[ENTRY-4][TRACE-2]"""
    with pytest.raises(SpecError, match="lies below the file"):
        build_layer((LayerEntry("/a", "file", 0o644), LayerEntry("/a/b", "dir", 0o755)), "layer 0")


SCENARIOS = [
    Scenario(
        "attributes-of-each-kind",
        "[ENTRY-3]",
        [
            [
                d("/x", 0o1777, uid=3, gid=4),
                f("/x/f", "abc", 0o6755, uid=5, gid=6),
                {"path": "/x/l", "type": "symlink", "target": "f", "uid": 7, "gid": 8},
            ]
        ],
        [op("stat", path="/x/l")],
        results=[val({"type": "symlink", "mode": 0o777, "uid": 7, "gid": 8, "size": 1})],
        then=lambda result: (
            None
            if paths(result["merged"])["/x"] == {"path": "/x", "type": "dir", "mode": 0o1777, "uid": 3, "gid": 4}
            and paths(result["merged"])["/x/f"]["mode"] == 0o6755
            else pytest.fail(str(result["merged"]))
        ),
    ),
    Scenario(
        "implied-parents",
        "[ENTRY-4]",
        [[f("/a/b/c", "x")]],
        [op("stat", path="/a"), op("stat", path="/a/b")],
        results=[val({"type": "dir", "mode": 0o755, "uid": 0, "gid": 0})] * 2,
    ),
    Scenario(
        "hardlinks-in-a-layer",
        "[ENTRY-2][ENTRY-1]",
        [[f("/a", "x"), h("/b", "/a"), h("/c", "/b"), s("/s", "a"), h("/t", "/s")]],
        [op("stat", path="/c"), op("readlink", path="/t")],
        results=[val({"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 1, "nlink": 3}), val("a")],
    ),
]

test_model, test_kernel = scenario_tests(SCENARIOS)
