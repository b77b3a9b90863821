"""Every operation of the trace format: its checks, its effect, its value.

Each call is stated twice, as the kernel runs it:

- ``check_CALL(container, op)`` gives the errno of the first check that
  fails, in the kernel's order, or None when every check passes. It changes
  nothing: it is a function of the container and the op.
- ``apply_CALL(container, op)`` gives what a call whose checks passed does:
  the container after it and the call's value (``Applied``). Applying a
  call whose check fails is a bug in the model (``ModelError``).

Inside each, the phases are marked in the same order:

- ``# RESOLVE``: walk the path (``resolve.py``);
- ``# CHECK``: the errno, in the order the kernel checks;
- ``# COPY-UP``: bring what will change into the writable layer;
- ``# APPLY``: the new state, and the value returned.

``step`` composes them: the check, then either the apply or the failure.
A failed call leaves the container unchanged [OP-1], with the one
exception the kernel makes (``refused``, RENAME-7). ``allowed`` gives every
answer the spec allows for a call, as a set: one under the ``kernel``
profile, for every call; more under ``portable`` where chapter 16 names a
point of legitimate variation.

Each outcome names the rule that decided it (``Transition.rule``): the
walks and checks return ``Denied(errno, rule)``, so the rule is chosen
where the errno is; a success names the call's rule. ``rules`` lists
every rule the call exercised, for a checker's per-rule report.

The caller is root with umask 0, so permission checks never fail and modes
are taken as given (``& 0o7777``) [OP-2].
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from cowspec.errors import Errno, ModelError
from cowspec.fs.calls import (
    Append,
    Chmod,
    Chown,
    Create,
    Link,
    Mkdir,
    Ok,
    Op,
    Open,
    Outcome,
    Read,
    Readdir,
    Readlink,
    Rename,
    Rmdir,
    Stat,
    StatValue,
    Symlink,
    Truncate,
    Unlink,
    Write,
)
from cowspec.fs.conformance import Conformance, link_bounds
from cowspec.fs.copy_up import (
    copy_up,
    copy_up_parents,
    copy_up_rules,
    index_before_removal,
    index_link_change,
    parents_rules,
    removal_index_rules,
)
from cowspec.fs.entries import SETGID, SETUID, Dir, FileInode, Name, SymlinkInode, Whiteout, add_written, cut_written
from cowspec.fs.features import opaque_new_dirs
from cowspec.fs.layer import link, move, new_name, put, remove, set_inode
from cowspec.fs.paths import ROOT, is_inside, name_of, name_too_long, parent_of, path_too_long
from cowspec.fs.resolve import (
    NAME_TOO_LONG,
    Denied,
    Resolved,
    absent,
    find,
    resolve,
    resolve_final,
    symlink_target,
    walk,
)
from cowspec.fs.stack import (
    Container,
    Found,
    index_key,
    inode_of,
    is_empty_dir,
    listed_names,
    lookup,
    visible_children,
)
from cowspec.fs.whiteouts import creation_rules, lower_positive, removal_rules, remove_visible


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of one call and the container after it.

    ``rule`` is the ID of the spec rule that decided the outcome: the one
    whose check gave the errno, or the call's own rule for a success.
    ``rules`` are every rule the call exercised, ``rule`` first: the walk's,
    copy-up's, whiteouts', redirects'. A checker tallies them, and names
    ``rule`` when a real system gives another outcome. A transition made by
    hand may leave both empty; ``step`` always fills them.
    """

    container: Container
    outcome: Outcome
    rule: str = ""
    rules: tuple[str, ...] = ()


NO_VALUE = Ok()


@dataclass(frozen=True, slots=True)
class Applied:
    """What a call whose checks passed does: the container after it, its
    value, and the rules its effect exercised besides the call's own."""

    container: Container
    value: Ok = NO_VALUE
    rules: tuple[str, ...] = ()
    rule: str = ""
    """The rule of the success, where the state decides which; else the call's (``CALL_RULES``)."""


@dataclass(frozen=True, slots=True)
class Allowed:
    """Every transition the spec allows one call; the first is ``step``'s.

    Usually one. Where real systems may legitimately answer differently,
    each answer they may give is a member, with the container that follows
    it; a checker accepts any member (design invariant 4).
    """

    transitions: tuple[Transition, ...]

    def __post_init__(self) -> None:
        if not self.transitions:
            raise ModelError("a call must allow at least one outcome")

    @property
    def outcomes(self) -> frozenset[Outcome]:
        """The outcomes allowed, as a set."""
        return frozenset(transition.outcome for transition in self.transitions)

    def admits(self, outcome: Outcome) -> bool:
        """True if ``outcome`` is one of the allowed outcomes."""
        return outcome in self.outcomes

    def after(self, outcome: Outcome) -> Container | None:
        """The container that follows ``outcome``; None if it is not allowed."""
        for transition in self.transitions:
            if transition.outcome == outcome:
                return transition.container
        return None


T = TypeVar("T")


def passed(result: T | Errno | Denied, call: str) -> T:
    """``result`` of a walk whose check has passed; an errno here is a model bug."""
    if isinstance(result, (str, Denied)):
        raise ModelError(f"{call} applied although its check fails with {result}")
    return result


# -- helpers shared by several calls -------------------------------------------


def creation_errno(point: Resolved) -> Denied | None:
    """A new name needs a free name: not the root, nothing there, not even a
    dangling symlink [OP-3]."""
    if point.name == "" or point.found is not None:
        return Denied("EEXIST", "OP-3")
    return None


def inherited(parent: Found, mode: int, *, is_dir: bool) -> tuple[int, int]:
    """The mode and group of a new entry in ``parent`` [OP-4].

    A set-group-ID directory gives new entries its group, and new
    directories its set-group-ID bit as well.
    """
    if not isinstance(parent.node, Dir):
        raise ModelError(f"new entry in {parent.path}, which is not a directory")
    if parent.node.mode & SETGID:
        return (mode | SETGID if is_dir else mode), parent.node.gid
    return mode, 0


