"""Model performance: a big stack, many lookups, many operations.

Not a timed test: it prints figures to compare within one run. Builds a
stack of 20 layers holding 100,000 entries (directories, files, symlinks,
hardlinks, whiteouts, opaque directories), looks up 100,000 paths, runs
10,000 operations, and reports the time of each phase (wall clock, and the
CPU time of the process, which moves less when other work shares the
machine), the mean time of one model step, and the peak memory of the
process. The build includes the container's view of its image layers
(``stack.image_view``), made once.

    python benchmarks/model_bench.py [--layers 20] [--entries 100000] [--ops 10000] [--seed 1]
"""

import argparse
import random
import resource
import sys
import time

from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import (
    Append,
    Chmod,
    Chown,
    Create,
    Link,
    Mkdir,
    Op,
    Open,
    Read,
    Readdir,
    Rename,
    Rmdir,
    Stat,
    Symlink,
    Truncate,
    Unlink,
    Write,
)
from cowspec.fs.operations import step
from cowspec.fs.stack import lookup, new_container


def make_layers(count: int, entries: int, rng: random.Random) -> tuple[tuple[tuple[LayerEntry, ...], ...], list[str]]:
    """``count`` layers with ``entries`` entries in all, and the paths used.

    Directories come from a fixed tree and files are named ``fN`` inside
    them, so no entry ever lands below a non-directory of its own layer.
    """
    dirs = [f"/d{i}" for i in range(40)]
    dirs += [f"{rng.choice(dirs)}/s{i}" for i in range(400)]
    dirs += [f"{rng.choice(dirs[40:])}/t{i}" for i in range(2000)]
    per_layer = entries // count
    layers: list[tuple[LayerEntry, ...]] = []
    every_file: list[str] = []
    for index in range(count):
        layer: dict[str, LayerEntry] = {}
        own_files: list[str] = []
        while len(layer) < per_layer:
            roll = rng.random()
            if roll < 0.05 and every_file:
                path = rng.choice(every_file)
                layer.setdefault(path, LayerEntry(path, "whiteout", 0))
                continue
            if roll < 0.09:
                parent = rng.choice(dirs)
                layer[parent] = LayerEntry(parent, "dir", 0o755, opaque=index > 0 and rng.random() < 0.1)
                continue
            path = f"{rng.choice(dirs)}/f{rng.randrange(60)}"
            if path in layer:
                continue
            if roll < 0.13:
                layer[path] = LayerEntry(path, "symlink", 0, target="../" + rng.choice(dirs).lstrip("/"))
            elif roll < 0.16 and own_files:
                layer[path] = LayerEntry(path, "hardlink", 0, target=rng.choice(own_files))
            else:
                layer[path] = LayerEntry(path, "file", 0o644, data=b"x" * rng.randrange(0, 64))
                own_files.append(path)
        every_file += own_files
        layers.append(tuple(layer.values()))
    return tuple(layers), dirs + every_file


def random_op(rng: random.Random, paths: list[str]) -> Op:
    pick = lambda: rng.choice(paths)  # noqa: E731
    fresh = lambda: f"{pick()}/n{rng.randrange(4)}"  # noqa: E731
    return rng.choice(
        [
            lambda: Create(fresh(), 0o644),
            lambda: Open(pick(), "w"),
            lambda: Write(pick(), rng.randrange(8), b"abc"),
            lambda: Append(pick(), b"z"),
            lambda: Truncate(pick(), rng.randrange(5)),
            lambda: Read(pick()),
            lambda: Stat(pick()),
            lambda: Readdir(pick()),
            lambda: Mkdir(fresh(), 0o755),
            lambda: Rmdir(pick()),
            lambda: Unlink(pick()),
            lambda: Rename(pick(), fresh()),
            lambda: Symlink("x", fresh()),
            lambda: Link(pick(), fresh()),
            lambda: Chmod(pick(), 0o600),
            lambda: Chown(pick(), 1, 1),
        ]
    )()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    rng = random.Random(arguments.seed)

    specs, paths = make_layers(arguments.layers, arguments.entries, rng)
    total = sum(len(layer) for layer in specs)
    started, cpu = time.perf_counter(), time.process_time()
    lowers = tuple(build_layer(entries, f"layer {index}") for index, entries in enumerate(specs))
    layered = time.perf_counter()
    container = new_container(lowers)
    built, built_cpu = time.perf_counter() - started, time.process_time() - cpu
    viewed = time.perf_counter() - layered

    probes = [
        rng.choice(paths) if rng.random() < 0.8 else rng.choice(paths) + "/missing" for _ in range(arguments.lookups)
    ]
    started, cpu = time.perf_counter(), time.process_time()
    found = sum(lookup(container, path) is not None for path in probes)
    looked, looked_cpu = time.perf_counter() - started, time.process_time() - cpu

    ops = [random_op(rng, paths) for _ in range(arguments.ops)]
    outcomes: dict[str, int] = {}
    slowest = 0.0
    started, cpu = time.perf_counter(), time.process_time()
    for op in ops:
        before = time.perf_counter()
        transition = step(container, op)
        slowest = max(slowest, time.perf_counter() - before)
        container = transition.container
        key = transition.outcome if isinstance(transition.outcome, str) else "ok"
        outcomes[key] = outcomes.get(key, 0) + 1
    stepped, stepped_cpu = time.perf_counter() - started, time.process_time() - cpu

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"stack: {arguments.layers} layers, {total} entries (seed {arguments.seed})")
    print(
        f"build:   {built:8.3f} s  cpu {built_cpu:7.3f} s  ({1e6 * built / total:.1f} us per entry;"
        f" image view {viewed:.3f} s of it)"
    )
    print(
        f"lookup:  {looked:8.3f} s  cpu {looked_cpu:7.3f} s  for {len(probes)} paths, {found} found"
        f" ({1e6 * looked / len(probes):.1f} us each)"
    )
    print(
        f"ops:     {stepped:8.3f} s  cpu {stepped_cpu:7.3f} s  for {len(ops)} ops:"
        f" mean {1e3 * stepped / len(ops):.3f} ms, slowest {1e3 * slowest:.3f} ms"
    )
    total_time, total_cpu = built + looked + stepped, built_cpu + looked_cpu + stepped_cpu
    print(f"total:   {total_time:8.3f} s  cpu {total_cpu:7.3f} s  (build, lookups and ops)")
    print("results: " + ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items(), key=lambda kv: -kv[1])))
    print(f"peak memory (max RSS): {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
