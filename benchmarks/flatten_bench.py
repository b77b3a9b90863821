"""Flattening a large image: cowspec beside the real tools, in one run.

Not a timed test. A deterministic generator writes a 20-layer image of
about 1 GB and 100,000 files (whiteouts, opaque directories, hardlinks and
symlinks included) as a ``docker save`` tarball, as an OCI layout with the
same uncompressed layers and as an OCI layout of gzip layers, into a
directory of your choosing. Then, in alternation so that the machine's mood
hits every contender alike, it times:

- ``cowspec flatten`` of the tarball and of the gzip layout (the whole
  command, process start included), with the fast reader
  (``cowcheck.fastlayer``; ``--stream`` adds the model's own streaming reader);
- Python's ``tarfile`` reading every layer and hashing every file (the bar to beat);
- ``openssl dgst -sha256`` over the layer files (one SHA-256 stream at a time:
  the bound on any reader that hashes that way, as ``tarfile`` and umoci do);
- ``zcat`` of the gzip layers piped into ``openssl dgst -sha256`` (the bar for gzip);
- ``umoci unpack`` of the OCI layout (if umoci is installed);
- ``docker load`` of the tarball into a private dockerd (with ``--docker``).

Each contender's peak resident memory is shown beside its time.

    python benchmarks/flatten_bench.py --dir /tmp/bench [--layers 20] [--files 100000] [--mb 1000] [--rounds 3]

It prints the CPU, the reader and hasher ``cowspec flatten --verbose`` names,
and each contender's median time, its ratio to ``cowspec flatten`` and its
peak resident memory.
"""

import argparse
import contextlib
import gzip
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

from cowcheck.fastlayer import describe
from cowcheck.images import docker_archive, write_oci_layout
from cowspec.oci.layer_tar import LayerTar, TarEntry, encode_layer


