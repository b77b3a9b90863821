"""Hypothesis strategies for layers, paths and ops.

Layer names come from a three-letter alphabet and trees are shallow, so
that the interesting collisions are common: a whiteout over a directory, a
directory over a file, a symlink in the middle of a path, a rename onto a
name that exists below.

Ops are drawn against the container they will run in. A ``View`` lists the
paths the model's merged view shows, by kind; the strategies draw real
paths from it: an existing path of the kind an op needs (a file to write,
a directory to list), a free name in an existing directory for a call that
creates one, and, less often, a path of the wrong kind, one that exists for
a creating call, or one that goes astray (through a file, below a missing
directory, with ``.`` or ``..``), so that the errors stay in the mix.
``ops()`` with no view draws against an empty container: the root, free
names in it, and paths astray.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from string import ascii_lowercase
from types import MappingProxyType
from typing import TypeVar

from hypothesis import strategies as st

from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import (
    Append,
    Chmod,
    Chown,
    Create,
    Link,
    Mkdir,
    Op,
    Open,
    OpenFlags,
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
from cowspec.fs.observe import Entry
from cowspec.fs.paths import ROOT, ancestors, join, parent_of

T = TypeVar("T")

NAMES = ("a", "b", "c")
FRESH = tuple(ascii_lowercase)
"""Names a creating call may add: the layers' alphabet first, then more, so
that a directory whose three names are taken still has free ones."""
MODES = (0o755, 0o644, 0o700, 0o600, 0o000, 0o777, 0o2755, 0o4755, 0o1777, 0o6711)
IDS = (0, 1, 1000)

names = st.sampled_from(NAMES)
modes = st.sampled_from(MODES)
ids = st.sampled_from(IDS)
data = st.binary(max_size=6)


@st.composite
def paths(draw: st.DrawFn, max_depth: int = 3) -> str:
    """A normalised path of 1 to ``max_depth`` components, rarely the root."""
    if draw(st.integers(0, 40)) == 0:
        return ROOT
    depth = draw(st.integers(1, max_depth))
    return "/" + "/".join(draw(names) for _ in range(depth))


_DOTS = st.sampled_from([".", "..", "a/.."])
_ENTRY_KINDS = st.sampled_from(["dir", "dir", "file", "file", "symlink", "hardlink", "hardlink", "whiteout"])
"""Hardlinks are drawn twice as often as symlinks: their names are what
``index`` keeps together and a copy-up without it breaks apart
[INDEX-1][COPYUP-5], and a layer needs a file or symlink first to link to."""


@st.composite
def _op_paths(draw: st.DrawFn) -> str:
    """A path for an op: mostly normalised, sometimes with ``.`` or ``..``."""
    path = draw(paths())
    if path != ROOT and draw(st.integers(0, 12)) == 0:
        head, tail = path.rsplit("/", 1)
        path = f"{head}/{draw(_DOTS)}/{tail}"
    return path


targets = st.one_of(
    st.sampled_from(["a", "b", "c", "a/b", "../a", "../../b/c", ".", "..", "/", "a/", "c/a"]),
    paths(),
)


@st.composite
def layer_entries(draw: st.DrawFn) -> tuple[LayerEntry, ...]:
    """One valid layer: no entry below a non-directory of the same layer; a
    hardlink names a file or a symlink drawn before it."""
    chosen = draw(st.lists(paths(), min_size=0, max_size=7, unique=True))
    chosen = [path for path in chosen if path != ROOT]
    entries: dict[str, LayerEntry] = {}
    for path in sorted(chosen, key=lambda each: each.count("/")):
        if any(ancestor in entries and entries[ancestor].type != "dir" for ancestor in ancestors(path)):
            continue
        kind = draw(_ENTRY_KINDS)
        files = [each for each in entries.values() if each.type in ("file", "symlink")]
        if kind == "hardlink" and not files:
            kind = "file"
        if kind == "dir":
            entry = LayerEntry(path, "dir", draw(modes), draw(ids), draw(ids), opaque=draw(st.integers(0, 4)) == 0)
        elif kind == "file":
            entry = LayerEntry(path, "file", draw(modes), draw(ids), draw(ids), data=draw(data))
        elif kind == "symlink":
            entry = LayerEntry(path, "symlink", 0, draw(ids), draw(ids), target=draw(targets))
        elif kind == "hardlink":
            entry = LayerEntry(path, "hardlink", 0, target=draw(st.sampled_from(files)).path)
        else:
            entry = LayerEntry(path, "whiteout", 0)
        entries[path] = entry
    return tuple(entries.values())


layer_stacks = st.lists(layer_entries(), min_size=1, max_size=4).map(tuple)


# -- the container an op runs in --------------------------------------------------


@dataclass(frozen=True, slots=True)
class View:
    """What the op strategies know of a container: the paths of its merged view.

    Each tuple is in path order. ``everything`` holds every visible path,
    the root last (so that neither drawing nor shrinking favours it); the
    others leave the root out. ``names`` maps each directory, the root
    included, to the names it shows. ``removed`` holds the paths the image
    layers show that are gone now, in a directory that is there: making one
    of them again makes it over a whiteout [WHITEOUT-3][WHITEOUT-4].
    """

    everything: tuple[str, ...]
    dirs: tuple[str, ...]
    files: tuple[str, ...]
    symlinks: tuple[str, ...]
    names: Mapping[str, frozenset[str]]
    removed: tuple[str, ...] = ()
    linked: tuple[str, ...] = ()
    """The files whose link count is above 1: names of a hardlink, which
    ``index`` keeps together [INDEX-2][INDEX-3] and a copy-up without it
    breaks apart [COPYUP-5]."""

    def empty_dirs(self) -> tuple[str, ...]:
        """The directories that show no name, the root left out."""
        return tuple(path for path in self.dirs if not self.names[path])


def view_of(tree: list[Entry], image: list[Entry] | None = None) -> View:
    """The view of a merged tree as ``observe.merged_tree`` gives it (root
    excluded); ``image`` is the merged tree of the image layers alone."""
    by_kind: dict[str, list[str]] = {"dir": [], "file": [], "symlink": []}
    names: dict[str, set[str]] = {ROOT: set()}
    linked: list[str] = []
    for entry in sorted(tree, key=lambda each: str(each["path"])):
        path = str(entry["path"])
        by_kind[str(entry["type"])].append(path)
        nlink = entry.get("nlink", 1)
        if isinstance(nlink, int) and nlink > 1:
            linked.append(path)
        names[parent_of(path)].add(path.rsplit("/", 1)[1])
        if entry["type"] == "dir":
            names[path] = set()
    removed = sorted(
        path
        for path in (str(entry["path"]) for entry in image or ())
        if parent_of(path) in names and path.rsplit("/", 1)[1] not in names[parent_of(path)]
    )
    return View(
        everything=(*sorted(path for paths in by_kind.values() for path in paths), ROOT),
        dirs=tuple(by_kind["dir"]),
        files=tuple(by_kind["file"]),
        symlinks=tuple(by_kind["symlink"]),
        names=MappingProxyType({path: frozenset(each) for path, each in names.items()}),
        removed=tuple(removed),
        linked=tuple(linked),
    )


EMPTY = view_of([])
"""The view of an empty container, the default of ``ops()``."""


# -- paths drawn against a view ------------------------------------------------------
#
# These take the ``draw`` of the composite strategy that calls them. Each
# chooses its way by a weighted draw from a fixed list (``one_of`` would pick
# its branches about evenly); Hypothesis shrinks towards the first way.

_EXISTING_WAYS = st.sampled_from(("fitting",) * 6 + ("any", "astray"))
_LINKED_FIRST = st.sampled_from((False, False, True))
"""A call on a file takes one with several names one time in three, if there is one."""
_NEW_WAYS = st.sampled_from(("free",) * 5 + ("removed", "taken", "astray"))
_ASTRAY_WAYS = st.sampled_from(("below", "missing", "alphabet", "below", "missing", "alphabet", "too long"))
TOO_LONG = "n" * 256
"""A name one byte over Linux's ``NAME_MAX``: ``ENAMETOOLONG`` when the walk reaches it [PATH-2]."""
_TARGET_WAYS = st.sampled_from(("by hand", "existing", "beside"))


