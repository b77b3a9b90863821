"""Images cut, damaged, oversized or lying: exit 0, or exit 2 and one line; both readers the same [TAR-3][TAR-5].

Hypothesis builds a small valid image (a ``docker save`` tarball, plain or
gzip, or an OCI layout of plain or gzip layers), damages it one way, and
runs the real command line on it in a child process whose address space is
capped, once with the default reader and once with ``--reader stream``.
"""

import gzip
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cowcheck.images import docker_archive, write_oci_layout
from cowspec.oci.layer_tar import LayerTar, TarEntry, encode_layer

CI = os.environ.get("CI") == "true"
MEMORY = 2 << 30
"""The address space each run may use: far below what the images in the issue took (4 GiB and more)."""
NUMBER_FIELDS = [(100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (329, 8), (337, 8)]


def fixed_checksum(header: bytes) -> bytes:
    block = bytearray(header)
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}".encode() + b"\0 "
    return bytes(block)


def headers(archive: bytes) -> list[int]:
    return [at for at in range(0, len(archive) - 511, 512) if archive[at + 257 : at + 262] == b"ustar"]


@st.composite
def layers(draw: st.DrawFn) -> list[bytes]:
    count = draw(st.integers(1, 2))
    made = []
    for index in range(count):
        data = draw(st.binary(max_size=700))
        entries = (
            TarEntry("/d", "dir", 0o755),
            TarEntry(f"/d/f{index}", "file", data=data),
            TarEntry("/d/link", "symlink", link=f"f{index}"),
            TarEntry("/" + "n" * draw(st.integers(1, 160)), "file", data=b"x"),
        )
        made.append(encode_layer(LayerTar(entries, frozenset({"/gone"}) if index else frozenset())))
    return made


def rewrite_number(archive: bytes, draw: st.DrawFn) -> bytes:
    """A header's number (or type) rewritten, its checksum made right again: a lie, not corruption."""
    starts = headers(archive)
    if not starts:
        return archive
    at = draw(st.sampled_from(starts))
    block = bytearray(archive[at : at + 512])
    if draw(st.booleans()):
        block[156:157] = draw(st.sampled_from([b"x", b"L", b"K", b"g", b"S", b"5", b"3", b"1", b"2", b"Z"]))
    else:
        offset, width = draw(st.sampled_from(NUMBER_FIELDS))
        value = draw(
            st.sampled_from(
                [
                    b"\x80" + (1 << 40).to_bytes(width - 1, "big"),  # a terabyte, in base-256
                    b"\xff" * width,
                    b"9z9z".ljust(width, b"\0"),
                    f"{7 * 8 ** (width - 2):0{width - 1}o}".encode() + b"\0",
                    b"0001000".ljust(width, b"\0"),
                ]
            )
        )
        block[offset : offset + width] = value[:width]
    return archive[:at] + fixed_checksum(bytes(block)) + archive[at + 512 :]


def damage(data: bytes, draw: st.DrawFn) -> bytes:
    """``data`` cut at any offset, with bits flipped, or with a header number rewritten."""
    how = draw(st.sampled_from(["cut", "flip", "number"]))
    if how == "cut" or not data:
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if how == "flip":
        changed = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            changed[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(changed)
    return rewrite_number(data, draw)


def put(layout: Path, data: bytes) -> dict[str, object]:
    name = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / name).write_bytes(data)
    return {"digest": "sha256:" + name, "size": len(data)}


def damage_layout(layout: Path, draw: st.DrawFn) -> None:
    """An OCI layout lying in one of the ways the issue lists."""
    index = json.loads((layout / "index.json").read_text())
    described = index["manifests"][0]
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / described["digest"].split(":")[1]).read_text())
    layer = blobs / manifest["layers"][0]["digest"].split(":")[1]
    how = draw(
        st.sampled_from(
            [
                "missing",
                "dev-zero",
                "outside",
                "fifo",
                "media-type",
                "no-media-type",
                "size",
                "digest",
                "json",
                "deep",
                "bomb",
                "layer",
                "index-link",
            ]
        )
    )
    if how == "missing":
        layer.unlink()
    elif how in ("dev-zero", "outside"):
        layer.unlink()
        layer.symlink_to("/dev/zero" if how == "dev-zero" else "/etc/hostname")
    elif how == "fifo":
        layer.unlink()
        os.mkfifo(layer)
    elif how == "layer":
        layer.write_bytes(damage(layer.read_bytes(), draw))
    elif how == "index-link":
        (layout / "index.json").unlink()
        (layout / "index.json").symlink_to("/dev/zero")
        return
    elif how == "json":
        text = (layout / "index.json").read_text()
        (layout / "index.json").write_text(text[: draw(st.integers(0, len(text) - 1))])
        return
    elif how == "deep":
        which = draw(st.sampled_from(["index", "config"]))
        nested = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
        if which == "index":
            (layout / "index.json").write_bytes(b'{"manifests":[' + nested + b"]}")
            return
        manifest["config"].update(put(layout, nested))
    else:
        if how == "media-type":
            manifest["layers"][0]["mediaType"] = draw(st.sampled_from(["application/x-unknown", "", "tar+gzip"]))
        elif how == "no-media-type":
            del manifest["mediaType"]
        elif how == "size":
            manifest["layers"][0]["size"] += draw(st.sampled_from([-1, 1, 1 << 40]))
        elif how == "digest":
            manifest["layers"][0]["digest"] = draw(st.sampled_from(["sha256:" + "a" * 64, "md5:00", "sha256:../x"]))
        elif how == "bomb":
            # 64 MiB of zero blocks in 64 kB of gzip: an archive that only ends at its end marker
            bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9, mtime=0)
            manifest["layers"][0].update(put(layout, bomb), mediaType="application/vnd.oci.image.layer.v1.tar+gzip")
    described.update(put(layout, json.dumps(manifest).encode()))
    (layout / "index.json").write_text(json.dumps(index))


