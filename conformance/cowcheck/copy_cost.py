"""The cost of copy-up measured on a real overlay, against the model's prediction.

For a trace, each op runs on the driver's mount (the kernel's overlayfs
unless another driver is given) and the upper directory is read from the
host side before and after it. The two readings give the step's cost as
chapter 18 counts it [COST-5]:

- an entry is the one it was if it has the same inode; a whiteout, which
  may share one inode with every other whiteout (the kernel links them to
  one in the work directory), is the one it was if a whiteout of that name
  was in a directory of the same inode. Entries after the op that were not
  there before are the entries created [COST-4];
- a new inode of a regular file that the call did not make from nothing
  (only ``create`` does) is a copy-up. It copied its data unless it
  carries ``trusted.overlay.metacopy``; an upper file that loses that mark
  had its data copied now [COST-3]. The bytes are the size of the data
  copied [COST-2]: for a call that does not change the data, the upper
  file's size; for ``write``, ``append`` and ``truncate``, the size of the
  image-layer file it came from, looked up in the layer directories, top
  first, along the redirects of the upper directories above it. Inodes in
  the work directory's ``index`` are not new, and an index entry that loses
  its metacopy mark had its data copied. The index is read after the op
  too: a new inode there that no upper name shows (with ``index=on``,
  removing one name of a hardlinked image file copies the file into the
  index) is a copy-up, counted under ``(index)`` like any other.

``trace_costs`` pairs the model's prediction (``cowspec.fs.cost``) with the
measurement, op by op; ``cost_differences`` lists where they differ.
"""

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from cowcheck.drivers.kernel_overlay import (
    METACOPY_XATTR,
    OPAQUE_XATTR,
    REDIRECT_XATTR,
    KernelOverlay,
    KernelSession,
)
from cowspec.formats.trace import Trace, build_layers, encode_op, encode_outcome
from cowspec.fs.calls import Append, Create, Op, Truncate, Write
from cowspec.fs.cost import INDEX_LABEL, Cost, transition_cost
from cowspec.fs.observe import Entry
from cowspec.fs.operations import step
from cowspec.fs.paths import ROOT, parent_of
from cowspec.fs.stack import new_container

WRITES_DATA = (Write, Append, Truncate)
"""Calls that change the data of the file they copy up: the copied size is read below, not in the copy."""


@dataclass(frozen=True, slots=True)
class UpperEntry:
    """What the cost needs of one entry of the upper directory."""

    kind: str
    """``dir``, ``file``, ``symlink``, ``whiteout`` or ``other``."""
    ino: int
    parent_ino: int
    name: str
    size: int
    metacopy: bool


UpperState = dict[str, UpperEntry]
"""The upper directory: container path to entry, the root left out."""


def has_xattr(path: str, name: str) -> bool:
    """True if ``path`` (not followed) carries the extended attribute ``name``."""
    try:
        os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return False
    return True


def read_upper(upper_dir: str) -> UpperState:
    """Every entry below ``upper_dir``, read with ``lstat`` [COST-5]."""
    state: UpperState = {}
    pending = [("", upper_dir, os.lstat(upper_dir).st_ino)]
    while pending:
        logical, real, parent_ino = pending.pop()
        for name in os.listdir(real):
            child_logical, child_real = logical + "/" + name, os.path.join(real, name)
            info = os.lstat(child_real)
            mode = info.st_mode
            if stat.S_ISDIR(mode):
                kind = "dir"
                pending.append((child_logical, child_real, info.st_ino))
            elif stat.S_ISREG(mode):
                kind = "file"
            elif stat.S_ISLNK(mode):
                kind = "symlink"
            elif stat.S_ISCHR(mode) and info.st_rdev == 0:
                kind = "whiteout"
            else:
                kind = "other"
            metacopy = kind == "file" and has_xattr(child_real, METACOPY_XATTR)
            state[child_logical] = UpperEntry(kind, info.st_ino, parent_ino, name, info.st_size, metacopy)
    return state


def read_index(work_dir: str) -> UpperState:
    """The entries of the work directory's index (``index=on``), by their names there; none without an index.

    An index entry is the writable layer's copy of an image inode with several names, which the
    upper directory may not name yet (or any more)."""
    index = os.path.join(work_dir, "index")
    if not os.path.isdir(index):
        return {}
    state: UpperState = {}
    for name in os.listdir(index):
        real = os.path.join(index, name)
        info = os.lstat(real)
        kind = "file" if stat.S_ISREG(info.st_mode) else "other"
        metacopy = kind == "file" and has_xattr(real, METACOPY_XATTR)
        state["index:" + name] = UpperEntry(kind, info.st_ino, 0, name, info.st_size, metacopy)
    return state


def measured_created(before: UpperState, after: UpperState) -> tuple[str, ...]:
    """The paths of the entries ``after`` holds that ``before`` did not [COST-4][COST-5]."""
    whiteouts_before = {(entry.parent_ino, entry.name) for entry in before.values() if entry.kind == "whiteout"}
    names_before: dict[int, set[str]] = {}
    for path, entry in before.items():
        if entry.kind != "whiteout":
            names_before.setdefault(entry.ino, set()).add(path)
    created: list[str] = []
    names_after: dict[int, list[str]] = {}
    for path, entry in after.items():
        if entry.kind == "whiteout":
            if (entry.parent_ino, entry.name) not in whiteouts_before:
                created.append(path)
        else:
            names_after.setdefault(entry.ino, []).append(path)
    for ino, paths in names_after.items():
        old = names_before.get(ino, set())
        gained = len(paths) - len(old)
        if gained > 0:
            created.extend(sorted(path for path in paths if path not in old)[:gained])
    return tuple(sorted(created))


