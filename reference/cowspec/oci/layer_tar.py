"""OCI layer tars: decoding and canonical encoding, as pure functions on bytes.

A layer travels as a tar archive (the OCI image-spec's "layer"). Deletions
are encoded as *whiteout* files: ``.wh.NAME`` deletes ``NAME`` from the
layers below, and ``.wh..wh..opq`` in a directory hides everything the
layers below hold in it (an *opaque* directory) [TAR-1]. Neither marker is
itself part of the filesystem the layer describes.

``decode_layer`` turns an uncompressed archive into a ``LayerTar`` value:
its entries keyed by normalised path, its whiteouts and its opaque
directories, each as a set, so that the order of the archive, which the spec
says must not matter for markers, cannot matter for the value [TAR-2]. It
rejects what the spec or safety forbids with a ``SpecError`` naming the
entry and the rule (chapter 11 lists each case) [TAR-3].

``encode_layer`` writes a value back in one canonical form (fixed order,
fixed header format, no user or group names), so that equal values give
equal bytes and so equal DiffIDs [TAR-4].
"""

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal, NamedTuple

from cowspec.errors import ModelError, SpecError
from cowspec.fs.paths import ROOT, name_of, parent_of

Kind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]
BLOCK = 512
ZERO_BLOCK = b"\0" * BLOCK
NO_DEVICE = (0, 0)
CHUNK = 1 << 20
MAX_EXTENDED = 1 << 20
"""The largest PAX or GNU long-name record a layer may hold, in bytes [TAR-5]."""
PATH_MAX = 4096
"""The longest name or link target a layer may hold, in bytes, as Linux's PATH_MAX [TAR-5]."""
EXTENDED = frozenset((b"x", b"L", b"K"))
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
TYPEFLAGS: dict[bytes, Kind] = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "char",
    b"4": "block",
    b"5": "dir",
    b"6": "fifo",
}
FLAG_OF: dict[Kind, bytes] = {
    "file": b"0",
    "hardlink": b"1",
    "symlink": b"2",
    "char": b"3",
    "block": b"4",
    "dir": b"5",
    "fifo": b"6",
}


class TarEntry(NamedTuple):
    """One member of a layer: a path of the filesystem the layer describes.

    A named tuple rather than a frozen dataclass: a large image has hundreds
    of thousands of entries, and a tuple is made four times faster.

    ``link`` is a symlink's target as written, or a hardlink's target as a
    normalised path. ``mtime`` is in nanoseconds. ``xattrs`` are sorted.
    """

    path: str
    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    data: bytes = b""
    link: str = ""
    device: tuple[int, int] = (0, 0)
    xattrs: tuple[tuple[str, bytes], ...] = ()
    content: "Content | None" = None
    """Size and SHA-256 of a file whose bytes were not kept (streamed)."""

    @property
    def size(self) -> int:
        """A file's length in bytes."""
        return self.content.size if self.content is not None else len(self.data)

    @property
    def sha256(self) -> str:
        """A file's SHA-256, hex."""
        return self.content.sha256 if self.content is not None else hashlib.sha256(self.data).hexdigest()


class Content(NamedTuple):
    """What is known of a file's bytes when they were not kept."""

    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class LayerTar:
    """A decoded layer: entries by path, whiteouts, opaque directories."""

    entries: tuple[TarEntry, ...]
    whiteouts: frozenset[str] = frozenset()
    opaque: frozenset[str] = frozenset()


# -- decoding -------------------------------------------------------------------


def _number(field: bytes, what: str, where: str) -> int:
    """An octal header number, or a GNU base-256 one; anything else is corrupt."""
    return _needed(_lenient(field), what, where)


def _pax_records(data: bytes, where: str) -> dict[str, bytes]:
    records: dict[str, bytes] = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        if space < 0:
            raise SpecError(f"{where}: malformed PAX record (corrupt archive) [TAR-3]")
        try:
            length = int(data[position:space])
        except ValueError:
            raise SpecError(f"{where}: malformed PAX record length (corrupt archive) [TAR-3]") from None
        record = data[space + 1 : position + length]
        if length <= 0 or position + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise SpecError(f"{where}: malformed PAX record (corrupt archive) [TAR-3]")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value
        position += length
    return records


