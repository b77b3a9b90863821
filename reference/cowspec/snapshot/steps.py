"""Every call of a snapshotter: its checks, its effect, its error kind.

Each call is stated as the filesystem level states a system call:
``check_CALL(snapshots, call)`` gives the failure (an error kind and the
rule that decides it) of the first check that fails, in containerd's
order, or None; ``apply_CALL(snapshots, call)`` gives the snapshots after
a call whose checks passed. ``step`` composes them. A failed call changes
nothing [SNAP-1].

The order of the checks is containerd's: its metadata store checks the
key (or a commit's name) first, then the parent (or a commit's key), and
only then does the snapshotter itself refuse a parent or a key of the
wrong kind.
"""

from dataclasses import dataclass, replace

from cowspec.errors import ModelError
from cowspec.fs.calls import Ok, Outcome, Rename
from cowspec.fs.entries import Whiteout
from cowspec.fs.layer import without
from cowspec.fs.operations import step as fs_step
from cowspec.snapshot.calls import Commit, Perform, Prepare, Remove, SnapshotCall, View
from cowspec.snapshot.state import (
    Active,
    Committed,
    ErrorKind,
    Snapshots,
    ViewSnapshot,
    base_container,
    chain_of,
    has_children,
    settled_layer,
)


@dataclass(frozen=True, slots=True)
class Failed:
    """A call containerd refuses: its error kind and the rule that says so."""

    kind: ErrorKind
    rule: str


@dataclass(frozen=True, slots=True)
class Done:
    """A call that succeeded; ``result`` is a ``Perform``'s filesystem outcome.

    ``rules`` are the rules the call exercised, the deciding one first.
    """

    result: Outcome | None
    rules: tuple[str, ...]


# -- prepare and view --------------------------------------------------------------


def check_create(snapshots: Snapshots, key: str, parent: str | None, rule: str) -> Failed | None:
    """The checks prepare and view share [SNAP-2][SNAP-3]: the key is free
    (already exists), the parent exists (not found), the parent is
    committed (invalid argument)."""
    # CHECK: containerd's metadata store, the key then the parent
    if snapshots.get(key) is not None:
        return Failed("already exists", rule)
    if parent is None:
        return None
    found = snapshots.get(parent)
    if found is None:
        return Failed("not found", rule)
    # CHECK: the snapshotter, the parent's kind
    if not isinstance(found, Committed):
        return Failed("invalid argument", rule)
    return None


def check_prepare(snapshots: Snapshots, call: Prepare) -> Failed | None:
    """Why ``prepare`` fails, or None [SNAP-2]."""
    return check_create(snapshots, call.key, call.parent, "SNAP-2")


def apply_prepare(snapshots: Snapshots, call: Prepare) -> Snapshots:
    """A new active snapshot over its parent [SNAP-2][SNAP-7][SNAP-8]:
    overlayfs stacks an empty writable layer on the parent's chain; native
    starts from the parent's tree, shared, not copied."""
    # APPLY
    active = Active(call.parent, base_container(snapshots, call.parent))
    return replace(snapshots, snapshots=snapshots.snapshots.set(call.key, active))


def check_view(snapshots: Snapshots, call: View) -> Failed | None:
    """Why ``view`` fails, or None [SNAP-3]."""
    return check_create(snapshots, call.key, call.parent, "SNAP-3")


def apply_view(snapshots: Snapshots, call: View) -> Snapshots:
    """A new view of its parent [SNAP-3]."""
    # APPLY
    return replace(snapshots, snapshots=snapshots.snapshots.set(call.key, ViewSnapshot(call.parent)))


# -- commit ------------------------------------------------------------------------


def check_commit(snapshots: Snapshots, call: Commit) -> Failed | None:
    """Why ``commit`` fails, or None [SNAP-4]: the name is free, even when
    the key is missing or is the name (already exists); the key exists (not
    found); on native, a view with a parent has no directory to measure
    (unknown); the key is active (failed precondition)."""
    # CHECK: containerd's metadata store, the name then the key
    if snapshots.get(call.name) is not None:
        return Failed("already exists", "SNAP-4")
    found = snapshots.get(call.key)
    if found is None:
        return Failed("not found", "SNAP-4")
    # CHECK: the snapshotter, which measures the key's directory first, then its kind
    if snapshots.snapshotter == "native" and isinstance(found, ViewSnapshot) and found.parent is not None:
        return Failed("unknown", "SNAP-4")
    if not isinstance(found, Active):
        return Failed("failed precondition", "SNAP-4")
    return None


