"""Chapter 11: layer tars, read and written, and layer identity."""

import gzip
import hashlib
import io
import re
import tarfile

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from cowspec.errors import SpecError
from cowspec.oci.apply import flatten, rootfs_entries
from cowspec.oci.identity import EMPTY_LAYER_DIFF_ID, chain_ids, decompressing, diff_id, uncompressed
from cowspec.oci.layer_tar import Kind, LayerTar, TarEntry, decode_layer, encode_layer


def archive(members: list[tuple[str, str, bytes | str]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar written by Python's own tarfile: (name, kind, data or link target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            data = payload if isinstance(payload, bytes) else b""
            info.type = {
                "f": tarfile.REGTYPE,
                "d": tarfile.DIRTYPE,
                "l": tarfile.SYMTYPE,
                "h": tarfile.LNKTYPE,
                "S": tarfile.GNUTYPE_SPARSE,
            }[kind]
            info.mode = 0o755 if kind == "d" else 0o4755 if name.endswith("suid") else 0o644
            if isinstance(payload, str):
                info.linkname = payload
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_reads_what_tarfile_writes() -> None:
    """[TAR-1][TAR-2] Markers become sets; names are cleaned; modes keep special bits."""
    layer = decode_layer(
        archive(
            [
                ("./etc/", "d", b""),
                ("./etc/hosts", "f", b"hello"),
                ("etc/.wh.motd", "f", b""),
                ("/var/", "d", b""),
                ("var/.wh..wh..opq", "f", b""),
                ("bin/sh", "l", "busybox"),
                ("bin/ash", "h", "etc/hosts"),
                ("bin/suid", "f", b"x"),
            ]
        )
    )
    assert [(each.path, each.kind) for each in layer.entries] == [
        ("/bin/ash", "hardlink"),
        ("/bin/sh", "symlink"),
        ("/bin/suid", "file"),
        ("/etc", "dir"),
        ("/etc/hosts", "file"),
        ("/var", "dir"),
    ]
    by_path = {each.path: each for each in layer.entries}
    assert by_path["/bin/ash"].link == "/etc/hosts" and by_path["/bin/sh"].link == "busybox"
    assert by_path["/bin/suid"].mode == 0o4755 and by_path["/etc/hosts"].data == b"hello"
    assert layer.whiteouts == {"/etc/motd"} and layer.opaque == {"/var"}


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_in_every_format(fmt: int) -> None:
    """[TAR-3] GNU long names, PAX paths and the USTAR prefix field all read the same."""
    name = "d" * 60 + "/" + "e" * 60 + "/file"
    assert [each.path for each in decode_layer(archive([(name, "f", b"1")], fmt)).entries] == ["/" + name]


def test_marker_order_does_not_matter() -> None:
    """[TAR-2] The image-spec's own example: the opaque marker first or last."""
    first = archive(
        [
            ("a/", "d", b""),
            ("a/.wh..wh..opq", "f", b""),
            ("a/b/", "d", b""),
            ("a/b/c/", "d", b""),
            ("a/b/c/foo", "f", b""),
        ]
    )
    last = archive(
        [
            ("a/", "d", b""),
            ("a/b/", "d", b""),
            ("a/b/c/", "d", b""),
            ("a/b/c/foo", "f", b""),
            ("a/.wh..wh..opq", "f", b""),
        ]
    )
    assert decode_layer(first) == decode_layer(last)


def test_same_layer_entry_and_whiteout_both_kept() -> None:
    """[TAR-1] ``foo`` and ``.wh.foo`` in one layer: the whiteout is for the layers below."""
    layer = decode_layer(archive([("foo", "f", b"kept"), (".wh.foo", "f", b"")]))
    assert [each.path for each in layer.entries] == ["/foo"] and layer.whiteouts == {"/foo"}


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("../etc/passwd", "f", b"")], "climbs out of the root"),
        ([("a/../../x", "f", b"")], "climbs out of the root"),
        ([("link", "h", "missing")], "hardlink to '/missing', which this layer does not hold"),
        ([("a/", "d", b""), ("link", "h", "a")], "hardlink to '/a', a directory"),
        (
            [("a", "f", b"1"), ("b", "h", "a"), ("c", "h", "b")],
            r"entry '/c': hardlink to '/b', itself a hardlink to '/a' \(a tar hardlink names the member that holds"
            r" the data; a chain is refused\) \[TAR-3\]$",
        ),
        ([("link", "h", "../../etc/shadow")], "climbs out of the root"),
        ([(".wh.", "f", b"")], "invalid whiteout '.wh.'"),
        ([("x/.wh..", "f", b"")], "invalid whiteout '.wh..'"),
        ([("x/.wh...", "f", b"")], "invalid whiteout '.wh...'"),
        ([("a", "f", b"1"), ("./a", "f", b"2")], "duplicate entry for /a"),
        ([("a/.wh.b", "f", b""), ("a/.wh.b", "f", b"")], "duplicate entry"),
        ([("/", "f", b"")], "the root can only be a directory"),
    ],
)
def test_refused_members(members: list[tuple[str, str, bytes | str]], message: str) -> None:
    """[TAR-3]"""
    with pytest.raises(SpecError, match=message) as raised:
        decode_layer(archive(members))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (
            [("up", "l", "../../../../tmp/slipped"), ("up/escape", "f", b"x")],
            "'/up/escape': lies below '/up', which this layer lists as a symlink",
        ),
        ([("up/escape", "f", b"x"), ("up", "l", "../../../../tmp/slipped")], "'/up/escape': lies below '/up'"),
        (
            [("p", "f", b"file"), ("p/child", "f", b"x")],
            "'/p/child': lies below '/p', which this layer lists as a regular file",
        ),
        ([("p", "f", b"file"), ("p/a/b/c", "f", b"x")], "'/p/a/b/c': lies below '/p'"),
        (
            [("a", "f", b""), ("h", "h", "a"), ("h/x", "d", b"")],
            "'/h/x': lies below '/h', which this layer lists as a hardlink",
        ),
    ],
)
def test_nothing_below_a_non_directory_of_the_same_layer(
    members: list[tuple[str, str, bytes | str]], message: str
) -> None:
    """[TAR-6] An entry below a same-layer non-directory is refused, in either order, at any depth."""
    with pytest.raises(SpecError, match=re.escape(message) + ".*not a directory \\[TAR-6\\]$") as raised:
        decode_layer(archive(members))
    assert "\n" not in str(raised.value)