def upper_name(container: Container, path: str) -> Name:
    """The writable layer's name at ``path``; anything else is a model bug."""
    node = container.upper.get(path)
    if not isinstance(node, Name):
        raise ModelError(f"{path} is not a name in the writable layer")
    return node


def change_file(container: Container, found: Found, change: Callable[[FileInode], FileInode]) -> Container:
    """``container`` with the upper file ``found`` changed by ``change``."""
    name = upper_name(container, found.path)
    inode = container.upper.inode(name.ino)
    if not isinstance(inode, FileInode):
        raise ModelError(f"{found.path} is opened for writing but is not a regular file")
    return replace(container, upper=set_inode(container.upper, name.ino, change(inode)))


# -- create, open, write, append, truncate --------------------------------------


def check_create(container: Container, op: Create) -> Denied | None:
    """``open(O_CREAT|O_EXCL|O_WRONLY)`` [CREATE-1][OP-3]."""
    # RESOLVE
    point = walk(container, op.path, follow=False)
    if isinstance(point, Denied):
        return point
    # CHECK
    return creation_errno(point)


def apply_create(container: Container, op: Create) -> Applied:
    """An empty file in the writable layer [CREATE-1][OP-4][WHITEOUT-3]."""
    # RESOLVE
    point = passed(resolve(container, op.path, follow=False), "create")
    rules = (*parents_rules(container, point.path), *creation_rules(container, point.path, is_dir=False))
    # COPY-UP
    container = copy_up_parents(container, point.path)
    # APPLY
    mode, gid = inherited(point.parent, op.mode & 0o7777, is_dir=False)
    upper = new_name(container.upper, point.path, FileInode(b"", mode, 0, gid, touched=True, written=()))
    return Applied(replace(container, upper=upper), rules=(*rules, "OP-4"))


def check_open(container: Container, op: Open) -> Denied | None:
    """``open`` then ``close`` [OPEN-1]."""
    # RESOLVE
    found = find(container, op.path, follow=True)
    if isinstance(found, Denied):
        return found
    # CHECK: a directory opens for reading only
    if op.flags != "r" and found.is_dir:
        return Denied("EISDIR", "OPEN-1")
    return None


def apply_open(container: Container, op: Open) -> Applied:
    """An open for writing copies up and changes nothing else [OPEN-2]."""
    # RESOLVE
    found = passed(resolve_final(container, op.path, follow=True), "open")
    # COPY-UP: for writing only [COPYUP-6]
    rules: tuple[str, ...] = ()
    if op.flags != "r":
        rules = copy_up_rules(container, found)
        container, found = copy_up(container, found)
    # APPLY: nothing else changes
    return Applied(container, rules=rules)


def check_write(container: Container, op: Write) -> Denied | None:
    """``pwrite`` opens for writing first [WRITE-1][OPEN-1]."""
    # RESOLVE
    found = find(container, op.path, follow=True)
    if isinstance(found, Denied):
        return found
    # CHECK
    if found.is_dir:
        return Denied("EISDIR", "OPEN-1")
    return None


def apply_write(container: Container, op: Write) -> Applied:
    """``pwrite`` at ``offset``; a gap is filled with zero bytes, and an empty
    write changes nothing but the copy-up [WRITE-1]."""
    # RESOLVE
    found = passed(resolve_final(container, op.path, follow=True), "write")
    # COPY-UP [COPYUP-6]
    rules = copy_up_rules(container, found)
    container, found = copy_up(container, found)

    # APPLY
    def written(inode: FileInode) -> FileInode:
        if not op.data:
            return inode  # writing nothing extends nothing, whatever the offset
        data = inode.data.ljust(op.offset, b"\0")
        data = data[: op.offset] + op.data + data[op.offset + len(op.data) :]
        return replace(inode, data=data, touched=True, written=add_written(inode, op.offset, op.offset + len(op.data)))

    return Applied(change_file(container, found, written), rules=rules)


def check_append(container: Container, op: Append) -> Denied | None:
    """``write`` with ``O_APPEND`` opens for writing first [WRITE-2][OPEN-1]."""
    # RESOLVE
    found = find(container, op.path, follow=True)
    if isinstance(found, Denied):
        return found
    # CHECK
    if found.is_dir:
        return Denied("EISDIR", "OPEN-1")
    return None


def apply_append(container: Container, op: Append) -> Applied:
    """``write`` with ``O_APPEND``: at the end of the file [WRITE-2]."""
    # RESOLVE
    found = passed(resolve_final(container, op.path, follow=True), "append")
    # COPY-UP [COPYUP-6]
    rules = copy_up_rules(container, found)
    container, found = copy_up(container, found)

    # APPLY
    def appended(inode: FileInode) -> FileInode:
        if not op.data:
            return inode
        end = len(inode.data)
        return replace(
            inode, data=inode.data + op.data, touched=True, written=add_written(inode, end, end + len(op.data))
        )

    return Applied(change_file(container, found, appended), rules=rules)


def check_truncate(container: Container, op: Truncate) -> Denied | None:
    """``truncate``: a negative size before the path, then as an open for
    writing [TRUNCATE-1]."""
    # CHECK: the size, before the path is looked at
    if op.size < 0:
        return Denied("EINVAL", "TRUNCATE-1")
    # RESOLVE
    found = find(container, op.path, follow=True)
    if isinstance(found, Denied):
        return found
    # CHECK
    if found.is_dir:
        return Denied("EISDIR", "TRUNCATE-1")
    return None


