"""Chapter 18: the cost of copy-up, as the model predicts it."""

from typing import Any

import pytest

from cowspec.formats.trace import build_layers, decode_trace
from cowspec.fs.cost import FREE, INDEX_LABEL, Cost, created_entries, is_metacopy, moved_from, step_cost
from cowspec.fs.entries import FileInode
from cowspec.fs.layer import empty_layer, new_name
from cowspec.fs.operations import step
from cowspec.fs.stack import new_container
from tests.support import d, f, h, op, w

BIG = "x" * 5000


def costs(layers: list[list[dict[str, Any]]], ops: list[dict[str, Any]], **features: bool) -> list[Cost]:
    """The predicted cost of each op of a trace, in order."""
    trace = decode_trace({"format": "cowspec-trace/1", "features": features, "layers": layers, "ops": ops})
    container = new_container(build_layers(trace), trace.features)
    found: list[Cost] = []
    for each in trace.ops:
        found.append(step_cost(container, each))
        container = step(container, each).container
    return found


def test_chmod_of_an_image_file_copies_it_whole_once() -> None:
    """[COST-2][COST-4] The first change copies the file and creates its entry; a later change costs nothing."""
    first, later = costs(
        [[f("/big", BIG)]], [op("chmod", path="/big", mode=0o600), op("chmod", path="/big", mode=0o644)]
    )
    assert first == Cost(copied=(("/big", 5000),), created=("/big",))
    assert first.bytes_copied == 5000 and first.objects_created == 1
    assert later == FREE


@pytest.mark.parametrize(
    "call",
    [
        op("write", path="/big", offset=0, data="abc"),
        op("append", path="/big", data="abc"),
        op("truncate", path="/big", size=0),
        op("open", path="/big", flags="w"),
        op("chown", path="/big", uid=1, gid=1),
    ],
    ids=["write", "append", "truncate", "open-w", "chown"],
)
def test_every_changing_call_copies_the_file_at_its_size_before(call: dict[str, Any]) -> None:
    """[COST-2] A truncate to 0 still copies the 5000 bytes first; the copy counts what was copied."""
    (cost,) = costs([[f("/big", BIG)]], [call])
    assert cost.copied == (("/big", 5000),)


def test_reading_costs_nothing() -> None:
    """[COST-1] Calls that never copy up create nothing and copy nothing."""
    layers = [[d("/a"), f("/a/x", BIG)]]
    ops = [
        op("read", path="/a/x"),
        op("stat", path="/a/x"),
        op("readdir", path="/a"),
        op("open", path="/a/x", flags="r"),
    ]
    assert costs(layers, ops) == [FREE] * 4


def test_deep_parents_are_created_and_copy_no_data() -> None:
    """[COST-4][COST-2] A file at the bottom of eight image-layer directories: nine entries, one file's bytes."""
    deep = "/" + "/".join("abcdefgh")
    (cost,) = costs([[f(deep + "/x", "12345")]], [op("chmod", path=deep + "/x", mode=0o600)])
    parents = tuple("/" + "/".join("abcdefgh"[:count]) for count in range(1, 9))
    assert cost.created == tuple(sorted((*parents, deep + "/x")))
    assert cost.objects_created == 9 and cost.bytes_copied == 5


def test_many_layers_cost_the_same_as_one() -> None:
    """[COST-2] The file's layer depth does not change what is copied."""
    layers = [[f("/deep", BIG)], *[[f(f"/other{index}", "y")] for index in range(20)]]
    (cost,) = costs(layers, [op("append", path="/deep", data="z")])
    assert cost == Cost(copied=(("/deep", 5000),), created=("/deep",))


def test_hardlinks_copy_each_name_once_without_index() -> None:
    """[COST-2][COST-4] With index off each copied name is an inode of its own (COPYUP-5); a link of an upper
    name adds an entry and copies nothing."""
    layers = [[f("/a", BIG), h("/b", "/a")]]
    ops = [op("chmod", path="/a", mode=0o600), op("chmod", path="/b", mode=0o600), op("link", src="/a", dst="/c")]
    first, second, linked = costs(layers, ops)
    assert first == Cost(copied=(("/a", 5000),), created=("/a",))
    assert second == Cost(copied=(("/b", 5000),), created=("/b",))
    assert linked == Cost(created=("/c",))


