"""Reading images from disk: ``docker save`` tarballs and OCI image layouts.

Every blob is checked against its digest, and every layer against the
DiffID its config records, before anything is made of it. A problem gives a
``SpecError`` of one line naming the file and what is wrong.
"""

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Literal, cast

import zstandard

from cowspec.errors import SpecError
from cowspec.identity import PLAIN_TYPES, chain_ids, decompressing, diff_id, digest
from cowspec.layer_tar import CHUNK, LayerTar, decode_layer_stream, decode_members, iter_members

from .fastlayer import MappedLayers, Region

OCI_INDEX = "index.json"
DOCKER_MANIFEST = "manifest.json"
PLAIN = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class ImageLayer:
    """One layer of an image, checked and decoded."""

    diff_id: str
    chain_id: str
    media_type: str
    archive_size: int
    layer: LayerTar


class _Source:
    """Files by name, from a directory or from a tarball."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        if os.path.isdir(path):
            return
        try:
            self.tar = tarfile.open(path)  # noqa: SIM115  (kept open while the image is read)
        except FileNotFoundError:
            raise SpecError(f"{path}: no such file or directory") from None
        except (tarfile.TarError, OSError):
            raise SpecError(f"{path}: not an image directory or tarball") from None

    def read(self, name: str) -> bytes:
        try:
            if self.tar is None:
                with open(os.path.join(self.path, name), "rb") as handle:
                    return handle.read()
            member = self.tar.extractfile(name.removeprefix("./"))
            if member is None:
                raise KeyError(name)
            return member.read()
        except (KeyError, FileNotFoundError):
            raise SpecError(f"{self.path}: {name} is missing") from None
        except (OSError, tarfile.TarError, EOFError) as error:
            raise SpecError(f"{self.path}: cannot read {name} ({error})") from None

    def open(self, name: str) -> BinaryIO:
        """A file of the image, to be read as a stream."""
        try:
            if self.tar is None:
                return open(os.path.join(self.path, name), "rb")
            member = self.tar.extractfile(name.removeprefix("./"))
            if member is None:
                raise KeyError(name)
            return cast(BinaryIO, member)
        except (KeyError, FileNotFoundError):
            raise SpecError(f"{self.path}: {name} is missing") from None
        except (OSError, tarfile.TarError) as error:
            raise SpecError(f"{self.path}: cannot read {name} ({error})") from None

    def region(self, name: str) -> Region | None:
        """Where the file ``name`` lies, as bytes of a file on disk; None if it is not stored plainly."""
        try:
            if self.tar is None:
                path = os.path.join(self.path, name)
                return Region(path, 0, os.path.getsize(path)) if os.path.isfile(path) else None
            if not isinstance(self.tar.fileobj, io.BufferedReader):
                return None  # a compressed tarball: offsets are not file offsets
            member = self.tar.getmember(name.removeprefix("./"))
        except (KeyError, OSError):
            return None
        if not member.isreg() or member.issparse():
            return None
        return Region(self.path, member.offset_data, member.size)

    def has(self, name: str) -> bool:
        if self.tar is None:
            return os.path.exists(os.path.join(self.path, name))
        try:
            self.tar.getmember(name)
        except KeyError:
            return False
        return True

    def json(self, name: str) -> object:
        try:
            return json.loads(self.read(name))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SpecError(f"{self.path}: {name} is not valid JSON ({error})") from None

    def blob_json(self, wanted: str) -> object:
        try:
            return json.loads(self.blob(wanted))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SpecError(f"{self.path}: blob {wanted} is not valid JSON ({error})") from None

    def blob(self, wanted: str) -> bytes:
        data = self.read(_blob_name(self, wanted))
        if digest(data) != wanted:
            raise SpecError(f"{self.path}: blob {wanted} does not match its digest (got {digest(data)})")
        return data


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
    path: str, on_layer: Progress | None = None, keep_data: bool = False, reader: "Reader" = "auto"
) -> list[ImageLayer]:
    """The checked layers of the image at ``path``, bottom first.

    ``on_layer(index, count)`` is called before each layer is read. File
    bytes are hashed and dropped unless ``keep_data`` asks to keep them.
    """
    reading = ImageReading(path, on_layer, keep_data, reader)
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


Reader = Literal["auto", "stream", "portable"]
"""How ``ImageReading`` reads: ``auto`` maps plain layers and hashes them in
C where the CPU allows (``cowcheck.fastlayer``), else streams them through
the model's reader; ``stream`` always streams; ``portable`` maps and hashes
one buffer at a time in C whatever the CPU (for tests)."""


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
        self, path: str, on_layer: Progress | None = None, keep_data: bool = False, reader: Reader = "auto"
    ) -> None:
        self.path = path
        self.reader = reader
        self.on_layer = on_layer
        self.keep_data = keep_data
        self.layers: list[ImageLayer] = []
        self._source = _Source(path)
        if self._source.has(OCI_INDEX):
            self._streams, self._expected = _read_oci(self._source)
        elif self._source.has(DOCKER_MANIFEST):
            self._streams, self._expected = _read_docker(self._source)
        else:
            raise SpecError(f"{path}: neither an OCI layout (index.json) nor a docker save tarball (manifest.json)")
        if len(self._expected) != len(self._streams):
            raise SpecError(
                f"{path} config: {len(self._streams)} layers but {len(self._expected)} diff_ids in the config"
            )

    def values(self) -> Iterator[LayerTar]:
        """Each layer's value, bottom first; every identity checked by the end."""
        mapped = self._mapped()
        if mapped is None:
            yield from self._streamed()
            return
        try:
            yield from self._from_mapped(mapped)
        finally:
            mapped.close()

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

    def _streamed(self) -> Iterator[LayerTar]:
        """The model's reader: each blob streamed, hashed and decoded on the way."""
        found: list[tuple[str, int, LayerTar]] = []
        for index, stream in enumerate(self._streams):
            self._report(index)
            where = f"{self.path}: layer {index}"
            diff, size, layer, blob = read_layer(
                self._source.open(stream.name), stream.media_type, where, self.keep_data
            )
            self._check(index, diff, blob)
            found.append((diff, size, layer))
            yield layer
        self._finish(found)

    def _mapped(self) -> MappedLayers | None:
        """The layers mapped and framed for the fast reader, when every one is plain and in place."""
        if self.reader == "stream":
            return None
        regions: list[Region] = []
        for stream in self._streams:
            region = self._source.region(stream.name) if stream.media_type in PLAIN_TYPES else None
            if region is None:
                return None
            regions.append(region)
        return MappedLayers.open(regions, self.keep_data, portable=self.reader == "portable")

    def _from_mapped(self, mapped: MappedLayers) -> Iterator[LayerTar]:
        decoded: list[LayerTar] = []
        for index in range(len(self._streams)):
            self._report(index)
            try:
                layer = decode_members(iter_members(mapped.records(index)))
            except SpecError as error:
                # A front-to-back reading checks the layers below first.
                for below in range(index):
                    diff = mapped.diff_id(below)  # a plain blob's digest is its DiffID
                    self._check(below, diff, diff)
                raise SpecError(f"{self.path}: layer {index}: {error}") from None
            decoded.append(layer)
            yield layer
        found: list[tuple[str, int, LayerTar]] = []
        for index, layer in enumerate(decoded):
            diff = mapped.diff_id(index)  # a plain blob's digest is its DiffID
            self._check(index, diff, diff)
            found.append((diff, mapped.size(index), layer))
        self._finish(found)


