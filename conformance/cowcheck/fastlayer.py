"""Reading an image's uncompressed layers fast, held to the model's reader.

The model reads a layer as a stream (``cowspec.layer_tar.iter_records``):
exact, and as slow as Python is per byte and per header. For an image whose
layers all lie uncompressed in files (a ``docker save`` tarball, an OCI
layout of plain layers), ``MappedLayers`` reads them another way:

1. the files are mapped into memory, not read;
2. the C module frames every header (``_fastlayer.scan``); a layer with any
   header it will not vouch for sends the whole image back to the model's
   reader, which gives the answer or the error;
3. a second thread hashes every layer (its DiffID) and every file, sixteen
   buffers at a time, files in order and layers alongside;
4. this thread turns each layer's headers into the model's records as the
   digests of its files arrive, and the model decodes and applies them.

What comes out is what the model's reader gives for the same bytes: the
tests hold the two readers to each other on generated and broken archives.
"""

import mmap
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cowspec.layer_tar import TYPEFLAGS, Content, Record

try:
    from . import _fastlayer  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only when the extension was not built
    _fastlayer = None

FILE_FLAGS = frozenset(flag for flag, kind in TYPEFLAGS.items() if kind == "file")
POLL_SECONDS = 0.0005
HASH_THREADS = max(1, min(len(os.sched_getaffinity(0)), 8))
"""Native threads that hash: one per core this process may use (up to eight)."""
LONG_LANES = 8
"""Lanes of each hashing thread that may hold a whole layer; the others hash files, in order."""


def available() -> bool:
    """Whether this machine reads layers the fast way (the C module is built and the CPU has AVX-512)."""
    return _fastlayer is not None and bool(_fastlayer.multi_buffer())


def sha256_many(buffers: Sequence[bytes | memoryview], portable: bool = False) -> list[bytes]:
    """The SHA-256 of each buffer, by the C module (sixteen at a time where the CPU allows)."""
    if _fastlayer is None:
        raise RuntimeError("cowcheck._fastlayer is not built")
    digests: list[bytes] = _fastlayer.sha256_many(list(buffers), portable=portable)
    return digests


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
    """Plain layers, mapped, framed, and hashed on a second thread.

    ``MappedLayers.open`` gives None when a layer is not one the C module
    vouches for; the caller then reads the image with the model's reader.
    """

    def __init__(
        self, maps: list[mmap.mmap], views: list[memoryview], scans: list[list[tuple[object, ...]]], portable: bool
    ):
        self._portable = portable
        self._maps = maps
        self._views = views
        self._scans = scans
        self._keep_data = False
        self._first_file: list[int] = []
        self._digests = bytearray()
        self._done = bytearray()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def open(cls, regions: Sequence[Region], portable: bool = False) -> "MappedLayers | None":
        """Map and frame every layer; None if any layer needs the model's reader.

        Only where the CPU hashes sixteen buffers at a time, unless
        ``portable`` asks for the C module's one-at-a-time hashing (for tests).
        """
        if _fastlayer is None or not regions or not (portable or available()):
            return None
        maps: dict[str, mmap.mmap] = {}
        views: list[memoryview] = []
        scans: list[list[tuple[object, ...]]] = []
        try:
            for region in regions:
                if region.path not in maps:
                    with open(region.path, "rb") as handle:
                        maps[region.path] = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
                whole = maps[region.path]
                if region.offset + region.size > len(whole):
                    raise ValueError(region)
                view = memoryview(whole)[region.offset : region.offset + region.size]
                framed = _fastlayer.scan(view, release=True)
                views.append(view)
                if isinstance(framed, int):
                    raise ValueError(region)
                scans.append(framed)
        except (OSError, ValueError):
            for view in views:
                view.release()
            for each in maps.values():
                each.close()
            return None
        return cls(list(maps.values()), views, scans, portable)

    def start(self, keep_data: bool) -> None:
        """Start hashing every layer, and every file unless ``keep_data`` keeps their bytes instead."""
        self._keep_data = keep_data
        jobs: list[memoryview] = [view[:] for view in self._views]  # views of their own, released by the thread
        for view, records in zip(self._views, self._scans, strict=True):
            self._first_file.append(len(jobs))
            for record in records if not keep_data else ():
                if record[1] in FILE_FLAGS:
                    start, size = record[11], record[2]
                    assert isinstance(start, int) and isinstance(size, int)
                    jobs.append(view[start : start + size])
        self._first_file.append(len(jobs))
        self._digests = bytearray(32 * len(jobs))
        self._done = bytearray(len(jobs))
        self._thread = threading.Thread(target=self._hash, args=(jobs,), daemon=True)
        self._thread.start()

    def _hash(self, jobs: list[memoryview]) -> None:
        try:
            _fastlayer.sha256_many(
                jobs,
                portable=self._portable,
                long_count=len(self._views),
                long_lanes=LONG_LANES,
                digests=self._digests,
                done=self._done,
                threads=HASH_THREADS,
                release=True,
            )
        except BaseException as error:  # handed to the reading thread
            self._failure = error
        finally:
            for job in jobs:
                job.release()

    def _wait(self, start: int, end: int) -> None:
        while self._done.find(0, start, end) >= 0:
            if self._failure is not None:
                raise self._failure
            if (self._thread is None or not self._thread.is_alive()) and self._done.find(0, start, end) >= 0:
                raise RuntimeError("the hashing thread stopped before it was done")
            time.sleep(POLL_SECONDS)

    def _hex(self, job: int) -> str:
        return self._digests[32 * job : 32 * job + 32].hex()

    def records(self, index: int) -> Iterator[Record]:
        """Layer ``index``'s records, as the model's reader gives them, once its files are hashed."""
        if not self._keep_data:
            self._wait(self._first_file[index], self._first_file[index + 1])
        view = self._views[index]
        job = self._first_file[index]
        keep = self._keep_data
        for record in self._scans[index]:
            start, size = record[11], record[2]
            assert isinstance(start, int) and isinstance(size, int)
            payload: bytes | Content
            if record[1] in FILE_FLAGS and not keep:
                payload = Content(size, self._hex(job))
                job += 1
            else:
                payload = view[start : start + size].tobytes()
                job += record[1] in FILE_FLAGS
            yield (*record[:11], payload)  # type: ignore[misc]

    def diff_id(self, index: int) -> str:
        """Layer ``index``'s DiffID (waits for it)."""
        self._wait(index, index + 1)
        return "sha256:" + self._hex(index)

    def size(self, index: int) -> int:
        """Layer ``index``'s length in bytes."""
        return len(self._views[index])

    def close(self) -> None:
        """Wait for the hashing thread and let go of the mappings."""
        if self._thread is not None:
            self._thread.join()
        for view in self._views:
            view.release()
        self._views = []
        for each in self._maps:
            each.close()
        self._maps = []
