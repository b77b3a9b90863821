"""Comparing a real result with the model's, and saying where they differ."""

from collections.abc import Iterable

from cowspec.formats.trace import admits
from cowspec.fs.observe import Entry


def _by_path(entries: Iterable[Entry]) -> dict[str, Entry]:
    return {str(entry["path"]): entry for entry in entries}


def tree_differences(kind: str, expected: list[Entry], observed: list[Entry]) -> list[str]:
    """One line per path where two trees differ."""
    want, got = _by_path(expected), _by_path(observed)
    lines: list[str] = []
    for path in sorted(set(want) | set(got)):
        if path not in got:
            lines.append(f"{kind} {path}: model has {want[path]}, real system has nothing")
        elif path not in want:
            lines.append(f"{kind} {path}: real system has {got[path]}, model has nothing")
        elif want[path] != got[path]:
            fields = sorted(set(want[path]) | set(got[path]))
            changed = ", ".join(
                f"{field} model={want[path].get(field)!r} real={got[path].get(field)!r}"
                for field in fields
                if want[path].get(field) != got[path].get(field)
            )
            lines.append(f"{kind} {path}: {changed}")
    return lines


def result_differences(expected: Entry, observed: Entry) -> list[str]:
    """One line per difference between two result documents."""
    lines: list[str] = []
    want_results = expected.get("results", [])
    got_results = observed.get("results", [])
    assert isinstance(want_results, list) and isinstance(got_results, list)
    for index, (want, got) in enumerate(zip(want_results, got_results, strict=False)):
        if not admits(want, got):  # a set of allowed outcomes admits any member [TRACE-5]
            lines.append(f"op {index}: model {want}, real {got}")
    if len(want_results) != len(got_results):
        lines.append(f"results: model has {len(want_results)} items, real has {len(got_results)}")
    for kind in ("merged", "upper"):
        want_tree, got_tree = expected.get(kind, []), observed.get(kind, [])
        assert isinstance(want_tree, list) and isinstance(got_tree, list)
        lines.extend(tree_differences(kind, want_tree, got_tree))
    if expected.get("sizes") != observed.get("sizes"):
        lines.append(f"sizes: model {expected.get('sizes')}, real {observed.get('sizes')}")
    return lines


def _said(item: Entry) -> str:
    """What one step's item says, in a few words (the reason as an aside)."""
    if item.get("ok"):
        return "ok"
    reason = f" ({item['reason']})" if "reason" in item else ""
    if item.get("rejected"):
        return f"the spec rejects the step's input{reason}"
    return f"refused, {item.get('refusal', 'of no kind given')}{reason}"


def step_differences(index: int, want: Entry, got: Entry) -> list[str]:
    """One line per difference in a step's item (STORE-12).

    A refusal matches a refusal of the same kind; its reason is for people and
    is never compared. A step whose input the spec rejects is outside the
    spec, so it is always reported: the model cannot say what an engine
    should do with it.
    """
    if want.get("rejected") or got.get("rejected") or want.get("ok") != got.get("ok"):
        return [f"step {index}: model {_said(want)}, real {_said(got)}"]
    if not want.get("ok"):
        if "refusal" not in want or want.get("refusal") != got.get("refusal"):
            return [f"step {index}: model {_said(want)}, real {_said(got)}"]
        return []
    lines: list[str] = []
    want_results, got_results = want.get("results", []), got.get("results", [])
    assert isinstance(want_results, list) and isinstance(got_results, list)
    for number, (expected, observed) in enumerate(zip(want_results, got_results, strict=False)):
        if expected != observed:
            lines.append(f"step {index} op {number}: model {expected}, real {observed}")
    if len(want_results) != len(got_results):
        lines.append(f"step {index}: model has {len(want_results)} op results, real has {len(got_results)}")
    for key in sorted((set(want) | set(got)) - {"ok", "results", "reason"}):
        if want.get(key) != got.get(key):
            lines.append(f"step {index} {key}: model {want.get(key)}, real {got.get(key)}")
    return lines


def store_differences(expected: Entry, observed: Entry) -> list[str]:
    """One line per difference between two store results (a refusal's kind is compared, its reason is not)."""
    lines: list[str] = []
    want_steps, got_steps = expected["steps"], observed["steps"]
    assert isinstance(want_steps, list) and isinstance(got_steps, list)
    for index, (want, got) in enumerate(zip(want_steps, got_steps, strict=False)):
        lines += step_differences(index, want, got)
    if len(want_steps) != len(got_steps):
        lines.append(f"steps: model has {len(want_steps)} items, real has {len(got_steps)}")
    for key in ("layers", "images", "containers", "images_total", "reclaimable", "volumes"):
        if expected.get(key) != observed.get(key):
            lines.append(f"{key}: model {expected.get(key)}, real {observed.get(key)}")
    return lines