def apply_truncate(container: Container, op: Truncate) -> Applied:
    """``truncate``: copies up, cuts or extends with zeros [TRUNCATE-1]."""
    # RESOLVE
    found = passed(resolve_final(container, op.path, follow=True), "truncate")
    # COPY-UP [COPYUP-6]
    rules = copy_up_rules(container, found)
    container, found = copy_up(container, found)

    # APPLY
    def cut(inode: FileInode) -> FileInode:
        data = inode.data[: op.size].ljust(op.size, b"\0")
        return replace(inode, data=data, touched=True, written=cut_written(inode, op.size))

    return Applied(change_file(container, found, cut), rules=rules)


# -- the calls that only look ---------------------------------------------------


def check_read(container: Container, op: Read) -> Denied | None:
    """Read a whole file [READ-1][OPEN-1]."""
    # RESOLVE
    found = find(container, op.path, follow=True)
    if isinstance(found, Denied):
        return found
    # CHECK
    if found.is_dir:
        return Denied("EISDIR", "READ-1")
    return None


def apply_read(container: Container, op: Read) -> Applied:
    """The whole content; never copies up [READ-1]."""
    # RESOLVE
    found = passed(resolve_final(container, op.path, follow=True), "read")
    # COPY-UP: none, read never copies up [COPYUP-6]
    # APPLY
    inode = inode_of(container, found)
    if not isinstance(inode, FileInode):
        raise ModelError(f"read of {op.path} ends at a symlink, which the walk follows")
    return Applied(container, Ok(inode.data))


def stat_of(container: Container, found: Found) -> StatValue:
    """What ``lstat`` says of ``found`` [STAT-1]."""
    node = found.node
    if isinstance(node, Dir):
        return StatValue("dir", node.mode, node.uid, node.gid)
    inode = inode_of(container, found)
    if isinstance(inode, SymlinkInode):
        return StatValue("symlink", 0o777, inode.uid, inode.gid, size=len(inode.target.encode()))
    return StatValue("file", inode.mode, inode.uid, inode.gid, size=len(inode.data), nlink=inode.nlink)


def check_stat(container: Container, op: Stat) -> Denied | None:
    """``lstat``: only the walk can fail [STAT-1]."""
    # RESOLVE
    found = find(container, op.path, follow=False)
    # CHECK: nothing but the walk
    return found if isinstance(found, Denied) else None


def apply_stat(container: Container, op: Stat) -> Applied:
    """``lstat`` [STAT-1]."""
    # RESOLVE
    found = passed(resolve_final(container, op.path, follow=False), "stat")
    # COPY-UP: none, stat never copies up [COPYUP-6]
    # APPLY
    return Applied(container, Ok(stat_of(container, found)))


def check_readdir(container: Container, op: Readdir) -> Denied | None:
    """``opendir`` follows the last symlink and wants a directory [READDIR-1]."""
    # RESOLVE
    found = find(container, op.path, follow=True)
    if isinstance(found, Denied):
        return found
    # CHECK
    if not found.is_dir:
        return Denied("ENOTDIR", "READDIR-1")
    return None


def apply_readdir(container: Container, op: Readdir) -> Applied:
    """``opendir`` and ``readdir`` [READDIR-1][READDIR-2]."""
    # RESOLVE
    found = passed(resolve_final(container, op.path, follow=True), "readdir")
    # COPY-UP: none, readdir never copies up [COPYUP-6]
    # APPLY: a plain directory is read straight from its one layer [READDIR-2]
    listing = Ok(tuple(listed_names(container, found)))
    return Applied(container, listing, rule="READDIR-1" if found.merged else "READDIR-2")


def check_readlink(container: Container, op: Readlink) -> Denied | None:
    """``readlink``: ``EINVAL`` for anything but a symlink [READLINK-1]."""
    # RESOLVE
    found = find(container, op.path, follow=False)
    if isinstance(found, Denied):
        return found
    # CHECK
    if symlink_target(container, found) is None:
        return Denied("EINVAL", "READLINK-1")
    return None


def apply_readlink(container: Container, op: Readlink) -> Applied:
    """``readlink`` [READLINK-1]."""
    # RESOLVE
    found = passed(resolve_final(container, op.path, follow=False), "readlink")
    # COPY-UP: none, readlink never copies up [COPYUP-6]
    # APPLY
    target = symlink_target(container, found)
    if target is None:
        raise ModelError(f"readlink of {op.path}, which is not a symlink")
    return Applied(container, Ok(target))


# -- mkdir, rmdir, unlink, symlink, link -----------------------------------------


def check_mkdir(container: Container, op: Mkdir) -> Denied | None:
    """``mkdir`` [MKDIR-1][OP-3]."""
    # RESOLVE
    point = walk(container, op.path, follow=False)
    if isinstance(point, Denied):
        return point
    # CHECK
    return creation_errno(point)


def apply_mkdir(container: Container, op: Mkdir) -> Applied:
    """A directory in the writable layer; over a whiteout it is opaque
    [MKDIR-1][OP-4][WHITEOUT-4][REDIRECT-4]."""
    # RESOLVE
    point = passed(resolve(container, op.path, follow=False), "mkdir")
    rules = (*parents_rules(container, point.path), *creation_rules(container, point.path, is_dir=True), "OP-4")
    # COPY-UP
    container = copy_up_parents(container, point.path)
    # APPLY
    mode, gid = inherited(point.parent, op.mode & 0o1777, is_dir=True)
    over_whiteout = isinstance(container.upper.get(point.path), Whiteout)
    # With redirect_dir, index or metacopy on, a new directory inside one that
    # has image-layer copies is made opaque at once [REDIRECT-4].
    in_merged = opaque_new_dirs(container.features) and point.parent.has_lower
    upper = put(container.upper, point.path, Dir(mode, 0, gid, opaque=over_whiteout or in_merged))
    return Applied(replace(container, upper=upper), rules=(*rules, "REDIRECT-4") if in_merged else rules)


