"""Any real layout and any of its images: umoci's layouts, several images, platforms, standard input and output."""

import gzip
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowcheck.images import DOCKER_MANIFEST, image_config, machine_platform, tar_of, write_oci_layout
from cowspec.oci.identity import diff_id
from cowspec.oci.layer_tar import LayerTar, TarEntry, decode_layer, encode_layer

CI = os.environ.get("CI") == "true"


def layer(*files: tuple[str, bytes]) -> bytes:
    return encode_layer(LayerTar(tuple(TarEntry(path, "file", data=data) for path, data in files)))


def cowspec(
    *arguments: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cowcheck.cli", *arguments],
        input=stdin,
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def flattened(*arguments: str, stdin: bytes = b"") -> dict[str, dict[str, object]]:
    """The paths ``cowspec flatten`` gives, with their entries; the command must succeed."""
    done = cowspec("flatten", *arguments, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return {entry["path"]: entry for entry in json.loads(done.stdout)}


def refused(*arguments: str, stdin: bytes = b"") -> str:
    """The one line a refused command prints; it must exit 2 and print nothing else."""
    done = cowspec(*arguments, stdin=stdin)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cowspec: "), done.stderr
    assert done.stdout == b""
    return lines[0]


def docker_save(images: dict[str, list[bytes]]) -> bytes:
    """A ``docker save`` tarball of several images, each tagged with its key."""
    files: dict[str, bytes] = {}
    manifest = []
    for tag, archives in images.items():
        config = image_config([diff_id(each) for each in archives])
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        files[config_name] = config
        names = []
        for archive in archives:
            names.append(hashlib.sha256(archive).hexdigest() + "/layer.tar")
            files[names[-1]] = archive
        manifest.append({"Config": config_name, "RepoTags": [tag], "Layers": names})
    files[DOCKER_MANIFEST] = json.dumps(manifest).encode()
    return tar_of(files)


def put(layout: Path, document: object) -> dict[str, object]:
    data = json.dumps(document).encode()
    name = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / name).write_bytes(data)
    return {"digest": "sha256:" + name, "size": len(data)}


def manifest_of(layout: Path, descriptor: dict[str, object]) -> dict[str, object]:
    digest = str(descriptor["digest"]).split(":", 1)[1]
    document: dict[str, object] = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    return document


def two_image_layout(tmp_path: Path) -> Path:
    """An OCI layout whose index.json lists two images, refs ``one`` and ``two``."""
    layout = tmp_path / "two"
    write_oci_layout(str(layout), [layer(("/one", b"1"))], tag="one")
    first = json.loads((layout / "index.json").read_text())["manifests"][0]
    write_oci_layout(str(layout), [layer(("/two", b"2"))], tag="two")
    second = json.loads((layout / "index.json").read_text())["manifests"][0]
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [first, second]}))
    return layout


def member_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    """A regular file's contents (which ``extractfile`` always gives); nothing for any other member."""
    if not info.isfile():
        return b""
    handle = tar.extractfile(info)
    assert handle is not None
    return handle.read()


def need_umoci() -> str:
    found = shutil.which("umoci")
    if found is None:
        if CI:
            pytest.fail("umoci is not installed, and CI must exercise a real umoci layout")
        pytest.skip("umoci is not installed")
    return found


