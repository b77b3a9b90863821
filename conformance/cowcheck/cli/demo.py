"""``cowspec demo``: the seed's walk-through, from the model and from a real engine.

Two images share their layers (``acme/my-final-image:1.0`` only adds a CMD
to ``acme/my-base-image:1.0``), five containers run from the final one,
then each appends a line to ``/app/hello.sh``, which copies it up. The
tables are Docker's: ``docker images``, ``docker history``, ``docker ps
-s``, and the disk the containers take together.
"""

import base64
import json
import sys
from collections.abc import Sequence
from typing import Any

from cowspec.formats.store_trace import decode_store_trace, run_store_model

UBUNTU = [
    [{"path": "/bin/bash", "type": "file", "mode": 493, "data": base64.b64encode(b"\x7fELF" + b"b" * 996).decode()},
     {"path": "/etc/os-release", "type": "file", "data": base64.b64encode(b"NAME=Ubuntu 16.10\n").decode()}],
    [{"path": "/usr/sbin/policy-rc.d", "type": "file", "mode": 493,
      "data": base64.b64encode(b"#!/bin/sh\nexit 101\n").decode()}],
    [{"path": "/run/systemd/container", "type": "file", "data": base64.b64encode(b"docker").decode()}],
]  # fmt: skip
HELLO = base64.b64encode(b'#!/bin/sh\necho "Hello world"\n').decode()
CONTAINERS = [f"my_container_{number}" for number in range(1, 6)]


def seed_trace(with_writes: bool) -> dict[str, Any]:
    """The walk-through as a store trace."""
    steps: list[dict[str, Any]] = [
        {"step": "image", "name": "ubuntu:16.10", "layers": UBUNTU,
         "history": [{"created_by": "ADD file:ubuntu"}, {"created_by": "set -xe && echo '#!/bin/sh' > policy-rc.d"},
                     {"created_by": "mkdir -p /run/systemd && echo 'docker' > container"},
                     {"created_by": 'CMD ["/bin/bash"]', "empty_layer": True}]},
        {"step": "build", "name": "acme/my-base-image:1.0", "from": "ubuntu:16.10",
         "instructions": [{"instruction": "COPY", "entries": [{"path": "/app/hello.sh", "type": "file", "mode": 493,
                                                               "data": HELLO}]}]},
        {"step": "build", "name": "acme/my-final-image:1.0", "from": "acme/my-base-image:1.0",
         "instructions": [{"instruction": "CMD", "text": "/app/hello.sh"}]},
    ]  # fmt: skip
    steps += [{"step": "create", "container": name, "image": "acme/my-final-image:1.0"} for name in CONTAINERS]
    if with_writes:
        line = base64.b64encode(b"echo hi\n").decode()
        steps += [
            {"step": "ops", "container": name, "ops": [{"op": "append", "path": "/app/hello.sh", "data": line}]}
            for name in CONTAINERS
        ]
    return {"format": "cowspec-store-trace/1", "steps": steps}


def human(size: int) -> str:
    """A size the way the docker CLI prints it (decimal units, 3 significant digits)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    return f"{size}B"


def tables(result: dict[str, Any]) -> list[str]:
    """Docker's tables for one result."""
    lines = ["REPOSITORY:TAG                        SIZE"]
    for name in ("acme/my-base-image:1.0", "acme/my-final-image:1.0"):
        lines.append(f"{name:<37} {human(result['images'][name]['size'])}")
    for name in ("acme/my-base-image:1.0", "acme/my-final-image:1.0"):
        lines.append("")
        lines.append(f"docker history {name} (sizes, newest first): "
                     + ", ".join(human(each) for each in result["images"][name]["history"]))  # fmt: skip
    lines.append("")
    lines.append("NAMES               SIZE")
    total = 0
    for name in CONTAINERS:
        figures = result["containers"][name]
        total += figures["size"]
        lines.append(f"{name:<19} {human(figures['size'])} (virtual {human(figures['virtual_size'])})")
    image = result["images"]["acme/my-final-image:1.0"]["size"]
    lines.append(f"disk for the five: {human(total)} of writable layers + {human(image)} of image, once"
                 f" = {human(total + image)}; layers stored: {result['layers']}")  # fmt: skip
    return lines


