"""The C decoding of plain layers, held to the model's decoding of the same bytes.

``cowcheck.fastlayer.plain_layer`` turns the headers of an uncompressed tar
into the layer value in C (``_fastlayer.decode``), where the model would
run ``iter_records``, ``iter_members`` and ``decode_members``. The model stays
the specification: for every archive, the C code either gives exactly the
model's value (entry for entry, field for field, with the model's own named
tuples) or gives up (None), and it never gives a value where the model
refuses the layer. ``_fastlayer.frame``, which tells the hasher where the
files are, frames exactly as ``_fastlayer.scan`` (held to the model's
records in test_fastlayer.py) and refuses at the same header.

The archives are written byte by byte here, not by an encoder that only
writes what it means: names with ``.``, ``..``, empty parts, a ustar prefix,
UTF-8 and bytes that are not UTF-8, whiteouts and opaque markers valid and
not, every type flag (PAX and GNU long-name records, devices, unknown
types), odd modes, owners and times, hardlinks to anything or nothing,
duplicates, entries below non-directories; then damaged (a byte flipped, a
header field rewritten with its checksum made right, a bad checksum, cut
short). A seeded corpus counts how often each outcome is met, so that the
comparison cannot pass by never being made.
"""

import hashlib
import io
import os
import random
import struct
import tarfile
from collections import Counter
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cowcheck import fastlayer
from cowspec.errors import SpecError
from cowspec.oci.identity import file_digest
from cowspec.oci.layer_tar import Content, LayerTar, TarEntry, decode_layer_stream, encode_layer
from tests.oci.test_layer_tar import archive, layer_values

NATIVE: Any = vars(fastlayer)["_fastlayer"]
pytestmark = pytest.mark.skipif(
    NATIVE is None and os.environ.get("CI") != "true", reason="cowcheck._fastlayer is not built (pip install -e .)"
)

DECODED = "decoded in C"
LEFT = "left to the model"
REFUSED = "refused by the framing"


def _model(data: bytes) -> LayerTar | str:
    """The model's value of an archive, or its error."""
    try:
        return decode_layer_stream(io.BytesIO(data).read, file_digest)
    except SpecError as error:
        return str(error)


def _spans(data: bytes) -> list[tuple[int, int]] | int:
    """Where ``_fastlayer.frame`` says the files are, checked against ``scan``'s framing of the same bytes."""
    spans = NATIVE.frame(data, fastlayer.FILE_FLAG_BYTES)
    scanned = fastlayer.scan(data)
    if isinstance(spans, int):
        assert spans == scanned, "frame and scan stop vouching at different headers"
        return spans
    assert not isinstance(scanned, int), "frame vouches for an archive scan refuses"
    numbers = struct.unpack(f"{len(spans) // struct.calcsize('n')}n", spans)
    pairs = list(zip(numbers[::2], numbers[1::2], strict=True))
    assert pairs == [(record[11], record[2]) for record in scanned if record[1] in fastlayer.FILE_FLAGS]
    return pairs


def agree(data: bytes) -> str:
    """Compare the C decoding of ``data`` with the model's; which of the three outcomes it was."""
    spans = _spans(data)
    if isinstance(spans, int):
        return REFUSED  # the fast reader gives these bytes to the model's streaming reader whole
    digests = b"".join(hashlib.sha256(data[start : start + size]).digest() for start, size in spans)
    made = fastlayer.plain_layer(data, digests)
    model = _model(data)
    if made is None:
        return LEFT
    assert isinstance(model, LayerTar), f"the C code decoded a layer the model refuses: {model}"
    assert made == model
    # Field for field with the model's types, in the model's order (repr tells an int from a bool, str from bytes).
    assert repr(made.entries) == repr(model.entries)
    assert all(type(entry) is TarEntry for entry in made.entries)
    assert all(type(entry.content) is Content for entry in made.entries if entry.kind == "file")
    assert type(made.whiteouts) is frozenset and type(made.opaque) is frozenset
    assert all(type(path) is str for path in made.whiteouts | made.opaque)
    return DECODED


# -- archives written byte by byte ----------------------------------------------

