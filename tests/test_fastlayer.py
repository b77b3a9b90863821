"""The fast reader of plain layers, held to the model's reader.

``cowcheck.fastlayer`` frames tar headers and hashes in C. Everything it
gives must be what ``cowspec.layer_tar`` gives for the same bytes: the same
records, the same layer values, the same DiffIDs, the same first error.
"""

import hashlib
import io
import json
import mmap
import os
import random
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cowcheck import fastlayer
from cowcheck.image_commands import rootfs_json
from cowcheck.images import ImageReading, Reader, docker_archive, image_config, write_oci_layout
from cowspec.apply import flatten, rootfs_entries
from cowspec.errors import SpecError
from cowspec.layer_tar import LayerTar, TarEntry, encode_layer, iter_records
from tests.test_layer_tar import archive, layer_values

BUILT = fastlayer._fastlayer is not None
LANES = fastlayer.available()
needs_build = pytest.mark.skipif(
    not BUILT and os.environ.get("CI") != "true", reason="cowcheck._fastlayer is not built (pip install -e .)"
)
hash_paths = [pytest.param(True, id="portable"), pytest.param(False, id="lanes")]


def test_the_module_is_built_and_knows_its_cpu() -> None:
    """CI runs the fast reader: a missing build fails there, never skips; lanes are used where AVX-512 is."""
    if not BUILT:
        assert os.environ.get("CI") != "true", "cowcheck._fastlayer did not build"
        pytest.skip("cowcheck._fastlayer is not built (pip install -e .)")
    with open("/proc/cpuinfo", encoding="ascii") as info:
        flags = next(line for line in info if line.startswith("flags")).split()
    assert ("avx512f" in flags and "avx512bw" in flags) == LANES


def _digests(buffers: list[bytes], portable: bool, **options: object) -> list[bytes]:
    if not portable and not LANES:
        pytest.skip("this CPU has no AVX-512: only the portable path runs here")
    assert fastlayer._fastlayer is not None
    result: list[bytes] = fastlayer._fastlayer.sha256_many(buffers, portable=portable, **options)
    return result


@needs_build
@pytest.mark.parametrize("portable", hash_paths)
@settings(max_examples=60, deadline=None)
@given(buffers=st.lists(st.binary(max_size=300), max_size=40), seed=st.integers(0, 2**16))
def test_sha256_many_equals_hashlib(portable: bool, buffers: list[bytes], seed: int) -> None:
    """[IDENTITY-1] Every digest is hashlib's, whatever the lengths (padding edges included)."""
    rng = random.Random(seed)
    buffers = buffers + [rng.randbytes(length) for length in (0, 55, 56, 63, 64, 65, 119, 120, 128, 4096)]
    rng.shuffle(buffers)
    assert _digests(buffers, portable) == [hashlib.sha256(each).digest() for each in buffers]


@needs_build
@pytest.mark.parametrize("portable", hash_paths)
def test_sha256_many_queues_and_threads(portable: bool) -> None:
    """Long and short queues and several threads give every digest."""
    rng = random.Random(7)
    buffers = [rng.randbytes(rng.randrange(100_000, 300_000)) for _ in range(5)]
    buffers += [rng.randbytes(rng.randrange(0, 3000)) for _ in range(300)]
    want = [hashlib.sha256(each).digest() for each in buffers]
    for threads in (1, 2, 3):
        for long_lanes in (1, 8, 16):
            assert _digests(buffers, portable, long_count=5, long_lanes=long_lanes, threads=threads) == want
    with pytest.raises(ValueError, match="out of range"):
        _digests(buffers, portable, long_count=len(buffers) + 1)
    with pytest.raises(TypeError):
        _digests([b"bytes", "not bytes"], portable)  # type: ignore[list-item]


def _hasher(portable: bool, **options: object) -> Any:
    if not portable and not LANES:
        pytest.skip("this CPU has no AVX-512: only the portable path runs here")
    assert fastlayer._fastlayer is not None
    return fastlayer._fastlayer.Hasher(portable=portable, **options)