def with_links(archive: bytes, how: str) -> bytes:
    """A ``docker save`` whose manifest.json or a layer is a link (to itself, out of the tarball) or a FIFO."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive)) as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for member in source.getmembers():
            handle = source.extractfile(member)
            assert handle is not None, member.name  # docker_archive writes regular files only
            data = handle.read()
            target = member.name == "manifest.json" if how.startswith("manifest") else member.name.endswith(".tar")
            if not target:
                tar.addfile(member, io.BytesIO(data))
                continue
            info = tarfile.TarInfo(member.name)
            if how == "manifest-self":
                info.type, info.linkname = tarfile.SYMTYPE, "manifest.json"
            elif how == "manifest-out":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/hostname"
            elif how == "layer-up":
                info.type, info.linkname = tarfile.SYMTYPE, "../../dev/zero"
            else:
                info.type = tarfile.FIFOTYPE
            tar.addfile(info)
    return out.getvalue()


@st.composite
def images(draw: st.DrawFn) -> tuple[str, str]:
    """A damaged image in a fresh directory: (directory, the IMAGE argument)."""
    archives = draw(layers())
    if draw(st.booleans()):
        at = draw(st.integers(0, len(archives) - 1))
        archives[at] = damage(archives[at], draw)
    # Inside the module's scratch directory: an example Hypothesis drops
    # before the test runs leaves its files there, removed at the end.
    where = tempfile.mkdtemp(dir=SCRATCH[0])
    form = draw(st.sampled_from(["docker", "docker-gzip", "docker-links", "oci", "oci-gzip"]))
    if form.startswith("oci"):
        layout = Path(where) / "layout"
        write_oci_layout(str(layout), archives, gzipped=form == "oci-gzip")
        damage_layout(layout, draw)
        return where, str(layout)
    archive = docker_archive(archives, "fuzz:1")
    if form == "docker-links":
        archive = with_links(archive, draw(st.sampled_from(["manifest-self", "manifest-out", "layer-up", "fifo"])))
    elif form == "docker-gzip":
        archive = gzip.compress(archive, mtime=0)
    if draw(st.booleans()):
        archive = damage(archive, draw)
    path = Path(where) / ("image.tar.gz" if form == "docker-gzip" else "image.tar")
    path.write_bytes(archive)
    return where, str(path)


SCRATCH: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def scratch() -> Iterator[None]:
    """One directory for every image this module makes, removed with all it holds."""
    SCRATCH[:] = [tempfile.mkdtemp(prefix="cowspec-fuzz-")]
    try:
        yield
    finally:
        shutil.rmtree(SCRATCH[0], ignore_errors=True)


def capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def run(command: str, image: str, reader: str) -> tuple[int, bytes, bytes]:
    done = subprocess.run(
        [sys.executable, "-m", "cowcheck.cli", command, "--reader", reader, image],
        capture_output=True,
        timeout=120,
        preexec_fn=capped,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


@settings(
    max_examples=40,
    deadline=None,
    derandomize=CI,
    database=None if CI else settings().database,
    # Each example writes a whole image to disk and draws its mutations byte by byte:
    # drawing is slow (too_slow) and large (data_too_large) by design, not by a bad strategy.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(images(), st.sampled_from(["flatten", "layers"]))
def test_a_damaged_image_is_refused_on_one_line(image: tuple[str, str], command: str) -> None:
    """[TAR-3][TAR-5] exit 0, or exit 2 and one ``cowspec:`` line; no traceback, signal or runaway memory."""
    where, path = image
    try:
        answers = {reader: run(command, path, reader) for reader in ("auto", "stream")}
    finally:
        shutil.rmtree(where, ignore_errors=True)
    for reader, (status, out, err) in answers.items():
        assert b"Traceback" not in err, (reader, err.decode(errors="replace"))
        assert status in (0, 2), (reader, status, err.decode(errors="replace"))
        if status == 2:
            lines = err.decode(errors="replace").splitlines()
            assert len(lines) == 1 and lines[0].startswith("cowspec: "), (reader, lines)
            assert out == b""
    assert answers["auto"] == answers["stream"]
