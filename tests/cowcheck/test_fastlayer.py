"""The fast reader, held to the model's reader.

``cowcheck.fastlayer`` frames tar headers in C and hashes on native threads
(OpenSSL everywhere, the AVX-512 multi-buffer kernel where the CPU has it).
Everything it gives must be what ``cowspec.oci.layer_tar`` gives for the same
bytes: the same records, the same layer values, the same DiffIDs, the same
first error, with every hasher this machine runs, plain, gzip and zstd.
"""

import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path
from typing import Any, cast

import pytest
import zstandard
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cowcheck import fastlayer
from cowcheck.cli.image_commands import rootfs_json, rootfs_json_python
from cowcheck.images import ImageReading, Reader, docker_archive, image_config, write_oci_layout
from cowspec.errors import SpecError
from cowspec.oci.apply import Rootfs, flatten, rootfs_entries
from cowspec.oci.identity import file_digest
from cowspec.oci.layer_tar import (
    NO_DEVICE,
    Content,
    LayerTar,
    Member,
    TarEntry,
    encode_layer,
    iter_members,
    iter_records,
)
from tests.oci.test_layer_tar import archive, layer_values

# The C module fastlayer drives, or None where it is not built. fastlayer does not re-export it
# and it has no stub, so it is read from fastlayer's namespace and typed Any.
NATIVE: Any = vars(fastlayer)["_fastlayer"]
BUILT = NATIVE is not None
needs_build = pytest.mark.skipif(
    not BUILT and os.environ.get("CI") != "true", reason="cowcheck._fastlayer is not built (pip install -e .)"
)


def _flags() -> set[str]:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
        for line in info:
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return set(value.split())
    return set()


AVX512 = {"avx512f", "avx512bw"} <= _flags()
backends = [
    pytest.param("openssl", id="openssl"),
    pytest.param(
        "multibuffer",
        id="multibuffer",
        marks=pytest.mark.skipif(not AVX512, reason="this CPU has no AVX-512: the multi-buffer kernel cannot run"),
    ),
]


def test_the_module_is_built_and_knows_its_cpu() -> None:
    """CI runs the fast reader: a missing build fails there, never skips; multi-buffer runs where AVX-512 is."""
    if not BUILT:
        assert os.environ.get("CI") != "true", "cowcheck._fastlayer did not build"
        pytest.skip("cowcheck._fastlayer is not built (pip install -e .)")
    assert fastlayer.hashers() == (("openssl", "multibuffer") if AVX512 else ("openssl",))
    sha = bool({"sha_ni", "sha2"} & _flags())
    if "COWSPEC_HASHER" not in os.environ:
        chosen = fastlayer.chosen_hasher()
        if not AVX512:
            assert chosen == "openssl"
        elif not sha:  # the multi-buffer kernel is about 3x OpenSSL's software SHA-256 here
            assert chosen == "multibuffer"
        else:  # both SHA instructions and AVX-512: measured, once per process
            assert chosen == fastlayer.measured_hasher() in fastlayer.HASHERS


def test_the_hasher_can_be_forced_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """COWSPEC_HASHER picks a backend this CPU runs, refuses one it does not; describe() names what runs."""
    if not BUILT:
        pytest.skip("cowcheck._fastlayer is not built")
    monkeypatch.setenv("COWSPEC_HASHER", "openssl")
    assert fastlayer.chosen_hasher() == "openssl"
    assert fastlayer.describe().startswith("reader fast (C framing), hasher openssl")
    assert fastlayer.describe("stream").startswith("reader stream")
    monkeypatch.setenv("COWSPEC_HASHER", "sha1")
    with pytest.raises(SpecError, match="COWSPEC_HASHER=sha1"):
        fastlayer.chosen_hasher()
    if not AVX512:
        monkeypatch.setenv("COWSPEC_HASHER", "multibuffer")
        with pytest.raises(SpecError, match="COWSPEC_HASHER=multibuffer"):
            fastlayer.chosen_hasher()


def _digests(buffers: list[Any], backend: str, **options: object) -> list[bytes]:
    assert NATIVE is not None
    result: list[bytes] = NATIVE.sha256_many(buffers, backend=backend, **options)
    return result