class _Hashing:
    """A buffered reader that hashes every byte it reads, a chunk at a time.

    Small reads (tar headers) are served from a buffer, so the hash sees a
    few large updates instead of one per header.
    """

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.digest = hashlib.sha256()
        self.count = 0
        self._buffer = b""
        self._position = 0
        # hashlib lets go of the GIL on large updates: hash on a second
        # thread while the parser works on this one. One worker keeps order.
        self._hasher = ThreadPoolExecutor(max_workers=1)
        self._pending: list[Future[None]] = []

    def _fill(self) -> bool:
        chunk = self._read(CHUNK)
        if not chunk:
            return False
        self._pending = [each for each in self._pending if not each.done()]
        self._pending.append(self._hasher.submit(self.digest.update, chunk))
        self.count += len(chunk)
        self._buffer = self._buffer[self._position :] + chunk
        self._position = 0
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            while self._fill():
                pass
            size = len(self._buffer) - self._position
        while len(self._buffer) - self._position < size and self._fill():
            pass
        data = self._buffer[self._position : self._position + size]
        self._position += len(data)
        return data

    def drain(self) -> None:
        self._buffer, self._position = b"", 0
        while self._fill():
            self._buffer, self._position = b"", 0

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
        layer = decode_layer_stream(plain.read, keep_data)
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


def _read_oci(source: _Source) -> tuple[list[_Stream], list[str]]:
    index = source.json(OCI_INDEX)
    manifests = _field(index, "manifests", "index.json")
    if not isinstance(manifests, list) or not manifests:
        raise SpecError(f"{source.path}: index.json lists no manifest")
    if len(manifests) > 1:
        raise SpecError(f"{source.path}: index.json lists {len(manifests)} manifests; cowspec reads one-image layouts")
    manifest_digest = _field(manifests[0], "digest", "index.json manifest")
    manifest = source.blob_json(str(manifest_digest))
    if _field(manifest, "mediaType", "manifest") == "application/vnd.oci.image.index.v1+json":
        raise SpecError(f"{source.path}: the manifest is a nested index; cowspec reads one-image layouts")
    config = source.blob_json(str(_field(_field(manifest, "config", "manifest"), "digest", "manifest config")))
    descriptors = _field(manifest, "layers", "manifest")
    if not isinstance(descriptors, list):
        raise SpecError(f"{source.path}: manifest layers is not a list")
    streams: list[_Stream] = []
    for each in descriptors:
        wanted = str(_field(each, "digest", "layer"))
        streams.append(_Stream(_blob_name(source, wanted), str(_field(each, "mediaType", "layer")), wanted))
    return streams, _diff_ids(config, f"{source.path} config")


def _blob_name(source: _Source, wanted: str) -> str:
    algorithm, _, hexdigest = wanted.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise SpecError(f"{source.path}: unsupported or malformed digest {wanted!r}")
    return f"blobs/sha256/{hexdigest}"


def _read_docker(source: _Source) -> tuple[list[_Stream], list[str]]:
    manifest = source.json(DOCKER_MANIFEST)
    if not isinstance(manifest, list) or len(manifest) != 1:
        raise SpecError(f"{source.path}: manifest.json must describe exactly one image")
    config = source.json(str(_field(manifest[0], "Config", "manifest.json")))
    names = _string_list(_field(manifest[0], "Layers", "manifest.json"), "manifest.json Layers")
    streams: list[_Stream] = []
    for name in names:
        with source.open(name) as probe:
            magic = probe.read(2)
        streams.append(_Stream(name, PLAIN + "+gzip" if magic == b"\x1f\x8b" else PLAIN, None))
    return streams, _diff_ids(config, f"{source.path} config")


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
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
