"""The store-level state machine: the model's figures against a real Docker engine.

Each example starts from an empty engine and takes random steps: load an
image made of random layers with a random history, create a container, run
a few filesystem ops in one, commit one, remove a container or an image.
After every step every figure is compared (a smaller budget than the
filesystem level's: an engine is slow). Filesystem ops are drawn as the
filesystem machine draws them, against the model's view of the container
(or of the image being built) that they will run in.
"""

import os

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cowcheck.drivers.docker_store import figures, layerdb, perform_step
from cowcheck.drivers.engines import Dockerd
from cowcheck.machines.strategies import layer_entries, ops, view_of
from cowcheck.store_compare import storage_differences
from cowspec.formats.store_trace import apply_step, run_store_model
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Op
from cowspec.fs.observe import Entry, merged_tree
from cowspec.fs.operations import step
from cowspec.fs.stack import Container, new_container
from cowspec.store.drivers import OVERLAY2, StoreConfig
from cowspec.store.state import HistoryRow, new_store
from cowspec.store.steps import (
    Build,
    Commit,
    CreateContainer,
    Instruction,
    LoadImage,
    RemoveContainer,
    RemoveImage,
    RemoveVolume,
    RunOps,
    Step,
)


class StoreDivergence(AssertionError):
    """The engine and the model disagree; ``steps`` on an engine ``config`` describes reproduce it as a store trace."""

    def __init__(self, message: str, steps: tuple[Step, ...], config: StoreConfig = OVERLAY2) -> None:
        super().__init__(message)
        self.steps = steps
        self.config = config


found: list[StoreDivergence] = []
"""Every divergence raised, the last one the smallest Hypothesis found."""


def clean(docker: Dockerd) -> None:
    """Remove every container and image, so an example starts from nothing.

    Raises if anything is left: an example must not see its predecessor's
    layers, or the machine would be flaky.
    """
    containers = docker.docker("ps", "-aq").stdout.decode().split()
    if containers:
        docker.docker("rm", "-f", *containers)
    volumes = docker.docker("volume", "ls", "-q").stdout.decode().split()
    if volumes:
        docker.docker("volume", "rm", "-f", *volumes)
    # A child must go before its parent: prune, then remove what is left,
    # leaves first, until nothing is (builds and commits make deep chains).
    docker.docker("image", "prune", "--all", "--force")
    for _ in range(50):
        images = docker.docker("images", "-aq").stdout.decode().split()
        if not images:
            break
        docker.docker("rmi", "-f", *sorted(set(images)))
    layers = os.path.join(layerdb(docker), "sha256")
    left = os.listdir(layers) if os.path.isdir(layers) else []
    if left or docker.docker("images", "-aq").stdout.strip():
        raise RuntimeError(f"the engine kept {len(left)} layers after cleaning")


histories = st.lists(st.booleans(), max_size=3)


def draw_ops(data: st.DataObject, filesystem: Container, count: int) -> tuple[tuple[Op, ...], Container]:
    """``count`` ops, each drawn against ``filesystem`` as the ops before it
    leave it, and the filesystem after them: the model's filesystem level
    run ahead, for drawing only.

    Paths below a volume are drawn from the container's own layers, which
    the volume hides: a drawing aid only, since both sides run the same ops.
    """
    drawn: list[Op] = []
    image = merged_tree(new_container(filesystem.lowers, filesystem.features))
    for _ in range(count):
        op = data.draw(ops(view_of(merged_tree(filesystem), image)), label="op")
        drawn.append(op)
        filesystem = step(filesystem, op).container
    return tuple(drawn), filesystem