@cache
def _indexes(count: int) -> st.SearchStrategy[int]:
    return st.integers(0, count - 1)


def pick(draw: st.DrawFn, items: Sequence[T]) -> T:
    """One of ``items`` (not empty), shrinking towards the first.

    Drawn as an index, so that one strategy serves every list of a length:
    a ``sampled_from`` made afresh for each draw costs more to check than
    the draw itself.
    """
    return items[draw(_indexes(len(items)))]


def existing_file(draw: st.DrawFn, view: View, fitting: tuple[str, ...]) -> str:
    """As ``existing``, but one time in three a file with several names when
    there is one, so that the names of hardlinks are changed, removed and
    moved often [INDEX-2][INDEX-3][COPYUP-5]."""
    linked_first: bool = draw(_LINKED_FIRST) if view.linked else False
    if linked_first:
        return pick(draw, view.linked)
    return existing(draw, view, fitting)


def existing(draw: st.DrawFn, view: View, fitting: tuple[str, ...]) -> str:
    """Mostly a path of ``fitting`` (the kind the call needs); one time in
    eight any path of the view, the root included; one in eight a path
    astray. With nothing fitting, any path of the view."""
    way = draw(_EXISTING_WAYS)
    if way == "astray":
        return astray(draw, view)
    return pick(draw, fitting if fitting and way == "fitting" else view.everything)


