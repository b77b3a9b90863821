"""Reading images from disk: ``docker save`` tarballs and OCI image layouts.

Every blob is checked against its digest, and every layer against the
DiffID its config records, before anything is made of it. A problem gives a
``SpecError`` of one line naming the file and what is wrong.
"""

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import posixpath
import stat
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Literal, cast

import zstandard

from cowcheck.fastlayer import FastLayers, Region, gzip_zlib
from cowspec.errors import SpecError
from cowspec.oci.identity import PLAIN_TYPES, chain_ids, decompressing, diff_id, digest, file_digest
from cowspec.oci.layer_tar import BLOCK, CHUNK, MAX_EXTENDED, LayerTar, decode_layer_stream

OCI_INDEX = "index.json"
DOCKER_MANIFEST = "manifest.json"
PLAIN = "application/vnd.oci.image.layer.v1.tar"
STDIN = "-"
"""The IMAGE that names standard input: a ``docker save`` stream."""
MAX_JSON = 16 << 20
"""The largest index, manifest, config or ``manifest.json`` cowspec reads, in bytes."""
MAX_LINKS = 40
"""Links followed inside a tarball to find one file, as Linux's ELOOP bound."""
MAX_NESTING = 8
"""Image indexes followed one inside another, at most."""
COMPRESSIONS: dict[bytes, str] = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
"""A tarball's compression by its first bytes."""
MAX_SPOOL = 64 << 30
"""The most bytes cowspec copies to a temporary file: a compressed tarball decompressed, or standard input."""
ZSTD_SLICE = 2048
"""Compressed bytes given to zstd at a time: at its largest ratio (an RLE block of 128 KiB in 4 bytes), 64 MiB out."""
READ_ERRORS = (OSError, EOFError, ValueError, tarfile.TarError, zlib.error, lzma.LZMAError, RecursionError)
"""What reading a damaged tarball, plain or compressed, can raise."""


@dataclass(frozen=True)
class ImageLayer:
    """One layer of an image, checked and decoded."""

    diff_id: str
    chain_id: str
    media_type: str
    archive_size: int
    layer: LayerTar


