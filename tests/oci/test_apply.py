"""Chapter 12: applying layers, flattening images, and reading images from disk."""

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cowcheck.cli.main import main
from cowcheck.images import docker_archive, write_oci_layout
from cowspec.oci.apply import DEFAULTS, ApplyOptions, flatten, flatten_with_stats, rootfs_entries, rootfs_layer
from cowspec.oci.identity import chain_ids, diff_id, digest
from cowspec.oci.layer_tar import LayerTar, TarEntry, decode_layer, encode_layer


def L(entries: list[TarEntry], whiteouts: tuple[str, ...] = (), opaque: tuple[str, ...] = ()) -> LayerTar:
    return LayerTar(
        tuple(sorted(entries, key=lambda e: tuple(e.path.split("/")))), frozenset(whiteouts), frozenset(opaque)
    )


def F(path: str, data: bytes = b"", **more: Any) -> TarEntry:
    return TarEntry(path, "file", data=data, **more)


def D(path: str, mode: int = 0o755, **more: Any) -> TarEntry:
    return TarEntry(path, "dir", mode=mode, **more)


def shape(layers: list[LayerTar], options: ApplyOptions = DEFAULTS) -> list[tuple[str, str]]:
    return [(str(each["path"]), str(each["type"])) for each in rootfs_entries(flatten(layers, options))]


# The verdicts of the divergence table in the research notes (section 4.3).
def test_same_layer_entry_survives_its_whiteout() -> None:
    """[APPLY-2] L1 has ``foo`` and ``.wh.foo``: ``foo`` is kept."""
    assert shape([L([F("/foo", b"1")], whiteouts=("/foo",))]) == [("/foo", "file")]


def test_opaque_marker_hides_only_lower_children() -> None:
    """[APPLY-2] L1 ``a/x``; L2 ``a/``, ``a/y``, ``a/.wh..wh..opq``: ``a/y`` only."""
    layers = [L([D("/a"), F("/a/x")]), L([D("/a"), F("/a/y")], opaque=("/a",))]
    assert shape(layers) == [("/a", "dir"), ("/a/y", "file")]


def test_whited_out_directory_recreated_has_no_old_children() -> None:
    """[APPLY-2][APPLY-4] L1 ``a/foo``; L2 ``.wh.a``; L3 ``a/baz``: ``a/baz`` only."""
    layers = [L([D("/a"), F("/a/foo")]), L([], whiteouts=("/a",)), L([F("/a/baz")])]
    assert shape(layers) == [("/a", "dir"), ("/a/baz", "file")]


def test_non_directory_over_directory_removes_subtree() -> None:
    """[APPLY-3] L1 dir ``d/…``; L2 symlink ``d`` with no whiteout: the subtree is gone."""
    layers = [L([D("/d"), F("/d/f")]), L([TarEntry("/d", "symlink", link="/x")])]
    assert shape(layers) == [("/d", "symlink")]


def test_directory_over_directory_merges_and_takes_attributes() -> None:
    """[APPLY-3]"""
    layers = [L([D("/d", 0o700, uid=1), F("/d/f")]), L([D("/d", 0o751, uid=2), F("/d/g")])]
    result = rootfs_entries(flatten(layers))
    assert result[0] == {"path": "/d", "type": "dir", "uid": 2, "gid": 0, "mode": 0o751}
    assert [each["path"] for each in result] == ["/d", "/d/f", "/d/g"]


def test_entry_under_a_lower_symlink_both_positions() -> None:
    """[APPLY-5] overlay's view replaces the link with a directory; a naive extractor follows it."""
    layers = [L([D("/t"), F("/t/old"), TarEntry("/l", "symlink", link="t")]), L([F("/l/new")])]
    assert shape(layers) == [("/l", "dir"), ("/l/new", "file"), ("/t", "dir"), ("/t/old", "file")]
    follow = ApplyOptions(under_symlink="follow")
    assert shape(layers, follow) == [("/l", "symlink"), ("/t", "dir"), ("/t/new", "file"), ("/t/old", "file")]