@needs_build
@pytest.mark.parametrize("backend", backends)
@settings(max_examples=60, deadline=None)
@given(buffers=st.lists(st.binary(max_size=300), max_size=40), seed=st.integers(0, 2**16))
def test_sha256_many_equals_hashlib(backend: str, buffers: list[bytes], seed: int) -> None:
    """[IDENTITY-1] Every digest is hashlib's, whatever the lengths (padding edges included)."""
    rng = random.Random(seed)
    buffers = buffers + [rng.randbytes(length) for length in (0, 55, 56, 63, 64, 65, 119, 120, 128, 4096)]
    rng.shuffle(buffers)
    assert _digests(buffers, backend) == [hashlib.sha256(each).digest() for each in buffers]
    assert _digests(buffers, backend, long_count=len(buffers) // 2) == [hashlib.sha256(b).digest() for b in buffers]


@needs_build
@pytest.mark.parametrize("backend", backends)
def test_sha256_many_queues_and_threads(backend: str) -> None:
    """Long and short queues and several threads give every digest."""
    rng = random.Random(7)
    buffers = [rng.randbytes(rng.randrange(100_000, 300_000)) for _ in range(5)]
    buffers += [rng.randbytes(rng.randrange(0, 3000)) for _ in range(300)]
    want = [hashlib.sha256(each).digest() for each in buffers]
    for threads in (1, 2, 3):
        assert _digests(buffers, backend, long_count=5, threads=threads) == want
    with pytest.raises(ValueError, match="out of range"):
        _digests(buffers, backend, long_count=len(buffers) + 1)
    with pytest.raises(TypeError):
        _digests([b"bytes", "not bytes"], backend)
    with pytest.raises(ValueError, match="no hashing backend"):
        _digests(buffers, "md5")


def _hasher(backend: str, **options: object) -> Any:
    assert NATIVE is not None
    return NATIVE.Hasher(backend=backend, **options)


@needs_build
@pytest.mark.parametrize("backend", backends)
def test_hasher_takes_buffers_while_it_hashes(backend: str) -> None:
    """Buffers added in batches, long and short, are hashed as they come; waits end; digests are right."""
    rng = random.Random(8)
    hasher = _hasher(backend, threads=2)
    longs = [rng.randbytes(rng.randrange(200_000, 400_000)) for _ in range(6)]
    assert hasher.add(longs, long=True) == 0
    batches = [[rng.randbytes(rng.randrange(0, 5000)) for _ in range(rng.randrange(0, 200))] for _ in range(5)]
    firsts = [hasher.add(batch) for batch in batches]
    assert firsts[0] == 6 and firsts[-1] == 6 + sum(len(batch) for batch in batches[:-1])
    for first, batch in zip(firsts, batches, strict=True):
        hasher.wait(first, first + len(batch))
        got = hasher.digests(first, first + len(batch))
        assert got == b"".join(hashlib.sha256(each).digest() for each in batch)
        assert hasher.digests(first, first + len(batch)) == got  # asked again: the same, the buffers let go
    with pytest.raises(TypeError):
        hasher.add([b"bytes", 5])  # nothing of a refused batch is added
    assert hasher.add([]) == firsts[-1] + len(batches[-1])
    hasher.close()
    with pytest.raises(ValueError, match="closed"):
        hasher.add([b"late"])
    hasher.wait(0, 6)
    assert hasher.digests(0, 6) == b"".join(hashlib.sha256(each).digest() for each in longs)
    with pytest.raises(IndexError):
        hasher.wait(0, 10**6)
    hasher.join()


@needs_build
@pytest.mark.parametrize("backend", backends)
def test_hasher_lets_go_of_buffers_once_told(backend: str) -> None:
    """A bytearray the hasher held can be resized once its digest was given: no buffer is kept past that."""
    hasher = _hasher(backend, threads=2)
    data = bytearray(b"x" * 100_000)
    first = hasher.add([data, memoryview(data)[10:20]])
    with pytest.raises(BufferError):
        data += b"y"  # held
    hasher.wait(first, first + 2)
    assert (
        hasher.digests(first, first + 2) == hashlib.sha256(b"x" * 100_000).digest() + hashlib.sha256(b"x" * 10).digest()
    )
    data += b"y"  # let go
    hasher.cancel()


@needs_build
@pytest.mark.parametrize("backend", backends)
def test_hasher_cancelled_stops_and_says_what_is_not_hashed(backend: str) -> None:
    """A cancelled hasher stops its threads and lets go of its buffers; asking it more is an error."""
    hasher = _hasher(backend, threads=2)
    hasher.add([bytes(64 << 20)] * 4, long=True)  # long enough to be cut short
    hasher.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        hasher.wait(0, 4)
    with pytest.raises(RuntimeError, match="cancelled"):
        hasher.digests(0, 4)


def _model_records(data: bytes) -> list[tuple[object, ...]]:
    return list(iter_records(io.BytesIO(data).read))


def _framed(data: bytes) -> list[tuple[object, ...]] | int:
    """The C framing, with each member's bytes put where the model's records hold them."""
    scanned = fastlayer.scan(data)
    if isinstance(scanned, int):
        return scanned
    return [(*record[:11], fastlayer.payload_of(data, record)) for record in scanned]


def _payload(record: tuple[object, ...]) -> slice:
    """Where a framed record's payload lies in its archive: from its offset (field 11), its size (field 2) long."""
    start, size = cast(int, record[11]), cast(int, record[2])
    return slice(start, start + size)


def _members_agree(data: bytes) -> bool:
    """Whether the C members of a framed archive are the model's, field for field; False if left to the model.

    Only an archive the C framing vouches for is compared; the members it
    makes must then be exactly ``iter_members`` of the model's records,
    file digests included, with the model's own named tuples.
    """
    scanned = fastlayer.scan(data)
    if isinstance(scanned, int):
        return False
    digests = b"".join(
        hashlib.sha256(data[_payload(record)]).digest() for record in scanned if record[1] in fastlayer.FILE_FLAGS
    )
    made = NATIVE.members(scanned, digests, Member, Content, fastlayer.PLAIN_KINDS, NO_DEVICE)
    if made is None:
        assert any(record[1] not in fastlayer.PLAIN_KINDS for record in scanned), "plain records left to the model"
        return False
    model = list(iter_members(iter_records(io.BytesIO(data).read, file_digest)))
    assert made == model
    assert all(type(member) is Member for member in made)
    assert all(type(member.content) is Content for member in made if member.kind == "file")
    return True


@needs_build
@settings(max_examples=150, deadline=None)
@given(layer_values())
def test_scan_frames_canonical_layers_as_the_model_does(layer: LayerTar) -> None:
    """[TAR-3][TAR-4] Every canonical archive is framed, record for record, as the model frames it.

    Its members, where no record needs a PAX record, a long name or device
    numbers, are made in C exactly as the model makes them.
    """
    data = encode_layer(layer)
    assert _framed(data) == _model_records(data)
    event(f"members: {'made in C' if _members_agree(data) else 'left to the model'}")


@settings(max_examples=200, deadline=None)
@given(st.lists(layer_values(), min_size=1, max_size=3))
def test_rootfs_json_is_json_dumps_of_the_entries(layers: list[LayerTar]) -> None:
    """[APPLY-1] The JSON ``flatten`` writes is ``json.dumps`` of the entries, character for character.

    Both writers (C, and Python where the extension is not built), on names
    and targets of any characters: escapes, non-ASCII, lone surrogates.
    """
    try:
        root = flatten(layers)
    except SpecError:
        return
    expected = json.dumps(rootfs_entries(root), separators=(",", ":"))
    assert rootfs_json_python(root) == expected
    if BUILT:
        assert rootfs_json(root) == expected


def test_rootfs_json_writes_every_kind_and_any_number() -> None:
    """[APPLY-1] Devices, big numbers, control characters and astral names, in both writers."""
    entries = (
        TarEntry('/a"q\n\x7f\u00e9\U0001f600\udcff', "file", 0o4755, 2**70, 5, data=b"x"),
        TarEntry("/b", "char", 0o600, device=(2**40, 3)),
        TarEntry("/c", "symlink", 0o777, link="\t../\u2028"),
        TarEntry("/d", "fifo"),
        TarEntry("/e", "dir", 0o1777, 1, 1),
        TarEntry("/f", "block", device=(8, 1)),
    )
    path = entries[0].path
    root = Rootfs(entries, inode={path: 1}, names={1: 1})
    expected = json.dumps(rootfs_entries(root), separators=(",", ":"))
    assert rootfs_json_python(root) == expected
    if BUILT:
        assert rootfs_json(root) == expected
    elif os.environ.get("CI") == "true":
        pytest.fail("cowcheck._fastlayer did not build")


@needs_build
def test_members_in_c_cover_plain_layers_and_leave_the_rest() -> None:
    """[TAR-3] Plain layers get their members in C; devices, PAX and long names go to the model.

    Also the edges of the numbers: an mtime of twelve octal digits (no NUL),
    whose nanoseconds pass 64 bits, is still the model's exact integer.
    """
    plain = encode_layer(
        LayerTar(
            (
                TarEntry("/d", "dir", 0o1755, 7, 8, 1_700_000_000_000_000_000),
                TarEntry("/d/f", "file", 0o4644, data=b"x" * 1000),
                TarEntry("/d/h", "hardlink", link="/d/f"),
                TarEntry("/d/l", "symlink", 0o777, link="../\udcff"),
                TarEntry("/d/p", "fifo"),
                TarEntry("/d/z", "file"),
            ),
            frozenset({"/d/gone"}),
            frozenset({"/d"}),
        )
    )
    assert _members_agree(plain)
    late = bytearray(plain)
    late[136:148] = b"777777777777"  # the first header's mtime, all twelve bytes digits
    late[148:156] = b" " * 8
    late[148:156] = f"{sum(late[:512]):06o}\0 ".encode()
    assert _members_agree(bytes(late))
    first = next(iter_members(iter_records(io.BytesIO(bytes(late)).read)))
    assert first.mtime == 0o777777777777 * 10**9
    device = encode_layer(LayerTar((TarEntry("/null", "char", 0o666, device=(1, 3)),)))
    assert not _members_agree(device)
    pax = encode_layer(LayerTar((TarEntry("/f", "file", xattrs=(("user.a", b"1"),)),)))
    assert not _members_agree(pax)
    scanned = fastlayer.scan(plain)
    assert not isinstance(scanned, int)
    with pytest.raises(ValueError, match="fewer digests"):
        NATIVE.members(scanned, b"", Member, Content, fastlayer.PLAIN_KINDS, NO_DEVICE)
    files = sum(record[1] in fastlayer.FILE_FLAGS for record in scanned)  # markers are empty files
    with pytest.raises(ValueError, match="more digests"):
        NATIVE.members(scanned, bytes(32 * (files + 1)), Member, Content, fastlayer.PLAIN_KINDS, NO_DEVICE)


@needs_build
@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_scan_frames_what_tarfile_writes(fmt: int) -> None:
    """[TAR-3] Long names, ustar prefixes, links and PAX records, from Python's own tarfile."""
    long = "d" * 90 + "/" + "e" * 60 + "/file"  # USTAR holds it with a prefix, the others as they will
    link = "t" * (90 if fmt == tarfile.USTAR_FORMAT else 120)
    target = "etc/link" if fmt == tarfile.USTAR_FORMAT else long
    data = archive(
        [("./etc/", "d", b""), (long, "f", b"x" * 700), ("etc/link", "l", link), ("etc/h", "h", target)], fmt
    )
    framed = _framed(data)
    assert not isinstance(framed, int), f"refused at byte {framed}"
    assert framed == _model_records(data)
    assert _members_agree(data) == (fmt == tarfile.USTAR_FORMAT)  # GNU and PAX write extended records


@needs_build
@settings(max_examples=400, deadline=None)
@given(
    layer=layer_values(),
    where=st.integers(0, 10**6),
    value=st.sampled_from([0, 32, ord("0"), ord("7"), ord("8"), ord("x"), ord("/"), ord("."), 0x80, 0xFF]),
    damage=st.sampled_from(["byte", "header field", "cut"]),
)
def test_scan_vouches_only_for_what_the_model_reads_alike(layer: LayerTar, where: int, value: int, damage: str) -> None:
    """[TAR-3] A damaged archive is framed like the model frames it, or left to the model.

    "header field" damages a header and makes its checksum right again, so
    that the odd field itself (a sign, a space, a NUL, base-256) is read.
    """
    original = encode_layer(layer)
    data = bytearray(original)
    if damage == "cut":
        del data[where % len(data) :]
    elif damage == "byte":
        data[where % len(data)] = value
    else:
        headers = [record[0] for record in _model_records(original)]
        if not headers:
            return
        start = headers[where % len(headers)]
        assert isinstance(start, int)
        data[start + where % 512] = value
        data[start + 148 : start + 156] = b" " * 8
        data[start + 148 : start + 156] = f"{sum(data[start : start + 512]):06o}\0 ".encode()
    framed = _framed(bytes(data))
    event(f"{damage}: {'left to the model' if isinstance(framed, int) else 'framed'}")
    if isinstance(framed, int):
        return  # the model's reader decides: nothing to compare
    assert framed == _model_records(bytes(data))
    try:
        _members_agree(bytes(data))
    except SpecError:
        # The model refuses a member the C code would have made: only a record
        # the C code leaves to the model may do that (an unknown type, a bad PAX record).
        assert any(record[1] not in fastlayer.PLAIN_KINDS for record in framed if isinstance(record, tuple))


def test_scan_refuses_what_it_cannot_vouch_for() -> None:
    """[TAR-3] A bad checksum, a cut archive, a base-256 number: left to the model, which explains."""
    if not BUILT:
        pytest.skip("cowcheck._fastlayer is not built")
    data = bytearray(encode_layer(LayerTar((TarEntry("/a", "file", data=b"hello"),))))
    assert not isinstance(fastlayer.scan(bytes(data)), int)
    assert fastlayer.scan(bytes(data[:700])) == 0
    broken = bytearray(data)
    broken[0] ^= 1
    assert fastlayer.scan(bytes(broken)) == 0
    with pytest.raises(SpecError, match="checksum"):
        _model_records(bytes(broken))
    huge = bytearray(data)
    huge[108:116] = b"\x80" + (5).to_bytes(7, "big")  # uid in GNU base-256
    checksum = sum(huge[:148]) + 8 * 32 + sum(huge[156:512])
    huge[148:156] = f"{checksum:06o}\0 ".encode()
    assert fastlayer.scan(bytes(huge)) == 0
    assert _model_records(bytes(huge))[0][6] == 5


# -- whole images: the mapped reader against the streamed one ---------------------------


def _layers(seed: int) -> list[LayerTar]:
    """A few layers with files, hardlinks, symlinks, whiteouts and an opaque directory."""
    rng = random.Random(seed)
    layers = []
    for index in range(4):
        entries = [TarEntry("/d", "dir", 0o755), TarEntry("/d/e", "dir", 0o700)]
        for number in range(rng.randrange(1, 40)):
            data = rng.randbytes(rng.choice([0, 1, 63, 64, 511, 512, 513, 5000]))
            entries.append(TarEntry(f"/d/e/f{index}_{number}", "file", 0o644, uid=index, data=data))
        entries.append(TarEntry(f"/d/h{index}", "hardlink", link=f"/d/e/f{index}_0"))
        entries.append(TarEntry(f"/d/s{index}", "symlink", 0o777, link="e/f0_0"))
        whiteouts = frozenset({f"/d/e/f{index - 1}_0"}) if index else frozenset()
        opaque = frozenset({"/d/e"}) if index == 2 else frozenset()
        layers.append(LayerTar(tuple(sorted(entries, key=lambda e: e.path.replace("/", "\0"))), whiteouts, opaque))
    return layers


def _images(tmp_path: Path, archives: list[bytes], config: bytes | None = None) -> list[Path]:
    """The layers as a docker save tarball, an OCI layout of plain layers, of gzip and of zstd layers."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    saved = tmp_path / "saved.tar"
    saved.write_bytes(docker_archive(archives, "cowspec/fast:1"))
    layout = tmp_path / "oci"
    write_oci_layout(str(layout), archives, gzipped=False)
    gzipped = tmp_path / "oci-gzip"
    write_oci_layout(str(gzipped), archives, gzipped=True)
    zstd = tmp_path / "oci-zstd"
    write_oci_layout(str(zstd), archives, gzipped=False)
    _recompress(zstd, lambda data: zstandard.ZstdCompressor().compress(data), "+zstd")
    images = [saved, layout, gzipped, zstd]
    if config is not None:
        _replace_config(saved, layout, config)
        images = [saved, layout]
    return images


def _recompress(layout: Path, compress: Any, suffix: str) -> None:
    """Every layer blob of ``layout`` compressed by ``compress``, the manifest and index made to match."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    for layer in manifest["layers"]:
        data = compress((blobs / layer["digest"][7:]).read_bytes())
        name = hashlib.sha256(data).hexdigest()
        (blobs / name).write_bytes(data)
        layer.update(digest="sha256:" + name, size=len(data), mediaType=layer["mediaType"] + suffix)
    text = json.dumps(manifest).encode()
    name = hashlib.sha256(text).hexdigest()
    (blobs / name).write_bytes(text)
    index["manifests"][0].update(digest="sha256:" + name, size=len(text))
    (layout / "index.json").write_text(json.dumps(index))


def _replace_config(saved: Path, layout: Path, config: bytes) -> None:
    """Give both images another config (wrong DiffIDs), their digests kept consistent."""
    name = "sha256:" + hashlib.sha256(config).hexdigest()
    blob = layout / "blobs" / "sha256" / name[7:]
    blob.write_bytes(config)
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    manifest = json.loads(manifest_path.read_text())
    manifest["config"].update(digest=name, size=len(config))
    text = json.dumps(manifest).encode()
    new_manifest = hashlib.sha256(text).hexdigest()
    (layout / "blobs" / "sha256" / new_manifest).write_bytes(text)
    index["manifests"][0].update(digest="sha256:" + new_manifest, size=len(text))
    (layout / "index.json").write_text(json.dumps(index))
    with tarfile.open(saved) as tar:
        members = [(member, tar.extractfile(member)) for member in tar.getmembers()]
        contents = [(member, handle.read() if handle else None) for member, handle in members]
    listed = json.loads(next(data for member, data in contents if member.name == "manifest.json") or b"")
    config_name = listed[0]["Config"]
    with tarfile.open(saved, "w") as tar:
        for member, data in contents:
            if member.name == config_name:
                data = config
                member.size = len(config)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)