PARTS = ["a", "b", "dir", "é", "z", "\U0001f600", "x.wh.y", "a-b", "a0"]
ODD_PARTS = [".", "..", "", ".wh.a", ".wh.b", ".wh..wh..opq", ".wh.", ".wh..", ".wh...", "x\udcff"]
FLAGS = [b"0", b"0", b"0", b"\0", b"7", b"1", b"2", b"5", b"5", b"6", b"3", b"4", b"x", b"L", b"K", b"g", b"Z"]


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode()[-(width - 1) :] + b"\0"


def header(
    name: bytes,
    flag: bytes,
    size: int,
    link: bytes = b"",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 0,
    prefix: bytes = b"",
    magic: bytes = b"ustar\x0000",
) -> bytes:
    """One 512-byte header with a right checksum; names and numbers written as given (cut to their fields)."""
    block = bytearray(512)
    block[0:100] = name[:100].ljust(100, b"\0")
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(uid, 8)
    block[116:124] = _octal(gid, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(mtime, 12)
    block[156:157] = flag
    block[157:257] = link[:100].ljust(100, b"\0")
    block[257:265] = magic
    block[329:337] = _octal(1, 8)
    block[337:345] = _octal(3, 8)
    block[345:500] = prefix[:155].ljust(155, b"\0")
    return checksummed(block)


def checksummed(block: bytearray) -> bytes:
    """The header with its checksum made right."""
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def member(head: bytes, data: bytes = b"") -> bytes:
    return head + data + b"\0" * (-len(data) % 512)


def pax(records: list[tuple[bytes, bytes]]) -> bytes:
    """PAX extended-header records, each with its own length."""
    out = b""
    for key, value in records:
        body = b" " + key + b"=" + value + b"\n"
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        out += str(length).encode() + body
    return out


def random_name(rng: random.Random, known: dict[bytes, bytes], odd: float) -> bytes:
    """A name, mostly inside a directory seen before, so that parents, hardlinks and duplicates meet.

    ``known`` maps the names written so far to their type flags. ``odd`` is
    the chance of each odd thing: a duplicate, a parent that is not a
    directory, a part that is a marker, ``.``, ``..``, empty or not UTF-8, a
    leading ``./``, ``/`` or ``//``.
    """
    if known and rng.random() < odd:
        return rng.choice(list(known))  # a duplicate
    directories = [name for name, flag in known.items() if flag == b"5"]
    parents = list(known) if rng.random() < odd else directories
    base = rng.choice(parents) + b"/" if parents and rng.random() < 0.7 else b""
    part = rng.choice(ODD_PARTS) if rng.random() < odd else rng.choice(PARTS) + str(rng.randrange(1000))
    name = base + part.encode("utf-8", "surrogateescape")
    if rng.random() < 2 * odd:
        name = rng.choice([b"./", b"/", b"//", b""]) + name
    if rng.random() < 0.1:
        name += b"/"
    return name


def random_archive(rng: random.Random) -> bytes:
    """An archive of up to a dozen members, each odd in some way by chance (the chance drawn too), maybe damaged."""
    out = b""
    known: dict[bytes, bytes] = {}
    odd = rng.choice([0.0, 0.01, 0.03, 0.1])
    for _ in range(rng.randrange(13)):
        name = random_name(rng, known, odd)
        flag = rng.choice(FLAGS) if rng.random() < 2 * odd else rng.choice(FLAGS[:10])
        known[name.rstrip(b"/")] = flag
        data = b""
        if flag in (b"0", b"\0", b"7"):
            data = rng.randbytes(rng.choice([0, 1, 511, 512, 700]))
        elif flag == b"x":
            chosen = rng.sample(
                [
                    (b"path", random_name(rng, known, odd)),
                    (b"linkpath", random_name(rng, known, odd)),
                    (b"uid", rng.choice([b"7", b"x", b"70000000000"])),
                    (b"mtime", rng.choice([b"1.5", b"-3.25", b"12", b"bad"])),
                    (b"SCHILY.xattr.user.k", b"v\0w"),
                    (b"comment", b"ignored"),
                ],
                rng.randrange(1, 4),
            )
            data = pax(chosen) if rng.random() < 0.9 else b"5 a\n"
        elif flag in (b"L", b"K"):
            data = random_name(rng, known, odd) + b"\0"
        files = [each for each, kind in known.items() if kind in (b"0", b"\0", b"7") and each != name.rstrip(b"/")]
        targets = list(known) if rng.random() < odd else files
        link = rng.choice(targets) if targets and rng.random() < 0.9 else random_name(rng, known, odd)
        if rng.random() < odd:
            link = rng.choice([b"./", b"/", b"x/../"]) + link
        prefix = b""
        if rng.random() < 0.15 and b"/" in name:
            prefix, _, name = name.rpartition(b"/")
        out += member(
            header(
                name,
                flag,
                len(data),
                link,
                mode=rng.choice([0o644, 0o755, 0o4755, 0o7777, 0o1777777, 0o777]),
                uid=rng.choice([0, 1000, 0o7777777]),
                gid=rng.choice([0, 50]),
                mtime=rng.choice([0, 1_700_000_000, 0o77777777777]),
                prefix=prefix,
                magic=b"ustar\x0000" if rng.random() < 0.9 else b"ustar  \0",
            ),
            data,
        )
    archive = bytearray(out + b"\0" * 1024)
    roll = rng.random()
    if roll < 0.05:  # a byte flipped anywhere
        archive[rng.randrange(len(archive))] ^= 1 << rng.randrange(8)
    elif roll < 0.15 and out:  # a header field rewritten, its checksum made right
        start = 512 * rng.randrange(len(out) // 512)
        if any(archive[start : start + 512]):
            archive[start + rng.randrange(512)] = rng.choice(b"\0 07x/.\x80\xff")
            archive[start : start + 512] = checksummed(archive[start : start + 512])
    elif roll < 0.2:  # cut short
        del archive[rng.randrange(len(archive) + 1) :]
    return bytes(archive)


# -- the comparisons ------------------------------------------------------------


CORPUS = 3000


def test_a_seeded_corpus_of_odd_archives_decodes_alike() -> None:
    """[TAR-3][TAR-5][TAR-6] 3,000 archives written byte by byte: the C value is the model's, or the model decides.

    Each outcome must be met often, so that the comparison is made (not all
    left to the model) and the fallback is exercised (not all decoded in C).
    """
    outcomes: Counter[str] = Counter()
    refused = Counter[str]()
    rng = random.Random(8)
    for _ in range(CORPUS):
        data = random_archive(rng)
        outcome = agree(data)
        outcomes[outcome] += 1
        if outcome != DECODED:
            model = _model(data)
            refused["model refuses" if isinstance(model, str) else "model decodes"] += 1
    assert outcomes[DECODED] >= CORPUS // 3, outcomes
    assert outcomes[LEFT] >= CORPUS // 10, outcomes
    assert outcomes[REFUSED] >= CORPUS // 50, outcomes
    assert refused["model refuses"] >= CORPUS // 10 and refused["model decodes"] >= CORPUS // 40, refused


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False))
def test_odd_archives_decode_alike(rng: random.Random) -> None:
    """[TAR-3] The same property, with Hypothesis choosing (and shrinking) the archives."""
    event(agree(random_archive(rng)))