def clean_name(name: str, where: str) -> str:
    """The normalised absolute path of an archive name [TAR-3].

    A leading ``/`` or ``./`` is dropped and ``.`` components are removed, as
    Docker and containerd clean names; a ``..`` that climbs out of the root
    is refused (path traversal, the class of CVE-2014-6407).
    """
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise SpecError(f"{where}: name {name!r} climbs out of the root (path traversal) [TAR-3]")
            parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def _checksum_ok(header: bytes) -> bool:
    stored = header[148:156].split(b"\0", 1)[0].strip(b" \0")
    try:
        expected = int(stored, 8)
    except ValueError:
        return False
    # The checksum counts its own field as eight spaces.
    return sum(header) - sum(header[148:156]) + 8 * 32 == expected


class Member(NamedTuple):
    """One member of an archive as its headers give it: name and link as written, before any meaning [TAR-3]."""

    name: str
    kind: Kind
    mode: int
    uid: int
    gid: int
    mtime: int
    data: bytes
    link: str
    device: tuple[int, int]
    xattrs: tuple[tuple[str, bytes], ...]
    content: Content | None


Reader = Callable[[int], bytes]
"""Reads up to n bytes from an archive (``file.read``); b"" at its end."""


def _take(read: Reader, count: int) -> bytes:
    parts: list[bytes] = []
    while count > 0:
        chunk = read(count)
        if not chunk:
            break
        parts.append(chunk)
        count -= len(chunk)
    return b"".join(parts)


def _pax_number(records: dict[str, bytes], key: str, where: str) -> int | None:
    if key not in records:
        return None
    try:
        return int(records[key])
    except ValueError:
        raise SpecError(f"{where}: PAX {key} is not a number (corrupt archive) [TAR-3]") from None


Record = tuple[
    int, bytes, int, bytes, bytes, int | None, int | None, int | None, int | None, int | None, int | None, object
]
"""One header of an archive, framed but not yet interpreted.

(position, flag, size, name, link, mode, uid, gid, mtime, devmajor, devminor,
payload): the header's byte offset, its type flag, the member's size, its
name (with the ustar prefix joined) and link name as raw bytes, its numeric
fields (``None`` where a field is not a number), and the member's bytes,
or their ``Content`` when they were hashed and dropped.
"""


def _lenient(field: bytes) -> int | None:
    """An octal header number, or a GNU base-256 one; None when it is neither.

    Not an error yet: a field is read only if its member needs it.
    """
    if field and field[0] & 0x80:
        return int.from_bytes(field, "big") - (1 << (8 * len(field) - 1))
    try:
        return int(field.partition(b"\0")[0].strip() or b"0", 8)
    except ValueError:
        return None


def _raw_name(header: bytes) -> bytes:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0" and header[345:500].strip(b"\0"):
        return header[345:500].split(b"\0", 1)[0] + b"/" + name
    return name


def carries_meaning(flag: bytes, size: int) -> bool:
    """Whether a member's bytes can matter to the layer: a file's, or a PAX or long-name record within the bound.

    Every other member's bytes (a directory's, a global header's, an
    unknown type's, an oversized record's) are skipped, never kept [TAR-5].
    """
    return TYPEFLAGS.get(flag) == "file" or (flag in EXTENDED and size <= MAX_EXTENDED)


def _pass(read: Reader, size: int) -> int:
    """Read ``size`` bytes a chunk at a time without keeping them; how many there were."""
    chunks = _Chunks(read, size)
    for _ in chunks:
        pass
    return chunks.got


class _Chunks:
    """A member's ``size`` bytes read through ``read`` a chunk at a time, counted as they pass."""

    def __init__(self, read: Reader, size: int) -> None:
        self.read, self.left, self.got = read, size, 0

    def __iter__(self) -> Iterator[bytes]:
        while self.left:
            chunk = self.read(min(self.left, CHUNK))
            if not chunk:
                return
            self.left -= len(chunk)
            self.got += len(chunk)
            yield chunk


DigestOf = Callable[[Iterable[bytes]], str]
"""How a reader sums up a file whose bytes it does not keep: its chunks in, a hex digest out.

The codec hashes nothing itself: the caller chooses the digest (``cowspec.oci.identity.file_digest``
gives SHA-256, the digest a layer's files are shown with).
"""