def test_link_of_an_image_file_copies_it_and_names_it_twice() -> None:
    """[COST-2][COST-4] The source is copied up (one inode, once) and gains the new name."""
    (cost,) = costs([[d("/d"), f("/d/a", BIG)]], [op("link", src="/d/a", dst="/b")])
    assert cost == Cost(copied=(("/b", 5000),), created=("/b", "/d", "/d/a"))


def test_rename_of_an_image_file_copies_it_and_leaves_a_whiteout() -> None:
    """[COST-4][COST-2] The copy lands at the new name, and a whiteout hides the old one."""
    (cost,) = costs([[f("/a", BIG)]], [op("rename", src="/a", dst="/b")])
    assert cost == Cost(copied=(("/b", 5000),), created=("/a", "/b"))


def test_rename_of_an_upper_entry_creates_nothing() -> None:
    """[COST-4] A moved entry is the same entry: a rename in the writable layer alone costs nothing."""
    layers: list[list[dict[str, Any]]] = [[]]
    ops = [op("mkdir", path="/d", mode=0o755), op("create", path="/d/x", mode=0o644), op("rename", src="/d", dst="/e")]
    made_dir, made_file, renamed = costs(layers, ops)
    assert made_dir == Cost(created=("/d",)) and made_file == Cost(created=("/d/x",))
    assert renamed == FREE


def test_rename_onto_an_upper_file_creates_nothing() -> None:
    """[COST-4] The target's entry is replaced by the moved one."""
    ops = [op("create", path="/a", mode=0o644), op("create", path="/b", mode=0o644), op("rename", src="/a", dst="/b")]
    assert costs([[]], ops)[2] == FREE


def test_rename_of_a_merged_directory_with_redirect_dir() -> None:
    """[COST-4] The directory is copied up under its new name (its entries stay below) and a whiteout is left."""
    layers = [[d("/d"), f("/d/x", BIG)]]
    (cost,) = costs(layers, [op("rename", src="/d", dst="/e")], redirect_dir=True)
    assert cost == Cost(created=("/d", "/e"))


def test_removing_creates_whiteouts_and_copies_nothing() -> None:
    """[COST-4] An unlink or rmdir of an image-layer object costs one whiteout and no data."""
    layers = [[f("/a", BIG), d("/e"), d("/p"), f("/p/q", "1")]]
    ops = [op("unlink", path="/a"), op("rmdir", path="/e"), op("unlink", path="/p/q")]
    gone_file, gone_dir, gone_below = costs(layers, ops)
    assert gone_file == Cost(created=("/a",)) and gone_dir == Cost(created=("/e",))
    assert gone_below == Cost(created=("/p", "/p/q"))


def test_recreating_over_a_whiteout_is_a_new_entry() -> None:
    """[COST-4] The new file replaces the whiteout at the same path: one entry created, no data copied."""
    layers = [[f("/a", BIG), w("/gone")], []]
    ops = [op("unlink", path="/a"), op("create", path="/a", mode=0o644)]
    assert costs(layers, ops) == [Cost(created=("/a",)), Cost(created=("/a",))]


def test_a_failed_call_costs_nothing() -> None:
    """[COST-1] ENOENT, EEXIST: nothing copied, nothing created."""
    layers = [[d("/d"), f("/d/a", BIG)]]
    ops = [op("chmod", path="/d/missing", mode=0o600), op("create", path="/d/a", mode=0o644)]
    assert costs(layers, ops) == [FREE, FREE]


def test_a_rename_refused_after_its_copy_up_keeps_what_it_copied() -> None:
    """[COST-1] RENAME-7: the source and the target's parents are copied up, then the rename is refused."""
    layers = [[d("/s"), f("/s/x", BIG)]]
    ops = [op("mkdir", path="/t", mode=0o755), op("create", path="/t/y", mode=0o644), op("rename", src="/s", dst="/t")]
    assert costs(layers, ops, redirect_dir=True)[2] == Cost(created=("/s",))


def test_is_metacopy_reads_the_mark() -> None:
    """[COST-3] A file copied for its metadata alone is marked; a data copy is not."""
    assert is_metacopy(FileInode(b"abc", 0o644, 0, 0, metacopy=True))
    assert not is_metacopy(FileInode(b"abc", 0o644, 0, 0))


META = {"metacopy": True, "redirect_dir": True}


