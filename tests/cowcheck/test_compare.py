"""Structured differences, the rule each breaks, and the conformance profiles (chapter 16)."""

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cowcheck.compare import (
    Difference,
    compare_outcome,
    compare_results,
    compare_run,
    compare_state,
    compare_store,
    compare_trees,
    difference_lines,
    first_differences,
    model_sizes,
)
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.runner import run_real
from cowspec.formats.oracle import ModelRun, model_run
from cowspec.formats.trace import decode_trace, encode_outcome
from cowspec.fs.build import LayerEntry, build_layer
from cowspec.fs.calls import Append, Op, Readdir, Stat
from cowspec.fs.conformance import Conformance, link_bounds, nlink_bounds
from cowspec.fs.features import Features
from cowspec.fs.observe import layer_tree, merged_tree
from cowspec.fs.operations import allowed
from cowspec.fs.stack import new_container
from tests.support import d, f, h, op, w

Document = dict[str, Any]


def trace_of(layers: list[list[dict[str, Any]]], *ops: dict[str, Any]) -> Any:
    return decode_trace({"format": "cowspec-trace/1", "layers": layers, "ops": list(ops)})


def checked(trace: Any, real: Document, conformance: Conformance) -> tuple[list[Difference], Counter[str], ModelRun]:
    """What a checker does with one trace: run the model after the real results, compare, count relaxations."""
    relaxed: Counter[str] = Counter()
    run = model_run(trace, real["results"], conformance)
    return compare_run(run, real, conformance=conformance, relaxed=relaxed), relaxed, run


def kernel_result(trace: Any) -> Document:
    """What a system that is exactly the kernel gives: the model's own result under ``kernel``."""
    return copy.deepcopy(model_run(trace).result)


def entry(tree: list[Document], path: str) -> Document:
    return next(each for each in tree if each["path"] == path)


# -- the difference as data -------------------------------------------------------------------


def test_a_difference_is_json_with_json_values() -> None:
    """``to_json`` has field, path, expected, actual, rule; ``line`` writes values as JSON, not Python."""
    difference = Difference("result", "op 0", {"ok": True}, {"errno": "ENOENT"}, "WHITEOUT-1")
    assert difference.to_json() == {
        "field": "result",
        "path": "op 0",
        "expected": {"ok": True},
        "actual": {"errno": "ENOENT"},
        "rule": "WHITEOUT-1",
    }
    json.dumps(difference.to_json())
    line = difference.line()
    assert line == 'result op 0: expected {"ok": true}, actual {"errno": "ENOENT"} [WHITEOUT-1]'
    assert "True" not in line and "None" not in Difference("merged", "/a", None, 1, "X-1").line()
    assert difference_lines([difference]) == [line]


# -- a divergence names the rule it breaks -------------------------------------------------------


def test_a_real_upper_that_omits_a_whiteout_breaks_whiteout_2() -> None:
    """[WHITEOUT-2] Unlinking an image-layer file must leave a whiteout in the writable layer."""
    trace = trace_of([[f("/a", "x"), f("/b")]], op("unlink", path="/a"))
    real = kernel_result(trace)
    assert entry(real["upper"], "/a") == {"path": "/a", "type": "whiteout"}
    real["upper"] = [each for each in real["upper"] if each["path"] != "/a"]
    differences, _, _ = checked(trace, real, "kernel")
    assert [(each.field, each.path, each.rule) for each in differences] == [("upper", "/a", "WHITEOUT-2")]
    assert differences[0].expected == {"path": "/a", "type": "whiteout"} and differences[0].actual is None


def test_a_real_result_that_sees_through_a_whiteout_breaks_whiteout_1() -> None:
    """[WHITEOUT-1] The op's difference names the rule that decided the model's outcome."""
    trace = trace_of([[f("/a", "x")], [w("/a")]], op("stat", path="/a"))
    real = kernel_result(trace)
    real["results"] = [{"ok": True, "value": {"type": "file", "mode": 420, "uid": 0, "gid": 0, "size": 1, "nlink": 1}}]
    differences, _, _ = checked(trace, real, "kernel")
    assert [(each.field, each.path, each.rule) for each in differences] == [("result", "op 0", "WHITEOUT-1")]
    assert differences[0].expected == {"errno": "ENOENT"}