def run_demo(engine: bool, storage_drivers: Sequence[str] = ()) -> int:
    """Print the walk-through; with ``engine``, a private dockerd's figures beside the model's.

    With ``storage_drivers`` (``all`` for every one), the walk-through runs
    on a private engine per storage driver instead, printed side by side
    (``storage_driver_demo``).
    """
    if storage_drivers:
        return storage_driver_demo(storage_drivers)
    for with_writes in (False, True):
        print("== five containers, nothing written" if not with_writes else
              "\n== each container appends a line to /app/hello.sh (copied up whole)")  # fmt: skip
        trace = seed_trace(with_writes)
        model = run_store_model(decode_store_trace(trace))
        print("-- the model (cowspec oracle):")
        print("\n".join(tables(model)))
        if engine:
            from cowcheck.compare import store_differences
            from cowcheck.drivers.docker_store import run_store_docker

            real = run_store_docker(decode_store_trace(json.loads(json.dumps(trace))))
            print("-- a real Docker engine:")
            print("\n".join(tables(real)))
            differences = store_differences(model, real)
            print("-- agreement: " + ("every figure equal" if not differences else "; ".join(differences)))
            if differences:
                return 1
    return 0


def chosen_drivers(names: Sequence[str]) -> list[str]:
    """The storage drivers named (``all``: every one), each once, in order; ``ValueError`` for an unknown name."""
    from cowspec.store.drivers import STORAGE_DRIVERS

    chosen: list[str] = []
    for name in names:
        for each in STORAGE_DRIVERS if name == "all" else [name]:
            if each not in STORAGE_DRIVERS:
                raise ValueError(f"unknown storage driver {each!r} (known: {', '.join(STORAGE_DRIVERS)}, or all)")
            if each not in chosen:
                chosen.append(each)
    return chosen


def step_words(item: dict[str, Any]) -> str:
    """What one step reported, in a few words: ok, the refusal's kind, or each op's outcome."""
    if not item.get("ok"):
        return f"refused: {item.get('refusal') or item.get('reason', '?')}"
    results = item.get("results")
    if results is None:
        return "ok"
    return " ".join("ok" if each.get("ok") else str(each.get("errno", "?")) for each in results)


def driver_column(storage_driver: str) -> dict[str, Any]:
    """The walk-through (with its writes) on a private engine with ``storage_driver``: its result and docker diffs."""
    from cowcheck.drivers.docker_store import figures, layer_disk_usage, perform_step
    from cowcheck.drivers.engines import Dockerd

    trace = decode_store_trace(seed_trace(True))
    with Dockerd(storage_driver) as docker:
        items = [perform_step(docker, each) for each in trace]
        result = figures(docker, items)
        result["layer_disk"] = layer_disk_usage(docker)
        result["diff"] = {
            name: " ".join(docker.docker("diff", name).stdout.decode().split()) or "(none)" for name in CONTAINERS
        }
    return result


def side_by_side(rows: list[tuple[str, list[str]]], drivers: list[str]) -> list[str]:
    """A table: a row's label, then a column per driver."""
    width = max([len(label) for label, _ in rows] + [4])
    columns = [max([len(name)] + [len(cells[index]) for _, cells in rows]) for index, name in enumerate(drivers)]
    lines = [f"{'':<{width}}  " + "  ".join(f"{name:<{columns[index]}}" for index, name in enumerate(drivers))]
    for label, cells in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{cell:<{columns[index]}}" for index, cell in
                                                        enumerate(cells)).rstrip())  # fmt: skip
    return lines