def test_metacopy_chmod_copies_no_data_until_a_write() -> None:
    """[COST-3] chmod and chown copy attributes only; the first write copies the data, at the file's size."""
    ops = [
        op("chmod", path="/big", mode=0o600),
        op("chown", path="/big", uid=1, gid=1),
        op("write", path="/big", offset=0, data="a"),
        op("write", path="/big", offset=1, data="b"),
    ]
    chmod, chown, first_write, second_write = costs([[f("/big", BIG)]], ops, **META)
    assert chmod == Cost(created=("/big",)) and chown == FREE
    assert first_write == Cost(copied=(("/big", 5000),))
    assert second_write == FREE


@pytest.mark.parametrize("call", [op("rename", src="/big", dst="/moved"), op("link", src="/big", dst="/moved")])
def test_metacopy_rename_and_link_copy_no_data(call: dict[str, Any]) -> None:
    """[COST-3] The source of a rename or a link is copied for its metadata alone."""
    (cost,) = costs([[f("/big", BIG)]], [call], **META)
    assert cost.bytes_copied == 0 and "/moved" in cost.created


@pytest.mark.parametrize("call", ["truncate", "append", "open"])
def test_metacopy_calls_that_need_data_copy_it(call: str) -> None:
    """[COST-2][COST-3] truncate, append and open for writing copy the data at once, metacopy or not."""
    choices: dict[str, dict[str, Any]] = {"truncate": {"size": 1}, "append": {"data": "z"}, "open": {"flags": "w"}}
    fields = choices[call]
    (cost,) = costs([[f("/big", BIG)]], [op(call, path="/big", **fields)], **META)
    assert cost == Cost(copied=(("/big", 5000),), created=("/big",))


def test_index_links_the_second_name_to_the_first_copy() -> None:
    """[COST-2][COST-4] With index on, the second name of a hardlinked image file costs an entry, no data."""
    layers = [[f("/a", BIG), h("/b", "/a")]]
    first, second = costs(layers, [op("chmod", path="/a", mode=0o600), op("chmod", path="/b", mode=0o600)], index=True)
    assert first == Cost(copied=(("/a", 5000),), created=("/a",))
    assert second == Cost(created=("/b",))


@pytest.mark.parametrize(
    "calls",
    [
        [op("unlink", path="/a")],
        [op("create", path="/c", mode=0o644), op("rename", src="/c", dst="/a")],
    ],
    ids=["unlink", "rename-over"],
)
def test_index_removing_one_name_of_an_image_hardlink_copies_it_into_the_index(calls: list[dict[str, Any]]) -> None:
    """[COST-2][COST-5] With index on, removing a name of a hardlinked image file copies the file whole into the
    index (no upper name shows it), so that its other names stay one inode; the copy counts under ``(index)``."""
    layers = [[f("/a", BIG), h("/b", "/a")]]
    found = costs(layers, [*calls, op("chmod", path="/b", mode=0o600)], index=True)
    removed, later = found[-2], found[-1]
    assert removed.copied == ((INDEX_LABEL, 5000),) and removed.bytes_copied == 5000
    assert later == Cost(created=("/b",)), "the other name links to the index copy: no data"


def test_index_removing_every_name_copies_once() -> None:
    """[COST-2] The second name's unlink finds the copy in the index already: nothing more is copied."""
    first, second = costs(
        [[f("/a", BIG), h("/b", "/a")]], [op("unlink", path="/a"), op("unlink", path="/b")], index=True
    )
    assert first.copied == ((INDEX_LABEL, 5000),) and second == Cost(created=("/b",))


def test_without_index_removing_a_name_copies_nothing() -> None:
    """[COST-2] With index off the whiteout alone is left."""
    (cost,) = costs([[f("/a", BIG), h("/b", "/a")]], [op("unlink", path="/a")])
    assert cost == Cost(created=("/a",))


def test_moved_from_maps_a_moved_subtree_back() -> None:
    """[COST-4] The entries a rename moved are looked for where they were."""
    assert moved_from("/e/x", ("/d", "/e")) == "/d/x"
    assert moved_from("/e", ("/d", "/e")) == "/d"
    assert moved_from("/ex", ("/d", "/e")) == "/ex"
    assert moved_from("/e/x", None) == "/e/x"


def test_created_entries_counts_new_names_of_an_inode() -> None:
    """[COST-4] An inode that gains a name gains an entry; one that keeps its count, none."""
    one = new_name(empty_layer(), "/a", FileInode(b"", 0o644, 0, 0))
    assert created_entries(empty_layer(), one, None) == ("/a",)
    assert created_entries(one, one, None) == ()
