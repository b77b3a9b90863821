"""Reading an image's layers fast, held to the model's reader.

The model reads a layer as a stream (``cowspec.oci.layer_tar.iter_records``):
exact, and as slow as Python is per byte and per header. ``FastLayers``
reads the same bytes another way, a layer at a time, bottom first:

1. a loader thread reads the layer's blob into memory (a copy from the page
   cache: no mapping, so a file cut short or changed under the reader gives
   an error or a digest mismatch, never a SIGBUS), has it hashed (the blob
   digest), and decompresses a gzip or zstd blob (ISA-L through ``isal``
   where installed, else zlib; ``zstandard``), while the layer below is
   being decoded; the whole tar is hashed too (its DiffID);
2. the C module frames every header (``_fastlayer.frame``) and native
   threads (``_fastlayer.Hasher``) hash every file, in order, then the
   whole tar;
3. once the digests of its files arrive, this thread has a layer of plain
   ustar headers decoded in C (``plain_layer``: the model's values, as the
   model's ``decode_members`` makes them); any other layer's headers are
   framed into the model's records (``_fastlayer.scan``) and the model
   decodes them.

Anything the fast path will not vouch for goes to the model's own reader,
which gives the answer or the error: a header the C code refuses (the
model reads the same bytes), compressed data that does not decompress
cleanly (the model reads the same blob), a layer larger than
``LAYER_LIMIT`` once decompressed, or a blob that cannot be read whole (the
model streams it from the image). So what comes out is what the model's
reader gives for the same bytes: the tests hold the two readers to each
other on generated and broken archives, with every hasher this CPU runs.
A compressed layer that declares itself larger than the limit (a gzip
trailer's ISIZE, a zstd frame's content size) goes to the model at once,
inflated by nobody first; the limit is still checked as a layer inflates,
since a declared size can lie (ISIZE is the size modulo 2**32).

Memory: at most ``PREFETCH + 1`` layers are held at once (the one being
decoded and those being loaded, two at a time, so that two cores inflate
gzip layers), each at most ``LAYER_LIMIT`` bytes of tar plus its
compressed blob; beyond that it grows with the entries only.
"""

import functools
import io
import os
import re
import stat
import struct
import threading
import time
import types
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from cowspec.errors import SpecError
from cowspec.oci.identity import GZIP_TYPES, PLAIN_TYPES, ZSTD_TYPES, file_digest
from cowspec.oci.layer_tar import (
    NO_DEVICE,
    TYPEFLAGS,
    Content,
    LayerTar,
    Member,
    Record,
    TarEntry,
    carries_meaning,
    decode_layer_stream,
    decode_members,
    iter_members,
)

try:
    from cowcheck import _fastlayer  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only when the extension was not built
    _fastlayer = None

gzip_zlib: types.ModuleType
try:
    from isal import isal_zlib as gzip_zlib

    GZIP_LIBRARY = "isal"
except ImportError:  # pragma: no cover - only where isal is not installed
    gzip_zlib = zlib
    GZIP_LIBRARY = "zlib"

FILE_FLAGS = frozenset(flag for flag, kind in TYPEFLAGS.items() if kind == "file")
FILE_FLAG_BYTES = b"".join(sorted(FILE_FLAGS))
"""The type flags of files, for the C framing."""
SPAN_BYTES = 2 * struct.calcsize("n")
"""One (offset, size) pair of ``_fastlayer.frame``: two native ``Py_ssize_t``."""
PLAIN_KINDS = {flag: kind for flag, kind in TYPEFLAGS.items() if kind not in ("char", "block")}
"""The types whose members the C code makes: no device numbers to read."""
HASH_THREADS = max(1, min(len(os.sched_getaffinity(0)), 8))
"""Native threads that hash: one per core this process may use (up to eight)."""
LAYER_LIMIT = 256 << 20
"""The most bytes of one layer's tar held in memory; a larger layer goes to the model's streaming reader."""
PREFETCH = 2
"""Layers loaded (read, decompressed, hashed) ahead of the one being decoded."""
HASHERS = ("openssl", "multibuffer")
ZSTD_STEP = 128 << 10
"""Compressed bytes given to zstd at a time, so that the output is checked against the limit as it grows."""
_NOT_ZERO = re.compile(rb"[^\0]")