def _read(path: Path, reader: Reader, keep_data: bool = False) -> tuple[list[object], list[LayerTar]]:
    reading = ImageReading(str(path), keep_data=keep_data, reader=reader)
    values = list(reading.values())
    return [(each.diff_id, each.chain_id, each.archive_size, each.layer) for each in reading.layers], values


def _error(path: Path, reader: Reader) -> str:
    with pytest.raises(SpecError) as raised:
        _read(path, reader)
    return str(raised.value)


@pytest.fixture(params=["stream", *backends])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Reader:
    """Each way of reading: the model's stream, and the fast reader with each hasher this CPU runs."""
    if request.param == "stream":
        return "stream"
    if not BUILT:
        if os.environ.get("CI") == "true":
            pytest.fail("cowcheck._fastlayer did not build")
        pytest.skip("cowcheck._fastlayer is not built")
    monkeypatch.setenv("COWSPEC_HASHER", request.param)
    return "auto"


@pytest.mark.parametrize("keep_data", [False, True])
def test_fast_reading_equals_streamed_reading(tmp_path: Path, reader: Reader, keep_data: bool) -> None:
    """[IDENTITY-1][APPLY-1] Every image kind, every reader: the same layers, DiffIDs, ChainIDs and root."""
    archives = [encode_layer(layer) for layer in _layers(1)]
    for image in _images(tmp_path, archives):
        fast = _read(image, reader, keep_data)
        assert fast == _read(image, "stream", keep_data)
        assert fast[1] == _layers(1) if keep_data else len(fast[1]) == 4
        root = flatten(ImageReading(str(image), reader=reader).values())
        assert json.loads(rootfs_json(root)) == rootfs_entries(root)