def check_rmdir(container: Container, op: Rmdir) -> Denied | None:
    """``rmdir`` [RMDIR-1][RMDIR-2]."""
    # RESOLVE
    resolved = walk(container, op.path, follow=False)
    if isinstance(resolved, Denied):
        return resolved
    # CHECK
    found = resolved.found
    if resolved.name == "":
        return Denied("EBUSY", "RMDIR-1")
    if found is None:
        return absent(container, resolved)
    if not found.is_dir:
        return Denied("ENOTDIR", "RMDIR-1")
    if not is_empty_dir(container, found):
        return Denied("ENOTEMPTY", "RMDIR-2")
    return None


def apply_rmdir(container: Container, op: Rmdir) -> Applied:
    """The directory leaves the merged view [RMDIR-2][WHITEOUT-2]."""
    # RESOLVE
    resolved = passed(resolve(container, op.path, follow=False), "rmdir")
    found = resolved.found
    if found is None:
        raise ModelError(f"rmdir of {op.path}, which is absent")
    rules = (*parents_rules(container, found.path), *removal_rules(container, resolved.parent, found))
    # COPY-UP: the parents only [COPYUP-2]
    container = copy_up_parents(container, found.path)
    # APPLY
    return Applied(remove_visible(container, resolved.parent, found), rules=rules)


def check_unlink(container: Container, op: Unlink) -> Denied | None:
    """``unlink`` [UNLINK-1]."""
    # RESOLVE
    resolved = walk(container, op.path, follow=False)
    if isinstance(resolved, Denied):
        return resolved
    # CHECK
    found = resolved.found
    if resolved.name == "":
        return Denied("EISDIR", "UNLINK-1")
    if found is None:
        return absent(container, resolved)
    if found.is_dir:
        return Denied("EISDIR", "UNLINK-1")
    return None


def apply_unlink(container: Container, op: Unlink) -> Applied:
    """The name leaves the merged view; a writable-layer inode loses a link
    [UNLINK-1][WHITEOUT-2]."""
    # RESOLVE
    resolved = passed(resolve(container, op.path, follow=False), "unlink")
    found = resolved.found
    if found is None:
        raise ModelError(f"unlink of {op.path}, which is absent")
    rules = (
        *parents_rules(container, found.path),
        *removal_rules(container, resolved.parent, found),
        *removal_index_rules(container, found),
    )
    # COPY-UP: the parents only [COPYUP-2]; with index on, a name of an
    # image-layer hardlink makes its index entry first [INDEX-3]
    container = copy_up_parents(container, found.path)
    container = index_before_removal(container, found)
    # APPLY: the overlay's count loses the name [INDEX-2]
    container = index_link_change(container, found, -1)
    return Applied(remove_visible(container, resolved.parent, found), rules=rules)


def check_symlink(container: Container, op: Symlink) -> Denied | None:
    """``symlink``: an empty target first, then as OP-3 [SYMLINK-1][OP-3]."""
    # CHECK: the target, before the path is looked at
    if op.target == "":
        return Denied("ENOENT", "SYMLINK-1")
    if path_too_long(op.target):
        return Denied(NAME_TOO_LONG, "PATH-2")
    # RESOLVE
    point = walk(container, op.path, follow=False)
    if isinstance(point, Denied):
        return point
    # CHECK
    return creation_errno(point)


def apply_symlink(container: Container, op: Symlink) -> Applied:
    """A new symlink in the writable layer [SYMLINK-1][OP-4][WHITEOUT-3]."""
    # RESOLVE
    point = passed(resolve(container, op.path, follow=False), "symlink")
    rules = (*parents_rules(container, point.path), *creation_rules(container, point.path, is_dir=False), "OP-4")
    # COPY-UP
    container = copy_up_parents(container, point.path)
    # APPLY
    _, gid = inherited(point.parent, 0, is_dir=False)
    upper = new_name(container.upper, point.path, SymlinkInode(op.target, 0, gid, touched=True))
    return Applied(replace(container, upper=upper), rules=rules)


def check_link(container: Container, op: Link) -> Denied | None:
    """``link``: the source, then the destination, then the kind [LINK-1]."""
    # RESOLVE
    source = find(container, op.src, follow=False)
    if isinstance(source, Denied):
        return source
    point = walk(container, op.dst, follow=False)
    if isinstance(point, Denied):
        return point
    # CHECK
    denied = creation_errno(point)
    if denied is not None:
        return denied
    if source.is_dir:
        return Denied("EPERM", "LINK-1")
    return None


def apply_link(container: Container, op: Link) -> Applied:
    """The source is copied up, then gets a second name [LINK-1][COPYUP-6][COPYUP-5]."""
    # RESOLVE
    source = passed(resolve_final(container, op.src, follow=False), "link")
    point = passed(resolve(container, op.dst, follow=False), "link")
    rules = copy_up_rules(container, source, metadata_only=True)
    # COPY-UP: the metadata only, with metacopy on [METACOPY-1]
    container, source = copy_up(container, source, metadata_only=True)
    rules += (*parents_rules(container, point.path), *creation_rules(container, point.path, is_dir=False))
    container = copy_up_parents(container, point.path)
    # APPLY: a metacopy file gets a redirect from the root [METACOPY-3]
    ino = upper_name(container, source.path).ino
    redirected = redirect_file(container, source.path, same_dir=False)
    if redirected is not container:
        rules += ("METACOPY-3",)
    if index_key(redirected, source) is not None:
        rules += ("INDEX-2",)
    container = index_link_change(redirected, source, +1)
    return Applied(replace(container, upper=link(container.upper, point.path, ino)), rules=rules)


# -- chmod, lchown ------------------------------------------------------------------