@needs_build
@pytest.mark.parametrize("portable", hash_paths)
def test_hasher_takes_buffers_while_it_hashes(portable: bool) -> None:
    """Buffers added in batches, long and short, are hashed as they come; waits end; digests are right."""
    rng = random.Random(8)
    hasher = _hasher(portable, threads=2, long_lanes=4)
    longs = [rng.randbytes(rng.randrange(200_000, 400_000)) for _ in range(6)]
    assert hasher.add(longs, long=True) == 0
    batches = [[rng.randbytes(rng.randrange(0, 5000)) for _ in range(rng.randrange(0, 200))] for _ in range(5)]
    firsts = [hasher.add(batch) for batch in batches]
    assert firsts[0] == 6 and firsts[-1] == 6 + sum(len(batch) for batch in batches[:-1])
    for first, batch in zip(firsts, batches, strict=True):
        hasher.wait(first, first + len(batch))
        got = hasher.digests(first, first + len(batch))
        assert got == b"".join(hashlib.sha256(each).digest() for each in batch)
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
@pytest.mark.parametrize("portable", hash_paths)
def test_hasher_cancelled_stops_and_says_what_is_not_hashed(portable: bool) -> None:
    """A cancelled hasher stops its threads and lets go of its buffers; asking it more is an error."""
    hasher = _hasher(portable, threads=2)
    hasher.add([bytes(64 << 20)] * 4, long=True)  # long enough to be cut short
    hasher.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        hasher.wait(0, 4)
    with pytest.raises(RuntimeError, match="cancelled"):
        hasher.digests(0, 4)


@needs_build
@pytest.mark.parametrize("portable", hash_paths)
def test_hashing_a_mapping_lets_go_of_its_pages_and_nothing_else(tmp_path: Path, portable: bool) -> None:
    """With release, pages of a file mapping are dropped once hashed: digests and bytes stay right."""
    rng = random.Random(11)
    content = rng.randbytes(13 << 20)
    path = tmp_path / "blob"
    path.write_bytes(content)
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        whole = memoryview(mapped)
        cuts = sorted(rng.sample(range(1, len(content)), 400))
        pieces = [whole[start + 512 : end] for start, end in zip([0, *cuts], [*cuts, len(content)], strict=True)]
        jobs = [whole[: 7 << 20], whole[3 << 20 :], *pieces]
        want = [hashlib.sha256(bytes(job)).digest() for job in jobs]
        for threads in (1, 2):
            assert _digests(jobs, portable, long_count=2, threads=threads, release=True) == want
        assert bytes(whole) == content
        for each in (*jobs, whole):
            each.release()


def _model_records(data: bytes) -> list[tuple[object, ...]]:
    return list(iter_records(io.BytesIO(data).read, keep_data=True))


def _framed(data: bytes) -> list[tuple[object, ...]] | int:
    """The C framing, with each member's bytes put where the model's records hold them."""
    scanned = fastlayer.scan(data)
    if isinstance(scanned, int):
        return scanned
    return [
        (*record[:11], data[record[11] : record[11] + record[2]])  # type: ignore[index,misc,operator]
        for record in scanned
    ]


@needs_build
@settings(max_examples=150, deadline=None)
@given(layer_values())
def test_scan_frames_canonical_layers_as_the_model_does(layer: LayerTar) -> None:
    """[TAR-3][TAR-4] Every canonical archive is framed, record for record, as the model frames it."""
    data = encode_layer(layer)
    assert _framed(data) == _model_records(data)


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
    tmp_path.mkdir(parents=True, exist_ok=True)
    saved = tmp_path / "saved.tar"
    saved.write_bytes(docker_archive(archives, "cowspec/fast:1"))
    layout = tmp_path / "oci"
    write_oci_layout(str(layout), archives, gzipped=False)
    if config is not None:
        _replace_config(saved, layout, config)
    return [saved, layout]


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