def store_machine_for(docker: Dockerd, config: StoreConfig = OVERLAY2) -> type:
    """A state machine class holding ``docker`` to the store model configured with ``config`` (its storage driver).

    After each step the engine's figures are held to what the model says of
    the whole run so far (``run_store_model``: on a naive-diff driver, any
    set of figures the clock allows), steps and bytes on disk included
    (``store_compare.storage_differences``).
    """

    class StoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.store = new_store(config)
            self.steps: list[Step] = []
            self.items: list[Entry] = []
            self.real_items: list[Entry] = []
            self.count = 0

        def take(self, step: Step) -> None:
            note(f"step {len(self.steps)}: {step}")
            self.steps.append(step)
            self.store, item = apply_step(self.store, step)
            self.items.append(item)
            self.real_items.append(perform_step(docker, step))

        @initialize()
        def start(self) -> None:
            clean(docker)

        @rule(layers=st.lists(layer_entries(), min_size=1, max_size=3), extra=histories)
        def load_image(self, layers: list[tuple[object, ...]], extra: list[bool]) -> None:
            self.count += 1
            rows = [HistoryRow(f"layer {index}") for index in range(len(layers))]
            rows += [HistoryRow(f"CMD {index}", empty_layer=True) for index, _ in enumerate(extra)]
            self.take(LoadImage(f"img{self.count}:1", tuple(layers), tuple(rows)))  # type: ignore[arg-type]

        @precondition(lambda self: bool(self.store.tags))
        @rule(
            data=st.data(),
            mounts=st.lists(
                st.tuples(st.sampled_from(["/a", "/vol"]), st.sampled_from(["v1", "v2"])),
                max_size=2,
                unique_by=lambda pair: pair[0],
            ),
        )
        def create(self, data: st.DataObject, mounts: list[tuple[str, str]]) -> None:
            self.count += 1
            image = data.draw(st.sampled_from(sorted(self.store.tags)))
            self.take(CreateContainer(f"c{self.count}", image, tuple(sorted(mounts))))

        @precondition(lambda self: bool(self.store.containers))
        @rule(data=st.data(), count=st.integers(1, 4))
        def run_ops(self, data: st.DataObject, count: int) -> None:
            name = data.draw(st.sampled_from(sorted(self.store.containers)))
            changes, _ = draw_ops(data, self.store.containers[name].filesystem, count)
            self.take(RunOps(name, changes))

        @precondition(lambda self: bool(self.store.tags))
        @rule(data=st.data(), kinds=st.lists(st.sampled_from(["metadata", "RUN", "COPY"]), min_size=1, max_size=3))
        def build(self, data: st.DataObject, kinds: list[str]) -> None:
            self.count += 1
            base = data.draw(st.sampled_from(sorted(self.store.tags)))
            image = self.store.image(base)
            # The RUN ops are drawn against the image so far, as the RUN
            # instructions before them leave it; a COPY's files are not
            # folded in (a drawing aid only: both sides run the same build).
            filesystem = new_container(tuple(self.store.layers[chain].content for chain in image.chain))
            instructions = []
            for kind in kinds:
                if kind == "RUN":
                    changes, filesystem = draw_ops(data, filesystem, data.draw(st.integers(1, 3), label="ops"))
                    instructions.append(Instruction("RUN", ops=changes))
                elif kind == "COPY":
                    paths = data.draw(
                        st.lists(st.sampled_from(["/a", "/b", "/c/d"]), min_size=1, max_size=2, unique=True),
                        label="COPY",
                    )
                    entries = tuple(LayerEntry(path, "file", 0o644, data=path.encode()) for path in paths)
                    instructions.append(Instruction("COPY", entries=entries))
                else:
                    command = data.draw(st.sampled_from(["CMD", "ENV", "LABEL"]), label="metadata")
                    instructions.append(Instruction(command, text=f"value{self.count}"))
            self.take(Build(f"img{self.count}:1", base, tuple(instructions)))

        @precondition(lambda self: bool(self.store.containers))
        @rule(data=st.data())
        def commit(self, data: st.DataObject) -> None:
            self.count += 1
            self.take(Commit(data.draw(st.sampled_from(sorted(self.store.containers))), f"img{self.count}:1"))

        @precondition(lambda self: bool(self.store.containers))
        @rule(data=st.data())
        def remove_container(self, data: st.DataObject) -> None:
            self.take(RemoveContainer(data.draw(st.sampled_from(sorted(self.store.containers)))))

        @precondition(lambda self: bool(self.store.tags))
        @rule(data=st.data())
        def remove_image(self, data: st.DataObject) -> None:
            self.take(RemoveImage(data.draw(st.sampled_from(sorted(self.store.tags)))))

        @precondition(lambda self: bool(self.store.volumes))
        @rule(data=st.data())
        def remove_volume(self, data: st.DataObject) -> None:
            self.take(RemoveVolume(data.draw(st.sampled_from(sorted(self.store.volumes)))))

        @invariant()
        def same_figures(self) -> None:
            if not self.steps:
                return
            expected = run_store_model(tuple(self.steps), config)
            observed = figures(docker, self.real_items)
            lines = storage_differences(expected, observed)
            if lines:
                failure = StoreDivergence("; ".join(lines), tuple(self.steps), config)
                found.append(failure)
                raise failure

    return StoreMachine