def check_chmod(container: Container, op: Chmod) -> Denied | None:
    """``chmod`` follows the last symlink; only the walk can fail [CHMOD-1]."""
    # RESOLVE
    found = find(container, op.path, follow=True)
    # CHECK: nothing but the walk
    return found if isinstance(found, Denied) else None


def apply_chmod(container: Container, op: Chmod) -> Applied:
    """``chmod``: a metadata change, so a copy-up [CHMOD-1][COPYUP-6]."""
    # RESOLVE
    found = passed(resolve_final(container, op.path, follow=True), "chmod")
    # COPY-UP: the metadata only, with metacopy on [METACOPY-1]
    rules = copy_up_rules(container, found, metadata_only=True)
    container, found = copy_up(container, found, metadata_only=True)
    # APPLY
    return Applied(set_attributes(container, found, mode=op.mode & 0o7777), rules=rules)


def check_chown(container: Container, op: Chown) -> Denied | None:
    """``lchown`` does not follow the last symlink; only the walk can fail [CHOWN-1]."""
    # RESOLVE
    found = find(container, op.path, follow=False)
    # CHECK: nothing but the walk
    return found if isinstance(found, Denied) else None


def apply_chown(container: Container, op: Chown) -> Applied:
    """``lchown``: copies up; a file loses set-user-ID, and set-group-ID
    when it is group-executable [CHOWN-1][COPYUP-6]."""
    # RESOLVE
    found = passed(resolve_final(container, op.path, follow=False), "chown")
    # COPY-UP: the metadata only, with metacopy on [METACOPY-1]
    rules = copy_up_rules(container, found, metadata_only=True)
    container, found = copy_up(container, found, metadata_only=True)
    # APPLY
    return Applied(set_attributes(container, found, uid=op.uid, gid=op.gid, owner_change=True), rules=rules)


def set_attributes(
    container: Container,
    found: Found,
    *,
    mode: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
    owner_change: bool = False,
) -> Container:
    """``container`` with new attributes on the upper object ``found``."""
    node = container.upper.get(found.path)
    if isinstance(node, Dir):
        changed = replace(
            node,
            mode=node.mode if mode is None else mode,
            uid=node.uid if uid is None else uid,
            gid=node.gid if gid is None else gid,
        )
        return replace(container, upper=put(container.upper, found.path, changed))
    name = upper_name(container, found.path)
    inode = container.upper.inode(name.ino)
    if isinstance(inode, SymlinkInode):
        new_inode: FileInode | SymlinkInode = replace(
            inode, uid=inode.uid if uid is None else uid, gid=inode.gid if gid is None else gid
        )
    else:
        new_mode = inode.mode if mode is None else mode
        if owner_change:
            new_mode &= ~SETUID
            if new_mode & 0o010:
                new_mode &= ~SETGID
        new_inode = replace(
            inode,
            mode=new_mode,
            uid=inode.uid if uid is None else uid,
            gid=inode.gid if gid is None else gid,
        )
    return replace(container, upper=set_inode(container.upper, name.ino, new_inode))


# -- rename -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenamePlan:
    """A rename that passed the checks made before anything changes.

    ``replaced`` is what the destination names now, if anything; ``noop``
    is set when source and destination are one object [RENAME-4].
    """

    source: Resolved
    target: Resolved
    moving: Found
    replaced: Found | None
    noop: bool


def resolve_rename(container: Container, op: Rename) -> tuple[Resolved, Resolved] | Denied:
    """The walks of ``rename``: the source's, then the destination's, their last names looked up later, in
    ``plan_rename`` [RENAME-1][PATH-2]."""
    source = walk(container, op.src, follow=False, look_up_last=False)
    if isinstance(source, Denied):
        return source
    target = walk(container, op.dst, follow=False, look_up_last=False)
    if isinstance(target, Denied):
        return target
    return source, target


def plan_rename(container: Container, source: Resolved, target: Resolved) -> RenamePlan | Denied:
    """The checks of ``rename`` made before anything changes, in the kernel's
    order [RENAME-1][RENAME-2][RENAME-3][RENAME-4]."""
    # The walk's own errors, then the ancestry traps [RENAME-1]
    if source.name == "" or target.name == "":
        return Denied("EBUSY", "RENAME-1")
    # The last names are looked up once both parents are walked: the source's, then the destination's [PATH-2]
    if name_too_long(source.name):
        return Denied(NAME_TOO_LONG, "PATH-2")
    moving = source.found
    if moving is None:
        return absent(container, source)
    if name_too_long(target.name):
        return Denied(NAME_TOO_LONG, "PATH-2")
    if is_inside(target.parent.path, source.path) or target.parent.path == source.path:
        return Denied("EINVAL", "RENAME-1")
    if is_inside(source.parent.path, target.path) or source.parent.path == target.path:
        return Denied("ENOTEMPTY", "RENAME-1")
    # The kinds of source and target [RENAME-2][RENAME-4]
    replaced = target.found
    if replaced is not None:
        if same_inode(moving, replaced, container):
            return RenamePlan(source, target, moving, replaced, noop=True)
        if moving.is_dir and not replaced.is_dir:
            return Denied("ENOTDIR", "RENAME-2")
        if not moving.is_dir and replaced.is_dir:
            return Denied("EISDIR", "RENAME-2")
    # Overlayfs's own refusals [RENAME-3]
    if moving.is_dir and moving.has_lower and not container.features.redirect_dir:
        return Denied("EXDEV", "RENAME-3")
    if replaced is not None and replaced.is_dir and replaced.has_lower and not is_empty_dir(container, replaced):
        return Denied("ENOTEMPTY", "RENAME-2")
    return RenamePlan(source, target, moving, replaced, noop=False)