def test_below_a_same_layer_directory_is_fine() -> None:
    """[TAR-6] Below a same-layer directory, beside a prefix-sharing file, a whiteout of the path itself: fine."""
    layer = decode_layer(
        archive([("p", "d", b""), ("p/c", "f", b""), ("pq", "f", b""), ("pq-r/x", "f", b""), ("pq-r/.wh.pq", "f", b"")])
    )
    assert [each.path for each in layer.entries] == ["/p", "/p/c", "/pq", "/pq-r/x"]
    layer = decode_layer(archive([("up", "l", "elsewhere"), (".wh.up", "f", b""), ("x/.wh..wh..opq", "f", b"")]))
    assert layer.whiteouts == {"/up"} and layer.opaque == {"/x"}
    # Markers below a same-layer non-directory act on the layers below (umoci writes them
    # when a directory becomes a symlink): kept, and the symlink wins over the directory they imply.
    layer = decode_layer(
        archive([("d", "l", "a"), ("d/.wh.x", "f", b""), ("p", "f", b""), ("p/.wh..wh..opq", "f", b"")])
    )
    assert layer.whiteouts == {"/d/x"} and layer.opaque == {"/p"}
    below = decode_layer(archive([("d", "d", b""), ("d/x", "f", b"x"), ("p", "d", b""), ("p/y", "f", b"y")]))
    flat = rootfs_entries(flatten([below, layer]))
    assert [(each["path"], each["type"]) for each in flat] == [("/d", "symlink"), ("/p", "file")]


def test_refused_archives() -> None:
    """[TAR-3] Truncated, corrupt, unsupported."""
    good = archive([("a", "f", b"x" * 700)])
    with pytest.raises(SpecError, match="truncated archive: member needs 700 bytes"):
        decode_layer(good[:900])
    with pytest.raises(SpecError, match="no end-of-archive marker"):
        decode_layer(good[:1536])
    corrupt = bytearray(good)
    corrupt[10] ^= 0xFF
    with pytest.raises(SpecError, match="checksum mismatch"):
        decode_layer(bytes(corrupt))
    with pytest.raises(SpecError, match="unsupported entry type 'S'"):
        decode_layer(archive([("sparse", "S", b"")], tarfile.GNU_FORMAT))


names = st.text(alphabet="abc.-_é", min_size=1, max_size=8).filter(
    lambda name: name not in (".", "..") and not name.startswith(".wh.")
)
paths = st.lists(names, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))