@needs_build
def test_the_fast_reader_is_used_and_frames_in_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain, gzip and zstd layers are framed and decoded by the C module and hashed by its threads, not by the model.

    Each layer is framed once (``frame``: where its files are) and decoded
    once (``decode``: its value, or None and the model's decoding of the
    headers ``scan`` frames); ``--tar`` (file bytes kept) frames with
    ``scan`` alone. The streaming reader calls none of them.
    """
    calls: dict[str, list[int]] = {"frame": [], "decode": [], "scan": []}

    def spy(original: Any, found: list[int]) -> Any:
        def called(buffer: Any, *rest: Any) -> object:
            found.append(len(buffer))
            return original(buffer, *rest)

        return called

    for name, found in calls.items():
        monkeypatch.setattr(NATIVE, name, spy(getattr(NATIVE, name), found))
    archives = [encode_layer(layer) for layer in _layers(2)]
    sizes = sorted(len(each) for each in archives)
    for image in _images(tmp_path, archives):
        for found in calls.values():
            found.clear()
        _read(image, "auto")
        # Each layer framed once, by the C module (two loaders may frame them out of order).
        assert sorted(calls["frame"]) == sizes and sorted(calls["decode"]) == sizes, image
        assert set(calls["scan"]) <= set(sizes)
        for found in calls.values():
            found.clear()
        _read(image, "auto", keep_data=True)
        assert sorted(calls["scan"]) == sizes and calls["frame"] == calls["decode"] == []
        calls["scan"].clear()
        _read(image, "stream")
        assert calls == {"frame": [], "decode": [], "scan": []}


def test_errors_are_the_first_a_front_to_back_reading_meets(tmp_path: Path, reader: Reader) -> None:
    """[TAR-3][IDENTITY-1] A wrong DiffID below a bad entry is reported first, by both readers alike."""
    layers = _layers(3)
    bad = LayerTar((TarEntry("/x", "file"),))
    archives = [encode_layer(each) for each in layers[:2]]
    # An entry named "..", its checksum made right: well framed, and it climbs out of the root.
    header = bytearray(encode_layer(bad))
    header[0:3] = b"..\0"
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header[:512]):06o}\0 ".encode()
    archives.append(bytes(header))
    good_ids = ["sha256:" + hashlib.sha256(each).hexdigest() for each in archives]
    for image in _images(tmp_path / "a", archives):
        with pytest.raises(SpecError, match=r"layer 2: entry 0 '\.\.': name '\.\.' climbs out of the root"):
            _read(image, reader)
    wrong = image_config([good_ids[0], "sha256:" + "0" * 64, good_ids[2]])
    for image in _images(tmp_path / "b", archives, wrong):
        with pytest.raises(SpecError, match=r"layer 1 has DiffID sha256:[0-9a-f]{64}, the config says sha256:0{64}"):
            _read(image, reader)


def test_a_header_the_c_code_refuses_goes_to_the_model(tmp_path: Path, reader: Reader) -> None:
    """[TAR-3] A wrong checksum in layer 2: the mapped reader stops its hashing and lets the model say it."""
    archives = [encode_layer(layer) for layer in _layers(5)]
    broken = bytearray(archives[2])
    broken[0] ^= 1
    archives[2] = bytes(broken)
    for image in _images(tmp_path, archives):
        with pytest.raises(SpecError, match=r"layer 2: header 0 \(at byte 0\): header checksum mismatch"):
            _read(image, reader)


def test_an_entry_below_a_same_layer_symlink_is_refused_by_every_reader(tmp_path: Path, reader: Reader) -> None:
    """[TAR-6][APPLY-4][APPLY-5] Same layer: refused, by both readers alike; a lower layer's symlink: replaced."""
    slip = archive([("up", "l", "../../../../tmp/slipped"), ("up/escape", "f", b"x")])
    below = archive([("keep", "f", b"k")])
    for image in _images(tmp_path / "same", [below, slip]):
        message = _error(image, reader)
        assert message == _error(image, "stream")
        assert message.startswith(
            f"{image}: layer 1: entry '/up/escape': lies below '/up', which this layer lists as a symlink"
        )
        assert message.endswith("[TAR-6]") and "\n" not in message
    split = [archive([("up", "l", "../../../../tmp/slipped")]), archive([("up/escape", "f", b"x")])]
    for image in _images(tmp_path / "two", split):
        assert _read(image, reader) == _read(image, "stream")
        root = flatten(ImageReading(str(image), reader=reader).values())
        kinds = {entry["path"]: entry["type"] for entry in rootfs_entries(root)}
        assert kinds["/up"] == "dir" and kinds["/up/escape"] == "file"


