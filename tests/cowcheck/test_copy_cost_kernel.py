"""Chapter 18 on the kernel: the cost each op has on a real overlay mount, measured
exactly, equals the model's prediction.

Each trace runs on the kernel's overlayfs (``cowcheck.copy_cost``): the upper
directory is read before and after every op. Hand cases first, then traces
Hypothesis draws (random layers, ops drawn against the model's merged view).
"""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cowcheck.copy_cost import (
    CostMeter,
    StepCost,
    cost_differences,
    lower_file_size,
    lower_path,
    measured_created,
    read_upper,
    trace_costs,
)
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.machines.strategies import layer_stacks, ops, view_of
from cowspec.formats.trace import Trace, build_layers, decode_trace
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Op
from cowspec.fs.cost import INDEX_LABEL, Cost
from cowspec.fs.features import DOCKER_OVERLAY2, Features
from cowspec.fs.observe import merged_tree
from cowspec.fs.operations import step
from cowspec.fs.stack import new_container
from tests.support import d, f, h, op, s, w

pytestmark = pytest.mark.kernel

BIG = "x" * 70000
META = {"metacopy": True, "redirect_dir": True}
DEEP = "/" + "/".join("abcdefghij")

CASES: dict[str, tuple[list[list[dict[str, Any]]], list[dict[str, Any]], dict[str, bool]]] = {
    "first-and-later-changes": (
        [[f("/big", BIG)]],
        [
            op("chmod", path="/big", mode=0o600),
            op("write", path="/big", offset=3, data="abc"),
            op("append", path="/big", data="z"),
            op("truncate", path="/big", size=1),
        ],
        {},
    ),
    "truncate-copies-whole-first": ([[f("/big", BIG)]], [op("truncate", path="/big", size=0)], {}),
    "write-append-open": (
        [[f("/a", BIG), f("/b", BIG), f("/c", "123")]],
        [
            op("write", path="/a", offset=0, data="q"),
            op("append", path="/b", data="q"),
            op("open", path="/c", flags="rw"),
        ],
        {},
    ),
    "deep-parents": ([[f(DEEP + "/x", BIG)]], [op("chown", path=DEEP + "/x", uid=1, gid=1)], {}),
    "deep-in-many-layers": (
        [[f(DEEP + "/x", BIG)], *[[d(DEEP[: 2 * (index + 1)])] for index in range(10)]],
        [op("append", path=DEEP + "/x", data="t")],
        {},
    ),
    "hardlinks": (
        [[d("/p"), f("/p/a", BIG), h("/p/b", "/p/a")]],
        [
            op("chmod", path="/p/a", mode=0o600),
            op("chmod", path="/p/b", mode=0o600),
            op("link", src="/p/a", dst="/p/c"),
            op("link", src="/p/b", dst="/top"),
        ],
        {},
    ),
    "link-of-image-file": ([[d("/d"), f("/d/a", BIG)]], [op("link", src="/d/a", dst="/b")], {}),
    "rename-files": (
        [[d("/d"), f("/d/a", BIG), f("/d/b", "1")]],
        [
            op("rename", src="/d/a", dst="/moved"),
            op("rename", src="/moved", dst="/d/b"),
            op("create", path="/n", mode=0o644),
            op("rename", src="/n", dst="/d/a"),
        ],
        {},
    ),
    "rename-upper-tree": (
        [[]],
        [
            op("mkdir", path="/t", mode=0o755),
            op("mkdir", path="/t/u", mode=0o755),
            op("create", path="/t/u/x", mode=0o644),
            op("rename", src="/t", dst="/v"),
        ],
        {},
    ),
    "rename-merged-dir-redirect": (
        [[d("/d"), f("/d/x", BIG), f("/d/y", "22")]],
        [
            op("rename", src="/d", dst="/e"),
            op("chmod", path="/e/x", mode=0o600),
            op("truncate", path="/e/y", size=0),
            op("rename", src="/e", dst="/f"),
        ],
        {"redirect_dir": True},
    ),
    "whiteouts": (
        [[f("/a", BIG), d("/e"), d("/p"), f("/p/q", "1"), s("/l", "/a")], [w("/gone")]],
        [
            op("unlink", path="/a"),
            op("rmdir", path="/e"),
            op("unlink", path="/p/q"),
            op("create", path="/a", mode=0o644),
            op("mkdir", path="/e", mode=0o755),
            op("unlink", path="/l"),
            op("rmdir", path="/p"),
        ],
        {},
    ),
    "symlink-followed-write": (
        [[f("/target", BIG), s("/link", "/target")]],
        [op("write", path="/link", offset=0, data="w"), op("chmod", path="/link", mode=0o600)],
        {},
    ),
    "refused-rename-keeps-copy": (
        [[d("/s"), f("/s/x", BIG)]],
        [op("mkdir", path="/t", mode=0o755), op("create", path="/t/y", mode=0o644), op("rename", src="/s", dst="/t")],
        {"redirect_dir": True},
    ),
    "metacopy-chmod-then-write": (
        [[f("/big", BIG)]],
        [
            op("chmod", path="/big", mode=0o600),
            op("chown", path="/big", uid=1, gid=1),
            op("write", path="/big", offset=0, data="a"),
            op("write", path="/big", offset=1, data="b"),
            op("truncate", path="/big", size=3),
        ],
        META,
    ),
    "metacopy-rename-and-link": (
        [[d("/d"), f("/d/a", BIG), f("/d/b", BIG), f("/d/c", BIG)]],
        [
            op("rename", src="/d/a", dst="/m"),
            op("link", src="/d/b", dst="/l"),
            op("append", path="/m", data="z"),
            op("open", path="/l", flags="w"),
            op("truncate", path="/d/c", size=0),
        ],
        META,
    ),
    "index-hardlinks": (
        [[d("/p"), f("/p/a", BIG), h("/p/b", "/p/a"), h("/p/c", "/p/a")]],
        [
            op("chmod", path="/p/a", mode=0o600),
            op("chmod", path="/p/b", mode=0o600),
            op("unlink", path="/p/a"),
            op("append", path="/p/c", data="q"),
        ],
        {"index": True},
    ),
    "index-metacopy-unlinked-name": (
        [[f("/a", BIG), h("/b", "/a"), f("/e", ""), h("/g", "/e")]],
        [
            op("unlink", path="/a"),
            op("open", path="/b", flags="w"),
            op("unlink", path="/e"),
            op("open", path="/g", flags="w"),
        ],
        {"index": True, **META},
    ),
    "index-unlink-image-hardlink": (
        [[f("/a", BIG), h("/b", "/a")]],
        [op("unlink", path="/a"), op("chmod", path="/b", mode=0o600)],
        {"index": True},
    ),
    "index-rename-over-image-hardlink": (
        [[f("/a", BIG), h("/b", "/a"), f("/n", "1")]],
        [op("create", path="/c", mode=0o644), op("rename", src="/c", dst="/a"), op("append", path="/b", data="q")],
        {"index": True},
    ),
    "index-unlink-every-name": (
        [[f("/a", BIG), h("/b", "/a")]],
        [op("unlink", path="/a"), op("unlink", path="/b")],
        {"index": True},
    ),
    "index-metacopy-hardlinks": (
        [[d("/p"), f("/p/a", BIG), h("/p/b", "/p/a")]],
        [
            op("chmod", path="/p/a", mode=0o600),
            op("chown", path="/p/b", uid=2, gid=2),
            op("write", path="/p/b", offset=5, data="q"),
            op("rename", src="/p/a", dst="/moved"),
        ],
        {"index": True, **META},
    ),
}


