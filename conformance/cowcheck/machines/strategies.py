"""Hypothesis strategies for layers, paths and ops.

Names come from a three-letter alphabet and trees are shallow, so that the
interesting collisions are common: a whiteout over a directory, a directory
over a file, a symlink in the middle of a path, a rename onto a name that
exists below.
"""

from dataclasses import replace
from typing import Any, cast

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
from cowspec.fs.paths import ROOT, ancestors

NAMES = ("a", "b", "c")
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


@st.composite
def _op_paths(draw: st.DrawFn) -> str:
    """A path for an op: mostly normalised, sometimes with ``.`` or ``..``."""
    path = draw(paths())
    if path != ROOT and draw(st.integers(0, 12)) == 0:
        head, tail = path.rsplit("/", 1)
        path = f"{head}/{draw(st.sampled_from(['.', '..', 'a/..']))}/{tail}"
    return path


targets = st.one_of(
    st.sampled_from(["a", "b", "c", "a/b", "../a", "../../b/c", ".", "..", "/", "a/", "c/a"]),
    paths(),
)


@st.composite
def layer_entries(draw: st.DrawFn) -> tuple[LayerEntry, ...]:
    """One valid layer: no entry below a non-directory of the same layer."""
    chosen = draw(st.lists(paths(), min_size=0, max_size=7, unique=True))
    chosen = [path for path in chosen if path != ROOT]
    entries: dict[str, LayerEntry] = {}
    for path in sorted(chosen, key=lambda each: each.count("/")):
        if any(ancestor in entries and entries[ancestor].type != "dir" for ancestor in ancestors(path)):
            continue
        kind = draw(st.sampled_from(["dir", "dir", "file", "file", "symlink", "hardlink", "whiteout"]))
        files = [each for each in entries.values() if each.type == "file"]
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


KNOWN = "\0known:"
KNOWN_DIR = "\0dir:"
"""Prefixes of placeholder paths: ``KNOWN + "3"`` stands for the fourth path
the model's merged view shows when the op runs, ``KNOWN_DIR + "1/b"`` for
the name ``b`` inside its second directory (see ``fill_known``)."""


def op_paths() -> st.SearchStrategy[str]:
    """A random path, or (twice as often) a placeholder for an existing one."""
    known = st.integers(0, 63).map(lambda index: f"{KNOWN}{index}")
    return st.one_of(known, known, _op_paths())


def new_paths() -> st.SearchStrategy[str]:
    """A path for a creating call: mostly a new name in an existing directory."""
    inside = st.tuples(st.integers(0, 63), names).map(lambda pair: f"{KNOWN_DIR}{pair[0]}/{pair[1]}")
    return st.one_of(inside, inside, op_paths())


def fill_known(op: Op, known: tuple[str, ...], dirs: tuple[str, ...]) -> Op:
    """``op`` with each placeholder replaced by a path of ``known`` or ``dirs``."""
    changes: dict[str, str] = {}
    for key in ("path", "src", "dst"):
        value = getattr(op, key, None)
        if not isinstance(value, str):
            continue
        if value.startswith(KNOWN):
            changes[key] = known[int(value[len(KNOWN) :]) % len(known)] if known else ROOT
        elif value.startswith(KNOWN_DIR):
            number, _, name = value[len(KNOWN_DIR) :].partition("/")
            directory = dirs[int(number) % len(dirs)] if dirs else ROOT
            changes[key] = (directory if directory != ROOT else "") + "/" + name
    return cast(Op, replace(cast(Any, op), **changes)) if changes else op


def ops() -> st.SearchStrategy[Op]:
    """Any op of the trace format, with fields drawn to collide often."""
    return st.one_of(
        st.builds(Create, new_paths(), modes),
        st.builds(Open, op_paths(), st.sampled_from(["r", "w", "rw"])),
        st.builds(Write, op_paths(), st.integers(0, 8), data),
        st.builds(Append, op_paths(), data),
        st.builds(Truncate, op_paths(), st.integers(-1, 9)),
        st.builds(Read, op_paths()),
        st.builds(Stat, op_paths()),
        st.builds(Readdir, op_paths()),
        st.builds(Readlink, op_paths()),
        st.builds(Mkdir, new_paths(), modes),
        st.builds(Rmdir, op_paths()),
        st.builds(Unlink, op_paths()),
        st.builds(Rename, op_paths(), new_paths()),
        st.builds(Symlink, targets, new_paths()),
        st.builds(Link, op_paths(), new_paths()),
        st.builds(Chmod, op_paths(), modes),
        st.builds(Chown, op_paths(), ids, ids),
    )
