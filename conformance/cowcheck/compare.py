"""Comparing a real result with the model's, and saying where they differ.

Each difference is a value (``Difference``): which observation (``field``),
where (``path``: a file's path, ``op N``, ``step N``...), what the model
expected, what the real system gave, and the ID of the spec rule it breaks.
``to_json`` gives it as data for a result document; ``line`` (and
``difference_lines``) as one line for people, with values written as JSON.

A comparison is made under a conformance profile (spec chapter 16):
``kernel`` compares everything exactly [CONFORM-1]; ``portable`` leaves out
the writable layer's form [CONFORM-2] and the sizes [CONFORM-3], allows the
link counts a broken hardlink may show [CONFORM-4] and those of a
hardlink some of whose names are hidden [CONFORM-6], and takes the op
outcomes the model allows under it (``allowed(..., "portable")``, so
[CONFORM-5] arrives as a set of outcomes). Every relaxation that changed
the verdict is counted, under its rule, in the ``relaxed`` counter a caller
passes, so that a report can show what was relaxed.

The older functions that return prose (``result_differences``,
``tree_differences``, ``store_differences``) are kept for the callers that
print them; the structured ones are ``compare_*``.
"""

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from cowcheck.drivers.protocol import Driver
from cowspec.errors import SpecError
from cowspec.formats.oracle import ModelRun, model_run
from cowspec.formats.trace import Trace, admits, build_layers, encode_outcome
from cowspec.fs.conformance import Conformance, LinkBound, link_bounds
from cowspec.fs.observe import Entry, layer_tree, merged_tree
from cowspec.fs.operations import Transition, allowed
from cowspec.fs.resolve import why_absent
from cowspec.fs.sizes import container_sizes
from cowspec.fs.stack import Container, new_container
from cowspec.oci.commit import commit, commit_entries
from cowspec.oci.layer_tar import decode_layer

CONFORMANCES: tuple[Conformance, ...] = ("kernel", "portable")

UNATTRIBUTED = "OBSERVE-1"
"""The rule a difference breaks when nothing more precise is known: the
observation itself must agree [OBSERVE-1]."""


@dataclass(frozen=True, slots=True)
class Difference:
    """One place where a real system and the model disagree.

    ``field`` is the observation: ``result`` (an op's outcome), ``results``
    (how many), ``merged`` or ``upper`` (a tree; ``path`` is the entry's
    path and ``attribute`` the entry's field, empty for a whole entry),
    ``sizes``, or a store figure. ``expected`` and ``actual`` are JSON
    values; None where one side has nothing. ``rule`` is the ID of the spec
    rule the difference breaks.
    """

    field: str
    path: str
    expected: object
    actual: object
    rule: str
    attribute: str = ""

    def to_json(self) -> dict[str, object]:
        """The difference as a JSON object (field, path, expected, actual, rule; attribute if any)."""
        data: dict[str, object] = {
            "field": self.field,
            "path": self.path,
            "expected": self.expected,
            "actual": self.actual,
            "rule": self.rule,
        }
        if self.attribute:
            data["attribute"] = self.attribute
        return data

    def line(self) -> str:
        """One line for people: where, what, expected and actual as JSON, and the rule."""
        where = f"{self.field} {self.path}".strip()
        if self.attribute:
            where += f" {self.attribute}"
        return f"{where}: expected {_json(self.expected)}, actual {_json(self.actual)} [{self.rule}]"


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def difference_lines(differences: Iterable[Difference]) -> list[str]:
    """One line per difference, for people."""
    return [difference.line() for difference in differences]


class Diverged(AssertionError):
    """A real system and the model disagree: ``differences`` say where, each naming the rule it breaks (the
    message is their lines). Each level's machine adds the trace that reproduces it."""

    def __init__(self, differences: list[Difference]) -> None:
        super().__init__("\n".join(difference_lines(differences)))
        self.differences = differences

    @property
    def rule(self) -> str:
        """The rule the divergence breaks: its first difference's."""
        return self.differences[0].rule if self.differences else ""