def trace_of(layers: list[list[dict[str, Any]]], calls: list[dict[str, Any]], features: dict[str, bool]) -> Trace:
    return decode_trace({"format": "cowspec-trace/1", "features": features, "layers": layers, "ops": calls})


def assert_agrees(steps: list[StepCost]) -> None:
    differences = cost_differences(steps)
    assert not differences, "\n".join(differences)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_cases(name: str, kernel: KernelOverlay) -> None:
    """[COST-1][COST-2][COST-4][COST-5] Every op's measured cost equals the prediction."""
    steps = trace_costs(trace_of(*CASES[name]), kernel)
    assert_agrees(steps)
    assert any(each.measured != Cost() for each in steps), "a hand case must cost something"


def test_first_change_copies_and_later_ones_do_not(kernel: KernelOverlay) -> None:
    """[COST-2] The measurement itself: 70000 bytes and one entry the first time, nothing the second."""
    steps = trace_costs(trace_of(*CASES["first-and-later-changes"]), kernel)
    assert steps[0].measured == Cost(copied=(("/big", 70000),), created=("/big",))
    assert all(each.measured == Cost() for each in steps[1:])


def test_deep_parents_are_measured(kernel: KernelOverlay) -> None:
    """[COST-4] Ten directories and the file appear in the upper directory."""
    (only,) = trace_costs(trace_of(*CASES["deep-parents"]), kernel)
    assert only.measured.objects_created == 11 and only.measured.bytes_copied == 70000