def demo_rows(results: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """The rows of the side-by-side table, a column per driver's result."""
    steps = seed_trace(True)["steps"]
    rows: list[tuple[str, list[str]]] = []
    for index, step in enumerate(steps):
        label = f"step {index} {step['step']} {step.get('container') or step.get('name')}"
        rows.append((label, [step_words(result["steps"][index]) for result in results]))
    for name in ("acme/my-base-image:1.0", "acme/my-final-image:1.0"):
        rows.append((f"image {name} SIZE", [human(result["images"][name]["size"]) for result in results]))
        rows.append(("  history", [",".join(str(each) for each in result["images"][name]["history"])
                                   for result in results]))  # fmt: skip
    for name in CONTAINERS:
        rows.append((f"{name} SIZE", [str(result["containers"][name]["size"]) for result in results]))
        rows.append(("  virtual", [str(result["containers"][name]["virtual_size"]) for result in results]))
        rows.append(("  disk bytes", [disk_words(result.get("disk"), name) for result in results]))
        rows.append(("  docker diff", [result.get("diff", {}).get(name, "-") for result in results]))
    rows.append(("images total", [str(result["images_total"]) for result in results]))
    rows.append(("layers stored", [str(result["layers"]) for result in results]))
    rows.append(("layers' blocks (bytes)", [str(sum(result.get("layer_disk", {}).values()) or "-")
                                            for result in results]))  # fmt: skip
    return rows


def disk_words(disk: dict[str, Any] | None, name: str) -> str:
    """A container's bytes on disk (``apparent``, and ``exclusive`` where it differs), a range where the model's is."""

    def bytes_words(value: object) -> str:
        if isinstance(value, dict):
            return str(value["min"]) if value["min"] == value["max"] else f"{value['min']}..{value['max']}"
        return str(value)

    if not disk or name not in disk.get("containers", {}):
        return "-"
    figures = disk["containers"][name]
    apparent, exclusive = bytes_words(figures["apparent"]), bytes_words(figures["exclusive"])
    return apparent if apparent == exclusive else f"{apparent} (excl {exclusive})"


def storage_driver_demo(names: Sequence[str]) -> int:
    """The walk-through (five containers, each appending a line) on each storage driver, side by side.

    Each column is a private engine's with that storage driver; the last row
    says whether the model, configured with the same driver, gives every
    figure the engine gave (the differences follow the table; exit 1). An
    unknown driver is a usage error (exit 2); a driver that cannot run here
    is said in one line before any engine starts, and an engine that fails
    as it runs likewise (exit 3, as every command says it).
    """
    from cowcheck.cli.output import EXIT_REJECTED, EXIT_UNAVAILABLE
    from cowcheck.drivers.engines import storage_driver_unavailable

    try:
        drivers = chosen_drivers(names)
    except ValueError as error:
        print(f"cowspec: --storage-driver: {error}", file=sys.stderr)
        return EXIT_REJECTED
    for name in drivers:
        reason = storage_driver_unavailable(name)
        if reason is not None:
            print(f"cowspec: storage driver {name} cannot run here: {reason}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    from cowcheck.cli.store_check import model_config
    from cowcheck.drivers.protocol import DriverError, DriverUnavailable
    from cowcheck.store_compare import storage_differences

    print("== five containers from acme/my-final-image:1.0, each appends a line to /app/hello.sh")
    results = []
    for name in drivers:
        print(f"-- running on a private engine with --storage-driver {name}", flush=True)
        try:
            results.append(driver_column(name))
        except (DriverUnavailable, DriverError) as error:
            print(f"cowspec: storage driver {name}: {error}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    steps = decode_store_trace(seed_trace(True))
    differences = [storage_differences(run_store_model(steps, model_config(name)), result)
                   for name, result in zip(drivers, results, strict=True)]  # fmt: skip
    rows = demo_rows(results)
    rows.append(("the model, same driver", ["agrees" if not each else f"{len(each)} differ" for each in differences]))
    print("\n".join(side_by_side(rows, drivers)))
    for name, lines in zip(drivers, differences, strict=True):
        for line in lines:
            print(f"-- {name}: model and engine differ: {line}")
    return 1 if any(differences) else 0