def new_path(draw: st.DrawFn, view: View) -> str:
    """A path for a call that makes a name: mostly a free one; one time in
    eight one the image layers showed and that is gone since (a free one
    if there is none), one that is taken (``EEXIST``, or replaced by a
    rename), or a path astray."""
    way = draw(_NEW_WAYS)
    if way == "astray":
        return astray(draw, view)
    if way == "taken":
        return pick(draw, view.everything)
    if way == "removed" and view.removed:
        return pick(draw, view.removed)
    return free_name(draw, view)


def free_name(draw: st.DrawFn, view: View) -> str:
    """A name that is not there, in an existing directory."""
    directory = pick(draw, (*view.dirs, ROOT))
    taken = view.names[directory]
    free = [name for name in FRESH if name not in taken][:3]
    return join(directory, pick(draw, free or FRESH))


def astray(draw: st.DrawFn, view: View) -> str:
    """A path that may well not resolve: below a file (``ENOTDIR``) or a
    symlink (followed), below a missing directory, drawn from the
    alphabet, sometimes with ``.`` or ``..``, or, one time in seven, a name
    too long for Linux in an existing directory (``ENAMETOOLONG``)."""
    way = draw(_ASTRAY_WAYS)
    non_dirs = view.files + view.symlinks
    if way == "below" and non_dirs:
        return join(pick(draw, non_dirs), draw(names))
    if way == "missing":
        return join(free_name(draw, view), draw(names))
    if way == "too long":
        return join(pick(draw, (*view.dirs, ROOT)), TOO_LONG)
    return draw(_op_paths())


def link_target(draw: st.DrawFn, view: View, path: str) -> str:
    """The target of a symlink made at ``path``: written by hand (relative,
    looping, with a slash), a path that exists, or a name beside ``path``
    (its own name makes a loop), each as often."""
    way = draw(_TARGET_WAYS)
    if way == "existing":
        return pick(draw, view.everything)
    if way == "beside" and path != ROOT:
        siblings = view.names.get(parent_of(path), frozenset())
        return pick(draw, sorted({path.rsplit("/", 1)[1], *siblings}))
    return draw(targets)


# -- ops ------------------------------------------------------------------------------
#
# Grouped as the state machine's rules are: calls that make a name, change an
# object, look at one, remove a name, and rename. Each call of a group is
# drawn as often as the others.

