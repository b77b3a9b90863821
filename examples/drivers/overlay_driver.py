#!/usr/bin/env python3
"""A cowspec-driver/1 program for the kernel's overlayfs, in plain Python 3 (standard library only).

    cowspec check --driver "exec:python3 examples/drivers/overlay_driver.py" TRACE.json
    cowspec check --driver "exec:python3 examples/drivers/overlay_driver.py --levels=layer" TRACE.json

It serves the filesystem level (docs/formats/driver-protocol.md): each
session lays the layers out in directories the way Docker's overlay2 driver
stores them (whiteouts as 0/0 character devices, opaque directories marked
with the trusted.overlay.opaque xattr), mounts an overlay over them with an
empty upper directory, and runs every op as root with umask 0 in a child
chrooted into the merged directory, so absolute symlinks resolve inside the
container. It needs root; everything it mounts lives in a private mount
namespace of its own, each session on a tmpfs, and goes when it exits.

It also serves the layer level's ``commit`` (not ``flatten``): the same
session runs the ops, then its upper directory is archived as Docker's
overlay2 driver commits a container. ``--levels=layer`` declares the layer
level alone, so that cowspec runs a trace as a commit; ``--bug=NAME`` plants
a bug for the tests to find: ``commit-drops-opaque`` leaves out the opaque
markers of a commit.
"""

import base64
import ctypes
import ctypes.util
import errno
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import tempfile

PROTOCOL = "cowspec-driver/1"
OPAQUE = "trusted.overlay.opaque"
CLONE_NEWNS, MS_REC, MS_PRIVATE, MNT_DETACH = 0x00020000, 0x4000, 1 << 18, 2
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def check(result, what):
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def private_scratch():
    """Enter a private mount namespace and make a directory to work in; its path, or why not."""
    if os.geteuid() != 0:
        return None, "needs root to mount overlayfs"
    with open("/proc/filesystems") as table:
        if "overlay" not in table.read().split():
            return None, "the kernel has no overlay filesystem"
    try:
        check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    except OSError as error:
        return None, str(error)
    return tempfile.mkdtemp(prefix="overlay-driver-"), None


def unmount(target):
    if libc.umount2(target.encode(), 0) != 0:
        check(libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


# -- laying out a layer ----------------------------------------------------------


def lay_out(entries, top):
    """Write one layer (cowspec-trace/1 entries) into directory ``top`` in overlay2's on-disk form."""
    os.makedirs(top)

    def parents(path):
        parts = path.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            real = top + "/" + "/".join(parts[:depth])
            if not os.path.isdir(real):
                os.mkdir(real, 0o755)

    dirs = []
    for entry in sorted(entries, key=lambda each: 0 if each["path"] == "/" else each["path"].count("/")):
        path, kind = entry["path"], entry["type"]
        real = top if path == "/" else top + path
        parents(path)
        uid, gid = entry.get("uid", 0), entry.get("gid", 0)
        if kind == "dir":
            if path != "/" and not os.path.isdir(real):
                os.mkdir(real, 0o755)
            dirs.append(entry)
        elif kind == "file":
            with open(real, "wb") as handle:
                handle.write(base64.b64decode(entry.get("data", "")))
            os.chown(real, uid, gid)
            os.chmod(real, entry.get("mode", 0o644))
        elif kind == "symlink":
            os.symlink(entry["target"], real)
            os.lchown(real, uid, gid)
        elif kind == "whiteout":
            os.mknod(real, stat.S_IFCHR, os.makedev(0, 0))
    links = [entry for entry in entries if entry["type"] == "hardlink"]
    while links:  # a hardlink may name another one: link those whose target is there, until all are
        waiting = [entry for entry in links if not os.path.lexists(top + entry["target"])]
        if len(waiting) == len(links):
            raise ValueError(f"hardlink {links[0]['path']} names nothing in its layer")
        for entry in links:
            if entry not in waiting:
                parents(entry["path"])
                os.link(top + entry["target"], top + entry["path"], follow_symlinks=False)
        links = waiting
    for entry in reversed(dirs):  # modes last, so a read-only directory was still writable while filled
        real = top if entry["path"] == "/" else top + entry["path"]
        os.chown(real, entry.get("uid", 0), entry.get("gid", 0))
        os.chmod(real, entry.get("mode", 0o755))
        if entry.get("opaque"):
            os.setxattr(real, OPAQUE, b"y")


# -- observing ---------------------------------------------------------------------


def walk(top):
    """(path in the container, real path, lstat) of everything below ``top``; a name lstat cannot find is skipped."""
    pending = [("", top)]
    while pending:
        logical, real = pending.pop()
        for name in os.listdir(real):
            child, child_real = logical + "/" + name, os.path.join(real, name)
            try:
                info = os.lstat(child_real)
            except FileNotFoundError:
                continue
            yield child, child_real, info
            if stat.S_ISDIR(info.st_mode):
                pending.append((child, child_real))


def describe(path, real, info, upper):
    """One entry of "merged" (upper false) or "upper" (upper true), as cowspec-trace-result/1 writes it."""
    mode, owner = info.st_mode, {"uid": info.st_uid, "gid": info.st_gid}
    if stat.S_ISDIR(mode):
        entry = {"path": path, "type": "dir", "mode": stat.S_IMODE(mode), **owner}
        if upper:
            try:
                entry["opaque"] = os.getxattr(real, OPAQUE, follow_symlinks=False) == b"y"
            except OSError:
                entry["opaque"] = False
        return entry
    if stat.S_ISLNK(mode):
        return {"path": path, "type": "symlink", **owner, "target": os.readlink(real)}
    if stat.S_ISREG(mode):
        digest = hashlib.sha256()
        with open(real, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 16), b""):
                digest.update(block)
        entry = {"path": path, "type": "file", "mode": stat.S_IMODE(mode), **owner, "size": info.st_size}
        entry["sha256"] = digest.hexdigest()
        if not upper:
            entry["nlink"] = info.st_nlink
        return entry
    if upper and stat.S_ISCHR(mode) and info.st_rdev == 0:
        return {"path": path, "type": "whiteout"}
    return {"path": path, "type": "other", "mode": stat.S_IMODE(mode), **owner}