@settings(max_examples=300, deadline=None)
@given(layer_values())
def test_canonical_layers_decode_alike(layer: LayerTar) -> None:
    """[TAR-3][TAR-4] Every layer the model encodes: decoded in C where plain, always as the model decodes it."""
    data = encode_layer(layer)
    outcome = agree(data)
    event(outcome)
    if outcome == LEFT:
        assert _needs_the_model(layer), "a layer of plain headers left to the model"


def _needs_the_model(layer: LayerTar) -> bool:
    """Whether the canonical archive of ``layer`` holds what the C code leaves to the model.

    A PAX record (a name or link beyond 100 bytes, an owner beyond the octal
    field, an mtime with nanoseconds or out of range, xattrs), a device, or
    a name that is not UTF-8.
    """
    for entry in layer.entries:
        texts = (entry.path, entry.link)
        if (
            entry.kind == "char"
            or entry.xattrs
            or any(_not_utf8(text) or len(text.encode("utf-8", "surrogateescape")) > 100 for text in texts)
            or max(entry.uid, entry.gid) > 0o7777777
            or entry.mtime % 10**9
            or not 0 <= entry.mtime // 10**9 <= 0o77777777777
        ):
            return True
    return any(_not_utf8(path) for path in layer.whiteouts | layer.opaque)


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@settings(max_examples=300, deadline=None)
@given(layer=layer_values(), where=st.integers(0, 10**6), value=st.integers(0, 255))
def test_canonical_layers_damaged_decode_alike(layer: LayerTar, where: int, value: int) -> None:
    """[TAR-3] A header field of a canonical archive rewritten, its checksum made right: C and model agree."""
    data = bytearray(encode_layer(layer))
    headers = len(data) // 512 - 2
    if headers <= 0:
        return
    start = 512 * (where % headers)
    if not any(data[start : start + 512]):
        return
    data[start + where % 512] = value
    data[start : start + 512] = checksummed(data[start : start + 512])
    event(agree(bytes(data)))


