"""``cowspec demo``: the seed's walk-through, from the model and from a real engine.

Two images share their layers (``acme/my-final-image:1.0`` only adds a CMD
to ``acme/my-base-image:1.0``), five containers run from the final one,
then each appends a line to ``/app/hello.sh``, which copies it up. The
tables are Docker's: ``docker images``, ``docker history``, ``docker ps
-s``, and the disk the containers take together.
"""

import base64
import json
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


def run_demo(engine: bool) -> int:
    """Print the walk-through; with ``engine``, a private dockerd's figures beside the model's."""
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