def tree(top, upper):
    return sorted((describe(*each, upper) for each in walk(top)), key=lambda entry: entry["path"])


def docker_size(top):
    """Docker's directory.Size: apparent bytes of everything but directories, each inode once."""
    seen, total = set(), 0
    for _, _, info in walk(top):
        if not stat.S_ISDIR(info.st_mode) and info.st_size and info.st_ino not in seen:
            seen.add(info.st_ino)
            total += info.st_size
    return total


# -- committing: the upper directory as Docker's overlay2 archives it ---------------


def commit_tar(upper, bugs=()):
    """The upper directory as an uncompressed layer tar, in Docker's overlay2 form.

    Members come parents first (paths compared component by component);
    a whiteout (a 0/0 character device) becomes an empty ``.wh.NAME`` file,
    an opaque directory is followed by its ``.wh..wh..opq`` marker, and the
    names of one inode are one file and hardlinks to the first of them.
    Owners and modes are kept; times are not part of the contract.
    """
    found = sorted(walk(upper), key=lambda each: each[0].replace("/", "\0"))
    first_name = {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, real, info in found:
            name, mode = path[1:], info.st_mode
            member = tarfile.TarInfo(name)
            member.mode, member.uid, member.gid = stat.S_IMODE(mode), info.st_uid, info.st_gid
            member.mtime = int(info.st_mtime)
            content = None
            if stat.S_ISCHR(mode) and info.st_rdev == 0:  # a whiteout
                parent, _, base = name.rpartition("/")
                member = tarfile.TarInfo((parent + "/" if parent else "") + ".wh." + base)
                member.mode = 0o600
            elif stat.S_ISDIR(mode):
                member.type = tarfile.DIRTYPE
            elif (info.st_dev, info.st_ino) in first_name:
                member.type, member.linkname = tarfile.LNKTYPE, first_name[(info.st_dev, info.st_ino)]
            elif stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                first_name[(info.st_dev, info.st_ino)] = name
                if stat.S_ISLNK(mode):
                    member.type, member.linkname = tarfile.SYMTYPE, os.readlink(real)
                else:
                    with open(real, "rb") as handle:
                        content = handle.read()
                    member.size = len(content)
            else:
                member.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                if stat.S_ISFIFO(mode):
                    member.type = tarfile.FIFOTYPE
                member.devmajor, member.devminor = os.major(info.st_rdev), os.minor(info.st_rdev)
            archive.addfile(member, io.BytesIO(content) if content is not None else None)
            if stat.S_ISDIR(mode) and "commit-drops-opaque" not in bugs:
                try:
                    opaque = os.getxattr(real, OPAQUE, follow_symlinks=False) == b"y"
                except OSError:
                    opaque = False
                if opaque:
                    marker = tarfile.TarInfo(name + "/.wh..wh..opq")
                    marker.mode = 0o600
                    archive.addfile(marker)
    return buffer.getvalue()


# -- performing an op, in a child chrooted into the merged directory ---------------


def with_fd(path, flags, use):
    fd = os.open(path, flags)
    try:
        return use(fd)
    finally:
        os.close(fd)


def stat_value(path):
    info = os.lstat(path)
    kind = "dir" if stat.S_ISDIR(info.st_mode) else "symlink" if stat.S_ISLNK(info.st_mode) else "file"
    value = {"type": kind, "mode": stat.S_IMODE(info.st_mode), "uid": info.st_uid, "gid": info.st_gid}
    if kind != "dir":
        value["size"] = info.st_size
    if kind == "file":
        value["nlink"] = info.st_nlink
    return value


def data(op):
    return base64.b64decode(op["data"])


FLAGS = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}
CALLS = {  # each op of cowspec-trace/1 as the system call it stands for
    "create": lambda op: os.close(os.open(op["path"], os.O_CREAT | os.O_EXCL | os.O_WRONLY, op["mode"])),
    "open": lambda op: with_fd(op["path"], FLAGS[op["flags"]], lambda fd: None),
    "write": lambda op: with_fd(op["path"], os.O_WRONLY, lambda fd: os.pwrite(fd, data(op), op["offset"])),
    "append": lambda op: with_fd(op["path"], os.O_WRONLY | os.O_APPEND, lambda fd: os.write(fd, data(op))),
    "truncate": lambda op: os.truncate(op["path"], op["size"]),
    "read": lambda op: with_fd(
        op["path"], os.O_RDONLY, lambda fd: base64.b64encode(b"".join(iter(lambda: os.read(fd, 1 << 16), b""))).decode()
    ),
    "stat": lambda op: stat_value(op["path"]),
    "readdir": lambda op: sorted(os.listdir(op["path"])),
    "readlink": lambda op: os.readlink(op["path"]),
    "mkdir": lambda op: os.mkdir(op["path"], op["mode"]),
    "rmdir": lambda op: os.rmdir(op["path"]),
    "unlink": lambda op: os.unlink(op["path"]),
    "rename": lambda op: os.rename(op["src"], op["dst"]),
    "symlink": lambda op: os.symlink(op["target"], op["path"]),
    "link": lambda op: os.link(op["src"], op["dst"], follow_symlinks=False),
    "chmod": lambda op: os.chmod(op["path"], op["mode"]),
    "chown": lambda op: os.lchown(op["path"], op["uid"], op["gid"]),
}
VALUED = ("read", "stat", "readdir", "readlink")