def test_a_layout_written_by_umoci(tmp_path: Path) -> None:
    """umoci omits a manifest's mediaType, which the image-spec makes optional; two tags need a ref."""
    umoci = need_umoci()
    layout, bundle = str(tmp_path / "layout"), str(tmp_path / "bundle")

    def run(*arguments: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([umoci, *arguments], check=True, capture_output=True)

    run("init", "--layout", layout)
    run("new", "--image", layout + ":first")
    run("unpack", "--rootless", "--image", layout + ":first", bundle)
    (Path(bundle) / "rootfs" / "hello").write_bytes(b"hi\n")
    run("repack", "--image", layout + ":first", bundle)
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert "mediaType" not in manifest_of(tmp_path / "layout", index["manifests"][0])  # what this test is about
    entries = flattened(layout)
    assert entries["/hello"]["sha256"] == hashlib.sha256(b"hi\n").hexdigest()
    run("new", "--image", layout + ":second")
    line = refused("flatten", layout)
    assert "2 images" in line and "first, second" in line
    assert "/hello" in flattened(layout + ":first")
    assert "/hello" in flattened(layout, "--ref", "first")
    assert "/hello" not in flattened(layout + ":second")
    assert "refs: first, second" in refused("layers", layout + ":third")


def test_a_hand_made_layout_without_media_types(tmp_path: Path) -> None:
    """A manifest without mediaType is read; a manifest missing its config is refused, naming its blob."""
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), [layer(("/a", b"a"))])
    index = json.loads((layout / "index.json").read_text())
    manifest = manifest_of(layout, index["manifests"][0])
    del manifest["mediaType"]
    index["manifests"][0].update(put(layout, manifest))
    (layout / "index.json").write_text(json.dumps(index))
    assert "/a" in flattened(str(layout))
    del manifest["config"]
    described = put(layout, manifest)
    index["manifests"][0].update(described)
    (layout / "index.json").write_text(json.dumps(index))
    blob = str(described["digest"]).split(":", 1)[1]
    assert refused("flatten", str(layout)) == f"cowspec: {layout}: blobs/sha256/{blob} (manifest): missing 'config'"


def test_a_docker_save_of_two_images(tmp_path: Path) -> None:
    """PATH:TAG or --ref picks one; none given lists the tags; a path with ':' in its name is a path."""
    archive = tmp_path / "two.tar"
    archive.write_bytes(docker_save({"one:latest": [layer(("/one", b"1"))], "two:v2": [layer(("/two", b"2"))]}))
    assert refused("flatten", str(archive)) == (
        f"cowspec: {archive}: manifest.json holds 2 images; name one as PATH:TAG or with --ref"
        " (tags: one:latest, two:v2)"
    )
    assert "/one" in flattened(f"{archive}:one:latest")
    assert "/two" in flattened(f"{archive}:two:v2", "--reader", "stream")
    assert "/two" in flattened(str(archive), "--ref", "two:v2")
    assert "no image tagged 'three'" in refused("inspect", f"{archive}:three")
    odd = tmp_path / "odd:name.tar"
    shutil.copy(archive, odd)
    assert "/one" in flattened(f"{odd}:one:latest")


def test_an_oci_layout_of_two_images(tmp_path: Path) -> None:
    layout = two_image_layout(tmp_path)
    assert "refs: one, two" in refused("flatten", str(layout))
    assert "/one" in flattened(f"{layout}:one")
    assert "/two" in flattened(str(layout), "--ref", "two")


