"""Every operation of the trace format: its errno, its effect, its value.

Each operation follows the same phases, marked in the code:

- ``# RESOLVE``: walk the path (``resolve.py``);
- ``# CHECK``: the errno, in the order the kernel checks;
- ``# COPY-UP``: bring what will change into the writable layer;
- ``# APPLY``: the new state, and the value returned.

``step`` is the one entry point: it takes a container and an op and gives
the new container and the outcome. A failed call leaves the container
unchanged [OP-1], with the one exception the kernel makes (RENAME-7). The
caller is root with umask 0, so permission checks never fail and modes are taken as given (``& 0o7777``) [OP-2].
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

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
from cowspec.fs.copy_up import copy_up, copy_up_parents
from cowspec.fs.entries import SETGID, SETUID, Dir, FileInode, Name, SymlinkInode, Whiteout
from cowspec.fs.layer import link, move, new_name, put, remove, set_inode
from cowspec.fs.paths import ROOT, is_inside, name_of, parent_of
from cowspec.fs.resolve import Resolved, resolve, resolve_final, symlink_target
from cowspec.fs.stack import (
    Container,
    Found,
    inode_of,
    is_empty_dir,
    listed_names,
    lookup,
)
from cowspec.fs.whiteouts import lower_positive, remove_visible


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of one call and the container after it."""

    container: Container
    outcome: Outcome


def failed(container: Container, errno: Errno) -> Transition:
    """A call that failed with ``errno``: nothing changes [OP-1]."""
    return Transition(container, errno)


def done(container: Container, value: Ok | None = None) -> Transition:
    """A call that succeeded."""
    return Transition(container, value if value is not None else Ok())


# -- helpers shared by the creating calls -------------------------------------


def creation_point(container: Container, path: str) -> Resolved | Errno:
    """Where a new name goes: the parent must exist and the name must not.

    [OP-3]
    """
    # RESOLVE
    resolved = resolve(container, path, follow=False)
    if isinstance(resolved, str):
        return resolved
    # CHECK
    if resolved.name == "" or resolved.found is not None:
        return "EEXIST"
    return resolved


def inherited(parent: Found, mode: int, *, is_dir: bool) -> tuple[int, int]:
    """The mode and group of a new entry in ``parent`` [OP-4].

    A set-group-ID directory gives new entries its group, and new
    directories its set-group-ID bit as well.
    """
    assert isinstance(parent.node, Dir)
    if parent.node.mode & SETGID:
        return (mode | SETGID if is_dir else mode), parent.node.gid
    return mode, 0


def upper_name(container: Container, path: str) -> Name:
    """The writable layer's name at ``path``; anything else is a model bug."""
    node = container.upper.get(path)
    if not isinstance(node, Name):
        raise ModelError(f"{path} is not a name in the writable layer")
    return node


def writable_file(container: Container, path: str, flags_write: bool) -> tuple[Container, Found] | Errno:
    """Resolve ``path`` for an open that follows links; copy up for writing.

    [OPEN-1][OPEN-2][COPYUP-6]
    """
    # RESOLVE
    found = resolve_final(container, path, follow=True)
    if isinstance(found, str):
        return found
    # CHECK
    if flags_write and found.is_dir:
        return "EISDIR"
    if not flags_write:
        return container, found
    # COPY-UP
    return copy_up(container, found)


def change_file(container: Container, found: Found, change: Callable[[FileInode], FileInode]) -> Container:
    """``container`` with the upper file ``found`` changed by ``change``."""
    name = upper_name(container, found.path)
    inode = container.upper.inode(name.ino)
    assert isinstance(inode, FileInode)
    return replace(container, upper=set_inode(container.upper, name.ino, change(inode)))


# -- the calls ------------------------------------------------------------------


def do_create(container: Container, op: Create) -> Transition:
    """``open(O_CREAT|O_EXCL|O_WRONLY)`` [CREATE-1][OP-3][OP-4][WHITEOUT-3]."""
    # RESOLVE / CHECK
    point = creation_point(container, op.path)
    if isinstance(point, str):
        return failed(container, point)
    # COPY-UP
    container = copy_up_parents(container, point.path)
    # APPLY
    mode, gid = inherited(point.parent, op.mode & 0o7777, is_dir=False)
    upper = new_name(container.upper, point.path, FileInode(b"", mode, 0, gid, touched=True))
    return done(replace(container, upper=upper))