def lower_path(upper_dir: str, path: str) -> str:
    """Where the image layers hold what the upper directory holds at ``path``:
    ``path`` with the redirects of the upper directories above it applied."""
    current = ROOT
    walked = ""
    for part in path[1:].split("/"):
        walked += "/" + part
        try:
            redirect: str | None = os.getxattr(upper_dir + walked, REDIRECT_XATTR, follow_symlinks=False).decode()
        except OSError:
            redirect = None
        if redirect is None:
            current = (current if current != ROOT else "") + "/" + part
        elif redirect.startswith("/"):
            current = redirect
        else:
            parent = parent_of(current)
            current = (parent if parent != ROOT else "") + "/" + redirect
    return current


def lower_file_size(lowers_top_first: list[str], path: str) -> int | None:
    """The size of the regular file the image layers show at ``path``, found
    as overlayfs finds it: the first layer that holds the path, below no
    whiteout, non-directory or opaque directory of a layer above."""
    parts = path[1:].split("/")
    for layer in lowers_top_first:
        real, opaque, held = layer, False, True
        for part in parts[:-1]:
            real = os.path.join(real, part)
            try:
                info = os.lstat(real)
            except FileNotFoundError:
                held = False
                break
            if not stat.S_ISDIR(info.st_mode):
                return None
            opaque = opaque or has_xattr(real, OPAQUE_XATTR)
        if held:
            try:
                info = os.lstat(os.path.join(real, parts[-1]))
            except FileNotFoundError:
                held = False
            else:
                return info.st_size if stat.S_ISREG(info.st_mode) else None
        if opaque:
            return None
    return None


def measured_copied(
    op: Op,
    before: UpperState,
    after: UpperState,
    known: frozenset[int],
    source_size: Callable[[str], int | None],
    index_after: UpperState | None = None,
) -> tuple[tuple[str, int], ...]:
    """The inodes whose data ``op`` copied up, with the bytes [COST-2][COST-3][COST-5].

    ``before`` holds the upper directory and the index before the op;
    ``known`` their inodes; ``source_size`` gives the image-layer size behind
    an upper path. ``index_after`` is the index after the op: an inode of it
    that no path of ``after`` names is listed as ``(index)``.
    """
    before_by_ino = {entry.ino: entry for entry in before.values() if entry.kind == "file"}
    first: dict[int, tuple[str, UpperEntry]] = {}
    for path, entry in sorted(after.items()):
        if entry.kind == "file" and entry.ino not in first:
            first[entry.ino] = (path, entry)
    for entry in (index_after or {}).values():
        if entry.kind == "file" and entry.ino not in first:
            first[entry.ino] = (INDEX_LABEL, entry)  # in the index alone: no upper name shows it
    copied: list[tuple[str, int]] = []
    for ino, (path, entry) in first.items():
        if entry.metacopy:
            continue
        previous = before_by_ino.get(ino)
        if previous is not None and previous.metacopy:
            copied.append((path, previous.size))
        elif ino not in known and not isinstance(op, Create):
            if isinstance(op, WRITES_DATA) and path != INDEX_LABEL:
                size = source_size(path)
                copied.append((path, -1 if size is None else size))
            else:
                copied.append((path, entry.size))
    return tuple(sorted(copied))


class CostMeter:
    """Reads a session's upper directory around each op and gives the op's cost [COST-5]."""

    def __init__(self, session: KernelSession) -> None:
        self.session = session
        self.work_dir = os.path.join(session.home, "work")
        self.lowers_top_first = list(reversed(session.lowers))

    def perform(self, op: Op) -> tuple[Entry, Cost]:
        """Run ``op`` on the session; its result item and its measured cost."""
        upper_dir = self.session.upper_dir
        before = read_upper(upper_dir)
        index = read_index(self.work_dir)
        known = frozenset(entry.ino for entry in (*before.values(), *index.values()))
        result = self.session.perform(op)
        after = read_upper(upper_dir)
        index_after = read_index(self.work_dir)

        def source_size(path: str) -> int | None:
            return lower_file_size(self.lowers_top_first, lower_path(upper_dir, path))

        copied = measured_copied(op, {**index, **before}, after, known, source_size, index_after)
        return result, Cost(copied=copied, created=measured_created(before, after))


@dataclass(frozen=True, slots=True)
class StepCost:
    """One op of a trace: what the model says and what the mount did."""

    op: Op
    expected: Entry
    observed: Entry
    predicted: Cost
    measured: Cost


def trace_costs(trace: Trace, driver: KernelOverlay | None = None) -> list[StepCost]:
    """Every op of ``trace`` run on the model and on ``driver``'s mount, with both costs."""
    driver = driver or KernelOverlay()
    container = new_container(build_layers(trace), trace.features)
    steps: list[StepCost] = []
    session = driver.open(trace.layers, trace.features)
    try:
        meter = CostMeter(session)
        for op in trace.ops:
            transition = step(container, op)
            predicted = transition_cost(container, op, transition)
            observed, measured = meter.perform(op)
            steps.append(StepCost(op, encode_outcome(transition.outcome), observed, predicted, measured))
            container = transition.container
    finally:
        session.close()
    return steps


def outcome_word(result: Entry) -> str:
    """``ok`` or the errno of a result item."""
    return str(result.get("errno", "ok"))


def cost_differences(steps: list[StepCost]) -> list[str]:
    """One line per op whose outcome or cost the mount and the model disagree on [COST-1]."""
    lines: list[str] = []
    for number, each in enumerate(steps):
        where = f"op {number} {encode_op(each.op)}"
        if outcome_word(each.expected) != outcome_word(each.observed):
            lines.append(f"{where}: outcome {each.observed} but the model says {each.expected}")
        if each.predicted != each.measured:
            lines.append(f"{where}: measured {each.measured} but the model predicts {each.predicted}")
    return lines