class _Source:
    """Files by name, from a directory or from a tarball: only regular files inside the image.

    A name is refused when it is absolute, climbs out with ``..``, or leads
    out of the image through a symlink; a file that is not a regular one (a
    FIFO, a device, a directory) is refused before it is read. In a tarball,
    symlinks and hardlinks are followed inside the tarball only. A damaged
    tarball is refused as such when it is opened.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.root = ""
        self.tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        self._region_path: str | None = None
        """The file on disk that holds the tarball's bytes as they are, for ``region``."""
        if path == STDIN:
            self.path = "<stdin>"
            if sys.stdin is None:
                raise SpecError(f"{self.path}: standard input is closed")
            self._open_tar(*_spool(sys.stdin.buffer, self.path))
            return
        try:
            status = os.stat(path)
        except FileNotFoundError:
            raise SpecError(f"{path}: no such file or directory") from None
        except OSError as error:
            raise SpecError(f"{path}: cannot read ({error.strerror})") from None
        if stat.S_ISDIR(status.st_mode):
            self.root = os.path.realpath(path)
        elif stat.S_ISREG(status.st_mode):
            self._open_file(path)
        else:
            raise SpecError(f"{path}: neither a directory nor a regular file")

    def _open_file(self, path: str) -> None:
        """A tarball on disk: read in place if plain, else decompressed once to a temporary file."""
        try:
            handle = open(path, "rb")  # noqa: SIM115  (kept open while the image is read)
            head = handle.read(BLOCK)
            handle.seek(0)
        except OSError as error:
            raise SpecError(f"{self.path}: cannot read ({error.strerror})") from None
        if _compression(head) is None:
            self._region_path = path
            self._open_tar(handle, head, False)
            return
        with handle:
            self._open_tar(*_spool(handle, self.path))

    def _open_tar(self, fileobj: BinaryIO, head: bytes, compressed: bool) -> None:
        """Read the members of the plain tarball ``fileobj``; ``head``: the first bytes of the file as given."""
        archive = compressed or (len(head) == BLOCK and head[257:262] == b"ustar")
        if self._region_path is None and os.path.isdir("/proc/self/fd"):
            # A copy in a temporary file (standard input, or decompressed): unnamed, but a file on disk,
            # which the fast reader reads in place.
            self._region_path = f"/proc/self/fd/{fileobj.fileno()}"
        try:
            # Kept open while the image is read.
            self.tar = tarfile.open(fileobj=fileobj, mode="r:", tarinfo=_BoundedInfo)  # noqa: SIM115
            for member in self.tar.getmembers():
                self._members[posixpath.normpath(member.name.lstrip("/"))] = member
            # tarfile ends quietly at a cut or at a damaged header: the archive
            # must go on with its end-of-archive marker.
            self.tar.fileobj.seek(self.tar.offset)
            end = self.tar.fileobj.read(BLOCK)
        except READ_ERRORS as error:
            if not archive:
                raise SpecError(f"{self.path}: not an image directory or tarball") from None
            raise SpecError(f"{self.path}: truncated or corrupt tarball ({_reason(error)})") from None
        if len(end) < BLOCK:
            raise SpecError(f"{self.path}: truncated tarball: no end-of-archive marker after byte {self.tar.offset}")
        if end != b"\0" * BLOCK:
            raise SpecError(f"{self.path}: corrupt tarball: a damaged header at byte {self.tar.offset}")

    def _clean(self, name: str, what: str = "") -> str:
        """``name`` as a relative name inside the image; refused if it is absolute or climbs out."""
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if name.startswith("/") or "\0" in name or ".." in parts or not parts:
            raise SpecError(f"{self.path}: {what or 'file'} {name!r} names no file inside the image")
        return "/".join(parts)

    def _member(self, name: str) -> tarfile.TarInfo:
        """The regular member ``name`` names, symlinks and hardlinks followed inside the tarball."""
        clean = self._clean(name)
        for _ in range(MAX_LINKS):
            member = self._members.get(clean)
            if member is None:
                raise SpecError(f"{self.path}: {name} is missing")
            if member.isreg():
                return member
            if not (member.issym() or member.islnk()):
                raise SpecError(f"{self.path}: {name} is not a regular file")
            target = member.linkname
            if member.issym():
                if target.startswith("/"):
                    raise SpecError(f"{self.path}: {name} is a link leading out of the image")
                target = posixpath.join(posixpath.dirname(clean), target)
            target = posixpath.normpath(target)
            if target == ".." or target.startswith("../") or target.startswith("/"):
                raise SpecError(f"{self.path}: {name} is a link leading out of the image")
            clean = target
        raise SpecError(f"{self.path}: {name}: too many levels of links")

    def _file(self, name: str) -> tuple[str, int]:
        """The real path and size of the regular file ``name`` of a directory image."""
        real = os.path.realpath(os.path.join(self.root, self._clean(name)))
        if real != self.root and not real.startswith(self.root.rstrip(os.sep) + os.sep):
            raise SpecError(f"{self.path}: {name} is a link leading out of the image")
        try:
            status = os.stat(real)
        except FileNotFoundError:
            raise SpecError(f"{self.path}: {name} is missing") from None
        except OSError as error:
            raise SpecError(f"{self.path}: cannot read {name} ({error.strerror})") from None
        if not stat.S_ISREG(status.st_mode):
            raise SpecError(f"{self.path}: {name} is not a regular file")
        return real, status.st_size

    def size(self, name: str) -> int:
        """The size of the regular file ``name``; refused as ``open`` refuses it."""
        if self.tar is None:
            return self._file(name)[1]
        return self._member(name).size

    def open(self, name: str) -> BinaryIO:
        """A regular file of the image, to be read as a stream; read errors become ``SpecError``."""
        if self.tar is None:
            real, _ = self._file(name)
            try:
                # O_NONBLOCK: a FIFO swapped in after the check does not hang the open.
                handle = os.fdopen(os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY), "rb")
            except OSError as error:
                raise SpecError(f"{self.path}: cannot read {name} ({error.strerror})") from None
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                handle.close()
                raise SpecError(f"{self.path}: {name} is not a regular file")
            return cast(BinaryIO, _Guarded(handle, name))
        member = self._member(name)
        try:
            stream = self.tar.extractfile(member)
        except READ_ERRORS as error:
            raise SpecError(f"{self.path}: cannot read {name} ({_reason(error)})") from None
        if stream is None:
            raise SpecError(f"{self.path}: {name} is not a regular file")
        return cast(BinaryIO, _Guarded(cast(BinaryIO, stream), name))

    def read(self, name: str, limit: int = MAX_JSON) -> bytes:
        """The bytes of ``name``, refused beyond ``limit``."""
        size = self.size(name)
        if size > limit:
            raise SpecError(f"{self.path}: {name} is {size} bytes, over cowspec's bound of {limit} for this file")
        with self.open(name) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise SpecError(f"{self.path}: {name} is over cowspec's bound of {limit} bytes for this file")
        return data

    def region(self, name: str) -> Region | None:
        """Where the file ``name`` lies, as bytes of a file on disk; None if it is not stored plainly."""
        try:
            if self.tar is None:
                real, size = self._file(name)
                return Region(real, 0, size)
            if self._region_path is None:
                return None  # no file on disk holds the tarball as it is read
            member = self._member(name)
        except SpecError:
            return None  # the streaming reader refuses it, in its order
        if member.issparse():
            return None
        return Region(self._region_path, member.offset_data, member.size)

    def has(self, name: str) -> bool:
        """Whether the image holds something by the name ``name`` (False for a name outside it)."""
        try:
            clean = self._clean(name)
        except SpecError:
            return False
        if self.tar is None:
            return os.path.lexists(os.path.join(self.root, clean))
        return clean in self._members

    def json(self, name: str, what: str = "") -> object:
        data = self.read(name)
        label = f"{name} ({what})" if what else name
        try:
            return json.loads(data)
        except RecursionError:
            raise SpecError(f"{self.path}: {label}: JSON nested too deeply to read") from None
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            raise SpecError(f"{self.path}: {label}: not valid JSON ({error})") from None

    def blob_json(self, wanted: str, what: str) -> tuple[str, object]:
        """The blob ``wanted`` (a digest), checked against it, as JSON; and its name."""
        name = _blob_name(self, wanted)
        data = self.read(name)
        if digest(data) != wanted:
            raise SpecError(f"{self.path}: {name} ({what}) does not match its digest (got {digest(data)})")
        return name, self.json(name, what)