def _count(relaxed: Counter[str] | None, rule: str, times: int = 1) -> None:
    if relaxed is not None:
        relaxed[rule] += times


# -- op outcomes ----------------------------------------------------------------------


def compare_outcome(
    index: int, choices: Sequence[Transition], observed: Entry, relaxed: Counter[str] | None = None
) -> tuple[Transition, Difference | None]:
    """The transition to go on from after op ``index``, and the difference if
    the real outcome ``observed`` is none of ``choices`` [TRACE-5].

    ``choices`` are ``allowed(container, op, conformance).transitions``. A
    real outcome that only a relaxation allows is counted under that rule;
    one that none allows breaks the rule that decided the model's first
    outcome.
    """
    for transition in choices:
        if encode_outcome(transition.outcome) == observed:
            if transition is not choices[0] and transition.rule.startswith("CONFORM-"):
                _count(relaxed, transition.rule)
            return transition, None
    first = choices[0]
    expected = [encode_outcome(each.outcome) for each in choices]
    shown: object = expected[0] if len(expected) == 1 else {"any_of": expected}
    return first, Difference("result", f"op {index}", shown, observed, first.rule or UNATTRIBUTED)


# -- trees and sizes ------------------------------------------------------------------

_OPAQUE_RULES = ("WHITEOUT-4", "RENAME-5", "REDIRECT-4", "RENAME-7", "COPYUP-3")
_SHOWN_RULES = ("WHITEOUT-2", "WHITEOUT-1", "OPAQUE-1", "RENAME-5", "WHITEOUT-4", "REDIRECT-4", "REDIRECT-2")


def _first_of(candidates: Sequence[str], exercised: Sequence[str], default: str) -> str:
    """The first of ``candidates`` the last op exercised, else ``default``."""
    return next((rule for rule in candidates if rule in exercised), default)


def tree_rule(
    kind: str,
    attribute: str,
    want: Entry | None,
    got: Entry | None,
    exercised: Sequence[str],
    broken_link: bool = False,
) -> str:
    """The rule a difference in a tree breaks.

    ``exercised`` are the rules of the last op (its deciding rule first), so
    that an attribute that several rules set is blamed on the one that acted;
    ``broken_link`` says the entry is a name of a hardlink a copy-up broke.
    """
    decided = exercised[0] if exercised else None
    if kind == "upper":
        kinds = {str(entry.get("type")) for entry in (want, got) if entry is not None}
        if "whiteout" in kinds:
            if want is not None and got is not None and want.get("type") != "whiteout":
                return "WHITEOUT-4" if want.get("type") == "dir" else "WHITEOUT-3"
            return "WHITEOUT-2"
        if attribute == "opaque":
            return _first_of(_OPAQUE_RULES, exercised, "OPAQUE-1")
        if attribute == "metacopy":
            return _first_of(("METACOPY-2", "METACOPY-1"), exercised, "METACOPY-1")
        if attribute == "redirect":
            entry = want if want is not None else got
            return "METACOPY-3" if entry is not None and entry.get("type") == "file" else "REDIRECT-3"
        if want is None or got is None:
            entry = want if want is not None else got
            default = "COPYUP-2" if entry is not None and entry.get("type") == "dir" else "COPYUP-6"
            return _first_of(("COPYUP-2", "COPYUP-6", "COPYUP-3", "COPYUP-4"), exercised, default)
        return decided or "COPYUP-4"
    if attribute == "nlink":
        candidates = ("INDEX-2", "INDEX-3", "COPYUP-5", "LINK-1", "UNLINK-1")
        return "COPYUP-5" if broken_link else _first_of(candidates, exercised, "ENTRY-2")
    if want is None:
        return _first_of(_SHOWN_RULES, exercised, decided or "LOOKUP-1")
    return decided or (UNATTRIBUTED if got is None else "ENTRY-3")


