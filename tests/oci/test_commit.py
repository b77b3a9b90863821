"""Chapter 13: commit, in the model and against a real ``docker commit``."""

import base64
import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from cowcheck.drivers.engines import Dockerd
from cowcheck.drivers.protocol import DriverUnavailable
from cowcheck.images import read_image
from cowspec.formats.oracle import run_model
from cowspec.formats.trace import decode_trace
from cowspec.fs.paths import ROOT
from cowspec.fs.stack import Container
from cowspec.oci.commit import commit, commit_entries
from cowspec.oci.diff import docker_diff
from cowspec.oci.layer_tar import LayerTar, decode_layer, encode_layer
from tests.support import d, f, op

BASE = [
    d("/data"), d("/data/keep"), f("/data/keep/a", "one\n"), f("/data/keep/b", "bee\n"), f("/data/keep/c", "sea\n"),
    d("/data/gone"), f("/data/gone/b", "two\n"),
]  # fmt: skip

# Each step: the shell command run in a real container, and the trace op it stands for.
STEPS = [
    ("mkdir -m 750 /data/new", op("mkdir", path="/data/new", mode=0o750)),
    ("printf x >> /data/keep/a", op("append", path="/data/keep/a", data="x")),
    ("rm /data/gone/b", op("unlink", path="/data/gone/b")),
    ("rmdir /data/gone", op("rmdir", path="/data/gone")),
    ("mkdir /data/gone", op("mkdir", path="/data/gone", mode=0o755)),
    ("ln /data/keep/a /data/new/hard", op("link", src="/data/keep/a", dst="/data/new/hard")),
    ("ln -s ../keep/a /data/new/sym", op("symlink", target="../keep/a", path="/data/new/sym")),
    ("chmod 600 /data/keep/b", op("chmod", path="/data/keep/b", mode=0o600)),
    ("mv /data/keep/c /data/new/c", op("rename", src="/data/keep/c", dst="/data/new/c")),
    ("printf '' >> /data/new/empty", op("create", path="/data/new/empty", mode=0o644)),
    ("chown 7:8 /data/new", op("chown", path="/data/new", uid=7, gid=8)),
]


def model_container() -> Container:
    trace = decode_trace({"format": "cowspec-trace/1", "layers": [BASE], "ops": [step for _, step in STEPS]})
    outcomes, container = run_model(trace)
    assert all(not isinstance(outcome, str) for each in outcomes for outcome in each), outcomes
    return container


def model_commit() -> LayerTar:
    return commit(model_container())


def shape(layer: LayerTar) -> tuple[list[tuple[object, ...]], frozenset[str], frozenset[str]]:
    """What a commit is compared on: no times, the root left out."""
    entries: list[tuple[object, ...]] = [
        (each.path, each.kind, each.mode if each.kind != "symlink" else None, each.uid, each.gid, each.sha256 if
         each.kind == "file" else None, each.link)
        for each in layer.entries
        if each.path != ROOT
    ]  # fmt: skip
    return entries, layer.whiteouts, layer.opaque


def test_commit_archives_the_writable_layer() -> None:
    """[COMMIT-1] Copied-up parents, whole files, whiteouts, opaque markers, one file per inode."""
    layer = model_commit()
    by_path = {each.path: each for each in layer.entries}
    # gone/b's whiteout went with gone's upper copy when gone was removed.
    assert layer.whiteouts == {"/data/keep/c"}
    assert layer.opaque == {"/data/gone"}
    assert by_path["/data/keep/a"].data == b"one\nx" and by_path["/data/new/hard"].kind == "hardlink"
    assert by_path["/data/new/hard"].link == "/data/keep/a"
    assert by_path["/data/keep/b"].data == b"bee\n" and by_path["/data/keep/b"].mode == 0o600
    assert (by_path["/data/new"].uid, by_path["/data/new"].mode) == (7, 0o750)
    assert set(by_path) == {
        "/data",
        "/data/gone",
        "/data/keep",
        "/data/keep/a",
        "/data/keep/b",
        "/data/new",
        "/data/new/c",
        "/data/new/empty",
        "/data/new/hard",
        "/data/new/sym",
    }