def do_open(container: Container, op: Open) -> Transition:
    """``open`` then ``close``: a write open copies up [OPEN-1][OPEN-2]."""
    opened = writable_file(container, op.path, op.flags != "r")
    if isinstance(opened, str):
        return failed(container, opened)
    return done(opened[0])


def do_write(container: Container, op: Write) -> Transition:
    """``pwrite`` at ``offset``; a gap is filled with zero bytes, and an empty
    write changes nothing but the copy-up [WRITE-1]."""
    opened = writable_file(container, op.path, True)
    if isinstance(opened, str):
        return failed(container, opened)
    container, found = opened

    # APPLY
    def written(inode: FileInode) -> FileInode:
        if not op.data:
            return inode  # writing nothing extends nothing, whatever the offset
        data = inode.data.ljust(op.offset, b"\0")
        return replace(inode, data=data[: op.offset] + op.data + data[op.offset + len(op.data) :], touched=True)

    return done(change_file(container, found, written))


def do_append(container: Container, op: Append) -> Transition:
    """``write`` with ``O_APPEND``: at the end of the file [WRITE-2]."""
    opened = writable_file(container, op.path, True)
    if isinstance(opened, str):
        return failed(container, opened)
    container, found = opened
    return done(
        change_file(
            container,
            found,
            lambda inode: replace(inode, data=inode.data + op.data, touched=inode.touched or bool(op.data)),
        )
    )


def do_truncate(container: Container, op: Truncate) -> Transition:
    """``truncate``: copies up, cuts or extends with zeros [TRUNCATE-1]."""
    # CHECK
    if op.size < 0:
        return failed(container, "EINVAL")
    opened = writable_file(container, op.path, True)
    if isinstance(opened, str):
        return failed(container, opened)
    container, found = opened

    # APPLY
    def cut(inode: FileInode) -> FileInode:
        return replace(inode, data=inode.data[: op.size].ljust(op.size, b"\0"), touched=True)

    return done(change_file(container, found, cut))


def do_read(container: Container, op: Read) -> Transition:
    """Read a whole file; never copies up [READ-1]."""
    # RESOLVE
    found = resolve_final(container, op.path, follow=True)
    if isinstance(found, str):
        return failed(container, found)
    # CHECK
    if found.is_dir:
        return failed(container, "EISDIR")
    inode = inode_of(container, found)
    assert isinstance(inode, FileInode)
    return done(container, Ok(inode.data))


def stat_of(container: Container, found: Found) -> StatValue:
    """What ``lstat`` says of ``found`` [STAT-1]."""
    node = found.node
    if isinstance(node, Dir):
        return StatValue("dir", node.mode, node.uid, node.gid)
    inode = inode_of(container, found)
    if isinstance(inode, SymlinkInode):
        return StatValue("symlink", 0o777, inode.uid, inode.gid, size=len(inode.target.encode()))
    return StatValue("file", inode.mode, inode.uid, inode.gid, size=len(inode.data), nlink=inode.nlink)


def do_stat(container: Container, op: Stat) -> Transition:
    """``lstat`` [STAT-1]."""
    found = resolve_final(container, op.path, follow=False)
    if isinstance(found, str):
        return failed(container, found)
    return done(container, Ok(stat_of(container, found)))


def do_readdir(container: Container, op: Readdir) -> Transition:
    """``opendir`` and ``readdir`` [READDIR-1][READDIR-2]."""
    found = resolve_final(container, op.path, follow=True)
    if isinstance(found, str):
        return failed(container, found)
    if not found.is_dir:
        return failed(container, "ENOTDIR")
    return done(container, Ok(tuple(listed_names(container, found))))


def do_readlink(container: Container, op: Readlink) -> Transition:
    """``readlink`` [READLINK-1]."""
    found = resolve_final(container, op.path, follow=False)
    if isinstance(found, str):
        return failed(container, found)
    target = symlink_target(container, found)
    if target is None:
        return failed(container, "EINVAL")
    return done(container, Ok(target))