def _by_path(entries: Iterable[Entry]) -> dict[str, Entry]:
    return {str(entry["path"]): entry for entry in entries}


def compare_trees(
    kind: str,
    expected: list[Entry],
    observed: list[Entry],
    *,
    conformance: Conformance = "kernel",
    exercised: Sequence[str] = (),
    nlink: Mapping[str, LinkBound] | None = None,
    relaxed: Counter[str] | None = None,
    absent: Callable[[str], str] | None = None,
) -> list[Difference]:
    """Where two trees differ: one difference per missing or extra entry,
    and one per attribute of an entry both have [OBSERVE-1].

    ``kind`` is ``merged`` or ``upper``; ``nlink`` is the model's
    ``link_bounds``: the names of hardlinks a copy-up broke (COPYUP-5) or
    some of whose names are hidden. Under ``portable``, the writable layer is
    not compared [CONFORM-2], and a merged entry's ``nlink`` within its bound
    passes [CONFORM-4][CONFORM-6]; each
    counted in ``relaxed`` when it changed the verdict. ``absent`` gives the
    rule that keeps a path out of the model's merged view (``why_absent``),
    for an entry only the real system shows.
    """
    found = _tree_differences(kind, expected, observed, exercised, nlink or {}, conformance == "portable", absent)
    differences, relaxations = found
    for rule, times in relaxations.items():
        _count(relaxed, rule, times)
    if conformance == "portable" and kind == "upper":
        if differences:
            _count(relaxed, "CONFORM-2")
        return []
    return differences


def _tree_differences(
    kind: str,
    expected: list[Entry],
    observed: list[Entry],
    exercised: Sequence[str],
    nlink: Mapping[str, LinkBound],
    relax: bool,
    absent: Callable[[str], str] | None,
) -> tuple[list[Difference], Counter[str]]:
    want, got = _by_path(expected), _by_path(observed)
    differences: list[Difference] = []
    relaxations: Counter[str] = Counter()
    for path in sorted(set(want) | set(got)):
        mine, theirs = want.get(path), got.get(path)
        if mine is None or theirs is None:
            if kind == "merged" and mine is None and absent is not None:
                rule = absent(path)
            else:
                rule = tree_rule(kind, "", mine, theirs, exercised)
            differences.append(Difference(kind, path, mine, theirs, rule))
            continue
        for attribute in sorted(set(mine) | set(theirs)):
            if mine.get(attribute) == theirs.get(attribute):
                continue
            actual = theirs.get(attribute)
            if attribute == "nlink" and relax and _within(actual, nlink, path):
                relaxations[nlink[path].rule] += 1
                continue
            broken_link = path in nlink and nlink[path].rule == "CONFORM-4"
            rule = tree_rule(kind, attribute, mine, theirs, exercised, broken_link)
            differences.append(Difference(kind, path, mine.get(attribute), actual, rule, attribute))
    return differences, relaxations


def _within(actual: object, nlink: Mapping[str, LinkBound], path: str) -> bool:
    """True if ``actual`` is a link count CONFORM-4 or CONFORM-6 allows at ``path``."""
    if path not in nlink or not isinstance(actual, int) or isinstance(actual, bool):
        return False
    return nlink[path].lowest <= actual <= nlink[path].highest


def compare_sizes(
    expected: object,
    observed: object,
    *,
    conformance: Conformance = "kernel",
    relaxed: Counter[str] | None = None,
) -> list[Difference]:
    """Where the sizes differ, one difference per figure [SIZE-2][SIZE-3];
    none under ``portable`` [CONFORM-3], counted in ``relaxed`` if they differed."""
    want = expected if isinstance(expected, dict) else {}
    got = observed if isinstance(observed, dict) else {}
    differences = [
        Difference("sizes", key, want.get(key), got.get(key), "SIZE-3" if key == "virtual_size" else "SIZE-2")
        for key in sorted(set(want) | set(got))
        if want.get(key) != got.get(key)
    ]
    if (not isinstance(expected, dict) or not isinstance(observed, dict)) and expected != observed:
        differences = differences or [Difference("sizes", "", expected, observed, "SIZE-2")]
    if conformance == "portable":
        if differences:
            _count(relaxed, "CONFORM-3")
        return []
    return differences