def generate(layers: int, files: int, megabytes: int, seed: int) -> list[bytes]:
    """Uncompressed layer archives, bottom first, deterministic for ``seed``."""
    rng = random.Random(seed)
    pool = rng.randbytes(4 << 20)
    per_layer = files // layers
    mean = max(1, megabytes * 1_000_000 // max(files, 1))
    dirs = [f"/d{a}/e{b}" for a in range(50) for b in range(20)]
    archives: list[bytes] = []
    for index in range(layers):
        entries: dict[str, TarEntry] = {}
        whiteouts: set[str] = set()
        opaque: set[str] = set()
        for directory in dirs:
            parent = directory.rsplit("/", 1)[0]
            entries[parent] = TarEntry(parent, "dir", 0o755)
            entries[directory] = TarEntry(directory, "dir", 0o755)
        own: list[str] = []
        while len(own) < per_layer:
            directory = rng.choice(dirs)
            path = f"{directory}/f{index}_{len(own)}"
            roll = rng.random()
            if roll < 0.03 and own:
                entries[path] = TarEntry(path, "hardlink", link=rng.choice(own))
            elif roll < 0.06:
                entries[path] = TarEntry(path, "symlink", 0o777, link="../" + rng.choice(dirs)[1:])
            else:
                size = min(len(pool) - 1, int(rng.expovariate(1 / mean)))
                start = rng.randrange(len(pool) - size)
                entries[path] = TarEntry(path, "file", 0o644, data=pool[start : start + size])
                own.append(path)
            if index and roll > 0.995:
                whiteouts.add(f"{rng.choice(dirs)}/f{rng.randrange(index)}_{rng.randrange(per_layer)}")
            if index and roll < 0.0005:
                opaque.add(rng.choice(dirs))
        ordered = tuple(sorted(entries.values(), key=lambda entry: tuple(entry.path.split("/"))))
        archives.append(encode_layer(LayerTar(ordered, frozenset(whiteouts), frozenset(opaque))))
    return archives


def timed(command: list[str], **kwargs: object) -> tuple[float, int]:
    """Seconds the command took, and its peak resident memory in KiB."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=CONTENDER_ENVIRONMENT, **kwargs)  # type: ignore[call-overload]
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{command[0]} failed with status {child.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss


CONTENDER_ENVIRONMENT = dict(os.environ)
"""What every contender runs with; ``main`` points Python's bytecode cache into the work directory."""


def bytecode_cache(directory: str) -> None:
    """Let the Python contenders keep compiled bytecode, in ``directory``, as an installed package has it.

    A shell that sets ``PYTHONDONTWRITEBYTECODE`` would otherwise have every
    run of ``cowspec`` compile its own modules again (about 0.1 s), which no
    installed copy does, while ``tarfile`` comes compiled with Python. The
    cache goes to the work directory, not next to the sources.
    """
    CONTENDER_ENVIRONMENT.pop("PYTHONDONTWRITEBYTECODE", None)
    CONTENDER_ENVIRONMENT["PYTHONPYCACHEPREFIX"] = directory


TARFILE_BASELINE = """
import hashlib, sys, tarfile
for path in sys.argv[1:]:
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile():
                hashlib.sha256(tar.extractfile(member).read()).hexdigest()
"""


def make_image(arguments: argparse.Namespace, saved: str, layout: str, layer_files: list[str]) -> None:
    """Write the image as a docker save tarball, OCI layouts (plain and gzip) and loose layer files (plain and gzip)."""
    started = time.perf_counter()
    archives = generate(arguments.layers, arguments.files, arguments.mb, arguments.seed)
    with open(saved, "wb") as handle:
        handle.write(docker_archive(archives, "cowspec/bench:1"))
    shutil.rmtree(layout, ignore_errors=True)
    write_oci_layout(layout, archives, tag="bench", gzipped=False)
    shutil.rmtree(layout + "-gzip", ignore_errors=True)
    write_oci_layout(layout + "-gzip", archives, tag="bench", gzipped=True)
    for name, archive in zip(layer_files, archives, strict=True):
        with open(name, "wb") as handle:
            handle.write(archive)
        with open(name + ".gz", "wb") as handle:
            handle.write(gzip.compress(archive, compresslevel=6, mtime=0))
    total = sum(len(each) for each in archives)
    made = time.perf_counter() - started
    print(f"image: {len(archives)} layers, {total / 1e6:.0f} MB uncompressed, made in {made:.1f} s", flush=True)


def made_with(stamp: str) -> str:
    """The sizes and seed the image in the work directory was made with; empty if unknown."""
    try:
        with open(stamp, encoding="ascii") as handle:
            return handle.read()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it, with its family and model and the features the hashers use."""
    fields: dict[str, str] = {}
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
        for line in info:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or fields.get("Model") or "unknown CPU"
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']} model {fields.get('model', '?')})"
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    has = [label for flag, label in (("avx512f", "AVX-512"), ("sha_ni", "SHA-NI"), ("sha2", "SHA2")) if flag in flags]
    return f"{name}, {' and '.join(has) if has else 'no AVX-512 or SHA instructions'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="work directory (created; everything is written there)")
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--mb", type=int, default=1000, help="total file bytes, in MB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--docker", action="store_true", help="also time docker load (starts a private dockerd)")
    parser.add_argument("--stream", action="store_true", help="also time the model's streaming reader")
    parser.add_argument("--no-umoci", action="store_true", help="leave umoci out (a minute or more a round)")
    parser.add_argument(
        "--hashers", action="store_true", help="also time cowspec flatten with each hasher forced (COWSPEC_HASHER)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep the image in --dir if it was made with the same sizes and seed"
    )
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="also time cowspec flatten from another checkout of cowspec (its reference/ and conformance/),"
        " to compare two versions in one run",
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="time only these contenders (names as printed, comma-separated), to keep a run short",
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="leave PYTHONDONTWRITEBYTECODE as it is: cowspec compiles its modules on every run",
    )
    parser.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    os.makedirs(arguments.dir, exist_ok=True)
    saved = os.path.join(arguments.dir, "image.tar")
    layout = os.path.join(arguments.dir, "oci")
    layer_files = [os.path.join(arguments.dir, f"layer{index}.tar") for index in range(arguments.layers)]
    if arguments.make_only:
        make_image(arguments, saved, layout, layer_files)
        return 0
    # The image is made by a child process: a contender forked from a parent
    # that held a gigabyte of archives would report that gigabyte as its
    # peak memory.
    stamp = os.path.join(arguments.dir, "made-with")
    wanted = f"{arguments.layers} {arguments.files} {arguments.mb} {arguments.seed}\n"
    if not (arguments.reuse and made_with(stamp) == wanted):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stamp)
        subprocess.run([sys.executable, __file__, "--make-only", *sys.argv[1:]], check=True)
        with open(stamp, "w", encoding="ascii") as handle:
            handle.write(wanted)
    else:
        print(f"image: reused from {arguments.dir} ({wanted.strip()})", flush=True)

    gzipped = " ".join(name + ".gz" for name in layer_files)
    contenders: dict[str, list[str]] = {
        "cowspec flatten": [sys.executable, "-m", "cowcheck.cli", "flatten", saved],
        "cowspec flatten gzip": [sys.executable, "-m", "cowcheck.cli", "flatten", layout + "-gzip"],
        "tarfile read+hash": [sys.executable, "-c", TARFILE_BASELINE, *layer_files],
        "openssl dgst": ["openssl", "dgst", "-sha256", *layer_files],
        "zcat | openssl dgst": ["sh", "-c", f"for f in {gzipped}; do zcat $f | openssl dgst -sha256; done"],
    }
    if arguments.baseline:
        checkout = os.path.abspath(arguments.baseline)
        path = os.pathsep.join(os.path.join(checkout, part) for part in ("reference", "conformance"))
        contenders[f"baseline {os.path.basename(checkout)}"] = [
            "env",
            f"PYTHONPATH={path}",
            sys.executable,
            "-m",
            "cowcheck.cli",
            "flatten",
            saved,
        ]
    if arguments.stream:
        contenders["cowspec --reader stream"] = [
            sys.executable,
            "-m",
            "cowcheck.cli",
            "flatten",
            "--reader",
            "stream",
            saved,
        ]
    if arguments.hashers:
        from cowcheck.fastlayer import hashers

        for backend in hashers():
            contenders[f"cowspec hasher={backend}"] = [
                "env",
                f"COWSPEC_HASHER={backend}",
                *contenders["cowspec flatten"],
            ]
    if shutil.which("umoci") and not arguments.no_umoci:
        bundle = os.path.join(arguments.dir, "bundle")
        contenders["umoci unpack"] = ["sh", "-c", f"rm -rf {bundle} && umoci unpack --image {layout}:bench {bundle}"]
    if arguments.only:
        wanted_names = [name.strip() for name in arguments.only.split(",")]
        unknown = [name for name in wanted_names if name not in contenders]
        if unknown:
            raise SystemExit(f"--only: no contender named {', '.join(unknown)} (there are: {', '.join(contenders)})")
        contenders = {name: contenders[name] for name in wanted_names}
    if not arguments.no_bytecode_cache:
        bytecode_cache(os.path.join(arguments.dir, "pycache"))
    for command in contenders.values():
        if command[0] in (sys.executable, "env"):
            timed(command)  # once untimed: Python's bytecode cache filled, the files in the page cache
    times: dict[str, list[float]] = {name: [] for name in contenders}
    memory: dict[str, list[int]] = {name: [] for name in contenders}
    engine = None
    if arguments.docker:
        from cowcheck.drivers.engines import Dockerd

        engine = Dockerd().__enter__()
        times["docker load"] = []
    try:
        for _ in range(arguments.rounds):
            for name, command in contenders.items():
                seconds, peak = timed(command)
                times[name].append(seconds)
                memory[name].append(peak)
            if engine is not None:
                with open(saved, "rb") as image:
                    times["docker load"].append(timed(engine.docker_command("load"), stdin=image)[0])
                engine.docker("rmi", "cowspec/bench:1")
    finally:
        if engine is not None:
            engine.__exit__(None, None, None)
    base = statistics.median(times.get("cowspec flatten") or next(iter(times.values())))
    print(f"cpu: {cpu_model()}, {len(os.sched_getaffinity(0))} cores")
    print(f"cowspec: {describe()}")
    print(f"{'contender':<24} {'median s':>9} {'vs cowspec':>11} {'peak MiB':>9}   rounds")
    for name, values in times.items():
        median = statistics.median(values)
        shown = " ".join(f"{value:.2f}" for value in values)
        most = f"{max(memory[name]) / 1024:.0f}" if memory.get(name) else "-"
        print(f"{name:<24} {median:>9.2f} {median / base:>10.2f}x {most:>9}   {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