def iter_records(read: Reader, digest_of: DigestOf | None = None) -> Iterator[Record]:
    """Every header of an uncompressed tar with its member's bytes, up to the end marker [TAR-3].

    The archive is read front to back through ``read``. A file's bytes are
    kept, or with ``digest_of`` given, shown to it a chunk at a time and
    replaced by their size and digest (``Content``), so that memory grows
    with the number of members, not with their size.
    """
    position = 0
    count = 0
    while True:
        where = f"header {count} (at byte {position})"
        header = _take(read, BLOCK)
        if len(header) < BLOCK:
            raise SpecError(f"{where}: truncated archive: no end-of-archive marker [TAR-3]")
        if header == ZERO_BLOCK:
            return
        if not _checksum_ok(header):
            raise SpecError(f"{where}: header checksum mismatch (corrupt archive) [TAR-3]")
        flag = header[156:157]
        size = _number(header[124:136], "size", where)
        if size < 0:
            raise SpecError(f"{where}: negative member size (corrupt archive) [TAR-3]")
        payload: bytes | Content
        if not carries_meaning(flag, size):
            # Bytes no reader needs are skipped a chunk at a time, never kept:
            # a directory's data, a global header, an oversized PAX or long-name
            # record (``iter_members`` refuses that one by its size) [TAR-5].
            got = _pass(read, size)
            payload = b""
        elif TYPEFLAGS.get(flag) == "file" and digest_of is not None:
            chunks = _Chunks(read, size)
            digest = digest_of(chunks)
            got = chunks.got + _pass(read, chunks.left)  # all of it read, whatever the digest took
            payload = Content(size, digest)
        else:
            payload = _take(read, size)
            got = len(payload)
        if got < size:
            raise SpecError(f"{where}: truncated archive: member needs {size} bytes, {got} left [TAR-3]")
        padding = -size % BLOCK
        if len(_take(read, padding)) < padding:
            raise SpecError(f"{where}: truncated archive: member padding is cut short [TAR-3]")
        yield (
            position,
            flag,
            size,
            _raw_name(header),
            header[157:257].split(b"\0", 1)[0],
            _lenient(header[100:108]),
            _lenient(header[108:116]),
            _lenient(header[116:124]),
            _lenient(header[136:148]),
            _lenient(header[329:337]),
            _lenient(header[337:345]),
            payload,
        )
        position += BLOCK + size + padding
        count += 1


def _needed(value: int | None, what: str, where: str) -> int:
    if value is None:
        raise SpecError(f"{where}: header field {what} is not a number (corrupt archive) [TAR-3]")
    return value


def iter_members(records: Iterable[Record]) -> Iterator[Member]:
    """The members of an archive's headers: PAX records and GNU long names applied [TAR-3]."""
    pending: dict[str, bytes] = {}
    long_name: str | None = None
    long_link: str | None = None
    count = 0
    for position, flag, size, raw_name, raw_link, mode, uid, gid, mtime, major, minor, payload in records:
        kind = TYPEFLAGS.get(flag)
        if kind is None:
            where = f"entry {count} (at byte {position})"
            if flag in EXTENDED and size > MAX_EXTENDED:
                raise SpecError(
                    f"{where}: a PAX or long-name record of {size} bytes, over the bound of {MAX_EXTENDED} [TAR-5]"
                )
            if flag == b"x":
                pending.update(_pax_records(_bytes(payload), where))
            elif flag == b"L":
                long_name = _bytes(payload).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif flag == b"K":
                long_link = _bytes(payload).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif flag != b"g":  # global PAX headers carry nothing a layer's meaning depends on
                raise SpecError(f"{where}: unsupported entry type {flag.decode('latin-1')!r} [TAR-3]")
            continue
        name = long_name if long_name is not None else raw_name.decode("utf-8", "surrogateescape")
        link = long_link if long_link is not None else raw_link.decode("utf-8", "surrogateescape")
        content = payload if isinstance(payload, Content) else None
        data = payload if kind == "file" and isinstance(payload, bytes) else b""
        if pending or mode is None or uid is None or gid is None or mtime is None or kind in ("char", "block"):
            yield _extended(
                Member(name, kind, 0, 0, 0, 0, data, link, NO_DEVICE, (), content),
                (mode, uid, gid, mtime, major, minor),
                pending,
                f"entry {count} (at byte {position})",
            )
        else:
            yield Member(name, kind, mode & 0o7777, uid, gid, mtime * 1_000_000_000, data, link, NO_DEVICE, (), content)
        count += 1
        if pending or long_name is not None or long_link is not None:
            pending, long_name, long_link = {}, None, None