class _BoundedInfo(tarfile.TarInfo):
    """tarfile's member reader, refusing what it would read whole into memory.

    tarfile keeps a GNU long name or a PAX header of any declared size in
    memory, and reads a sparse member's map block by block: the outer
    tarball is held to the layers' bound on extended records [TAR-5], and a
    ``docker save`` has no sparse member.
    """

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        extended = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE)
        if self.type in extended and self.size > MAX_EXTENDED:
            raise tarfile.ReadError(f"a header record of {self.size} bytes at byte {self.offset}")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise tarfile.ReadError(f"a sparse member at byte {self.offset}")
        member: tarfile.TarInfo = super()._proc_member(archive)  # type: ignore[misc]
        return member

    def _sparse(self, *_: object) -> None:
        # PAX sparse maps are read number by number from the member's data.
        raise tarfile.ReadError(f"a sparse member at byte {self.offset}")

    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _sparse


class _Guarded:
    """A file of the image whose read errors (a cut or damaged tarball) are ``SpecError``."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self._stream = stream
        self._name = name

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except READ_ERRORS as error:
            raise SpecError(f"{self._name}: truncated or corrupt ({_reason(error)})") from None

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "_Guarded":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _compression(head: bytes) -> str | None:
    """The compression of a tarball that begins with ``head``; None for none."""
    return next((kind for magic, kind in COMPRESSIONS.items() if head.startswith(magic)), None)


def _spool(source: BinaryIO, where: str) -> tuple[BinaryIO, bytes, bool]:
    """``source`` copied once to an unnamed temporary file (in ``$TMPDIR``), which the system removes.

    A compressed tarball is decompressed on the way, once: tarfile would
    decompress it again from the start for every member read out of order.
    At most ``MAX_SPOOL`` bytes are written. Gives the temporary file (at its
    start), the first bytes of ``source``, and whether it was compressed.
    """
    spool = tempfile.TemporaryFile()  # noqa: SIM115  (kept open while the image is read)
    try:
        try:
            head = source.read(BLOCK)
        except OSError as error:
            raise SpecError(f"{where}: cannot read ({error.strerror})") from None
        kind = _compression(head)
        pieces = _inflated(head, source, kind) if kind else _copied(head, source)
        total = 0
        while True:
            try:
                piece = next(pieces, b"")
            except OSError as error:
                raise SpecError(f"{where}: cannot read ({error.strerror})") from None
            except _Corrupt as error:
                raise SpecError(f"{where}: truncated or corrupt tarball ({error})") from None
            if not piece:
                break
            total += len(piece)
            if total > MAX_SPOOL:
                what = f"decompresses ({kind}) to" if kind else "is"
                raise SpecError(f"{where}: {what} more than {MAX_SPOOL} bytes, cowspec's bound for a tarball it copies")
            try:
                spool.write(piece)
            except OSError as error:
                raise SpecError(f"{where}: cannot copy to a temporary file ({error.strerror})") from None
        try:
            spool.flush()
            spool.seek(0)
        except OSError as error:
            raise SpecError(f"{where}: cannot copy to a temporary file ({error.strerror})") from None
    except BaseException:
        spool.close()
        raise
    return cast(BinaryIO, spool), head, kind is not None


def _copied(head: bytes, source: BinaryIO) -> Iterator[bytes]:
    yield head
    while chunk := source.read(CHUNK):
        yield chunk


class _Corrupt(Exception):
    """Compressed data that is cut short or damaged; the message says how."""


class _Inflater:
    """One compressed stream (a gzip member, a bzip2 or xz stream, a zstd frame), its output a piece at a time."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._zlib = gzip_zlib.decompressobj(31) if kind == "gzip" else None
        self._other: bz2.BZ2Decompressor | lzma.LZMADecompressor | None = (
            bz2.BZ2Decompressor()
            if kind == "bzip2"
            else lzma.LZMADecompressor(lzma.FORMAT_XZ)
            if kind == "xz"
            else None
        )
        self._zstd = zstandard.ZstdDecompressor().decompressobj() if kind == "zstd" else None
        self.eof = False
        self.unused = b""
        """What followed the end of the stream in the data fed."""

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The output for ``data``, in pieces of at most ``CHUNK`` bytes (zstd: see ``ZSTD_SLICE``)."""
        try:
            if self._zlib is not None:
                while True:
                    out = self._zlib.decompress(data, CHUNK)
                    data = self._zlib.unconsumed_tail
                    yield out
                    if self._zlib.eof or (not data and len(out) < CHUNK):
                        break
                self.eof, self.unused = self._zlib.eof, self._zlib.unused_data
            elif self._other is not None:
                yield self._other.decompress(data, CHUNK)
                while not self._other.eof and not self._other.needs_input:
                    yield self._other.decompress(b"", CHUNK)
                self.eof, self.unused = self._other.eof, self._other.unused_data
            else:
                assert self._zstd is not None
                for start in range(0, len(data), ZSTD_SLICE):
                    yield self._zstd.decompress(data[start : start + ZSTD_SLICE])
                    if self._zstd.eof:
                        self.eof, self.unused = True, self._zstd.unused_data + data[start + ZSTD_SLICE :]
                        break
        except (
            zlib.error,
            gzip_zlib.error,
            OSError,
            EOFError,
            ValueError,
            lzma.LZMAError,
            zstandard.ZstdError,
        ) as error:
            raise _Corrupt(f"{self.kind}: {_reason(error)}") from None


def _inflated(head: bytes, source: BinaryIO, kind: str) -> Iterator[bytes]:
    """The data inside a compressed tarball, a piece at a time.

    Every stream is read, one after another (``pigz`` and ``cat`` join
    gzip members); zero bytes between and after them are padding. Bytes
    after the last stream that begin no stream of the same kind are
    ignored, as ``gzip -d`` ignores trailing garbage (the tar's own end
    marker is checked). Data that ends inside a stream, or a damaged stream,
    raise ``_Corrupt``.
    """
    magic = next(key for key, value in COMPRESSIONS.items() if value == kind)
    data, ended = head, False
    while True:
        # Between streams: skip the padding; find whether another stream begins.
        data = data.lstrip(b"\0")
        while not ended and len(data) < len(magic):
            chunk = source.read(CHUNK)
            ended = not chunk
            data = (data + chunk).lstrip(b"\0")
        if not data.startswith(magic):
            return
        stream = _Inflater(kind)
        while True:
            for piece in stream.feed(data):
                if piece:
                    yield piece
            if stream.eof:
                data = stream.unused
                break
            data = source.read(CHUNK)
            if not data:
                raise _Corrupt(f"{kind}: the compressed data end before the end of the stream")


def _field(document: object, key: str, where: str) -> object:
    if not isinstance(document, dict) or key not in document:
        raise SpecError(f"{where}: missing {key!r}")
    return cast(dict[str, object], document)[key]


def _string_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(each, str) for each in value):
        raise SpecError(f"{where}: expected a list of strings")
    return cast(list[str], value)


Progress = Callable[[int, int], None]


def read_image(
    path: str,
    on_layer: Progress | None = None,
    keep_data: bool = False,
    reader: "Reader" = "auto",
    ref: str | None = None,
    platform: str | None = None,
) -> list[ImageLayer]:
    """The checked layers of the image at ``path``, bottom first.

    ``on_layer(index, count)`` is called before each layer is read. File
    bytes are hashed and dropped unless ``keep_data`` asks to keep them.
    ``ref`` and ``platform`` choose one image where there are several (see
    ``ImageReading``).
    """
    reading = ImageReading(path, on_layer, keep_data, reader, ref, platform)
    for _ in reading.values():
        pass
    return reading.layers


@dataclass(frozen=True)
class _Stream:
    name: str
    """The layer's file in the image."""
    media_type: str
    blob_digest: str | None
    """What the blob must hash to, where the image names it (an OCI layout)."""


