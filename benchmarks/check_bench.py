"""The state machine's speed against the kernel, next to its floor, and how workers scale.

Not a timed test: it prints figures to compare within one run. On one core
(the process and every process it starts pinned to it), it runs the
filesystem machine with up to 30 steps per example against:

- the reference model itself as the system under test (``ModelDriver``):
  Hypothesis, the strategies, the model run twice and the comparison after
  every step, no system calls: the floor;
- the kernel's overlayfs (``kernel-overlay``).

Then it runs ``cowspec check --driver kernel-overlay`` with 1 and 2
workers (no pinning) and reports examples per second of each. Each figure
names the CPU from ``/proc/cpuinfo``. Run it on a quiet machine (here:
``/tmp/quiet.sh``), as root.

    python benchmarks/check_bench.py [--examples 300] [--steps 30] [--rounds 3] [--workers 1,2]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.machines import profiles
from cowcheck.machines.fs_machine import Tally, machine_for
from cowspec.formats.trace import encode_outcome
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import Op
from cowspec.fs.features import Features
from cowspec.fs.observe import Entry, layer_tree, merged_tree
from cowspec.fs.operations import step
from cowspec.fs.sizes import container_sizes
from cowspec.fs.stack import Container, new_container


class ModelSession:
    """The reference model as a session: what the machine compares with, at no system call's cost."""

    def __init__(self, container: Container) -> None:
        self.container = container

    def perform(self, op: Op) -> Entry:
        transition = step(self.container, op)
        self.container = transition.container
        return encode_outcome(transition.outcome)

    def merged(self) -> list[Entry]:
        return merged_tree(self.container)

    def upper(self) -> list[Entry]:
        return layer_tree(self.container.upper)

    def sizes(self) -> Entry:
        sizes = container_sizes(self.container)
        return {"size": sizes.size, "virtual_size": sizes.virtual_size}

    def close(self) -> None:
        pass


class ModelDriver:
    """The null driver: the model held against itself."""

    name = "model"

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> ModelSession:
        lowers = tuple(build_layer(entries, f"layer {index}") for index, entries in enumerate(layers))
        return ModelSession(new_container(lowers, features))


def cpu_name() -> str:
    """The CPU's model name, family and model, as ``/proc/cpuinfo`` gives them for the first CPU."""
    fields: dict[str, str] = {}
    with open("/proc/cpuinfo", encoding="utf-8") as table:
        for line in table:
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    name = fields.get("model name", "unknown CPU")
    return f"{name} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"


def one_run(driver: object, examples: int, steps: int) -> tuple[float, Tally]:
    """Seconds for ``examples`` derandomized examples of up to ``steps`` steps, and the tally."""
    tally = Tally()
    budget = settings(
        settings.get_profile("ci"), max_examples=examples, stateful_step_count=steps, database=None, print_blob=False
    )
    started = time.perf_counter()
    run_state_machine_as_test(machine_for(driver, tally), settings=budget)  # type: ignore[arg-type]
    return time.perf_counter() - started, tally


def workers_rate(workers: int, examples: int, steps: int) -> float:
    """Examples per second that ``cowspec check --workers N`` reports."""
    with tempfile.TemporaryDirectory(prefix="check-bench-") as save:
        done = _check(workers, examples, steps, save)
    found = re.search(r"\(([\d.]+) examples/s\)", done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"check_bench: cowspec check failed: {done.stdout}{done.stderr}")
    return float(found.group(1))


def _check(workers: int, examples: int, steps: int, save: str) -> "subprocess.CompletedProcess[str]":
    command = [sys.executable, "-m", "cowcheck.cli", "check", "--driver", "kernel-overlay", "--profile", "ci"]
    command += ["--examples", str(examples), "--steps", str(steps), "--workers", str(workers)]
    command += ["--database", "none", "--progress", "never", "--save", save]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated ('' for none)")
    arguments = parser.parse_args()
    assert profiles.PROFILES  # the profiles are registered
    print(f"CPU: {cpu_name()}; {os.cpu_count()} cores; kernel {os.uname().release}")
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {allowed[0]})  # one core, for this process and the container processes it starts
    print(f"one core (cpu {allowed[0]}): {arguments.examples} examples of up to {arguments.steps} steps, derandomized")
    medians: dict[str, float] = {}
    for label, driver in (("null (the model as driver)", ModelDriver()), ("kernel-overlay", KernelOverlay())):
        rates: list[float] = []
        for _ in range(arguments.rounds):
            seconds, tally = one_run(driver, arguments.examples, arguments.steps)
            rates.append(tally.examples / seconds)
            ok = tally.results["ok"] / max(tally.ops, 1)
        medians[label] = statistics.median(rates)
        print(
            f"  {label:<28} {medians[label]:6.1f} examples/s (median of {' '.join(f'{r:.1f}' for r in rates)}),"
            f" {tally.ops / max(tally.examples, 1):.1f} ops per example, {100 * ok:.0f}% of ops succeed"
        )
    floor, kernel = medians["null (the model as driver)"], medians["kernel-overlay"]
    print(
        f"  kernel / null: {kernel / floor:.2f} (the kernel's share of an example: {100 * (1 - kernel / floor):.0f}%)"
    )
    os.sched_setaffinity(0, set(allowed))
    counts = [int(each) for each in arguments.workers.split(",") if each]
    if counts:
        print(f"cowspec check --workers N, all {len(allowed)} cores, {arguments.examples * 2} examples:")
        for workers in counts:
            rate = workers_rate(workers, arguments.examples * 2, arguments.steps)
            print(f"  {workers} worker{'s' if workers > 1 else ''}: {rate:.1f} examples/s")


if __name__ == "__main__":
    main()
