"""Layer identity: DiffID and ChainID, as the OCI image-spec defines them.

A layer's DiffID is the SHA-256 digest of its *uncompressed* tar, written
``sha256:<hex>`` [IDENTITY-1]. A stack's ChainID names the stack, not the
layer: the bottom layer's ChainID is its DiffID, and each layer above has
``sha256(ChainID(below) + " " + DiffID(layer))`` over the two prefixed
digests as text [IDENTITY-2]. The same layer on two different stacks has
two ChainIDs; stores share layers by ChainID.

Compressed layers are named by media type; ``uncompressed`` undoes the
compression a media type says [IDENTITY-3].
"""

import gzip
import hashlib
import zlib

import zstandard

from .errors import SpecError

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


def uncompressed(blob: bytes, media_type: str) -> bytes:
    """The tar inside a layer blob of ``media_type`` [IDENTITY-3]."""
    try:
        if media_type in PLAIN_TYPES:
            return blob
        if media_type in GZIP_TYPES:
            return gzip.decompress(blob)
        if media_type in ZSTD_TYPES:
            return _unzstd(blob)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as error:
        raise SpecError(f"layer of type {media_type}: corrupt compressed data ({error}) [IDENTITY-3]") from None
    raise SpecError(f"unknown layer media type {media_type!r} [IDENTITY-3]")


def _unzstd(blob: bytes) -> bytes:
    """Every zstd frame of ``blob``; an unfinished frame is an error."""
    parts: list[bytes] = []
    rest = blob
    while rest:
        state = zstandard.ZstdDecompressor().decompressobj()
        parts.append(state.decompress(rest))
        if not state.eof:
            raise zstandard.ZstdError("truncated frame")
        rest = state.unused_data
    return b"".join(parts)