@needs_build
def test_a_corrupt_blob_is_caught_by_every_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[IDENTITY-1] One flipped byte in a file of a plain OCI blob: the blob's digest fails."""
    archives = [encode_layer(layer) for layer in _layers(4)]
    layout = _images(tmp_path, archives)[1]
    blob = layout / "blobs" / "sha256" / hashlib.sha256(archives[1]).hexdigest()
    data = bytearray(blob.read_bytes())
    framed = fastlayer.scan(bytes(data))
    assert not isinstance(framed, int)
    member = next(record for record in framed if record[1] == b"0" and record[2])
    data[cast(int, member[11])] ^= 0xFF  # a byte of a file, not of a header
    blob.write_bytes(bytes(data))
    for backend in ("stream", *fastlayer.hashers()):
        monkeypatch.setenv("COWSPEC_HASHER", backend if backend != "stream" else "openssl")
        with pytest.raises(SpecError, match="layer 1: blob does not match its digest"):
            _read(layout, "stream" if backend == "stream" else "auto")


def test_compressed_layers_damaged_give_the_model_s_answer(tmp_path: Path, reader: Reader) -> None:
    """[IDENTITY-3] A gzip or zstd layer cut, flipped, padded or followed by junk: every reader says the same."""
    archives = [encode_layer(layer) for layer in _layers(6)]
    plain = archives[1]
    members = gzip.compress(plain[:3000], mtime=0) + b"\0\0\0" + gzip.compress(plain[3000:], mtime=0)
    zstd = zstandard.ZstdCompressor()
    frames = zstd.compress(plain[:5000]) + zstd.compress(plain[5000:])
    rng = random.Random(6)
    cases: list[tuple[str, bytes]] = [("gzip", members), ("gzip", members + b"\0" * 9), ("zstd", frames)]
    for kind, blob in [("gzip", members), ("zstd", frames)]:
        for _ in range(6):
            cut = rng.randrange(len(blob))
            flipped = bytearray(blob)
            flipped[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
            cases += [(kind, blob[:cut]), (kind, bytes(flipped)), (kind, blob + b"junk")]
    for number, (kind, blob) in enumerate(cases):
        layout = tmp_path / str(number)
        write_oci_layout(str(layout), [archives[0], plain], gzipped=False)
        _swap_blob(layout, 1, blob, "+" + kind)
        outcome: list[object] = []
        for each in ("stream", reader):
            try:
                outcome.append(_read(layout, each))
            except SpecError as error:
                outcome.append(str(error))
        assert outcome[0] == outcome[1], (kind, number)


def _swap_blob(layout: Path, index: int, blob: bytes, suffix: str) -> None:
    """Layer ``index`` of ``layout`` replaced by ``blob`` (its digest and media type made to match)."""
    blobs = layout / "blobs" / "sha256"
    listed = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / listed["manifests"][0]["digest"][7:]).read_text())
    name = hashlib.sha256(blob).hexdigest()
    (blobs / name).write_bytes(blob)
    manifest["layers"][index].update(digest="sha256:" + name, size=len(blob), mediaType=PLAIN_TYPE + suffix)
    text = json.dumps(manifest).encode()
    (blobs / hashlib.sha256(text).hexdigest()).write_bytes(text)
    listed["manifests"][0].update(digest="sha256:" + hashlib.sha256(text).hexdigest(), size=len(text))
    (layout / "index.json").write_text(json.dumps(listed))