def test_a_wrong_content_names_the_call_that_wrote_it() -> None:
    """[WRITE-2] A merged file whose bytes differ after an append breaks the append's rule."""
    trace = trace_of([[f("/a", "x")]], op("append", path="/a", data="yy"))
    real = kernel_result(trace)
    entry(real["merged"], "/a")["sha256"] = "0" * 64
    for conformance in ("kernel", "portable"):
        differences, _, _ = checked(trace, real, conformance)
        assert [(each.field, each.path, each.attribute, each.rule) for each in differences] == [
            ("merged", "/a", "sha256", "WRITE-2")
        ]


def featured(features: dict[str, bool], layers: list[list[dict[str, Any]]], *ops: dict[str, Any]) -> Any:
    return decode_trace({"format": "cowspec-trace/1", "features": features, "layers": layers, "ops": list(ops)})


def test_a_lost_metacopy_mark_or_file_redirect_names_the_metacopy_rules() -> None:
    """[METACOPY-1][METACOPY-3][METACOPY-4] A real upper that copied the data on a rename breaks METACOPY-1
    (the mark) and METACOPY-3 (the redirect a metacopy file gets)."""
    trace = featured({"redirect_dir": True, "metacopy": True}, [[f("/a", "x")]], op("rename", src="/a", dst="/b"))
    real = kernel_result(trace)
    assert entry(real["upper"], "/b")["metacopy"] is True and entry(real["upper"], "/b")["redirect"] == "a"
    del entry(real["upper"], "/b")["metacopy"]
    del entry(real["upper"], "/b")["redirect"]
    differences, _, _ = checked(trace, real, "kernel")
    assert sorted((each.attribute, each.rule) for each in differences) == [
        ("metacopy", "METACOPY-1"),
        ("redirect", "METACOPY-3"),
    ]


def test_a_metacopy_mark_left_after_a_write_breaks_metacopy_2() -> None:
    """[METACOPY-2] The first open for writing copies the data and drops the mark."""
    trace = featured(
        {"redirect_dir": True, "metacopy": True},
        [[f("/a", "x")]],
        op("chmod", path="/a", mode=0o600),
        op("append", path="/a", data="y"),
    )
    real = kernel_result(trace)
    entry(real["upper"], "/a")["metacopy"] = True
    differences, _, _ = checked(trace, real, "kernel")
    assert [(each.attribute, each.rule) for each in differences] == [("metacopy", "METACOPY-2")]


def test_a_link_count_that_forgets_the_index_breaks_index_2() -> None:
    """[INDEX-2] With index on, a link to one name of an image hardlink counts on every name."""
    trace = featured({"index": True}, [[f("/a", "x"), h("/b", "/a")]], op("link", src="/a", dst="/c"))
    real = kernel_result(trace)
    assert entry(real["merged"], "/b")["nlink"] == 3
    entry(real["merged"], "/b")["nlink"] = 2
    differences, _, _ = checked(trace, real, "kernel")
    assert [(each.path, each.attribute, each.rule) for each in differences] == [("/b", "nlink", "INDEX-2")]


def test_the_kernel_agrees_with_itself_under_both_profiles() -> None:
    """The model's own result passes both profiles with no relaxation counted."""
    trace = trace_of(
        [[d("/x"), f("/x/kept"), w("/x/gone"), f("/a"), h("/b", "/a")]],
        op("readdir", path="/x"),
        op("append", path="/a", data="1"),
        op("stat", path="/b"),
    )
    for conformance in ("kernel", "portable"):
        differences, relaxed, _ = checked(trace, kernel_result(trace), conformance)
        assert differences == [] and relaxed == Counter()


# -- portable passes what kernel fails, one relaxation at a time -------------------------------