def _extended(member: Member, fields: tuple[int | None, ...], pending: dict[str, bytes], where: str) -> Member:
    """A member whose PAX records, device numbers or odd header fields need a closer look [TAR-3]."""
    mode, uid, gid, mtime, major, minor = fields
    name, link = member.name, member.link
    if "path" in pending:
        name = pending["path"].decode("utf-8", "surrogateescape")
    if "linkpath" in pending:
        link = pending["linkpath"].decode("utf-8", "surrogateescape")
    if "uid" in pending:
        uid = _pax_number(pending, "uid", where)
    if "gid" in pending:
        gid = _pax_number(pending, "gid", where)
    nanoseconds = _needed(mtime, "mtime", where) * 1_000_000_000
    if "mtime" in pending:
        nanoseconds = _pax_time(pending["mtime"], where)
    xattrs = tuple(
        sorted(
            (key[len("SCHILY.xattr.") :], value) for key, value in pending.items() if key.startswith("SCHILY.xattr.")
        )
    )
    device = NO_DEVICE
    if member.kind in ("char", "block"):
        device = (_needed(major, "devmajor", where), _needed(minor, "devminor", where))
    return member._replace(
        name=name,
        link=link,
        mode=_needed(mode, "mode", where) & 0o7777,
        uid=_needed(uid, "uid", where),
        gid=_needed(gid, "gid", where),
        mtime=nanoseconds,
        device=device,
        xattrs=xattrs,
    )


def _bytes(payload: object) -> bytes:
    if not isinstance(payload, bytes):
        raise ModelError("a PAX or long-name member must keep its bytes")
    return payload


def _pax_time(value: bytes, where: str) -> int:
    text = value.decode("ascii", "replace")
    seconds, _, fraction = text.partition(".")
    try:
        whole = int(seconds)
        nanos = int((fraction + "000000000")[:9]) if fraction else 0
    except ValueError:
        raise SpecError(f"{where}: PAX mtime {text!r} is not a time [TAR-3]") from None
    return whole * 1_000_000_000 + (nanos if whole >= 0 else -nanos)


def decode_layer(archive: bytes) -> LayerTar:
    """The layer an uncompressed tar describes [TAR-1][TAR-2][TAR-3]."""
    return decode_members(iter_members(iter_records(io.BytesIO(archive).read)))


def decode_layer_stream(read: Reader, digest_of: DigestOf | None) -> LayerTar:
    """The layer a tar read through ``read`` describes; with ``digest_of``, files summed up by it, not kept."""
    return decode_members(iter_members(iter_records(read, digest_of)))


def decode_members(members: Iterable[Member]) -> LayerTar:
    """The layer value of a sequence of archive members [TAR-1][TAR-2][TAR-3]."""
    entries: dict[str, TarEntry] = {}
    whiteouts: set[str] = set()
    opaque: set[str] = set()
    seen: set[str] = set()
    for number, member in enumerate(members):
        name = member.name
        if len(name) > SHORT or len(member.link) > SHORT:
            _bound_length(number, member)
        if "//" in name or "/." in name or name[:1] == ".":
            path = clean_name(name, f"entry {number} {name!r}")
        else:
            path = "/" + name.strip("/")  # what clean_name gives a name with no "", "." or ".." part
        if path in seen:
            raise SpecError(
                f"entry {number} {name!r}: duplicate entry for {path} (the image-spec forbids duplicates) [TAR-3]"
            )
        seen.add(path)
        if ".wh." in path:
            base = name_of(path)
            if base == OPAQUE_MARKER:
                opaque.add(parent_of(path))
                continue
            if base.startswith(WHITEOUT_PREFIX):
                target = base[len(WHITEOUT_PREFIX) :]
                if target in ("", ".", ".."):
                    raise SpecError(
                        f"entry {number} {name!r}: invalid whiteout {base!r}: it names no entry (image-spec) [TAR-3]"
                    )
                parent = parent_of(path)
                whiteouts.add(parent + target if parent == ROOT else parent + "/" + target)
                continue
        if path == ROOT:
            if member.kind != "dir":
                raise SpecError(f"entry {number} {name!r}: the root can only be a directory [TAR-3]")
            entries[ROOT] = TarEntry(
                ROOT, "dir", member.mode, member.uid, member.gid, member.mtime, xattrs=member.xattrs
            )
            continue
        if member.kind == "hardlink":
            link = clean_name(member.link, f"entry {number} {name!r} hardlink target")
            entries[path] = TarEntry(path, *member[1:7], link, *member[8:])
        else:
            entries[path] = _entry(TarEntry, (path, *member[1:]))  # the member's fields, under its path
    for entry in entries.values():
        if entry.kind == "hardlink":
            origin = entries.get(entry.link)
            if origin is None:
                why = "which this layer does not hold (a hardlink's target must be in its own layer)"
            elif origin.kind == "dir":
                why = "a directory (a directory cannot be hardlinked)"
            elif origin.kind == "hardlink":
                why = (
                    f"itself a hardlink to {origin.link!r} (a tar hardlink names the member"
                    " that holds the data; a chain is refused)"
                )
            else:
                continue
            raise SpecError(f"entry {entry.path!r}: hardlink to {entry.link!r}, {why} [TAR-3]")
    ordered = tuple(sorted(entries.values(), key=entry_key))
    _refuse_below_non_directories(ordered)
    return LayerTar(ordered, frozenset(whiteouts), frozenset(opaque))