PLAIN_TYPE = "application/vnd.oci.image.layer.v1.tar"


@needs_build
def test_gunzip_and_unzstd_join_what_the_model_joins() -> None:
    """[IDENTITY-3] The fast decompressors give the model's bytes, or leave the blob to it (None)."""
    data = random.Random(9).randbytes(300_000)
    members = gzip.compress(data[:1000]) + b"\0" * 5 + gzip.compress(data[1000:]) + b"\0\0"
    assert fastlayer.gunzip(members, 1 << 20) == bytearray(data)
    assert fastlayer.gunzip(b"", 1 << 20) == bytearray()
    assert fastlayer.gunzip(members[:-40], 1 << 20) is None
    assert fastlayer.gunzip(b"\0" + members, 1 << 20) is None
    assert fastlayer.gunzip(members + b"x", 1 << 20) is None
    frames = zstandard.ZstdCompressor().compress(data[:7]) + zstandard.ZstdCompressor().compress(data[7:])
    assert fastlayer.unzstd(frames, 1 << 20) == bytearray(data)
    assert fastlayer.unzstd(frames[:-3], 1 << 20) is None
    with pytest.raises(fastlayer._TooBig):
        fastlayer.gunzip(gzip.compress(bytes(2 << 20)), 1 << 20)
    with pytest.raises(fastlayer._TooBig):
        fastlayer.unzstd(zstandard.ZstdCompressor().compress(bytes(2 << 20)), 1 << 20)