@st.composite
def layer_values(draw: st.DrawFn) -> LayerTar:
    """Any layer value, with parents as directories and hardlinks to files."""
    chosen = sorted(set(draw(st.lists(paths, max_size=8))), key=lambda path: path.count("/"))
    entries: dict[str, TarEntry] = {}
    for path in chosen:
        if any(path.startswith(other + "/") and entries[other].kind != "dir" for other in entries):
            continue
        kinds: list[Kind] = ["file", "dir", "symlink", "hardlink", "char", "fifo"]
        kind = draw(st.sampled_from(kinds))
        files = [each for each in entries.values() if each.kind == "file"]
        if kind == "hardlink" and not files:
            kind = "file"
        entries[path] = TarEntry(
            path,
            kind,
            mode=draw(st.integers(0, 0o7777)),
            uid=draw(st.sampled_from([0, 1000, 2**21, 2**32 - 2])),
            gid=draw(st.sampled_from([0, 50])),
            mtime=draw(st.sampled_from([0, 1_700_000_000 * 10**9, 1_700_000_000 * 10**9 + 123])),
            data=draw(st.binary(max_size=600)) if kind == "file" else b"",
            link=(
                draw(st.sampled_from(files)).path
                if kind == "hardlink"
                else "../t" * draw(st.integers(1, 40))
                if kind == "symlink"
                else ""
            ),
            device=(draw(st.integers(0, 255)), draw(st.integers(0, 255))) if kind == "char" else (0, 0),
            xattrs=tuple(
                sorted(
                    draw(
                        st.dictionaries(st.sampled_from(["user.a", "security.capability"]), st.binary(max_size=4))
                    ).items()
                )
            ),
        )
    # No whiteout below a non-directory of the layer (TAR-6).
    whiteouts = frozenset(
        path
        for path in draw(st.lists(paths, max_size=3))
        if not any(path.startswith(other + "/") and entry.kind != "dir" for other, entry in entries.items())
    )
    opaque = frozenset(path for path, entry in entries.items() if entry.kind == "dir" and draw(st.booleans()))
    return LayerTar(tuple(sorted(entries.values(), key=lambda entry: tuple(entry.path.split("/")))), whiteouts, opaque)


@given(layer_values())
def test_encoding_round_trips(layer: LayerTar) -> None:
    """[TAR-4] decode(encode(layer)) == layer, the encoding is a fixed point, links follow targets."""
    encoded = encode_layer(layer)
    assert decode_layer(encoded) == layer
    assert encode_layer(decode_layer(encoded)) == encoded
    assert len(encoded) % 512 == 0
    # Python's tarfile reads it too: one member per entry and per marker.
    with tarfile.open(fileobj=io.BytesIO(encoded)) as tar:
        members = tar.getmembers()
    assert len(members) == len(layer.entries) + len(layer.whiteouts) + len(layer.opaque)
    # Every hardlink comes after its target, as extractors need.
    seen: set[str] = set()
    for member in members:
        if member.islnk():
            assert member.linkname in seen, (member.name, member.linkname)
        seen.add(member.name.rstrip("/"))


def test_identity() -> None:
    """[IDENTITY-1][IDENTITY-2] DiffIDs of canonical archives, ChainIDs by the spec's formula."""
    assert diff_id(encode_layer(LayerTar(()))) == EMPTY_LAYER_DIFF_ID
    assert diff_id(b"\0" * 1024) == EMPTY_LAYER_DIFF_ID
    one = diff_id(encode_layer(LayerTar((TarEntry("/a", "file", data=b"1"),))))
    two = diff_id(encode_layer(LayerTar((), frozenset({"/a"}))))
    joined = "sha256:" + hashlib.sha256(f"{one} {two}".encode()).hexdigest()
    assert chain_ids([one, two]) == [one, joined]
    assert chain_ids([]) == []
    assert chain_ids([two, one])[1] != joined


def test_media_types() -> None:
    """[IDENTITY-3]"""
    tar = encode_layer(LayerTar((TarEntry("/a", "file", data=b"z" * 100),)))
    assert uncompressed(tar, "application/vnd.oci.image.layer.v1.tar") == tar
    assert uncompressed(gzip.compress(tar), "application/vnd.oci.image.layer.v1.tar+gzip") == tar
    assert uncompressed(gzip.compress(tar), "application/vnd.docker.image.rootfs.diff.tar.gzip") == tar
    frame = zstandard.ZstdCompressor().compress(tar)
    assert uncompressed(frame, "application/vnd.oci.image.layer.v1.tar+zstd") == tar
    with pytest.raises(SpecError, match="unknown layer media type"):
        uncompressed(tar, "application/x-tar")
    with pytest.raises(SpecError, match="corrupt compressed data"):
        uncompressed(gzip.compress(tar)[:-9], "application/vnd.oci.image.layer.v1.tar+gzip")
    with pytest.raises(SpecError, match="corrupt compressed data"):
        uncompressed(frame[:-3], "application/vnd.oci.image.layer.v1.tar+zstd")