def copy_up_for_rename(container: Container, plan: RenamePlan) -> tuple[Container, Found]:
    """``container`` with the source copied up and marked, and the destination's
    parents copied up; and the source's new place [RENAME-6][RENAME-5][REDIRECT-3]."""
    had_lower = plan.moving.is_dir and plan.moving.has_lower
    container, moving = copy_up(container, plan.moving, metadata_only=True)
    container = copy_up_parents(container, plan.target.path)
    same_dir = plan.source.parent.path == plan.target.parent.path
    container = redirect_file(container, moving.path, same_dir=same_dir)
    return mark_moving_dir(container, moving.path, had_lower, plan.source, plan.target), moving


def late_rename_errno(container: Container, plan: RenamePlan) -> Denied | None:
    """The writable layer's own refusal, checked after the copy-up: a
    directory onto a non-empty one [RENAME-7][RENAME-2]."""
    replaced = plan.replaced
    if replaced is not None and replaced.is_dir and not is_empty_dir(container, replaced):
        return Denied("ENOTEMPTY", "RENAME-7")
    return None


def check_rename(container: Container, op: Rename) -> Denied | None:
    """``rename``: the checks before anything changes, then the one the
    writable layer makes after the copy-up, on the state it would leave.

    [RENAME-1][RENAME-2][RENAME-3][RENAME-4][RENAME-7]
    """
    # RESOLVE
    ends = resolve_rename(container, op)
    if isinstance(ends, Denied):
        return ends
    # CHECK: before anything changes
    plan = plan_rename(container, *ends)
    if isinstance(plan, Denied):
        return plan
    if plan.noop or plan.replaced is None or not plan.replaced.is_dir:
        return None
    # COPY-UP: made on a value; the container given does not change
    prepared, _ = copy_up_for_rename(container, plan)
    # CHECK: after the copy-up [RENAME-7]
    return late_rename_errno(prepared, plan)


def apply_rename(container: Container, op: Rename) -> Applied:
    """``rename`` [RENAME-4][RENAME-5][RENAME-6][REDIRECT-3][WHITEOUT-2]."""
    # RESOLVE, and the plan its check made
    plan = passed(plan_rename(container, *passed(resolve_rename(container, op), "rename")), "rename")
    if plan.noop:
        return Applied(container, rule="RENAME-4")
    rules = rename_rules(container, plan)
    # COPY-UP [RENAME-6]
    needs_whiteout = lower_positive(container, plan.source.parent, plan.moving)
    container, moving = copy_up_for_rename(container, plan)
    if late_rename_errno(container, plan) is not None:
        raise ModelError(f"rename of {op.src} applied although its check fails")
    # APPLY [RENAME-6]: a name replaced leaves the overlay's count [INDEX-2][INDEX-3]
    replaced = plan.replaced
    if replaced is not None and not replaced.is_dir:
        container = index_link_change(index_before_removal(container, replaced), replaced, -1)
    upper = container.upper
    if upper.get(plan.target.path) is not None:
        upper = remove(upper, plan.target.path)
    upper = move(upper, moving.path, plan.target.path)
    if needs_whiteout:
        upper = put(upper, moving.path, Whiteout())
    return Applied(replace(container, upper=upper), rules=rules)


def rename_rules(container: Container, plan: RenamePlan) -> tuple[str, ...]:
    """The rules a rename that passed its checks exercises besides RENAME-6,
    read before it runs: the source's copy-up, the destination's parents, the
    mark a moving directory gets [REDIRECT-3][RENAME-5], the whiteout it
    leaves [WHITEOUT-2]."""
    rules = (*copy_up_rules(container, plan.moving, metadata_only=True), *parents_rules(container, plan.target.path))
    node = plan.moving.node
    if plan.replaced is not None and not plan.replaced.is_dir:
        rules += removal_index_rules(container, plan.replaced)
    if moves_metacopy(container, plan.moving):
        rules += ("METACOPY-3",)
    if plan.moving.is_dir and plan.moving.has_lower:
        rules += ("REDIRECT-3",)
    elif isinstance(node, Dir) and not node.opaque and target_parent_merged(container, plan.target):
        rules += ("RENAME-5",)
    return (*rules, *removal_rules(container, plan.source.parent, plan.moving))


def refused_rename(container: Container, op: Rename) -> Container:
    """The container after a rename that failed: unchanged [OP-1], except
    when the writable layer refused it after the copy-up, which stays [RENAME-7]."""
    # RESOLVE
    ends = resolve_rename(container, op)
    if isinstance(ends, Denied):
        return container
    # CHECK: a refusal before anything changed leaves nothing
    plan = plan_rename(container, *ends)
    if isinstance(plan, Denied) or plan.noop:
        return container
    # COPY-UP: what the kernel did before it refused
    prepared, _ = copy_up_for_rename(container, plan)
    # APPLY: nothing more
    return prepared


def mark_moving_dir(container: Container, path: str, had_lower: bool, source: Resolved, target: Resolved) -> Container:
    """``container`` with the directory about to move marked as it must be.

    One that had image-layer copies gets a redirect to them [REDIRECT-3]; one
    that lives only in the writable layer becomes opaque when it moves into a
    directory with image-layer copies, so that a same-named directory below
    cannot show through it [RENAME-5].
    """
    node = container.upper.get(path)
    if not isinstance(node, Dir):
        return container
    if had_lower:
        redirect = redirect_for(container, path, same_dir=source.parent.path == target.parent.path)
        changed = replace(node, redirect=redirect)
    elif not node.opaque and target_parent_merged(container, target):
        changed = replace(node, opaque=True)
    else:
        return container
    return replace(container, upper=put(container.upper, path, changed))