def test_conform_2_the_writable_layers_form() -> None:
    """[CONFORM-2] An upper kept in another form (no whiteout device, no opaque flag) fails only ``kernel``."""
    trace = trace_of([[d("/d"), f("/d/x"), f("/a")]], op("unlink", path="/a"), op("rmdir", path="/d"))
    real = kernel_result(trace)
    real["upper"] = [{"path": "/.wh.a", "type": "file", "mode": 0, "uid": 0, "gid": 0, "size": 0}]
    kernel, _, _ = checked(trace, real, "kernel")
    assert kernel and {each.field for each in kernel} == {"upper"}
    portable, relaxed, _ = checked(trace, real, "portable")
    assert portable == [] and relaxed == Counter({"CONFORM-2": 1})


def test_conform_3_the_sizes() -> None:
    """[CONFORM-3] Sizes counted otherwise (a metadata-only copy-up) fail only ``kernel``."""
    trace = trace_of([[f("/a", "12345")]], op("chmod", path="/a", mode=0o600))
    real = kernel_result(trace)
    real["sizes"] = {**real["sizes"], "size": 0}
    kernel, _, _ = checked(trace, real, "kernel")
    assert [(each.field, each.path, each.rule) for each in kernel] == [("sizes", "size", "SIZE-2")]
    portable, relaxed, _ = checked(trace, real, "portable")
    assert portable == [] and relaxed == Counter({"CONFORM-3": 1})


def test_conform_4_link_counts_after_a_broken_hardlink() -> None:
    """[CONFORM-4][COPYUP-5] Other counts for a broken link (both names 2) pass ``portable``; out of bounds fail."""
    trace = trace_of(
        [[f("/a", "data"), h("/b", "/a"), f("/c")]],
        op("append", path="/a", data="++"),
        op("stat", path="/a"),
        op("stat", path="/b"),
    )
    real = kernel_result(trace)
    real["results"][1]["value"]["nlink"] = 2
    entry(real["merged"], "/a")["nlink"] = 2
    kernel, _, _ = checked(trace, real, "kernel")
    assert [(each.field, each.path, each.rule) for each in kernel] == [
        ("result", "op 1", "STAT-1"),
        ("merged", "/a", "COPYUP-5"),
    ]
    portable, relaxed, _ = checked(trace, real, "portable")
    assert portable == [] and relaxed == Counter({"CONFORM-4": 2})
    too_many = copy.deepcopy(real)
    entry(too_many["merged"], "/b")["nlink"] = 7
    portable, _, _ = checked(trace, too_many, "portable")
    assert [(each.field, each.path, each.attribute) for each in portable] == [("merged", "/b", "nlink")]
    unrelated = kernel_result(trace)
    entry(unrelated["merged"], "/c")["nlink"] = 2
    portable, _, _ = checked(trace, unrelated, "portable")
    assert [(each.path, each.attribute) for each in portable] == [("/c", "nlink")]


def test_conform_5_whiteouts_in_a_plain_listing() -> None:
    """[CONFORM-5][READDIR-2] A listing without the stored whiteout fails only ``kernel``; a missing name fails both."""
    trace = trace_of([[d("/x"), f("/x/kept"), w("/x/gone")]], op("readdir", path="/x"))
    real = kernel_result(trace)
    real["results"] = [{"ok": True, "value": ["kept"]}]
    kernel, _, _ = checked(trace, real, "kernel")
    assert [(each.field, each.path, each.rule) for each in kernel] == [("result", "op 0", "READDIR-2")]
    portable, relaxed, run = checked(trace, real, "portable")
    assert portable == [] and relaxed == Counter({"CONFORM-5": 1})
    assert run.taken[0].rule == "CONFORM-5"
    real["results"] = [{"ok": True, "value": ["gone"]}]
    portable, _, _ = checked(trace, real, "portable")
    assert [(each.path, each.rule) for each in portable] == [("op 0", "READDIR-2")]
    assert portable[0].expected == {
        "any_of": [{"ok": True, "value": ["gone", "kept"]}, {"ok": True, "value": ["kept"]}]
    }