Reader = Literal["auto", "stream"]
"""How ``ImageReading`` reads: ``auto`` frames and hashes layers in C where
the C module is built (``cowcheck.fastlayer``, with the hasher it chooses or
``COWSPEC_HASHER`` forces), else streams them through the model's reader;
``stream`` always streams."""


class ImageReading:
    """The layers of an image as they are read, bottom first.

    ``values()`` gives each layer's value as soon as it is decoded, so that
    a consumer (``flatten``) can work while later layers are still being
    read; only once it is exhausted has every digest and DiffID been checked
    (a mismatch raises ``SpecError`` then), and ``layers`` holds them all.
    Either way, the error an image gives is the first one a front-to-back
    reading meets.
    """

    def __init__(
        self,
        path: str,
        on_layer: Progress | None = None,
        keep_data: bool = False,
        reader: Reader = "auto",
        ref: str | None = None,
        platform: str | None = None,
    ) -> None:
        """Open the image ``path`` (``-``: a ``docker save`` stream on standard input).

        Of several images, ``ref`` names one (a ``RepoTags`` entry of a
        ``docker save``, an ``org.opencontainers.image.ref.name`` of an OCI
        layout); without it, ``PATH:REF`` does, unless ``PATH:REF`` is itself
        a path. ``platform`` (``os/arch[/variant]``, by default this
        machine's) chooses in an image index.
        """
        if ref is None:
            path, ref = split_reference(path)
        if platform is not None and (not 2 <= len(platform.split("/")) <= 3 or "" in platform.split("/")):
            raise SpecError(f"--platform {platform!r}: expected os/arch or os/arch/variant")
        self.reader = reader
        self.on_layer = on_layer
        self.keep_data = keep_data
        self.layers: list[ImageLayer] = []
        self.config: object = None
        """The image's config, as JSON: its history for ``inspect``, even of an image read from standard input."""
        self._source = _Source(path)
        self.path = self._source.path
        docker_tagged = ref is not None and self._source.has(DOCKER_MANIFEST) and _tagged(self._source, ref)
        if self._source.has(OCI_INDEX) and not docker_tagged:
            self._streams, self._expected, self.config = _read_oci(self._source, ref, platform or "")
        elif self._source.has(DOCKER_MANIFEST):
            self._streams, self._expected, self.config = _read_docker(self._source, ref)
        else:
            raise SpecError(
                f"{self.path}: neither an OCI layout (index.json) nor a docker save tarball (manifest.json)"
            )
        if len(self._expected) != len(self._streams):
            raise SpecError(
                f"{self.path}: config: {len(self._streams)} layers but {len(self._expected)} diff_ids in the config"
            )

    def values(self) -> Iterator[LayerTar]:
        """Each layer's value, bottom first; every identity checked by the end."""
        media_types = [stream.media_type for stream in self._streams]
        fast = None if self.reader == "stream" else FastLayers.open(self._open_blob, media_types, self.keep_data)
        if fast is None:
            yield from self._streamed(self._stream_layer)
            return
        try:
            yield from self._streamed(
                lambda index, where: fast.layer(index, where, lambda: self._stream_layer(index, where))
            )
        finally:
            fast.close()

    def _report(self, index: int) -> None:
        if self.on_layer is not None:
            self.on_layer(index, len(self._streams))

    def _check(self, index: int, found: str, blob: str) -> None:
        stream = self._streams[index]
        if stream.blob_digest is not None and blob != stream.blob_digest:
            raise SpecError(
                f"{self.path}: layer {index}: blob does not match its digest {stream.blob_digest} (got {blob})"
            )
        if found != self._expected[index]:
            raise SpecError(f"{self.path}: layer {index} has DiffID {found}, the config says {self._expected[index]}")

    def _finish(self, found: list[tuple[str, int, LayerTar]]) -> None:
        chains = chain_ids([each[0] for each in found])
        self.layers = [
            ImageLayer(diff, chain, stream.media_type, size, layer)
            for (diff, size, layer), chain, stream in zip(found, chains, self._streams, strict=True)
        ]

    def _streamed(self, read: Callable[[int, str], tuple[str, int, LayerTar, str]]) -> Iterator[LayerTar]:
        """Each layer read by ``read`` (the model's reader, or the fast one), checked before it is given."""
        found: list[tuple[str, int, LayerTar]] = []
        for index in range(len(self._streams)):
            self._report(index)
            diff, size, layer, blob = read(index, f"{self.path}: layer {index}")
            self._check(index, diff, blob)
            found.append((diff, size, layer))
            yield layer
        self._finish(found)

    def _stream_layer(self, index: int, where: str) -> tuple[str, int, LayerTar, str]:
        """The model's reader: the blob streamed, hashed and decoded on the way."""
        stream = self._streams[index]
        return read_layer(self._source.open(stream.name), stream.media_type, where, self.keep_data)

    def _open_blob(self, index: int) -> Region | tuple[int, BinaryIO]:
        """Layer ``index``'s blob, for the fast reader: where it lies in a file, or its size and a stream of it."""
        name = self._streams[index].name
        return self._source.region(name) or (self._source.size(name), self._source.open(name))


