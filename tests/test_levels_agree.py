"""The filesystem level and the layer level agree, with no real system at all.

A container is a stack of image layers under a writable layer (level 1);
an image is a stack of layer tars that flattening turns into a root
filesystem (level 2). The two describe the same thing: for any image layers
and any ops run in the container, the image layers as layer tars, plus the
commit of the writable layer, flattened, must give the container's merged
view [COMMIT-1][APPLY-1]. Each tar goes through the codec both ways
(``encode_layer`` then ``decode_layer``), so the canonical encoding is held
to it too [TAR-4].

The machine is the kernel machine's model side (``OpsMachine``): the same
layers, the same ops drawn against the merged view, and here the agreement
checked after every step. The budget is the profile's (derandomized in CI).

Where a rule says the two levels differ, the comparison states it:

- a file whose inode is in an image layer keeps that inode's link count in
  the container, names since hidden or broken off by a copy-up included
  [COPYUP-5] (image layers never change [COPYUP-1]); the flattened tree
  counts the names it shows. Such a file is compared with the count of the
  names the merged view shows of its inode, and the containers where the
  rule made a difference are counted as a Hypothesis event;
- the root is compared by neither: the commit holds the writable layer's
  entries, and the root is not one [COMMIT-1];
- times are not modelled [COMMIT-1];
- the features are Docker's (``redirect_dir`` off): a redirect is not part of
  what the layer holds [REDIRECT-1], so with it on a renamed directory
  would lose its image-layer contents in the commit, and Docker's overlay2
  keeps it off. ``test_a_redirect_is_not_committed`` shows it.
"""

from collections import Counter

from hypothesis import event, settings
from hypothesis.stateful import invariant, run_state_machine_as_test

from cowcheck.machines.fs_machine import OpsMachine
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import Rename, Unlink
from cowspec.fs.entries import Name
from cowspec.fs.features import Features
from cowspec.fs.observe import Entry, merged_tree
from cowspec.fs.operations import step
from cowspec.fs.stack import Container, lookup, new_container
from cowspec.oci.apply import flatten, rootfs_entries
from cowspec.oci.commit import commit, layer_tar_of
from cowspec.oci.layer_tar import LayerTar, decode_layer, encode_layer


def through_the_codec(layer: LayerTar) -> LayerTar:
    """``layer`` written as its canonical archive and read back [TAR-4]."""
    return decode_layer(encode_layer(layer))


def image_tars(container: Container) -> tuple[LayerTar, ...]:
    """The container's image layers as layer tars, bottom first, through the codec."""
    return tuple(through_the_codec(layer_tar_of(layer)) for layer in container.lowers)


def flattened(container: Container, image: tuple[LayerTar, ...] | None = None) -> list[Entry]:
    """The image layers (``image``, if already made) and the commit of the
    writable layer, as tars, flattened [APPLY-1][COMMIT-1]."""
    below = image_tars(container) if image is None else image
    return rootfs_entries(flatten((*below, through_the_codec(commit(container)))))


def as_flattened(container: Container, merged: list[Entry] | None = None) -> tuple[list[Entry], int]:
    """The merged view (``merged``, if already made), each image-layer file
    given the number of names the view shows of its inode [COPYUP-5]; and
    how many such files that changed."""
    tree = [dict(entry) for entry in (merged_tree(container) if merged is None else merged)]
    identity: dict[str, tuple[int, int]] = {}
    for entry in tree:
        if entry["type"] == "file":
            found = lookup(container, str(entry["path"]))
            assert found is not None and isinstance(found.node, Name)
            identity[str(entry["path"])] = (found.layer, found.node.ino)
    shown = Counter(identity.values())
    changed = 0
    for entry in tree:
        place = identity.get(str(entry["path"]))
        if place is not None and place[0] > 0 and entry["nlink"] != shown[place]:
            entry["nlink"] = shown[place]
            changed += 1
    return tree, changed


def differences(expected: list[Entry], actual: list[Entry]) -> list[str]:
    """Each path where the two trees differ, described."""
    left = {str(entry["path"]): entry for entry in expected}
    right = {str(entry["path"]): entry for entry in actual}
    return [
        f"{path}: container {left.get(path)}, flattened {right.get(path)}"
        for path in sorted(left.keys() | right.keys())
        if left.get(path) != right.get(path)
    ]


class LevelsAgree(OpsMachine):
    """The model's container, and its layers flattened, after every step."""

    tars: tuple[LayerTar, ...] = ()
    checked: Container | None = None

    def started(self) -> None:
        # Image layers never change [COPYUP-1]: their tars are made once.
        self.tars = image_tars(self.container)

    @invariant()
    def flattening_gives_the_merged_view(self) -> None:
        if self.container is self.checked:
            return  # a refused op left the very same state, checked already
        self.checked = self.container
        expected, changed = as_flattened(self.container, self.merged())
        if changed:
            event("an image-layer file's link count counts hidden names [COPYUP-5]")
        lines = differences(expected, flattened(self.container, self.tars))
        assert not lines, "\n".join(lines)


def test_flattening_the_commit_gives_the_merged_view() -> None:
    """[COMMIT-1][APPLY-1][APPLY-2][APPLY-3][APPLY-4][TAR-4][COPYUP-5] The filesystem and layer levels agree."""
    run_state_machine_as_test(LevelsAgree, settings=settings())


def test_the_link_count_exception_is_real() -> None:
    """[COPYUP-5] A hidden name of a hardlinked image-layer file: the container counts it, the flattened tree not."""
    layer = (
        LayerEntry("/a", "file", 0o644, data=b"x"),
        LayerEntry("/b", "hardlink", 0, target="/a"),
    )
    container = new_container((build_layer(layer, "layer 0"),))
    container = step(container, Unlink("/b")).container
    merged = {str(entry["path"]): entry for entry in merged_tree(container)}
    flat = {str(entry["path"]): entry for entry in flattened(container)}
    assert merged["/a"]["nlink"] == 2 and flat["/a"]["nlink"] == 1
    expected, changed = as_flattened(container)
    assert changed == 1 and differences(expected, flattened(container)) == []


def test_a_redirect_is_not_committed() -> None:
    """[REDIRECT-1][REDIRECT-3] With redirect_dir, a renamed image-layer directory loses its contents in the commit."""
    layer = (LayerEntry("/d", "dir", 0o755), LayerEntry("/d/f", "file", 0o644, data=b"f"))
    container = new_container((build_layer(layer, "layer 0"),), Features(redirect_dir=True))
    container = step(container, Rename("/d", "/e")).container
    assert "/e/f" in {entry["path"] for entry in merged_tree(container)}
    assert "/e/f" not in {entry["path"] for entry in flattened(container)}