# -- cases one by one ---------------------------------------------------------------


def plain(*members: bytes) -> bytes:
    return b"".join(members) + b"\0" * 1024


def test_plain_layers_are_decoded_in_c() -> None:
    """[TAR-1][TAR-2][TAR-3] Cleaned names, the root, markers, a ustar prefix, hardlinks, UTF-8: decoded in C."""
    cases = [
        plain(member(header(b"./", b"5", 0, mode=0o755)), member(header(b"./etc/", b"5", 0))),
        plain(member(header(b"a//b/./c", b"0", 3), b"abc"), member(header(b"/a/", b"5", 0))),
        plain(member(header(b"d/.wh.x", b"0", 0)), member(header(b"d/.wh..wh..opq", b"0", 0))),
        plain(member(header(b".wh.top", b"0", 0)), member(header(b"x.wh.y/z", b"0", 0))),
        plain(member(header(b"name", b"0", 1, prefix=b"long/prefix"), b"!")),
        plain(member(header(b"f", b"0", 2), b"hi"), member(header(b"h", b"1", 0, link=b"./f"))),
        plain(member(header(b"s", b"2", 0, link=b"../../etc//x")), member(header(b"p", b"6", 0))),
        plain(*(member(header(name.encode(), b"0", 0)) for name in ["z", "é", "a/b", "a-b", "b", "a0", "\U0001f600"])),
        plain(member(header(b"f", b"7", 0, mode=0o107777, uid=0o7777777, mtime=0o77777777777))),
        plain(member(header(b"f", b"0", 0, link=b"a file's link field is kept as written"))),
    ]
    for data in cases:
        assert agree(data) == DECODED, data[:100]