def do_mkdir(container: Container, op: Mkdir) -> Transition:
    """``mkdir``; over a whiteout the new directory is opaque [MKDIR-1][WHITEOUT-4][REDIRECT-4]."""
    point = creation_point(container, op.path)
    if isinstance(point, str):
        return failed(container, point)
    container = copy_up_parents(container, point.path)
    # APPLY
    mode, gid = inherited(point.parent, op.mode & 0o1777, is_dir=True)
    over_whiteout = isinstance(container.upper.get(point.path), Whiteout)
    # With redirect_dir on, a new directory inside one that has image-layer
    # copies is made opaque at once [REDIRECT-4].
    in_merged = container.features.redirect_dir and point.parent.has_lower
    upper = put(container.upper, point.path, Dir(mode, 0, gid, opaque=over_whiteout or in_merged))
    return done(replace(container, upper=upper))


def do_rmdir(container: Container, op: Rmdir) -> Transition:
    """``rmdir`` [RMDIR-1][RMDIR-2][WHITEOUT-2]."""
    resolved = resolve(container, op.path, follow=False)
    if isinstance(resolved, str):
        return failed(container, resolved)
    # CHECK
    found = resolved.found
    if resolved.name == "":
        return failed(container, "EBUSY")
    if found is None:
        return failed(container, "ENOENT")
    if not found.is_dir:
        return failed(container, "ENOTDIR")
    if not is_empty_dir(container, found):
        return failed(container, "ENOTEMPTY")
    return done(remove_visible(container, resolved.parent, found))


def do_unlink(container: Container, op: Unlink) -> Transition:
    """``unlink`` [UNLINK-1][WHITEOUT-2]."""
    resolved = resolve(container, op.path, follow=False)
    if isinstance(resolved, str):
        return failed(container, resolved)
    found = resolved.found
    if resolved.name == "":
        return failed(container, "EISDIR")
    if found is None:
        return failed(container, "ENOENT")
    if found.is_dir:
        return failed(container, "EISDIR")
    return done(remove_visible(container, resolved.parent, found))


def do_symlink(container: Container, op: Symlink) -> Transition:
    """``symlink`` [SYMLINK-1][OP-3][OP-4]."""
    if op.target == "":
        return failed(container, "ENOENT")
    point = creation_point(container, op.path)
    if isinstance(point, str):
        return failed(container, point)
    container = copy_up_parents(container, point.path)
    _, gid = inherited(point.parent, 0, is_dir=False)
    upper = new_name(container.upper, point.path, SymlinkInode(op.target, 0, gid, touched=True))
    return done(replace(container, upper=upper))


def do_link(container: Container, op: Link) -> Transition:
    """``link``: the source is copied up first [LINK-1][COPYUP-6][COPYUP-5]."""
    # RESOLVE
    source = resolve_final(container, op.src, follow=False)
    if isinstance(source, str):
        return failed(container, source)
    point = creation_point(container, op.dst)
    if isinstance(point, str):
        return failed(container, point)
    # CHECK
    if source.is_dir:
        return failed(container, "EPERM")
    # COPY-UP
    container, source = copy_up(container, source)
    container = copy_up_parents(container, point.path)
    # APPLY
    ino = upper_name(container, source.path).ino
    return done(replace(container, upper=link(container.upper, point.path, ino)))


def do_chmod(container: Container, op: Chmod) -> Transition:
    """``chmod``: a metadata change, so a copy-up [CHMOD-1][COPYUP-6]."""
    found = resolve_final(container, op.path, follow=True)
    if isinstance(found, str):
        return failed(container, found)
    container, found = copy_up(container, found)
    return done(set_attributes(container, found, mode=op.mode & 0o7777))


def do_chown(container: Container, op: Chown) -> Transition:
    """``lchown``: copies up; a file loses set-user-ID, and set-group-ID
    when it is group-executable [CHOWN-1][COPYUP-6]."""
    found = resolve_final(container, op.path, follow=False)
    if isinstance(found, str):
        return failed(container, found)
    container, found = copy_up(container, found)
    return done(set_attributes(container, found, uid=op.uid, gid=op.gid, owner_change=True))


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


