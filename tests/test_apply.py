"""Chapter 12: applying layers, flattening images, and reading images from disk."""

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from cowcheck.cli import main
from cowspec.apply import DEFAULTS, ApplyOptions, flatten, flatten_with_stats, rootfs_entries
from cowspec.identity import chain_ids, diff_id, digest
from cowspec.layer_tar import LayerTar, TarEntry, encode_layer


def L(entries: list[TarEntry], whiteouts: tuple[str, ...] = (), opaque: tuple[str, ...] = ()) -> LayerTar:
    return LayerTar(
        tuple(sorted(entries, key=lambda e: tuple(e.path.split("/")))), frozenset(whiteouts), frozenset(opaque)
    )


def F(path: str, data: bytes = b"", **more: object) -> TarEntry:
    return TarEntry(path, "file", data=data, **more)  # type: ignore[arg-type]


def D(path: str, mode: int = 0o755, **more: object) -> TarEntry:
    return TarEntry(path, "dir", mode=mode, **more)  # type: ignore[arg-type]


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


# -- images on disk -----------------------------------------------------------


def write_oci(directory: Path, layers: list[LayerTar], gzipped: bool = True) -> list[str]:
    """An OCI image layout of ``layers``; the DiffIDs."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        name = digest(data)
        (blobs / name.split(":")[1]).write_bytes(data)
        return name

    archives = [encode_layer(each) for each in layers]
    ids = [diff_id(archive) for archive in archives]
    config = put(json.dumps({"rootfs": {"type": "layers", "diff_ids": ids}}).encode())
    kind = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzipped else "")
    descriptors = [
        {"mediaType": kind, "digest": put(gzip.compress(a, mtime=0) if gzipped else a), "size": 0} for a in archives
    ]
    manifest = put(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"digest": config},
                "layers": descriptors,
            }
        ).encode()
    )
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{"digest": manifest}]}))
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return ids


def write_docker_save(path: Path, layers: list[LayerTar]) -> None:
    """A ``docker save`` tarball in the legacy manifest.json form."""
    archives = [encode_layer(each) for each in layers]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id(a) for a in archives]}}).encode()
    files = {"config.json": config}
    files.update({f"l{index}/layer.tar": archive for index, archive in enumerate(archives)})
    files["manifest.json"] = json.dumps(
        [{"Config": "config.json", "Layers": [f"l{i}/layer.tar" for i in range(len(archives))]}]
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


IMAGE = [
    L([D("/etc"), F("/etc/hosts", b"hi\n"), F("/etc/passwd", b"root\n")]),
    L([F("/etc/motd", b"m")], whiteouts=("/etc/passwd",)),
]


def test_flatten_an_oci_layout_and_a_docker_save(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-1][IDENTITY-1][IDENTITY-2] Both forms give the same root filesystem."""
    ids = write_oci(tmp_path / "oci", IMAGE)
    write_docker_save(tmp_path / "saved.tar", IMAGE)
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
    write_oci(tmp_path / "oci", IMAGE, gzipped=False)
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
