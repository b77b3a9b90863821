"""Chapter 9: whole-tree observations."""

from cowspec.formats.oracle import run_model
from cowspec.formats.trace import decode_trace
from cowspec.fs.observe import layer_tree, merged_tree
from tests.support import d, f, op, s, w


def test_merged_and_upper_trees() -> None:
    """[OBSERVE-1] Every field the format names, sorted by path, root excluded."""
    trace = decode_trace(
        {
            "format": "cowspec-trace/1",
            "layers": [[d("/x", 0o750), f("/x/a", "hi"), s("/l", "x"), f("/old")], [w("/old")]],
            "ops": [op("unlink", path="/x/a"), op("mkdir", path="/x/n", mode=0o700)],
        }
    )
    _, container = run_model(trace)
    assert merged_tree(container) == [
        {"path": "/l", "type": "symlink", "uid": 0, "gid": 0, "target": "x"},
        {"path": "/x", "type": "dir", "mode": 0o750, "uid": 0, "gid": 0},
        {"path": "/x/n", "type": "dir", "mode": 0o700, "uid": 0, "gid": 0},
    ]
    assert layer_tree(container.upper) == [
        {"path": "/x", "type": "dir", "mode": 0o750, "uid": 0, "gid": 0, "opaque": False},
        {"path": "/x/a", "type": "whiteout"},
        {"path": "/x/n", "type": "dir", "mode": 0o700, "uid": 0, "gid": 0, "opaque": False},
    ]


def test_file_entries_carry_content_hash() -> None:
    """[OBSERVE-1]"""
    trace = decode_trace({"format": "cowspec-trace/1", "layers": [[f("/a", "")]], "ops": []})
    _, container = run_model(trace)
    (entry,) = merged_tree(container)
    assert entry["sha256"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert entry["nlink"] == 1 and entry["size"] == 0