class _Hashing:
    """A buffered reader that hashes every byte it reads, a chunk at a time.

    Small reads (tar headers) are served from a buffer, so the hash sees a
    few large updates instead of one per header.
    """

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.digest = hashlib.sha256()
        self.count = 0
        self._buffer = bytearray()
        self._position = 0
        # hashlib lets go of the GIL on large updates: hash on a second
        # thread while the parser works on this one. One worker keeps order.
        self._hasher = ThreadPoolExecutor(max_workers=1)
        self._pending: list[Future[None]] = []

    def _chunk(self) -> bytes:
        """The next chunk of the stream, given to the hashing thread; b"" at its end."""
        chunk = self._read(CHUNK)
        if chunk:
            self._pending = [each for each in self._pending if not each.done()]
            self._pending.append(self._hasher.submit(self.digest.update, chunk))
            self.count += len(chunk)
        return chunk

    def _fill(self) -> bool:
        chunk = self._chunk()
        if not chunk:
            return False
        # Linear: what was read goes first (at most a chunk, or all of it), then the chunk is appended.
        del self._buffer[: self._position]
        self._position = 0
        self._buffer += chunk
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            while self._fill():
                pass
            size = len(self._buffer) - self._position
        if size > CHUNK:
            return self._read_large(size)
        while len(self._buffer) - self._position < size and self._fill():
            pass
        data = bytes(self._buffer[self._position : self._position + size])
        self._position += len(data)
        return data

    def _read_large(self, size: int) -> bytes:
        """A large read (a file's bytes, kept): gathered past the buffer, so that they are held once.

        ``BytesIO.getvalue`` gives its own buffer rather than a copy; the
        buffer and a slice of it would hold the bytes two or three times.
        """
        out = io.BytesIO()
        out.write(memoryview(self._buffer)[self._position : self._position + size])
        self._position += out.tell()
        while out.tell() < size and (chunk := self._chunk()):
            need = size - out.tell()
            out.write(memoryview(chunk)[:need])
            if len(chunk) > need:  # the rest of the chunk: the next reads'
                del self._buffer[: self._position]
                self._position = 0
                self._buffer += memoryview(chunk)[need:]
        return out.getvalue()

    def drain(self) -> None:
        self._buffer, self._position = bytearray(), 0
        while self._fill():
            self._buffer, self._position = bytearray(), 0

    def close(self) -> None:
        """Finish hashing and stop the hashing thread."""
        self._hasher.shutdown(wait=True)
        for each in self._pending:
            each.result()
        self._pending = []

    def name(self) -> str:
        self.close()
        return "sha256:" + self.digest.hexdigest()