def test_portable_still_holds_results_and_the_merged_view() -> None:
    """[CONFORM-1] An errno, a name shown or hidden, a mode: each fails ``portable`` as it fails ``kernel``."""
    trace = trace_of([[d("/d"), f("/d/a")], [w("/d/a")]], op("create", path="/d/n", mode=0o600))
    wrong_errno = kernel_result(trace)
    wrong_errno["results"] = [{"errno": "EEXIST"}]
    shows_hidden = kernel_result(trace)
    shows_hidden["merged"].append({**entry(shows_hidden["merged"], "/d/n"), "path": "/d/a"})
    shows_hidden["merged"].sort(key=lambda each: each["path"])
    wrong_mode = kernel_result(trace)
    entry(wrong_mode["merged"], "/d/n")["mode"] = 0o644
    for real, expected in (
        (wrong_errno, [("result", "op 0", "CREATE-1")]),
        (shows_hidden, [("merged", "/d/a", "WHITEOUT-1")]),
        (wrong_mode, [("merged", "/d/n", "CREATE-1")]),
    ):
        for conformance in ("kernel", "portable"):
            differences, _, _ = checked(trace, real, conformance)
            found = [(each.field, each.path, each.rule) for each in differences]
            assert found[: len(expected)] == expected, (conformance, found)
            if conformance == "portable":
                assert found == expected
    hidden_by_whiteout = trace_of([[d("/d"), f("/d/a")], [w("/d/a")]], op("stat", path="/d/n"))
    real = kernel_result(hidden_by_whiteout)
    real["merged"].append({"path": "/d/a", "type": "file", "mode": 420, "uid": 0, "gid": 0, "size": 0})
    differences, _, _ = checked(hidden_by_whiteout, real, "portable")
    assert [(each.path, each.rule) for each in differences] == [("/d/a", "WHITEOUT-1")]
    assert compare_results({"results": [1, 2]}, {"results": [1]})[0].to_json()["rule"] == "TRACE-4"


# -- the machine's way: one op and one state at a time ---------------------------------------------


def test_compare_outcome_and_state_for_a_machine() -> None:
    """[CONFORM-5] A machine step: the allowed transitions, the real outcome, the transition to go on from."""
    trace = trace_of([[d("/x"), f("/x/kept"), w("/x/gone")]])
    container = model_run(trace).container
    relaxed: Counter[str] = Counter()
    choices = allowed(container, Readdir("/x"), "portable").transitions
    taken, difference = compare_outcome(0, choices, {"ok": True, "value": ["kept"]}, relaxed)
    assert difference is None and taken.rule == "CONFORM-5" and relaxed == Counter({"CONFORM-5": 1})
    kernel_choices = allowed(container, Readdir("/x")).transitions
    taken, difference = compare_outcome(3, kernel_choices, {"ok": True, "value": ["kept"]})
    assert taken is kernel_choices[0]
    assert difference is not None and (difference.path, difference.rule) == ("op 3", "READDIR-2")
    merged, upper, sizes = merged_tree(container), layer_tree(container.upper), model_sizes(container)
    assert compare_state(container, merged, upper, sizes) == []
    odd_upper = [{"path": "/x", "type": "dir", "mode": 493, "uid": 0, "gid": 0, "opaque": True}]
    kernel = compare_state(container, merged, odd_upper, sizes, exercised=("MKDIR-1", "WHITEOUT-4"))
    assert [(each.field, each.path, each.rule) for each in kernel] == [("upper", "/x", "COPYUP-2")]
    relaxed = Counter()
    assert compare_state(container, merged, odd_upper, sizes, conformance="portable", relaxed=relaxed) == []
    assert relaxed == Counter({"CONFORM-2": 1})


# -- store results ---------------------------------------------------------------------------