SHORT = PATH_MAX // 4
"""No text of at most this many characters is longer than PATH_MAX in UTF-8 (four bytes a character at most)."""
_entry = tuple.__new__
"""Makes a TarEntry from a tuple of its fields without the keyword machinery of its constructor."""


def _bound_length(number: int, member: Member) -> None:
    """Refuse a name or link target longer than PATH_MAX bytes [TAR-5]."""
    for what, text in (("name", member.name), ("link target", member.link)):
        if len(text) > SHORT and len(text.encode("utf-8", "surrogateescape")) > PATH_MAX:
            # Every parent of a path becomes a directory: a bound on length bounds them [TAR-5].
            raise SpecError(f"entry {number} {text[:64]!r}...: {what} longer than PATH_MAX ({PATH_MAX} bytes) [TAR-5]")


NON_DIRECTORY: dict[Kind, str] = {
    "file": "a regular file",
    "symlink": "a symlink",
    "hardlink": "a hardlink",
    "char": "a character device",
    "block": "a block device",
    "fifo": "a FIFO",
}


def _refuse_below_non_directories(ordered: tuple[TarEntry, ...]) -> None:
    """Refuse an entry that lies below a non-directory of the same layer [TAR-6].

    In canonical order everything below a path comes right after it, so one
    look at the next entry finds any entry below a non-directory. Markers
    below one are not refused: they act on the layers below (APPLY-2).
    """
    for entry, following in pairwise(ordered):
        if entry.kind != "dir":
            path, below = entry.path, following.path
            if below.startswith(path) and below[len(path)] == "/":
                raise SpecError(
                    f"entry {below!r}: lies below {path!r}, which this layer lists as"
                    f" {NON_DIRECTORY[entry.kind]}, not a directory [TAR-6]"
                )


def canonical_key(path: str) -> str:
    """Sort key that puts a directory before everything inside it.

    Paths compare component by component (``/a/b`` before ``/a-c`` and
    before ``/a/b/c``): the same order as the strings with ``/`` written as
    NUL, a character that sorts below every other and is in no name.
    """
    return path.replace("/", "\0")


def entry_key(entry: TarEntry) -> str:
    """The canonical key of an entry's path: entries sorted by it come in canonical order."""
    return canonical_key(entry.path)


# -- encoding -------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    return (f"{value:0{width - 1}o}").encode() + b"\0"


def _pax(records: list[tuple[str, bytes]]) -> bytes:
    out = b""
    for key, value in records:
        payload = b" " + key.encode("utf-8", "surrogateescape") + b"=" + value + b"\n"
        length = len(payload) + 1
        while len(str(length).encode()) + len(payload) != length:
            length = len(str(length).encode()) + len(payload)
        out += str(length).encode() + payload
    return out


