"""Layer identity: DiffID and ChainID, as the OCI image-spec defines them.

A layer's DiffID is the SHA-256 digest of its *uncompressed* tar, written
``sha256:<hex>`` [IDENTITY-1]. A stack's ChainID names the stack, not the
layer: the bottom layer's ChainID is its DiffID, and each layer above has
``sha256(ChainID(below) + " " + DiffID(layer))`` over the two prefixed
digests as text [IDENTITY-2]. The same layer on two different stacks has
two ChainIDs; stores share layers by ChainID.

Compressed layers are named by media type; ``decompressing`` reads the tar
inside a blob as it streams past, and ``uncompressed`` undoes the
compression of a blob in memory, both the same way [IDENTITY-3].
"""

import gzip
import hashlib
import io
import zlib
from collections.abc import Callable, Iterable
from typing import BinaryIO, Protocol, cast

import zstandard

from cowspec.errors import SpecError
from cowspec.oci.layer_tar import CHUNK

EMPTY_LAYER_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
PLAIN_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.docker.image.rootfs.diff.tar",
    }
)
GZIP_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)
ZSTD_TYPES = frozenset({"application/vnd.oci.image.layer.v1.tar+zstd"})


def file_digest(chunks: Iterable[bytes]) -> str:
    """The SHA-256 of a file's bytes, hex, from its chunks: how a layer's files are shown [APPLY-1]."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def diff_id(archive: bytes) -> str:
    """The DiffID of an uncompressed layer tar [IDENTITY-1]."""
    return digest(archive)


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The ChainID of every prefix of a stack, bottom first [IDENTITY-2]."""
    chains: list[str] = []
    for each in diff_ids:
        chains.append(each if not chains else digest(f"{chains[-1]} {each}".encode()))
    return chains


class Readable(Protocol):
    """Anything with ``read(n)``: a file, a ``BytesIO``, a hashing reader."""

    def read(self, size: int = -1, /) -> bytes: ...


def decompressing(source: Readable, media_type: str) -> Callable[[int], bytes]:
    """``read(n)`` of the tar inside a layer blob of ``media_type`` that ``source`` reads [IDENTITY-3].

    A gzip blob may hold several members and a zstd blob several frames, one
    after the other; a member or a frame cut short is an error when the read
    reaches it (``OSError``/``EOFError`` for gzip, ``zstandard.ZstdError``).
    """
    if media_type in PLAIN_TYPES:
        return source.read
    if media_type in GZIP_TYPES:
        members: Callable[[int], bytes] = gzip.GzipFile(fileobj=cast(BinaryIO, source), mode="rb").read
        return members
    if media_type in ZSTD_TYPES:
        return _ZstdFrames(source).read
    raise SpecError(f"unknown layer media type {media_type!r} [IDENTITY-3]")


def uncompressed(blob: bytes, media_type: str) -> bytes:
    """The tar inside a layer blob of ``media_type`` [IDENTITY-3]."""
    read = decompressing(io.BytesIO(blob), media_type)
    parts: list[bytes] = []
    try:
        while chunk := read(CHUNK):
            parts.append(chunk)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as error:
        raise SpecError(f"layer of type {media_type}: corrupt compressed data ({error}) [IDENTITY-3]") from None
    return b"".join(parts)


class _ZstdFrames:
    """Every zstd frame of a stream, one after another; a frame cut short is an error."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._in_frame = False
        self._ready = bytearray()
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        while not self._ended and (size < 0 or len(self._ready) < size):
            chunk = self._source.read(CHUNK)
            if not chunk:
                if self._in_frame:
                    raise zstandard.ZstdError("truncated frame")
                self._ended = True
            self._feed(chunk)
        taken = len(self._ready) if size < 0 else min(size, len(self._ready))
        data = bytes(self._ready[:taken])
        del self._ready[:taken]
        return data

    def _feed(self, data: bytes) -> None:
        while data:
            self._in_frame = True
            self._ready += self._frame.decompress(data)
            if not self._frame.eof:
                return
            data = self._frame.unused_data
            self._frame = zstandard.ZstdDecompressor().decompressobj()
            self._in_frame = False