def cpu_features() -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, arm64 ``Features``), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def hashers() -> tuple[str, ...]:
    """The hashing backends this machine runs (none without the C module)."""
    if _fastlayer is None:
        return ()
    return HASHERS if _fastlayer.multi_buffer() else HASHERS[:1]


def chosen_hasher() -> str | None:
    """The backend the fast reader hashes with; None where the C module is not built.

    ``COWSPEC_HASHER`` (openssl or multibuffer) forces one. Otherwise
    OpenSSL, unless the CPU runs the AVX-512 multi-buffer kernel too: then
    the one that hashes files faster here, by a short measurement
    (``measured_hasher``). Whole layers always go through OpenSSL. See
    benchmarks/hashers.md for the measurements behind the rule.
    """
    runs = hashers()
    if not runs:
        return None
    forced = os.environ.get("COWSPEC_HASHER", "")
    if forced:
        if forced not in runs:
            raise SpecError(f"COWSPEC_HASHER={forced}: this machine hashes with {' or '.join(runs)}")
        return forced
    return measured_hasher() if "multibuffer" in runs else "openssl"


MEASURE_FILES = 256
MEASURE_SIZE = 16 << 10
"""The measurement hashes 256 files of 16 KiB (4 MiB) with each backend, best of three: 20 to 40 ms, once.

Smaller batches measure the threads' start and wake-ups more than hashing."""
MEASURE_MARGIN = 1.15
"""How much faster the multi-buffer kernel must be to be chosen: below that, timing noise could decide."""


@functools.cache
def measured_hasher() -> str:
    """The backend that hashes many small buffers faster on this CPU, measured once per process.

    Where both run (AVX-512): without SHA instructions the multi-buffer
    kernel wins by about 3x; with them (Intel since Ice Lake; AMD Zen 4
    runs 512-bit operations in two halves) it may or may not, so it is
    measured rather than assumed.
    """
    assert _fastlayer is not None
    files = [bytes([index % 251]) * MEASURE_SIZE for index in range(MEASURE_FILES)]
    best: dict[str, float] = {}
    for _ in range(3):
        for backend in HASHERS:
            started = time.perf_counter()
            _fastlayer.sha256_many(files, backend=backend, threads=1)
            elapsed = time.perf_counter() - started
            best[backend] = min(best.get(backend, elapsed), elapsed)
    return "multibuffer" if best["multibuffer"] * MEASURE_MARGIN < best["openssl"] else "openssl"


def hasher_name(backend: str) -> str:
    """What a backend is on this CPU, for people: ``openssl-sha-ni``, ``multibuffer-avx512``..."""
    if backend == "multibuffer":
        return "multibuffer-avx512 (files) + openssl (layers)"
    features = cpu_features()
    return "openssl-sha-ni" if "sha_ni" in features else "openssl-sha2" if "sha2" in features else "openssl"


def describe(reader: str = "auto") -> str:
    """The reader and hasher that ``reader`` (auto or stream) runs here, in one line."""
    backend = chosen_hasher() if reader != "stream" else None
    if backend is None:
        why = "" if reader == "stream" else ", the C module is not built"
        return f"reader stream (the model's{why}), hasher hashlib, gzip {GZIP_LIBRARY_STREAM}"
    return (
        f"reader fast (C framing), hasher {hasher_name(backend)}, {HASH_THREADS} threads, "
        f"gzip {GZIP_LIBRARY}, layers up to {LAYER_LIMIT >> 20} MiB in memory"
    )


GZIP_LIBRARY_STREAM = "zlib"
"""The model's streaming reader decompresses gzip with Python's gzip module (zlib)."""


def scan(buffer: bytes | bytearray | memoryview) -> list[tuple[object, ...]] | int:
    """The C module's framing of an uncompressed tar, or where it stopped vouching."""
    if _fastlayer is None:
        raise RuntimeError("cowcheck._fastlayer is not built")
    result: list[tuple[object, ...]] | int = _fastlayer.scan(buffer)
    return result