def test_a_layer_beyond_the_limit_is_streamed_by_the_model(
    tmp_path: Path, reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer larger than LAYER_LIMIT (as read, or once decompressed) goes to the model: the same answer."""
    archives = [encode_layer(layer) for layer in _layers(7)]
    monkeypatch.setattr(fastlayer, "LAYER_LIMIT", len(archives[2]) - 1)
    for image in _images(tmp_path, archives):
        assert _read(image, reader) == _read(image, "stream")


@needs_build
def test_a_layer_that_says_it_is_beyond_the_limit_is_not_inflated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[IDENTITY-3] A gzip ISIZE or zstd content size over LAYER_LIMIT: straight to the model, nothing inflated.

    A declared size that lies (ISIZE too large, or too small for a member
    before the last) changes nothing: the model's answer, error or value.
    """
    archives = [encode_layer(layer) for layer in _layers(10)]
    big = encode_layer(LayerTar((TarEntry("/big", "file", data=random.Random(10).randbytes(300_000)),)))
    archives[1] = big
    monkeypatch.setattr(fastlayer, "LAYER_LIMIT", len(big) - 1)
    inflated: list[int] = []
    for name in ("gunzip", "unzstd"):
        original = getattr(fastlayer, name)

        def spy(raw: Any, limit: int, original: Any = original) -> object:
            inflated.append(len(raw))
            return original(raw, limit)

        monkeypatch.setattr(fastlayer, name, spy)
    small = [len(archives[0]), len(archives[2]), len(archives[3])]
    assert max(small) < len(big) - 1
    for image in _images(tmp_path / "declared", archives)[2:]:
        inflated.clear()
        assert _read(image, "auto") == _read(image, "stream")
        assert len(inflated) == 3, image  # layers 0, 2 and 3, never layer 1
    lying_large = bytearray(gzip.compress(archives[0], mtime=0))
    lying_large[-4:] = (len(big)).to_bytes(4, "little")
    lying_small = gzip.compress(big[:-2048], mtime=0) + gzip.compress(big[-2048:], mtime=0)
    cases = [(bytes(lying_large), 0), (lying_small, 1)]
    for number, (blob, times) in enumerate(cases):
        layout = tmp_path / f"lying{number}"
        write_oci_layout(str(layout), [archives[0], archives[0]], gzipped=False)
        _swap_blob(layout, 1, blob, "+gzip")
        inflated.clear()
        outcome: list[object] = []
        for each in ("stream", "auto"):
            try:
                outcome.append(_read(layout, each))
            except SpecError as error:
                outcome.append(str(error))
        assert outcome[0] == outcome[1], number
        assert inflated == [len(blob)] * times, number


def test_an_image_cut_short_while_it_is_read_gives_an_error_not_a_signal(tmp_path: Path, reader: Reader) -> None:
    """The image file truncated under a running read: a one-line SpecError naming it, or the right answer."""
    archives = [encode_layer(layer) for layer in _layers(8)]
    saved, layout = _images(tmp_path, archives)[:2]
    whole = _read(saved, "stream")
    for cut in (0, 1 << 10, len(archives[0]) + 3000, saved.stat().st_size // 2):
        saved.write_bytes(docker_archive(archives, "cowspec/fast:1"))

        def truncate(index: int, count: int, cut: int = cut) -> None:
            if index == 1:
                os.truncate(saved, cut)

        try:
            reading = ImageReading(str(saved), on_layer=truncate, reader=reader)
            list(reading.values())
            assert [(e.diff_id, e.chain_id, e.archive_size, e.layer) for e in reading.layers] == whole[0]
        except SpecError as error:
            assert "\n" not in str(error) and str(saved) in str(error)
    blob = layout / "blobs" / "sha256" / hashlib.sha256(archives[3]).hexdigest()
    stop = threading.Event()

    def shrink() -> None:
        while not stop.is_set():
            os.truncate(blob, 100)

    cutter = threading.Thread(target=shrink)
    cutter.start()
    try:
        with pytest.raises(SpecError, match=str(layout)):
            _read(layout, reader)
    finally:
        stop.set()
        cutter.join()


@needs_build
def test_a_flatten_whose_image_shrinks_ends_with_a_line_not_a_signal(tmp_path: Path) -> None:
    """The CLI, the image truncated while flatten runs: exit 0 or 2 with one line, never SIGBUS (exit 135)."""
    archives = [encode_layer(layer) for layer in _layers(9)] * 20
    saved = tmp_path / "saved.tar"
    script = (
        "import os, sys, threading, time\n"
        "from cowcheck.cli.main import run\n"
        "threading.Timer(0.05, os.truncate, (sys.argv[1], 4096)).start()\n"
        "sys.argv = ['cowspec', 'flatten', sys.argv[1]]\n"
        "run()\n"
    )
    for _ in range(3):
        saved.write_bytes(docker_archive(archives, "cowspec/fast:1"))
        done = subprocess.run([sys.executable, "-c", script, str(saved)], capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 2), done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        if done.returncode == 2:
            assert done.stderr.count("\n") == 1 and str(saved) in done.stderr


def test_the_streaming_reader_s_buffer_reads_what_it_is_given() -> None:
    """The model's buffered reader gives back the bytes, whatever the sizes asked (one large read included)."""
    from cowcheck.images import _Hashing

    rng = random.Random(10)
    data = rng.randbytes(5 << 20)
    reading = _Hashing(io.BytesIO(data).read)
    got = [reading.read(rng.choice([0, 1, 512, 4096, 3 << 20])) for _ in range(40)]
    got.append(reading.read())
    reading.drain()
    assert b"".join(got) == data and reading.count == len(data)
    assert reading.name() == "sha256:" + hashlib.sha256(data).hexdigest()


def test_the_package_installs_without_a_compiler(tmp_path: Path) -> None:
    """The C module is optional: with no working compiler the wheel still builds, without it.

    Where it is missing, ``FastLayers.open`` gives None and the model's
    streaming reader serves (the tests above that simulate a missing build).
    """
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(root)],
        env={**os.environ, "CC": "/bin/false"},
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    (wheel,) = tmp_path.glob("cowspec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # Every package of both levels' layouts is in the wheel, the store driver's helper source too.
    for name in (
        "cowcheck/fastlayer.py",
        "cowspec/oci/layer_tar.py",
        "cowspec/fs/stack.py",
        "cowspec/store/state.py",
        "cowspec/formats/trace.py",
        "cowcheck/cli/main.py",
        "cowcheck/machines/fs_machine.py",
        "cowcheck/drivers/store_call.c",
    ):
        assert name in names, name
    assert not [name for name in names if name.startswith("cowcheck/_fastlayer") and name.endswith(".so")]