def test_store_differences_as_values() -> None:
    """[STORE-12][STORE-4] A store result's figures and steps compare as values, each with its chapter 15 rule."""
    model: Document = {
        "steps": [{"ok": True, "results": [{"errno": "EXDEV"}]}, {"ok": False, "refusal": "conflict", "reason": "x"}],
        "layers": 2,
        "reclaimable": 10,
    }
    assert compare_store(model, copy.deepcopy(model)) == []
    worded = copy.deepcopy(model)
    worded["steps"][1]["reason"] = "said otherwise"
    assert compare_store(model, worded) == []
    real = copy.deepcopy(model)
    real["steps"][0]["results"] = [{"errno": "EBUSY"}]
    real["steps"][1] = {"ok": True}
    real["reclaimable"] = 11
    found = [each.to_json() for each in compare_store(model, real)]
    assert found == [
        {
            "field": "result",
            "path": "step 0 op 0",
            "expected": {"errno": "EXDEV"},
            "actual": {"errno": "EBUSY"},
            "rule": "STORE-11",
        },
        {"field": "step", "path": "step 1", "expected": "refused, conflict (x)", "actual": "ok", "rule": "STORE-12"},
        {"field": "reclaimable", "path": "", "expected": 10, "actual": 11, "rule": "STORE-4"},
    ]


# -- the kernel itself ------------------------------------------------------------------------

RATIONALE = sorted((Path(__file__).resolve().parents[2] / "docs" / "rationale").glob("*.json"))


@pytest.mark.kernel
@pytest.mark.parametrize("path", RATIONALE, ids=lambda path: path.stem)
def test_the_kernel_passes_both_profiles_with_nothing_relaxed(kernel: KernelOverlay, path: Path) -> None:
    """[CONFORM-1] The kernel is the ``kernel`` profile's ground truth, and ``portable`` relaxes nothing it gives."""
    trace = decode_trace(json.loads(path.read_text()))
    observed = run_real(kernel, trace)
    for conformance in ("kernel", "portable"):
        differences, relaxed, _ = checked(trace, observed, conformance)
        assert differences == [] and relaxed == Counter(), (conformance, difference_lines(differences))


# -- a whole implementation that is correct but not the kernel ----------------------------------


class OtherSession:
    """The model itself, as an implementation that varies where chapter 16 allows.

    ``vary`` picks the variations: ``listing`` leaves whiteouts out of a plain
    directory's listing (CONFORM-5), ``upper`` keeps deletions as ``.wh.``
    files (CONFORM-2), ``sizes`` counts nothing for its copies (CONFORM-3),
    ``nlink`` counts every name of a broken hardlink together (CONFORM-4);
    ``content`` is a bug no profile allows: an append is lost.
    """

    def __init__(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features, vary: frozenset[str]) -> None:
        lowers = tuple(build_layer(entries, f"layer {index}") for index, entries in enumerate(layers))
        self.container = new_container(lowers, features)
        self.vary = vary

    def perform(self, operation: Op) -> dict[str, object]:
        choices = allowed(self.container, operation, "portable").transitions
        taken = choices[0]
        if isinstance(operation, Readdir) and "listing" in self.vary:
            taken = choices[-1]
        if isinstance(operation, Stat) and "nlink" in self.vary:
            taken = choices[-1]  # the highest count allowed
        if isinstance(operation, Append) and "content" in self.vary:
            return encode_outcome(taken.outcome)  # says ok, keeps nothing
        self.container = taken.container
        return encode_outcome(taken.outcome)

    def merged(self) -> list[dict[str, object]]:
        tree = merged_tree(self.container)
        if "nlink" in self.vary:
            bounds = nlink_bounds(self.container)
            tree = [{**each, "nlink": bounds[str(each["path"])]} if each["path"] in bounds else each for each in tree]
        return tree

    def upper(self) -> list[dict[str, object]]:
        tree = layer_tree(self.container.upper)
        if "upper" not in self.vary:
            return tree
        return [
            {
                "path": str(each["path"]).rsplit("/", 1)[0] + "/.wh." + str(each["path"]).rsplit("/", 1)[1],
                "type": "file",
            }
            if each["type"] == "whiteout"
            else each
            for each in tree
        ]

    def sizes(self) -> dict[str, object]:
        sizes = model_sizes(self.container)
        return {**sizes, "size": 0} if "sizes" in self.vary else sizes

    def close(self) -> None:
        pass