def test_implied_parents_both_positions() -> None:
    """[APPLY-4][APPLY-5] A parent the layer does not list: kept, or reset to 0o755 root."""
    layers = [L([D("/d", 0o700, uid=7)]), L([F("/d/f")])]
    kept = rootfs_entries(flatten(layers))[0]
    reset = rootfs_entries(flatten(layers, ApplyOptions(implied_parents="default")))[0]
    assert (kept["mode"], kept["uid"]) == (0o700, 7) and (reset["mode"], reset["uid"]) == (0o755, 0)


def test_hardlinks_count_their_names() -> None:
    """[APPLY-3] Hardlinks share content; ``nlink`` counts the names left."""
    layers = [
        L([F("/a", b"xy"), TarEntry("/b", "hardlink", link="/a"), TarEntry("/c", "hardlink", link="/a")]),
        L([], whiteouts=("/c",)),
    ]
    result = {each["path"]: each for each in rootfs_entries(flatten(layers))}
    assert result["/a"]["nlink"] == 2 and result["/b"]["nlink"] == 2 and result["/b"]["size"] == 2


def test_layer_stats() -> None:
    """[APPLY-6][SIZE-1] adds, changes, deletes and Docker's size per layer."""
    layers = [
        L(
            [
                D("/d"),
                F("/d/a", b"12345"),
                TarEntry("/d/b", "hardlink", link="/d/a"),
                TarEntry("/l", "symlink", link="abc"),
            ]
        ),
        L([F("/d/a", b"1"), F("/new")], whiteouts=("/l", "/missing"), opaque=()),
        L([D("/d")], opaque=("/d",)),
    ]
    _, stats = flatten_with_stats(layers)
    assert [(s.adds, s.changes, s.deletes, s.size) for s in stats] == [(4, 0, 0, 8), (1, 1, 1, 1), (0, 1, 2, 0)]


def test_a_symlink_target_that_is_not_utf8_counts_its_bytes() -> None:
    """[SIZE-1][APPLY-7] A target read from a tar as bytes that are not UTF-8 counts those bytes, no more.

    Names and targets keep such bytes as lone surrogates; counting them must
    not try to encode them as UTF-8 (that raised, and flatten with it).
    """
    layers = [L([TarEntry("/l", "symlink", link="\udcff\udcfe/x")]), L([F("/f", b"ab")])]
    root, stats = flatten_with_stats(layers)
    assert [(s.size, s.kept) for s in stats] == [(4, 4), (2, 2)]
    assert [entry.path for entry in root.entries] == ["/f", "/l"]


# -- images on disk -----------------------------------------------------------


IMAGE = [
    L([D("/etc"), F("/etc/hosts", b"hi\n"), F("/etc/passwd", b"root\n")]),
    L([F("/etc/motd", b"m")], whiteouts=("/etc/passwd",)),
]