def apply_commit(snapshots: Snapshots, call: Commit) -> Snapshots:
    """Active ``key`` becomes committed ``name``; ``key`` is gone [SNAP-4].

    What the active's mounts showed is kept as it is (its usage and diff
    are fixed from now on [SNAP-9]); its own layer (overlayfs) or its tree
    (native) is settled once for its children [SNAP-11].
    """
    # RESOLVE
    active = snapshots.get(call.key)
    if not isinstance(active, Active):
        raise ModelError(f"commit of {call.key!r}, which is not active")
    # APPLY
    settled = settled_layer(active.container.upper)
    chain = (*chain_of(snapshots, active.parent), settled) if snapshots.snapshotter == "overlayfs" else ()
    done = Committed(active.parent, active.container, active.renamed_whiteouts, settled, chain)
    return replace(snapshots, snapshots=without(snapshots.snapshots, call.key).set(call.name, done))


# -- remove ------------------------------------------------------------------------


def check_remove(snapshots: Snapshots, call: Remove) -> Failed | None:
    """Why ``remove`` fails, or None [SNAP-5]: the key exists (not found);
    no snapshot of any kind has it as parent (failed precondition)."""
    # CHECK
    if snapshots.get(call.key) is None:
        return Failed("not found", "SNAP-5")
    if has_children(snapshots, call.key):
        return Failed("failed precondition", "SNAP-5")
    return None


def apply_remove(snapshots: Snapshots, call: Remove) -> Snapshots:
    """The snapshot is gone, whatever its kind [SNAP-5]."""
    # APPLY
    return replace(snapshots, snapshots=snapshots.snapshots.delete(call.key))


# -- a filesystem call through an active snapshot's mounts -------------------------


def apply_perform(snapshots: Snapshots, call: Perform) -> tuple[Snapshots, Done]:
    """The filesystem call, as the filesystem level states it, on the active's
    container [SNAP-7][SNAP-8].

    On overlayfs, a rename that leaves a whiteout at its source made that
    whiteout an inode of its own, unless it went onto a whiteout, which it
    takes over; a whiteout a later call replaces is no longer one [SNAP-10].
    """
    # RESOLVE
    active = snapshots.get(call.key)
    if not isinstance(active, Active):
        raise ModelError(f"a filesystem call through {call.key!r}, which is not an active snapshot")
    # APPLY: the filesystem level's step, then the whiteouts a rename made
    transition = fs_step(active.container, call.op)
    upper = transition.container.upper
    renamed = active.renamed_whiteouts
    if (
        snapshots.snapshotter == "overlayfs"
        and isinstance(call.op, Rename)
        and isinstance(transition.outcome, Ok)
        and isinstance(upper.get(call.op.src), Whiteout)
    ):
        # Onto a whiteout, the kernel exchanges the two: the source takes the destination's whiteout inode,
        # its own only if a rename made that one [SNAP-10].
        over_whiteout = isinstance(active.container.upper.get(call.op.dst), Whiteout)
        if not over_whiteout or call.op.dst in active.renamed_whiteouts:
            renamed = renamed | {call.op.src}
    renamed = frozenset(path for path in renamed if isinstance(upper.get(path), Whiteout))
    rule = "SNAP-7" if snapshots.snapshotter == "overlayfs" else "SNAP-8"
    updated = Active(active.parent, transition.container, renamed)
    rules = (rule, *transition.rules)
    if renamed != active.renamed_whiteouts:
        rules += ("SNAP-10",)
    return replace(snapshots, snapshots=snapshots.snapshots.set(call.key, updated)), Done(transition.outcome, rules)


# -- every call --------------------------------------------------------------------


def check(snapshots: Snapshots, call: SnapshotCall) -> Failed | None:
    """Why ``call`` fails on ``snapshots``, or None if it succeeds."""
    match call:
        case Prepare():
            return check_prepare(snapshots, call)
        case View():
            return check_view(snapshots, call)
        case Commit():
            return check_commit(snapshots, call)
        case Remove():
            return check_remove(snapshots, call)
        case Perform():
            if not isinstance(snapshots.get(call.key), Active):
                raise ModelError(f"a filesystem call through {call.key!r}, which is not an active snapshot")
            return None


CALL_RULES: dict[type, str] = {Prepare: "SNAP-2", View: "SNAP-3", Commit: "SNAP-4", Remove: "SNAP-5"}


def step(snapshots: Snapshots, call: SnapshotCall) -> tuple[Snapshots, Done | Failed]:
    """The snapshots after ``call``, and what became of it.

    A refused call leaves the snapshots as they were [SNAP-1]. A filesystem
    call's own failure (an errno) is a ``Done`` whose result is the errno:
    the snapshotter did its part.
    """
    if isinstance(call, Perform):
        return apply_perform(snapshots, call)
    failed = check(snapshots, call)
    if failed is not None:
        return snapshots, failed
    match call:
        case Prepare():
            after = apply_prepare(snapshots, call)
        case View():
            after = apply_view(snapshots, call)
        case Commit():
            after = apply_commit(snapshots, call)
        case Remove():
            after = apply_remove(snapshots, call)
    return after, Done(None, (CALL_RULES[type(call)], "SNAP-1"))
