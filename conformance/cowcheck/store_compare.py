"""A store result against the model's, on any storage driver [DRIVER-1][DRIVER-6][DRIVER-7].

``compare.compare_store`` compares two results figure by figure, each equal
or not. An engine with a naive-diff storage driver may give one of several
sets of figures (two commits of the same deletions in one second are one
layer, in two seconds two: the model lists each allowed set,
``allowed_figures``), and its bytes on disk agree within the model's ranges
(``disk_differences``). Here the steps are compared as ``compare_step``
compares them; the figures as a whole against each allowed set, the first
set that agrees winning (none agreeing: the differences from the model's own
set); then the bytes on disk of the chosen set, always when the engine gives
them; and the storage driver. A result with no ``disk`` at all is a
difference where the disk is required (``disk_required``: cowspec's own
Docker drivers measure it on every storage driver, so its absence is a
harness fault); a driver from elsewhere that gives none is compared on
everything else, as before the figure existed.
"""

from cowcheck.compare import STORE_FIGURE_RULES, Difference, compare_step, step_differences
from cowspec.formats.store_trace import allowed_figures, disk_differences
from cowspec.fs.observe import Entry

DEFAULT = "overlay2"
NO_DISK = "disk: the engine's result gives no bytes on disk (the harness measures them on every Docker storage driver)"
"""The difference said when an engine's result has no ``disk`` at all: never a silent pass [DRIVER-7]."""


def _figure_differences(allowed: Entry, observed: Entry, disk_required: bool) -> list[Difference]:
    """Where the engine's figures differ from one allowed set: each figure, then the bytes on disk."""
    differences = [
        Difference(key, "", allowed.get(key), observed.get(key), rule)
        for key, rule in STORE_FIGURE_RULES.items()
        if allowed.get(key) != observed.get(key)
    ]
    if "disk" in observed:
        for line in disk_differences(allowed.get("disk"), observed["disk"]):
            differences.append(Difference("disk", "", line, None, "DRIVER-7"))
    elif disk_required and "disk" in allowed:
        differences.append(Difference("disk", "", NO_DISK, None, "DRIVER-7"))
    return differences


def _driver_differences(expected: Entry, observed: Entry) -> list[Difference]:
    want, got = expected.get("storage_driver", DEFAULT), observed.get("storage_driver", DEFAULT)
    return [] if want == got else [Difference("storage_driver", "", want, got, "DRIVER-1")]


def _chosen_figures(expected: Entry, observed: Entry, disk_required: bool) -> list[Difference]:
    """None if the engine's figures are one set the model allows; else how they differ from the model's own."""
    first: list[Difference] | None = None
    for allowed in allowed_figures(expected):
        figures = _figure_differences(allowed, observed, disk_required)
        if not figures:
            return []
        if first is None:
            first = figures
    return first or []


def _steps(result: Entry) -> list[Entry]:
    steps = result.get("steps", [])
    return steps if isinstance(steps, list) else []


def compare_store_result(expected: Entry, observed: Entry, *, disk_required: bool = False) -> list[Difference]:
    """Where an engine's store result differs from the model's (see the module)."""
    differences = _driver_differences(expected, observed)
    want_list, got_list = _steps(expected), _steps(observed)
    for index, (want, got) in enumerate(zip(want_list, got_list, strict=False)):
        differences += compare_step(index, want, got)
    if len(want_list) != len(got_list):
        differences.append(Difference("steps", "", len(want_list), len(got_list), "STORE-5"))
    return differences + _chosen_figures(expected, observed, disk_required)


def storage_differences(expected: Entry, observed: Entry) -> list[str]:
    """One line per difference of a Docker engine's store result from the model's (``compare_store_result``,
    the disk required), each step's worded as ``compare.step_differences`` words it, each figure as
    ``store_differences`` does."""
    want_list, got_list = _steps(expected), _steps(observed)
    lines = [
        f"{each.field}: model {each.expected}, real {each.actual}" for each in _driver_differences(expected, observed)
    ]
    for index, (want, got) in enumerate(zip(want_list, got_list, strict=False)):
        lines += step_differences(index, want, got)
    if len(want_list) != len(got_list):
        lines.append(f"steps: model has {len(want_list)} items, real has {len(got_list)}")
    for each in _chosen_figures(expected, observed, True):
        lines.append(
            str(each.expected) if each.field == "disk" else f"{each.field}: model {each.expected}, real {each.actual}"
        )
    return lines