def test_commit_entries_are_the_writable_layer_in_the_upper_shape() -> None:
    """[COMMIT-1] The model's commit as JSON: ``upper``'s shape, one file per inode and hardlinks to it."""
    entries = commit_entries(model_commit())
    by_path = {(each["path"], each["type"]): each for each in entries}
    assert [each["path"] for each in entries] == sorted(str(each["path"]) for each in entries)
    assert by_path["/data/new/hard", "hardlink"] == {"path": "/data/new/hard", "type": "hardlink",
                                                     "target": "/data/keep/a"}  # fmt: skip
    assert by_path["/data/keep/c", "whiteout"] == {"path": "/data/keep/c", "type": "whiteout"}
    assert by_path["/data/gone", "dir"]["opaque"] is True and by_path["/data/keep", "dir"]["opaque"] is False
    assert by_path["/data/new", "dir"] == {"path": "/data/new", "type": "dir", "mode": 0o750, "uid": 7, "gid": 8,
                                           "opaque": False}  # fmt: skip
    assert by_path["/data/new/sym", "symlink"] == {"path": "/data/new/sym", "type": "symlink", "uid": 0, "gid": 0,
                                                   "target": "../keep/a"}  # fmt: skip
    appended = by_path["/data/keep/a", "file"]
    assert (appended["size"], appended["sha256"]) == (5, hashlib.sha256(b"one\nx").hexdigest())
    assert "mtime" not in appended and "nlink" not in appended
    # The same layer written as a tar and read back gives the same entries.
    assert commit_entries(decode_layer(encode_layer(model_commit()))) == entries


def test_commit_entries_of_a_real_tar() -> None:
    """[COMMIT-1] A tar as Docker writes one: markers become whiteouts and opaque flags; devices keep their type."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in [("d", tarfile.DIRTYPE, b""), ("d/.wh..wh..opq", tarfile.REGTYPE, b""),
                                 ("d/f", tarfile.REGTYPE, b"hi"), ("d/.wh.gone", tarfile.REGTYPE, b""),
                                 ("d/g", tarfile.LNKTYPE, b""), ("e/.wh..wh..opq", tarfile.REGTYPE, b""),
                                 ("dev", tarfile.CHRTYPE, b"")]:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mtime, info.uid = kind, len(data), 12345, 3
            info.mode = 0o700 if kind == tarfile.DIRTYPE else 0o640
            if kind == tarfile.LNKTYPE:
                info.linkname = "d/f"
            if kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info, io.BytesIO(data))
    assert commit_entries(decode_layer(buffer.getvalue())) == [
        {"path": "/d", "type": "dir", "mode": 0o700, "uid": 3, "gid": 0, "opaque": True},
        {"path": "/d/f", "type": "file", "mode": 0o640, "uid": 3, "gid": 0, "size": 2,
         "sha256": hashlib.sha256(b"hi").hexdigest()},
        {"path": "/d/g", "type": "hardlink", "target": "/d/f"},
        {"path": "/d/gone", "type": "whiteout"},
        {"path": "/dev", "type": "char", "mode": 0o640, "uid": 3, "gid": 0, "device": [1, 3]},
        {"path": "/e", "type": "dir", "opaque": True},
    ]  # fmt: skip


def test_commit_equals_docker_commit(tmp_path: Path) -> None:
    """[COMMIT-1][DIFF-1] The same steps in a real container: ``docker commit`` and ``docker diff`` agree."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        if os.environ.get("CI") == "true":
            pytest.fail("busybox-static is not installed")
        pytest.skip("busybox-static is not installed")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        info = tarfile.TarInfo("bin/sh")
        info.type, info.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(info)
        for entry in BASE:
            info = tarfile.TarInfo(entry["path"][1:])
            data = b""
            if entry["type"] == "dir":
                info.type = tarfile.DIRTYPE
            else:
                data = base64.b64decode(entry["data"])
            info.mode, info.size = entry["mode"], len(data)
            tar.addfile(info, io.BytesIO(data))
    try:
        with Dockerd() as docker:
            assert docker.docker("import", "-", "cowspec/commit-base:1", stdin=buffer.getvalue()).returncode == 0
            script = " && ".join(command for command, _ in STEPS)
            ran = docker.docker("run", "--name", "cowspec-commit", "--network", "none", "cowspec/commit-base:1",
                                "/bin/busybox", "sh", "-c", script)  # fmt: skip
            assert ran.returncode == 0, ran.stderr.decode()
            diffed = docker.docker("diff", "cowspec-commit")
            assert diffed.returncode == 0
            assert docker.docker("commit", "cowspec-commit", "cowspec/committed:1").returncode == 0
            saved = tmp_path / "committed.tar"
            assert docker.docker("save", "-o", str(saved), "cowspec/committed:1").returncode == 0
    except DriverUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))
    layers = read_image(str(saved))
    assert len(layers) == 2
    # The stream reader keeps hashes, not bytes; compare on hashes.
    theirs = layers[-1].layer
    ours = model_commit()
    assert shape(theirs) == shape(ours)
    # docker diff of the same container [DIFF-1][DIFF-2]
    reported = {tuple(line.split(" ", 1)) for line in diffed.stdout.decode().splitlines() if line.strip()}
    allowed = docker_diff(model_container())
    certain = {(change.kind, change.path) for change in allowed if change.certain}
    possible = {(change.kind, change.path) for change in allowed}
    assert certain <= reported <= possible, (sorted(reported), allowed)
    assert len(reported) == 12