def _header(name: str, flag: bytes, size: int, entry: TarEntry | None, link: str = "") -> bytes:
    mode, uid, gid, mtime, device = 0o644, 0, 0, 0, (0, 0)
    if entry is not None:
        mode, uid, gid, device = entry.mode, entry.uid, entry.gid, entry.device
        mtime = entry.mtime // 1_000_000_000
    header = bytearray(BLOCK)
    header[0:100] = name.encode("utf-8", "surrogateescape")[:100].ljust(100, b"\0")
    header[100:108] = _octal(mode, 8)
    header[108:116] = _octal(min(uid, 0o7777777), 8)
    header[116:124] = _octal(min(gid, 0o7777777), 8)
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(max(0, min(mtime, 0o77777777777)), 12)
    header[148:156] = b" " * 8
    header[156:157] = flag
    header[157:257] = link.encode("utf-8", "surrogateescape")[:100].ljust(100, b"\0")
    header[257:265] = b"ustar\x0000"
    header[329:337] = _octal(device[0], 8)
    header[337:345] = _octal(device[1], 8)
    header[148:156] = f"{sum(header):06o}".encode() + b"\0 "
    return bytes(header)


def _headers(name: str, flag: bytes, size: int, entry: TarEntry | None, link: str = "") -> bytes:
    """A member's headers: its PAX header and records where it needs them, then its own header for ``size`` bytes."""
    records: list[tuple[str, bytes]] = []
    if len(name.encode("utf-8", "surrogateescape")) > 100:
        records.append(("path", name.encode("utf-8", "surrogateescape")))
    if len(link.encode("utf-8", "surrogateescape")) > 100:
        records.append(("linkpath", link.encode("utf-8", "surrogateescape")))
    if entry is not None:
        if entry.uid > 0o7777777:
            records.append(("uid", str(entry.uid).encode()))
        if entry.gid > 0o7777777:
            records.append(("gid", str(entry.gid).encode()))
        if entry.mtime % 1_000_000_000 or not 0 <= entry.mtime // 1_000_000_000 <= 0o77777777777:
            seconds, nanos = divmod(entry.mtime, 1_000_000_000)
            records.append(("mtime", f"{seconds}.{nanos:09d}".encode()))
        records.extend((f"SCHILY.xattr.{key}", value) for key, value in entry.xattrs)
    out = b""
    if records:
        body = _pax(records)
        out += _header("PaxHeader", b"x", len(body), None) + body + b"\0" * (-len(body) % BLOCK)
    return out + _header(name, flag, size, entry, link)


def encode_layer(layer: LayerTar) -> bytes:
    """The canonical archive of ``layer`` [TAR-4].

    Members go in path order, a directory before its contents, and
    hardlinks last (a reader needs a link's target first); an opaque
    directory's marker follows it; whiteouts stand where their names would.
    Names are relative (``a/b``, directories ``a/b/``); user and group names
    are empty; PAX records carry what USTAR cannot hold.
    """
    return b"".join(iter_encoded(layer))


def iter_encoded(layer: LayerTar) -> Iterator[bytes]:
    """``encode_layer(layer)`` a piece at a time: each member's header (and PAX header), then its file's
    bytes as the entry holds them (not copied), then their padding; the end-of-archive blocks last [TAR-4]."""
    items: list[tuple[str, str, bytes, bytes, TarEntry, str]] = []
    for entry in layer.entries:
        if entry.content is not None:
            raise SpecError(f"entry {entry.path!r}: its bytes were not kept, so it cannot be written")
        name = entry.path[1:] + "/" if entry.kind == "dir" and entry.path != ROOT else entry.path[1:] or "./"
        flag = FLAG_OF[entry.kind]
        link = entry.link[1:] if entry.kind == "hardlink" else entry.link
        # A hardlink must follow its target, wherever the two sort: all go last.
        key = "\uffff" + canonical_key(entry.path) if entry.kind == "hardlink" else canonical_key(entry.path)
        items.append((key, name, flag, entry.data if entry.kind == "file" else b"", entry, link))
    for directory in layer.opaque:
        marker = (directory if directory != ROOT else "") + "/" + OPAQUE_MARKER
        items.append((canonical_key(marker), marker[1:], b"0", b"", TarEntry(marker, "file", 0o644), ""))
    for path in layer.whiteouts:
        parent = parent_of(path)
        marker = (parent if parent != ROOT else "") + "/" + WHITEOUT_PREFIX + name_of(path)
        items.append((canonical_key(marker), marker[1:], b"0", b"", TarEntry(marker, "file", 0o600), ""))
    items.sort(key=lambda item: item[0])
    for _, name, flag, data, entry, link in items:
        yield _headers(name, flag, len(data), entry, link)
        if data:
            yield data
            if len(data) % BLOCK:
                yield b"\0" * (-len(data) % BLOCK)
    yield b"\0" * (2 * BLOCK)