def redirect_for(container: Container, path: str, *, same_dir: bool) -> str:
    """Where the image-layer copies of the directory at ``path`` are [REDIRECT-3].

    A rename within one directory records the old name; any other records
    the path from the root, composed through the redirects of the
    directories above. A redirect already recorded is kept, unless it is a
    bare name and a path from the root is now needed.
    """
    if container.upper.get(path) is None:
        raise ModelError(f"redirect for {path}, which is not in the writable layer")
    existing = own_redirect(container, path)
    if existing is not None and (existing.startswith("/") or same_dir):
        return existing
    if same_dir:
        return name_of(path)
    parts: list[str] = []
    current = path
    while current != ROOT:
        step_name = own_redirect(container, current) or name_of(current)
        if step_name.startswith("/"):
            return step_name + "".join("/" + part for part in parts)
        parts.insert(0, step_name)
        current = parent_of(current)
    return "/" + "/".join(parts)


def own_redirect(container: Container, path: str) -> str | None:
    """The redirect recorded at ``path`` of the writable layer: a directory's
    [REDIRECT-1], or a file's inode's [METACOPY-3]; None for none."""
    node = container.upper.get(path)
    if isinstance(node, Dir):
        return node.redirect
    if isinstance(node, Name):
        inode = container.upper.inode(node.ino)
        if isinstance(inode, FileInode):
            return inode.redirect
    return None


def redirect_file(container: Container, path: str, *, same_dir: bool) -> Container:
    """``container`` with the metacopy file at ``path`` (in the writable
    layer) redirected to its image-layer data before it moves or gains a
    name, as ``redirect_for`` chooses, from the root when the image inode
    has several names; anything else unchanged, the very same value
    [METACOPY-3]."""
    node = container.upper.get(path)
    if not isinstance(node, Name):
        return container
    inode = container.upper.inode(node.ino)
    if not isinstance(inode, FileInode) or not inode.metacopy:
        return container
    # The names of an image-layer hardlink may end up in several
    # directories: its redirect is always from the root.
    if inode.lower is not None and container.layer(inode.lower[0]).inode(inode.lower[1]).nlink > 1:
        same_dir = False
    redirect = redirect_for(container, path, same_dir=same_dir)
    if redirect == inode.redirect:
        return container
    return replace(container, upper=set_inode(container.upper, node.ino, replace(inode, redirect=redirect)))


def moves_metacopy(container: Container, moving: Found) -> bool:
    """True if a rename of ``moving`` moves a metacopy file: one already, or
    an image-layer regular file the rename copies up with ``metacopy`` on
    [METACOPY-3]."""
    if moving.is_dir:
        return False
    inode = inode_of(container, moving)
    if not isinstance(inode, FileInode):
        return False
    if moving.in_upper or index_key(container, moving) in container.index:
        return inode.metacopy
    return container.features.metacopy


def target_parent_merged(container: Container, target: Resolved) -> bool:
    """True if the directory receiving a rename has image-layer copies.

    A directory moved into such a directory is made opaque, so that a
    same-named directory below cannot show through it [RENAME-5].
    """
    parent = lookup(container, target.parent.path)
    return parent is not None and parent.has_lower


def same_inode(one: Found, other: Found, container: Container | None = None) -> bool:
    """True if two names are one inode of the merged view (rename between
    them is a no-op) [RENAME-4].

    With ``index`` off, names of one image-layer inode are distinct objects
    in the merged view, and only names of one writable-layer inode are one.
    With ``index`` on (``container`` given), every name of an image-layer
    inode with several names is that one inode, copied up or not [INDEX-2].
    """
    if container is not None and container.features.index:
        key = index_key(container, one)
        if key is not None and key == index_key(container, other):
            return True
    return one.path == other.path or (
        one.in_upper
        and other.in_upper
        and isinstance(one.node, Name)
        and isinstance(other.node, Name)
        and one.node.ino == other.node.ino
    )


# -- every call --------------------------------------------------------------------


def check(container: Container, op: Op) -> Errno | None:
    """The errno ``op`` fails with on ``container``, or None if it succeeds."""
    denied = denial(container, op)
    return None if denied is None else denied.errno


def denial(container: Container, op: Op) -> Denied | None:
    """Why ``op`` fails on ``container`` (its errno and rule), or None if it succeeds."""
    match op:
        case Create():
            return check_create(container, op)
        case Open():
            return check_open(container, op)
        case Write():
            return check_write(container, op)
        case Append():
            return check_append(container, op)
        case Truncate():
            return check_truncate(container, op)
        case Read():
            return check_read(container, op)
        case Stat():
            return check_stat(container, op)
        case Readdir():
            return check_readdir(container, op)
        case Readlink():
            return check_readlink(container, op)
        case Mkdir():
            return check_mkdir(container, op)
        case Rmdir():
            return check_rmdir(container, op)
        case Unlink():
            return check_unlink(container, op)
        case Rename():
            return check_rename(container, op)
        case Symlink():
            return check_symlink(container, op)
        case Link():
            return check_link(container, op)
        case Chmod():
            return check_chmod(container, op)
        case Chown():
            return check_chown(container, op)


def apply(container: Container, op: Op) -> Applied:
    """What ``op`` does to ``container`` once its check has passed."""
    match op:
        case Create():
            return apply_create(container, op)
        case Open():
            return apply_open(container, op)
        case Write():
            return apply_write(container, op)
        case Append():
            return apply_append(container, op)
        case Truncate():
            return apply_truncate(container, op)
        case Read():
            return apply_read(container, op)
        case Stat():
            return apply_stat(container, op)
        case Readdir():
            return apply_readdir(container, op)
        case Readlink():
            return apply_readlink(container, op)
        case Mkdir():
            return apply_mkdir(container, op)
        case Rmdir():
            return apply_rmdir(container, op)
        case Unlink():
            return apply_unlink(container, op)
        case Rename():
            return apply_rename(container, op)
        case Symlink():
            return apply_symlink(container, op)
        case Link():
            return apply_link(container, op)
        case Chmod():
            return apply_chmod(container, op)
        case Chown():
            return apply_chown(container, op)


