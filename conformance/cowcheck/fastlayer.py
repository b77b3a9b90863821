"""Reading an image's uncompressed layers fast, held to the model's reader.

The model reads a layer as a stream (``cowspec.layer_tar.iter_records``):
exact, and as slow as Python is per byte and per header. For an image whose
layers all lie uncompressed in files (a ``docker save`` tarball, an OCI
layout of plain layers), ``MappedLayers`` reads them another way:

1. the files are mapped into memory, not read;
2. native threads (``_fastlayer.Hasher``) start hashing every layer (its
   DiffID) at once, sixteen buffers at a time;
3. meanwhile the C module frames every header (``_fastlayer.scan``), and
   each layer's files join the hashing as soon as it is framed, files in
   order and layers alongside; a layer with any header the C code will not
   vouch for stops all that and sends the whole image back to the model's
   reader, which gives the answer or the error;
4. this thread turns each layer's headers into the model's records as the
   digests of its files arrive, and the model decodes and applies them.

What comes out is what the model's reader gives for the same bytes: the
tests hold the two readers to each other on generated and broken archives.
"""

import mmap
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cowspec.layer_tar import TYPEFLAGS, Content, Record

try:
    from . import _fastlayer  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only when the extension was not built
    _fastlayer = None

FILE_FLAGS = frozenset(flag for flag, kind in TYPEFLAGS.items() if kind == "file")
HASH_THREADS = max(1, min(len(os.sched_getaffinity(0)), 8))
"""Native threads that hash: one per core this process may use (up to eight)."""
LONG_LANES = 8
"""Lanes of each hashing thread that may hold a whole layer; the others hash files, in order."""


def available() -> bool:
    """Whether this machine reads layers the fast way (the C module is built and the CPU has AVX-512)."""
    return _fastlayer is not None and bool(_fastlayer.multi_buffer())


def scan(buffer: bytes | memoryview) -> list[tuple[object, ...]] | int:
    """The C module's framing of an uncompressed tar, or where it stopped vouching."""
    if _fastlayer is None:
        raise RuntimeError("cowcheck._fastlayer is not built")
    result: list[tuple[object, ...]] | int = _fastlayer.scan(buffer)
    return result


@dataclass(frozen=True)
class Region:
    """Where an uncompressed layer lies: a file, an offset in it, a length."""

    path: str
    offset: int
    size: int


class MappedLayers:
    """Plain layers, mapped, framed, and hashed by native threads as they are framed.

    ``MappedLayers.open`` gives None when a layer is not one the C module
    vouches for; the caller then reads the image with the model's reader.
    """

    def __init__(self, maps: list[mmap.mmap], views: list[memoryview], hasher: Any, keep_data: bool) -> None:
        self._maps = maps
        self._views = views
        self._hasher = hasher
        self._keep_data = keep_data
        self._scans: list[list[tuple[object, ...]]] = []
        self._first_file: list[int] = []

    @classmethod
    def open(cls, regions: Sequence[Region], keep_data: bool, portable: bool = False) -> "MappedLayers | None":
        """Map every layer, start hashing them, frame them and hash their files; None if one needs the model.

        Layers are hashed from the start, beside the framing; each layer's
        files as soon as it is framed, unless ``keep_data`` keeps their bytes
        instead. Only where the CPU hashes sixteen buffers at a time, unless
        ``portable`` asks for the C module's one-at-a-time hashing (for tests).
        """
        if _fastlayer is None or not regions or not (portable or available()):
            return None
        maps: dict[str, mmap.mmap] = {}
        views: list[memoryview] = []
        try:
            for region in regions:
                if region.path not in maps:
                    with open(region.path, "rb") as handle:
                        maps[region.path] = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
                whole = maps[region.path]
                if region.offset + region.size > len(whole):
                    raise ValueError(region)
                views.append(memoryview(whole)[region.offset : region.offset + region.size])
        except (OSError, ValueError):
            cls(list(maps.values()), views, None, keep_data).close()
            return None
        layers = cls(list(maps.values()), views, None, keep_data)
        layers._hasher = _fastlayer.Hasher(threads=HASH_THREADS, long_lanes=LONG_LANES, portable=portable, release=True)
        layers._hasher.add(views, long=True)
        for view in views:
            framed = _fastlayer.scan(view, release=True)
            if isinstance(framed, int):
                layers.close()
                return None
            layers._scans.append(framed)
            # No name here keeps the files' views: closing must find none left.
            layers._first_file.append(layers._hasher.add(layers._files(view, framed)))
        layers._first_file.append(layers._hasher.add([]))  # the count of jobs
        layers._hasher.close()
        return layers

    def _files(self, view: memoryview, framed: list[tuple[object, ...]]) -> list[memoryview]:
        files: list[memoryview] = []
        if not self._keep_data:
            for record in framed:
                if record[1] in FILE_FLAGS:
                    start, size = record[11], record[2]
                    assert isinstance(start, int) and isinstance(size, int)
                    files.append(view[start : start + size])
        return files

    def records(self, index: int) -> Iterator[Record]:
        """Layer ``index``'s records, as the model's reader gives them, once its files are hashed."""
        first, end = self._first_file[index], self._first_file[index + 1]
        digests = ""
        if not self._keep_data and end > first:
            self._hasher.wait(first, end)
            digests = self._hasher.digests(first, end).hex()
        view = self._views[index]
        job = 0
        keep = self._keep_data
        for record in self._scans[index]:
            start, size = record[11], record[2]
            assert isinstance(start, int) and isinstance(size, int)
            payload: bytes | Content
            if record[1] in FILE_FLAGS and not keep:
                payload = Content(size, digests[64 * job : 64 * job + 64])
                job += 1
            else:
                payload = view[start : start + size].tobytes()
            yield (*record[:11], payload)  # type: ignore[misc]

    def diff_id(self, index: int) -> str:
        """Layer ``index``'s DiffID (waits for it)."""
        self._hasher.wait(index, index + 1)
        digest: bytes = self._hasher.digests(index, index + 1)
        return "sha256:" + digest.hex()

    def size(self, index: int) -> int:
        """Layer ``index``'s length in bytes."""
        return len(self._views[index])

    def close(self) -> None:
        """Stop hashing and let go of the mappings."""
        if self._hasher is not None:
            self._hasher.cancel()  # lets go of the buffers it held
            self._hasher = None
        for view in self._views:
            view.release()
        self._views = []
        for each in self._maps:
            each.close()
        self._maps = []