def read_layer(
    stream: BinaryIO, media_type: str, where: str, keep_data: bool = False
) -> tuple[str, int, LayerTar, str]:
    """Stream one layer blob: its DiffID, its uncompressed size, its value and its blob digest.

    The blob is read once: hashed as it is, decompressed, hashed again (the
    DiffID) and parsed on the way, file bytes hashed and dropped. Nothing of
    it is kept but the entries.
    """
    raw = plain = _Hashing(stream.read)
    try:
        # An uncompressed blob's digest is its DiffID: hash it once.
        if media_type not in PLAIN_TYPES:
            plain = _Hashing(decompressing(raw, media_type))
        layer = decode_layer_stream(plain.read, None if keep_data else file_digest)
        plain.drain()
        raw.drain()
    except SpecError as error:
        raise SpecError(f"{where}: {error}") from None
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as error:
        raise SpecError(f"{where}: corrupt compressed data ({error}) [IDENTITY-3]") from None
    finally:
        plain.close()
        raw.close()
        stream.close()
    return plain.name(), plain.count, layer, raw.name()


def _diff_ids(config: object, where: str) -> list[str]:
    rootfs = _field(config, "rootfs", where)
    return _string_list(_field(rootfs, "diff_ids", where + " rootfs"), where + " rootfs.diff_ids")