def refused(container: Container, op: Op) -> Container:
    """The container after ``op`` failed: unchanged [OP-1], but for RENAME-7."""
    if isinstance(op, Rename):
        return refused_rename(container, op)
    return container


CALL_RULES: dict[type, str] = {
    Create: "CREATE-1",
    Open: "OPEN-1",
    Write: "WRITE-1",
    Append: "WRITE-2",
    Truncate: "TRUNCATE-1",
    Read: "READ-1",
    Stat: "STAT-1",
    Readdir: "READDIR-1",
    Readlink: "READLINK-1",
    Mkdir: "MKDIR-1",
    Rmdir: "RMDIR-1",
    Unlink: "UNLINK-1",
    Rename: "RENAME-6",
    Symlink: "SYMLINK-1",
    Link: "LINK-1",
    Chmod: "CHMOD-1",
    Chown: "CHOWN-1",
}
"""The rule that states each call's effect: the rule of a success, unless
the apply names a more precise one (``Applied.rule``)."""


def walked(op: Op) -> tuple[tuple[str, bool], ...]:
    """The paths ``op`` walks, each with whether its last symlink is followed [PATH-6]."""
    match op:
        case Rename() | Link():
            return ((op.src, False), (op.dst, False))
        case Open() | Write() | Append() | Truncate() | Read() | Readdir() | Chmod():
            return ((op.path, True),)
        case _:
            return ((op.path, False),)


def walk_rules(container: Container, op: Op) -> tuple[str, ...]:
    """The rules the walks of ``op`` exercise on ``container``.

    Every walk looks names up component by component [PATH-2][LOOKUP-1];
    it may follow symlinks [PATH-3] (the last one as the call says
    [PATH-6]) and end at a merged [LOOKUP-3], opaque [OPAQUE-1] or
    redirected [REDIRECT-2] directory. A walk that fails is the decided
    rule's, not counted here.
    """
    rules: list[str] = []
    for path, follow in walked(op):
        resolved = walk(container, path, follow=follow)
        if isinstance(resolved, Denied):
            continue
        rules += ("PATH-2", "LOOKUP-1")
        found = resolved.found
        if resolved.links:
            rules.append("PATH-3")
        if (follow and resolved.links) or (found is not None and not follow and symlink_target(container, found)):
            rules.append("PATH-6")
        if found is not None and isinstance(found.node, Dir):
            if found.merged:
                rules.append("LOOKUP-3")
            if found.node.opaque:
                rules.append("OPAQUE-1")
            if found.node.redirect is not None:
                rules.append("REDIRECT-2")
    return tuple(rules)


def distinct(rules: tuple[str, ...]) -> tuple[str, ...]:
    """``rules`` without repeats, in their first order."""
    return tuple(dict.fromkeys(rules))


def step(container: Container, op: Op) -> Transition:
    """The outcome of ``op`` on ``container`` and the container after it:
    the check, then the apply or the refusal; with the rule that decided the
    outcome and every rule the call exercised."""
    denied = denial(container, op)
    if denied is not None:
        rules = distinct((denied.rule, "OP-1", *walk_rules(container, op)))
        return Transition(refused(container, op), denied.errno, denied.rule, rules)
    applied = apply(container, op)
    rule = applied.rule or CALL_RULES[type(op)]
    rules = distinct((rule, *walk_rules(container, op), *applied.rules))
    return Transition(applied.container, applied.value, rule, rules)


def allowed(container: Container, op: Op, conformance: Conformance = "kernel") -> Allowed:
    """Every outcome the spec allows ``op`` on ``container``, each with the
    container after it; ``step``'s first.

    Under the ``kernel`` profile, one for every call: ``step``'s. Under
    ``portable``, also every outcome a point of legitimate variation
    allows (spec chapter 16): a listing of a plain directory without the
    whiteouts it stores [CONFORM-5], and other link counts from ``lstat``
    [CONFORM-4][CONFORM-6].
    """
    kernel = step(container, op)
    if conformance == "kernel":
        return Allowed((kernel,))
    return Allowed((kernel, *readdir_variants(container, op, kernel), *stat_variants(container, op, kernel)))


def stat_variants(container: Container, op: Op, kernel: Transition) -> tuple[Transition, ...]:
    """The other link counts a portable implementation may give for ``op``:
    ``lstat`` of a name whose hardlink a copy-up broke [CONFORM-4] (COPYUP-5),
    or of a name of an image-layer inode some of whose names are hidden
    [CONFORM-6], any count ``link_bounds`` allows there."""
    if not isinstance(op, Stat) or not isinstance(kernel.outcome, Ok):
        return ()
    value = kernel.outcome.value
    if not isinstance(value, StatValue) or value.type != "file":
        return ()
    found = passed(resolve_final(container, op.path, follow=False), "stat")
    bound = link_bounds(container).get(found.path)
    if bound is None:
        return ()
    rules = (*kernel.rules, bound.rule)
    return tuple(
        Transition(kernel.container, Ok(replace(value, nlink=count)), bound.rule, rules)
        for count in range(bound.lowest, bound.highest + 1)
        if count != value.nlink
    )


def readdir_variants(container: Container, op: Op, kernel: Transition) -> tuple[Transition, ...]:
    """The other listing a portable implementation may give for ``op``: a
    plain directory's names without the whiteouts stored in it [CONFORM-5]
    (READDIR-2; docs/rationale/readdir-lists-whiteouts.md)."""
    if not isinstance(op, Readdir) or kernel.rule != "READDIR-2" or not isinstance(kernel.outcome, Ok):
        return ()
    found = passed(resolve_final(container, op.path, follow=True), "readdir")
    shown = tuple(sorted(visible_children(container, found)))
    if shown == kernel.outcome.value:
        return ()
    rules = (*kernel.rules, "CONFORM-5")
    return (Transition(kernel.container, Ok(shown), "CONFORM-5", rules),)