def model_sizes(container: Container) -> Entry:
    """The sizes of ``container`` as a result document writes them [SIZE-2][SIZE-3]."""
    sizes = container_sizes(container)
    return {"size": sizes.size, "virtual_size": sizes.virtual_size}


def compare_state(
    container: Container,
    merged: list[Entry],
    upper: list[Entry],
    sizes: object,
    *,
    conformance: Conformance = "kernel",
    exercised: Sequence[str] = (),
    relaxed: Counter[str] | None = None,
) -> list[Difference]:
    """Where a real system's trees and sizes differ from the model's
    ``container`` [OBSERVE-1], under ``conformance``. ``exercised`` are the
    last op's rules (``Transition.rules``), to name the rule each difference
    breaks."""
    bounds = link_bounds(container)
    found = compare_trees(
        "merged",
        merged_tree(container),
        merged,
        conformance=conformance,
        exercised=exercised,
        nlink=bounds,
        relaxed=relaxed,
        absent=lambda path: why_absent(container, path),
    )
    found += compare_trees(
        "upper", layer_tree(container.upper), upper, conformance=conformance, exercised=exercised, relaxed=relaxed
    )
    return found + compare_sizes(model_sizes(container), sizes, conformance=conformance, relaxed=relaxed)


# -- whole result documents -------------------------------------------------------------


def compare_results(
    expected: Entry,
    observed: Entry,
    *,
    conformance: Conformance = "kernel",
    taken: Sequence[Transition] = (),
    nlink: Mapping[str, LinkBound] | None = None,
    relaxed: Counter[str] | None = None,
    absent: Callable[[str], str] | None = None,
) -> list[Difference]:
    """Where a real result document differs from the model's.

    ``expected`` is the model's result under ``conformance`` (its ``any_of``
    sets already hold what the profile allows [TRACE-5]); ``taken`` the
    model's transitions (``ModelRun.taken``), which name the rule each op's
    difference breaks and the rules the trees are blamed on; ``nlink`` the
    model's ``link_bounds`` at the end, for CONFORM-4 and CONFORM-6; ``absent`` the
    model's ``why_absent`` at the end.
    """
    want_results = expected.get("results", [])
    got_results = observed.get("results", [])
    want_list = want_results if isinstance(want_results, list) else []
    got_list = got_results if isinstance(got_results, list) else []
    differences: list[Difference] = []
    for index, (want, got) in enumerate(zip(want_list, got_list, strict=False)):
        transition = taken[index] if index < len(taken) else None
        if not admits(want, got):  # a set of allowed outcomes admits any member [TRACE-5]
            rule = transition.rule if transition is not None and transition.rule else UNATTRIBUTED
            differences.append(Difference("result", f"op {index}", want, got, rule))
        elif transition is not None and transition.rule.startswith("CONFORM-"):
            _count(relaxed, transition.rule)
    if len(want_list) != len(got_list):
        differences.append(Difference("results", "", len(want_list), len(got_list), "TRACE-4"))
    exercised = taken[-1].rules if taken else ()
    for kind in ("merged", "upper"):
        want_tree, got_tree = expected.get(kind, []), observed.get(kind, [])
        differences += compare_trees(
            kind,
            want_tree if isinstance(want_tree, list) else [],
            got_tree if isinstance(got_tree, list) else [],
            conformance=conformance,
            exercised=exercised,
            nlink=nlink,
            relaxed=relaxed,
            absent=absent,
        )
    return differences + compare_sizes(
        expected.get("sizes"), observed.get("sizes"), conformance=conformance, relaxed=relaxed
    )


