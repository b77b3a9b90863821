"""Whiteouts and opaque directories: how a deletion hides the layers below.

A whiteout in a layer says that the name is gone: lookup stops there and
reports the name absent, and the whiteout itself is never shown
[WHITEOUT-1]. The kernel stores it as a 0/0 character device. An opaque
directory (``trusted.overlay.opaque=y``) stops the collection of
same-named directories below it [OPAQUE-1].

The writable layer gains whiteouts in exactly one way: removing a visible
object whose name an image layer would otherwise show [WHITEOUT-2]. Creating
a non-directory over a whiteout replaces it [WHITEOUT-3]; creating a
directory over one makes the directory opaque, so that the old contents
cannot reappear [WHITEOUT-4].
"""

from dataclasses import replace

from cowspec.fs.entries import Whiteout
from cowspec.fs.layer import put, remove
from cowspec.fs.paths import join
from cowspec.fs.stack import Container, Found


def lower_positive(container: Container, parent: Found, found: Found) -> bool:
    """True if removing ``found`` from the merged view needs a whiteout.

    An object that is not in the writable layer needs one. One that is
    needs one if the first image layer below that has its name, among the
    layers the parent directory was collected from, holds something other
    than a whiteout [WHITEOUT-2].
    """
    if not found.in_upper:
        return True
    name = found.path.rsplit("/", 1)[1]
    for index, where in parent.stack:
        if index == 0:
            continue
        node = container.layer(index).get(join(where, name))
        if node is not None:
            return not isinstance(node, Whiteout)
    return False


def removal_rules(container: Container, parent: Found, found: Found) -> tuple[str, ...]:
    """The rules removing ``found`` exercises: WHITEOUT-2 when it leaves a whiteout."""
    return ("WHITEOUT-2",) if lower_positive(container, parent, found) else ()


def creation_rules(container: Container, path: str, *, is_dir: bool) -> tuple[str, ...]:
    """The rules creating an object at ``path`` exercises, read before it is
    made: over a whiteout of the writable layer, WHITEOUT-3, or WHITEOUT-4
    for a directory."""
    if not isinstance(container.upper.get(path), Whiteout):
        return ()
    return ("WHITEOUT-4",) if is_dir else ("WHITEOUT-3",)


def remove_visible(container: Container, parent: Found, found: Found) -> Container:
    """``container`` without ``found`` in the merged view [WHITEOUT-2].

    The writable layer's copy goes; a whiteout takes its place when the
    name would otherwise show from an image layer. The caller has copied
    the parents up (COPYUP-2); ``found`` and ``parent`` may be from before.
    """
    needs_whiteout = lower_positive(container, parent, found)
    upper = container.upper
    if upper.get(found.path) is not None:
        upper = remove(upper, found.path)
    if needs_whiteout:
        upper = put(upper, found.path, Whiteout())
    return replace(container, upper=upper)