class OtherDriver:
    name = "other"

    def __init__(self, *vary: str) -> None:
        self.vary = frozenset(vary)

    def open(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features) -> OtherSession:
        return OtherSession(layers, features, self.vary)


VARIATION_TRACES: dict[str, tuple[str, Any]] = {
    "listing": ("CONFORM-5", trace_of([[d("/x"), f("/x/kept"), w("/x/gone")]], op("readdir", path="/x"))),
    "upper": ("CONFORM-2", trace_of([[f("/a"), f("/b")]], op("unlink", path="/a"), op("stat", path="/b"))),
    "sizes": ("CONFORM-3", trace_of([[f("/a", "12345")]], op("chmod", path="/a", mode=0o600))),
    "nlink": (
        "CONFORM-4",
        trace_of([[f("/a", "data"), h("/b", "/a")]], op("append", path="/a", data="+"), op("stat", path="/b")),
    ),
}


@pytest.mark.parametrize("variation", sorted(VARIATION_TRACES))
def test_a_correct_other_implementation_passes_portable_and_fails_kernel(variation: str) -> None:
    """[CONFORM-1][CONFORM-2][CONFORM-3][CONFORM-4][CONFORM-5] Each variation alone: ``kernel`` names the
    rule it departs from; ``portable`` passes and counts the relaxation under its own rule."""
    rule, trace = VARIATION_TRACES[variation]
    driver = OtherDriver(variation)
    assert first_differences(OtherDriver(), trace) == []
    kernel = first_differences(driver, trace)
    assert kernel, variation
    assert not any(each.rule.startswith("CONFORM-") for each in kernel)
    relaxed: Counter[str] = Counter()
    exercised: Counter[str] = Counter()
    portable = first_differences(driver, trace, conformance="portable", relaxed=relaxed, exercised=exercised)
    assert portable == [] and set(relaxed) == {rule}, (portable, relaxed)
    assert exercised and all(count > 0 for count in exercised.values())


def test_portable_still_catches_a_lost_write() -> None:
    """[WRITE-2] A bug no profile allows is found under both, and names the call's rule."""
    trace = trace_of([[f("/a", "x")]], op("append", path="/a", data="yy"))
    for conformance in ("kernel", "portable"):
        differences = first_differences(OtherDriver("content", "upper"), trace, conformance=conformance)
        assert [(each.field, each.path, each.rule) for each in differences][:1] == [("merged", "/a", "WRITE-2")]


def test_the_fuse_overlayfs_link_count_passes_portable_and_fails_kernel() -> None:
    """[CONFORM-6] The merged tree of an implementation that counts the names left: a difference under kernel,
    a counted relaxation under portable."""
    after = model_run(
        decode_trace(
            {
                "format": "cowspec-trace/1",
                "layers": [[f("/a", "data"), h("/b", "/a")]],
                "ops": [op("unlink", path="/b")],
            }
        )
    ).container
    theirs = [{**each, "nlink": 1} if each["path"] == "/a" else each for each in merged_tree(after)]
    assert theirs != merged_tree(after)
    relaxed: Counter[str] = Counter()
    bounds = link_bounds(after)
    kernel = compare_trees("merged", merged_tree(after), theirs, nlink=bounds)
    assert [(each.path, each.attribute) for each in kernel] == [("/a", "nlink")]
    assert (
        compare_trees("merged", merged_tree(after), theirs, conformance="portable", nlink=bounds, relaxed=relaxed) == []
    )
    assert relaxed == Counter({"CONFORM-6": 1})
    worse = [{**each, "nlink": 3} if each["path"] == "/a" else each for each in theirs]
    assert compare_trees("merged", merged_tree(after), worse, conformance="portable", nlink=bounds) != []