def _read(path: Path, reader: Reader, keep_data: bool = False) -> tuple[list[object], object]:
    reading = ImageReading(str(path), keep_data=keep_data, reader=reader)
    values = list(reading.values())
    return [(each.diff_id, each.chain_id, each.archive_size, each.layer) for each in reading.layers], values


@needs_build
@pytest.mark.parametrize("reader", ["portable", "auto"])
@pytest.mark.parametrize("keep_data", [False, True])
def test_mapped_reading_equals_streamed_reading(tmp_path: Path, reader: Reader, keep_data: bool) -> None:
    """[IDENTITY-1][APPLY-1] Both images, both readers: the same layers, DiffIDs, ChainIDs and root."""
    if reader == "auto" and not LANES:
        pytest.skip("this CPU has no AVX-512: auto reads by streaming")
    archives = [encode_layer(layer) for layer in _layers(1)]
    for image in _images(tmp_path, archives):
        mapped = _read(image, reader, keep_data)
        streamed = _read(image, "stream", keep_data)
        assert mapped == streamed
        assert mapped[1] == _layers(1) if keep_data else len(mapped[1]) == 4  # type: ignore[arg-type]
        root = flatten(ImageReading(str(image), reader=reader).values())
        assert json.loads(rootfs_json(root)) == rootfs_entries(root)


@needs_build
def test_mapped_reading_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain layers in place are mapped; a gzip layer sends the image to the streamed reader."""
    opened: list[object] = []
    original = fastlayer.MappedLayers.open

    def spy(regions: list[fastlayer.Region], keep_data: bool, portable: bool = False) -> object:
        opened.append(result := original(regions, keep_data, portable))
        return result

    monkeypatch.setattr(fastlayer.MappedLayers, "open", spy)
    archives = [encode_layer(layer) for layer in _layers(2)]
    for image in _images(tmp_path, archives):
        opened.clear()
        _read(image, "portable")
        assert len(opened) == 1 and opened[0] is not None
    gzipped = tmp_path / "gz"
    write_oci_layout(str(gzipped), archives, gzipped=True)
    opened.clear()
    _read(gzipped, "portable")
    assert opened == []


@needs_build
@pytest.mark.parametrize("reader", ["portable", "stream"])
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


@needs_build
@pytest.mark.parametrize("reader", ["portable", "stream"])
def test_a_header_the_c_code_refuses_goes_to_the_model(tmp_path: Path, reader: Reader) -> None:
    """[TAR-3] A wrong checksum in layer 2: the mapped reader stops its hashing and lets the model say it."""
    archives = [encode_layer(layer) for layer in _layers(5)]
    broken = bytearray(archives[2])
    broken[0] ^= 1
    archives[2] = bytes(broken)
    for image in _images(tmp_path, archives):
        with pytest.raises(SpecError, match=r"layer 2: header 0 \(at byte 0\): header checksum mismatch"):
            _read(image, reader)


@needs_build
def test_a_corrupt_blob_is_caught_by_the_mapped_reader(tmp_path: Path) -> None:
    """[IDENTITY-1] One flipped byte in a file of a plain OCI blob: the blob's digest fails."""
    archives = [encode_layer(layer) for layer in _layers(4)]
    layout = _images(tmp_path, archives)[1]
    blob = layout / "blobs" / "sha256" / hashlib.sha256(archives[1]).hexdigest()
    data = bytearray(blob.read_bytes())
    framed = fastlayer.scan(bytes(data))
    assert not isinstance(framed, int)
    member = next(record for record in framed if record[1] == b"0" and record[2])
    data[member[11]] ^= 0xFF  # type: ignore[index]  # a byte of a file, not of a header
    blob.write_bytes(bytes(data))
    for reader in ("portable", "stream"):
        with pytest.raises(SpecError, match="layer 1: blob does not match its digest"):
            _read(layout, reader)  # type: ignore[arg-type]