@dataclass(frozen=True)
class Region:
    """Where a file of an image lies: a file on disk, an offset in it, a length."""

    path: str
    offset: int
    size: int


class _TooBig(Exception):
    """A layer decompresses to more than the limit."""


def gunzip(raw: bytes | memoryview, limit: int) -> bytearray | None:
    """Every gzip member of ``raw``, as the model's reader (``gzip.GzipFile``) joins them.

    Zero bytes between and after members are skipped, as GzipFile skips
    them. None for anything else unusual (a member cut short, a bad header,
    a bad checksum, stray bytes): the model's reader then says what it makes
    of it. Raises ``_TooBig`` past ``limit`` bytes.
    """
    out = bytearray()
    view = memoryview(raw)
    position = 0
    try:
        while position < len(raw):
            member = gzip_zlib.decompressobj(31)
            out += member.decompress(view[position:], limit - len(out) + 1)
            if len(out) > limit:
                raise _TooBig
            if not member.eof:
                return None
            position = len(raw) - len(member.unused_data)
            found = _NOT_ZERO.search(raw, position)
            position = found.start() if found else len(raw)
    except (zlib.error, gzip_zlib.error):
        return None
    finally:
        view.release()
    return out


def unzstd(raw: bytes | memoryview, limit: int) -> bytearray | None:
    """Every zstd frame of ``raw`` one after another, as the model's reader joins them; None if one is cut short."""
    out = bytearray()
    frame = zstandard.ZstdDecompressor().decompressobj()
    in_frame = False
    try:
        for start in range(0, len(raw), ZSTD_STEP):
            data = raw[start : start + ZSTD_STEP]
            while data:
                in_frame = True
                out += frame.decompress(data)
                if len(out) > limit:
                    raise _TooBig
                if not frame.eof:
                    break
                data = frame.unused_data
                frame = zstandard.ZstdDecompressor().decompressobj()
                in_frame = False
    except zstandard.ZstdError:
        return None
    return None if in_frame else out


def declared_size(raw: bytes | memoryview, media_type: str) -> int:
    """The size a compressed blob says its tar has, or 0 where it says none.

    gzip: the last member's trailer (ISIZE, the size modulo 2**32; a blob
    ending in padding says nothing). zstd: the first frame's content size,
    where its header holds one. Only a hint: inflating checks the limit.
    """
    if media_type in GZIP_TYPES:
        return int.from_bytes(raw[-4:], "little") if len(raw) >= 18 and bytes(raw[:2]) == b"\x1f\x8b" else 0
    if media_type in ZSTD_TYPES:
        try:
            size: int = zstandard.get_frame_parameters(raw[:18]).content_size
        except zstandard.ZstdError:
            return 0
        return size if size < zstandard.CONTENTSIZE_ERROR else 0
    return 0


@dataclass
class _Loaded:
    """A layer as the loader leaves it."""

    tar: bytes | bytearray | memoryview | None
    """The uncompressed tar, or None when the model must read the layer."""
    blob: bytes | memoryview | None
    """The blob as read, for the model to read again, when it decompressed badly."""
    tar_job: int = -1
    blob_job: int = -1
    """The hasher's jobs for the tar (its DiffID) and for a compressed blob (its digest)."""
    framed: list[tuple[object, ...]] | int | None = 0
    """The C module's framing of the tar (None: its files' places only), or where it stopped vouching."""
    first_file: int = -1
    files: int = 0
    """The hasher's jobs for the tar's files: the first one, and how many."""
    pooled: memoryview | None = None
    """The blob as read into a buffer of the pool, to be given back once every digest of the layer is given."""


OpenBlob = Callable[[int], "Region | tuple[int, BinaryIO]"]
"""Layer ``index``'s blob in the image: where it lies in a file on disk, or its size and a stream of it."""
StreamLayer = Callable[[], tuple[str, int, LayerTar, str]]
"""The model's reading of one layer from the image: (DiffID, size, value, blob digest)."""


