"""What ``flatten`` writes, and where: closed standard streams, ``--tar`` files, the tar's bytes and its memory."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cowspec.oci.layer_tar import decode_layer
from tests.cowcheck.test_image_layouts import docker_save, layer


def run(*arguments: str, setup: Callable[[], None] | None = None, cwd: str | None = None) -> tuple[int, list[str]]:
    """Exit status and standard error lines of ``cowspec ARGUMENTS``, ``setup`` run in the child first."""
    done = subprocess.run(
        [sys.executable, "-m", "cowcheck.cli", *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=setup,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
        check=False,
    )
    return done.returncode, done.stderr.decode().splitlines()


def image(tmp_path: Path) -> Path:
    saved = tmp_path / "image.tar"
    saved.write_bytes(docker_save({"x:1": [layer(("/a", b"a" * 3000), ("/b", b"b"))]}))
    return saved


def test_closed_standard_input_and_output(tmp_path: Path) -> None:
    """``<&-`` and ``>&-``: one line, exit 2, no traceback."""
    saved = str(image(tmp_path))
    closed_in, closed_out = (lambda: os.close(0)), (lambda: os.close(1))
    assert run("flatten", "-", setup=closed_in) == (2, ["cowspec: <stdin>: standard input is closed"])
    line = "cowspec: standard output: closed; nothing was written"
    assert run("flatten", saved, setup=closed_out) == (2, [line])
    assert run("flatten", "--tar", "-", saved, setup=closed_out) == (2, [line])
    assert run("layers", saved, setup=closed_out) == (2, [line])
    assert run("inspect", saved, setup=closed_out) == (2, [line])
    out = tmp_path / "out.tar"
    assert run("flatten", "--tar", str(out), saved, setup=closed_out) == (0, [])
    assert sorted(entry.path for entry in decode_layer(out.read_bytes()).entries) == ["/a", "/b"]
    # The trace commands too: one line, no traceback, nothing run.
    trace = str(Path(__file__).resolve().parents[2] / "docs" / "rationale" / "hardlink-copy-up.json")
    assert run("oracle", trace, setup=closed_out) == (2, [line])
    assert run("oracle", trace)[0] == 0


def test_where_tar_output_goes(tmp_path: Path) -> None:
    """An empty OUT and a directory are refused before anything is written; a file replaced keeps its mode;
    through a symlink the target is written, its temporary file beside it, nothing left over."""
    saved = str(image(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    before = sorted(tmp_path.iterdir())
    assert run("flatten", "--tar", "", saved, cwd=str(work)) == (
        2,
        ["cowspec: --tar: an empty name; nothing was written"],
    )
    assert sorted(tmp_path.iterdir()) == before and list(work.iterdir()) == []
    assert run("flatten", "--tar", str(work), saved) == (2, [f"cowspec: {work}: is a directory; nothing was written"])
    assert list(work.iterdir()) == []
    out = work / "out.tar"
    out.write_bytes(b"old")
    out.chmod(0o640)
    assert run("flatten", "--tar", str(out), saved) == (0, [])
    assert (out.stat().st_mode & 0o7777) == 0o640 and out.read_bytes()[:3] != b"old"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (work / "link.tar").symlink_to(elsewhere / "target.tar")
    assert run("flatten", "--tar", str(work / "link.tar"), saved) == (0, [])
    assert (work / "link.tar").is_symlink() and (elsewhere / "target.tar").read_bytes() == out.read_bytes()
    assert sorted(each.name for each in work.iterdir()) == ["link.tar", "out.tar"]
    assert [each.name for each in elsewhere.iterdir()] == ["target.tar"]


def test_the_tar_written_is_the_canonical_archive(tmp_path: Path) -> None:
    """Written a member at a time, to a file or to standard output: ``encode_layer``'s bytes exactly."""
    from cowcheck.images import read_image
    from cowspec.oci.apply import flatten, rootfs_layer
    from cowspec.oci.layer_tar import LayerTar, TarEntry, encode_layer, iter_encoded

    long_name = "/" + "d" * 120 + "/file"
    entries = (
        TarEntry("/" + "d" * 120, "dir", 0o755),
        TarEntry(long_name, "file", 0o600, uid=3_000_000, data=b"x" * 513),
        TarEntry("/empty", "file", data=b""),
        TarEntry("/link", "symlink", link="/empty"),
        TarEntry("/same", "hardlink", link=long_name),
    )
    archive = encode_layer(LayerTar(entries))
    assert b"".join(iter_encoded(LayerTar(entries))) == archive
    saved = tmp_path / "image.tar"
    saved.write_bytes(docker_save({"x:1": [archive]}))
    expected = encode_layer(rootfs_layer(flatten([each.layer for each in read_image(str(saved), keep_data=True)])))
    out = tmp_path / "out.tar"
    for reader in ("auto", "stream"):
        assert run("flatten", "--reader", reader, "--tar", str(out), str(saved)) == (0, [])
        assert out.read_bytes() == expected
        done = subprocess.run(
            [sys.executable, "-m", "cowcheck.cli", "flatten", "--reader", reader, "--tar", "-", str(saved)],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0 and done.stdout == expected


def test_tar_output_holds_the_files_bytes_about_once(tmp_path: Path) -> None:
    """A 256 MiB file: the peak is well under three times its size, as it was (the reader's buffer and a slice
    of it, then each member and the whole archive joined)."""
    from cowcheck.images import write_oci_layout

    size = 256 << 20
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), [layer(("/big", b"\0" * size))])
    out = tmp_path / "out.tar"
    for reader in ("auto", "stream"):
        probe = (
            "import resource, subprocess, sys\n"
            "done = subprocess.run(sys.argv[1:], check=False)\n"
            "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
        )
        command = [sys.executable, "-m", "cowcheck.cli", "flatten", "--reader", reader, "--tar", str(out), str(layout)]
        done = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, timeout=300, check=True)
        status, peak = map(int, done.stdout.split())
        assert status == 0, done.stderr
        assert out.stat().st_size > size
        # About 1.1 here; the fast reader may add a transient 256 MiB (it inflates up to its limit before handing
        # a larger layer to the model), so 2.5, which the old three copies (3.0 and more) fail.
        assert peak < 2.5 * size, (reader, peak / size)
