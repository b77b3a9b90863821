"""Comparing a real result with the model's, and saying where they differ."""

from collections.abc import Iterable

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
        if want != got:
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


def store_differences(expected: Entry, observed: Entry) -> list[str]:
    """One line per difference between two store results (a step's reason is not compared)."""
    lines: list[str] = []

    def plain(items: object) -> list[object]:
        assert isinstance(items, list)
        return [{key: value for key, value in item.items() if key != "reason"} for item in items]

    for index, (want, got) in enumerate(zip(plain(expected["steps"]), plain(observed["steps"]), strict=False)):
        if want != got:
            lines.append(f"step {index}: model {want}, real {got}")
    for key in ("layers", "images", "containers", "images_total", "reclaimable", "volumes"):
        if expected.get(key) != observed.get(key):
            lines.append(f"{key}: model {expected.get(key)}, real {observed.get(key)}")
    return lines