class FastLayers:
    """An image's layers, loaded ahead and hashed by native threads, read a layer at a time.

    ``layer(index, ...)`` gives what ``images.read_layer`` gives for the
    same layer: (DiffID, uncompressed size, value, blob digest), or the same
    error. Layers must be asked for in order, each once.
    """

    def __init__(self, open_blob: OpenBlob, media_types: list[str], keep_data: bool, backend: str) -> None:
        assert _fastlayer is not None
        self._open_blob = open_blob
        self._media_types = media_types
        self._keep_data = keep_data
        self._hasher: Any = _fastlayer.Hasher(threads=HASH_THREADS, backend=backend)
        self._lock = threading.Lock()  # one reader of the image's files at a time
        self._buffers = threading.Lock()  # guards the list below: loaders take buffers, this thread gives them back
        self._free: list[bytearray] = []
        """Buffers that held a layer read from a file, to be read into again (at most ``PREFETCH + 1``)."""
        self._pool = ThreadPoolExecutor(max_workers=PREFETCH, thread_name_prefix="cowspec-load")
        self._loads: dict[int, Future[_Loaded]] = {}
        for index in range(min(PREFETCH, len(media_types))):
            self._loads[index] = self._pool.submit(self._load, index)

    @classmethod
    def open(cls, open_blob: OpenBlob, media_types: list[str], keep_data: bool) -> "FastLayers | None":
        """The fast reader for these layers; None where the C module is not built."""
        backend = chosen_hasher()
        return None if backend is None or not media_types else cls(open_blob, media_types, keep_data, backend)

    def _hash(self, data: bytes | bytearray | memoryview) -> int:
        first: int = self._hasher.add([data], long=True)
        return first

    def _load(self, index: int) -> _Loaded:
        """Read layer ``index``'s blob whole, have it hashed, decompress it; what the model must do instead."""
        media_type = self._media_types[index]
        if media_type not in PLAIN_TYPES | GZIP_TYPES | ZSTD_TYPES:
            return _Loaded(None, None)  # the model names the problem
        raw: bytes | memoryview | None
        with self._lock:
            try:
                blob = self._open_blob(index)
                if isinstance(blob, Region):
                    raw = self._read_region(blob) if blob.size <= LAYER_LIMIT else None
                    size = blob.size
                else:
                    size, stream = blob
                    with stream:
                        raw = stream.read(size) if size <= LAYER_LIMIT else None
            except Exception:
                # Whatever the image does wrong here (a file cut short or
                # removed meanwhile, a damaged archive), the model's reader
                # meets it too, and names it.
                return _Loaded(None, None)
        if raw is None or len(raw) != size:
            return _Loaded(None, None)  # too large, or the file changed under us: the model reads what is there now
        loaded = self._loaded(index, raw)
        if isinstance(raw, memoryview):
            loaded.pooled = raw
        return loaded

    def _loaded(self, index: int, raw: bytes | memoryview) -> _Loaded:
        media_type = self._media_types[index]
        if media_type in PLAIN_TYPES:
            return self._framed(_Loaded(raw, None))
        if declared_size(raw, media_type) > LAYER_LIMIT:
            return _Loaded(None, None)  # the model streams it: no inflating up to the limit only to give up
        blob_job = self._hash(raw)
        try:
            tar = gunzip(raw, LAYER_LIMIT) if media_type in GZIP_TYPES else unzstd(raw, LAYER_LIMIT)
        except _TooBig:
            return _Loaded(None, None, -1, blob_job)
        if tar is None:
            return _Loaded(None, raw, -1, blob_job)
        return self._framed(_Loaded(tar, None, -1, blob_job))

    def _read_region(self, region: Region) -> memoryview | None:
        """The region's bytes, read into a buffer of the pool (no new pages per layer); None if cut short.

        Only a regular file is read: the image's reader checked that, and a
        file swapped for a FIFO since then does not block the open.
        """
        with self._buffers:
            buffer = next((each for each in self._free if len(each) >= region.size), None)
            if buffer is not None:
                self._free.remove(buffer)
            elif self._free:  # too small for this layer: let the smallest go rather than keep it
                self._free.remove(min(self._free, key=len))
        if buffer is None:
            buffer = bytearray(region.size + region.size // 8)  # room for the next layer to be a little larger
        view = memoryview(buffer)[: region.size]
        got = -1
        try:
            descriptor = os.open(region.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
            try:
                if stat.S_ISREG(os.fstat(descriptor).st_mode):
                    got = 0
                    while got < region.size:
                        count = os.preadv(descriptor, [view[got:]], region.offset + got)
                        if count <= 0:
                            break
                        got += count
            finally:
                os.close(descriptor)
        finally:
            if got != region.size:  # cut short, not a regular file, or unreadable: the model reads it
                view.release()
                with self._buffers:
                    self._free.append(buffer)
        return view if got == region.size else None

    def _give_back(self, loaded: _Loaded) -> None:
        """Return a layer's pooled buffer once nothing holds it: its digests were all given."""
        if loaded.pooled is not None:
            buffer = loaded.pooled.obj
            assert isinstance(buffer, bytearray)
            loaded.tar = loaded.blob = None
            try:
                loaded.pooled.release()
            except BufferError:
                return  # something still holds a view of it: a new buffer serves the next layer instead
            finally:
                loaded.pooled = None
            with self._buffers:
                self._free.append(buffer)

    def _framed(self, loaded: _Loaded) -> _Loaded:
        """Frame the loaded tar and have its files hashed now, while the layer below is still being decoded.

        Where the files' bytes are dropped, only where they lie is taken
        (``_fastlayer.frame``, the GIL let go meanwhile, no object per header):
        the headers are read again, in C, by ``plain_layer``.
        """
        assert loaded.tar is not None and _fastlayer is not None
        if self._keep_data:
            loaded.framed = _fastlayer.scan(loaded.tar)
        else:
            spans = _fastlayer.frame(loaded.tar, FILE_FLAG_BYTES)
            if isinstance(spans, int):
                loaded.framed = spans
            else:
                # The hasher holds the tar until it gives the digests; the tar is never resized.
                loaded.first_file = self._hasher.add_spans(loaded.tar, spans)
                loaded.files = len(spans) // SPAN_BYTES
                loaded.framed = None
        # The whole tar (its DiffID) after its files: the files are wanted first, to decode the layer.
        loaded.tar_job = self._hash(loaded.tar)
        return loaded

    def _digest(self, job: int) -> str:
        self._hasher.wait(job, job + 1)
        digest: bytes = self._hasher.digests(job, job + 1)  # lets go of the buffer too
        return "sha256:" + digest.hex()

    def layer(self, index: int, where: str, stream_layer: StreamLayer) -> tuple[str, int, LayerTar, str]:
        """Layer ``index``, read the fast way where it can be; ``stream_layer`` is the model's reading of it."""
        loaded = self._loads.pop(index).result()
        if index + PREFETCH < len(self._media_types):
            self._loads[index + PREFETCH] = self._pool.submit(self._load, index + PREFETCH)
        # Only after a layer read whole is its buffer read into again: then
        # every digest of it was given, and the hasher holds none of it.
        result = self._layer(loaded, index, where, stream_layer)
        self._give_back(loaded)
        return result

    def _layer(
        self, loaded: _Loaded, index: int, where: str, stream_layer: StreamLayer
    ) -> tuple[str, int, LayerTar, str]:
        blob = self._digest(loaded.blob_job) if loaded.blob_job >= 0 else None
        if loaded.tar is None:
            # A blob it could not decompress, or did not read: the model reads it from the image again.
            with self._lock:
                return stream_layer()
        try:
            value = self._decode(loaded)
        except SpecError as error:
            raise SpecError(f"{where}: {error}") from None
        diff = self._digest(loaded.tar_job)
        return diff, len(loaded.tar), value, blob or diff

    def _decode(self, loaded: _Loaded) -> LayerTar:
        tar, framed = loaded.tar, loaded.framed
        assert tar is not None
        digests = self._file_digests(loaded)
        if framed is None:
            # Plain headers become the layer's value in C, as decode_members makes it (tests hold the two
            # equal); anything else, the headers framed into the model's records.
            value = plain_layer(tar, digests)
            if value is not None:
                return value
            framed = scan(tar)
        if isinstance(framed, int):  # a header the C code will not vouch for: the model reads the same bytes
            return decode_layer_stream(io.BytesIO(tar).read, None if self._keep_data else file_digest)
        if not self._keep_data:
            # Plain records (no PAX record, long name or device) become members
            # in C, field for field as iter_members makes them (tests hold the two equal).
            made = _fastlayer.members(framed, digests, Member, Content, PLAIN_KINDS, NO_DEVICE)
            if made is not None:
                return decode_members(made)
        return decode_members(iter_members(self._records(tar, framed, digests.hex())))

    def _file_digests(self, loaded: _Loaded) -> bytes:
        """The SHA-256 of each file of the layer, 32 bytes each, in archive order."""
        if not loaded.files:
            return b""
        end = loaded.first_file + loaded.files
        self._hasher.wait(loaded.first_file, end)
        digests: bytes = self._hasher.digests(loaded.first_file, end)
        return digests

    def _records(
        self, tar: bytes | bytearray | memoryview, framed: list[tuple[object, ...]], digests: str
    ) -> Iterator[Record]:
        job = 0
        keep = self._keep_data
        for record in framed:
            payload: bytes | Content
            if record[1] in FILE_FLAGS and not keep:
                size = record[2]
                assert isinstance(size, int)
                payload = Content(size, digests[64 * job : 64 * job + 64])
                job += 1
            else:
                payload = payload_of(tar, record)
            yield (*record[:11], payload)  # type: ignore[misc]

    def close(self) -> None:
        """Stop loading and hashing; let go of every buffer."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._loads.clear()
        if self._hasher is not None:
            self._hasher.cancel()
            self._hasher = None


def plain_layer(tar: bytes | bytearray | memoryview, digests: bytes) -> LayerTar | None:
    """The layer an uncompressed tar of plain headers describes, decoded in C; None where the model must decode it.

    ``digests`` are the SHA-256 of its files (``FILE_FLAGS`` members), 32
    bytes each, in archive order. The value is ``decode_members`` of the
    model's members for the same bytes (the tests hold the two equal on
    generated, mutated and hand-made archives): the C code gives up (None)
    wherever the model would refuse the layer or has more to read than plain
    ustar fields (PAX and long-name records, devices, names that are not
    UTF-8 or hold a ``..`` part, duplicates, invalid whiteouts, hardlinks
    that do not name a non-directory of the layer, entries below a
    non-directory), and the model then decodes the same bytes.
    """
    if _fastlayer is None:
        raise RuntimeError("cowcheck._fastlayer is not built")
    made = _fastlayer.decode(tar, digests, PLAIN_KINDS, TarEntry, Content, NO_DEVICE)
    if made is None:
        return None
    entries, whiteouts, opaque = made
    return LayerTar(entries, frozenset(whiteouts), frozenset(opaque))


def entries_json(entries: tuple[TarEntry, ...], inode: Mapping[str, int], names: Mapping[int, int]) -> str | None:
    """The JSON array ``cowspec flatten`` writes for these entries, made in C; None where the extension is not built."""
    if _fastlayer is None:
        return None
    text: str = _fastlayer.entries_json(entries, inode, names)
    return text


def payload_of(tar: bytes | bytearray | memoryview, record: tuple[object, ...]) -> bytes:
    """A framed member's bytes as the model's reader keeps them: none where they cannot matter [TAR-5]."""
    flag, size = record[1], record[2]
    assert isinstance(flag, bytes) and isinstance(size, int)
    return bytes(tar[_span(record)]) if carries_meaning(flag, size) else b""


def _span(record: tuple[object, ...]) -> slice:
    start, size = record[11], record[2]
    assert isinstance(start, int) and isinstance(size, int)
    return slice(start, start + size)
