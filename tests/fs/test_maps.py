"""The maps behind a layer: one persistent map type, and the writable layer's name sets."""

from collections.abc import Set

from immutables import Map

from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import Create, Mkdir
from cowspec.fs.entries import Dir, FileInode
from cowspec.fs.layer import EMPTY_NAMES, Layer, Names, empty_layer, move, names_of, new_name, put, remove
from cowspec.fs.operations import step
from cowspec.fs.stack import new_container

DIR = Dir(0o755, 0, 0)


def image_layer() -> Layer:
    return build_layer((LayerEntry("/d", "dir", 0o755), LayerEntry("/d/a", "file", 0o644, data=b"1")), "layer 0")


def test_image_and_writable_layers_use_one_map_type() -> None:
    """[ENTRY-1] Image layers and the writable layer keep their three maps in ``immutables.Map``."""
    container = new_container((image_layer(),))
    container = step(container, Mkdir("/d/n", 0o755)).container
    container = step(container, Create("/d/n/f", 0o644)).container
    for layer in (*container.lowers, container.upper):
        assert isinstance(layer.entries, Map)
        assert isinstance(layer.children, Map)
        assert isinstance(layer.inodes, Map)
    assert isinstance(container.upper.children["/d/n"], Names)


def test_names_is_a_persistent_set() -> None:
    """[ENTRY-1] Adding or removing a name gives new names and leaves the old ones as they were.

    ``Names`` is a ``collections.abc.Set``: it equals any set of the same names."""
    made = names_of(["a", "b"])
    names: Set[str] = made
    more: Set[str] = made.add("c")
    fewer: Set[str] = made.discard("a")
    unchanged: Set[str] = made.discard("zz")
    empty: Set[str] = EMPTY_NAMES
    assert names == {"a", "b"} and more == {"a", "b", "c"} and fewer == {"b"} and unchanged == names
    assert empty == set() and not empty
    assert names & {"b", "x"} == {"b"} and names | {"x"} == {"a", "b", "x"} and names - {"a"} == {"b"}
    assert isinstance(names & {"b"}, frozenset) and isinstance(more, Names) and isinstance(fewer, Names)
    assert hash(names) == hash(frozenset({"a", "b"})) and "a" in names and sorted(names) == ["a", "b"]


def test_adding_a_name_shares_the_other_names() -> None:
    """[ENTRY-1] A name added to a big directory of the writable layer leaves its other names shared,
    not copied: the old layer still sees exactly its own names."""
    layer = put(empty_layer(), "/big", DIR)
    for number in range(2000):
        layer = new_name(layer, f"/big/f{number}", FileInode(b"", 0o644, 0, 0))
    grown = new_name(layer, "/big/new", FileInode(b"", 0o644, 0, 0))
    assert len(layer.names_in("/big")) == 2000 and len(grown.names_in("/big")) == 2001
    assert "new" not in layer.names_in("/big") and "new" in grown.names_in("/big")


def test_changing_an_image_layer_makes_its_names_persistent() -> None:
    """[ENTRY-4] An image layer's directory names become ``Names`` when the directory changes,
    and the image layer itself is left as it was."""
    image = image_layer()
    assert image.names_in("/d") == {"a"}
    changed = put(image, "/d/b", DIR)
    assert isinstance(changed.names_in("/d"), Names) and changed.names_in("/d") == {"a", "b"}
    assert image.names_in("/d") == {"a"}
    assert remove(changed, "/d/a").names_in("/d") == {"b"}
    moved = move(changed, "/d", "/e")
    assert moved.names_in("/") == {"e"} and moved.names_in("/e") == {"a", "b"} and moved.names_in("/d") == set()