class _Trickle:
    """A source that gives at most ``step`` bytes a read (files and tar members give all that is asked
    below that: gzip's header reader needs it)."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.at = data, step, 0

    def read(self, size: int = -1, /) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        chunk = self.data[self.at : self.at + size]
        self.at += len(chunk)
        return chunk


ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


@pytest.mark.parametrize("step", [4096, 100_000, 1 << 20])
def test_streamed_decompression_reads_every_member_and_frame(step: int) -> None:
    """[IDENTITY-3] Several gzip members or zstd frames stream as one tar; one cut short is an error."""
    tar = encode_layer(LayerTar((TarEntry("/a", "file", data=bytes(range(256)) * 40),)))
    half = len(tar) // 2
    gz = gzip.compress(tar[:half]) + gzip.compress(tar[half:])
    zst = zstandard.ZstdCompressor().compress(tar[:half]) + zstandard.ZstdCompressor().compress(tar[half:])
    for blob, kind in ((gz, "application/vnd.oci.image.layer.v1.tar+gzip"), (zst, ZSTD)):
        read = decompressing(_Trickle(blob, step), kind)
        parts = []
        while part := read(999):
            parts.append(part)
        assert b"".join(parts) == tar
        assert uncompressed(blob, kind) == tar
        cut = decompressing(_Trickle(blob[:-5], step), kind)
        with pytest.raises((EOFError, OSError, zstandard.ZstdError)):
            while cut(999):
                pass


def _header(name: bytes, flag: bytes, size: int) -> bytes:
    """A ustar header with a right checksum; a size beyond octal is written in base-256."""
    header = bytearray(512)
    header[0 : len(name)] = name
    header[100:108] = b"0000644\0"
    header[108:116] = header[116:124] = b"0000000\0"
    field = f"{size:011o}".encode() + b"\0" if size < 8**11 else b"\x80" + size.to_bytes(11, "big")
    header[124:136] = field
    header[136:148] = b"00000000000\0"
    header[156:157] = flag
    header[257:265] = b"ustar\x0000"
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}".encode() + b"\0 "
    return bytes(header)


class _Counting:
    """A reader that remembers the largest read asked of it."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)
        self.largest = 0

    def read(self, size: int) -> bytes:
        self.largest = max(self.largest, size)
        return self.stream.read(size)


def test_data_no_reader_needs_is_skipped_in_chunks() -> None:
    """[TAR-5] a directory's 8 MiB of data is read a chunk at a time and dropped; the layer is still read."""
    from cowspec.oci.identity import file_digest
    from cowspec.oci.layer_tar import CHUNK, decode_layer_stream

    size = 8 << 20
    data = _header(b"big/", b"5", size) + b"\0" * size + _header(b"big/f", b"0", 2) + b"hi".ljust(512, b"\0")
    reader = _Counting(data + b"\0" * 1024)
    layer = decode_layer_stream(reader.read, file_digest)
    assert [entry.path for entry in layer.entries] == ["/big", "/big/f"]
    assert reader.largest <= CHUNK


@pytest.mark.parametrize("flag", [b"x", b"L", b"K"])
def test_extended_records_are_bounded(flag: bytes) -> None:
    """[TAR-5] a PAX or long-name record over 1 MiB is refused, whether the archive holds its bytes or not."""
    size = (1 << 20) + 1
    whole = _header(b"././@LongLink", flag, size) + b"a" * size + b"\0" * (-size % 512) + _header(b"f", b"0", 0)
    with pytest.raises(SpecError, match=r"entry 0 \(at byte 0\): a PAX or long-name record of 1048577 bytes"):
        decode_layer(whole + b"\0" * 1024)
    with pytest.raises(SpecError, match="truncated archive"):
        decode_layer(_header(b"././@LongLink", flag, 1 << 40) + b"a" * 4096)


def test_paths_are_bounded() -> None:
    """[TAR-5] a name or link target over PATH_MAX is refused before any parent of it is made."""
    deep = "a/" * 2048 + "f"
    with pytest.raises(SpecError, match="name longer than PATH_MAX"):
        decode_layer(archive([(deep, "f", b"")]))
    with pytest.raises(SpecError, match="link target longer than PATH_MAX"):
        decode_layer(archive([("l", "l", "x" * 4097)]))
    fits = "a/" * 2000 + "f"
    assert decode_layer(archive([(fits, "f", b"")])).entries[-1].path == "/" + fits


def test_following_a_symlink_never_makes_a_path_over_path_max() -> None:
    """[TAR-5] with --under-symlink follow, a resolution longer than PATH_MAX is given up, as a loop is."""
    from cowspec.oci.apply import ApplyOptions, flatten
    from cowspec.oci.layer_tar import PATH_MAX

    target = "/" + "/".join(["t" * 200] * 15)  # 3,015 bytes: fits, but not with what follows it
    below = LayerTar((TarEntry("/s", "symlink", link=target),))
    above = LayerTar((TarEntry("/s/" + "/".join(["r" * 200] * 8), "file", data=b"x"),))
    rootfs = flatten([below, above], ApplyOptions(under_symlink="follow"))
    assert max(len(entry.path) for entry in rootfs.entries) <= PATH_MAX
    assert any(entry.path.startswith("/s/rrr") for entry in rootfs.entries)