def do_rename(container: Container, op: Rename) -> Transition:
    """``rename`` [RENAME-1][RENAME-2][RENAME-3][RENAME-4][RENAME-5][RENAME-6][RENAME-7][REDIRECT-3]."""
    # RESOLVE
    source = resolve(container, op.src, follow=False)
    if isinstance(source, str):
        return failed(container, source)
    target = resolve(container, op.dst, follow=False)
    if isinstance(target, str):
        return failed(container, target)
    # CHECK: the walk's own errors, then the ancestry traps [RENAME-1]
    if source.name == "" or target.name == "":
        return failed(container, "EBUSY")
    moving = source.found
    if moving is None:
        return failed(container, "ENOENT")
    if is_inside(target.parent.path, source.path) or target.parent.path == source.path:
        return failed(container, "EINVAL")
    if is_inside(source.parent.path, target.path) or source.parent.path == target.path:
        return failed(container, "ENOTEMPTY")
    # CHECK: the kinds of source and target [RENAME-2][RENAME-4]
    replaced = target.found
    if replaced is not None:
        if same_inode(moving, replaced):
            return done(container)
        if moving.is_dir and not replaced.is_dir:
            return failed(container, "ENOTDIR")
        if not moving.is_dir and replaced.is_dir:
            return failed(container, "EISDIR")
    # CHECK: overlayfs's own refusals [RENAME-3]
    if moving.is_dir and moving.has_lower and not container.features.redirect_dir:
        return failed(container, "EXDEV")
    if replaced is not None and replaced.is_dir and replaced.has_lower and not is_empty_dir(container, replaced):
        return failed(container, "ENOTEMPTY")
    # COPY-UP [RENAME-6]
    needs_whiteout = lower_positive(container, source.parent, moving)
    had_lower = moving.is_dir and moving.has_lower
    container, moving = copy_up(container, moving)
    container = copy_up_parents(container, target.path)
    container = mark_moving_dir(container, moving.path, had_lower, source, target)
    # CHECK: the writable layer's own rename refuses a non-empty directory,
    # after the copy-up and the marks above [RENAME-7]
    if replaced is not None and replaced.is_dir and not is_empty_dir(container, replaced):
        return Transition(container, "ENOTEMPTY")
    # APPLY [RENAME-6]
    upper = container.upper
    if upper.get(target.path) is not None:
        upper = remove(upper, target.path)
    upper = move(upper, moving.path, target.path)
    if needs_whiteout:
        upper = put(upper, moving.path, Whiteout())
    return done(replace(container, upper=upper))


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
    node = container.upper.get(path)
    assert isinstance(node, Dir)
    existing = node.redirect
    if existing is not None and (existing.startswith("/") or same_dir):
        return existing
    if same_dir:
        return name_of(path)
    parts: list[str] = []
    current = path
    while current != ROOT:
        above = container.upper.get(current)
        step_name = above.redirect if isinstance(above, Dir) and above.redirect else name_of(current)
        if step_name.startswith("/"):
            return step_name + "".join("/" + part for part in parts)
        parts.insert(0, step_name)
        current = parent_of(current)
    return "/" + "/".join(parts)


def target_parent_merged(container: Container, target: Resolved) -> bool:
    """True if the directory receiving a rename has image-layer copies.

    A directory moved into such a directory is made opaque, so that a
    same-named directory below cannot show through it [RENAME-5].
    """
    parent = lookup(container, target.parent.path)
    return parent is not None and parent.has_lower


def same_inode(one: Found, other: Found) -> bool:
    """True if two names are one upper inode (rename between them is a no-op).

    With ``index`` off, names of one image-layer inode are distinct objects
    in the merged view [RENAME-4].
    """
    return one.path == other.path or (
        one.in_upper
        and other.in_upper
        and isinstance(one.node, Name)
        and isinstance(other.node, Name)
        and one.node.ino == other.node.ino
    )


def step(container: Container, op: Op) -> Transition:
    """The outcome of ``op`` on ``container`` and the container after it."""
    match op:
        case Create():
            return do_create(container, op)
        case Open():
            return do_open(container, op)
        case Write():
            return do_write(container, op)
        case Append():
            return do_append(container, op)
        case Truncate():
            return do_truncate(container, op)
        case Read():
            return do_read(container, op)
        case Stat():
            return do_stat(container, op)
        case Readdir():
            return do_readdir(container, op)
        case Readlink():
            return do_readlink(container, op)
        case Mkdir():
            return do_mkdir(container, op)
        case Rmdir():
            return do_rmdir(container, op)
        case Unlink():
            return do_unlink(container, op)
        case Rename():
            return do_rename(container, op)
        case Symlink():
            return do_symlink(container, op)
        case Link():
            return do_link(container, op)
        case Chmod():
            return do_chmod(container, op)
        case Chown():
            return do_chown(container, op)