INDEX_TYPES = frozenset(
    {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
)
MANIFEST_TYPES = frozenset(
    {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
)
REF_KEYS = ("org.opencontainers.image.ref.name", "io.containerd.image.name")


def machine_platform() -> str:
    """This machine's platform as an image index names it: ``linux/amd64``, ``linux/arm64``, ``linux/arm/v7``."""
    machine = platform.machine().lower()
    arch = {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "armv7l": "arm/v7",
        "armv6l": "arm/v6",
        "i386": "386",
        "i686": "386",
    }.get(machine, machine)
    return "linux/" + arch


def _refs(descriptor: object) -> list[str]:
    annotations = descriptor.get("annotations") if isinstance(descriptor, dict) else None
    if not isinstance(annotations, dict):
        return []
    return [value for key in REF_KEYS if isinstance(value := annotations.get(key), str)]


def _platform_of(descriptor: object) -> tuple[str, str, str] | None:
    found = descriptor.get("platform") if isinstance(descriptor, dict) else None
    if not isinstance(found, dict):
        return None
    values = [found.get(key, "") for key in ("os", "architecture", "variant")]
    if not all(isinstance(each, str) for each in values):
        return None
    os_name, arch, variant = cast(list[str], values)
    return os_name, arch, variant or ("v8" if arch == "arm64" else "")


def _platform_matches(found: tuple[str, str, str], wanted: str) -> bool:
    parts = wanted.split("/")
    if found[:2] != (parts[0], parts[1]):
        return False
    return len(parts) < 3 or found[2] == parts[2]


def _choose(source: _Source, descriptors: list[object], where: str, ref: str | None, wanted: str) -> object:
    """The one descriptor of ``descriptors`` that ``ref`` and the platform ``wanted`` name."""
    if ref is not None:
        named = [descriptors[index] for index in _named(ref, [_refs(each) for each in descriptors])]
        if not named:
            known = sorted({name for each in descriptors for name in _refs(each)})
            listed = ", ".join(known) if known else "none"
            raise SpecError(f"{source.path}: {where}: no image named {ref!r} (refs: {listed})")
        descriptors = named
    if len(descriptors) == 1:
        return descriptors[0]
    platforms = [_platform_of(each) for each in descriptors]
    if any(each is not None for each in platforms):
        for descriptor, found in zip(descriptors, platforms, strict=True):
            if found is not None and _platform_matches(found, wanted):
                return descriptor
        known = sorted({"/".join(part for part in each if part) for each in platforms if each is not None})
        raise SpecError(f"{source.path}: {where}: no image for platform {wanted} (platforms: {', '.join(known)})")
    known = sorted({name for each in descriptors for name in _refs(each)})
    listed = ", ".join(known) if known else "none"
    raise SpecError(
        f"{source.path}: {where} lists {len(descriptors)} images; name one as PATH:REF or with --ref (refs: {listed})"
    )


def _descriptor(source: _Source, value: object, where: str) -> tuple[str, str]:
    """The blob name and digest a descriptor names; its size checked against the blob's."""
    wanted = _field(value, "digest", where)
    if not isinstance(wanted, str):
        raise SpecError(f"{source.path}: {where}: digest is not a string")
    name = _blob_name(source, wanted)
    size = _field(value, "size", f"{source.path}: {where}")
    # A JSON integer: not true, not 356.0, not NaN or 1e999 (floats to Python's json), not "356".
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise SpecError(f"{source.path}: {where}: size is not a non-negative integer ({json.dumps(size)[:40]})")
    if size != source.size(name):
        raise SpecError(f"{source.path}: {name}: {source.size(name)} bytes, but {where} says {size}")
    return name, wanted


def _read_oci(source: _Source, ref: str | None = None, wanted: str = "") -> tuple[list[_Stream], list[str], object]:
    wanted = wanted or machine_platform()
    document = source.json(OCI_INDEX)
    where = OCI_INDEX
    for depth in range(MAX_NESTING):
        manifests = _field(document, "manifests", f"{source.path}: {where}")
        if not isinstance(manifests, list) or not manifests:
            raise SpecError(f"{source.path}: {where} lists no manifest")
        chosen = _choose(source, manifests, where, ref if depth == 0 else None, wanted)
        name, wanted_digest = _descriptor(source, chosen, f"{where} manifests")
        name, document = source.blob_json(wanted_digest, "manifest")
        declared = cast(dict[str, object], chosen).get("mediaType")
        own = document.get("mediaType") if isinstance(document, dict) else None
        nested = isinstance(document, dict) and "manifests" in document and "layers" not in document
        if declared in INDEX_TYPES or own in INDEX_TYPES or (own is None and nested):
            where = f"{name} (index)"
            continue
        return _read_manifest(source, name, document)
    raise SpecError(f"{source.path}: {where}: indexes nested more than {MAX_NESTING} deep")


def _read_manifest(source: _Source, name: str, manifest: object) -> tuple[list[_Stream], list[str], object]:
    """The layers of an OCI (or Docker v2) image manifest; ``mediaType`` is optional, as the image-spec says."""
    where = f"{source.path}: {name} (manifest)"
    if not isinstance(manifest, dict):
        raise SpecError(f"{where}: not a JSON object")
    kind = manifest.get("mediaType")
    if kind is not None and kind not in MANIFEST_TYPES:
        raise SpecError(f"{where}: unknown media type {kind!r}")
    config_name, config_digest = _descriptor(source, _field(manifest, "config", where), f"{name} config")
    config_name, config = source.blob_json(config_digest, "config")
    descriptors = _field(manifest, "layers", where)
    if not isinstance(descriptors, list):
        raise SpecError(f"{where}: 'layers' is not a list")
    streams: list[_Stream] = []
    for index, each in enumerate(descriptors):
        layer_name, layer_digest = _descriptor(source, each, f"{name} layer {index}")
        media_type = _field(each, "mediaType", f"{where}: layer {index}")
        if not isinstance(media_type, str):
            raise SpecError(f"{where}: layer {index}: mediaType is not a string")
        streams.append(_Stream(layer_name, media_type, layer_digest))
    return streams, _diff_ids(config, f"{source.path}: {config_name} (config)"), config


def _blob_name(source: _Source, wanted: str) -> str:
    algorithm, _, hexdigest = wanted.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise SpecError(f"{source.path}: unsupported or malformed digest {wanted!r}")
    return f"blobs/sha256/{hexdigest}"


def _read_docker(source: _Source, ref: str | None = None) -> tuple[list[_Stream], list[str], object]:
    manifest = source.json(DOCKER_MANIFEST)
    if isinstance(manifest, dict) and "schemaVersion" in manifest:
        # podman's docker-dir (skopeo dir:): a registry's manifest, its blobs beside it.
        raise SpecError(
            f"{source.path}: {DOCKER_MANIFEST} is a registry manifest (schemaVersion"
            f" {json.dumps(manifest['schemaVersion'])[:20]}), not a docker save image list: not a format cowspec reads"
        )
    if not isinstance(manifest, list) or not manifest:
        raise SpecError(f"{source.path}: {DOCKER_MANIFEST}: expected a list of images")
    tags = [each.get("RepoTags") if isinstance(each, dict) else None for each in manifest]
    names = [[tag for tag in each if isinstance(tag, str)] if isinstance(each, list) else [] for each in tags]
    if ref is not None:
        chosen = [manifest[index] for index in _named(ref, names)]
        if not chosen:
            listed = ", ".join(sorted({tag for each in names for tag in each})) or "none"
            raise SpecError(f"{source.path}: {DOCKER_MANIFEST}: no image tagged {ref!r} (tags: {listed})")
        image = chosen[0]
    elif len(manifest) == 1:
        image = manifest[0]
    else:
        listed = ", ".join(sorted({tag for each in names for tag in each})) or "none"
        raise SpecError(
            f"{source.path}: {DOCKER_MANIFEST} holds {len(manifest)} images;"
            f" name one as PATH:TAG or with --ref (tags: {listed})"
        )
    config_name = _field(image, "Config", f"{source.path}: {DOCKER_MANIFEST}")
    if not isinstance(config_name, str):
        raise SpecError(f"{source.path}: {DOCKER_MANIFEST}: Config is not a string")
    config = source.json(config_name, "config")
    layers = _string_list(
        _field(image, "Layers", f"{source.path}: {DOCKER_MANIFEST}"), f"{source.path}: {DOCKER_MANIFEST} Layers"
    )
    streams: list[_Stream] = []
    for name in layers:
        with source.open(name) as probe:
            magic = probe.read(2)
        streams.append(_Stream(name, PLAIN + "+gzip" if magic == b"\x1f\x8b" else PLAIN, None))
    return streams, _diff_ids(config, f"{source.path}: {config_name} (config)"), config


def _tagged(source: _Source, ref: str) -> bool:
    """Whether a ``docker save`` beside an OCI index (Docker 25 writes both) tags an image ``ref``."""
    manifest = source.json(DOCKER_MANIFEST)
    if not isinstance(manifest, list):
        return False
    tags = [each.get("RepoTags") if isinstance(each, dict) else None for each in manifest]
    return bool(
        _named(ref, [[tag for tag in each if isinstance(tag, str)] if isinstance(each, list) else [] for each in tags])
    )


def _normal(name: str) -> str:
    """A reference as Docker reads it: ``:latest`` where it names no tag or digest; Docker Hub's prefixes dropped."""
    if "@" not in name and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    for prefix in ("docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if name.startswith("library/") and "/" not in name[len("library/") :]:
        name = name[len("library/") :]
    return name


def _named(ref: str, names: list[list[str]]) -> list[int]:
    """Which images the lists ``names`` of name ``ref``: the ones that list it as given, else the ones that list it
    as Docker reads a reference (``localhost/img1`` is ``localhost/img1:latest``). A bare OCI ref name (``latest``,
    ``v1``: a tag alone) matches only as given."""
    exact = [index for index, known in enumerate(names) if ref in known]
    if exact:
        return exact
    wanted = _normal(ref)
    return [
        index
        for index, known in enumerate(names)
        if any(_normal(each) == wanted for each in known if "/" in each or ":" in each)
    ]


def split_reference(image: str) -> tuple[str, str | None]:
    """``PATH:REF`` as its path and ref; an existing path is taken whole, ':' and all."""
    if image == STDIN or os.path.lexists(image):
        return image, None
    for colon in reversed([index for index, char in enumerate(image) if char == ":"]):
        path = image[:colon]
        if path and (path == STDIN or os.path.lexists(path)) and image[colon + 1 :]:
            return path, image[colon + 1 :]
    return image, None


# -- writing images, for the tests and the real tools ---------------------------

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


def image_config(diff_ids: list[str], history: list[tuple[str, bool]] | None = None) -> bytes:
    """A minimal image config for ``diff_ids``.

    ``history`` gives (created_by, empty_layer) rows; by default one row per layer.
    """
    rows = history if history is not None else [(f"cowspec layer {index}", False) for index in range(len(diff_ids))]
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [
                {"created_by": created_by, **({"empty_layer": True} if empty else {})} for created_by, empty in rows
            ],
        },
        sort_keys=True,
    ).encode()


def write_oci_layout(directory: str, archives: list[bytes], tag: str = "latest", gzipped: bool = True) -> None:
    """An OCI image layout at ``directory`` holding one image of ``archives``."""
    blobs = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data: bytes, media_type: str) -> dict[str, object]:
        name = digest(data)
        with open(os.path.join(blobs, name.split(":", 1)[1]), "wb") as handle:
            handle.write(data)
        return {"mediaType": media_type, "digest": name, "size": len(data)}

    kind = PLAIN + ("+gzip" if gzipped else "")
    layers = [put(gzip.compress(each, mtime=0) if gzipped else each, kind) for each in archives]
    config = put(image_config([diff_id(each) for each in archives]), CONFIG_TYPE)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config, "layers": layers}
    described = put(json.dumps(manifest, sort_keys=True).encode(), MANIFEST_TYPE)
    described["annotations"] = {"org.opencontainers.image.ref.name": tag}
    with open(os.path.join(directory, OCI_INDEX), "w") as handle:
        json.dump({"schemaVersion": 2, "manifests": [described]}, handle)
    with open(os.path.join(directory, "oci-layout"), "w") as handle:
        json.dump({"imageLayoutVersion": "1.0.0"}, handle)


def docker_archive(archives: list[bytes], tag: str, history: list[tuple[str, bool]] | None = None) -> bytes:
    """A ``docker save`` tarball (the legacy manifest.json form) of ``archives``."""
    config = image_config([diff_id(each) for each in archives], history)
    config_name = digest(config).split(":", 1)[1] + ".json"
    files = {config_name: config}
    names = []
    for index, archive in enumerate(archives):
        names.append(f"{index:03d}/layer.tar")
        files[names[-1]] = archive
    files[DOCKER_MANIFEST] = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    return tar_of(files)


def tar_of(files: dict[str, bytes]) -> bytes:
    """A plain ustar archive of regular files, by name, in the order given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