def compare_run(
    run: ModelRun, observed: Entry, *, conformance: Conformance = "kernel", relaxed: Counter[str] | None = None
) -> list[Difference]:
    """Where a real result differs from a model run of the same trace
    (``model_run(trace, observed results, conformance)``)."""
    bounds = link_bounds(run.container)
    return compare_results(
        run.result,
        observed,
        conformance=conformance,
        taken=run.taken,
        nlink=bounds,
        relaxed=relaxed,
        absent=lambda path: why_absent(run.container, path),
    )


# -- a commit ---------------------------------------------------------------------------------

COMMIT_RESULT_FORMAT = "cowspec-commit-result/1"
"""What ``cowspec run`` prints for a trace run as a commit: the committed layer's entries."""


def commit_result(archive: bytes) -> Entry:
    """A committed layer tar as a result document: its entries (``commit_entries``), or why it is no layer.

    A tar that does not decode is not the driver failing but what the
    implementation committed: ``invalid`` says why, and the comparison
    counts it as a divergence from COMMIT-1.
    """
    try:
        layer = decode_layer(archive)
    except SpecError as error:
        return {"format": COMMIT_RESULT_FORMAT, "invalid": str(error)}
    return {"format": COMMIT_RESULT_FORMAT, "entries": commit_entries(layer)}


def model_commit(trace: Trace) -> list[Entry]:
    """The entries of the layer a commit gives after ``trace``'s ops, each op's first allowed outcome taken."""
    return commit_entries(commit(model_run(trace).container))


def _commit_key(entry: Entry) -> tuple[str, bool]:
    return str(entry.get("path")), entry.get("type") == "whiteout"


def compare_commit(
    expected: list[Entry],
    observed: Entry,
    *,
    conformance: Conformance = "kernel",
    relaxed: Counter[str] | None = None,
) -> list[Difference]:
    """Where a committed layer (a ``commit_result``) differs from the model's entries [COMMIT-1].

    One difference per missing or extra entry, one per attribute of an
    entry both have, all under COMMIT-1; a layer that does not decode is
    one difference at ``/``. Under ``portable`` the layer's form is not
    compared [CONFORM-2] (counted in ``relaxed`` when it differed), but a
    layer that does not decode still diverges.
    """
    if "invalid" in observed:
        return [Difference("commit", "/", "a layer tar", f"not a layer tar: {observed['invalid']}", "COMMIT-1")]
    got_entries = observed.get("entries")
    got = (
        {_commit_key(entry): entry for entry in got_entries if isinstance(entry, dict)}
        if isinstance(got_entries, list)
        else {}
    )
    want = {_commit_key(entry): entry for entry in expected}
    differences: list[Difference] = []
    for key in sorted(set(want) | set(got)):
        mine, theirs = want.get(key), got.get(key)
        path = key[0]
        if mine is None or theirs is None:
            differences.append(Difference("commit", path, mine, theirs, "COMMIT-1"))
            continue
        for attribute in sorted(set(mine) | set(theirs)):
            if mine.get(attribute) != theirs.get(attribute):
                differences.append(
                    Difference("commit", path, mine.get(attribute), theirs.get(attribute), "COMMIT-1", attribute)
                )
    if conformance == "portable":
        if differences:
            _count(relaxed, "CONFORM-2")
        return []
    return differences


# -- a trace replayed step by step ------------------------------------------------------------