def test_a_wrong_prediction_is_reported(kernel: KernelOverlay) -> None:
    """[COST-5] The comparison can fail: a prediction that misses the copy is a difference."""
    (only,) = trace_costs(trace_of([[f("/a", "12345")]], [op("chmod", path="/a", mode=0o600)], {}), kernel)
    wrong = StepCost(only.op, only.expected, only.observed, Cost(), only.measured)
    assert len(cost_differences([wrong])) == 1


@pytest.mark.parametrize("name", ["index-unlink-image-hardlink", "index-rename-over-image-hardlink"])
def test_index_copy_of_a_removed_name_is_measured(name: str, kernel: KernelOverlay) -> None:
    """[COST-2][COST-5] With index on, removing a name of a hardlinked image file copies the 70000 bytes into the
    work directory's index, which no upper name shows: the meter reads the index after the op and counts it."""
    steps = trace_costs(trace_of(*CASES[name]), kernel)
    removal, later = steps[-2], steps[-1]
    assert removal.measured.copied == ((INDEX_LABEL, 70000),)
    assert later.measured.bytes_copied == 0, "the other name links to the index copy"


def test_meter_reads_redirects_and_layers(kernel: KernelOverlay) -> None:
    """[COST-5] The image-layer size behind an upper path follows the upper directories' redirects."""
    trace = trace_of([[d("/d"), f("/d/x", "1234567")]], [op("rename", src="/d", dst="/e")], {"redirect_dir": True})
    session = kernel.open(trace.layers, trace.features)
    try:
        meter = CostMeter(session)
        meter.perform(trace.ops[0])
        assert lower_path(session.upper_dir, "/e/x") == "/d/x"
        assert lower_file_size(meter.lowers_top_first, "/d/x") == 7
        assert lower_file_size(meter.lowers_top_first, "/e/x") is None
        state = read_upper(session.upper_dir)
        assert measured_created({}, state) == ("/d", "/e")
    finally:
        session.close()


@st.composite
def traces(draw: st.DrawFn, features: Features = DOCKER_OVERLAY2) -> Trace:
    """Random layers and up to six ops, each drawn against the model's merged view before it."""
    layers: tuple[tuple[LayerEntry, ...], ...] = draw(layer_stacks)
    partial = Trace(features, layers, ())
    container = new_container(build_layers(partial), features)
    drawn: list[Op] = []
    for _ in range(draw(st.integers(1, 6))):
        call = draw(ops(view_of(merged_tree(container))))
        drawn.append(call)
        container = step(container, call).container
    return Trace(features, layers, tuple(drawn))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=traces())
def test_generated_traces(trace: Trace, kernel: KernelOverlay) -> None:
    """[COST-1][COST-2][COST-4] Random traces, Docker's features: prediction equals measurement."""
    assert_agrees(trace_costs(trace, kernel))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=traces(Features(redirect_dir=True, metacopy=True)))
def test_generated_traces_with_metacopy(trace: Trace, kernel: KernelOverlay) -> None:
    """[COST-1][COST-3][COST-4] Random traces with ``metacopy=on``: prediction equals measurement."""
    assert_agrees(trace_costs(trace, kernel))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=traces(Features(index=True)))
def test_generated_traces_with_index(trace: Trace, kernel: KernelOverlay) -> None:
    """[COST-1][COST-2][COST-4] Random traces with ``index=on``: prediction equals measurement."""
    assert_agrees(trace_costs(trace, kernel))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=traces(Features(redirect_dir=True, index=True, metacopy=True)))
def test_generated_traces_with_every_feature(trace: Trace, kernel: KernelOverlay) -> None:
    """[COST-1][COST-3][COST-4] Random traces with all three features on: prediction equals measurement."""
    assert_agrees(trace_costs(trace, kernel))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=traces(Features(redirect_dir=True)))
def test_generated_traces_with_redirect_dir(trace: Trace, kernel: KernelOverlay) -> None:
    """[COST-1][COST-4] Random traces with ``redirect_dir=on``: prediction equals measurement."""
    assert_agrees(trace_costs(trace, kernel))