def test_the_platform_chooses_in_an_image_index(tmp_path: Path) -> None:
    """A ref names an image index; --platform (by default this machine's) picks its manifest; indexes nest."""
    layout = two_image_layout(tmp_path)
    index = json.loads((layout / "index.json").read_text())
    first, second = index["manifests"]
    arm, amd = dict(first), dict(second)
    arm["platform"] = {"os": "linux", "architecture": "arm64", "variant": "v8"}
    amd["platform"] = {"os": "linux", "architecture": "amd64"}
    inner = put(
        layout, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [arm, amd]}
    )
    # the inner index again, inside another, to show nesting is followed
    outer = put(
        layout, {"schemaVersion": 2, "manifests": [{**inner, "mediaType": "application/vnd.oci.image.index.v1+json"}]}
    )
    top = {**outer, "mediaType": "application/vnd.oci.image.index.v1+json"}
    top["annotations"] = {"org.opencontainers.image.ref.name": "multi"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    assert "/one" in flattened(str(layout), "--platform", "linux/arm64")
    assert "/one" in flattened(f"{layout}:multi", "--platform", "linux/arm64/v8")
    assert "/two" in flattened(str(layout), "--platform", "linux/amd64")
    if machine_platform() == "linux/amd64":
        assert "/two" in flattened(str(layout))
    elif machine_platform() == "linux/arm64":
        assert "/one" in flattened(str(layout))
    else:
        assert "no image for platform" in refused("flatten", str(layout))
    assert "platforms: linux/amd64, linux/arm64/v8" in refused("flatten", str(layout), "--platform", "linux/s390x")
    assert "expected os/arch" in refused("flatten", str(layout), "--platform", "amd64")


def test_standard_input_and_output(tmp_path: Path) -> None:
    """``-`` reads a docker save stream, spooled to $TMPDIR and removed; ``--tar -`` writes to standard output."""
    archives = [layer(("/a", b"a"), ("/b", b"bb")), layer(("/c", b"c"))]
    image = docker_save({"x:1": archives})
    spool = tmp_path / "spool"
    spool.mkdir()
    done = cowspec("flatten", "-", stdin=image, env={"TMPDIR": str(spool)})
    assert done.returncode == 0, done.stderr
    assert sorted(entry["path"] for entry in json.loads(done.stdout)) == ["/a", "/b", "/c"]
    assert list(spool.iterdir()) == []
    assert "/c" in flattened("-", "--ref", "x:1", stdin=gzip.compress(image))
    done = cowspec("flatten", "-", "--tar", "-", stdin=image)
    assert done.returncode == 0, done.stderr
    assert sorted(entry.path for entry in decode_layer(done.stdout).entries) == ["/a", "/b", "/c"]
    assert not (Path.cwd() / "-").exists()
    assert "truncated" in refused("flatten", "-", stdin=image[:1500])
    assert "not an image directory or tarball" in refused("layers", "-", stdin=b"")


def test_a_failed_write_leaves_nothing_and_says_so(tmp_path: Path) -> None:
    """A full disk (here a file size limit) and a full standard output: exit 2, one line, no partial file."""
    image = tmp_path / "image.tar"
    image.write_bytes(docker_save({"x:1": [layer(("/big", b"x" * 200_000))]}))
    out = tmp_path / "out" / "root.tar"
    out.parent.mkdir()

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    done = subprocess.run(
        [sys.executable, "-m", "cowcheck.cli", "flatten", str(image), "--tar", str(out)],
        capture_output=True,
        preexec_fn=small_files,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [f"cowspec: {out}: cannot write (File too large); nothing was written"]
    assert list(out.parent.iterdir()) == []
    if os.path.exists("/dev/full"):
        with open("/dev/full", "wb") as full:
            done = subprocess.run(
                [sys.executable, "-m", "cowcheck.cli", "flatten", str(image)],
                stdout=full,
                stderr=subprocess.PIPE,
                timeout=120,
                check=False,
            )
        assert done.returncode == 2
        lines = done.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cowspec: standard output: cannot write"), lines


def test_only_regular_files_inside_the_image_are_read(tmp_path: Path) -> None:
    """Absolute names, '..', links out of the image or to themselves, FIFOs: refused, both readers alike."""
    saved = tmp_path / "saved"
    saved.mkdir()
    with tarfile.open(fileobj=io.BytesIO(docker_save({"x:1": [layer(("/a", b"a"))]}))) as tar:
        tar.extractall(saved)
    manifest = json.loads((saved / DOCKER_MANIFEST).read_text())
    cases = {
        "Layers": ("/dev/zero", "file '/dev/zero' names no file inside the image"),
        "Config": ("/etc/hostname", "file '/etc/hostname' names no file inside the image"),
        "up": ("../../etc/hostname", "file '../../etc/hostname' names no file inside the image"),
    }
    for key, (name, problem) in cases.items():
        broken = [dict(manifest[0])]
        if key == "Config":
            broken[0]["Config"] = name
        else:
            broken[0]["Layers"] = [name]
        (saved / DOCKER_MANIFEST).write_text(json.dumps(broken))
        for reader in ("auto", "stream"):
            assert refused("flatten", "--reader", reader, str(saved)) == f"cowspec: {saved}: {problem}"
    (saved / DOCKER_MANIFEST).unlink()
    (saved / DOCKER_MANIFEST).symlink_to(DOCKER_MANIFEST)
    assert "Too many levels of symbolic links" in refused("flatten", str(saved))
    (saved / DOCKER_MANIFEST).unlink()
    (saved / DOCKER_MANIFEST).symlink_to("/etc/hostname")
    assert refused("layers", str(saved)) == f"cowspec: {saved}: manifest.json is a link leading out of the image"
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), [layer(("/a", b"a"))], gzipped=False)
    index = json.loads((layout / "index.json").read_text())
    described = manifest_of(layout, index["manifests"][0])["layers"]
    assert isinstance(described, list)
    blob = layout / "blobs" / "sha256" / described[0]["digest"].split(":")[1]
    blob.unlink()
    os.mkfifo(blob)
    for reader in ("auto", "stream"):
        line = refused("flatten", "--reader", reader, str(layout))
        assert line == f"cowspec: {layout}: blobs/sha256/{blob.name} is not a regular file"
    blob.unlink()
    blob.symlink_to("/dev/zero")
    assert refused("flatten", str(layout)).endswith(f"blobs/sha256/{blob.name} is a link leading out of the image")
    (layout / "index.json").write_bytes(b'{"manifests":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}")
    assert refused("flatten", str(layout)) == f"cowspec: {layout}: index.json: JSON nested too deeply to read"
    (layout / "index.json").unlink()
    (layout / "index.json").symlink_to("/dev/zero")
    assert refused("flatten", str(layout)) == f"cowspec: {layout}: index.json is a link leading out of the image"


def test_messages_stay_on_one_line() -> None:
    """Control characters and undecodable bytes of a name are escaped in every ``cowspec:`` line."""
    from cowcheck.cli.output import one_line

    assert one_line("a\nb\x1b[31mc\tdé \udc80") == "a\\nb\\x1b[31mc\\tdé \\udc80"
    assert one_line("plain name: ok") == "plain name: ok"


def compressed(kind: str, data: bytes) -> bytes:
    import bz2
    import lzma

    import zstandard

    return {
        "gzip": lambda: gzip.compress(data, compresslevel=1),
        "bzip2": lambda: bz2.compress(data),
        "xz": lambda: lzma.compress(data),
        "zstd": lambda: zstandard.ZstdCompressor().compress(data),
    }[kind]()


def test_a_compressed_docker_save_is_decompressed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers stored last-first in a .tar.gz: every compressed byte is fed to the decompressor once, and each
    layer is then read in place from the decompressed copy (a file region), as from a plain tarball."""
    from cowcheck import images

    archives = [layer((f"/f{index}", os.urandom(64 << 10))) for index in range(24)]
    plain = docker_save({"x:1": archives})
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        members = [(info, member_bytes(tar, info)) for info in tar]
    shuffled = io.BytesIO()
    with tarfile.open(fileobj=shuffled, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in reversed(members):
            tar.addfile(info, io.BytesIO(data))
    saved = tmp_path / "saved.tar.gz"
    saved.write_bytes(gzip.compress(shuffled.getvalue(), compresslevel=1))
    fed: list[int] = []
    feed = images._Inflater.feed

    def counted(self: images._Inflater, data: bytes) -> Iterator[bytes]:
        fed.append(len(data))
        return feed(self, data)

    monkeypatch.setattr(images._Inflater, "feed", counted)
    reading = images.ImageReading(str(saved))
    assert sum(fed) == saved.stat().st_size  # once, front to back
    regions = [reading._source.region(stream.name) for stream in reading._streams]
    assert all(region is not None and region.path.startswith("/proc/self/fd/") for region in regions)
    fast = [each.diff_id for each in images.read_image(str(saved), reader="auto")]
    streamed = [each.diff_id for each in images.read_image(str(saved), reader="stream")]
    assert fast == streamed == [diff_id(each) for each in archives]


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz", "zstd"])
def test_every_compression_of_a_docker_save(tmp_path: Path, kind: str) -> None:
    """gzip, bzip2, xz and zstd, from a file and from standard input, both readers: the plain tarball's result.
    Cut short or damaged: one line; past the bound on what is copied: one line."""
    plain = docker_save({"x:1": [layer(("/a", b"a" * 5000)), layer(("/b", b"b"))]})
    expected = flattened("-", stdin=plain)
    packed = compressed(kind, plain)
    saved = tmp_path / "saved"
    saved.write_bytes(packed + b"\0" * 64)  # padding after the stream, as tape tools write it
    for reader in ("auto", "stream"):
        assert flattened("--reader", reader, str(saved)) == expected
        assert flattened("--reader", reader, "-", stdin=packed) == expected
    saved.write_bytes(packed[: len(packed) // 2])
    for reader in ("auto", "stream"):
        assert refused("flatten", "--reader", reader, str(saved)).startswith(
            f"cowspec: {saved}: truncated or corrupt tarball ({kind}: "
        )
    damaged = bytearray(packed)
    damaged[len(damaged) // 2] ^= 0x55
    damaged[len(damaged) // 2 + 1] ^= 0x55
    assert "corrupt" in refused("flatten", "-", stdin=bytes(damaged))  # zstd without its checksum: the tar's


def test_what_is_copied_to_a_temporary_file_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cowcheck import images
    from cowspec.errors import SpecError

    saved = tmp_path / "saved.tar.zst"
    saved.write_bytes(compressed("zstd", docker_save({"x:1": [layer(("/a", b"\0" * 100_000))]})))
    monkeypatch.setattr(images, "MAX_SPOOL", 50_000)
    with pytest.raises(SpecError) as error:
        images.ImageReading(str(saved))
    assert (
        str(error.value)
        == f"{saved}: decompresses (zstd) to more than 50000 bytes, cowspec's bound for a tarball it copies"
    )


def test_a_descriptor_size_is_a_json_integer(tmp_path: Path) -> None:
    """NaN, Infinity, 1e999, 356.0, 356.5, true, "356", -1, or none: refused, naming the file and the field."""
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), [layer(("/a", b"a"))])
    text = (layout / "index.json").read_text()
    real = json.loads(text)["manifests"][0]["size"]
    assert "/a" in flattened(str(layout))
    for given, shown in [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("1e999", "Infinity"),
        (f"{real}.0", f"{real}.0"),
        (f"{real}.5", f"{real}.5"),
        ("true", "true"),
        (f'"{real}"', f'"{real}"'),
        ("-1", "-1"),
    ]:
        (layout / "index.json").write_text(text.replace(f'"size": {real}', f'"size": {given}'))
        for reader in ("auto", "stream"):
            line = refused("flatten", "--reader", reader, str(layout))
            assert line == f"cowspec: {layout}: index.json manifests: size is not a non-negative integer ({shown})"
    (layout / "index.json").write_text(text.replace(f'"size": {real}, ', ""))
    assert refused("layers", str(layout)) == f"cowspec: {layout}: index.json manifests: missing 'size'"
    (layout / "index.json").write_text(text.replace(f'"size": {real}', f'"size": {real + 1}'))
    assert refused("layers", str(layout)).endswith(f"{real} bytes, but index.json manifests says {real + 1}")


def test_refs_as_docker_reads_them(tmp_path: Path) -> None:
    """A ref without a tag means :latest, Docker Hub's prefixes are dropped; a bare OCI ref name matches as given;
    a podman docker-dir (a registry manifest in manifest.json) is named for what it is."""
    saved = tmp_path / "saved.tar"
    saved.write_bytes(
        docker_save(
            {"localhost/img1:latest": [layer(("/one", b"1"))], "docker.io/library/bb:1": [layer(("/bb", b"b"))]}
        )
    )
    assert "/one" in flattened(f"{saved}:localhost/img1")
    assert "/bb" in flattened(str(saved), "--ref", "bb:1")
    assert "no image tagged 'localhost/img2'" in refused("flatten", f"{saved}:localhost/img2")
    assert "no image tagged 'bb'" in refused("flatten", f"{saved}:bb")  # bb:latest, not bb:1
    layout = two_image_layout(tmp_path)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "localhost/one:latest"
    (layout / "index.json").write_text(json.dumps(index))
    assert "/one" in flattened(f"{layout}:localhost/one")
    assert "/two" in flattened(f"{layout}:two")
    assert "no image named 'two:latest'" in refused("flatten", f"{layout}:two:latest")
    docker_dir = tmp_path / "docker-dir"
    docker_dir.mkdir()
    (docker_dir / DOCKER_MANIFEST).write_text(json.dumps({"schemaVersion": 2, "layers": []}))
    assert refused("flatten", str(docker_dir)) == (
        f"cowspec: {docker_dir}: manifest.json is a registry manifest (schemaVersion 2),"
        " not a docker save image list: not a format cowspec reads"
    )