def perform(root, op):
    """Run ``op`` in a child chrooted into ``root``, as root with umask 0; its result item."""
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reading)
        try:
            os.chroot(root)
            os.chdir("/")
            os.umask(0)
            try:
                value = CALLS[op["op"]](op)
                reply = {"ok": True, "value": value} if op["op"] in VALUED else {"ok": True}
            except OSError as error:
                reply = {"errno": errno.errorcode.get(error.errno, f"E{error.errno}")}
            os.write(writing, json.dumps(reply).encode())
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    if not answer:
        raise RuntimeError(f"the container process failed on {json.dumps(op)}")
    return json.loads(answer)


# -- the protocol ----------------------------------------------------------------------


class Session:
    def __init__(self, scratch, number, layers, features):
        self.home = os.path.join(scratch, f"s{number}")
        self.lowers = [os.path.join(self.home, f"l{index}") for index in range(max(len(layers), 1))]
        self.upper, self.merged = os.path.join(self.home, "upper"), os.path.join(self.home, "merged")
        self.mounted = self.on_tmpfs = False
        try:
            self.mount(layers, features)
        except BaseException:
            self.close()
            raise

    def mount(self, layers, features):
        os.mkdir(self.home)  # a tmpfs of its own, so that closing is two unmounts however deep the trees
        check(libc.mount(b"overlay-driver", self.home.encode(), b"tmpfs", 0, b"mode=0755"), "mount tmpfs")
        self.on_tmpfs = True
        for index, lower in enumerate(self.lowers):
            lay_out(layers[index] if index < len(layers) else [], lower)
        work = os.path.join(self.home, "work")
        for directory in (self.upper, work, self.merged):
            os.mkdir(directory, 0o755)
        on = {name: "on" if features.get(name) else "off" for name in ("redirect_dir", "index", "metacopy")}
        options = f"lowerdir={':'.join(reversed(self.lowers))},upperdir={self.upper},workdir={work}," + ",".join(
            f"{name}={value}" for name, value in on.items()
        )
        check(libc.mount(b"overlay", self.merged.encode(), b"overlay", 0, options.encode()), "mount overlay")
        self.mounted = True

    def observe(self):
        size = docker_size(self.upper)
        return {
            "merged": tree(self.merged, upper=False),
            "upper": tree(self.upper, upper=True),
            "sizes": {"size": size, "virtual_size": size + sum(docker_size(lower) for lower in self.lowers)},
        }

    def close(self):
        if self.mounted:
            unmount(self.merged)
            self.mounted = False
        if self.on_tmpfs:
            unmount(self.home)
            self.on_tmpfs = False
        if os.path.isdir(self.home):
            os.rmdir(self.home)


