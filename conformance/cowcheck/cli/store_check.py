"""``cowspec check --driver docker`` without traces: the store machine on a private engine, and its report.

The engine runs the storage driver ``--storage-driver`` names (``overlay2``
by default), and the model is configured with the same driver and with the
size the engine's backing filesystem gives a directory (``model_config``).
A result is held to the model figure by figure, where the model allows more
than one set of figures (the clock on naive-diff drivers) any one of them,
and the bytes on disk within the model's ranges (``store_compare.storage_differences``).
"""

import argparse
import json
import os
import sys
import time

from hypothesis import settings
from hypothesis.errors import HypothesisException
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test

from cowcheck.cli.output import EXIT_DIVERGED, EXIT_REJECTED, UsageError
from cowcheck.drivers.engines import Dockerd, engine_parent
from cowcheck.drivers.protocol import DriverError, DriverUnavailable, StoreDriver
from cowcheck.machines import profiles
from cowcheck.machines import store_machine as machine
from cowspec.formats.store_trace import encode_store_trace
from cowspec.fs.observe import Entry
from cowspec.store.drivers import StoreConfig, storage_driver
from cowspec.store.steps import Step


def model_config(name: str) -> StoreConfig:
    """The model's configuration for a private engine with storage driver ``name``.

    The directory size and the block size are probed where the engine's
    data root will be (its parent directory's filesystem); on btrfs the data
    root is the engine's own filesystem (``loopfs``: its block size; its
    directories are sized by the model itself).
    """
    from cowcheck.drivers.docker_store import block_size, directory_size

    if name == "btrfs":
        from cowcheck.drivers.loopfs import BTRFS_BLOCK_SIZE

        return StoreConfig(storage_driver(name), directory_size(engine_parent()), BTRFS_BLOCK_SIZE)
    return StoreConfig(storage_driver(name), directory_size(engine_parent()), block_size(engine_parent()))


def chosen_storage_driver(in_trace: str | None, asked: str | None, fixed: str | None = None) -> str:
    """The storage driver of a run: the driver's own (``docker-vfs``...), the trace's, or ``--storage-driver``'s.

    Any two of them naming different drivers, or an unknown name, is a usage
    error (one line): ``docker_store.chosen_storage_driver``'s words.
    """
    from cowcheck.drivers.docker_store import chosen_storage_driver as chosen

    try:
        return chosen([("--driver", fixed), ("the trace", in_trace), ("--storage-driver", asked)])
    except DriverError as error:
        raise UsageError(str(error)) from None


ENGINE_FIELDS = ("storage_driver", "directory_size", "block_size")
"""A store trace's optional fields that describe the engine (``decode_store_config``)."""


def trace_engine(document: dict[str, object]) -> tuple[StoreConfig, frozenset[str]]:
    """The engine a store trace document describes, and which of ``ENGINE_FIELDS`` it names itself."""
    from cowspec.formats.store_trace import decode_store_config

    return decode_store_config(document), frozenset(key for key in ENGINE_FIELDS if key in document)


def run_config(driver: StoreDriver, config: StoreConfig, named: frozenset[str], asked: str | None) -> StoreConfig:
    """The engine a store trace runs on with ``driver`` and the model's configuration for it.

    The storage driver: ``chosen_storage_driver`` of the driver's own, the
    trace's and ``--storage-driver`` (``asked``). On a private Docker engine
    the directory and block sizes are the machine's (``model_config``),
    unless the trace names them; another store driver takes no storage
    driver but overlay2's and the trace's sizes.
    """
    from dataclasses import replace

    from cowcheck.drivers.docker_store import DockerStore

    name = chosen_storage_driver(
        config.driver if "storage_driver" in named else None, asked, getattr(driver, "storage_driver", None)
    )
    if not isinstance(driver, DockerStore):
        if name != "overlay2":
            raise UsageError(f"storage driver {name}: --driver {driver.name} runs no other storage driver")
        return config
    probed = model_config(name)
    return replace(
        probed,
        directory_size=config.directory_size if "directory_size" in named else probed.directory_size,
        block_size=config.block_size if "block_size" in named else probed.block_size,
    )


def run_on_engine(driver: StoreDriver, steps: tuple[Step, ...], config: StoreConfig) -> Entry:
    """``driver``'s store result for ``steps`` on the storage driver ``config`` names (``run_config``'s)."""
    from cowcheck.drivers.docker_store import DockerStore

    if isinstance(driver, DockerStore):
        return driver.run(steps, config.driver)
    return driver.run(steps)


def overridden(budget: settings, arguments: argparse.Namespace) -> settings:
    """A machine's budget with the ``--examples`` and ``--steps`` the command line gives, each at least 1."""
    if arguments.examples is not None:
        if arguments.examples < 1:
            raise UsageError("--examples must be at least 1")
        budget = settings(budget, max_examples=arguments.examples)
    if arguments.steps is not None:
        if arguments.steps < 1:
            raise UsageError("--steps must be at least 1")
        budget = settings(budget, stateful_step_count=arguments.steps)
    return budget


def generated_store_check(arguments: argparse.Namespace) -> int:
    """Random store steps on a private Docker engine, every figure compared after each; 1 on a divergence."""
    budget = overridden(profiles.store_machine(), arguments)
    from cowcheck.drivers import registry

    fixed = getattr(registry.store_driver(arguments.driver), "storage_driver", None)  # docker-vfs...: its own
    name = chosen_storage_driver(None, getattr(arguments, "storage_driver", None), fixed)
    print(
        f"cowspec check --driver {arguments.driver}: the store machine, {budget.max_examples} examples of up to"
        f" {budget.stateful_step_count} steps on a private engine with storage driver {name}"
        " (every figure compared after every step)",
        flush=True,
    )
    machine.found.clear()
    started = time.monotonic()
    failure: BaseException | None = None
    with Dockerd(name) as docker, with_reporter(lambda _message: None):
        try:
            run_state_machine_as_test(machine.store_machine_for(docker, model_config(name)), settings=budget)
        except (DriverUnavailable, DriverError):
            raise
        except (AssertionError, HypothesisException, OSError, RuntimeError) as error:
            failure = error
    elapsed = time.monotonic() - started
    print(f"  {elapsed:.1f} s")
    if failure is None:
        print("  divergences: none: every step's result and every figure agreed")
        return 0
    if not machine.found:
        print(f"  the run stopped with an error: {type(failure).__name__}: {failure}")
        return EXIT_DIVERGED
    smallest = machine.found[-1]  # the last one raised is the smallest Hypothesis found
    try:
        os.makedirs(arguments.save, exist_ok=True)
        path = os.path.join(arguments.save, "store-divergence-1.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(encode_store_trace(smallest.steps, smallest.config), handle, indent=1)
            handle.write("\n")
    except OSError as error:
        print(f"  divergence 1: {smallest}")
        print(f"cowspec: --save {arguments.save}: cannot write ({error.strerror})", file=sys.stderr)
        return EXIT_REJECTED
    print(f"  divergence 1: {smallest}")
    print(f"    minimal store trace ({len(smallest.steps)} steps) saved to {path}")
    print(f"    replay: cowspec check --driver {arguments.driver} {path}")
    return EXIT_DIVERGED