def test_flatten_an_oci_layout_and_a_docker_save(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-1][IDENTITY-1][IDENTITY-2] Both forms give the same root filesystem."""
    archives = [encode_layer(each) for each in IMAGE]
    ids = [diff_id(each) for each in archives]
    write_oci_layout(str(tmp_path / "oci"), archives)
    (tmp_path / "saved.tar").write_bytes(docker_archive(archives, "cowspec/test:1"))
    assert main(["flatten", str(tmp_path / "oci")]) == 0
    from_oci = json.loads(capsys.readouterr().out)
    assert main(["flatten", str(tmp_path / "saved.tar")]) == 0
    assert json.loads(capsys.readouterr().out) == from_oci
    assert [each["path"] for each in from_oci] == ["/etc", "/etc/hosts", "/etc/motd"]
    assert main(["layers", "--json", str(tmp_path / "oci")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["diff_id"] for row in rows] == ids and [row["chain_id"] for row in rows] == chain_ids(ids)
    assert [(row["adds"], row["changes"], row["deletes"], row["size"]) for row in rows] == [(3, 0, 0, 8), (1, 0, 1, 1)]


def test_images_are_verified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[IDENTITY-1][TAR-3] A tampered blob, a wrong DiffID, garbage: one line, exit 2."""
    write_oci_layout(str(tmp_path / "oci"), [encode_layer(each) for each in IMAGE], gzipped=False)
    blob = max((tmp_path / "oci" / "blobs" / "sha256").iterdir(), key=lambda each: each.stat().st_size)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\1")
    assert main(["flatten", str(tmp_path / "oci")]) == 2
    assert "does not match its digest" in capsys.readouterr().err
    (tmp_path / "junk").write_text("not an image")
    assert main(["layers", str(tmp_path / "junk")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an image directory or tarball" in err
    assert main(["flatten", str(tmp_path / "nothing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    odd = tmp_path / "odd"
    write_oci_layout(str(odd), [encode_layer(each) for each in IMAGE], gzipped=False)
    index = json.loads((odd / "index.json").read_text())
    manifest_path = odd / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    manifest["layers"][0]["mediaType"] = "application/x-unknown"
    manifest_bytes = json.dumps(manifest).encode()
    new_digest = digest(manifest_bytes)
    (odd / "blobs" / "sha256" / new_digest.split(":")[1]).write_bytes(manifest_bytes)
    index["manifests"][0].update(digest=new_digest, size=len(manifest_bytes))
    (odd / "index.json").write_text(json.dumps(index))
    assert main(["layers", str(odd)]) == 2
    assert "unknown layer media type 'application/x-unknown'" in capsys.readouterr().err


def test_waste_and_efficiency(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-7] Shadowed and deleted bytes are wasted; a surviving hardlink keeps its inode."""
    layers = [
        L([F("/a", b"12345"), F("/b", b"123"), TarEntry("/c", "hardlink", link="/b"), F("/d", b"1234567")]),
        L([F("/a", b"xy")], whiteouts=("/b", "/d")),
    ]
    _, stats = flatten_with_stats(layers)
    assert [(each.size, each.kept, each.wasted) for each in stats] == [(15, 3, 12), (2, 2, 0)]
    archives = [encode_layer(each) for each in layers]
    write_oci_layout(str(tmp_path / "oci"), archives)
    assert main(["inspect", "--progress", str(tmp_path / "oci")]) == 0
    captured = capsys.readouterr()
    assert "image: 17 B stored in 2 layers, 5 B kept, 12 B wasted; efficiency 29.4%" in captured.out.splitlines()
    assert captured.err.splitlines() == ["cowspec: reading layer 0 (1 of 2)", "cowspec: reading layer 1 (2 of 2)"]


def test_flatten_to_a_tar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-1][TAR-4] ``--tar`` writes the same root filesystem, hardlinks as links."""
    layers = [L([D("/d"), F("/d/a", b"data"), TarEntry("/d/b", "hardlink", link="/d/a")]), L([F("/e", b"e")])]
    write_oci_layout(str(tmp_path / "oci"), [encode_layer(each) for each in layers])
    assert main(["flatten", str(tmp_path / "oci")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert main(["flatten", "--tar", str(tmp_path / "root.tar"), str(tmp_path / "oci")]) == 0
    written = (tmp_path / "root.tar").read_bytes()
    assert rootfs_entries(flatten([decode_layer(written)])) == printed
    with tarfile.open(tmp_path / "root.tar") as tar:
        assert [(member.name, member.type) for member in tar] == [
            ("d", tarfile.DIRTYPE),
            ("d/a", tarfile.REGTYPE),
            ("e", tarfile.REGTYPE),
            ("d/b", tarfile.LNKTYPE),
        ]
    assert main(["flatten", "--tar", str(tmp_path / "missing" / "x.tar"), str(tmp_path / "oci")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_flatten_to_a_tar_gives_hardlinks_their_target_s_attributes() -> None:
    """[APPLY-1][TAR-4] A hardlink member carries its inode's mode, owner and mtime, as GNU tar writes it."""
    when = 1_700_000_000 * 1_000_000_000
    layers = [L([F("/a", b"x", mode=0o4755, uid=7, gid=8, mtime=when), TarEntry("/b", "hardlink", link="/a")])]
    written = encode_layer(rootfs_layer(flatten(layers)))
    with tarfile.open(fileobj=io.BytesIO(written)) as tar:
        members = [(m.name, m.type, m.mode, m.uid, m.gid, m.mtime, m.linkname) for m in tar]
    assert members == [
        ("a", tarfile.REGTYPE, 0o4755, 7, 8, 1_700_000_000, ""),
        ("b", tarfile.LNKTYPE, 0o4755, 7, 8, 1_700_000_000, "a"),
    ]