def commit(scratch, number, request, bugs):
    """Run the request's ops in a session of its own, and archive its upper directory, base64."""
    session = Session(scratch, number, request["layers"], request.get("features", {}))
    try:
        for op in request.get("ops", []):
            perform(session.merged, op)  # an op that fails is part of the run, as in a trace
        return {"tar": base64.b64encode(commit_tar(session.upper, bugs)).decode()}
    finally:
        session.close()


def serve(scratch, reason, levels, bugs):
    session, opened = None, 0
    for line in sys.stdin:
        request = json.loads(line)
        kind = request.get("request")
        try:
            if kind == "hello":
                reply = {"protocol": PROTOCOL, "name": "python-overlay", "version": "1"}
                if reason:
                    reply["unavailable"] = reason
                else:
                    reply.update(levels=levels, features=["redirect_dir"], calls=["commit"])
            elif kind == "open":
                if session:
                    session.close()
                session, opened = None, opened + 1
                session = Session(scratch, opened, request["layers"], request.get("features", {}))
                reply = {"ok": True}
            elif kind == "commit" and "layer" in levels:
                opened += 1  # a session of its own: an open filesystem session is left as it is
                reply = commit(scratch, opened, request, bugs)
            elif kind == "perform":
                reply = perform(session.merged, request["op"])
            elif kind == "observe":
                reply = session.observe()
            elif kind in ("close", "bye"):
                if session:
                    session.close()
                session, reply = None, {"ok": True}
            else:
                reply = {"error": f"unknown request {kind}"}
        except Exception as error:  # the driver failed: say so in one line, and go on serving
            reply = {"error": " ".join(f"{type(error).__name__}: {error}".split())}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if kind == "bye":
            break
    if session:
        session.close()


def options(arguments):
    """The levels to declare (``--levels=filesystem,layer``) and the bugs to plant (``--bug=NAME``, repeatable)."""
    levels, bugs = ["filesystem", "layer"], set()
    for argument in arguments:
        name, _, value = argument.partition("=")
        if name == "--levels" and value:
            levels = value.split(",")
        elif name == "--bug" and value in BUGS:
            bugs.add(value)
        else:
            sys.exit(
                f"overlay_driver: unknown argument {argument!r} (--levels=filesystem,layer, --bug={'|'.join(BUGS)})"
            )
    return levels, bugs


BUGS = ("commit-drops-opaque",)


def main():
    levels, bugs = options(sys.argv[1:])
    scratch, reason = private_scratch()
    try:
        serve(scratch, reason, levels, bugs)
    finally:
        if scratch:
            os.rmdir(scratch)


if __name__ == "__main__":
    main()