_MAKING = st.sampled_from((Create, Mkdir, Symlink, Link))
_REPLACE_CALL = st.sampled_from((True, True, True, False))
"""A call whose kind of object the view lacks is kept one time in four
(a path of another kind then gives its errno: ``EISDIR``, ``EINVAL``...);
otherwise a call of the same group that fits what is there replaces it, so
that an example without files still mostly succeeds. (Drawn from a list,
not as an integer: Hypothesis draws small integers far more often than
their share.)"""
_CHANGING = st.sampled_from((Open, Write, Append, Truncate, Chmod, Chown))
_LOOKING = st.sampled_from((Open, Read, Stat, Readdir, Readlink))
_REMOVING = st.sampled_from(("unlink", "rmdir empty", "rmdir"))
_WRITE_FLAGS: st.SearchStrategy[OpenFlags] = st.sampled_from(("w", "rw"))
_OFFSETS = st.integers(0, 8)
_SIZES = st.integers(-1, 9)


@st.composite
def making(draw: st.DrawFn, view: View) -> Op:
    """``create``, ``mkdir``, ``symlink`` or ``link``: mostly a free name."""
    call = draw(_MAKING)
    if call is Symlink:
        path = new_path(draw, view)
        return Symlink(link_target(draw, view, path), path)
    if call is Link:
        return Link(existing_file(draw, view, view.files + view.symlinks), new_path(draw, view))
    if call is Create:
        return Create(new_path(draw, view), draw(modes))
    return Mkdir(new_path(draw, view), draw(modes))


@st.composite
def changing(draw: st.DrawFn, view: View) -> Op:
    """A call that changes an object in place, and copies it up [COPYUP-6]."""
    call = draw(_CHANGING)
    if call not in (Chmod, Chown) and not view.files and draw(_REPLACE_CALL):
        call = Chmod if call in (Open, Write) else Chown
    if call is Chmod:
        return Chmod(existing_file(draw, view, view.everything[:-1]), draw(modes))
    if call is Chown:
        return Chown(existing_file(draw, view, view.everything[:-1]), draw(ids), draw(ids))
    path = existing_file(draw, view, view.files)
    if call is Open:
        return Open(path, draw(_WRITE_FLAGS))
    if call is Write:
        return Write(path, draw(_OFFSETS), draw(data))
    if call is Append:
        return Append(path, draw(data))
    return Truncate(path, draw(_SIZES))


@st.composite
def looking(draw: st.DrawFn, view: View) -> Op:
    """A call that changes nothing."""
    call = draw(_LOOKING)
    lacking = (call is Read and not view.files) or (call is Readlink and not view.symlinks)
    if lacking and draw(_REPLACE_CALL):
        call = Stat if call is Read else Readdir
    if call is Read:
        return Read(existing(draw, view, view.files))
    if call is Readdir:
        return Readdir(existing(draw, view, (*view.dirs, ROOT)))
    if call is Readlink:
        return Readlink(existing(draw, view, view.symlinks))
    path = existing(draw, view, view.everything[:-1])
    return Open(path, "r") if call is Open else Stat(path)


@st.composite
def removing(draw: st.DrawFn, view: View) -> Op:
    """``unlink``, or ``rmdir`` of an empty directory or (``ENOTEMPTY``) any."""
    call = draw(_REMOVING)
    if call == "unlink" and not (view.files or view.symlinks) and draw(_REPLACE_CALL):
        call = "rmdir empty"
    elif call == "rmdir empty" and not view.empty_dirs() and (view.files or view.symlinks) and draw(_REPLACE_CALL):
        call = "unlink"
    if call == "unlink":
        return Unlink(existing_file(draw, view, view.files + view.symlinks))
    return Rmdir(existing(draw, view, view.empty_dirs() if call == "rmdir empty" else view.dirs))


@st.composite
def moving(draw: st.DrawFn, view: View) -> Op:
    """``rename``: anything, to a free name or onto what exists."""
    source = existing_file(draw, view, view.everything[:-1])
    onto_linked: bool = draw(_LINKED_FIRST) if view.linked else False
    if onto_linked:
        return Rename(source, pick(draw, view.linked))
    return Rename(source, new_path(draw, view))


def ops(view: View = EMPTY) -> st.SearchStrategy[Op]:
    """Any op of the trace format, drawn against ``view``."""
    return st.one_of(making(view), changing(view), looking(view), removing(view), moving(view))