def test_what_the_model_must_decide_is_left_to_it() -> None:
    """[TAR-3][TAR-5][TAR-6] Everything but plain headers goes to the model, which decides (here, mostly refuses)."""
    cases = {
        "a PAX record": plain(member(header(b"pax", b"x", 9), pax([(b"path", b"a")])), member(header(b"b", b"0", 0))),
        "a GNU long name": plain(member(header(b"././@LongLink", b"L", 2), b"a\0"), member(header(b"b", b"0", 0))),
        "a device": plain(member(header(b"dev", b"3", 0))),
        "an unknown type": plain(member(header(b"u", b"Z", 0))),
        "a global header": plain(member(header(b"g", b"g", 0)), member(header(b"b", b"0", 0))),
        "a name that is not UTF-8": plain(member(header(b"\xff", b"0", 0))),
        "a link that is not UTF-8": plain(member(header(b"s", b"2", 0, link=b"\xfe"))),
        "a .. part": plain(member(header(b"a/../b", b"0", 0))),
        "a name climbing out": plain(member(header(b"../b", b"0", 0))),
        "a duplicate": plain(member(header(b"a", b"0", 0)), member(header(b"./a/", b"5", 0))),
        "a duplicate marker": plain(member(header(b".wh.a", b"0", 0)), member(header(b"/.wh.a", b"0", 0))),
        "a root that is a file": plain(member(header(b"./", b"0", 0))),
        "an empty whiteout": plain(member(header(b"d/.wh.", b"0", 0))),
        "a whiteout of ..": plain(member(header(b"d/.wh..", b"0", 0))),
        "a hardlink to nothing": plain(member(header(b"h", b"1", 0, link=b"missing"))),
        "a hardlink to a directory": plain(member(header(b"d", b"5", 0)), member(header(b"h", b"1", 0, link=b"d"))),
        "a hardlink chain": plain(
            member(header(b"f", b"0", 0)),
            member(header(b"g", b"1", 0, link=b"f")),
            member(header(b"h", b"1", 0, link=b"g")),
        ),
        "a hardlink to a marker": plain(
            member(header(b".wh.f", b"0", 0)), member(header(b"h", b"1", 0, link=b".wh.f"))
        ),
        "a hardlink with ..": plain(member(header(b"f", b"0", 0)), member(header(b"h", b"1", 0, link=b"x/../f"))),
        "an entry below a file": plain(member(header(b"f", b"0", 0)), member(header(b"f/g", b"0", 0))),
        "an entry below a symlink": plain(member(header(b"s", b"2", 0, link=b"/")), member(header(b"s/g", b"5", 0))),
    }
    for why, data in cases.items():
        assert agree(data) == LEFT, why
    decoded = {why for why, data in cases.items() if not isinstance(_model(data), str)}
    assert decoded == {
        "a PAX record",
        "a GNU long name",
        "a device",
        "a global header",
        "a name that is not UTF-8",
        "a link that is not UTF-8",
        "a .. part",
        "a hardlink with ..",
    }


def test_what_the_framing_refuses_goes_to_the_model() -> None:
    """[TAR-3] A bad checksum, a base-256 number, a cut archive: not framed; the model reads them whole."""
    good = plain(member(header(b"f", b"0", 3), b"abc"))
    bad_checksum = bytearray(good)
    bad_checksum[0] ^= 2
    base256 = bytearray(good)
    base256[108:116] = b"\x80" + (5).to_bytes(7, "big")
    assert agree(good) == DECODED
    for data in (bytes(bad_checksum), checksummed(base256[:512]) + bytes(base256[512:]), good[:700], good[:1024]):
        assert agree(data) == REFUSED


def test_what_tarfile_writes_is_decoded_alike() -> None:
    """[TAR-3] Python's tarfile in each of its formats: ustar decoded in C, GNU and PAX records left to the model."""
    members: list[tuple[str, str, bytes | str]] = [
        ("./etc/", "d", b""),
        ("./etc/hosts", "f", b"hello"),
        ("etc/.wh.motd", "f", b""),
        ("./bin/", "d", b""),
        ("./bin/sh", "f", b"#!"),
        ("./bin/ash", "h", "bin/sh"),
        ("./lib", "l", "usr/lib"),
        ("./" + "long/" * 30 + "name", "f", b"x"),
    ]
    for fmt, expected in ((tarfile.USTAR_FORMAT, DECODED), (tarfile.GNU_FORMAT, LEFT), (tarfile.PAX_FORMAT, LEFT)):
        assert agree(archive(members, fmt)) == expected, fmt


def test_decode_checks_its_digests_and_arguments() -> None:
    """The digests must be one per file: fewer or more is an error, never a value made of the wrong ones."""
    data = plain(member(header(b"f", b"0", 3), b"abc"), member(header(b"g", b"0", 0)))
    with pytest.raises(ValueError, match="fewer digests"):
        fastlayer.plain_layer(data, bytes(32))
    with pytest.raises(ValueError, match="more digests"):
        fastlayer.plain_layer(data, bytes(96))
    with pytest.raises(TypeError):
        NATIVE.decode(data, bytes(64), fastlayer.PLAIN_KINDS, int, Content, (0, 0))
    value = fastlayer.plain_layer(data, bytes(64))
    assert value is not None and [entry.sha256 for entry in value.entries] == ["00" * 32] * 2