def first_differences(
    driver: Driver,
    trace: Trace,
    *,
    conformance: Conformance = "kernel",
    relaxed: Counter[str] | None = None,
    exercised: Counter[str] | None = None,
) -> list[Difference]:
    """Replay ``trace`` on ``driver`` as the state machine does, comparing
    each op's outcome and then the whole state after it, under
    ``conformance``: the differences at the first point that diverges, or
    none if the real system agrees all the way.

    The structured form of the machine's ``first_divergence``: what a report
    shows for a minimal trace. Each model transition's rules are counted in
    ``exercised``, each relaxation applied in ``relaxed``. A trace the spec
    rejects shows nothing, so it agrees [TRACE-1].
    """
    try:
        lowers = build_layers(trace)
    except SpecError:
        return []
    container = new_container(lowers, trace.features)
    session = driver.open(trace.layers, trace.features)
    try:
        differences = compare_state(
            container, session.merged(), session.upper(), session.sizes(), conformance=conformance, relaxed=relaxed
        )
        if differences:
            return differences
        for index, op in enumerate(trace.ops):
            # The kernel profile is ``allowed``'s own default.
            choices = allowed(container, op) if conformance == "kernel" else allowed(container, op, conformance)
            taken, difference = compare_outcome(index, choices.transitions, session.perform(op), relaxed)
            if exercised is not None:
                exercised.update(taken.rules)
            if difference is not None:
                return [difference]
            container = taken.container
            differences = compare_state(
                container,
                session.merged(),
                session.upper(),
                session.sizes(),
                conformance=conformance,
                exercised=taken.rules,
                relaxed=relaxed,
            )
            if differences:
                return differences
        return []
    finally:
        session.close()


# -- store results ----------------------------------------------------------------------------

STORE_FIGURE_RULES: dict[str, str] = {
    "layers": "STORE-1",
    "images": "STORE-7",
    "containers": "STORE-3",
    "images_total": "STORE-4",
    "reclaimable": "STORE-4",
    "volumes": "STORE-9",
}
"""The rule of chapter 15 that states each figure of a store result."""


def compare_step(index: int, want: Entry, got: Entry) -> list[Difference]:
    """Where a step's item differs (STORE-12): the same comparison as
    ``step_differences``, as values.

    A refusal matches a refusal of the same kind; its reason is for people
    and never compared. A step whose input the spec rejects is always
    reported.
    """
    path = f"step {index}"
    if want.get("rejected") or got.get("rejected") or want.get("ok") != got.get("ok"):
        return [Difference("step", path, _said(want), _said(got), "STORE-12")]
    if not want.get("ok"):
        if "refusal" not in want or want.get("refusal") != got.get("refusal"):
            return [Difference("step", path, want.get("refusal"), got.get("refusal"), "STORE-12")]
        return []
    differences: list[Difference] = []
    want_results, got_results = want.get("results", []), got.get("results", [])
    want_list = want_results if isinstance(want_results, list) else []
    got_list = got_results if isinstance(got_results, list) else []
    for number, (expected, observed) in enumerate(zip(want_list, got_list, strict=False)):
        if expected != observed:
            differences.append(Difference("result", f"{path} op {number}", expected, observed, "STORE-11"))
    if len(want_list) != len(got_list):
        differences.append(Difference("results", path, len(want_list), len(got_list), "STORE-5"))
    for key in sorted((set(want) | set(got)) - {"ok", "results", "reason"}):
        if want.get(key) != got.get(key):
            rule = STORE_FIGURE_RULES.get(key, "STORE-4")
            differences.append(Difference(key, path, want.get(key), got.get(key), rule))
    return differences


def compare_store(expected: Entry, observed: Entry) -> list[Difference]:
    """Where two store results differ, as ``store_differences`` compares them:
    each step's item, then each figure, with the rule of chapter 15 that
    states it."""
    differences: list[Difference] = []
    want_steps, got_steps = expected.get("steps", []), observed.get("steps", [])
    want_list = want_steps if isinstance(want_steps, list) else []
    got_list = got_steps if isinstance(got_steps, list) else []
    for index, (want, got) in enumerate(zip(want_list, got_list, strict=False)):
        differences += compare_step(index, want, got)
    if len(want_list) != len(got_list):
        differences.append(Difference("steps", "", len(want_list), len(got_list), "STORE-5"))
    for key, rule in STORE_FIGURE_RULES.items():
        if expected.get(key) != observed.get(key):
            differences.append(Difference(key, "", expected.get(key), observed.get(key), rule))
    return differences


# -- the prose forms, for the callers that print them --------------------------------------


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
